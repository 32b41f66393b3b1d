"""Grey level co-occurrence matrix (GLCM, IBSI family LFYI): the two IBSI features pyradiomics deprecates.

pyradiomics marks sum variance and dissimilarity as deprecated (equal to cluster tendency and difference
average) and computes no value for them; IBSI 1 reports them under their own codes, so they are computed here
from pyradiomics' own normalised matrices and marginals (``self.P_glcm``, ``self.coefficients``). Like every
pyradiomics GLCM feature, a value is computed per matrix (per direction, or one matrix when ``weightingNorm``
merges the directions) and averaged over the matrices that are not empty, so the IBSI aggregations (BTW3, SUJT,
JJUI, ZW7Z, ITBB, IAZD) follow from the settings ``ibsi.run_texture`` passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GlcmExtras:
    """Mixin for ``radiomics.glcm.RadiomicsGLCM``: sum variance (OEEB) and dissimilarity (8S9J).

    Defined here without ``_is_deprecated``, these methods replace pyradiomics' deprecated ones (the mixin is first
    in the method resolution order), so ``enableAllFeatures`` enables them.
    """

    P_glcm: np.ndarray
    coefficients: dict[str, Any]

    def getSumVarianceFeatureValue(self) -> np.ndarray:  # noqa: N802 (pyradiomics' naming)
        r"""Sum variance (IBSI OEEB): :math:`F = \sum_{k=2}^{2N_g} (k - \mu)^2 p_{x+y}(k)`,
        with :math:`\mu = \sum_{k=2}^{2N_g} k\,p_{x+y}(k)` the sum average (ZGXS).

        :math:`p_{x+y}(k)` is the probability of grey level pairs with :math:`i + j = k`; one value per matrix,
        averaged over matrices (angles) as pyradiomics does.
        """
        p_sum = self.coefficients["pxAddy"]          # shape (1, 2 Ng - 1, matrices)
        k = self.coefficients["kValuesSum"][None, :, None]
        mean = np.sum(k * p_sum, 1, keepdims=True)
        return np.nanmean(np.sum((k - mean) ** 2 * p_sum, 1), 1)

    def getDissimilarityFeatureValue(self) -> np.ndarray:  # noqa: N802 (pyradiomics' naming)
        r"""Dissimilarity (IBSI 8S9J): :math:`F = \sum_{i=1}^{N_g}\sum_{j=1}^{N_g} |i - j|\,p_{ij}
        = \sum_{k=0}^{N_g-1} k\,p_{x-y}(k)`.

        Equal to difference average (TF7R) by definition; IBSI lists it separately. One value per matrix, averaged
        over matrices (angles).
        """
        p_diff = self.coefficients["pxSuby"]         # shape (1, Ng, matrices)
        k = self.coefficients["kValuesDiff"][None, :, None]
        return np.nanmean(np.sum(k * p_diff, 1), 1)
