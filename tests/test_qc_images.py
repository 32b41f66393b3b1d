"""Issue 15, QC images: the features stage draws every lesion before and after IBSI resampling and the PET MIP,
and describes them in ``details["qc"]``. Real inputs (SimpleITK volumes + status records, as the image and mask
stages write them) and real rendering, checked by decoding the PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image

from conftest import REPO
from palmares_radiomics.masks import MIN_LESION_VOXELS
from palmares_radiomics.preview import LESION_COLOUR, mip_preview
from palmares_radiomics.stages import FAILED, OK, StageStatus, read_status, run_features, write_status
from palmares_radiomics.stages.qc import VOLUME_CHANGE_FLAG_PCT

PATIENT = "PAL2-QCQCQCQCQC"
RED = tuple(int(LESION_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
TOLERANCE = 40  # per channel, anti-aliased marker pixels
QC_FIELDS = {"lesion_id", "label", "organ", "voxels", "volume_ml", "volume_ml_resampled", "volume_change_pct",
             "volume_flag", "small", "suvmax", "suvpeak", "original", "resampled", "error"}
CT_SPACING = (0.98, 0.98, 2.5)
CT_SIZE = (80, 70, 30)  # x, y, z voxels


def _params(tmp_path: Path, modality: str) -> Path:
    """The shipped parameter file with shape and first-order features only (same resampling, faster tests)."""
    document = yaml.safe_load((REPO / "params" / f"{modality}.yaml").read_text(encoding="utf-8"))
    document["featureClass"] = {"shape": None, "firstorder": None}
    path = tmp_path / f"{modality}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _zyx(size: tuple[int, int, int], spacing: tuple[float, float, float], centre_voxel: tuple[int, int, int]):
    """Physical (z, y, x) offsets in mm of every voxel centre from ``centre_voxel`` (x, y, z)."""
    z, y, x = np.ogrid[0:size[2], 0:size[1], 0:size[0]]
    return ((z - centre_voxel[2]) * spacing[2], (y - centre_voxel[1]) * spacing[1], (x - centre_voxel[0]) * spacing[0])


def _stage_inputs(root: Path, modality: str, pixels: np.ndarray, labels: np.ndarray,
                  spacing: tuple[float, float, float], lesions: list[tuple[str, int, str]]) -> tuple[Path, Path]:
    """Image and mask status records as the image and mask stages write them (volumes on disk, lesions listed)."""
    root.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(pixels.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-150.0, -120.0, 400.0))
    label_map = sitk.GetImageFromArray(labels.astype(np.uint16))
    label_map.CopyInformation(image)
    sitk.WriteImage(image, str(root / "image.nii.gz"))
    sitk.WriteImage(label_map, str(root / "mask.nii.gz"))
    image_status = write_status(root / "image.json", StageStatus(
        "image", PATIENT, modality, OK, outputs={"image": str(root / "image.nii.gz")},
        details={"unit": "SUVbw (g/ml)" if modality == "pet" else "HU"}))
    mask_status = write_status(root / "mask.json", StageStatus(
        "mask", PATIENT, modality, OK, outputs={"mask": str(root / "mask.nii.gz")},
        details={"lesions": [{"lesion_id": lesion_id, "modality": modality, "label": label, "organ": organ,
                              "roi_name": ""} for lesion_id, label, organ in lesions]}))
    assert image_status.ok and mask_status.ok
    return root / "image.json", root / "mask.json"


def _ct_case(drop_tiny: bool = False) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, str]]]:
    """A 40 HU body with a 10 mm-radius 120 HU sphere (L1, label 1) and a 2 x 2 x 2-voxel lesion (L2, label 2)."""
    shape = (CT_SIZE[2], CT_SIZE[1], CT_SIZE[0])
    rng = np.random.default_rng(15)
    pixels = np.round(40 + 8 * rng.standard_normal(shape))
    labels = np.zeros(shape, np.uint16)
    z, y, x = _zyx(CT_SIZE, CT_SPACING, (25, 35, 15))
    sphere = np.broadcast_to(z ** 2 + y ** 2 + x ** 2 <= 10.0 ** 2, shape)
    pixels[sphere] += 80
    labels[sphere] = 1
    lesions = [("L1", 1, "liver")]
    if not drop_tiny:
        pixels[14:16, 30:32, 60:62] += 120
        labels[14:16, 30:32, 60:62] = 2
        lesions.append(("L2", 2, "lymph_node"))
    return pixels, labels, lesions


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB")).astype(int)


def _red(rgb: np.ndarray) -> np.ndarray:
    return (abs(rgb - np.asarray(RED)) <= TOLERANCE).all(axis=-1)


def _run(root: Path, modality: str, image_status: Path, mask_status: Path, params: Path,
         qc_dir: Path) -> StageStatus:
    return run_features(PATIENT, modality, image_status, mask_status, params, root / "features.json",
                        root / "features.json", qc_dir=qc_dir)


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StageStatus, Path]:
    root = tmp_path_factory.mktemp("ct")
    pixels, labels, lesions = _ct_case()
    inputs = _stage_inputs(root, "ct", pixels, labels, CT_SPACING, lesions)
    params = _params(root, "ct")
    status = _run(root, "ct", *inputs, params, root / "qc" / PATIENT / "ct")
    return root, status, params


def test_every_lesion_gets_an_original_and_a_resampled_picture(ct_run: tuple[Path, StageStatus, Path]) -> None:
    root, status, _ = ct_run
    assert status.status == OK and read_status(root / "features.json") == status
    qc = status.details["qc"]
    qc_dir = root / "qc" / PATIENT / "ct"
    assert qc["dir"] == str(qc_dir) and qc["mip"] == ""
    assert sorted(p.name for p in qc_dir.iterdir()) == ["lesion_1_original.png", "lesion_1_resampled.png",
                                                        "lesion_2_original.png", "lesion_2_resampled.png"]
    assert [entry["lesion_id"] for entry in qc["lesions"]] == ["L1", "L2"]
    for entry in qc["lesions"]:
        assert set(entry) == QC_FIELDS
        assert entry["original"] == f"lesion_{entry['label']}_original.png"
        assert entry["resampled"] == f"lesion_{entry['label']}_resampled.png"
        assert entry["error"] == "" and entry["suvmax"] is None and entry["suvpeak"] is None
        for name in (entry["original"], entry["resampled"]):
            rgb = _rgb(qc_dir / name)
            assert rgb.shape == (330, 900, 3)
            assert _red(rgb).sum() > 20, name  # the lesion's contour is drawn


def test_volumes_before_and_after_resampling(ct_run: tuple[Path, StageStatus, Path]) -> None:
    _, status, _ = ct_run
    sphere, tiny = status.details["qc"]["lesions"]
    _, labels, _ = _ct_case()
    voxel_ml = float(np.prod(CT_SPACING)) / 1000
    assert sphere["voxels"] == int((labels == 1).sum())
    assert sphere["volume_ml"] == pytest.approx(sphere["voxels"] * voxel_ml, rel=1e-6)
    assert sphere["volume_ml_resampled"] == pytest.approx(sphere["volume_ml"], rel=0.03)
    assert sphere["volume_change_pct"] == pytest.approx(
        100 * (sphere["volume_ml_resampled"] - sphere["volume_ml"]) / sphere["volume_ml"], abs=0.01)
    assert not sphere["volume_flag"] and not sphere["small"] and sphere["organ"] == "liver"
    assert tiny["voxels"] == 8 < MIN_LESION_VOXELS and tiny["small"]


def test_titles_never_name_the_patient(ct_run: tuple[Path, StageStatus, Path]) -> None:
    """The pictures carry no text chunk at all (the title is drawn in pixels); the pseudonym is not in the status's
    qc block either, except through the folder the DAG chose."""
    root, status, _ = ct_run
    for entry in status.details["qc"]["lesions"]:
        with Image.open(root / "qc" / PATIENT / "ct" / entry["original"]) as png:
            assert not {k for k in png.info if k not in ("dpi",)}, png.info
        assert PATIENT not in str(entry)


def test_a_thin_lesion_whose_volume_changes_with_resampling_is_flagged(tmp_path: Path) -> None:
    """A one-slice disc on 5 mm slices resampled to 1 mm loses its rim on the interpolated slices (about -17 %)."""
    spacing, size = (0.98, 0.98, 5.0), (60, 60, 20)
    z, y, x = _zyx(size, spacing, (30, 30, 10))
    shape = (size[2], size[1], size[0])
    disc = np.broadcast_to((z == 0) & (y ** 2 + x ** 2 <= 4.0 ** 2), shape)
    pixels = np.full(shape, 40.0)
    pixels[disc] = 100
    labels = np.zeros(shape, np.uint16)
    labels[disc] = 1
    inputs = _stage_inputs(tmp_path, "ct", pixels, labels, spacing, [("L1", 1, "lung")])
    status = _run(tmp_path, "ct", *inputs, _params(tmp_path, "ct"), tmp_path / "qc")
    (entry,) = status.details["qc"]["lesions"]
    assert entry["volume_change_pct"] < -VOLUME_CHANGE_FLAG_PCT and entry["volume_flag"]
    assert entry["resampled"] == "lesion_1_resampled.png" and (tmp_path / "qc" / entry["resampled"]).is_file()


def test_a_rerun_with_one_lesion_fewer_leaves_no_stale_picture(tmp_path: Path) -> None:
    qc_dir = tmp_path / "qc"
    pixels, labels, lesions = _ct_case()
    params = _params(tmp_path, "ct")
    _run(tmp_path, "ct", *_stage_inputs(tmp_path / "one", "ct", pixels, labels, CT_SPACING, lesions), params, qc_dir)
    assert (qc_dir / "lesion_2_original.png").is_file()
    pixels, labels, lesions = _ct_case(drop_tiny=True)
    status = _run(tmp_path, "ct", *_stage_inputs(tmp_path / "two", "ct", pixels, labels, CT_SPACING, lesions),
                  params, qc_dir)
    assert [entry["lesion_id"] for entry in status.details["qc"]["lesions"]] == ["L1"]
    assert sorted(p.name for p in qc_dir.iterdir()) == ["lesion_1_original.png", "lesion_1_resampled.png"]


def test_a_picture_that_cannot_be_drawn_is_recorded_not_raised(tmp_path: Path) -> None:
    """Lesion L3's label is not in the label map: resampling fails (its features too) and its original picture
    cannot be drawn; the other lesions are drawn and the stage is OK."""
    pixels, labels, lesions = _ct_case()
    inputs = _stage_inputs(tmp_path, "ct", pixels, labels, CT_SPACING, [*lesions, ("L3", 3, "bone")])
    status = _run(tmp_path, "ct", *inputs, _params(tmp_path, "ct"), tmp_path / "qc")
    assert status.status == OK
    missing = status.details["qc"]["lesions"][2]
    assert missing["lesion_id"] == "L3" and missing["original"] == "" and missing["resampled"] == ""
    assert "original: preview failed: ValueError" in missing["error"]
    assert "resampled: label 3 is empty in the mask" in missing["error"]
    assert missing["voxels"] == 0 and missing["small"] and missing["volume_ml_resampled"] is None
    assert not missing["volume_flag"]
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == [
        "lesion_1_original.png", "lesion_1_resampled.png", "lesion_2_original.png", "lesion_2_resampled.png"]
    # the same lesion's outcome, as the failure table reads it (from the record written to disk)
    assert [(o.lesion_id, o.status) for o in read_status(tmp_path / "features.json").lesions] == [
        ("L1", OK), ("L2", OK), ("L3", FAILED)]
    assert status.failed_lesions[0].reason == "label 3 is empty in the mask"


def test_a_failed_features_status_still_carries_the_qc_block(tmp_path: Path) -> None:
    pixels, labels, _ = _ct_case()
    inputs = _stage_inputs(tmp_path, "ct", pixels, labels, CT_SPACING, [("L9", 9, "other")])
    status = _run(tmp_path, "ct", *inputs, _params(tmp_path, "ct"), tmp_path / "qc")
    assert status.status == FAILED and status.reason.startswith("no lesion gave features")
    (entry,) = status.details["qc"]["lesions"]
    assert entry["lesion_id"] == "L9" and entry["error"] and read_status(tmp_path / "features.json") == status


def test_without_a_qc_dir_nothing_is_drawn(tmp_path: Path) -> None:
    pixels, labels, lesions = _ct_case()
    inputs = _stage_inputs(tmp_path, "ct", pixels, labels, CT_SPACING, lesions)
    status = run_features(PATIENT, "ct", *inputs, _params(tmp_path, "ct"), tmp_path / "f.json",
                          tmp_path / "f.json")
    assert status.ok and "qc" not in status.details


# --- PET: the MIP ---------------------------------------------------------------------------------

PET_SPACING = (4.0, 4.0, 4.0)
PET_SIZE = (50, 40, 80)  # x, y, z: 200 x 160 x 320 mm


def _pet_case() -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, str]]]:
    """SUV 1 everywhere; L1 (SUV 8, 12 mm radius) near the patient's right (low x), anterior (low y) and the head
    (high z); L2 (SUV 6) near the left, posterior and the feet."""
    shape = (PET_SIZE[2], PET_SIZE[1], PET_SIZE[0])
    pixels = np.ones(shape)
    labels = np.zeros(shape, np.uint16)
    for label, centre, suv in ((1, (10, 8, 68), 8.0), (2, (40, 32, 12), 6.0)):
        z, y, x = _zyx(PET_SIZE, PET_SPACING, centre)
        ball = np.broadcast_to(z ** 2 + y ** 2 + x ** 2 <= 12.0 ** 2, shape)
        pixels[ball], labels[ball] = suv, label
    return pixels, labels, [("L1", 1, "lymph_node"), ("L2", 2, "bone")]


def _panels(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) pixel bounds of the two projections: the runs of columns showing SUV 1 grey."""
    body = (abs(rgb - 230) <= 3).all(axis=-1)  # SUV 1 on the inverted 0..10 scale: 90 % white
    columns = np.flatnonzero(body.sum(axis=0) > body.shape[0] // 4)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(runs) == 2, [len(r) for r in runs]
    bounds = []
    for run in runs:
        rows = np.flatnonzero(body[:, run[0]:run[-1] + 1].sum(axis=1) > len(run) // 4)
        bounds.append((int(rows[0]), int(rows[-1]), int(run[0]), int(run[-1])))
    return bounds


def _expected(bounds: tuple[int, int, int, int], column: float, n_columns: int, z: float) -> tuple[float, float]:
    """Pixel (row, column) of voxel column ``column`` and slice ``z`` (head at the top) in a projection."""
    top, bottom, left, right = bounds
    return (top + (PET_SIZE[2] - 1 - z + 0.5) / PET_SIZE[2] * (bottom - top + 1),
            left + (column + 0.5) / n_columns * (right - left + 1))


def _red_near(rgb: np.ndarray, row: float, column: float, radius: int = 12) -> int:
    r, c = round(row), round(column)
    return int(_red(rgb[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1]).sum())


def test_the_mip_marks_each_lesion_where_it_projects(tmp_path: Path) -> None:
    """Anterior view: patient's right on the left, head at the top; lateral: anterior on the left. A marker is
    red at the lesion's projection and nothing red sits at the mirrored position."""
    pixels, labels, _ = _pet_case()
    image = sitk.GetImageFromArray(pixels)
    image.SetSpacing(PET_SPACING)
    label_map = sitk.GetImageFromArray(labels)
    label_map.CopyInformation(image)
    out = mip_preview(image, label_map, {1: "L1"}, tmp_path / "mip.png", title="PET")
    rgb = _rgb(out)
    anterior, lateral = _panels(rgb)
    for bounds, column, n_columns in ((anterior, 10, PET_SIZE[0]), (lateral, 8, PET_SIZE[1])):
        row, col = _expected(bounds, column, n_columns, 68)
        assert _red_near(rgb, row, col) > 10
        mirrored_row, mirrored_col = _expected(bounds, n_columns - 1 - column, n_columns, PET_SIZE[2] - 1 - 68)
        assert _red_near(rgb, mirrored_row, mirrored_col) == 0
    # physical aspect ratio: 200 x 320 mm and 160 x 320 mm
    for bounds, extent in ((anterior, 200), (lateral, 160)):
        top, bottom, left, right = bounds
        assert (right - left + 1) / (bottom - top + 1) == pytest.approx(extent / 320, rel=0.03)
    # inverted grey on the fixed scale: the lesion (SUV 8 of 0..10) is dark
    row, col = _expected(anterior, 10, PET_SIZE[0], 68)
    assert (rgb[round(row), round(col)] < 70).all()


def test_the_mip_refuses_a_label_absent_from_the_label_map(tmp_path: Path) -> None:
    pixels, labels, _ = _pet_case()
    image, label_map = sitk.GetImageFromArray(pixels), sitk.GetImageFromArray(labels)
    with pytest.raises(ValueError, match=r"label 7 \(L7\) is not in the label map"):
        mip_preview(image, label_map, {7: "L7"}, tmp_path / "mip.png")


def test_the_pet_features_job_draws_the_mip_and_reports_suv(tmp_path: Path) -> None:
    pixels, labels, lesions = _pet_case()
    inputs = _stage_inputs(tmp_path, "pet", pixels, labels, PET_SPACING, lesions)
    status = _run(tmp_path, "pet", *inputs, _params(tmp_path, "pet"), tmp_path / "qc")
    assert status.status == OK
    qc = status.details["qc"]
    assert qc["mip"] == "mip.png" and _rgb(tmp_path / "qc" / "mip.png").ndim == 3
    for entry, suvmax in zip(qc["lesions"], (8.0, 6.0)):
        assert set(entry) == QC_FIELDS and entry["error"] == ""
        assert entry["suvmax"] == pytest.approx(suvmax) and entry["suvpeak"] is not None
        assert _rgb(tmp_path / "qc" / entry["resampled"]).shape == (330, 900, 3)
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == [
        "lesion_1_original.png", "lesion_1_resampled.png", "lesion_2_original.png", "lesion_2_resampled.png",
        "mip.png"]
