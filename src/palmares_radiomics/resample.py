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

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import ConfigError, FeatureExtractionError

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


def crop_grid(grid: Grid, mask: sitk.Image, margin_mm: float) -> Grid:
    """Restrict ``grid`` to the bounding box of the non-zero voxels of ``mask`` plus ``margin_mm``.

    The sub-grid's points are a subset of ``grid``'s points, so resampling onto it gives exactly the
    values resampling onto the whole grid would give there.
    """
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask != 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        raise FeatureExtractionError("the lesion mask is empty")
    x0, y0, z0, sx, sy, sz = stats.GetBoundingBox(1)
    corners_index = [(x, y, z) for x in (x0 - 0.5, x0 + sx - 0.5) for y in (y0 - 0.5, y0 + sy - 0.5) for z in (z0 - 0.5, z0 + sz - 0.5)]
    ref = grid.reference()
    cont = np.array([ref.TransformPhysicalPointToContinuousIndex(mask.TransformContinuousIndexToPhysicalPoint(c))
                     for c in corners_index])
    lo = np.floor(cont.min(axis=0) - np.array([margin_mm / s for s in grid.spacing])).astype(int)
    hi = np.ceil(cont.max(axis=0) + np.array([margin_mm / s for s in grid.spacing])).astype(int)
    lo = np.clip(lo, 0, np.array(grid.size) - 1)
    hi = np.clip(hi, 0, np.array(grid.size) - 1)
    origin = ref.TransformIndexToPhysicalPoint([int(v) for v in lo])
    size = tuple(int(v) for v in hi - lo + 1)
    return Grid(size, grid.spacing, tuple(origin), grid.direction)


def resample_lesion(image: sitk.Image, mask: sitk.Image, settings: ResamplingSettings | None,
                    margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """Image and binary mask of one lesion on the (cropped) IBSI grid.

    ``mask`` is a binary image on the image grid. Returns a float64 image and a UInt8 0/1 mask.
    Without ``settings`` (or with no target spacing) the original voxels are cropped, never interpolated.
    """
    binary = sitk.Cast(mask != 0, sitk.sitkUInt8)
    spacing = settings.spacing_mm if settings else None
    grid = crop_grid(ibsi_grid(image, spacing), binary, margin_mm)
    ref = grid.reference()
    if spacing is None:
        index = [int(round(v)) for v in image.TransformPhysicalPointToContinuousIndex(grid.origin)]
        image_out = sitk.RegionOfInterest(sitk.Cast(image, sitk.sitkFloat64), grid.size, index)
        return image_out, sitk.RegionOfInterest(binary, grid.size, index)
    assert settings is not None
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    image_out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat64), ref, sitk.Transform(),
                              INTERPOLATORS[settings.image_interpolator], lowest, sitk.sitkFloat64)
    if settings.round_intensities:
        image_out = sitk.Round(image_out)
    mask_float = sitk.Resample(sitk.Cast(binary, sitk.sitkFloat64), ref, sitk.Transform(), sitk.sitkLinear, 0.0,
                               sitk.sitkFloat64)
    mask_out = sitk.Cast(mask_float >= settings.mask_threshold - 1e-9, sitk.sitkUInt8)
    return image_out, mask_out
