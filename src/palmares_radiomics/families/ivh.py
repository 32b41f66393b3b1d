r"""IBSI 1 intensity-volume histogram (IVH) features (reference manual arXiv:1612.07003, chapter 3.5, family P88C).

The IVH has its own discretisation (``palmares.ivh`` in the parameter file, :class:`IvhDiscretisation`), separate
from the one of the texture and intensity histogram features. It maps the intensities :math:`\mathbf{X}_{gl}` of
the :math:`N_v` voxels of the ROI intensity mask to discretised intensities :math:`\mathbf{X}_{d,gl}` on a grid
:math:`i = \min(\mathbf{G}) + k\,w_d`, :math:`k = 0, 1, \ldots`, with :math:`w_d` the discretisation interval and
:math:`\mathbf{G}` the total range. The manual's three cases:

- ``none``, calibrated discrete intensities (CT in HU): :math:`\mathbf{X}_{d,gl} = \mathbf{X}_{gl}`,
  :math:`w_d = 1`, :math:`\mathbf{G}` the re-segmentation range (its upper end :math:`\max(\mathbf{X}_{gl})` when
  the range is open above, its lower end :math:`\min(\mathbf{X}_{gl})` when open below; without a range
  :math:`[\min(\mathbf{X}_{gl}), \max(\mathbf{X}_{gl})]`);
- ``fixed_bin_size``, calibrated continuous intensities (PET in SUV): bins of width :math:`w_b` from
  :math:`X_{gl,min}` (the lower end of the re-segmentation range, else :math:`\min(\mathbf{X}_{gl})`), each voxel
  replaced by its bin centre :math:`X_{gl,min} + (X_d - 0.5) w_b`, :math:`w_d = w_b`,
  :math:`\mathbf{G} = [X_{gl,min} + 0.5 w_b, X_{gl,max} - 0.5 w_b]` (:math:`X_{gl,max}` the upper end of the
  range, else :math:`\max(\mathbf{X}_{gl})`);
- ``fixed_bin_number``, arbitrary intensity units (MR): :math:`N_g` bins between :math:`\min(\mathbf{X}_{gl})`
  and :math:`\max(\mathbf{X}_{gl})`, :math:`\mathbf{X}_{d,gl} = \mathbf{X}_d`, :math:`w_d = 1`,
  :math:`\mathbf{G} = [1, N_g]`.

``palmares.ivh.range`` replaces the re-segmentation range as :math:`\mathbf{G}` (none) or as
:math:`[X_{gl,min}, X_{gl,max}]` (fixed bin size); a null end falls back as above.

On the grid, with :math:`k` the grid step of a voxel (:meth:`IvhBinning.steps`), the volume fraction of intensity
:math:`i_k` is :math:`\nu_k = 1 - \frac{1}{N_v} \sum_j [X_{d,gl,j} < i_k] = \frac{1}{N_v} \#\{j : k_j \ge k\}` and
its intensity fraction :math:`\gamma_k = (i_k - \min \mathbf{G}) / (\max \mathbf{G} - \min \mathbf{G})
= k\,w_d / (\max \mathbf{G} - \min \mathbf{G})`; intensities absent from the ROI count too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from radiomics.base import RadiomicsFeaturesBase

from ..errors import ConfigError, FeatureExtractionError
from ..ibsi import EDGE_TOLERANCE, Resegmentation

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

IVH_KEYS = frozenset({"method", "bin_width", "bin_number", "range"})
METHODS = ("none", "fixed_bin_size", "fixed_bin_number")
#: Tolerance (in grid steps, or in voxels) below which a value counts as on a threshold: ``0.1 * 900`` must be 90.
THRESHOLD_TOLERANCE = 1e-9


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class IvhDiscretisation:
    """The IVH discretisation of a parameter file (``palmares.ivh``):

    - ``method``: ``none`` (calibrated discrete), ``fixed_bin_size`` (calibrated continuous) or
      ``fixed_bin_number`` (arbitrary units), the manual's three cases (module docstring);
    - ``bin_width``: :math:`w_b`, fixed bin size only (required there);
    - ``bin_number``: :math:`N_g` (at least 2), fixed bin number only (required there);
    - ``range``: ``[low, high]`` (either may be null) replacing the re-segmentation range as the total range (none) or
      as the fixed-bin-size minimum and maximum; not with fixed bin number, whose range is the ROI's.
    """

    method: Literal["none", "fixed_bin_size", "fixed_bin_number"]
    bin_width: float | None = None
    bin_number: int | None = None
    range: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"'palmares.ivh.method' must be none, fixed_bin_size or fixed_bin_number. "
                              f"Found: {self.method!r}")
        if self.method == "fixed_bin_size":
            if not (_is_number(self.bin_width) and self.bin_width > 0):  # type: ignore[operator]
                raise ConfigError(f"'palmares.ivh.bin_width' must be a positive number for fixed_bin_size. "
                                  f"Found: {self.bin_width!r}")
        elif self.bin_width is not None:
            raise ConfigError(f"'palmares.ivh.bin_width' is for fixed_bin_size only (method {self.method}); "
                              "set it to null")
        if self.method == "fixed_bin_number":
            number = self.bin_number
            if not (isinstance(number, int) and not isinstance(number, bool) and number >= 2):
                raise ConfigError(f"'palmares.ivh.bin_number' must be an integer >= 2 for fixed_bin_number. "
                                  f"Found: {self.bin_number!r}")
            if self.range is not None:
                raise ConfigError("'palmares.ivh.range' is not used with fixed_bin_number (the range is the ROI's "
                                  "minimum and maximum, IBSI's arbitrary-units case); set it to null")
        elif self.bin_number is not None:
            raise ConfigError(f"'palmares.ivh.bin_number' is for fixed_bin_number only (method {self.method}); "
                              "set it to null")
        if self.range is not None:
            if len(self.range) != 2 or not all(v is None or _is_number(v) for v in self.range):
                raise ConfigError(f"'palmares.ivh.range' must be [low, high] (numbers, null for the re-segmentation "
                                  f"range's end). Found: {list(self.range)!r}")
            low, high = self.range
            if low is not None and high is not None and not low < high:
                raise ConfigError(f"'palmares.ivh.range' lower bound must be below the upper bound. "
                                  f"Found: {list(self.range)!r}")

    @classmethod
    def from_block(cls, block: Mapping[str, Any] | None, path: str | Path) -> IvhDiscretisation:
        """The ``palmares.ivh`` block of parameter file ``path``, validated (required: called for feature class
        ``ivh``). Raises ConfigError naming the file and the key."""
        if block is None:
            raise ConfigError(f"parameter file {path}: feature class 'ivh' needs 'palmares.ivh', its discretisation "
                              "(method none for calibrated discrete intensities such as CT, fixed_bin_size with "
                              "bin_width for calibrated continuous ones such as PET, fixed_bin_number with bin_number "
                              "for arbitrary units)")
        if not isinstance(block, Mapping):
            raise ConfigError(f"parameter file {path}: 'palmares.ivh' must be a mapping (method, bin_width, "
                              f"bin_number, range). Found: {block!r}")
        unknown = set(block) - IVH_KEYS
        if unknown:
            raise ConfigError(f"parameter file {path}: unknown key(s) {sorted(unknown)} in 'palmares.ivh'; "
                              f"allowed {sorted(IVH_KEYS)}")
        bounds = block.get("range")
        if bounds is not None and (isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence)):
            raise ConfigError(f"parameter file {path}: 'palmares.ivh.range' must be [low, high] or null. "
                              f"Found: {bounds!r}")
        try:
            return cls(block.get("method"), block.get("bin_width"), block.get("bin_number"),
                       None if bounds is None else tuple(bounds))  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"parameter file {path}: {exc}") from exc

    def resolve(self, values: FloatArray, resegmentation: Resegmentation) -> IvhBinning:
        """The IVH grid for one ROI (``values``: the intensities of its intensity mask).

        Raises FeatureExtractionError when an ROI intensity lies below the start of the grid (a ``range`` whose
        lower end is above the ROI minimum).
        """
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise FeatureExtractionError("the intensity mask is empty: no intensity-volume histogram")
        roi_low, roi_high = float(values.min()), float(values.max())
        if self.method == "fixed_bin_number":
            number = int(self.bin_number)  # type: ignore[arg-type]
            if roi_high == roi_low:  # one intensity: every voxel in bin 1
                return IvhBinning(1.0, 1.0, float(number), roi_low, 0.0, 1.0, number - 1)
            return IvhBinning(1.0, 1.0, float(number), roi_low, float(number), roi_high - roi_low, number - 1)
        reseg = resegmentation.range or (None, None)
        own = self.range or (None, None)
        low = own[0] if own[0] is not None else reseg[0]
        high = own[1] if own[1] is not None else reseg[1]
        low = roi_low if low is None else float(low)
        high = roi_high if high is None else float(high)
        if roi_low < low:
            raise FeatureExtractionError(f"ROI intensity {roi_low:g} is below the intensity-volume histogram's lower "
                                         f"bound {low:g} (palmares.ivh.range or the re-segmentation range)")
        if self.method == "none":
            return IvhBinning(low, 1.0, high, low, 1.0, 1.0, None)
        width = float(self.bin_width)  # type: ignore[arg-type]
        return IvhBinning(low + 0.5 * width, width, high - 0.5 * width, low, 1.0, width, None)


@dataclass(frozen=True, slots=True)
class IvhBinning:
    r"""The IVH grid resolved on one ROI: a voxel of intensity :math:`x` has grid step
    :math:`k = \lfloor multiplier\,(x - low) / divisor \rfloor` (at most ``last_step``) and discretised intensity
    :math:`X_{d,gl} = origin + k \cdot interval`; the total range is :math:`\mathbf{G} = [origin, top]`.

    The step is the bin index minus one, computed as ``ibsi.Binning`` computes bins: fixed bin size
    :math:`\lfloor (x - X_{gl,min}) / w_b \rfloor`, fixed bin number :math:`\lfloor N_g (x - \min) / (\max - \min)
    \rfloor` (the maximum in bin :math:`N_g`), none :math:`\lfloor x - \min \mathbf{G} \rfloor`.
    """

    origin: float       # min(G): the discretised intensity of grid step 0
    interval: float     # w_d
    top: float          # max(G)
    low: float          # intensity where step 0 starts
    multiplier: float   # fixed bin number: N_g (0 for an ROI of one intensity); else 1
    divisor: float      # fixed bin size: w_b; fixed bin number: max - min; none: 1
    last_step: int | None  # fixed bin number: N_g - 1 (the maximum goes to the last bin)

    def steps(self, values: FloatArray) -> IntArray:
        """Grid step :math:`k \\ge 0` of each intensity (``EDGE_TOLERANCE``: values on a bin edge belong to the bin
        above, whatever floating-point noise interpolation left)."""
        values = np.asarray(values, dtype=np.float64)
        steps = np.floor(self.multiplier * (values - self.low) / self.divisor + EDGE_TOLERANCE)
        steps = steps.astype(np.int64)
        if self.last_step is not None:
            steps = np.minimum(steps, self.last_step)
        if steps.size and steps.min() < 0:
            raise FeatureExtractionError(f"intensity {float(np.min(values)):g} lies below the intensity-volume "
                                         f"histogram's lower bound {self.low:g}")
        return steps

    def intensity(self, step: int) -> float:
        """The discretised intensity :math:`i_k = \\min(\\mathbf{G}) + k\\,w_d` of grid step ``step``."""
        return self.origin + step * self.interval


@dataclass(frozen=True, slots=True)
class VolumeHistogram:
    """The cumulative IVH of one ROI: ``at_least[k]`` voxels have grid step :math:`\\ge k` (so
    :math:`\\nu_k` = ``at_least[k] / voxels``), for :math:`k = 0 \\ldots K`, ``at_least[K] = 0``."""

    at_least: IntArray
    voxels: int
    binning: IvhBinning

    @classmethod
    def of(cls, values: FloatArray, binning: IvhBinning) -> VolumeHistogram:
        """The IVH of the intensities ``values`` on ``binning``'s grid.

        ``n = bincount(k); at_least = N_v - concatenate([0], cumsum(n))``.
        """
        steps = binning.steps(values)
        if steps.size == 0:
            raise ValueError("the intensity mask is empty")
        counts = np.bincount(steps)
        at_least = steps.size - np.concatenate(([0], np.cumsum(counts)))
        return cls(at_least, int(steps.size), binning)

    @property
    def span_steps(self) -> float:
        r""":math:`(\max \mathbf{G} - \min \mathbf{G}) / w_d`, so that :math:`\gamma_k = k / span`."""
        return (self.binning.top - self.binning.origin) / self.binning.interval


def volume_fraction_at_intensity(h: VolumeHistogram, fraction: float) -> float:
    r"""Volume at intensity fraction (IBSI BC2M), :math:`V_x`: the largest volume fraction :math:`\nu` whose
    intensity fraction :math:`\gamma \ge x`; NaN when :math:`\mathbf{G}` is empty (:math:`\max \mathbf{G} \le
    \min \mathbf{G}`).

    :math:`\nu` does not increase with :math:`i`, so :math:`V_x = \nu_{k^*}` at the first grid step with
    :math:`\gamma \ge x`, :math:`k^* = \lceil x\,(\max \mathbf{G} - \min \mathbf{G}) / w_d \rceil` (0 beyond the
    ROI's highest step).
    """
    span = h.span_steps
    if not span > 0:
        return math.nan
    first = max(0, math.ceil(fraction * span - THRESHOLD_TOLERANCE))
    return float(h.at_least[first]) / h.voxels if first < h.at_least.size else 0.0


def intensity_at_volume_fraction(h: VolumeHistogram, fraction: float) -> float:
    r"""Intensity at volume fraction (IBSI GBPN), :math:`I_x`: the lowest discretised intensity :math:`i` on the grid
    whose volume fraction :math:`\nu_i \le x` (at most :math:`x` of the volume has intensity :math:`\ge i`).

    ``k = argmax(at_least <= x * N_v)``, always found (``at_least[K] = 0``); :math:`I_x = \min \mathbf{G} + k\,w_d`.
    """
    step = int(np.argmax(h.at_least <= fraction * h.voxels + THRESHOLD_TOLERANCE))
    return h.binning.intensity(step)


class IntensityVolumeHistogram(RadiomicsFeaturesBase):
    """IBSI intensity-volume histogram features (``featureClass: ivh``) of the ROI intensity mask.

    The grid comes from the setting ``ibsi_ivh_binning`` (:meth:`IvhDiscretisation.resolve` on the ROI's
    intensities, from the parameter file's ``palmares.ivh``).
    """

    def _initCalculation(self, voxelCoordinates: Any = None) -> None:  # noqa: N802, N803 (pyradiomics' names)
        if voxelCoordinates is not None:
            raise ValueError("the intensity-volume histogram family has no voxel-based mode")
        binning = self.settings.get("ibsi_ivh_binning")
        if binning is None:
            raise ConfigError("feature class 'ivh' needs the intensity-volume histogram discretisation: add a "
                              "'palmares.ivh' block (method none, fixed_bin_size or fixed_bin_number) to the "
                              "parameter file")
        self.volumeHistogram = VolumeHistogram.of(self.imageArray[self.maskArray], binning)

    def getVolumeFractionAt10PercentIntensityFeatureValue(self) -> float:
        """Volume fraction at 10% intensity (IBSI BC2M, :math:`V_{10}`)."""
        return volume_fraction_at_intensity(self.volumeHistogram, 0.10)

    def getVolumeFractionAt90PercentIntensityFeatureValue(self) -> float:
        """Volume fraction at 90% intensity (IBSI BC2M, :math:`V_{90}`)."""
        return volume_fraction_at_intensity(self.volumeHistogram, 0.90)

    def getIntensityAt10PercentVolumeFeatureValue(self) -> float:
        """Intensity at 10% volume (IBSI GBPN, :math:`I_{10}`)."""
        return intensity_at_volume_fraction(self.volumeHistogram, 0.10)

    def getIntensityAt90PercentVolumeFeatureValue(self) -> float:
        """Intensity at 90% volume (IBSI GBPN, :math:`I_{90}`)."""
        return intensity_at_volume_fraction(self.volumeHistogram, 0.90)

    def getVolumeFractionDifferenceFeatureValue(self) -> float:
        """Volume fraction difference between 10% and 90% intensity (IBSI DDTU): :math:`V_{10} - V_{90}`."""
        return (volume_fraction_at_intensity(self.volumeHistogram, 0.10)
                - volume_fraction_at_intensity(self.volumeHistogram, 0.90))

    def getIntensityDifferenceFeatureValue(self) -> float:
        """Intensity difference between 10% and 90% volume (IBSI CNV2): :math:`I_{10} - I_{90}`."""
        return (intensity_at_volume_fraction(self.volumeHistogram, 0.10)
                - intensity_at_volume_fraction(self.volumeHistogram, 0.90))
