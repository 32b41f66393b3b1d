r"""IBSI 1 intensity histogram features (reference manual arXiv:1612.07003, chapter 3.4, family ZVCW).

Notation of the manual: :math:`\mathbf{X}_d` the discretised intensities (bins :math:`1 \ldots N_g`) of the
:math:`N_v` voxels of the ROI intensity mask, :math:`n_i` the count of bin :math:`i` and :math:`p_i = n_i / N_v`,
:math:`\mu` and :math:`\sigma^2` the mean and variance of :math:`\mathbf{X}_d` (no bias correction), :math:`P_q`
its :math:`q`-th percentile (linear interpolation between order statistics, ``numpy.percentile``'s default, as
pyradiomics and MIRP). The histogram :math:`\mathbf{H} = \{n_1, \ldots, n_{N_g}\}` is not sparse: it runs over
every bin from 1 to :math:`N_g = \max(\mathbf{X}_d)`, empty bins included (fixed bin size from a lower bound
below the ROI minimum leaves the first bins empty).

Entropy (TLU2) and uniformity (BJ5W) of this family stay in pyradiomics' first-order class, which computes them
on the same discretised intensities.

The math lives in module-level functions of :class:`DiscretisedIntensities` (computed once per ROI);
:class:`IntensityHistogram` adapts them to a pyradiomics feature class. In IBSI mode (``ibsi.feature_class``) the
discretisation is the ROI's resolved IBSI binning (``ibsi._IbsiBinning``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from radiomics.base import RadiomicsFeaturesBase

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Percentiles every ROI needs (10th, quartiles, median, 90th), computed in one pass.
PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0)


@dataclass(frozen=True, slots=True)
class DiscretisedIntensities:
    """The discretised intensities of one ROI and what every feature of the family reads from them."""

    values: IntArray        # X_d, one bin index (1, 2, ...) per voxel of the intensity mask
    counts: IntArray        # n_i for i = 1 .. N_g (index 0 holds bin 1)
    mean: float             # mu
    variance: float         # sigma^2, no bias correction
    percentiles: dict[float, float]  # P_q for q in PERCENTILES

    @classmethod
    def of(cls, values: IntArray) -> DiscretisedIntensities:
        """Histogram, mean, variance and percentiles of ``values`` (bin indices >= 1)."""
        values = np.asarray(values, dtype=np.int64).ravel()
        if values.size == 0:
            raise ValueError("the intensity mask is empty")
        if values.min() < 1:
            raise ValueError(f"discretised intensities must be bins 1, 2, ...; found {int(values.min())}")
        counts = np.bincount(values)[1:]
        levels = np.arange(1, counts.size + 1, dtype=np.float64)
        mean = int(values.sum()) / values.size  # exact: a sum of integers, divided once
        variance = float(np.dot((levels - mean) ** 2, counts)) / values.size
        percentiles = dict(zip(PERCENTILES, (float(p) for p in np.percentile(values, PERCENTILES))))
        return cls(values, counts, mean, variance, percentiles)

    @property
    def voxels(self) -> int:
        """:math:`N_v`."""
        return int(self.values.size)

    @property
    def levels(self) -> FloatArray:
        """The bins :math:`i = 1 \\ldots N_g` of :attr:`counts`."""
        return np.arange(1, self.counts.size + 1, dtype=np.float64)


# --- moments ------------------------------------------------------------------------------------------------------

def mean(h: DiscretisedIntensities) -> float:
    r"""Mean discretised intensity (IBSI X6K6): :math:`F = \frac{1}{N_v} \sum_k X_{d,k} = \sum_i i\,p_i`."""
    return h.mean


def variance(h: DiscretisedIntensities) -> float:
    r"""Discretised intensity variance (IBSI CH89): :math:`F = \sum_i (i - \mu)^2 p_i` (no bias correction)."""
    return h.variance


def _central_moment(h: DiscretisedIntensities, order: int) -> float:
    r""":math:`\sum_i (i - \mu)^{order} p_i`."""
    return float(np.dot((h.levels - h.mean) ** order, h.counts)) / h.voxels


def skewness(h: DiscretisedIntensities) -> float:
    r"""Discretised intensity skewness (IBSI 88K1): :math:`F = \sum_i (i - \mu)^3 p_i / \sigma^3`, 0 when
    :math:`\sigma = 0`."""
    return _central_moment(h, 3) / h.variance ** 1.5 if h.variance > 0 else 0.0


def kurtosis(h: DiscretisedIntensities) -> float:
    r"""(Excess) discretised intensity kurtosis (IBSI C3I7): :math:`F = \sum_i (i - \mu)^4 p_i / \sigma^4 - 3`, 0 when
    :math:`\sigma = 0`."""
    return _central_moment(h, 4) / h.variance ** 2 - 3.0 if h.variance > 0 else 0.0


# --- order statistics ---------------------------------------------------------------------------------------------

def median(h: DiscretisedIntensities) -> float:
    """Median discretised intensity (IBSI WIFQ): the sample median of :math:`\\mathbf{X}_d` (``numpy.median``)."""
    return h.percentiles[50.0]


def minimum(h: DiscretisedIntensities) -> float:
    r"""Minimum discretised intensity (IBSI 1PR8): :math:`F = \min(\mathbf{X}_d)`."""
    return float(h.values.min())


def maximum(h: DiscretisedIntensities) -> float:
    r"""Maximum discretised intensity (IBSI 3NCY): :math:`F = \max(\mathbf{X}_d) = N_g`."""
    return float(h.counts.size)


def percentile10(h: DiscretisedIntensities) -> float:
    """10th discretised intensity percentile (IBSI GPMT): :math:`P_{10}` (``numpy.percentile(x, 10)``)."""
    return h.percentiles[10.0]


def percentile90(h: DiscretisedIntensities) -> float:
    """90th discretised intensity percentile (IBSI OZ0C): :math:`P_{90}` (``numpy.percentile(x, 90)``)."""
    return h.percentiles[90.0]


def mode(h: DiscretisedIntensities) -> float:
    r"""Intensity histogram mode (IBSI AMMC): the bin :math:`i` with the highest count :math:`n_i`; of several, the one
    closest to :math:`\mu`, and of two equally close the lower one (left of the mean).

    ``candidates = flatnonzero(n == max(n)) + 1; candidates[argmin(abs(candidates - mu))]`` (``argmin`` takes the
    first, i.e. lower, of equal distances; :math:`\mu` is a ratio of integers, so a mean halfway between two bins is
    exactly representable and the tie is exact).
    """
    candidates = np.flatnonzero(h.counts == h.counts.max()) + 1
    return float(candidates[np.argmin(np.abs(candidates - h.mean))])


def interquartile_range(h: DiscretisedIntensities) -> float:
    r"""Discretised intensity interquartile range (IBSI WR0O): :math:`F = P_{75} - P_{25}`."""
    return h.percentiles[75.0] - h.percentiles[25.0]


def intensity_range(h: DiscretisedIntensities) -> float:
    r"""Discretised intensity range (IBSI 5Z3W): :math:`F = \max(\mathbf{X}_d) - \min(\mathbf{X}_d)`."""
    return maximum(h) - minimum(h)


# --- dispersion ---------------------------------------------------------------------------------------------------

def mean_absolute_deviation(h: DiscretisedIntensities) -> float:
    r"""Intensity histogram mean absolute deviation (IBSI D2ZX): :math:`F = \frac{1}{N_v} \sum_k |X_{d,k} - \mu|
    = \sum_i |i - \mu|\,p_i`."""
    return float(np.dot(np.abs(h.levels - h.mean), h.counts)) / h.voxels


def robust_mean_absolute_deviation(h: DiscretisedIntensities) -> float:
    r"""Intensity histogram robust mean absolute deviation (IBSI WRZB): the mean absolute deviation of
    :math:`\mathbf{X}_{d,10-90} = \{x \in \mathbf{X}_d \mid P_{10} \le x \le P_{90}\}` from its own mean,
    :math:`F = \frac{1}{N_{v,10-90}} \sum_k |X_{d,10-90,k} - \overline{X}_{d,10-90}|`."""
    inside = h.values[(h.values >= h.percentiles[10.0]) & (h.values <= h.percentiles[90.0])]
    return float(np.mean(np.abs(inside - inside.mean())))


def median_absolute_deviation(h: DiscretisedIntensities) -> float:
    r"""Intensity histogram median absolute deviation (IBSI 4RNL): :math:`F = \frac{1}{N_v} \sum_k |X_{d,k} - M|`,
    :math:`M` the median."""
    return float(np.dot(np.abs(h.levels - h.percentiles[50.0]), h.counts)) / h.voxels


def coefficient_of_variation(h: DiscretisedIntensities) -> float:
    r"""Intensity histogram coefficient of variation (IBSI CWYJ): :math:`F = \sigma / \mu` (:math:`\mu \ge 1`)."""
    return float(np.sqrt(h.variance)) / h.mean


def quartile_coefficient_of_dispersion(h: DiscretisedIntensities) -> float:
    r"""Intensity histogram quartile coefficient of dispersion (IBSI SLWD):
    :math:`F = (P_{75} - P_{25}) / (P_{75} + P_{25})` (bins are >= 1, so the denominator is >= 2)."""
    p25, p75 = h.percentiles[25.0], h.percentiles[75.0]
    return (p75 - p25) / (p75 + p25)


# --- histogram gradient -------------------------------------------------------------------------------------------

def histogram_gradient(h: DiscretisedIntensities) -> FloatArray:
    r"""The histogram gradient :math:`\mathbf{H}'` over the bins :math:`i = 1 \ldots N_g` (empty bins included):

    .. math::
        H'_i = \begin{cases} n_2 - n_1 & i = 1\\ (n_{i+1} - n_{i-1})/2 & 1 < i < N_g\\
        n_{N_g} - n_{N_g - 1} & i = N_g \end{cases}

    ``numpy.gradient(n)`` (unit spacing: central differences inside, one-sided at both ends); ``[0]`` when
    :math:`N_g = 1`.
    """
    counts = h.counts.astype(np.float64)
    return np.gradient(counts) if counts.size > 1 else np.zeros(1)


def maximum_histogram_gradient(h: DiscretisedIntensities) -> float:
    r"""Maximum histogram gradient (IBSI 12CE): :math:`F = \max(\mathbf{H}')`."""
    return float(histogram_gradient(h).max())


def maximum_histogram_gradient_intensity(h: DiscretisedIntensities) -> float:
    r"""Maximum histogram gradient intensity (IBSI 8E6O): the bin :math:`i` where :math:`\mathbf{H}'` is maximal (the
    lowest such bin)."""
    return float(np.argmax(histogram_gradient(h)) + 1)


def minimum_histogram_gradient(h: DiscretisedIntensities) -> float:
    r"""Minimum histogram gradient (IBSI VQB3): :math:`F = \min(\mathbf{H}')`."""
    return float(histogram_gradient(h).min())


def minimum_histogram_gradient_intensity(h: DiscretisedIntensities) -> float:
    r"""Minimum histogram gradient intensity (IBSI RHQZ): the bin :math:`i` where :math:`\mathbf{H}'` is minimal (the
    lowest such bin)."""
    return float(np.argmin(histogram_gradient(h)) + 1)


# --- pyradiomics adapter ------------------------------------------------------------------------------------------

class IntensityHistogram(RadiomicsFeaturesBase):
    """IBSI intensity histogram features (``featureClass: histogram``) on the discretised intensities of the ROI
    intensity mask; the discretisation is the class's ``_applyBinning`` (IBSI mode: the ROI's resolved binning)."""

    def __init__(self, inputImage: Any, inputMask: Any, **kwargs: Any) -> None:  # noqa: N803 (pyradiomics' names)
        super().__init__(inputImage, inputMask, **kwargs)
        self.discretizedImageArray = self._applyBinning(self.imageArray.copy())

    def _initCalculation(self, voxelCoordinates: Any = None) -> None:  # noqa: N802, N803
        if voxelCoordinates is not None:
            raise ValueError("the intensity histogram family has no voxel-based mode")
        self.histogram = DiscretisedIntensities.of(self.discretizedImageArray[self.maskArray])

    def getMeanFeatureValue(self) -> float:
        """Mean discretised intensity (IBSI X6K6)."""
        return mean(self.histogram)

    def getVarianceFeatureValue(self) -> float:
        """Discretised intensity variance (IBSI CH89)."""
        return variance(self.histogram)

    def getSkewnessFeatureValue(self) -> float:
        """Discretised intensity skewness (IBSI 88K1)."""
        return skewness(self.histogram)

    def getKurtosisFeatureValue(self) -> float:
        """(Excess) discretised intensity kurtosis (IBSI C3I7): already minus 3."""
        return kurtosis(self.histogram)

    def getMedianFeatureValue(self) -> float:
        """Median discretised intensity (IBSI WIFQ)."""
        return median(self.histogram)

    def getMinimumFeatureValue(self) -> float:
        """Minimum discretised intensity (IBSI 1PR8)."""
        return minimum(self.histogram)

    def get10PercentileFeatureValue(self) -> float:
        """10th discretised intensity percentile (IBSI GPMT)."""
        return percentile10(self.histogram)

    def get90PercentileFeatureValue(self) -> float:
        """90th discretised intensity percentile (IBSI OZ0C)."""
        return percentile90(self.histogram)

    def getMaximumFeatureValue(self) -> float:
        """Maximum discretised intensity (IBSI 3NCY)."""
        return maximum(self.histogram)

    def getModeFeatureValue(self) -> float:
        """Intensity histogram mode (IBSI AMMC)."""
        return mode(self.histogram)

    def getInterquartileRangeFeatureValue(self) -> float:
        """Discretised intensity interquartile range (IBSI WR0O)."""
        return interquartile_range(self.histogram)

    def getRangeFeatureValue(self) -> float:
        """Discretised intensity range (IBSI 5Z3W)."""
        return intensity_range(self.histogram)

    def getMeanAbsoluteDeviationFeatureValue(self) -> float:
        """Intensity histogram mean absolute deviation (IBSI D2ZX)."""
        return mean_absolute_deviation(self.histogram)

    def getRobustMeanAbsoluteDeviationFeatureValue(self) -> float:
        """Intensity histogram robust mean absolute deviation (IBSI WRZB)."""
        return robust_mean_absolute_deviation(self.histogram)

    def getMedianAbsoluteDeviationFeatureValue(self) -> float:
        """Intensity histogram median absolute deviation (IBSI 4RNL)."""
        return median_absolute_deviation(self.histogram)

    def getCoefficientOfVariationFeatureValue(self) -> float:
        """Intensity histogram coefficient of variation (IBSI CWYJ)."""
        return coefficient_of_variation(self.histogram)

    def getQuartileCoefficientOfDispersionFeatureValue(self) -> float:
        """Intensity histogram quartile coefficient of dispersion (IBSI SLWD)."""
        return quartile_coefficient_of_dispersion(self.histogram)

    def getMaximumHistogramGradientFeatureValue(self) -> float:
        """Maximum histogram gradient (IBSI 12CE)."""
        return maximum_histogram_gradient(self.histogram)

    def getMaximumHistogramGradientIntensityFeatureValue(self) -> float:
        """Maximum histogram gradient intensity (IBSI 8E6O)."""
        return maximum_histogram_gradient_intensity(self.histogram)

    def getMinimumHistogramGradientFeatureValue(self) -> float:
        """Minimum histogram gradient (IBSI VQB3)."""
        return minimum_histogram_gradient(self.histogram)

    def getMinimumHistogramGradientIntensityFeatureValue(self) -> float:
        """Minimum histogram gradient intensity (IBSI RHQZ)."""
        return minimum_histogram_gradient_intensity(self.histogram)
