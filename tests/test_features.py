"""Feature extraction: the IBSI code table, parameter validation, the IBSI-mode steps, and proof of IBSI
compliance on the IBSI 1 digital phantom and the CT phantom (configurations A-E, from DICOM + RTSTRUCT through
``palmares features``): every reference row is a test, compared within its tolerance or listed in NOT_COMPUTED.
Run ``pytest tests/test_features.py -s -p no:xdist -k pass_table`` to see the pass tables."""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from conftest import REPO, SHARED_DATA, shared_path
from palmares_radiomics import cli
from palmares_radiomics.errors import (ConfigError, FeatureExtractionError, NonFiniteVoxelError, ResamplingSizeError,
                                       UndefinedFeatureError)
from palmares_radiomics.features import (column_name, compute_features, extract_lesion, extract_lesions, feature_column,
                                         ibsi_code, ibsi_table, load_params, long_format)
from palmares_radiomics.ibsi import AGGREGATIONS, Discretisation, Resegmentation, aggregations_for, feature_class

#: Reference features we emit but cannot match (columns), per configuration (docs/ibsi.md); these sets may only shrink.
KNOWN_DEVIATIONS: dict[str, set[str]] = {"dig": set(), "A": set(), "B": set(), "C": set(), "D": set(), "E": set()}
CT_PHANTOM = ("ibsi", "ibsi_1_ct_radiomics_phantom", "dicom")
REGRESSION_FILE = REPO / "tests" / "data" / "regression_features.csv"
DE_REFERENCE = REPO / "tests" / "data" / "ibsi1_ct_phantom_reference_values_DE.csv"
PARAM_FILES = ["ct.yaml", "pet.yaml", *(f"ibsi_{c}.yaml" for c in "ABCDE")]


# --- the reviewed code table --------------------------------------------------------------------------------------

def test_every_ibsi_code_matches_the_reference_manual_name_and_family() -> None:
    reference = pd.read_csv(shared_path("ibsi", "reference_values", "ibsi1_digital_phantom_reference_values.csv"))
    known = {(r.ibsi_code, r.family, r.feature_name) for r in reference.itertuples()}
    coded = [e for e in ibsi_table().values() if e.ibsi_code]
    assert len(coded) >= 95
    wrong = [e.feature for e in coded if (e.ibsi_code, e.ibsi_family, e.ibsi_name) not in known]
    assert not wrong, f"IBSI code/name/family not in the reference manual: {wrong}"


@pytest.mark.parametrize("params", PARAM_FILES)
def test_every_feature_the_params_enable_is_in_the_code_table(params: str) -> None:
    document = yaml.safe_load((REPO / "params" / params).read_text())
    enabled = {f"{c}_{name}" for c in document["featureClass"] for name, deprecated
               in feature_class(c).getFeatureNames().items() if not deprecated}
    missing = enabled - set(ibsi_table())
    assert not missing, f"add these to data/ibsi_codes.csv (code or non-IBSI): {sorted(missing)}"


def test_column_names_carry_the_ibsi_code_and_the_aggregation() -> None:
    assert column_name("glcm_JointEntropy", "ITBB") == "glcm_JointEntropy_TU9B_ITBB"
    assert column_name("firstorder_Mean") == "firstorder_Mean_Q4LE"
    assert column_name("glcm_MCC", "IAZD") == "glcm_MCC_IAZD"
    assert ibsi_code("glcm_MCC") == "non-IBSI"
    column = feature_column("glszm_ZoneEntropy_GU8N_62GR")
    assert column is not None and (column.feature, column.aggregation, column.ibsi_code) == ("glszm_ZoneEntropy", "62GR", "GU8N")
    assert feature_column("patient") is None
    rows = long_format({"glcm_JointEntropy_TU9B_ITBB": 2.5, "firstorder_Mean_Q4LE": 1.0, "glcm_MCC_ITBB": 0.25}, "L1")
    assert rows[0] == {"lesion_id": "L1", "feature": "glcm_JointEntropy_TU9B_ITBB", "ibsi_code": "TU9B",
                       "aggregation": "ITBB", "value": "2.5"}
    assert (rows[1]["aggregation"], rows[2]["ibsi_code"], rows[2]["value"]) == ("", "non-IBSI", "0.25")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_long_format_never_holds_nan(value: float) -> None:
    with pytest.raises(UndefinedFeatureError, match=rf"lesion L1: no finite value for 1 of 2 "
                                                    rf"features \(glcm_MCC_ITBB = {value}; allowed: 0\).*remove the "
                                                    rf"feature from featureClass"):
        long_format({"firstorder_Mean_Q4LE": 1.0, "glcm_MCC_ITBB": value}, "L1")


# --- parameter files ----------------------------------------------------------------------------------------------

def _params(tmp_path: Path, document: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def _minimal(**palmares: object) -> dict:
    block = {"discretisation": {"method": "fixed_bin_size", "bin_width": 1}, "texture_aggregations": ["ITBB", "KOBO"]}
    block.update(palmares)
    return {"palmares": block, "featureClass": {"glcm": None}}


@pytest.mark.parametrize(("document", "message"), [
    ({"palmares": {"spacing": 1}}, r"unknown key\(s\) \['spacing'\] in 'palmares'"),
    (_minimal(resegmentation={"sigma": 3}), r"unknown key\(s\) \['sigma'\] in 'palmares.resegmentation'"),
    ({**_minimal(), "setting": {"binWidth": 25}}, "setting 'binWidth' is set by the pipeline; use palmares.discretisation"),
    ({**_minimal(), "setting": {"resampledPixelSpacing": [1, 1, 1]}}, "'resampledPixelSpacing' is set by the pipeline"),
    ({**_minimal(), "setting": {"geometryTolerance": 1e-3}}, r"setting 'geometryTolerance' is set by the pipeline; use "
     r"the pipeline's own mask geometry check \(masks\.GRID_TOLERANCE_VOXELS: geometryTolerance would change "
     r"SimpleITK's tolerance for every image in the process\) instead"),
    ({**_minimal(), "setting": {"force2D": True}}, "use palmares.texture_aggregations"),
    ({**_minimal(), "setting": {"distances": "one"}}, "invalid pyradiomics settings"),
    (_minimal(texture_aggregations=["3D"]), r"unknown texture aggregation\(s\) \['3D'\]"),
    (_minimal(texture_aggregations=["KOBO"]), "feature class 'glcm' needs a texture aggregation"),
    (_minimal(discretisation={"method": "fixed_bin_number"}), "fixed_bin_number needs bin_number"),
    (_minimal(discretisation={"method": "fixed_bin_size", "bin_width": 25, "bin_number": 32}), "needs a positive bin_width"),
    ({"palmares": {"texture_aggregations": ["ITBB"]}}, "'palmares.discretisation' is required"),
    (_minimal(resegmentation={"range": [400, -500]}), "lower bound must be below the upper bound"),
    ({**_minimal(), "imageType": {"LoG": {"sigma": [1.0]}}}, "only imageType Original is supported"),
    (_minimal(resampling={"spacing_mm": [1, 1, 1], "image_interpolator": "cubic"}), "image_interpolator must be one of"),
    ({**_minimal(crop_margin_mm=5), "featureClass": {"localintensity": None}},
     r"'localintensity' needs palmares.crop_margin_mm >= 6.2035 \(the radius of its 1 cm\^3 sphere.*Found: 5"),
    ({**_minimal(ivh={"method": "nearest"}), "featureClass": {"glcm": None}}, "palmares.ivh"),
    ({**_minimal(), "featureClass": {"shape": ["Sphericity", "MoransIndex"]}},
     r"feature class 'shape' has no feature\(s\) \['MoransIndex'\]; its features are .*'MoransI'"),
])
def test_parameter_files_are_validated_with_a_message_naming_the_key(tmp_path: Path, document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(_params(tmp_path, document))


def test_parameter_files_are_validated_without_building_a_pyradiomics_extractor(tmp_path: Path, monkeypatch) -> None:
    """pyradiomics' extractor constructor sets process-wide SimpleITK state: load_params validates with pyradiomics'
    schema (pykwalify) instead, and never constructs one."""
    from radiomics import featureextractor

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_params built a RadiomicsFeatureExtractor")

    monkeypatch.setattr(featureextractor, "RadiomicsFeatureExtractor", refuse)
    tolerances = (sitk.ProcessObject.GetGlobalDefaultCoordinateTolerance(),
                  sitk.ProcessObject.GetGlobalDefaultDirectionTolerance())
    for name in PARAM_FILES:
        load_params(REPO / "params" / name)
    with pytest.raises(ConfigError, match=r"invalid pyradiomics settings: .*minimumROIDimensions"):
        load_params(_params(tmp_path, {**_minimal(), "setting": {"minimumROIDimensions": "two"}}))
    with pytest.raises(ConfigError, match=r"feature class 'glcm' has no feature\(s\) \['NoSuchFeature'\]"):
        load_params(_params(tmp_path, {**_minimal(), "featureClass": {"glcm": ["NoSuchFeature"]}}))
    with pytest.raises(ConfigError, match=r"feature class 'gldzm' has no feature\(s\) \['NoSuchFeature'\]"):
        load_params(_params(tmp_path, {**_minimal(), "featureClass": {"gldzm": ["NoSuchFeature"]},
                                       "palmares": {**_minimal()["palmares"], "texture_aggregations": ["KOBO"]}}))
    with pytest.raises(ConfigError, match="'geometryTolerance' is set by the pipeline"):
        load_params(_params(tmp_path, {**_minimal(), "setting": {"geometryTolerance": 1.0}}))
    assert (sitk.ProcessObject.GetGlobalDefaultCoordinateTolerance(),
            sitk.ProcessObject.GetGlobalDefaultDirectionTolerance()) == tolerances


@pytest.mark.parametrize("name", PARAM_FILES)
def test_shipped_parameter_files_load(name: str) -> None:
    params = load_params(REPO / "params" / name)
    assert params.texture_aggregations and params.discretisation.method in ("fixed_bin_size", "fixed_bin_number")


def test_ibsi_configurations_are_what_the_manual_defines() -> None:
    """The settings that matter for IBSI, checked against configurations.csv (A-C) and the manual (D, E)."""
    rows = {r["config"]: r for r in csv.DictReader(shared_path("ibsi", "configurations.csv").read_text().splitlines())}
    for config in "ABC":
        row, params = rows[config], load_params(REPO / "params" / f"ibsi_{config}.yaml")
        assert params.resegmentation.range == (float(row["reseg_range_min_hu"]), float(row["reseg_range_max_hu"]))
        assert params.resegmentation.outlier_sigma is None
        method = {"FBS": "fixed_bin_size", "FBN": "fixed_bin_number"}[row["discretisation_method"]]
        assert params.discretisation.method == method
        if method == "fixed_bin_size":
            assert params.discretisation.bin_width == float(row["bin_width"])
        else:
            assert params.discretisation.bin_number == int(row["bin_number"])
        expected_aggregations = set(re.findall(r"\(([0-9A-Z]{4})\)", row["texture_aggregations_with_reference"]))
        assert set(params.texture_aggregations) == expected_aggregations
        if row["interpolation"] == "no":
            assert params.resampling is None
        else:
            spacing = tuple(float(row[f"resampled_spacing_{a}_mm"]) for a in "xyz")
            assert params.resampling is not None and params.resampling.mask_threshold == 0.5
            assert params.resampling.round_intensities and params.resampling.image_interpolator == "linear"
            # configuration B interpolates in-plane only: its z spacing stays the image's own (null)
            assert params.resampling.spacing_mm == (spacing if config == "C" else (*spacing[:2], None))
    d, e = (load_params(REPO / "params" / f"ibsi_{c}.yaml") for c in "DE")
    assert (d.resegmentation.range, d.resegmentation.outlier_sigma) == (None, 3)
    assert (e.resegmentation.range, e.resegmentation.outlier_sigma) == ((-1000.0, 400.0), 3)
    assert d.discretisation.bin_number == e.discretisation.bin_number == 32
    assert (d.resampling.image_interpolator, e.resampling.image_interpolator) == ("linear", "bspline")
    assert d.resampling.spacing_mm == e.resampling.spacing_mm == (2.0, 2.0, 2.0)


# --- IBSI-mode steps ----------------------------------------------------------------------------------------------

def test_fixed_bin_size_starts_at_the_resegmentation_lower_bound_not_at_the_roi_minimum() -> None:
    from radiomics import imageoperations

    values = np.array([-480.0, -476.0, -455.0, -450.0, 399.0])
    reseg = Resegmentation(range=(-500, 400))
    bins = Discretisation("fixed_bin_size", bin_width=25).resolve(values, reseg)
    assert bins.indices(values).tolist() == [1, 1, 2, 3, 36]  # floor((x + 500) / 25) + 1
    assert bins.top == 36
    # pyradiomics' binWidth numbers bins from the one holding the ROI minimum: every index shifts by one here
    pyradiomics = np.digitize(values, imageoperations.getBinEdges(values, binWidth=25))
    assert pyradiomics.tolist() == [1, 1, 2, 3, 36]
    shifted = np.array([-470.0, -455.0, 399.0])
    assert bins.indices(shifted).tolist() == [2, 2, 36]
    assert np.digitize(shifted, imageoperations.getBinEdges(shifted, binWidth=25)).tolist() == [1, 1, 35]
    with pytest.raises(FeatureExtractionError, match="below the fixed-bin-size lower bound"):
        Discretisation("fixed_bin_size", bin_width=25, lower_bound=-400).resolve(values, Resegmentation())


def test_fixed_bin_number_follows_the_ibsi_formula() -> None:
    values = np.array([0.0, 0.5, 1.0, 2.0, 3.2, 4.0])
    bins = Discretisation("fixed_bin_number", bin_number=4).resolve(values, Resegmentation())
    assert bins.indices(values).tolist() == [1, 1, 2, 3, 4, 4]  # floor(4 (x - 0) / 4) + 1, maximum in bin 4
    flat = Discretisation("fixed_bin_number", bin_number=4).resolve(np.array([7.0, 7.0]), Resegmentation())
    assert flat.indices(np.array([7.0, 7.0])).tolist() == [1, 1]


def test_resegmentation_intersects_the_range_and_the_outlier_interval() -> None:
    image = np.array([-1200.0, -900.0, 0.0, 10.0, 20.0, 30.0, 2000.0, 5.0])
    roi = np.array([True] * 7 + [False])
    assert Resegmentation(range=(-1000, 400)).intensity_mask(image, roi).tolist() == \
        [False, True, True, True, True, True, False, False]
    # mean and SD over the ROI before the range (as MIRP); with 1 sigma only the central voxels survive
    mean, sd = image[roi].mean(), image[roi].std()
    expected = roi & (image >= max(-1000, mean - sd)) & (image <= min(400, mean + sd))
    assert Resegmentation(range=(-1000, 400), outlier_sigma=1).intensity_mask(image, roi).tolist() == expected.tolist()
    assert Resegmentation(range=(None, 15)).intensity_mask(image, roi).tolist() == \
        [True, True, True, True, False, False, False, False]


def test_aggregations_map_to_texture_families() -> None:
    codes = list(AGGREGATIONS)
    assert [a.code for a in aggregations_for("glcm", codes)] == ["BTW3", "SUJT", "JJUI", "ZW7Z", "ITBB", "IAZD"]
    assert [a.code for a in aggregations_for("ngtdm", codes)] == ["8QNN", "62GR", "KOBO"]
    assert aggregations_for("firstorder", codes) == []
    assert AGGREGATIONS["ZW7Z"].pyradiomics_settings() == {"force2D": True, "force2Ddimension": 0,
                                                           "weightingNorm": "no_weighting"}


def test_ibsi_mode_never_changes_pyradiomics_for_other_users() -> None:
    from radiomics import featureextractor, getFeatureClasses

    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.integers(0, 200, (8, 9, 10)).astype(float))
    mask = sitk.GetImageFromArray(np.pad(np.ones((6, 7, 8), np.uint8), 1))
    settings = {"binWidth": 25, "featureClass": {"glcm": None}}
    extractor = featureextractor.RadiomicsFeatureExtractor({"setting": {"binWidth": 25}, "featureClass": {"glcm": None}})
    before = extractor.execute(image, mask)
    for name in ("shape", "glcm", "firstorder"):
        ours = feature_class(name)
        assert ours is not getFeatureClasses()[name] and issubclass(ours, getFeatureClasses()[name])
    compute_features(image, mask, load_params(REPO / "params" / "ibsi_C.yaml"))
    after = featureextractor.RadiomicsFeatureExtractor({"setting": {"binWidth": 25}, "featureClass": {"glcm": None}}).execute(image, mask)
    assert settings and {k: float(v) for k, v in before.items() if "glcm" in k} == \
        {k: float(v) for k, v in after.items() if "glcm" in k}


# --- proof on the IBSI phantoms -----------------------------------------------------------------------------------
#
# Every reference row of the digital phantom and of CT phantom configurations A-E is one test: it is compared within
# its tolerance, or its feature is listed in NOT_COMPUTED with the reason. The features are computed once per
# configuration (module fixture ``ibsi_values``); ``test_ibsi_pass_table`` prints family x passed/total (-s).

#: Reference rows per configuration (../shared/data/ibsi/README.md; tests/data/README.md for D and E).
REFERENCE_ROW_COUNTS = {"dig": 482, "A": 406, "B": 406, "C": 269, "D": 210, "E": 210}
#: Reference features the pipeline does not compute, by IBSI code (diagnostics, which have no code: by family), with
#: the reason. This dict may only shrink (it is empty: every reference row is compared): a listed feature that is
#: computed fails its row's test, and so does a reference row whose feature is neither computed nor listed.
NOT_COMPUTED: dict[str, str] = {}
#: Key prefix of the diagnostics values (``diagnostics.ibsi_diagnostics``) among a configuration's stored values.
DIAGNOSTICS_KEY = "diagnostics::"


def _reference_rows() -> list[dict[str, str]]:
    """Every IBSI 1 reference row: digital phantom and A-C from ../shared/data (when present), D and E from tests/data."""
    paths = [SHARED_DATA / "ibsi" / "reference_values" / name for name in (
        "ibsi1_digital_phantom_reference_values.csv", "ibsi1_ct_phantom_reference_values.csv")]
    rows = []
    for path in [*paths, DE_REFERENCE]:
        if path.exists():
            rows.extend(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    return rows


REFERENCE_ROWS = _reference_rows()


def _row_key(row: dict[str, str]) -> str:
    """The NOT_COMPUTED key of a reference row: its IBSI code, or its family for diagnostics (no code)."""
    return row["ibsi_code"] or row["family"]


def _value_key(row: dict[str, str]) -> tuple[str, str, str]:
    """The key of a reference row among the emitted values: IBSI code (the family for diagnostics, which have no
    code), aggregation and name (one IBSI code can name two features: the IVH's V10 and V90 are both BC2M)."""
    return row["ibsi_code"] or row["family"], row["aggregation_code"], row["feature_name"]


def _digital_phantom_features(folder: Path) -> dict[str, float]:
    """Config 'dig': no interpolation or re-segmentation; FBS width 1 from the ROI minimum leaves the phantom as is."""
    image = sitk.ReadImage(str(shared_path("ibsi", "ibsi_1_digital_phantom", "nifti", "image", "phantom.nii.gz")),
                           sitk.sitkFloat64)
    mask = sitk.ReadImage(str(shared_path("ibsi", "ibsi_1_digital_phantom", "nifti", "mask", "mask.nii.gz")),
                          sitk.sitkUInt8)
    params = load_params(_params(folder, {
        "palmares": {"crop_margin_mm": 10, "discretisation": {"method": "fixed_bin_size", "bin_width": 1},
                     "ivh": {"method": "none"},
                     "texture_aggregations": list(AGGREGATIONS)},
        "setting": {"label": 1, "voxelArrayShift": 0, "minimumROIDimensions": 1, "minimumROISize": 1, "gldm_a": 0,
                    "distances": [1]},
        "featureClass": {c: None for c in ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "gldzm",
                                            "histogram", "ivh", "localintensity")},
    }, "dig.yaml"))
    return extract_lesion(image, mask, 1, params)


def _phantom_diagnostics(config: str) -> dict[str, float]:
    """IBSI diagnostics (``diagnostics.ibsi_diagnostics``) of the CT phantom read as ``palmares features`` reads it,
    with params/ibsi_<config>.yaml, keyed ``diagnostics::<family>::<name>``."""
    from palmares_radiomics.diagnostics import ibsi_diagnostics
    from palmares_radiomics.masks import image_reference, load_label_map
    from palmares_radiomics.volumes import read_study_image

    ct = shared_path(*CT_PHANTOM)
    image = read_study_image(ct / "image")
    label_map = load_label_map(ct / "mask" / "DCM_RS_00060.dcm", image, roi="GTV-1",
                               reference=image_reference(ct / "image"))
    values = ibsi_diagnostics(image, label_map, 1, load_params(REPO / "params" / f"ibsi_{config}.yaml"))
    return {f"{DIAGNOSTICS_KEY}{family}::{name}": value for (family, name), value in values.items()}


def _phantom_features(config: str, folder: Path) -> dict[str, float]:
    """``palmares features`` on the CT phantom DICOM series + RTSTRUCT with params/ibsi_<config>.yaml."""
    ct = shared_path(*CT_PHANTOM)
    out = folder / f"{config}.csv"
    assert cli.main(["features", "--image", str(ct / "image"), "--mask", str(ct / "mask" / "DCM_RS_00060.dcm"),
                     "--roi", "GTV-1", "--params", str(REPO / "params" / f"ibsi_{config}.yaml"), "--out", str(out)]) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows.columns) == ["lesion_id", "feature", "ibsi_code", "aggregation", "value"]
    assert set(rows["lesion_id"]) == {"GTV-1"} and rows["feature"].is_unique
    assert (rows["ibsi_code"] != "").all() and not rows["value"].astype(str).str.lower().str.contains("nan|inf").any()
    texture = rows["feature"].str.match(r"(glcm|glrlm|glszm|gldm|ngtdm|gldzm)_")
    assert (rows.loc[texture, "aggregation"] != "").all() and (rows.loc[~texture, "aggregation"] == "").all()
    return {r.feature: float(r.value) for r in rows.itertuples()}


def _computed_once(config: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The features of ``config``, computed once per test session: pytest-xdist workers share them through a JSON
    file in the session's temporary folder, written under a file lock (floats round-trip exactly through JSON)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    stored = root / f"ibsi_features_{config}.json"
    with open(root / f"ibsi_features_{config}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stored.exists():
            return json.loads(stored.read_text())
        folder = tmp_path_factory.mktemp(f"ibsi_{config}")
        raw = _digital_phantom_features(folder) if config == "dig" else _phantom_features(config, folder)
        if config in "ABC":  # the reference rows of A-C include the processing chain's diagnostics
            raw.update(_phantom_diagnostics(config))
        stored.write_text(json.dumps(raw))
        return raw


@pytest.fixture(scope="module")
def ibsi_values(tmp_path_factory: pytest.TempPathFactory):
    """``values(config)``: {(IBSI code, aggregation code, IBSI name): (column, value)} of the features the pipeline emits for
    that configuration, computed once per configuration (:func:`_computed_once`)."""
    cache: dict[str, dict[tuple[str, str], tuple[str, float]]] = {}

    def values(config: str) -> dict[tuple[str, str], tuple[str, float]]:
        if config not in cache:
            raw = _computed_once(config, tmp_path_factory)
            by_code: dict[tuple[str, str], tuple[str, float]] = {}
            for column, value in raw.items():
                if column.startswith(DIAGNOSTICS_KEY):
                    family, name = column.removeprefix(DIAGNOSTICS_KEY).split("::")
                    by_code[(family, "", name)] = (column, value)
                    continue
                entry = feature_column(column)
                if entry is None or entry.ibsi_code == "non-IBSI":
                    continue
                key = (entry.ibsi_code, entry.aggregation or "DHQ4", ibsi_table()[entry.feature].ibsi_name)
                assert key not in by_code, f"{column} and {by_code[key][0]} both hold {key}"
                by_code[key] = (column, value)
            cache[config] = by_code
        return cache[config]

    return values


def _within_tolerance(value: float, row: dict[str, str]) -> bool:
    """IBSI match rule: |value - reference| <= tolerance; exact references (tolerance 0) are printed to 3 significant
    digits, so compare after rounding the value to 3 significant digits (../shared/data/ibsi/README.md)."""
    reference, tolerance = float(row["reference"]), float(row["tolerance"])
    if abs(value - reference) <= tolerance * (1 + 1e-9):
        return True
    return tolerance == 0 and float(f"{value:.3g}") == reference


@pytest.mark.parametrize("row", REFERENCE_ROWS, ids=[f"{r['config']}-{r['tag']}" for r in REFERENCE_ROWS])
def test_ibsi_reference_value(row: dict[str, str], ibsi_values) -> None:
    """One IBSI reference row: within tolerance, or its feature is listed in NOT_COMPUTED (then skipped, with why)."""
    config, key = row["config"], _row_key(row)
    found = ibsi_values(config).get(_value_key(row))
    where = f"{config} {row['family']} '{row['feature_name']}' ({key}, {row['aggregation_code'] or 'no aggregation'})"
    if found is None:
        assert key in NOT_COMPUTED, f"{where} is neither computed nor listed in NOT_COMPUTED: add it with the reason"
        pytest.skip(f"not computed: {NOT_COMPUTED[key]}")
    assert key not in NOT_COMPUTED, f"{where} is computed now ({found[0]}): remove {key} from NOT_COMPUTED and docs/ibsi.md"
    column, value = found
    passed = _within_tolerance(value, row)
    detail = f"{where}: {column} = {value!r}, reference {row['reference']} ± {row['tolerance']}"
    if column in KNOWN_DEVIATIONS[config]:
        assert not passed, f"fixed, remove from KNOWN_DEVIATIONS and docs/ibsi.md: {detail}"
    else:
        assert passed, detail


def test_every_reference_row_is_a_test_and_not_computed_lists_only_reference_features() -> None:
    shared_path("ibsi", "reference_values")  # skips (fails in CI) without ../shared/data
    counts = {config: sum(r["config"] == config for r in REFERENCE_ROWS) for config in REFERENCE_ROW_COUNTS}
    assert counts == REFERENCE_ROW_COUNTS
    stale = set(NOT_COMPUTED) - {_row_key(r) for r in REFERENCE_ROWS}
    assert not stale, f"NOT_COMPUTED keys with no reference row: {sorted(stale)}"


def test_ibsi_pass_table(ibsi_values) -> None:
    """Family x passed/compared/not computed per configuration (``pytest tests/test_features.py -s -k pass_table``)."""
    records = []
    for row in REFERENCE_ROWS:
        found = ibsi_values(row["config"]).get(_value_key(row))
        records.append({"config": row["config"], "family": row["family"], "compared": found is not None,
                        "passed": found is not None and _within_tolerance(found[1], row)})
    frame = pd.DataFrame(records)
    for config in REFERENCE_ROW_COUNTS:
        rows = frame[frame["config"] == config]
        table = rows.groupby("family", sort=False).agg(passed=("passed", "sum"), compared=("compared", "sum"),
                                                       total=("family", "size"))
        table["not computed"] = table["total"] - table["compared"]
        print(f"\nIBSI 1 {config}: {int(rows['passed'].sum())} of {int(rows['compared'].sum())} compared reference values "
              f"within tolerance; {len(rows) - int(rows['compared'].sum())} of {len(rows)} not computed (NOT_COMPUTED)\n"
              f"{table.to_string()}")
    compared = frame[frame["compared"]]
    known = sum(len(v) for v in KNOWN_DEVIATIONS.values())
    assert int(compared["passed"].sum()) == len(compared) - known


# --- conventions, failures and the regression guard ---------------------------------------------------------------

def test_kurtosis_is_reported_as_ibsi_excess_kurtosis() -> None:
    from radiomics import featureextractor

    rng = np.random.default_rng(1)
    array = rng.normal(0, 1, (12, 12, 12))
    image = sitk.GetImageFromArray(array)
    mask = sitk.GetImageFromArray(np.ones_like(array, dtype=np.uint8))
    params = load_params(REPO / "params" / "ibsi_C.yaml")  # no outlier filtering: the same voxels as pyradiomics
    ours = compute_features(image, mask, params)["firstorder_Kurtosis_IPH6"]
    raw = featureextractor.RadiomicsFeatureExtractor({"featureClass": {"firstorder": ["Kurtosis"]}}).execute(image, mask)
    assert ours == pytest.approx(float(raw["original_firstorder_Kurtosis"]) - 3.0, rel=1e-12)
    assert abs(ours) < 0.5  # a normal sample has excess kurtosis near 0


def test_empty_lesion_and_fully_resegmented_lesion_are_refused_with_a_reason(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.full((5, 5, 5), 5000.0))
    mask = sitk.GetImageFromArray(np.zeros((5, 5, 5), dtype=np.uint8))
    params = load_params(REPO / "params" / "ct.yaml")
    with pytest.raises(FeatureExtractionError, match="label 2 is empty in the mask"):
        extract_lesion(image, mask, 2, params)
    mask[2, 2, 2] = 1
    mask[2, 3, 2] = 1
    with pytest.raises(FeatureExtractionError, match="no voxel left after re-segmentation"):
        compute_features(image, mask, params)


def _two_lesions() -> tuple[sitk.Image, sitk.Image, list]:
    """A textured CT-like image (1 mm voxels) with two 6 x 6 x 6-voxel lesions, labels 1 and 2."""
    from palmares_radiomics.records import LesionSpec

    z, y, x = np.mgrid[0:16, 0:16, 0:24].astype(float)
    array = np.round(40 + 30 * np.sin(x / 1.7) * np.cos(y / 2.3) + 10 * np.sin(z / 1.3))
    labels = np.zeros(array.shape, np.uint8)
    labels[5:11, 5:11, 3:9] = 1
    labels[5:11, 5:11, 15:21] = 2
    image = sitk.GetImageFromArray(array)
    label_map = sitk.GetImageFromArray(labels)
    lesions = [LesionSpec(lesion_id=f"L{k}", modality="ct", label=k, organ="liver") for k in (1, 2)]
    return image, label_map, lesions


def test_nan_voxels_inside_a_lesion_refuse_that_lesion_only() -> None:
    image, label_map, lesions = _two_lesions()
    image[6, 7, 8] = math.nan  # x, y, z: inside lesion 1
    params = load_params(REPO / "params" / "ibsi_A.yaml")  # no interpolation: exactly one NaN voxel in the lesion
    with pytest.raises(NonFiniteVoxelError, match=r"label 1 \(216 voxels after resampling\): 1 of 216 voxels inside "
                                                  r"the lesion are NaN or infinite in the image \(allowed: 0;.*check the "
                                                  r"image conversion"):
        extract_lesion(image, label_map, 1, params)
    first, second = extract_lesions(image, label_map, lesions, params)
    assert first.values == {} and first.error is not None and "1 of 216 voxels" in first.error
    assert second.error is None and all(math.isfinite(v) for v in second.values.values())
    # with interpolation the NaN spreads to its neighbours, and the lesion is still refused (never a smaller ROI)
    with pytest.raises(NonFiniteVoxelError, match=r"label 1 \(\d+ voxels after resampling\): \d+ of \d+ voxels inside"):
        extract_lesion(image, label_map, 1, load_params(REPO / "params" / "ct.yaml"))
    image[6, 7, 8] = math.inf
    with pytest.raises(NonFiniteVoxelError, match="1 of 216 voxels inside the lesion are NaN or infinite"):
        extract_lesion(image, label_map, 1, params)


def test_a_nan_feature_from_pyradiomics_fails_the_lesion_with_a_reason(monkeypatch) -> None:
    """pyradiomics turns a feature that raises into NaN (radiomics/base.py): that lesion fails, no NaN is written."""
    from palmares_radiomics.ibsi import feature_class

    def broken(self: object) -> float:
        raise ZeroDivisionError("as a feature undefined on this ROI")

    monkeypatch.setattr(feature_class("firstorder"), "getSkewnessFeatureValue", broken)
    monkeypatch.setattr(logging.getLogger("radiomics"), "disabled", True)  # pyradiomics logs the traceback
    image, label_map, lesions = _two_lesions()
    params = load_params(REPO / "params" / "ct.yaml")
    with pytest.raises(UndefinedFeatureError, match=r"label 2 \(\d+ voxels after resampling\): no "
                                                    r"finite value for 1 of \d+ features \(firstorder_Skewness_KE2A = "
                                                    r"nan; allowed: 0\).*remove the feature from featureClass"):
        extract_lesion(image, label_map, 2, params)
    results = extract_lesions(image, label_map, lesions, params)
    assert [(r.values, "firstorder_Skewness_KE2A = nan" in (r.error or "")) for r in results] == [({}, True), ({}, True)]


def test_a_resampling_too_fine_for_memory_fails_the_lesion_with_a_reason(tmp_path: Path) -> None:
    image, label_map, lesions = _two_lesions()
    params = load_params(_params(tmp_path, _minimal(resampling={"spacing_mm": [0.01, 0.01, 0.01]})))
    with pytest.raises(ResamplingSizeError, match=r"resampling label 1 to 0\.01 x 0\.01 x 0\.01 mm would allocate "
                                                  r"[\d,]+ voxels \(a grid of \d+ x \d+ x \d+ voxels.*the limit is "
                                                  r"268,435,456 voxels"):
        extract_lesion(image, label_map, 1, params)
    assert all(r.values == {} and "would allocate" in (r.error or "") for r in extract_lesions(image, label_map, lesions, params))


def _regression_lesion() -> tuple[sitk.Image, sitk.Image]:
    """A fixed synthetic CT lesion without random numbers: a textured ellipsoid in soft tissue, 0.8 x 0.8 x 2.5 mm."""
    z, y, x = np.mgrid[0:24, 0:48, 0:48].astype(float)
    inside = ((x - 23.5) / 15) ** 2 + ((y - 24.2) / 11) ** 2 + ((z - 11.7) / 4.5) ** 2 <= 1
    texture = 60 * np.sin(x / 2.3) * np.cos(y / 3.1) + 25 * np.sin(z / 1.7 + x / 5.0)
    image = sitk.GetImageFromArray(np.round(np.where(inside, 40 + texture, -20 + 0.5 * texture)))
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-20.0, 13.5, -101.25))
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def test_regression_guard_feature_values_are_pinned() -> None:
    """Pinned values of every CT feature on a fixed lesion: a pyradiomics/numpy/SimpleITK upgrade that changes any
    fails here. After checking the change is intended, regenerate with PALMARES_UPDATE_REGRESSION=1."""
    image, mask = _regression_lesion()
    values = extract_lesion(image, mask, 1, load_params(REPO / "params" / "ct.yaml"))
    if os.environ.get("PALMARES_UPDATE_REGRESSION") == "1":
        REGRESSION_FILE.parent.mkdir(exist_ok=True)
        pd.DataFrame({"feature": list(values), "value": [repr(v) for v in values.values()]}).to_csv(REGRESSION_FILE, index=False)
    pinned = pd.read_csv(REGRESSION_FILE)
    assert set(pinned["feature"]) == set(values), "the set of features changed"
    changed = [(f, v, values[f]) for f, v in zip(pinned["feature"], pinned["value"].astype(float))
               if not (math.isclose(values[f], v, rel_tol=1e-7, abs_tol=1e-9) or (math.isnan(v) and math.isnan(values[f])))]
    assert not changed, f"{len(changed)} feature values changed (feature, pinned, now): {changed[:10]}"


def test_docs_ibsi_table_is_the_code() -> None:
    """docs/ibsi.md's table of every IBSI 1 feature names, for each, the engine that computes it (ibsi.computed_by)
    and the column stem, as the code does; every coded feature of ibsi_codes.csv is in it."""
    from palmares_radiomics.ibsi import computed_by

    text = (REPO / "docs" / "ibsi.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \| ([0-9A-Z]{4}) \| (pyradiomics|palmares|not computed) \|\s*`?([^|`]*?)`?\s*\|$",
                      text, flags=re.MULTILINE)
    documented = {(family, name): (code, engine, stem.strip()) for family, name, code, engine, stem in rows}
    coded = {(e.ibsi_family, e.ibsi_name): e for e in ibsi_table().values() if e.ibsi_code}
    assert set(coded) <= set(documented), f"missing from docs/ibsi.md: {sorted(set(coded) - set(documented))}"
    for key, (code, engine, stem) in documented.items():
        entry = coded.get(key)
        if entry is None:
            assert engine == "not computed", f"docs/ibsi.md says {key} is computed by {engine}, but no column has it"
            continue
        assert (code, engine, stem) == (entry.ibsi_code, computed_by(entry.feature), entry.feature), key
    assert sum(engine == "not computed" for _, engine, _ in documented.values()) == 5


def test_ct_and_pet_parameter_files_enable_the_same_features() -> None:
    """One lesion table for both modalities: a feature on only one would leave its column empty on the other's rows."""
    ct, pet = (load_params(REPO / "params" / f"{m}.yaml") for m in ("ct", "pet"))
    assert ct.classes == pet.classes and ct.texture_aggregations == pet.texture_aggregations
