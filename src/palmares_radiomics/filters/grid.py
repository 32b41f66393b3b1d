"""Filter dimensionality and the small helpers every filter family shares (names, voxel sizes)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

#: Array axes of a SimpleITK volume as numpy sees it: (z, y, x).
Z, Y, X = 0, 1, 2


class Dimensions(str, Enum):
    """IBSI 2 filter dimensionality: ``2D`` filters each axial slice (x, y) on its own, ``3D`` the volume."""

    TWO_D = "2D"
    THREE_D = "3D"

    @property
    def axes(self) -> tuple[int, ...]:
        """The numpy axes (of a (z, y, x) array) the filter runs along."""
        return (Y, X) if self is Dimensions.TWO_D else (Z, Y, X)


def number_label(value: float) -> str:
    """A number as it appears in a filter name: ``3.0`` -> ``3``, ``0.5`` -> ``0p5`` (no dot in column names).

    >>> number_label(3.0), number_label(0.5), number_label(22.5)
    ('3', '0p5', '22p5')
    """
    return f"{value:g}".replace(".", "p").replace("-", "m")


def half_width(extent_mm: float, spacing_mm: float) -> int:
    """Kernel half-width in voxels for a physical extent: ``floor(extent / spacing + 0.5)`` as IBSI rounds it."""
    return int(extent_mm / spacing_mm + 0.5)


def voxel_spacing(spacing: Sequence[float], axes: Sequence[int]) -> tuple[float, ...]:
    """The spacing (mm) of the filtered ``axes`` of a (z, y, x) ``spacing``."""
    return tuple(float(spacing[a]) for a in axes)
