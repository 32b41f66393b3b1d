"""IBSI 2 Laws kernels and texture energy (IBSI code JTXT).

A Laws kernel is a product of 1-D kernels, one per axis, named in x, y(, z) order: ``E5L5S5`` is E5 along x, L5
along y, S5 along z; ``L5S5`` (2-D) is L5 along x, S5 along y. Each 1-D kernel is normalised to unit L2 norm
(reference manual, "Laws kernels"). With rotation invariance the response is pooled over the right-angle
rotations of the kernel (:mod:`.rotation`); the energy map is then the mean of the absolute pooled response over a
``(2 delta + 1)``-voxel neighbourhood (a mean filter with the same boundary condition). Phase 1 configurations
3.A1-3.C3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .boundary import Boundary, convolve_separable
from .reader import BlockReader
from .rotation import Pooling, distinct_rotations, pool

#: The 1-D Laws kernels before normalisation (L level, E edge, S spot, W wave, R ripple).
LAWS_KERNELS: dict[str, tuple[float, ...]] = {
    "L3": (1, 2, 1), "E3": (-1, 0, 1), "S3": (-1, 2, -1),
    "L5": (1, 4, 6, 4, 1), "E5": (-1, -2, 0, 2, 1), "S5": (-1, 0, 2, 0, -1), "W5": (-1, 2, 0, -2, 1),
    "R5": (1, -4, 6, -4, 1),
}


def laws_kernel(name: str) -> np.ndarray:
    """A 1-D Laws kernel normalised to unit L2 norm.

    >>> round(float(np.sum(laws_kernel("E5") ** 2)), 12)
    1.0
    """
    kernel = np.array(LAWS_KERNELS[name], dtype=float)
    return kernel / np.sqrt(np.sum(kernel**2))


def read_rotation(block: BlockReader) -> tuple[bool, Pooling]:
    """``rotation_invariance`` and its ``pooling`` (``none`` exactly when not rotation invariant)."""
    invariant = block.boolean("rotation_invariance")
    allowed = [Pooling.AVERAGE, Pooling.MAX] if invariant else [Pooling.NONE]
    return invariant, block.choice("pooling", Pooling, allowed)


def rotation_label(invariant: bool, pooling: Pooling) -> str:
    """Name suffix of a rotation-invariant filter: ``_invar_max`` or ``_invar_avg``; empty otherwise."""
    return f"_invar_{'max' if pooling is Pooling.MAX else 'avg'}" if invariant else ""


@dataclass(frozen=True, slots=True)
class LawsFilter:
    """Laws settings: ``kernel`` (e.g. ``E5L5S5``), rotation invariance and pooling, energy map and its delta."""

    FILTER: ClassVar[str] = "laws"
    IBSI_CODE: ClassVar[str] = "JTXT"
    KEYS: ClassVar[tuple[str, ...]] = ("kernel", "rotation_invariance", "pooling", "energy_map",
                                       "energy_delta_voxels")

    kernel: str
    rotation_invariance: bool
    pooling: Pooling
    energy_map: bool
    energy_delta_voxels: int | None

    @classmethod
    def read(cls, block: BlockReader, axes: Sequence[int]) -> LawsFilter:
        """Settings from a validated parameter-file mapping; the kernel has one 1-D kernel per filtered axis."""
        expected = (f"{len(axes)} of {', '.join(LAWS_KERNELS)} in x, y{', z' if len(axes) == 3 else ''} order, "
                    f"e.g. {'E5L5S5' if len(axes) == 3 else 'L5S5'}")
        kernel = block.text("kernel", expected)
        parts = [kernel[i:i + 2] for i in range(0, len(kernel), 2)]
        if len(parts) != len(axes) or any(p not in LAWS_KERNELS for p in parts):
            raise block.error(f"'kernel' must be {expected}. Found: {kernel!r}")
        invariant, pooling = read_rotation(block)
        energy = block.boolean("energy_map")
        delta = None
        if energy:
            delta = block.integer("energy_delta_voxels", minimum=1, unit="(voxels, Chebyshev distance)")
        else:
            block.absent_or("energy_delta_voxels", None)
        return cls(kernel, invariant, pooling, energy, delta)

    def kernels(self) -> tuple[np.ndarray, ...]:
        """The normalised 1-D kernels in numpy axis order (z, y, x), i.e. the name read backwards."""
        return tuple(laws_kernel(self.kernel[i:i + 2]) for i in reversed(range(0, len(self.kernel), 2)))

    def label(self) -> str:
        """Name part: ``laws_E5L5S5``, ``laws_E5L5S5_energy_d7_invar_max``."""
        energy = f"_energy_d{self.energy_delta_voxels}" if self.energy_map else ""
        return f"laws_{self.kernel}{energy}{rotation_label(self.rotation_invariance, self.pooling)}"

    def radius(self, spacing: Sequence[float], axes: Sequence[int]) -> tuple[int, ...]:
        """Kernel half-width in voxels along each filtered axis (any axis may get the longest kernel when
        rotation invariant), plus delta for the energy map."""
        halves = [k.size // 2 for k in self.kernels()]
        if self.rotation_invariance:
            halves = [max(halves)] * len(halves)
        return tuple(h + (self.energy_delta_voxels or 0) for h in halves)

    def response(self, array: np.ndarray, spacing: Sequence[float], axes: Sequence[int],
                 boundary: Boundary) -> np.ndarray:
        """Laws response (pooled over rotations when invariant), or its energy map."""
        rotations = distinct_rotations([self.kernels()], self.rotation_invariance)
        responses = (convolve_separable(array, list(zip(axes, stages[0])), boundary) for stages in rotations)
        result = pool(responses, self.pooling)
        if self.energy_map and self.energy_delta_voxels is not None:
            size = 2 * self.energy_delta_voxels + 1
            box = np.full(size, 1.0 / size)
            result = convolve_separable(np.abs(result), [(axis, box) for axis in axes], boundary)
        return result
