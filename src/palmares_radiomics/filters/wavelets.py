"""IBSI 2 separable undecimated wavelets (IBSI code 25BO, as MIRP lists it): Haar, Daubechies, Coiflets, ...

The decomposition filters of a discrete wavelet (PyWavelets' ``dec_lo`` and ``dec_hi``) are applied along each axis
without decimation (stationary transform, "a trous"). ``subband`` names the filter per axis in x, y(, z) order:
``LHL`` is low-pass along x, high-pass along y, low-pass along z. At decomposition level ``n > 1`` the image is
first low-passed along every axis at levels ``1 .. n-1`` and the level-``n`` filters are dilated by ``2**(n-1)``
(zeros between the taps). An even-length filter gets a trailing zero so that it has a centre voxel (the
convention of the IBSI reference maps). With rotation invariance the whole cascade is rotated and the responses
are pooled (:mod:`.rotation`). Phase 1 configurations 5.A1-7.A2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from .boundary import Boundary, convolve_separable
from .laws import read_rotation, rotation_label
from .reader import BlockReader
from .rotation import Pooling, distinct_rotations, pool


@lru_cache(maxsize=None)
def wavelet_names() -> tuple[str, ...]:
    """The discrete wavelets PyWavelets knows (``haar``, ``db1`` ... ``db38``, ``coif1`` ... ``coif17``, ...)."""
    import pywt

    return tuple(pywt.wavelist(kind="discrete"))


def centred(kernel: Sequence[float]) -> np.ndarray:
    """A filter with a centre voxel: a trailing zero appended to an even-length filter."""
    kernel = np.asarray(kernel, dtype=float)
    return np.append(kernel, 0.0) if kernel.size % 2 == 0 else kernel


def dilated(kernel: np.ndarray, level: int) -> np.ndarray:
    """The "a trous" filter of ``level``: ``2**(level-1) - 1`` zeros between neighbouring taps.

    >>> dilated(np.array([1.0, 2.0, 3.0]), 2).tolist()
    [1.0, 0.0, 2.0, 0.0, 3.0]
    """
    step = 2 ** (level - 1)
    out = np.zeros((kernel.size - 1) * step + 1)
    out[::step] = kernel
    return out


@dataclass(frozen=True, slots=True)
class SeparableWaveletFilter:
    """Separable wavelet settings: ``wavelet`` (PyWavelets name), ``subband`` (L/H per axis), ``level``, rotation
    invariance and pooling."""

    FILTER: ClassVar[str] = "separable_wavelet"
    IBSI_CODE: ClassVar[str] = "25BO"
    KEYS: ClassVar[tuple[str, ...]] = ("wavelet", "subband", "level", "rotation_invariance", "pooling")

    wavelet: str
    subband: str
    level: int
    rotation_invariance: bool
    pooling: Pooling

    @classmethod
    def read(cls, block: BlockReader, axes: Sequence[int]) -> SeparableWaveletFilter:
        """Settings from a validated parameter-file mapping."""
        try:
            names = wavelet_names()
        except ImportError as exc:
            raise block.error("separable wavelets need PyWavelets (pip install PyWavelets)") from exc
        wavelet = block.text("wavelet", "a PyWavelets discrete wavelet such as haar, db2, coif1")
        if wavelet not in names:
            raise block.error(f"'wavelet' must be a PyWavelets discrete wavelet (haar, db1-db38, sym2-sym20, "
                              f"coif1-coif17, bior*, rbio*, dmey). Found: {wavelet!r}")
        expected = f"{len(axes)} letters L or H in x, y{', z' if len(axes) == 3 else ''} order, e.g. " + \
                   ("LHL" if len(axes) == 3 else "LH")
        subband = block.text("subband", expected)
        if len(subband) != len(axes) or set(subband) - {"L", "H"}:
            raise block.error(f"'subband' must be {expected}. Found: {subband!r}")
        level = block.integer("level", minimum=1, unit="(decomposition level)")
        invariant, pooling = read_rotation(block)
        return cls(wavelet, subband, level, invariant, pooling)

    def stages(self) -> list[tuple[np.ndarray, ...]]:
        """The cascade: per level, one 1-D filter per axis in numpy order (z, y, x), dilated for its level."""
        import pywt

        bank = pywt.Wavelet(self.wavelet)
        low, high = centred(bank.dec_lo), centred(bank.dec_hi)
        final = tuple(low if band == "L" else high for band in reversed(self.subband))
        stages = [tuple(dilated(low, level) for _ in self.subband) for level in range(1, self.level)]
        return stages + [tuple(dilated(k, self.level) for k in final)]

    def label(self) -> str:
        """Name part: ``wavelet_db2_LHL_l1``, ``wavelet_haar_HHH_l2_invar_avg``."""
        return (f"wavelet_{self.wavelet}_{self.subband}_l{self.level}"
                f"{rotation_label(self.rotation_invariance, self.pooling)}")

    def radius(self, spacing: Sequence[float], axes: Sequence[int]) -> tuple[int, ...]:
        """Half-width in voxels of the whole cascade along each filtered axis (the stages add up)."""
        return tuple(sum(max(k.size for k in stage) // 2 for stage in self.stages()) for _ in axes)

    def response(self, array: np.ndarray, spacing: Sequence[float], axes: Sequence[int],
                 boundary: Boundary) -> np.ndarray:
        """The sub-band response (pooled over rotations when invariant)."""

        def cascade(stages: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
            result = array
            for stage in stages:
                result = convolve_separable(result, list(zip(axes, stage)), boundary)
            return result

        rotations = distinct_rotations(self.stages(), self.rotation_invariance)
        return pool((cascade(stages) for stages in rotations), self.pooling)
