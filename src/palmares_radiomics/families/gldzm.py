r"""Grey level distance zone matrix (GLDZM, IBSI family VMDZ; IBSI 1 reference manual, chapter 3.9).

pyradiomics has no GLDZM; this module builds it and its 16 features.

- Zones are the connected groups of voxels of the *intensity* mask with the same discretised grey level,
  26-connected in 3-D and 8-connected in 2-D (as for the GLSZM).
- The distance map is computed on the *morphological* mask (manual, "Morphological and intensity masks": "the
  distance map is determined using the morphological ROI mask, whereas the intensity mask is used for determining
  the zones"): the distance of a voxel is the least number of 6-connected (3-D) or 4-connected (2-D) steps to the
  first voxel outside the mask, so voxels on the edge have distance 1. That is the city-block (taxicab) distance
  to the nearest outside voxel, the same as the manual's iterated erosion with a 6-/4-connected structure element
  (each erosion a voxel survives adds 1).
- The distance of a zone is the minimum distance of its voxels; element :math:`d_{ij}` of the matrix counts the
  zones with grey level :math:`i` and distance :math:`j`.

Aggregation (manual 3.9, "Aggregating features"): 3-D (KOBO) builds one volumetric matrix; 2.5-D (62GR, pyradiomics
setting ``force2D``) builds in-slice zones and distances and sums the slices' matrices, with :math:`N_v` summed
too; 2-D (8QNN) is one slice's matrix (``ibsi.run_texture`` runs the class per slice and averages the features).

The mask handed to the class is coded 1 = intensity-mask voxel (pyradiomics' ``label``: the zones), 2 =
morphological-mask voxel removed by re-segmentation, 0 = outside: every non-zero voxel is in the morphological mask.

Notation: :math:`N_g` grey levels, :math:`N_d` the largest zone distance, :math:`N_s = \sum_{ij} d_{ij}` zones,
:math:`N_v` intensity-mask voxels, :math:`d_{i.} = \sum_j d_{ij}`, :math:`d_{.j} = \sum_i d_{ij}`,
:math:`p_{ij} = d_{ij} / N_s`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from radiomics.base import RadiomicsFeaturesBase
from scipy import ndimage
from skimage.measure import label as label_components


def distance_map(morphological: np.ndarray, in_plane: bool) -> np.ndarray:
    """IBSI distance to the ROI edge of every voxel of ``morphological`` (z, y, x), 0 outside it.

    The taxicab distance (6-connected steps in 3-D; 4-connected steps within the slice, axis 0, when ``in_plane``)
    to the nearest voxel outside the mask, so edge voxels have distance 1. Voxels beyond the array count as outside:
    the array is padded by one background voxel (in-plane only when ``in_plane``).
    """
    pad = ((0, 0), (1, 1), (1, 1)) if in_plane else ((1, 1),) * 3
    padded = np.pad(morphological.astype(bool), pad)
    structure = ndimage.generate_binary_structure(3, 1)
    if in_plane:
        structure[0] = structure[2] = False
    distance = ndimage.distance_transform_cdt(padded, metric=structure)
    return distance[tuple(slice(before, before + n) for (before, _), n in zip(pad, morphological.shape))]


def zone_labels(grey: np.ndarray, intensity: np.ndarray, in_plane: bool,
                full_connectivity: bool = True) -> tuple[np.ndarray, int]:
    """Label the zones: connected voxels of ``intensity`` sharing a grey level (0 outside; labels 1…n).

    Connectivity is full (26 in 3-D, 8 within a slice) as IBSI defines, or face-only (6, 4) when not
    ``full_connectivity``. With ``in_plane``, zones never span slices (axis 0): adjacent slices get disjoint codes.
    """
    codes = np.zeros(grey.shape, dtype=np.int64)
    values = grey[intensity].astype(np.int64)
    if values.size == 0:
        return codes, 0
    codes[intensity] = values - values.min() + 1
    if in_plane:  # slices z and z + 1 never share a code, so only in-slice neighbours link
        codes += intensity * (np.arange(grey.shape[0]) % 2 * int(codes.max()))[:, None, None]
    labels, count = label_components(codes, background=0, connectivity=3 if full_connectivity else 1,
                                     return_num=True)
    return labels, int(count)


def gldzm(grey: np.ndarray, intensity: np.ndarray, morphological: np.ndarray, in_plane: bool,
          n_grey: int | None = None, full_connectivity: bool = True) -> np.ndarray:
    """The grey level distance zone matrix: ``M[i - 1, j - 1]`` zones of grey level i at distance j.

    ``grey``: discretised grey levels (1, 2, … inside ``intensity``), axes (z, y, x); ``intensity``: the zones' mask;
    ``morphological``: the distance map's mask (``intensity`` voxels are always counted in it); ``in_plane``: zones
    and distances within each slice (axis 0) and the slices' matrices summed (2.5-D; 2-D for one slice); ``n_grey``:
    rows of the matrix (default: the highest grey level present).
    """
    intensity = intensity.astype(bool)
    labels, count = zone_labels(grey, intensity, in_plane, full_connectivity)
    rows = int(n_grey if n_grey is not None else (grey[intensity].max() if count else 0))
    if count == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    distance = distance_map(morphological.astype(bool) | intensity, in_plane)[intensity]
    zone = labels[intensity] - 1
    zone_distance = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(zone_distance, zone, distance)
    zone_grey = np.empty(count, dtype=np.int64)
    zone_grey[zone] = grey[intensity]
    columns = int(zone_distance.max())
    rows = max(rows, int(zone_grey.max()))
    counts = np.bincount((zone_grey - 1) * columns + zone_distance - 1, minlength=rows * columns)
    return counts.reshape(rows, columns)


class GreyLevelDistanceZoneMatrix(RadiomicsFeaturesBase):
    """pyradiomics-style GLDZM feature class (``featureClass: gldzm``); see the module docstring.

    Settings: pyradiomics' ``label`` (the intensity mask; every non-zero mask voxel is the morphological mask),
    ``force2D``/``force2Ddimension`` (2.5-D / 2-D: in-slice zones and distances). Segment-based only. A ROI (or
    slice) without intensity-mask voxels gives NaN features.
    """

    def __init__(self, inputImage: sitk.Image, inputMask: sitk.Image, **kwargs: Any) -> None:
        if kwargs.get("voxelBased", False):
            raise ValueError("the gldzm feature class is segment-based only (voxelBased is not supported)")
        super().__init__(inputImage, inputMask, **kwargs)
        self.morphologicalArray: np.ndarray = sitk.GetArrayFromImage(inputMask) != 0
        self.imageArray = self._applyBinning(self.imageArray)
        self.P_gldzm: np.ndarray | None = None

    def _initCalculation(self, voxelCoordinates: Any = None) -> None:  # noqa: N802 (pyradiomics' name)
        """Build the matrix (in-slice along ``force2Ddimension`` when ``force2D``) and its marginals."""
        in_plane = bool(self.settings.get("force2D", False))
        axis = int(self.settings.get("force2Ddimension", 0)) if in_plane else 0
        arrays = [np.moveaxis(a, axis, 0) for a in (self.imageArray, self.maskArray, self.morphologicalArray)]
        matrix = gldzm(*arrays, in_plane=in_plane, n_grey=int(self.coefficients.get("Ng", 0)))
        self.P_gldzm = matrix.astype(np.float64)
        self.coefficients["Nv"] = int(np.count_nonzero(self.maskArray))
        self.coefficients["Ns"] = float(matrix.sum())
        self.coefficients["ivector"] = np.arange(1, matrix.shape[0] + 1, dtype=np.float64)
        self.coefficients["jvector"] = np.arange(1, matrix.shape[1] + 1, dtype=np.float64)

    # --- helpers --------------------------------------------------------------------------------------------------

    def _probabilities(self) -> np.ndarray | None:
        """:math:`p_{ij} = d_{ij} / N_s`, or None when there is no zone (every feature is then NaN)."""
        n_s = self.coefficients["Ns"]
        return self.P_gldzm / n_s if self.P_gldzm is not None and n_s else None

    def _ij(self) -> tuple[np.ndarray, np.ndarray]:
        """Grey levels as a column and distances as a row, broadcasting over the matrix."""
        return self.coefficients["ivector"][:, None], self.coefficients["jvector"][None, :]

    def _weighted(self, weights: np.ndarray) -> float:
        r""":math:`\sum_{ij} w_{ij} p_{ij} = \frac{1}{N_s}\sum_{ij} w_{ij} d_{ij}`, ``weights`` broadcast over the
        matrix."""
        p = self._probabilities()
        return float("nan") if p is None else float(np.sum(weights * p))

    def _non_uniformity(self, axis: int) -> float:
        r""":math:`\sum_k (\sum p)_k^2` of the marginal over ``axis`` (1: grey levels :math:`d_{i.}`, 0: distances
        :math:`d_{.j}`), i.e. the normalised non-uniformity."""
        p = self._probabilities()
        return float("nan") if p is None else float(np.sum(p.sum(axis) ** 2))

    # --- features (IBSI 1, chapter 3.9) ---------------------------------------------------------------------------

    def getSmallDistanceEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Small distance emphasis (IBSI 0GBI): :math:`F = \frac{1}{N_s}\sum_{j=1}^{N_d} d_{.j} / j^2`."""
        _, j = self._ij()
        return self._weighted(1.0 / j ** 2)

    def getLargeDistanceEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Large distance emphasis (IBSI MB4I): :math:`F = \frac{1}{N_s}\sum_{j=1}^{N_d} j^2 d_{.j}`."""
        _, j = self._ij()
        return self._weighted(j ** 2)

    def getLowGrayLevelZoneEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Low grey level zone emphasis (IBSI S1RA): :math:`F = \frac{1}{N_s}\sum_{i=1}^{N_g} d_{i.} / i^2`."""
        i, _ = self._ij()
        return self._weighted(1.0 / i ** 2)

    def getHighGrayLevelZoneEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""High grey level zone emphasis (IBSI K26C): :math:`F = \frac{1}{N_s}\sum_{i=1}^{N_g} i^2 d_{i.}`."""
        i, _ = self._ij()
        return self._weighted(i ** 2)

    def getSmallDistanceLowGrayLevelEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Small distance low grey level emphasis (IBSI RUVG):
        :math:`F = \frac{1}{N_s}\sum_{ij} d_{ij} / (i^2 j^2)`."""
        i, j = self._ij()
        return self._weighted(1.0 / (i ** 2 * j ** 2))

    def getSmallDistanceHighGrayLevelEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Small distance high grey level emphasis (IBSI DKNJ): :math:`F = \frac{1}{N_s}\sum_{ij} i^2 d_{ij} / j^2`."""
        i, j = self._ij()
        return self._weighted(i ** 2 / j ** 2)

    def getLargeDistanceLowGrayLevelEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Large distance low grey level emphasis (IBSI A7WM): :math:`F = \frac{1}{N_s}\sum_{ij} j^2 d_{ij} / i^2`."""
        i, j = self._ij()
        return self._weighted(j ** 2 / i ** 2)

    def getLargeDistanceHighGrayLevelEmphasisFeatureValue(self) -> float:  # noqa: N802
        r"""Large distance high grey level emphasis (IBSI KLTH): :math:`F = \frac{1}{N_s}\sum_{ij} i^2 j^2 d_{ij}`."""
        i, j = self._ij()
        return self._weighted(i ** 2 * j ** 2)

    def getGrayLevelNonUniformityFeatureValue(self) -> float:  # noqa: N802
        r"""Grey level non-uniformity (IBSI VFT7): :math:`F = \frac{1}{N_s}\sum_{i=1}^{N_g} d_{i.}^2`."""
        return self._non_uniformity(1) * self.coefficients["Ns"]

    def getGrayLevelNonUniformityNormalizedFeatureValue(self) -> float:  # noqa: N802
        r"""Normalised grey level non-uniformity (IBSI 7HP3): :math:`F = \frac{1}{N_s^2}\sum_{i=1}^{N_g} d_{i.}^2`."""
        return self._non_uniformity(1)

    def getZoneDistanceNonUniformityFeatureValue(self) -> float:  # noqa: N802
        r"""Zone distance non-uniformity (IBSI V294): :math:`F = \frac{1}{N_s}\sum_{j=1}^{N_d} d_{.j}^2`."""
        return self._non_uniformity(0) * self.coefficients["Ns"]

    def getZoneDistanceNonUniformityNormalizedFeatureValue(self) -> float:  # noqa: N802
        r"""Normalised zone distance non-uniformity (IBSI IATH):
        :math:`F = \frac{1}{N_s^2}\sum_{j=1}^{N_d} d_{.j}^2`."""
        return self._non_uniformity(0)

    def getZonePercentageFeatureValue(self) -> float:  # noqa: N802
        r"""Zone percentage (IBSI VIWW): :math:`F = N_s / N_v` (both summed over slices in 2.5-D)."""
        n_v = self.coefficients["Nv"]
        return self.coefficients["Ns"] / n_v if n_v else float("nan")

    def getGrayLevelVarianceFeatureValue(self) -> float:  # noqa: N802
        r"""Grey level variance (IBSI QK93): :math:`F = \sum_{ij} (i - \mu)^2 p_{ij}`,
        :math:`\mu = \sum_{ij} i\,p_{ij}`."""
        i, _ = self._ij()
        mean = self._weighted(i)
        return self._weighted((i - mean) ** 2)

    def getZoneDistanceVarianceFeatureValue(self) -> float:  # noqa: N802
        r"""Zone distance variance (IBSI 7WT1): :math:`F = \sum_{ij} (j - \mu)^2 p_{ij}`,
        :math:`\mu = \sum_{ij} j\,p_{ij}`."""
        _, j = self._ij()
        mean = self._weighted(j)
        return self._weighted((j - mean) ** 2)

    def getZoneDistanceEntropyFeatureValue(self) -> float:  # noqa: N802
        r"""Zone distance entropy (IBSI GBDU): :math:`F = -\sum_{ij} p_{ij} \log_2 p_{ij}` (over :math:`p_{ij} > 0`)."""
        p = self._probabilities()
        if p is None:
            return float("nan")
        p = p[p > 0]
        return float(-np.sum(p * np.log2(p)))
