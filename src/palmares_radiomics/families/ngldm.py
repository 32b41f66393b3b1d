r"""Neighbouring grey level dependence matrix (NGLDM, IBSI family REK0): the IBSI features pyradiomics' GLDM lacks.

pyradiomics' GLDM with ``gldm_a: 0`` and distance 1 is the IBSI NGLDM (coarseness 0, Chebyshev distance 1; its
dependence count includes the centre voxel, so :math:`j` starts at 1 as in IBSI). Two IBSI features are deprecated in
pyradiomics and raise instead of computing a value (normalised grey level non-uniformity, dependence count
percentage), and dependence count energy is absent; they are computed here from pyradiomics' own matrix
``self.P_gldm`` (shape (1, :math:`N_g`, :math:`N_d`), rows of the grey levels present in the ROI). The matrix is
the 3-D one, the 2.5-D one merged over slices (``force2D``), or one slice's (2-D, ``ibsi.run_texture``).

Notation (IBSI 1, chapter 3.11): :math:`s_{ij}` the matrix, :math:`N_s = \sum_{ij} s_{ij}` (equal to the number of
voxels :math:`N_v`, as every voxel is a neighbourhood centre), :math:`s_{i.}` the marginal over dependence counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NgldmExtras:
    """Mixin for ``radiomics.gldm.RadiomicsGLDM``: normalised grey level non-uniformity (5SPA), dependence count
    percentage (6XV8) and dependence count energy (CAS9).

    The first two override pyradiomics' deprecated methods (without ``_is_deprecated``, so they are enabled).
    """

    P_gldm: np.ndarray
    maskArray: np.ndarray
    coefficients: dict[str, Any]

    def getGrayLevelNonUniformityNormalizedFeatureValue(self) -> np.ndarray:  # noqa: N802 (pyradiomics' naming)
        r"""Normalised grey level non-uniformity (IBSI 5SPA): :math:`F = \frac{1}{N_s^2}\sum_{i=1}^{N_g} s_{i.}^2`.

        pyradiomics deprecates it as equal to first-order uniformity (BJ5W); with :math:`N_s = N_v` it is,
        but IBSI lists it in the NGLDM family (and 2-D/2.5-D values are per slice / merged, unlike uniformity).
        """
        n_s = self.coefficients["Nz"]
        return np.sum(self.coefficients["pg"] ** 2, 1) / n_s ** 2

    def getDependencePercentageFeatureValue(self) -> np.ndarray:  # noqa: N802 (pyradiomics' naming)
        r"""Dependence count percentage (IBSI 6XV8): :math:`F = N_s / N_v`.

        Every ROI voxel is the centre of one neighbourhood, so :math:`N_s = N_v` and the feature is 1 (IBSI's
        reference value; pyradiomics deprecates it for that reason). Computed, not assumed: :math:`N_s` from the
        matrix, :math:`N_v` from the mask (of the slice, in 2-D).
        """
        n_v = int(np.count_nonzero(self.maskArray))
        return np.sum(self.P_gldm, (1, 2)) / n_v

    def getDependenceEnergyFeatureValue(self) -> np.ndarray:  # noqa: N802 (pyradiomics' naming)
        r"""Dependence count energy (IBSI CAS9): :math:`F = \sum_{i=1}^{N_g}\sum_{j=1}^{N_d} p_{ij}^2`,
        with :math:`p_{ij} = s_{ij} / N_s`."""
        n_s = self.coefficients["Nz"]
        return np.sum(self.P_gldm ** 2, (1, 2)) / n_s ** 2
