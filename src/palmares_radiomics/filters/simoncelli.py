"""IBSI 2 Simoncelli wavelet (non-separable, isotropic; IBSI code LODD, as MIRP lists the non-separable wavelets).

Defined in the Fourier domain (reference manual, "Simoncelli wavelets"). With ``nu`` the distance from the centre of
a frequency grid whose coordinates run from -1 to 1 along each filtered axis (``numpy.linspace(-1, 1, n)``, 1 being
the Nyquist frequency) and ``nu_max = 2**(1 - level)``, the band-pass response of decomposition ``level`` is::

    H(nu) = cos(pi / 2 * log2(2 nu / nu_max))   for nu_max / 4 <= nu <= nu_max, else 0

The grid is the one the IBSI reference maps (8.A1-8.A3) were computed on: it spans the array being filtered, so the
filter depends slightly on the array size and the response is real part of the inverse transform. With the
periodic boundary condition the image itself is the period (no padding), as in the reference maps; otherwise the
image is padded by :meth:`SimoncelliFilter.radius` voxels with the boundary condition first.

The kernel is not compact: a crop with the margin of :meth:`SimoncelliFilter.radius` reproduces the whole-image
response only approximately (the test suite bounds the difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.fft as sfft

from .boundary import Boundary, pad
from .reader import BlockReader

#: Margin (voxels) per 2**level voxels of wavelet scale used to pad and to crop: the spatial kernel's tail beyond
#: it is small (see tests/test_filters.py, crop invariance of the Simoncelli wavelet).
APRON_PER_SCALE = 8


def simoncelli_frequency_response(shape: Sequence[int], level: int) -> np.ndarray:
    """The band-pass response on IBSI's centred frequency grid of ``shape`` (zero frequency in the middle)."""
    coordinates = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    squared = np.zeros(tuple(shape))
    for axis, c in enumerate(coordinates):
        squared = squared + c.reshape([-1 if i == axis else 1 for i in range(len(shape))]) ** 2
    nu = np.sqrt(squared)
    nu_max = 2.0 ** (1 - level)
    band = (nu >= nu_max / 4) & (nu <= nu_max)
    response = np.zeros(nu.shape)
    response[band] = np.cos(math.pi / 2 * np.log2(2 * nu[band] / nu_max))
    return response


@dataclass(frozen=True, slots=True)
class SimoncelliFilter:
    """Simoncelli wavelet settings: the decomposition ``level`` (1 = finest band)."""

    FILTER: ClassVar[str] = "simoncelli_wavelet"
    IBSI_CODE: ClassVar[str] = "LODD"
    KEYS: ClassVar[tuple[str, ...]] = ("level",)

    level: int

    @classmethod
    def read(cls, block: BlockReader, axes: Sequence[int]) -> SimoncelliFilter:
        """Settings from a validated parameter-file mapping."""
        return cls(block.integer("level", minimum=1, unit="(decomposition level)"))

    def label(self) -> str:
        """Name part: ``simoncelli_l1``."""
        return f"simoncelli_l{self.level}"

    def radius(self, spacing: Sequence[float], axes: Sequence[int]) -> tuple[int, ...]:
        """Margin in voxels along each filtered axis (the kernel is not compact; see the module note)."""
        return tuple(APRON_PER_SCALE * 2**self.level for _ in axes)

    def response(self, array: np.ndarray, spacing: Sequence[float], axes: Sequence[int],
                 boundary: Boundary) -> np.ndarray:
        """The band-pass response of ``level`` (real part)."""
        widths = [0] * array.ndim
        if boundary is not Boundary.PERIODIC:
            for axis, r in zip(axes, self.radius(spacing, axes)):
                widths[axis] = r
        padded = pad(array, widths, boundary)
        shape = [padded.shape[a] for a in axes]
        response = sfft.ifftshift(simoncelli_frequency_response(shape, self.level))
        response = response.reshape([padded.shape[a] if a in axes else 1 for a in range(array.ndim)])
        filtered = np.real(sfft.ifftn(sfft.fftn(padded, axes=axes) * response, axes=axes))
        return filtered[tuple(slice(w, w + n) for w, n in zip(widths, array.shape))]
