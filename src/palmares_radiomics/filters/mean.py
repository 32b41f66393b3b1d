"""IBSI 2 mean filter (IBSI code S60F): the average over a cubic (3-D) or square (2-D) neighbourhood of M voxels a side.

Response ``h(k) = M**-d * sum(f(k + j) for j in [-(M-1)/2, (M-1)/2]**d)``, computed as d one-dimensional box
filters in turn (it is separable). Reference: IBSI 2 reference manual (arXiv:2006.05470), "Mean filter";
phase 1 configurations 1.A1-1.A4 and 1.B1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .boundary import Boundary, convolve_separable
from .reader import BlockReader


@dataclass(frozen=True, slots=True)
class MeanFilter:
    """Mean filter settings: ``support_voxels`` is IBSI's support M (odd, in voxels)."""

    FILTER: ClassVar[str] = "mean"
    IBSI_CODE: ClassVar[str] = "S60F"
    KEYS: ClassVar[tuple[str, ...]] = ("support_voxels",)

    support_voxels: int

    @classmethod
    def read(cls, block: BlockReader, axes: Sequence[int]) -> MeanFilter:
        """Settings from a validated parameter-file mapping."""
        return cls(block.integer("support_voxels", minimum=1, odd=True, unit="(voxels)"))

    def label(self) -> str:
        """Name part: ``mean_m15``."""
        return f"mean_m{self.support_voxels}"

    def radius(self, spacing: Sequence[float], axes: Sequence[int]) -> tuple[int, ...]:
        """Kernel half-width in voxels along each filtered axis."""
        return tuple((self.support_voxels - 1) // 2 for _ in axes)

    def response(self, array: np.ndarray, spacing: Sequence[float], axes: Sequence[int],
                 boundary: Boundary) -> np.ndarray:
        """The mean-filtered array."""
        kernel = np.full(self.support_voxels, 1.0 / self.support_voxels)
        return convolve_separable(array, [(axis, kernel) for axis in axes], boundary)
