"""Texture features pyradiomics lacks (families/glcm.py, families/ngldm.py, families/gldzm.py): hand-computed
matrices and features, the GLDZM aggregations, and the IBSI 1 digital phantom against its reference values."""

from __future__ import annotations

import csv
import math
from fractions import Fraction

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import shared_path
from palmares_radiomics import ibsi
from palmares_radiomics.families.gldzm import distance_map, gldzm

#: IBSI 1 reference manual, figure "GLDZM" (chapter 3.9): grey levels (a) and distance map (b) of a 4 x 4 ROI.
MANUAL_GREY = np.array([[1, 2, 2, 3],
                        [1, 2, 3, 3],
                        [4, 2, 4, 1],
                        [4, 1, 2, 3]])
MANUAL_DISTANCE = np.array([[1, 1, 1, 1],
                            [1, 2, 2, 1],
                            [1, 2, 2, 1],
                            [1, 1, 1, 1]])
#: (c): the manual's matrix, drawn with 4-connected zones (rows: grey levels 1-4, columns: distances 1-2).
MANUAL_GLDZM_4 = np.array([[3, 0], [2, 0], [2, 0], [1, 1]])
#: The same ROI with 8-connected zones, as IBSI defines 2-D zones: the grey level 2 voxel at (3, 2) touches the
#: zone of (2, 1) diagonally, so grey level 2 has one zone (checked by hand).
MANUAL_GLDZM_8 = np.array([[3, 0], [1, 0], [2, 0], [1, 1]])

PHANTOM = ("ibsi", "ibsi_1_digital_phantom", "nifti")
GLDZM_FEATURES = ["SmallDistanceEmphasis", "LargeDistanceEmphasis", "LowGrayLevelZoneEmphasis",
                  "HighGrayLevelZoneEmphasis", "SmallDistanceLowGrayLevelEmphasis",
                  "SmallDistanceHighGrayLevelEmphasis", "LargeDistanceLowGrayLevelEmphasis",
                  "LargeDistanceHighGrayLevelEmphasis", "GrayLevelNonUniformity", "GrayLevelNonUniformityNormalized",
                  "ZoneDistanceNonUniformity", "ZoneDistanceNonUniformityNormalized", "ZonePercentage",
                  "GrayLevelVariance", "ZoneDistanceVariance", "ZoneDistanceEntropy"]
NGLDM_EXTRAS = ["GrayLevelNonUniformityNormalized", "DependencePercentage", "DependenceEnergy"]
GLCM_EXTRAS = ["SumVariance", "Dissimilarity"]


def _image(array: np.ndarray) -> sitk.Image:
    """A (z, y, x) array as a SimpleITK image."""
    return sitk.GetImageFromArray(array)


def _settings(grey: np.ndarray, roi: np.ndarray, width: float = 1.0) -> dict:
    """IBSI-mode class settings: label 1, fixed bin size ``width`` from the ROI minimum, NGLDM alpha 0, distance 1."""
    binning = ibsi.Discretisation("fixed_bin_size", width).resolve(grey[roi], ibsi.Resegmentation())
    return {"label": 1, "ibsi_binning": binning, "gldm_a": 0, "distances": [1]}


def _instance(name: str, grey: np.ndarray, mask: np.ndarray, **settings: object):
    """The IBSI-mode feature class ``name`` on ``grey``/``mask`` with its matrix built (as ``execute`` does)."""
    instance = ibsi.feature_class(name)(_image(grey.astype(np.float64)), _image(mask.astype(np.uint8)),
                                        **{**_settings(grey, mask == 1), **settings})
    instance._initCalculation()
    return instance


def _erosion_distance(mask: np.ndarray, in_plane: bool) -> np.ndarray:
    """The manual's algorithm: erode with the 6-/4-connected element until empty, +1 per erosion survived, +1."""
    structure = ndimage.generate_binary_structure(3, 1)
    if in_plane:
        structure[0] = structure[2] = False
    distance = mask.astype(np.int64)
    eroded = mask.copy()
    while eroded.any():
        eroded = ndimage.binary_erosion(eroded, structure=structure, border_value=0)
        distance += eroded
    return distance


# --- GLDZM matrix ---------------------------------------------------------------------------------------------------

def test_the_distance_map_is_the_manuals_example_and_its_erosion_algorithm() -> None:
    roi = np.ones((1, 4, 4), dtype=bool)
    np.testing.assert_array_equal(distance_map(roi, in_plane=True)[0], MANUAL_DISTANCE)
    rng = np.random.default_rng(7)
    for _ in range(20):
        mask = ndimage.binary_opening(rng.random((6, 12, 11)) < 0.8)
        for in_plane in (False, True):
            np.testing.assert_array_equal(distance_map(mask, in_plane), _erosion_distance(mask, in_plane))


def test_3d_distances_reach_the_edge_through_neighbouring_slices() -> None:
    cube = np.ones((5, 5, 5), dtype=bool)
    assert distance_map(cube, in_plane=False)[2, 2, 2] == 3
    assert distance_map(cube, in_plane=False)[0, 2, 2] == 1    # the slice beyond the array is outside
    assert distance_map(cube, in_plane=True)[0, 2, 2] == 3     # in-slice distance ignores other slices


def test_gldzm_of_the_manuals_2d_example() -> None:
    roi = np.ones((1, 4, 4), dtype=bool)
    grey = MANUAL_GREY[None]
    np.testing.assert_array_equal(gldzm(grey, roi, roi, in_plane=True, full_connectivity=False), MANUAL_GLDZM_4)
    np.testing.assert_array_equal(gldzm(grey, roi, roi, in_plane=True), MANUAL_GLDZM_8)


def test_3d_zones_are_26_connected() -> None:
    grey = np.ones((2, 2, 2), dtype=np.int64)
    grey[1, 1, 1] = grey[0, 0, 0] = 2          # two voxels touching at a corner only
    roi = np.ones(grey.shape, dtype=bool)
    np.testing.assert_array_equal(gldzm(grey, roi, roi, in_plane=False), [[1], [1]])
    np.testing.assert_array_equal(gldzm(grey, roi, roi, in_plane=False, full_connectivity=False), [[1], [2]])


def test_2_5d_matrix_is_the_sum_of_the_slice_matrices() -> None:
    rng = np.random.default_rng(3)
    grey = ndimage.zoom(rng.integers(1, 6, (3, 4, 4)), (2, 4, 4), order=0)        # zones of up to 4 x 4 voxels
    morphological = rng.random(grey.shape) < 0.97
    intensity = morphological & (rng.random(grey.shape) < 0.97)
    merged = gldzm(grey, intensity, morphological, in_plane=True, n_grey=5)
    slices = [gldzm(grey[z:z + 1], intensity[z:z + 1], morphological[z:z + 1], in_plane=True, n_grey=5)
              for z in range(grey.shape[0])]
    total = np.zeros(merged.shape, dtype=np.int64)
    for matrix in slices:
        total[:, :matrix.shape[1]] += matrix
    assert merged.sum() > grey.shape[0] and merged.shape[1] >= 2
    np.testing.assert_array_equal(merged, total)
    # zones never span slices: the 3-D matrix has fewer zones
    assert gldzm(grey, intensity, morphological, in_plane=False, n_grey=5).sum() < merged.sum()


def test_digital_phantom_gldzm_matrices_are_the_manuals() -> None:
    """IBSI 1 manual, "Digital phantom texture matrices": the 2-D matrix of each slice and the 3-D matrix."""
    grey = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_path(*PHANTOM, "image", "phantom.nii.gz")))).astype(int)
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_path(*PHANTOM, "mask", "mask.nii.gz")))) > 0

    def entries(matrix: np.ndarray) -> dict[tuple[int, int], int]:
        return {(int(i) + 1, int(j) + 1): int(matrix[i, j]) for i, j in zip(*np.nonzero(matrix))}

    expected_2d = [{(1, 1): 2, (4, 1): 2, (6, 1): 1},
                   {(1, 1): 2, (3, 2): 1, (4, 1): 2, (6, 1): 1, (6, 2): 1},
                   {(1, 1): 1, (4, 1): 1, (6, 1): 1},
                   {(1, 1): 1, (4, 1): 1, (6, 1): 1}]
    for z, expected in enumerate(expected_2d):
        assert entries(gldzm(grey[z:z + 1], roi[z:z + 1], roi[z:z + 1], in_plane=True)) == expected
    assert entries(gldzm(grey, roi, roi, in_plane=False)) == {(1, 1): 1, (3, 1): 1, (4, 1): 2, (6, 1): 1}


# --- GLDZM features and masks ----------------------------------------------------------------------------------------

def test_gldzm_features_of_the_manuals_example_by_hand() -> None:
    """Features of MANUAL_GLDZM_8 (N_s = 8 zones, N_v = 16): d_i. = 3, 1, 2, 2; d_.j = 7, 1."""
    grey = MANUAL_GREY[None].astype(np.float64)
    values = ibsi.run_class("gldzm", _image(grey), _image(np.ones(grey.shape, np.uint8)), None,
                            {**_settings(grey, grey > 0), "force2D": True, "force2Ddimension": 0})
    f = Fraction
    n_s = 8
    mean_i, mean_j = f(3 * 1 + 1 * 2 + 2 * 3 + 2 * 4, n_s), f(7 * 1 + 1 * 2, n_s)
    p = [f(3, 8), f(1, 8), f(2, 8), f(1, 8), f(1, 8)]
    expected = {
        "SmallDistanceEmphasis": f(7 + f(1, 4), n_s),
        "LargeDistanceEmphasis": f(7 + 4, n_s),
        "LowGrayLevelZoneEmphasis": (3 + f(1, 4) + f(2, 9) + f(2, 16)) / n_s,
        "HighGrayLevelZoneEmphasis": f(3 + 4 + 2 * 9 + 2 * 16, n_s),
        "SmallDistanceLowGrayLevelEmphasis": (3 + f(1, 4) + f(2, 9) + f(1, 16) + f(1, 16 * 4)) / n_s,
        "SmallDistanceHighGrayLevelEmphasis": (3 + 4 + 18 + 16 + f(16, 4)) / n_s,
        "LargeDistanceLowGrayLevelEmphasis": (3 + f(1, 4) + f(2, 9) + f(1, 16) + f(4, 16)) / n_s,
        "LargeDistanceHighGrayLevelEmphasis": f(3 + 4 + 18 + 16 + 16 * 4, n_s),
        "GrayLevelNonUniformity": f(9 + 1 + 4 + 4, n_s),
        "GrayLevelNonUniformityNormalized": f(9 + 1 + 4 + 4, n_s ** 2),
        "ZoneDistanceNonUniformity": f(49 + 1, n_s),
        "ZoneDistanceNonUniformityNormalized": f(49 + 1, n_s ** 2),
        "ZonePercentage": f(n_s, 16),
        "GrayLevelVariance": (3 * (1 - mean_i) ** 2 + (2 - mean_i) ** 2 + 2 * (3 - mean_i) ** 2
                              + 2 * (4 - mean_i) ** 2) / n_s,
        "ZoneDistanceVariance": (7 * (1 - mean_j) ** 2 + (2 - mean_j) ** 2) / n_s,
    }
    for name, value in expected.items():
        assert values[f"gldzm_{name}"] == pytest.approx(float(value), rel=1e-12), name
    entropy = -sum(float(q) * math.log2(q) for q in p)
    assert values["gldzm_ZoneDistanceEntropy"] == pytest.approx(entropy, rel=1e-12)
    assert sorted(k.removeprefix("gldzm_") for k in values) == sorted(GLDZM_FEATURES)


def test_the_distance_map_uses_the_morphological_mask() -> None:
    """Mask coded 1 = intensity mask (the zones), 2 = morphological voxel removed by re-segmentation: a 3 x 3 zone
    inside a 5 x 5 morphological ROI is 1 voxel from its edge, so its distance is 2 (1 on the intensity mask)."""
    grey = np.full((1, 5, 5), 7.0)
    mask = np.full((1, 5, 5), 2, dtype=np.uint8)
    mask[0, 1:4, 1:4] = 1
    instance = _instance("gldzm", grey, mask, force2D=True, force2Ddimension=0)
    np.testing.assert_array_equal(instance.P_gldzm, [[0, 1]])
    assert instance.getZonePercentageFeatureValue() == pytest.approx(1 / 9, rel=1e-12)


def test_a_slice_without_intensity_voxels_has_undefined_features() -> None:
    grey = np.full((1, 3, 3), 5.0)
    settings = {**_settings(np.array([5.0]), np.array([True])), "force2D": True}
    values = ibsi.run_class("gldzm", _image(grey), _image(np.full(grey.shape, 2, np.uint8)), None, settings)
    assert len(values) == len(GLDZM_FEATURES) and all(math.isnan(v) for v in values.values())


# --- NGLDM and GLCM extras ------------------------------------------------------------------------------------------

def test_ngldm_extras_on_pyradiomics_documented_matrix() -> None:
    """pyradiomics' GLDM docstring example (alpha 0, distance 1, 2-D): row sums 4, 6, 9, 3, 3; N_s = N_v = 25;
    the sum of squared elements is 67."""
    grey = np.array([[5, 2, 5, 4, 4],
                     [3, 3, 3, 1, 3],
                     [2, 1, 1, 1, 3],
                     [4, 2, 2, 2, 3],
                     [3, 5, 3, 3, 2]], dtype=np.float64)[None]
    instance = _instance("gldm", grey, np.ones(grey.shape, np.uint8), force2D=True, force2Ddimension=0)
    np.testing.assert_array_equal(instance.P_gldm[0], [[0, 1, 2, 1], [1, 2, 3, 0], [1, 4, 4, 0], [1, 2, 0, 0],
                                                       [3, 0, 0, 0]])
    assert instance.getGrayLevelNonUniformityNormalizedFeatureValue()[0] == pytest.approx(151 / 625, rel=1e-12)
    assert instance.getDependencePercentageFeatureValue()[0] == 1.0
    assert instance.getDependenceEnergyFeatureValue()[0] == pytest.approx(67 / 625, rel=1e-12)


def test_extras_are_enabled_with_the_class_and_not_deprecated() -> None:
    for name, extras in (("gldm", NGLDM_EXTRAS), ("glcm", GLCM_EXTRAS)):
        names = ibsi.feature_class(name).getFeatureNames()
        assert all(names[feature] is False for feature in extras), name
    assert all(deprecated is False for deprecated in ibsi.feature_class("gldzm").getFeatureNames().values())


@pytest.mark.parametrize("code", [c for c, a in ibsi.AGGREGATIONS.items() if a.directional])
def test_glcm_extras_equal_their_pyradiomics_twins(code: str) -> None:
    """With symmetric GLCMs, sum variance equals cluster tendency and dissimilarity equals difference average, for
    every GLCM aggregation (pyradiomics' reason to deprecate them; IBSI keeps both codes)."""
    rng = np.random.default_rng(11)
    grey = ndimage.zoom(rng.integers(1, 9, (3, 4, 4)), (2, 2, 2), order=0).astype(np.float64)
    mask = ndimage.binary_opening(rng.random(grey.shape) < 0.9).astype(np.uint8)
    features = [*GLCM_EXTRAS, "ClusterTendency", "DifferenceAverage"]
    values = ibsi.run_texture("glcm", _image(grey), _image(mask), features, _settings(grey, mask == 1),
                              ibsi.AGGREGATIONS[code])
    assert values["glcm_SumVariance"] == pytest.approx(values["glcm_ClusterTendency"], rel=1e-9)
    assert values["glcm_Dissimilarity"] == pytest.approx(values["glcm_DifferenceAverage"], rel=1e-9)
    assert values["glcm_SumVariance"] > 0 and values["glcm_Dissimilarity"] > 0


# --- IBSI 1 digital phantom ---------------------------------------------------------------------------------------

def _phantom_rows() -> list[dict[str, str]]:
    path = shared_path("ibsi", "reference_values", "ibsi1_digital_phantom_reference_values.csv")
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def _codes() -> dict[str, str]:
    from palmares_radiomics.features import ibsi_table

    return {name: entry.ibsi_code for name, entry in ibsi_table().items() if entry.ibsi_code}


@pytest.mark.parametrize(("name", "features"), [("gldzm", GLDZM_FEATURES), ("gldm", NGLDM_EXTRAS),
                                                ("glcm", GLCM_EXTRAS)])
def test_digital_phantom_reference_values(name: str, features: list[str]) -> None:
    """Every digital phantom reference row of these features, in every aggregation, within its tolerance."""
    image = sitk.ReadImage(str(shared_path(*PHANTOM, "image", "phantom.nii.gz")), sitk.sitkFloat64)
    mask = sitk.ReadImage(str(shared_path(*PHANTOM, "mask", "mask.nii.gz")), sitk.sitkUInt8)
    grey, roi = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask) == 1
    codes = _codes()
    wanted = {codes[f"{name}_{feature}"] for feature in features}
    rows = [r for r in _phantom_rows() if r["ibsi_code"] in wanted]
    computed = {}
    for aggregation in ibsi.aggregations_for(name, list(ibsi.AGGREGATIONS)):
        values = ibsi.run_texture(name, image, mask, features, _settings(grey, roi), aggregation)
        computed.update({(codes[key], aggregation.code): value for key, value in values.items()})
    assert len(rows) == len(features) * (6 if name == "glcm" else 3)
    for row in rows:
        value = computed[row["ibsi_code"], row["aggregation_code"]]
        reference, tolerance = float(row["reference"]), float(row["tolerance"])
        # exact references (tolerance 0) are printed to 3 significant digits (../shared/data/ibsi/README.md)
        assert abs(value - reference) <= tolerance or float(f"{value:.3g}") == reference, (row["tag"], value, reference)
