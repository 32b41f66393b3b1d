"""Resampling of image and mask on the IBSI grid, cropped to one lesion's neighbourhood.

IBSI (reference manual, chapter 2, "Interpolation") aligns the resampled grid on the *centre* of
the original grid: with n_a voxels of spacing s_a, the new grid has n_b = ceil(n_a s_a / s_b) voxels
of spacing s_b and its first voxel lies at x_a0 + (s_a (n_a - 1) - s_b (n_b - 1)) / 2. The mask is
interpolated like the image and a voxel is kept where the interpolated value is at least the
partial-volume threshold (0.5). pyradiomics instead aligns the grid on the corner and resamples the
mask by nearest neighbour, which is why the pipeline resamples before calling it.

The grid is always defined on the whole image and then restricted to the lesion's bounding box
plus a margin, so cropping never moves a grid point: features are identical to resampling the
whole volume first, at a fraction of the cost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import ConfigError, FeatureExtractionError, ResamplingSizeError

#: Most voxels a resampled lesion neighbourhood (lesion bounding box + ``crop_margin_mm``) may have: 2**28 = 268,435,456,
#: i.e. 2 GiB per float64 copy (resampling holds the image, the interpolated mask and a UInt8 reference grid, about
#: 17 bytes a voxel). A 10 cm lesion at 1 mm needs ~2e6 voxels; 0.1 mm on a CT would need billions and run out of
#: memory, so such a request is refused before anything is allocated.
MAX_RESAMPLED_VOXELS = 2**28

INTERPOLATORS: dict[str, int] = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


@dataclass(frozen=True, slots=True)
class ResamplingSettings:
    """How to resample: target spacing per axis (None keeps that axis), interpolators and rounding."""

    spacing_mm: tuple[float | None, float | None, float | None] | None
    image_interpolator: str = "linear"
    mask_threshold: float = 0.5
    round_intensities: bool = False

    def __post_init__(self) -> None:
        if self.image_interpolator not in INTERPOLATORS:
            raise ConfigError(f"image_interpolator must be one of {sorted(INTERPOLATORS)}. Found: {self.image_interpolator!r}")
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ConfigError(f"mask_threshold must be in (0, 1]. Found: {self.mask_threshold}")
        if self.spacing_mm is not None:
            if len(self.spacing_mm) != 3:
                raise ConfigError(f"spacing_mm must have 3 values (x, y, z; null keeps an axis). Found: {self.spacing_mm}")
            for value in self.spacing_mm:
                if value is not None and not value > 0:
                    raise ConfigError(f"spacing_mm values must be positive or null. Found: {self.spacing_mm}")


@dataclass(frozen=True, slots=True)
class Grid:
    """A voxel grid in patient space (SimpleITK conventions: x, y, z order)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of an existing image."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def frame(self) -> sitk.Image:
        """A 1-voxel image with this grid's origin, spacing and direction: index <-> point transforms only."""
        frame = sitk.Image([1, 1, 1], sitk.sitkUInt8)
        frame.SetSpacing(self.spacing)
        frame.SetOrigin(self.origin)
        frame.SetDirection(self.direction)
        return frame

    def reference(self) -> sitk.Image:
        """An empty image on this grid, usable as the reference of ``sitk.Resample``."""
        ref = sitk.Image([int(v) for v in self.size], sitk.sitkUInt8)
        ref.SetSpacing(self.spacing)
        ref.SetOrigin(self.origin)
        ref.SetDirection(self.direction)
        return ref


def ibsi_grid(image: sitk.Image, spacing_mm: tuple[float | None, float | None, float | None] | None) -> Grid:
    """The centre-aligned IBSI grid of ``image`` at ``spacing_mm`` (None: keep the image's own grid or axis)."""
    grid = Grid.of(image)
    if spacing_mm is None:
        return grid
    direction = np.array(grid.direction).reshape(3, 3)
    new_spacing, new_size, shift = [], [], []
    for n_a, s_a, s_b in zip(grid.size, grid.spacing, spacing_mm):
        s_b = s_a if s_b is None else float(s_b)
        n_b = max(1, math.ceil(round(n_a * s_a / s_b, 6)))
        new_spacing.append(s_b)
        new_size.append(n_b)
        shift.append((s_a * (n_a - 1) - s_b * (n_b - 1)) / 2.0)
    origin = np.array(grid.origin) + direction @ np.array(shift)
    return Grid(tuple(new_size), tuple(new_spacing), tuple(float(v) for v in origin), grid.direction)


def box_slices(hits: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box (numpy slices, z y x) holding the True voxels of the 3-D array ``hits``; None if none.

    Projections in numpy: about three times faster than SimpleITK's label statistics on a whole scan.
    """
    z = np.flatnonzero(hits.any(axis=(1, 2)))
    if z.size == 0:
        return None
    slab = hits[z[0]:z[-1] + 1]
    y = np.flatnonzero(slab.any(axis=(0, 2)))
    x = np.flatnonzero(slab.any(axis=(0, 1)))
    return slice(int(z[0]), int(z[-1]) + 1), slice(int(y[0]), int(y[-1]) + 1), slice(int(x[0]), int(x[-1]) + 1)


def bounding_box(mask: sitk.Image, label: int = 1) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Index and size (x, y, z) of the smallest box holding the voxels of ``mask`` equal to ``label``; None if none."""
    box = box_slices(sitk.GetArrayViewFromImage(mask) == label)
    if box is None:
        return None
    return tuple(b.start for b in reversed(box)), tuple(b.stop - b.start for b in reversed(box))  # type: ignore[return-value]


def crop_grid(grid: Grid, mask: sitk.Image, margin_mm: float, label: int = 1) -> Grid:
    """Restrict ``grid`` to the bounding box of the voxels of ``mask`` equal to ``label``, plus ``margin_mm``.

    The sub-grid's points are a subset of ``grid``'s points, so resampling onto it gives exactly the
    values resampling onto the whole grid would give there.
    """
    box = bounding_box(mask, label)
    if box is None:
        raise FeatureExtractionError(f"label {label} is empty in the mask")
    ref = grid.frame()
    lo, hi = _window(*_span(*box, mask, ref), np.array([margin_mm / s for s in grid.spacing]), grid.size)
    origin = ref.TransformIndexToPhysicalPoint([int(v) for v in lo])
    size = tuple(int(v) for v in hi - lo + 1)
    return Grid(size, grid.spacing, tuple(origin), grid.direction)


#: Voxels of the original image kept around the resampled grid so the interpolator sees exactly what it would see
#: in the whole image: linear interpolation reads the 2 nearest voxels per axis; the cubic B-spline's coefficients
#: decay by a factor 0.27 per voxel, so 20 voxels make the cropped result equal the whole-image one to ~1e-11.
APRON_VOXELS = {"nearest": 2, "linear": 2, "bspline": 20}


def source_region(image: sitk.Image, grid: Grid, apron_voxels: int) -> tuple[list[int], list[int]]:
    """Index and size of the part of ``image`` that resampling onto ``grid`` reads (plus an apron)."""
    lo, hi = _window(*_span((0, 0, 0), grid.size, grid.frame(), image), np.full(3, apron_voxels), image.GetSize())
    return [int(v) for v in lo], [int(v) for v in hi - lo + 1]


def _span(index: Sequence[int], size: Sequence[int], source: sitk.Image, target: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest continuous index, in ``target``, of the outer faces of the voxel box (``index``,
    ``size``) of ``source``."""
    corners = itertools.product(*[(i - 0.5, i + n - 0.5) for i, n in zip(index, size)])
    points = np.array([target.TransformPhysicalPointToContinuousIndex(source.TransformContinuousIndexToPhysicalPoint(c))
                       for c in corners])
    return points.min(axis=0), points.max(axis=0)


def _window(low: np.ndarray, high: np.ndarray, pad: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """First and last voxel index covering [low - pad, high + pad], clipped to an image of ``size`` voxels."""
    last = np.array(size) - 1
    return (np.clip(np.floor(low - pad).astype(int), 0, last), np.clip(np.ceil(high + pad).astype(int), 0, last))


def check_grid_size(grid: Grid, label: int, margin_mm: float) -> None:
    """Refuse (ResamplingSizeError) a resampled lesion neighbourhood of more than :data:`MAX_RESAMPLED_VOXELS` voxels.

    Called with the cropped grid, before any image on it is allocated.
    """
    voxels = math.prod(grid.size)
    if voxels > MAX_RESAMPLED_VOXELS:
        shape = " x ".join(str(n) for n in grid.size)
        spacing = " x ".join(f"{s:g}" for s in grid.spacing)
        raise ResamplingSizeError(
            f"resampling label {label} to {spacing} mm would allocate {voxels:,} voxels (a grid of {shape} voxels, "
            f"x y z, for the lesion and its {margin_mm:g} mm margin); the limit is {MAX_RESAMPLED_VOXELS:,} voxels "
            "(resample.MAX_RESAMPLED_VOXELS, 2**28); use a coarser palmares.resampling.spacing_mm or a smaller "
            "palmares.crop_margin_mm in the parameter file")


def round_ties_exactly(image: sitk.Image) -> sitk.Image:
    """Round to the nearest integer (halves up, as ``sitk.Round``), deciding ties on the exact value.

    An interpolated value that is mathematically x.5 comes out of the interpolator as x.5 ± 1e-12,
    depending on where the grid's origin was computed from; snapping to 1e-6 first makes such ties
    round the same way whether the grid was cropped or not. NaN and infinite voxels stay NaN and infinite
    (``sitk.Round`` alone turns NaN into a number), so feature extraction can refuse them.
    """
    rounded = sitk.Round(sitk.Round(image * 1e6) / 1e6)
    values = sitk.GetArrayViewFromImage(image)
    non_finite = ~np.isfinite(values)
    if not non_finite.any():
        return rounded
    array = sitk.GetArrayFromImage(rounded)
    array[non_finite] = values[non_finite]
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def whole_image_margin_mm(image: sitk.Image) -> float:
    """A crop margin (mm) larger than any distance inside ``image``: cropping with it keeps the whole grid."""
    return float(sum(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))) + 1.0


def resample_image(image: sitk.Image, settings: ResamplingSettings) -> sitk.Image:
    """The whole image on its IBSI grid (float64), interpolated and rounded as :func:`resample_lesion` does."""
    everything = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    everything.CopyInformation(image)
    return resample_lesion(image, everything, settings, whole_image_margin_mm(image))[0]


def resample_lesion(image: sitk.Image, mask: sitk.Image, settings: ResamplingSettings | None,
                    margin_mm: float, label: int = 1) -> tuple[sitk.Image, sitk.Image]:
    """Image and binary mask of one lesion (``mask == label``) on the (cropped) IBSI grid.

    ``mask`` is a label map (or a 0/1 mask) on the image grid. Returns a float64 image and a UInt8 0/1
    mask. Only the lesion's neighbourhood of the original image is cast and interpolated (the whole
    scan is only scanned once for its minimum, the value outside it), so the cost barely grows with
    the size of the scan. Without ``settings`` (or with no target spacing) the original voxels
    are cropped, never interpolated.
    """
    spacing = settings.spacing_mm if settings else None
    grid = crop_grid(ibsi_grid(image, spacing), mask, margin_mm, label)
    if spacing is not None:
        check_grid_size(grid, label, margin_mm)
    ref = grid.reference()
    if spacing is None:
        index = [int(round(v)) for v in image.TransformPhysicalPointToContinuousIndex(grid.origin)]
        region = sitk.RegionOfInterest(mask, grid.size, index)
        return sitk.Cast(sitk.RegionOfInterest(image, grid.size, index), sitk.sitkFloat64), sitk.Cast(region == label, sitk.sitkUInt8)
    assert settings is not None
    index, size = source_region(image, grid, APRON_VOXELS[settings.image_interpolator])
    source = sitk.Cast(sitk.RegionOfInterest(image, size, index), sitk.sitkFloat64)
    lesion = sitk.Cast(sitk.RegionOfInterest(mask, size, index) == label, sitk.sitkFloat64)
    lowest = float(sitk.GetArrayViewFromImage(image).min())  # outside the scan: its lowest value, as for the whole image
    image_out = sitk.Resample(source, ref, sitk.Transform(), INTERPOLATORS[settings.image_interpolator], lowest,
                              sitk.sitkFloat64)
    if settings.round_intensities:
        image_out = round_ties_exactly(image_out)
    mask_float = sitk.Resample(lesion, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    mask_out = sitk.Cast(mask_float >= settings.mask_threshold - 1e-9, sitk.sitkUInt8)
    return image_out, mask_out
