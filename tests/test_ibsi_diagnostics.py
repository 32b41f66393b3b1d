"""IBSI 1 diagnostic features (``diagnostics.ibsi_diagnostics``): known answers on a tiny synthetic image, and the CT
phantom's diagnostics are exactly its reference rows. Each of those rows (60 per configuration A-C) is compared
within its tolerance by ``tests/test_features.py::test_ibsi_reference_value``, with the features."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from conftest import REPO, SHARED_DATA, shared_path
from palmares_radiomics.diagnostics import (INITIAL_IMAGE, INITIAL_ROI, INTERPOLATED_IMAGE, INTERPOLATED_ROI,
                                            RESEGMENTED_ROI, ibsi_diagnostics)
from palmares_radiomics.errors import FeatureExtractionError
from palmares_radiomics.features import ExtractionParams, load_params
from palmares_radiomics.resample import resample_lesion

CONFIGS = ("A", "B", "C")
CT_PHANTOM = ("ibsi", "ibsi_1_ct_radiomics_phantom", "dicom")
REFERENCE_CSV = SHARED_DATA / "ibsi" / "reference_values" / "ibsi1_ct_phantom_reference_values.csv"
DIAGNOSTICS_PER_CONFIG = 60


def _diagnostics_rows() -> list[dict[str, str]]:
    """The diagnostics reference rows of configurations A-C (none when ../shared/data is absent)."""
    if not REFERENCE_CSV.exists():
        return []
    rows = csv.DictReader(REFERENCE_CSV.read_text(encoding="utf-8").splitlines())
    return [r for r in rows if r["config"] in CONFIGS and r["family"].startswith("diagnostics")]


ROWS = _diagnostics_rows()


def _params(folder: Path, palmares: dict) -> ExtractionParams:
    """A minimal parameter file with the ``palmares`` block ``palmares`` (first-order features only)."""
    block = {"crop_margin_mm": 10, "discretisation": {"method": "fixed_bin_size", "bin_width": 1}, **palmares}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"palmares": block, "featureClass": {"firstorder": None}}))
    return load_params(path)


def _image(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> sitk.Image:
    """A (z, y, x) array as an image with ``spacing`` (x, y, z)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-3.0, 7.0, 11.0))
    return image


# --- known answers on a synthetic image ---------------------------------------------------------------------------

def test_without_interpolation_the_steps_keep_the_grid_and_resegmentation_shrinks_only_the_intensity_mask(
        tmp_path: Path) -> None:
    # 5 columns (x), 4 rows (y), 3 slices (z): distinct sizes so the x/y/z order is checked.
    values = np.arange(60, dtype=np.float64).reshape(3, 4, 5)  # value = 20 z + 5 y + x
    labels = np.zeros((3, 4, 5), dtype=np.uint16)
    labels[0:2, 1:3, 1:4] = 2  # the lesion: x 1-3, y 1-2, z 0-1 (12 voxels); label 1 elsewhere is another structure
    labels[2, 3, 4] = 1
    params = _params(tmp_path, {"resegmentation": {"range": [0, 25]}})
    out = ibsi_diagnostics(_image(values, (0.5, 0.75, 2.0)), _image(labels, (0.5, 0.75, 2.0)), 2, params)

    assert len(out) == DIAGNOSTICS_PER_CONFIG
    for family in (INITIAL_IMAGE, INTERPOLATED_IMAGE):
        assert [out[(family, f"Image dimension {a}")] for a in "xyz"] == [5, 4, 3]
        assert [out[(family, f"Voxel dimension {a}")] for a in "xyz"] == [0.5, 0.75, 2.0]
        assert (out[(family, "Mean intensity")], out[(family, "Minimum intensity")],
                out[(family, "Maximum intensity")]) == (29.5, 0, 59)
    lesion = values[0:2, 1:3, 1:4]
    for family in (INITIAL_ROI, INTERPOLATED_ROI):
        assert [out[(family, f"Int. mask dimension {a}")] for a in "xyz"] == [5, 4, 3]
        for kind in ("Int.", "Morph."):
            assert [out[(family, f"{kind} mask bounding box dimension {a}")] for a in "xyz"] == [3, 2, 2]
            assert out[(family, f"{kind} mask voxel count")] == 12
        assert out[(family, "Int. mask mean intensity")] == pytest.approx(lesion.mean())
        assert (out[(family, "Int. mask minimum intensity")], out[(family, "Int. mask maximum intensity")]) == (6, 33)
    # re-segmentation to [0, 25] drops the slice z = 1 (values 26-33): the intensity mask only
    kept = values[0, 1:3, 1:4]
    assert [out[(RESEGMENTED_ROI, f"Int. mask bounding box dimension {a}")] for a in "xyz"] == [3, 2, 1]
    assert [out[(RESEGMENTED_ROI, f"Morph. mask bounding box dimension {a}")] for a in "xyz"] == [3, 2, 2]
    assert out[(RESEGMENTED_ROI, "Int. mask voxel count")] == 6
    assert out[(RESEGMENTED_ROI, "Morph. mask voxel count")] == 12
    assert out[(RESEGMENTED_ROI, "Int. mask mean intensity")] == pytest.approx(kept.mean())
    assert (out[(RESEGMENTED_ROI, "Int. mask minimum intensity")],
            out[(RESEGMENTED_ROI, "Int. mask maximum intensity")]) == (6, 13)


def test_interpolation_uses_the_centre_aligned_ibsi_grid_the_threshold_and_the_rounding(tmp_path: Path) -> None:
    """4 x 4 voxels of 1 mm to 2 mm in-plane: the IBSI grid (2 x 2, centre-aligned) samples the original at indices
    0.5 and 2.5, i.e. the mean of each 2 x 2 block; the mask (x 0-1) interpolates to 1 on the first column, 0 on the
    second; intensities 10 x + 0.25 interpolate to 5.25 and 25.25, rounded to 5 and 25."""
    values = np.broadcast_to(10.0 * np.arange(4) + 0.25, (2, 4, 4)).copy()
    labels = np.zeros((2, 4, 4), dtype=np.uint8)
    labels[:, :, 0:2] = 1
    params = _params(tmp_path, {"resampling": {"spacing_mm": [2.0, 2.0, None], "image_interpolator": "linear",
                                               "mask_threshold": 0.5, "round_intensities": True},
                                "resegmentation": {"range": [-1000, 400]}})
    out = ibsi_diagnostics(_image(values), _image(labels), 1, params)

    assert [out[(INTERPOLATED_IMAGE, f"Image dimension {a}")] for a in "xyz"] == [2, 2, 2]
    assert [out[(INTERPOLATED_IMAGE, f"Voxel dimension {a}")] for a in "xyz"] == [2.0, 2.0, 1.0]
    assert (out[(INTERPOLATED_IMAGE, "Mean intensity")], out[(INTERPOLATED_IMAGE, "Minimum intensity")],
            out[(INTERPOLATED_IMAGE, "Maximum intensity")]) == (15, 5, 25)
    assert out[(INITIAL_IMAGE, "Mean intensity")] == 15.25
    assert [out[(INTERPOLATED_ROI, f"Int. mask dimension {a}")] for a in "xyz"] == [2, 2, 2]
    assert [out[(INTERPOLATED_ROI, f"Morph. mask bounding box dimension {a}")] for a in "xyz"] == [1, 2, 2]
    assert out[(INTERPOLATED_ROI, "Int. mask voxel count")] == 4
    assert (out[(INTERPOLATED_ROI, "Int. mask mean intensity")], out[(INTERPOLATED_ROI, "Int. mask minimum intensity")],
            out[(INTERPOLATED_ROI, "Int. mask maximum intensity")]) == (5, 5, 5)
    assert out[(INITIAL_ROI, "Int. mask voxel count")] == 16
    assert out[(INITIAL_ROI, "Int. mask mean intensity")] == 5.25


def test_an_roi_emptied_by_resegmentation_has_no_intensities(tmp_path: Path) -> None:
    values = np.full((2, 3, 3), 500.0)
    labels = np.ones((2, 3, 3), dtype=np.uint8)
    params = _params(tmp_path, {"resegmentation": {"range": [0, 400]}})
    out = ibsi_diagnostics(_image(values), _image(labels), 1, params)
    assert out[(RESEGMENTED_ROI, "Int. mask voxel count")] == 0
    assert [out[(RESEGMENTED_ROI, f"Int. mask bounding box dimension {a}")] for a in "xyz"] == [0, 0, 0]
    assert out[(RESEGMENTED_ROI, "Morph. mask voxel count")] == 18
    assert all(math.isnan(out[(RESEGMENTED_ROI, f"Int. mask {s} intensity")]) for s in ("mean", "minimum", "maximum"))


def test_an_empty_label_is_refused(tmp_path: Path) -> None:
    labels = np.zeros((2, 3, 3), dtype=np.uint8)
    labels[0, 0, 0] = 1
    with pytest.raises(FeatureExtractionError, match="label 2 is empty in the mask"):
        ibsi_diagnostics(_image(np.zeros((2, 3, 3))), _image(labels), 2, _params(tmp_path, {}))


# --- the CT phantom, configurations A-C ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phantom() -> tuple[sitk.Image, sitk.Image]:
    """The CT phantom in HU and its GTV-1 label map (0/1), read as ``palmares features`` reads them."""
    from palmares_radiomics.masks import image_reference, load_label_map
    from palmares_radiomics.volumes import read_study_image

    ct = shared_path(*CT_PHANTOM)
    image = read_study_image(ct / "image")
    label_map = load_label_map(ct / "mask" / "DCM_RS_00060.dcm", image, roi="GTV-1",
                               reference=image_reference(ct / "image"))
    return image, label_map


@pytest.fixture(scope="module")
def diagnostics(phantom):
    """``values(config)``: the diagnostics of the phantom with params/ibsi_<config>.yaml, computed once per config."""
    cache: dict[str, dict[tuple[str, str], float]] = {}

    def values(config: str) -> dict[tuple[str, str], float]:
        if config not in cache:
            cache[config] = ibsi_diagnostics(*phantom, 1, load_params(REPO / "params" / f"ibsi_{config}.yaml"))
        return cache[config]

    return values


@pytest.mark.shared
@pytest.mark.parametrize("config", CONFIGS)
def test_the_diagnostics_are_exactly_the_reference_rows(config: str, diagnostics) -> None:
    shared_path("ibsi", "reference_values")  # skips (fails in CI) without ../shared/data
    expected = {(r["family"], r["feature_name"]) for r in ROWS if r["config"] == config}
    assert len(expected) == DIAGNOSTICS_PER_CONFIG
    assert set(diagnostics(config)) == expected


@pytest.mark.shared
@pytest.mark.parametrize("config", CONFIGS)
def test_the_interpolated_roi_is_the_one_the_features_see(config: str, phantom, diagnostics) -> None:
    """The lesion crop feature extraction resamples (``crop_margin_mm``) holds the same ROI as the whole image."""
    params = load_params(REPO / "params" / f"ibsi_{config}.yaml")
    image_r, mask_r = resample_lesion(*phantom, params.resampling, params.crop_margin_mm, 1)
    morphological = sitk.GetArrayViewFromImage(mask_r) > 0
    intensity = params.resegmentation.intensity_mask(sitk.GetArrayViewFromImage(image_r), morphological)
    values = diagnostics(config)
    assert values[(INTERPOLATED_ROI, "Morph. mask voxel count")] == np.count_nonzero(morphological)
    assert values[(RESEGMENTED_ROI, "Int. mask voxel count")] == np.count_nonzero(intensity)
    assert values[(RESEGMENTED_ROI, "Int. mask mean intensity")] == pytest.approx(
        sitk.GetArrayViewFromImage(image_r)[intensity].mean(), rel=1e-12)
