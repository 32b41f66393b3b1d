"""Boundary conditions of IBSI 2 (padding of the image beyond its edges) and the convolutions that use them.

IBSI 2 names four ways to extend an image past its edge (reference manual, section "Boundary conditions"):

========== ============================ ======================= ====================
IBSI name  values past the edge ``|``   ``scipy.ndimage`` mode  ``numpy.pad`` mode
========== ============================ ======================= ====================
constant   ``0 0 0 | a b c d``          ``constant`` (cval 0)   ``constant``
nearest    ``a a a | a b c d``          ``nearest``             ``edge``
periodic   ``b c d | a b c d``          ``wrap``                ``wrap``
mirror     ``c b a | a b c d``          ``reflect``             ``symmetric``
========== ============================ ======================= ====================

IBSI's *mirror* repeats the edge voxel (half-sample symmetry): that is scipy's ``reflect`` and numpy's
``symmetric``, not scipy's ``mirror``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi


class Boundary(str, Enum):
    """An IBSI 2 boundary condition (the value is the parameter-file spelling)."""

    CONSTANT = "constant"
    NEAREST = "nearest"
    PERIODIC = "periodic"
    MIRROR = "mirror"


_NDIMAGE_MODE = {Boundary.CONSTANT: "constant", Boundary.NEAREST: "nearest", Boundary.PERIODIC: "wrap",
                 Boundary.MIRROR: "reflect"}
_NUMPY_MODE = {Boundary.CONSTANT: "constant", Boundary.NEAREST: "edge", Boundary.PERIODIC: "wrap",
               Boundary.MIRROR: "symmetric"}


def pad(array: np.ndarray, widths: Sequence[int], boundary: Boundary) -> np.ndarray:
    """``array`` extended by ``widths[i]`` voxels on both sides of axis ``i`` as ``boundary`` says.

    >>> pad(np.array([1.0, 2.0, 3.0]), [2], Boundary.MIRROR).tolist()
    [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]
    """
    return np.pad(array, [(int(w), int(w)) for w in widths], mode=_NUMPY_MODE[boundary])


def convolve_1d(array: np.ndarray, kernel: np.ndarray, axis: int, boundary: Boundary) -> np.ndarray:
    """Convolution along one axis with an odd-length kernel centred on its middle element (float64 result).

    Convolution, not correlation: ``kernel`` is flipped, as in the IBSI definitions.
    """
    if kernel.size % 2 == 0:
        raise ValueError(f"a 1-D kernel must have an odd length to have a centre. Found: {kernel.size}")
    return ndi.convolve1d(array, kernel, axis=axis, mode=_NDIMAGE_MODE[boundary], cval=0.0)


def convolve_separable(array: np.ndarray, kernels: Sequence[tuple[int, np.ndarray]], boundary: Boundary) -> np.ndarray:
    """Convolution with a separable kernel given as ``(axis, 1-D kernel)`` pairs, one axis after another."""
    for axis, kernel in kernels:
        array = convolve_1d(array, kernel, axis, boundary)
    return array


class PlaneSpectrum:
    """The image padded for, and Fourier-transformed over, the axes of a (2-D or 3-D) kernel, ready for many kernels.

    Every kernel of one filter (orientations of a Gabor filter, say) is convolved with the same padded image, so the
    image is padded and transformed once. ``radius[i]`` is the largest kernel half-width along ``axes[i]``. The
    transform length is at least the padded length ``shape + 2 * radius``: the circular convolution then wraps
    around only into the first ``2 * radius`` outputs, which lie in the padding and are dropped.
    """

    def __init__(self, array: np.ndarray, axes: Sequence[int], radius: Sequence[int], boundary: Boundary) -> None:
        widths = [0] * array.ndim
        for axis, r in zip(axes, radius):
            widths[axis] = int(r)
        self.axes = tuple(axes)
        self.radius = tuple(int(r) for r in radius)
        self.shape = array.shape
        padded = pad(array, widths, boundary)
        self.fft_shape = tuple(sfft.next_fast_len(padded.shape[a]) for a in self.axes)
        self.spectrum = sfft.fftn(padded, s=self.fft_shape, axes=self.axes)

    def convolve(self, kernel: np.ndarray) -> np.ndarray:
        """Convolution with ``kernel`` (complex allowed; its dimensions are ``axes`` in order, odd lengths at most
        ``2 * radius + 1``), on the image's own grid."""
        if kernel.ndim != len(self.axes) or any(n % 2 == 0 or n > 2 * r + 1 for n, r in zip(kernel.shape, self.radius)):
            raise ValueError(f"kernel shape {kernel.shape} does not fit the radius {self.radius} of the padding")
        shape = [1] * len(self.shape)
        for axis, n in zip(self.axes, kernel.shape):
            shape[axis] = n
        kernel_spectrum = sfft.fftn(kernel.reshape(shape), s=self.fft_shape, axes=self.axes)
        full = sfft.ifftn(self.spectrum * kernel_spectrum, axes=self.axes)
        index: list[slice] = [slice(None)] * len(self.shape)
        for axis, n, r in zip(self.axes, kernel.shape, self.radius):
            # the padded image starts r voxels before the image; the kernel centre lies (n - 1) / 2 into the kernel
            start = r + (n - 1) // 2
            index[axis] = slice(start, start + self.shape[axis])
        return full[tuple(index)]
