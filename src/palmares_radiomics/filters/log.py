"""IBSI 2 Laplacian of Gaussian filter (IBSI code L6PA).

Kernel (reference manual, "Laplacian of Gaussian"), in voxel units with ``s = sigma_mm / spacing``::

    g(k) = -1/s**2 * (1 / (s * sqrt(2 pi)))**d * (d - |k|**2 / s**2) * exp(-|k|**2 / (2 s**2))

sampled on the cube ``|k_i| <= floor(truncation * s + 0.5)``. The Gaussian factor is normalised to unit volume; the
response is not multiplied by ``s**2`` (no Lindeberg scale normalisation), as in the IBSI definition and reference
maps (phase 1 configurations 2.A-2.C). The sampled kernel equals a sum of d separable kernels
(``sum_i G''(k_i) * prod_{j != i} G(k_j)``), which is how it is computed: 3 x 3 one-dimensional passes in 3-D.

With anisotropic voxels the same continuous kernel is sampled in mm (so it stays isotropic in space) and the
response is expressed in units of the smallest filtered spacing, i.e. as IBSI's voxel-unit response on a grid of
that spacing; on an isotropic grid this is exactly the formula above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .boundary import Boundary, convolve_separable
from .grid import half_width, number_label, voxel_spacing
from .reader import BlockReader


def gaussian_kernels(sigma_mm: float, spacing_mm: float, radius: int, unit_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D Gaussian (unit sum up to truncation) and its second derivative along one axis, on ``2 radius + 1``
    voxels; the derivative is per ``unit_mm`` squared (the response unit)."""
    x = np.arange(-radius, radius + 1) * spacing_mm
    gauss = spacing_mm * np.exp(-x**2 / (2 * sigma_mm**2)) / (sigma_mm * math.sqrt(2 * math.pi))
    second = gauss * (x**2 / sigma_mm**4 - 1 / sigma_mm**2) * unit_mm**2
    return gauss, second


def log_kernel(sigma_mm: float, truncation: float, spacing: Sequence[float]) -> np.ndarray:
    """The full (non-separated) LoG kernel on a grid of ``spacing`` (one entry per filtered axis), for tests."""
    unit = min(spacing)
    parts = [gaussian_kernels(sigma_mm, s, half_width(truncation * sigma_mm, s), unit) for s in spacing]
    kernel = np.zeros(tuple(p[0].size for p in parts))
    for i in range(len(parts)):
        term = np.ones(())
        for j, (gauss, second) in enumerate(parts):
            term = np.multiply.outer(term, second if i == j else gauss)
        kernel += term
    return kernel


@dataclass(frozen=True, slots=True)
class LaplacianOfGaussianFilter:
    """LoG settings: ``sigma_mm`` (Gaussian scale, mm) and ``truncation`` (kernel half-width in units of sigma)."""

    FILTER: ClassVar[str] = "laplacian_of_gaussian"
    IBSI_CODE: ClassVar[str] = "L6PA"
    KEYS: ClassVar[tuple[str, ...]] = ("sigma_mm", "truncation")

    sigma_mm: float
    truncation: float

    @classmethod
    def read(cls, block: BlockReader, axes: Sequence[int]) -> LaplacianOfGaussianFilter:
        """Settings from a validated parameter-file mapping."""
        return cls(block.number("sigma_mm", minimum=0, unit="(mm)"),
                   block.number("truncation", minimum=0, unit="(in sigmas)"))

    def label(self) -> str:
        """Name part: ``log_s3``."""
        return f"log_s{number_label(self.sigma_mm)}"

    def radius(self, spacing: Sequence[float], axes: Sequence[int]) -> tuple[int, ...]:
        """Kernel half-width in voxels along each filtered axis: ``floor(truncation * sigma / spacing + 0.5)``."""
        return tuple(half_width(self.truncation * self.sigma_mm, s) for s in voxel_spacing(spacing, axes))

    def response(self, array: np.ndarray, spacing: Sequence[float], axes: Sequence[int],
                 boundary: Boundary) -> np.ndarray:
        """The LoG-filtered array: one separable term per filtered axis."""
        filtered_spacing = voxel_spacing(spacing, axes)
        unit = min(filtered_spacing)
        kernels = [gaussian_kernels(self.sigma_mm, s, r, unit)
                   for s, r in zip(filtered_spacing, self.radius(spacing, axes))]
        result = np.zeros(array.shape)
        for i in range(len(axes)):
            result += convolve_separable(
                array, [(axis, second if i == j else gauss) for j, (axis, (gauss, second)) in
                        enumerate(zip(axes, kernels))], boundary)
        return result
