r"""IBSI 1 intensity-based statistics that pyradiomics' first-order class lacks (reference manual
arXiv:1612.07003, chapter 3.3, family UHIW).

Notation of the manual: :math:`\mathbf{X}_{gl}` the :math:`N_v` intensities of the ROI intensity mask (raw, not
discretised), :math:`\mu` their mean, :math:`\sigma` their standard deviation (no bias correction, as
:math:`F_{stat.var}`), :math:`M` their median and :math:`P_q` their :math:`q`-th percentile (linear interpolation
between order statistics, ``numpy.percentile``'s default, as pyradiomics' own percentile features).

The math lives in module-level functions on a 1-D array; :class:`StatisticsExtras` adapts them to pyradiomics'
first-order class, whose ``targetVoxelArray`` holds the intensities of the intensity mask.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def median_absolute_deviation(values: FloatArray) -> float:
    r"""Intensity-based median absolute deviation (IBSI N72L): :math:`F = \frac{1}{N_v} \sum_k |X_{gl,k} - M|`.

    ``numpy.mean(numpy.abs(x - numpy.median(x)))``: the mean (not the median) of the absolute deviations from the
    median, as the manual defines it.
    """
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(np.abs(values - np.median(values))))


def coefficient_of_variation(values: FloatArray) -> float:
    r"""Intensity-based coefficient of variation (IBSI 7TET): :math:`F = \sigma / \mu`, with the population standard
    deviation :math:`\sigma = F_{stat.var}^{1/2}`; NaN (undefined) when :math:`\mu = 0`.

    ``numpy.std(x) / numpy.mean(x)``.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(values))
    return float(np.std(values)) / mean if mean != 0 else math.nan


def quartile_coefficient_of_dispersion(values: FloatArray) -> float:
    r"""Intensity-based quartile coefficient of dispersion (IBSI 9S40):
    :math:`F = (P_{75} - P_{25}) / (P_{75} + P_{25})`; NaN (undefined) when :math:`P_{75} + P_{25} = 0`.

    ``p25, p75 = numpy.percentile(x, [25, 75]); (p75 - p25) / (p75 + p25)``.
    """
    p25, p75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    total = float(p75 + p25)
    return float(p75 - p25) / total if total != 0 else math.nan


class StatisticsExtras:
    """The IBSI intensity-based statistics pyradiomics' ``RadiomicsFirstOrder`` lacks (mixin, first in the MRO).

    Expects pyradiomics' first-order set-up: ``targetVoxelArray``, shape (1, N_v), the intensities of the ROI
    intensity mask.
    """

    targetVoxelArray: FloatArray

    def getMedianAbsoluteDeviationFeatureValue(self) -> float:
        r"""Intensity-based median absolute deviation (IBSI N72L): :math:`\frac{1}{N_v} \sum_k |X_{gl,k} - M|`."""
        return median_absolute_deviation(self.targetVoxelArray.ravel())

    def getCoefficientOfVariationFeatureValue(self) -> float:
        r"""Intensity-based coefficient of variation (IBSI 7TET): :math:`\sigma / \mu`."""
        return coefficient_of_variation(self.targetVoxelArray.ravel())

    def getQuartileCoefficientOfDispersionFeatureValue(self) -> float:
        r"""Intensity-based quartile coefficient of dispersion (IBSI 9S40):
        :math:`(P_{75} - P_{25}) / (P_{75} + P_{25})`."""
        return quartile_coefficient_of_dispersion(self.targetVoxelArray.ravel())
