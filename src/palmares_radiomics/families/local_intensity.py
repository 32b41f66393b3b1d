r"""IBSI 1 local intensity features (reference manual arXiv:1612.07003, chapter 3.2, family 9ST6).

The local mean of a voxel is the mean intensity of every image voxel whose centre lies within
:math:`r = (3 / (4\pi))^{1/3}` cm :math:`\approx 6.20` mm (a 1 cm³ sphere, world distances, the voxel itself
included) of its centre. The centres are voxels of the ROI intensity mask; the neighbourhood draws on every voxel
of the image, inside the ROI or not, so the class runs on the lesion's whole neighbourhood crop
(``palmares.crop_margin_mm`` > 6.2 mm). Where the sphere leaves the image (a lesion at the edge of the scan), the
mean is over the voxels that exist; non-finite voxels do not count either.

- local intensity peak (VJGA): the local mean at the voxel of highest intensity in the intensity mask; of several
  such voxels, the highest of their local means;
- global intensity peak (0F91): the highest local mean over every voxel of the intensity mask.

Local means come from one FFT correlation of the crop around the ROI with the spherical kernel (the manual's
spherical mean filter); the reported peak is then recomputed exactly, as a plain sum over the sphere, at the voxels
whose FFT value is within :data:`CANDIDATE_TOLERANCE` of the highest, so the value is the sphere mean itself, not
an FFT approximation of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from radiomics.base import RadiomicsFeaturesBase
from scipy import fft

from ..resample import box_slices

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Radius (mm) of the 1 cm³ sphere: :math:`(3 / (4\pi))^{1/3}` cm.
SPHERE_RADIUS_MM = (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0) * 10.0
#: Relative width (of the largest intensity magnitude) of the band below the highest FFT local mean within which the
#: local means are recomputed exactly: FFT round-off is ~1e-15 of it, so the exact maximum is always in the band.
CANDIDATE_TOLERANCE = 1e-9
#: At most this many voxels of the band are recomputed exactly (the highest by FFT value); more would mean a band of
#: equal local means, equal to 1e-9 anyway.
MAX_EXACT = 256


@lru_cache(maxsize=16)
def sphere_offsets(spacing: tuple[float, float, float], radius: float = SPHERE_RADIUS_MM) -> IntArray:
    r"""Voxel offsets (n, 3), axes as ``spacing`` (z, y, x, mm), whose centres lie within ``radius`` mm of the centre:
    :math:`\lVert \vec{d} \odot \vec{s} \rVert \le r`, the centre included (cached, read-only)."""
    steps = np.asarray(spacing, dtype=np.float64)
    half = np.floor(radius / steps).astype(np.int64)
    grid = np.stack(np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = grid[np.sqrt(np.sum((grid * steps) ** 2, axis=1)) <= radius]
    offsets.setflags(write=False)
    return offsets


def _kernel_spectrum(shape: tuple[int, ...], spacing: tuple[float, float, float],
                     radius: float) -> NDArray[np.complex128]:
    """``rfftn`` of the spherical kernel (ones at the :func:`sphere_offsets`, centred at the kernel's middle voxel)
    zero-padded to ``shape``."""
    offsets = sphere_offsets(spacing, radius)
    half = np.abs(offsets).max(axis=0)
    kernel = np.zeros(tuple(int(2 * h + 1) for h in half))
    kernel[tuple((offsets + half).T)] = 1.0
    return fft.rfftn(kernel, shape)


def sphere_convolution(values: FloatArray, spacing: tuple[float, float, float],
                       radius: float = SPHERE_RADIUS_MM) -> FloatArray:
    r"""Sums of ``values`` over the sphere (:func:`sphere_offsets`, half-width :math:`h` voxels per axis) by circular
    FFT convolution on the next fast grid :math:`N \ge L` per axis (:math:`L` the size of ``values``).

    ``y = irfftn(rfftn(values, N) * rfftn(kernel, N), N)``. The kernel (size :math:`K = 2h + 1`) is symmetric, and
    output :math:`y[n]` for :math:`K - 1 \le n \le L - 1` draws on ``values[n - K + 1 .. n]`` only, no wrap-around:
    the sum around voxel :math:`c` of ``values`` (:math:`h \le c \le L - 1 - h`) is ``y[c + h]``.
    """
    shape = tuple(fft.next_fast_len(int(n), real=True) for n in values.shape)
    return fft.irfftn(fft.rfftn(values, shape) * _kernel_spectrum(shape, spacing, radius), shape)


@dataclass(frozen=True, slots=True)
class Neighbourhood:
    """The image around an ROI, padded so that the sphere around every ROI voxel fits: ``values`` (non-finite and
    outside-image voxels 0), ``valid`` (1.0 where a real, finite voxel; None when all are), the ROI voxels' positions
    in it and their intensities."""

    values: FloatArray
    valid: FloatArray | None
    centres: IntArray       # (n, 3): positions of the ROI voxels in ``values``, C order
    intensities: FloatArray  # (n,): their intensities
    spacing: tuple[float, float, float]
    radius: float

    @classmethod
    def around(cls, image: FloatArray, mask: BoolArray, spacing: Sequence[float],
               radius: float = SPHERE_RADIUS_MM) -> Neighbourhood:
        """The neighbourhood of ``mask`` in ``image`` (arrays z, y, x; ``spacing`` mm in the same order)."""
        spacing = tuple(float(s) for s in spacing)
        box = box_slices(np.asarray(mask, dtype=bool))
        if box is None:
            raise ValueError("the intensity mask is empty")
        half = np.abs(sphere_offsets(spacing, radius)).max(axis=0)
        start = np.array([b.start for b in box]) - half
        stop = np.array([b.stop for b in box]) + half
        source = tuple(slice(max(int(a), 0), min(int(b), n)) for a, b, n in zip(start, stop, image.shape))
        target = tuple(slice(s.start - int(a), s.stop - int(a)) for s, a in zip(source, start))
        crop = np.asarray(image[source], dtype=np.float64)
        finite = np.isfinite(crop)
        values = np.zeros(tuple(int(n) for n in stop - start))
        values[target] = crop if finite.all() else np.where(finite, crop, 0.0)
        valid = None
        if not (finite.all() and crop.shape == values.shape):
            valid = np.zeros(values.shape)
            valid[target] = finite
        inner = np.asarray(mask[tuple(box)], dtype=bool)
        centres = np.stack(np.nonzero(inner), axis=1) + half
        intensities = np.asarray(image[tuple(box)], dtype=np.float64)[inner]
        return cls(values, valid, centres, intensities, spacing, radius)

    @property
    def offsets(self) -> IntArray:
        """The sphere's voxel offsets (:func:`sphere_offsets`)."""
        return sphere_offsets(self.spacing, self.radius)

    def fft_means(self) -> FloatArray:
        r"""Local mean at every ROI voxel (order of ``centres``): :math:`\sum_{sphere} x / \#\{valid\ voxels\}`, the
        sums by circular FFT convolution with the spherical kernel (:func:`sphere_convolution`)."""
        half = np.abs(self.offsets).max(axis=0)
        inside = tuple((self.centres + half).T)
        sums = sphere_convolution(self.values, self.spacing, self.radius)[inside]
        if self.valid is None:
            return sums / len(self.offsets)
        return sums / np.rint(sphere_convolution(self.valid, self.spacing, self.radius)[inside])

    def exact_means(self, which: IntArray) -> FloatArray:
        """Local mean at the ROI voxels ``which`` (indices into ``centres``) as plain sums over the sphere."""
        points = self.centres[which][:, None, :] + self.offsets[None, :, :]
        index = tuple(np.moveaxis(points, -1, 0))
        counts = len(self.offsets) if self.valid is None else self.valid[index].sum(axis=1)
        return self.values[index].sum(axis=1) / counts

    def highest_mean(self, which: IntArray, approximate: FloatArray) -> float:
        """The highest local mean among the ROI voxels ``which`` whose FFT means are ``approximate``: recomputed
        exactly for those within :data:`CANDIDATE_TOLERANCE` of the highest (at most :data:`MAX_EXACT`)."""
        scale = float(np.max(np.abs(self.values))) or 1.0
        band = approximate >= approximate.max() - CANDIDATE_TOLERANCE * scale
        candidates = which[band]
        if candidates.size > MAX_EXACT:
            candidates = candidates[np.argsort(approximate[band])[-MAX_EXACT:]]
        return float(self.exact_means(candidates).max())


def global_intensity_peak(n: Neighbourhood) -> float:
    r"""Global intensity peak (IBSI 0F91): :math:`F = \max_{k \in ROI} \overline{X}_{sphere(k)}`, the highest local
    mean over the voxels of the intensity mask.

    ``means = sphere_convolution(image) / N_s`` at the ROI voxels, the maximum recomputed exactly
    (:meth:`Neighbourhood.highest_mean`).
    """
    means = n.fft_means()
    return n.highest_mean(np.arange(means.size), means)


def local_intensity_peak(n: Neighbourhood) -> float:
    r"""Local intensity peak (IBSI VJGA): the local mean at the voxel of maximum intensity of the intensity mask; when
    several voxels share the maximum, the highest of their local means (the manual's rule).

    Exact sums at those voxels (FFT only to pick among more than :data:`MAX_EXACT` of them).
    """
    brightest = np.flatnonzero(n.intensities == n.intensities.max())
    if brightest.size <= MAX_EXACT:
        return float(n.exact_means(brightest).max())
    return n.highest_mean(brightest, n.fft_means()[brightest])


class LocalIntensity(RadiomicsFeaturesBase):
    """IBSI local intensity features (``featureClass: localintensity``): spheres of 1 cm³ around the voxels of the ROI
    intensity mask, drawing on every voxel of the image the class is given (the lesion's neighbourhood crop)."""

    def __init__(self, inputImage: Any, inputMask: Any, **kwargs: Any) -> None:  # noqa: N803 (pyradiomics' names)
        super().__init__(inputImage, inputMask, **kwargs)
        self.pixelSpacing = tuple(float(s) for s in inputImage.GetSpacing()[::-1])

    def _initCalculation(self, voxelCoordinates: Any = None) -> None:  # noqa: N802, N803
        if voxelCoordinates is not None:
            raise ValueError("the local intensity family has no voxel-based mode")
        self.__dict__.pop("neighbourhood", None)

    @cached_property
    def neighbourhood(self) -> Neighbourhood:
        """The padded image around the intensity mask and the sphere (built once per instance)."""
        return Neighbourhood.around(self.imageArray, self.maskArray, self.pixelSpacing)

    def getLocalIntensityPeakFeatureValue(self) -> float:
        """Local intensity peak (IBSI VJGA): the 1 cm³ sphere mean around the brightest voxel of the intensity mask."""
        return local_intensity_peak(self.neighbourhood)

    def getGlobalIntensityPeakFeatureValue(self) -> float:
        """Global intensity peak (IBSI 0F91): the highest 1 cm³ sphere mean around any voxel of the intensity mask."""
        return global_intensity_peak(self.neighbourhood)
