"""SUV conversion (issue 6): reference cases, IBSI DROs, a real GE series, hand-built branches, refusals.

Reference values come from ../shared/data/suv (README there): every row of
suv-reference-cases.csv, the 17 IBSI SUV DROs and TCIA STS_001 (GE Discovery ST FDG PET).
Hand-built headers cover branches no public reference has; their expected factors are
derived by hand in each test from the formulas of ``palmares_radiomics.suv``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import config as dicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import SHARED_DATA, shared_path
from palmares_radiomics import suv, volumes
from palmares_radiomics.errors import ConfigError, DicomReadError, SuvError
from palmares_radiomics.suv import SuvCard, SuvOptions, suv_card, suv_card_for_series, to_suv, to_suvbw

PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"
LN2 = math.log(2.0)
REL_TOL = 1e-3  # 0.1 % (issue 6)


# --------------------------------------------------------------------------- helpers


def _set(ds: Dataset, keyword_or_tag: str | int, value: object, vr: str | None = None) -> None:
    """Set an element verbatim (no value validation: reference headers carry values like 'Blah')."""
    if value is None or value == "":
        return
    if isinstance(keyword_or_tag, str):
        tag = pydicom.datadict.tag_for_keyword(keyword_or_tag)
        vr = vr or dictionary_VR(tag)
    else:
        tag = keyword_or_tag
    ds.add(DataElement(tag, vr, value, validation_mode=dicom_config.IGNORE))


def make_pet(
    *,
    units: str = "BQML",
    decay_correction: str = "START",
    corrected_image: str | None = "ATTN\\DECY",
    series_date: str = "20250101",
    series_time: str = "110000",
    acquisition_date: str | None = "20250101",
    acquisition_time: str | None = "110000",
    frame_reference_time_ms: str | None = None,
    actual_frame_duration_ms: str | None = None,
    rps_datetime: str | None = "20250101100000",
    rps_time: str | None = None,
    dose: str | None = "370000000",
    half_life: str | None = "6586.2",
    weight: str | None = "70",
    height: str | None = None,
    sex: str | None = None,
    suv_type: str | None = None,
    manufacturer: str | None = None,
    z_mm: float = 0.0,
    instance: int = 1,
) -> Dataset:
    """A PET image header with the SUV-relevant attributes (strings exactly as DICOM stores them)."""
    ds = Dataset()
    _set(ds, "SOPClassUID", PET_SOP_CLASS)
    _set(ds, "Modality", "PT")
    _set(ds, "SeriesInstanceUID", "1.2.3.4")
    _set(ds, "InstanceNumber", str(instance))
    _set(ds, "Manufacturer", manufacturer)
    _set(ds, "Units", units)
    _set(ds, "DecayCorrection", decay_correction)
    if corrected_image is not None:
        _set(ds, "CorrectedImage", corrected_image.split("\\"))
    _set(ds, "SeriesDate", series_date)
    _set(ds, "SeriesTime", series_time)
    _set(ds, "AcquisitionDate", acquisition_date)
    _set(ds, "AcquisitionTime", acquisition_time)
    _set(ds, "FrameReferenceTime", frame_reference_time_ms)
    _set(ds, "ActualFrameDuration", actual_frame_duration_ms and str(int(float(actual_frame_duration_ms))))
    _set(ds, "PatientWeight", weight)
    _set(ds, "PatientSize", height)
    _set(ds, "PatientSex", sex)
    _set(ds, "SUVType", suv_type)
    _set(ds, "ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    _set(ds, "ImagePositionPatient", [0.0, 0.0, z_mm])
    rp = Dataset()
    _set(rp, "RadiopharmaceuticalStartDateTime", rps_datetime)
    _set(rp, "RadiopharmaceuticalStartTime", rps_time)
    _set(rp, "RadionuclideTotalDose", dose)
    _set(rp, "RadionuclideHalfLife", half_life)
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([rp])
    return ds


def rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


# --------------------------------------------------------------------------- suv-reference-cases.csv


def _reference_rows() -> list[dict[str, str]]:
    path = shared_path("suv", "suv-reference-cases.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _row_datasets(row: dict[str, str]) -> list[Dataset]:
    """One dataset per instance group of the row: `|`-separated columns vary per image, the rest are shared."""
    varying = ["acquisition_time", "frame_reference_time_ms", "actual_frame_duration_ms", "rescale_slope"]
    n = max(len(row[c].split("|")) for c in varying)
    datasets = []
    for i in range(n):

        def pick(column: str) -> str:
            values = row[column].split("|")
            return values[i] if len(values) > 1 else values[0]

        ds = make_pet(
            units=row["units"],
            decay_correction=row["decay_correction"],
            corrected_image=row["corrected_image"] or None,
            series_date=row["series_date"],
            series_time=row["series_time"],
            acquisition_date=row["acquisition_date"] or None,
            acquisition_time=pick("acquisition_time") or None,
            frame_reference_time_ms=pick("frame_reference_time_ms") or None,
            actual_frame_duration_ms=pick("actual_frame_duration_ms") or None,
            rps_datetime=row["radiopharmaceutical_start_datetime"] or None,
            rps_time=row["radiopharmaceutical_start_time"] or None,
            dose=row["total_dose_as_stored"] or None,
            half_life=row["half_life_s"] or None,
            weight=row["weight_kg"] or None,
            height=row["height_m"] or None,
            sex=row["sex"] or None,
            suv_type=row["suv_type"] or None,
            manufacturer=row["manufacturer"].replace("(per case name)", "").strip() or None,
            z_mm=4.0 * i,
            instance=i + 1,
        )
        slope = pick("rescale_slope")
        if slope and slope[0].isdigit():
            _set(ds, "RescaleSlope", slope)
        # private tags exactly as in the reference objects: no private creator element
        _set(ds, 0x0009100D, row["ge_private_scan_datetime"] or None, "DT")
        _set(ds, 0x70531000, row["philips_suv_scale_factor"] or None, "DS")
        _set(ds, 0x70531009, row["philips_activity_concentration_scale_factor"] or None, "DS")
        datasets.append(ds)
    return datasets


def _row_options(row: dict[str, str]) -> SuvOptions:
    # calculate-suv's unit fixtures are arithmetic tests with a 100 Bq dose (physically meaningless);
    # their stated factors read that dose as Bq, so the IBSI "dose < 1e4 is MBq" rule is switched off
    # for that group only (it is on by default and needed by IBSI DRO_3_0, stored in MBq). For the same reason
    # the FDG dose plausibility bound (20 MBq - 1 GBq, issue 14) is off for that group: 100 Bq is no real dose.
    if row["group"] == "calculate-suv-unit":
        return SuvOptions(sul=True, suvbsa=True, dose_mbq_below=None, dose_range_bq=None)
    return SuvOptions(sul=True, suvbsa=True)


REFUSAL_MATCH = {
    "csuv-ut-err-nac": r"not attenuation-corrected .*no ATTN",
    "csuv-ut-err-units": r"Units \(0054,1001\) is 'BLAH'",
    "csuv-ut-err-negative-decay": r"negative uptake",
    "csuv-ut-err-weight-zero": r"PatientWeight \(0010,1030\) is 0",
    "csuv-ut-err-cnts-no-factors": r"Units are CNTS but the Philips SUV Scale Factor",
}


def _case_ids() -> list[str]:
    """Case ids for parametrize, read at collection; when the data is absent, one placeholder whose
    test then calls shared_path() (skip outside CI, fail in CI) without aborting the whole collection."""
    path = SHARED_DATA / "suv" / "suv-reference-cases.csv"
    if not path.exists():
        return ["reference-data-absent"]
    with path.open(newline="", encoding="utf-8") as fh:
        return [r["case_id"] for r in csv.DictReader(fh)]


@pytest.mark.shared
@pytest.mark.parametrize("case_id", _case_ids())
def test_reference_case(case_id: str) -> None:
    rows = {r["case_id"]: r for r in _reference_rows()}  # skips (fails in CI) when the data is absent
    row = rows[case_id]
    card = suv_card(_row_datasets(row), _row_options(row))
    json.dumps(card.to_json_dict())
    if row["expected_outcome"] == "refuse":
        assert card.suvbw_scale_factor is None
        assert card.refused_reason is not None and card.branch.endswith("refuse")
        with pytest.raises(SuvError, match=REFUSAL_MATCH[case_id]):
            to_suvbw(sitk.Image([2, 2, 1], sitk.sitkFloat64), card)
        return
    assert card.refused_reason is None, card.refused_reason
    assert rel(card.suvbw_scale_factor, float(row["suvbw_scale_factor"])) <= REL_TOL
    # every branch label the reference names is one we took (the CSV omits some, e.g. start= for csuv)
    assert set(row["branch"].split(";")) <= set(card.branch.split(";")), card.branch
    if row["sul_janma_scale_factor"]:
        assert rel(card.sul_scale_factor, float(row["sul_janma_scale_factor"])) <= REL_TOL
    if row["suvbsa_scale_factor"]:
        assert rel(card.suvbsa_scale_factor, float(row["suvbsa_scale_factor"])) <= REL_TOL
    method = row["decay_reference_method"].split("(")[0]
    if method in ("series_time", "backcompute"):
        assert card.decay_reference.split(" ")[0] == method
        assert card.uptake_s == pytest.approx(float(row["uptake_s"]), abs=1e-3)
    if method == "per-image":
        assert card.uptake_s == pytest.approx(float(row["uptake_s"]), abs=1e-3)


@pytest.mark.shared
def test_reference_csv_has_the_documented_cases() -> None:
    rows = _reference_rows()
    assert len(rows) == 29
    assert sum(r["expected_outcome"] == "refuse" for r in rows) == 5
    assert {r["case_id"] for r in rows if r["expected_outcome"] == "refuse"} == set(REFUSAL_MATCH)


# --------------------------------------------------------------------------- IBSI DROs


@pytest.fixture(scope="session")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All reference zips (17 DROs + TCIA STS_001) extracted once into a session temp folder."""
    root = tmp_path_factory.mktemp("suv-reference")
    zips = sorted(shared_path("suv", "dicom", "ibsi-suv-dro").glob("DRO_*.zip"))
    zips.append(shared_path("suv", "dicom", "tcia-sts-001-fdg-pet.zip"))
    for archive in zips:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(root)
    return root


def _dro_rows() -> list[dict[str, str] | None]:
    """ibsi-dro-expected.csv rows at collection ([None] when absent: the test then skips or fails via shared_path)."""
    path = SHARED_DATA / "suv" / "ibsi-dro-expected.csv"
    if not path.exists():
        return [None]
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.shared
@pytest.mark.parametrize("dro", _dro_rows(), ids=lambda r: r["dro_id"] if r else "reference-data-absent")
def test_ibsi_dro(dro: dict[str, str] | None, extracted: Path) -> None:
    """Stated SUV min/median/max inside the DRO mask (2 decimals), and the README's computed values to 1e-5."""
    shared_path("suv", "ibsi-dro-expected.csv")
    assert dro is not None
    series = extracted / dro["dro_id"] / "PT"
    card = suv_card_for_series(series)
    assert card.refused_reason is None, card.refused_reason
    image = to_suvbw(volumes.read_image(series), card)
    mask = sitk.ReadImage(str(extracted / dro["dro_id"] / "mask" / "DRO_mask.nii.gz"))
    assert mask.GetSize() == image.GetSize()
    assert np.allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
    inside = sitk.GetArrayFromImage(mask) > 0
    assert int(inside.sum()) == int(dro["mask_voxels"])
    values = sitk.GetArrayFromImage(image)[inside]
    got = np.array([values.min(), np.median(values), values.max()])
    computed = np.array([float(dro[f"computed_suv_{k}"]) for k in ("min", "median", "max")])
    stated = np.array([float(dro[f"expected_suv_{k}"]) for k in ("min", "median", "max")])
    np.testing.assert_allclose(got, computed, rtol=1e-5)
    if dro["dro_id"] == "DRO_2_3":
        # README: stored SUVbsa truncated at RescaleSlope 0.01 (5, 26, 105) -> SUVbw 0.19/0.98/3.98, checked above
        # against the computed values. The README's alternative "2 % tolerance" holds for median and max only:
        # one truncation step (0.01 SUVbsa = 0.038 SUVbw) is 19 % of the minimum 0.20, which comes out 5.3 % low.
        np.testing.assert_allclose(got[1:], stated[1:], rtol=0.02)
        assert abs(got[0] - stated[0]) < 0.01 * float(card.suvbw_scale_factor)
    else:
        assert np.all(np.abs(got - stated) <= 0.005 + 1e-9), got


@pytest.mark.shared
def test_dro_none_applies_per_slice_factors(extracted: Path) -> None:
    """DRO_3_4 (DecayCorrection NONE, two acquisition times): two factors, mapped to slices by position."""
    card = suv_card_for_series(extracted / "DRO_3_4" / "PT")
    assert card.slice_factors is not None and len(card.slice_factors) == 20
    assert len({f for _, f in card.slice_factors}) == 2
    assert card.to_json_dict()["factor_varies_by_slice"] is True
    image = volumes.read_image(extracted / "DRO_3_4" / "PT")
    with pytest.raises(SuvError, match="varies by slice over 20 images"):
        to_suvbw(image[:, :, :10], card)


# --------------------------------------------------------------------------- real GE series (TCIA STS_001)


def _rasterise_rtstruct(rtstruct: Path, roi_name: str, reference: sitk.Image) -> np.ndarray:
    """Centre-in-polygon rasterisation of an axial RTSTRUCT ROI onto ``reference`` (even-odd rule; test helper only)."""
    rs = pydicom.dcmread(rtstruct)
    number = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName == roi_name)
    contours = next(c for c in rs.ROIContourSequence if int(c.ReferencedROINumber) == number).ContourSequence
    assert np.allclose(reference.GetDirection(), np.eye(3).ravel())
    nx, ny, nz = reference.GetSize()
    ox, oy, oz = reference.GetOrigin()
    sx, sy, sz = reference.GetSpacing()
    mask = np.zeros((nz, ny, nx), dtype=bool)
    xc, yc = np.meshgrid(ox + sx * np.arange(nx), oy + sy * np.arange(ny))
    for contour in contours:
        pts = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        k = int(round((pts[0, 2] - oz) / sz))
        assert 0 <= k < nz and abs(oz + k * sz - pts[0, 2]) < sz / 2
        inside = np.zeros((ny, nx), dtype=bool)
        x0, y0 = pts[:, 0], pts[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        for a, b, c, d in zip(x0, y0, x1, y1, strict=True):
            if b == d:
                continue
            crosses = (yc >= min(b, d)) & (yc < max(b, d))
            x_at = a + (yc - b) * (c - a) / (d - b)
            inside ^= crosses & (xc < x_at)
        mask[k] ^= inside
    return mask


@pytest.mark.shared
def test_real_ge_series_suvmax_in_gtv(extracted: Path) -> None:
    """MIRP states SUVmax in (7.9, 8.0) and SUVmin in (0.15, 0.20) inside GTV_Mass (README: 7.9107 / 0.1688)."""
    series = extracted / "FDG_PET" / "image"
    card = suv_card_for_series(series)
    assert card.refused_reason is None
    assert card.branch == "units=BQML;dc=START;start=RPSTime+SeriesDate;tref=series_time"
    assert card.uptake_s == pytest.approx(2711.0)
    image = to_suvbw(volumes.read_image(series), card)
    gtv = _rasterise_rtstruct(extracted / "FDG_PET" / "mask" / "1-1.dcm", "GTV_Mass", image)
    values = sitk.GetArrayFromImage(image)[gtv]
    assert gtv.sum() > 100
    assert 7.9 < values.max() < 8.0
    assert 0.15 < values.min() < 0.20
    checked = suv.with_image_check(card, image)
    whole = checked.checks[-1]
    assert (whole.name, whole.outcome) == ("whole_image_suv", "pass") and whole.value == pytest.approx(0.808, abs=0.01)


# --------------------------------------------------------------------------- hand-built branches


def bqml_start(weight_kg: float, dose_bq: float, half_life_s: float, uptake_s: float) -> float:
    """Expected factor by hand: W[g] / (D * 2^(-uptake/T1/2))."""
    return weight_kg * 1000.0 / (dose_bq * 2.0 ** (-uptake_s / half_life_s))


def test_series_time_within_tolerance_of_acquisition_is_used() -> None:
    """Series time 1 s after acquisition (real scanners) still counts as the decay reference."""
    card = suv_card(
        [
            make_pet(
                series_time="110001",
                acquisition_time="110000",
                frame_reference_time_ms="150000",
                actual_frame_duration_ms="300000",
            )
        ]
    )
    assert "tref=series_time" in card.branch
    assert card.uptake_s == pytest.approx(3601.0)
    assert rel(card.suvbw_scale_factor, bqml_start(70, 3.7e8, 6586.2, 3601.0)) < 1e-9


def test_ge_private_scan_datetime_with_creator() -> None:
    """Series after acquisition on GE: (0009,xx0D) found through its creator GEMS_PETD_01 in block 0x11."""
    ds = make_pet(series_time="113000", acquisition_time="110500", manufacturer="GE MEDICAL SYSTEMS")
    _set(ds, 0x00090011, "GEMS_PETD_01", "LO")
    _set(ds, 0x0009110D, "20250101105000", "DT")
    card = suv_card([ds])
    assert "tref=ge_private" in card.branch
    assert card.uptake_s == pytest.approx(3000.0)
    assert rel(card.suvbw_scale_factor, bqml_start(70, 3.7e8, 6586.2, 3000.0)) < 1e-9


def test_ge_private_tag_without_creator_ignored_for_other_vendors() -> None:
    """(0009,100D) without creator on a non-GE image is another vendor's tag: not used -> earliest acquisition."""
    ds = make_pet(series_time="113000", acquisition_time="110500", manufacturer="SIEMENS")
    _set(ds, 0x0009100D, "20250101105000", "DT")
    card = suv_card([ds])
    assert "tref=earliest_acquisition" in card.branch
    assert card.uptake_s == pytest.approx(3900.0)
    assert rel(card.suvbw_scale_factor, bqml_start(70, 3.7e8, 6586.2, 3900.0)) < 1e-9


def test_earliest_acquisition_when_no_frame_timing() -> None:
    images = [
        make_pet(series_time="113000", acquisition_time="111000", z_mm=0, instance=1),
        make_pet(series_time="113000", acquisition_time="110500", z_mm=4, instance=2),
    ]
    card = suv_card(images)
    assert card.branch.endswith("tref=earliest_acquisition")
    assert card.uptake_s == pytest.approx(3900.0)
    assert card.slice_factors is None  # START: one factor for the whole series


def test_backcompute_by_hand() -> None:
    """t_ref = t_acq + T_ave - FRT, T_ave = ln(lT/(1-exp(-lT)))/l; C-11 (T1/2 1221.66 s) makes T_ave visibly < T/2."""
    half = 1221.66
    lam = LN2 / half
    duration = 600.0
    t_ave = math.log(lam * duration / (1 - math.exp(-lam * duration))) / lam
    assert t_ave < duration / 2 - 5
    frt = 200.0
    ds = make_pet(
        series_time="113000",
        acquisition_time="110000",
        half_life=str(half),
        frame_reference_time_ms="200000",
        actual_frame_duration_ms="600000",
    )
    card = suv_card([ds])
    assert card.branch.endswith("tref=backcompute")
    uptake = 3600.0 + t_ave - frt
    assert card.uptake_s == pytest.approx(uptake, abs=1e-6)
    assert rel(card.suvbw_scale_factor, bqml_start(70, 3.7e8, half, uptake)) < 1e-9


def test_backcompute_inconsistent_between_images_falls_back_with_warning() -> None:
    images = [
        make_pet(
            series_time="113000",
            acquisition_time="110000",
            frame_reference_time_ms="150000",
            actual_frame_duration_ms="300000",
            z_mm=0,
        ),
        make_pet(
            series_time="113000",
            acquisition_time="110500",
            frame_reference_time_ms="100000",
            actual_frame_duration_ms="300000",
            z_mm=4,
        ),
    ]
    card = suv_card(images)
    assert card.branch.endswith("tref=earliest_acquisition")
    assert any(c.name == "backcompute_consistency" and c.outcome == "warn" for c in card.checks)
    assert card.uptake_s == pytest.approx(3600.0)


def test_midnight_with_start_datetime_on_previous_day() -> None:
    """RPSDateTime on 31 Dec, series and acquisition on 1 Jan: 45 min uptake, no day correction needed."""
    ds = make_pet(
        series_date="20250101",
        series_time="001500",
        acquisition_date="20250101",
        acquisition_time="001500",
        rps_datetime="20241231233000.00 ",
    )
    card = suv_card([ds])
    assert card.uptake_s == pytest.approx(2700.0)
    assert card.inputs["series_date_minus_injection_date_days"] == 1


def test_midnight_with_start_time_only() -> None:
    ds = make_pet(series_time="000500", acquisition_time="000500", rps_datetime=None, rps_time="230500")
    card = suv_card([ds])
    assert "start=RPSTime+SeriesDate-1day(midnight)" in card.branch
    assert card.uptake_s == pytest.approx(3600.0)


def test_start_datetime_preferred_over_start_time() -> None:
    ds = make_pet(rps_datetime="20250101100000", rps_time="101000")
    card = suv_card([ds])
    assert card.uptake_s == pytest.approx(3600.0)
    assert [c.outcome for c in card.checks if c.name == "injection_time_agreement"] == ["warn"]


def test_admin_never_decays_the_dose() -> None:
    """ADMIN: factor = W[g]/D_adm whatever the uptake (the anchors' bug: decaying twice)."""
    card = suv_card([make_pet(decay_correction="ADMIN")])
    assert card.suvbw_scale_factor == pytest.approx(70000 / 3.7e8, rel=1e-12)
    assert card.decay_factor == 1.0
    assert card.uptake_s == pytest.approx(3600.0)
    assert "tref=" not in card.branch


def test_none_per_image_by_hand() -> None:
    """NONE: W/D * lT/(1-exp(-lT)) * exp(l (t_acq - t_adm)) per image, mapped by slice position."""
    lam = LN2 / 6586.2
    t = 180.0
    images = [
        make_pet(
            decay_correction="NONE",
            corrected_image="ATTN",
            acquisition_time="110000",
            actual_frame_duration_ms="180000",
            z_mm=0,
        ),
        make_pet(
            decay_correction="NONE",
            corrected_image="ATTN",
            acquisition_time="110300",
            actual_frame_duration_ms="180000",
            z_mm=-150,
        ),
    ]
    card = suv_card(images)
    expected = [70000 / 3.7e8 * lam * t / (1 - math.exp(-lam * t)) * math.exp(lam * s) for s in (3600, 3780)]
    assert card.suvbw_scale_factor == pytest.approx(expected[0], rel=1e-12)
    assert card.slice_factors == (
        pytest.approx((-150.0, expected[1]), rel=1e-12),
        pytest.approx((0.0, expected[0]), rel=1e-12),
    )


def test_dose_in_mbq_and_option_off() -> None:
    card = suv_card([make_pet(dose="370")])
    assert card.inputs["total_dose_bq"] == pytest.approx(3.7e8)
    assert [c.outcome for c in card.checks if c.name == "dose_units"] == ["warn"]
    assert rel(card.suvbw_scale_factor, bqml_start(70, 3.7e8, 6586.2, 3600)) < 1e-9
    as_bq = suv_card([make_pet(dose="370")], SuvOptions(dose_mbq_below=None, dose_range_bq=None))
    assert as_bq.suvbw_scale_factor == pytest.approx(card.suvbw_scale_factor * 1e6)
    # with the FDG dose bound on (default), 370 read as Bq is refused, never converted
    refused = suv_card([make_pet(dose="370")], SuvOptions(dose_mbq_below=None))
    assert re.search(r"failed check: dose_range\).*is 370, read as 370 Bq", refused.refused_reason)


def test_philips_factors_never_applied_to_bqml_but_checked() -> None:
    mine = bqml_start(70, 3.7e8, 6586.2, 3600)
    agreeing = make_pet()
    _set(agreeing, 0x70530010, "Philips PET Private Group", "LO")
    _set(agreeing, 0x70531000, str(mine * 2.0)[:16], "DS")
    _set(agreeing, 0x70531009, "2.0", "DS")
    card = suv_card([agreeing])
    assert card.suvbw_scale_factor == pytest.approx(mine)
    assert [c.outcome for c in card.checks if c.name == "vendor_factor_agreement"] == ["pass"]
    disagreeing = make_pet()
    _set(disagreeing, 0x70531000, str(mine * 2.5)[:16], "DS")
    _set(disagreeing, 0x70531009, "2.0", "DS")
    card = suv_card([disagreeing])
    assert card.suvbw_scale_factor == pytest.approx(mine)
    check = next(c for c in card.checks if c.name == "vendor_factor_agreement")
    assert check.outcome == "warn" and check.value == pytest.approx(0.25)


def test_philips_creator_in_another_block() -> None:
    ds = make_pet(units="CNTS", manufacturer="Philips Medical Systems")
    _set(ds, 0x70530011, "Philips PET Private Group", "LO")
    _set(ds, 0x70531100, "0.000123", "DS")
    card = suv_card([ds])
    assert card.suvbw_scale_factor == pytest.approx(0.000123)
    assert card.inputs["philips_factors_read"].startswith("with private creator")


def test_philips_block_reserved_by_another_creator_is_not_read() -> None:
    ds = make_pet(units="CNTS")
    _set(ds, 0x70530010, "SOME OTHER VENDOR", "LO")
    _set(ds, 0x70531000, "0.000123", "DS")
    card = suv_card([ds])
    assert card.refused_reason is not None and "CNTS" in card.refused_reason


def test_philips_factor_as_undecoded_bytes() -> None:
    """A private DS read as UN (implicit VR, no dictionary) is bytes: still parsed."""
    ds = make_pet(units="CNTS")
    _set(ds, 0x70531000, b"0.000456", "UN")
    assert suv_card([ds]).suvbw_scale_factor == pytest.approx(0.000456)


def test_gml_lean_body_mass_types_by_hand() -> None:
    """GML: factor = W / body size. Janmahasatian F, James-120 M, IBW F (W 60 kg, H 1.60 m)."""
    w, h = 60.0, 1.60
    bmi = w / h**2
    janma_f = 9270 * w / (8780 + 244 * bmi)
    james120_m = 1.10 * w - 120 * (w / 160) ** 2
    ibw_f = 45.5 + 0.91 * (160 - 152)
    for suv_type, sex, size in (("LBMJANMA", "F", janma_f), ("LBM", "M", james120_m), ("IBW", "F", ibw_f)):
        card = suv_card([make_pet(units="GML", weight="60", height="1.60", sex=sex, suv_type=suv_type)])
        assert card.suvbw_scale_factor == pytest.approx(w / size, rel=1e-12), suv_type


def test_gml_sex_other_refused_when_asked() -> None:
    ds = make_pet(units="GML", height="1.75", sex="O", suv_type="IBW")
    card = suv_card([ds], SuvOptions(sex_other="refuse"))
    assert card.refused_reason is not None and "needs M or F" in card.refused_reason


def test_sul_and_bsa_by_hand() -> None:
    """SUL = SUVbw x LBM_janma/W; SUVbsa = SUVbw x BSA[cm2]/W[g] (W 80 kg, H 1.70 m, F)."""
    card = suv_card([make_pet(weight="80", height="1.70", sex="F")], SuvOptions(sul=True, suvbsa=True))
    bw = bqml_start(80, 3.7e8, 6586.2, 3600)
    lbm = 9270 * 80 / (8780 + 244 * 80 / 1.7**2)
    bsa = 0.007184 * 80**0.425 * 170**0.725 * 1e4
    assert card.sul_scale_factor == pytest.approx(bw * lbm / 80, rel=1e-12)
    assert card.suvbsa_scale_factor == pytest.approx(bw * bsa / 80000, rel=1e-12)


def test_sul_unavailable_is_reported_not_guessed() -> None:
    card = suv_card([make_pet(height=None, sex="F")], SuvOptions(sul=True, suvbsa=True))
    assert card.suvbw_scale_factor is not None
    assert card.sul_scale_factor is None and card.suvbsa_scale_factor is None
    assert {c.name: c.outcome for c in card.checks}["sul"] == "n/a"
    with pytest.raises(SuvError, match="sul was not computed"):
        to_suv(sitk.Image([2, 2, 1], sitk.sitkFloat64), card, "sul")


def test_timezone_offset_is_flagged() -> None:
    card = suv_card([make_pet(rps_datetime="20250101100000+0100")])
    assert card.uptake_s == pytest.approx(3600.0)
    assert [c.outcome for c in card.checks if c.name == "timezone"] == ["warn"]


# --------------------------------------------------------------------------- refusals


REFUSALS = [
    ("weight absent", dict(weight=None), r"PatientWeight \(0010,1030\) is absent"),
    ("weight in grams", dict(weight="70000"), r"probably grams"),
    ("dose absent", dict(dose=None), r"RadionuclideTotalDose \(0018,1074\) is absent"),
    ("dose zero", dict(dose="0"), r"RadionuclideTotalDose \(0018,1074\) is 0"),
    ("half-life zero", dict(half_life="0"), r"RadionuclideHalfLife \(0018,1075\) is 0"),
    ("injection time absent", dict(rps_datetime=None, rps_time=None), r"injection time is absent"),
    ("negative uptake", dict(rps_datetime="20250101113000"), r"negative uptake"),
    ("not attenuation corrected", dict(corrected_image="DECY\\NORM"), r"not attenuation-corrected"),
    ("CorrectedImage absent", dict(corrected_image=None), r"CorrectedImage \(0028,0051\) is absent"),
    ("START without DECY", dict(corrected_image="ATTN"), r"DecayCorrection is START but CorrectedImage has no DECY"),
    (
        "NONE with DECY",
        dict(decay_correction="NONE", actual_frame_duration_ms="300000"),
        r"NONE but CorrectedImage lists DECY",
    ),
    ("DecayCorrection absent", dict(decay_correction=""), r"DecayCorrection \(0054,1102\) is 'absent'"),
    ("Units CPS", dict(units="CPS"), r"Units \(0054,1001\) is 'CPS'"),
    ("Units PROPCNTS", dict(units="PROPCNTS"), r"Units \(0054,1001\) is 'PROPCNTS'"),
    ("Units absent", dict(units=""), r"Units \(0054,1001\) is absent"),
    ("CM2ML with BW type", dict(units="CM2ML", suv_type="BW"), r"cm2/ml is only the unit of SUVbsa"),
    ("GML with BSA type", dict(units="GML", suv_type="BSA"), r"SUVType 'BSA'"),
    (
        "GML LBM without height",
        dict(units="GML", suv_type="LBMJAMES128", sex="M"),
        r"PatientSize \(0010,1020\) is absent",
    ),
    (
        "start time without series date",
        dict(series_date="", rps_datetime=None, rps_time="100000"),
        r"injection day is unknown",
    ),
    ("bad time", dict(series_time="25xx00"), r"SeriesTime '25xx00' is not a valid DICOM time"),
    ("NONE without frame duration", dict(decay_correction="NONE", corrected_image="ATTN"), r"no ActualFrameDuration"),
]


@pytest.mark.parametrize(("changes", "match"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals(changes: dict[str, str | None], match: str) -> None:
    card = suv_card([make_pet(**changes)])
    assert card.suvbw_scale_factor is None and card.refused_reason
    assert card.to_json_dict()["suvbw_scale_factor"] is None
    with pytest.raises(SuvError, match=match):
        to_suvbw(sitk.Image([2, 2, 1], sitk.sitkFloat64), card)


def test_refusal_when_images_disagree() -> None:
    same = suv_card(
        [make_pet(weight="70", series_time="110000", z_mm=0), make_pet(weight="70.0", series_time="110000.000", z_mm=4)]
    )
    assert same.refused_reason is None  # same numbers and times, written differently
    card = suv_card([make_pet(weight="70", z_mm=0), make_pet(weight="71", z_mm=4)])
    with pytest.raises(SuvError, match=r"PatientWeight \(0010,1030\) differs between the images"):
        to_suvbw(sitk.Image([2, 2, 2], sitk.sitkFloat64), card)


def test_refusal_of_two_injections_enhanced_pet_and_empty() -> None:
    ds = make_pet()
    ds.RadiopharmaceuticalInformationSequence.append(ds.RadiopharmaceuticalInformationSequence[0])
    assert "has 2 items" in suv_card([ds]).refused_reason
    enhanced = make_pet()
    enhanced.SOPClassUID = suv.ENHANCED_PET_SOP_CLASS
    assert "Enhanced PET" in suv_card([enhanced]).refused_reason
    assert suv_card([]).refused_reason == "no PET images were given"
    ct = make_pet()
    ct.Modality = "CT"
    assert "not PT" in suv_card([ct]).refused_reason


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="time_tolerance_s must be between 0 and 60 s. Found: -1"):
        SuvOptions(time_tolerance_s=-1)
    with pytest.raises(ConfigError, match="sex_other must be 'mean' or 'refuse'"):
        SuvOptions(sex_other="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either a scale factor or a refusal reason"):
        SuvCard(suvbw_scale_factor=None, refused_reason=None, branch="", inputs={})


# --------------------------------------------------------------------------- the card and the image


def test_card_json_has_contract_keys_and_no_phi() -> None:
    ds = make_pet(height="1.70", sex="F")
    _set(ds, "PatientName", "Rossi^Maria")
    _set(ds, "PatientID", "IT01-000123")
    _set(ds, "PatientBirthDate", "19610315")
    _set(ds, "StudyDate", "20250101")
    text = json.dumps(suv_card([ds], SuvOptions(sul=True, suvbsa=True)).to_json_dict(), sort_keys=True)
    data = json.loads(text)
    assert isinstance(data["suvbw_scale_factor"], float) and data["refused_reason"] is None
    for key in (
        "branch",
        "inputs",
        "decay_factor",
        "uptake_s",
        "decay_reference",
        "sul_scale_factor",
        "suvbsa_scale_factor",
        "checks",
    ):
        assert key in data
    for phi in ("Rossi", "000123", "1961", "20250101", "2025-01-01"):
        assert phi not in text


def _text_lines(card: SuvCard) -> dict[str, str]:
    """The text card's lines as label -> rest (labels are separated from values by at least two spaces)."""
    out = {}
    for line in card.to_text().splitlines():
        label, _, rest = line.strip().partition("  ")
        out[label] = rest.strip()
    return out


@pytest.mark.shared
def test_text_card_of_the_real_ge_series(extracted: Path) -> None:
    """`palmares suv` without --json: verdict, branch, inputs with units, factors, checks, aligned (TCIA STS_001)."""
    card = suv_card_for_series(extracted / "FDG_PET" / "image", SuvOptions(sul=True, suvbsa=True))
    text = card.to_text()
    lines = _text_lines(card)
    assert lines["verdict"] == "converted to SUVbw" and "refusal reason" not in lines
    assert lines["branch"] == "units=BQML;dc=START;start=RPSTime+SeriesDate;tref=series_time"
    assert lines["images"] == "267"
    assert (lines["weight"], lines["height"], lines["half life"]) == ("71 kg", "1.63 m", "6588 s")
    assert lines["total dose"] == "388777472 Bq" and lines["radiopharmaceutical start time"] == "10:35:00"
    # factors of suv-reference-cases.csv (mirp-sts-001-fdg-pet), 6 significant digits
    assert lines["SUVbw scale factor"] == "0.000242903 (gives SUVbw in g/ml)"
    assert lines["SUL scale factor"] == "0.000180829 (gives SUL in g/ml)"
    assert lines["SUVbsa scale factor"] == "6.04173e-05 (gives SUVbsa in cm2/ml)"
    assert lines["uptake time"] == "2711 s (45.2 min)"
    assert lines["uptake_time"].split()[:2] == ["pass", "2711"]
    assert lines["vendor_factor_agreement"].startswith("n/a")
    values = [line for line in text.splitlines() if line.startswith("  ")]
    assert len({len(line) - len(line[2:].partition("  ")[2].lstrip()) for line in values}) == 1, "one value column"
    assert "{" not in text and "None" not in text


def test_text_card_of_a_refusal_and_of_an_unavailable_sul() -> None:
    refused = suv_card([make_pet(weight=None)])
    lines = _text_lines(refused)
    assert lines["verdict"] == "REFUSED: no SUV computed"
    assert lines["refusal reason"] == refused.refused_reason
    assert re.fullmatch(r"PatientWeight \(0010,1030\) is absent: .*none is assumed", lines["refusal reason"])
    assert lines["weight"] == "absent" and lines["SUVbw scale factor"] == "none (refused)"
    assert lines["branch"].endswith(";refuse")
    no_height = suv_card([make_pet(sex="F")], SuvOptions(sul=True))
    lines = _text_lines(no_height)
    assert lines["SUL scale factor"] == "not computed: PatientSize absent or not in metres"
    assert lines["SUVbsa scale factor"] == "not requested"
    assert lines["sul"].split()[0] == "n/a"


def _write_series(
    folder: Path, stored: np.ndarray, slopes: list[float], extra: dict[int, tuple[str, object]], **header: str | None
) -> None:
    """Write a small single-frame PET series (int16 stored values, per-slice RescaleSlope) with pydicom."""
    folder.mkdir(parents=True)
    series_uid, study_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    for k, (plane, slope) in enumerate(zip(stored, slopes, strict=True)):
        ds = make_pet(z_mm=3.0 * k, instance=k + 1, **header)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PET_SOP_CLASS
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, for_uid
        ds.PixelSpacing = [2.0, 2.0]
        ds.SliceThickness = "3"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", "0"
        for tag, (vr, value) in extra.items():
            _set(ds, tag, value, vr)
        ds.PixelData = plane.astype("<i2").tobytes()
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)


def test_to_suvbw_cnts_expects_rescaled_counts(tmp_path: Path) -> None:
    """Philips CNTS: SUVbw = (stored value x RescaleSlope) x (7053,1000), on the image read_image returns."""
    rng = np.random.default_rng(6)
    stored = rng.integers(0, 3000, size=(3, 4, 5))
    slopes = [0.5, 1.25, 2.0]
    extra = {0x70530010: ("LO", "Philips PET Private Group"), 0x70531000: ("DS", "0.000731")}
    _write_series(tmp_path / "pet", stored, slopes, extra, units="CNTS", manufacturer="Philips Medical Systems")
    card = suv_card_for_series(tmp_path / "pet")
    assert card.branch == "units=CNTS;philips=7053,1000"
    out = sitk.GetArrayFromImage(to_suvbw(volumes.read_image(tmp_path / "pet"), card))
    expected = stored * np.asarray(slopes)[:, None, None] * 0.000731
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_to_suvbw_bqml_series_on_disk(tmp_path: Path) -> None:
    stored = np.full((2, 3, 3), 1000)
    _write_series(tmp_path / "pet", stored, [2.0, 4.0], {})
    card = suv_card_for_series(tmp_path / "pet")
    out = sitk.GetArrayFromImage(to_suvbw(volumes.read_image(tmp_path / "pet"), card))
    factor = bqml_start(70, 3.7e8, 6586.2, 3600)
    np.testing.assert_allclose(out[:, 0, 0], [2000 * factor, 4000 * factor], rtol=1e-12)


def test_series_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="no such folder"):
        suv_card_for_series(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not DICOM")
    with pytest.raises(DicomReadError, match="no PET"):
        suv_card_for_series(tmp_path / "empty")


def test_image_checks_liver_and_whole_image() -> None:
    card = suv_card([make_pet()])
    suvbw = sitk.GetImageFromArray(np.full((2, 3, 3), 2.2))
    liver = sitk.GetImageFromArray(np.ones((2, 3, 3), dtype=np.uint8))
    assert suv.with_image_check(card, suvbw, liver).checks[-1].outcome == "pass"
    hot = suv.with_image_check(card, suvbw * 5.0)
    assert (hot.checks[-1].name, hot.checks[-1].outcome, hot.checks[-1].value) == (
        "whole_image_suv",
        "warn",
        pytest.approx(11.0),
    )
    with pytest.raises(SuvError, match="resample it first"):
        suv.with_image_check(card, suvbw, liver[:, :, :1])


# --------------------------------------------------------------------------- synthetic cohort, before and after de-identification


def _pet_series(root: Path) -> dict[str, list[Dataset]]:
    """PET headers under ``root`` grouped by SeriesInstanceUID."""
    series: dict[str, list[Dataset]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if ds.get("Modality") == "PT":
            series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    return series


def test_synthetic_cohort_suv_matches_truth_and_survives_deid(tmp_path: Path, test_key: bytes) -> None:
    """synth's truth SUVbw factor is reproduced; NAC series are refused; de-identification changes neither."""
    from palmares_radiomics import deid, synth

    synth.synthesize_cohort(tmp_path / "cohort", patients=2, seed=3, shape=(32, 32, 16))
    with (tmp_path / "cohort" / "truth" / "patients.csv").open(newline="", encoding="utf-8") as fh:
        truth = list(csv.DictReader(fh))
    before = {uid: suv_card(headers) for uid, headers in _pet_series(tmp_path / "cohort" / "raw" / "dicom").items()}
    for patient in truth:
        card = before[patient["pet_series_uid"]]
        assert card.refused_reason is None, card.refused_reason
        assert rel(card.suvbw_scale_factor, float(patient["suvbw_scale_g_per_ml"])) < 1e-6
        assert card.uptake_s == pytest.approx(float(patient["uptake_s"]), abs=1e-3)
        if patient["pet_nac_series_uid"]:
            assert "not attenuation-corrected" in before[patient["pet_nac_series_uid"]].refused_reason
    after: dict[str, SuvCard] = {}
    for site_dir in sorted((tmp_path / "cohort" / "raw" / "dicom").iterdir()):
        out = tmp_path / "deid" / site_dir.name
        deid.deidentify_tree(
            site_dir,
            out,
            deid.DeidContext(key=test_key, site=site_dir.name),
            audit_dir=tmp_path / "audit" / site_dir.name,
        )
        after.update({uid: suv_card(headers) for uid, headers in _pet_series(out).items()})
    assert not set(after) & set(before)  # UIDs were remapped
    summary = sorted((c.suvbw_scale_factor or 0.0, c.uptake_s or 0.0, c.refused) for c in before.values())
    assert sorted((c.suvbw_scale_factor or 0.0, c.uptake_s or 0.0, c.refused) for c in after.values()) == summary


# --------------------------------------------------------------------------- issue 14: plausibility bounds, overrides


def _ge_headers(extracted: Path, **changes: str) -> list[Dataset]:
    """The 267 headers of the real GE series (TCIA STS_001), with top-level keywords changed as given."""
    headers = []
    for path in sorted((extracted / "FDG_PET" / "image").glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword, value in changes.items():
            if keyword in ("RadionuclideTotalDose", "RadiopharmaceuticalStartTime"):
                setattr(ds.RadiopharmaceuticalInformationSequence[0], keyword, value)
            else:
                _set(ds, keyword, value)
        headers.append(ds)
    return headers


STS_FACTOR = 0.0002429029766148455  # SUVbw factor of TCIA STS_001 (suv-reference-cases.csv, mirp-sts-001-fdg-pet)
NO_CLOCK = re.compile(r"\d{1,2}:\d{2}|\b(?:19|20)\d{6}\b|\b\d{6}\.\d")  # a clock time, DICOM DA or TM in a message


def _refusal(card: SuvCard, pattern: str) -> str:
    """The card is refused, to_suvbw raises with its reason, and the reason matches ``pattern``; no times in it."""
    assert card.suvbw_scale_factor is None and card.refused_reason
    with pytest.raises(SuvError, match=pattern):
        to_suvbw(sitk.Image([2, 2, 1], sitk.sitkFloat64), card)
    assert not NO_CLOCK.search(card.refused_reason), card.refused_reason
    if card.refused_reason.startswith("implausible"):  # a plausibility refusal says how to get past it
        assert card.refused_reason.endswith("suv_overrides entry (with its reason) for this patient in the configuration")
    return card.refused_reason


@pytest.mark.shared
def test_weight_typo_on_the_real_ge_series_is_refused(extracted: Path) -> None:
    """71 kg typed 7.1: SUVs ten times too low are refused (weight_range), not converted."""
    card = suv_card(_ge_headers(extracted, PatientWeight="7.1"))
    _refusal(card, r"^implausible SUV input, no SUV computed \(failed check: weight_range\): PatientWeight \(0010,1030\) "
             r"is 7.1 kg, outside the adult range 30-250 kg \(a typo such as 7.44 for 74.4 kg makes every SUV ten times")
    assert [(c.name, c.outcome, c.value) for c in card.checks if c.name == "weight_range"] == [("weight_range", "fail", 7.1)]
    assert [c["name"] for c in card.to_json_dict()["checks"] if c["outcome"] == "fail"] == ["weight_range"]


@pytest.mark.parametrize(
    ("weight", "match"),
    [("7.44", r"is 7.44 kg, outside the adult range 30-250 kg \(a typo"), ("70000", r"is 70000 kg, .*probably grams"),
     ("260", r"is 260 kg, outside the adult range 30-250 kg \(pounds or a typo\?\)")],
)
def test_weight_outside_the_adult_range_is_refused(weight: str, match: str) -> None:
    _refusal(suv_card([make_pet(weight=weight)]), r"failed check: weight_range\): PatientWeight \(0010,1030\) " + match)


def test_weight_range_bounds_are_inclusive_and_pass_is_a_check() -> None:
    for weight in ("30", "250"):
        card = suv_card([make_pet(weight=weight)])
        assert card.refused_reason is None
        assert [(c.name, c.outcome) for c in card.checks if c.name.endswith("_range")] == [
            ("weight_range", "pass"), ("dose_range", "pass")]


@pytest.mark.shared
def test_height_in_centimetres_is_refused_not_a_value_error(extracted: Path) -> None:
    """PatientSize 163 (cm) with SUL asked: refused with the reason (today a bare ValueError downstream)."""
    card = suv_card(_ge_headers(extracted, PatientSize="163"), SuvOptions(sul=True, suvbsa=True))
    reason = _refusal(card, r"failed check: height_range\): PatientSize \(0010,1020\) is 163: that looks like "
                            r"centimetres, but PatientSize is in metres \(DICOM\); plausible adult range 1.2-2.2 m")
    assert "sul" not in {c.name for c in card.checks}, "no SUL n/a: the series is refused, " + reason
    # the GML conversions that need the height refuse the same way
    gml = suv_card([make_pet(units="GML", suv_type="LBMJAMES128", sex="M", height="175")])
    _refusal(gml, r"height_range\): PatientSize \(0010,1020\) is 175: that looks like centimetres")
    # a height outside the range that is not centimetres says metres
    _refusal(suv_card([make_pet(height="2.5", sex="F")], SuvOptions(sul=True)),
             r"PatientSize \(0010,1020\) is 2.5 m, outside the plausible adult range 1.2-2.2 m \(PatientSize is in metres\)")
    # SUVbw only: the height is not read (not on the card), nothing is computed from it
    assert suv_card([make_pet(height="175")]).refused_reason is None


def test_non_numeric_height_is_a_refusal_never_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """'1,75' (decimal comma, as read from a file) is refused with its value, also when pydicom refuses to convert it."""
    raw = make_pet(sex="F")
    tag = pydicom.tag.Tag("PatientSize")
    raw._dict[tag] = pydicom.dataelem.RawDataElement(tag, "DS", 4, b"1,75", 0, False, True)
    card = suv_card([raw], SuvOptions(sul=True))
    _refusal(card, r"^PatientSize \(0010,1020\) '1,75' is not a number$")
    raw = make_pet(sex="F")
    raw._dict[tag] = pydicom.dataelem.RawDataElement(tag, "DS", 4, b"1,75", 0, False, True)
    monkeypatch.setattr(dicom_config.settings, "reading_validation_mode", dicom_config.RAISE)
    card = suv_card([raw], SuvOptions(sul=True))  # pydicom raises ValueError converting the raw DS
    _refusal(card, r"^a header value cannot be read as its DICOM type \(.*1,75")


@pytest.mark.parametrize(
    ("dose", "options", "match"),
    [("10", SuvOptions(), r"is 10, read as 10 MBq \(1e\+07 Bq\) because it is below 10000, outside the plausible FDG "
                          r"activity 20 MBq - 1 GBq \(DICOM stores the dose in Bq"),
     ("10", SuvOptions(dose_mbq_below=None), r"is 10, read as 10 Bq \(1e-05 MBq\), outside the plausible FDG activity"),
     ("370000", SuvOptions(), r"is 370000, read as 370000 Bq \(0.37 MBq\), outside .*MBq or kBq stored as Bq\?"),
     ("2.5e9", SuvOptions(), r"is 2.5e\+09, read as 2.5e\+09 Bq \(2500 MBq\), outside the plausible FDG activity")],
    ids=["10-as-MBq", "10-as-Bq", "kBq-as-Bq", "2.5-GBq"],
)
def test_dose_outside_the_fdg_range_is_refused_naming_value_and_unit(dose: str, options: SuvOptions, match: str) -> None:
    _refusal(suv_card([make_pet(dose=dose)], options),
             r"failed check: dose_range\): RadionuclideTotalDose \(0018,1074\) " + match)


@pytest.mark.shared
def test_dose_in_kbq_on_the_real_ge_series_is_refused(extracted: Path) -> None:
    _refusal(suv_card(_ge_headers(extracted, RadionuclideTotalDose="388777.472")),
             r"dose_range\): RadionuclideTotalDose \(0018,1074\) is 388777, read as 388777 Bq \(0.388777 MBq\)")


@pytest.mark.shared
def test_injection_after_the_series_time_is_refused_not_wrapped_through_midnight(extracted: Path) -> None:
    """RPSTime 11:50 after the series start 11:20:11, same day: was a 23.5 h uptake; now a negative uptake in minutes."""
    card = suv_card(_ge_headers(extracted, RadiopharmaceuticalStartTime="115000.00"))
    reason = _refusal(card, r"^RadiopharmaceuticalStartTime is 29.8 min after the series start on the series date: "
                            r"negative uptake time\. An injection the day before would mean an uptake of 1410 min, "
                            r"above the plausible 180 min, so no midnight wrap is assumed")
    assert "midnight" not in card.branch and card.uptake_s is None, reason


def test_midnight_wrap_only_when_the_wrapped_uptake_is_plausible() -> None:
    wrapped = suv_card([make_pet(series_time="003000", acquisition_time="003000", rps_datetime=None, rps_time="233000")])
    assert "start=RPSTime+SeriesDate-1day(midnight)" in wrapped.branch and wrapped.uptake_s == pytest.approx(3600.0)
    # 04:30 series, 23:30 injection: a 5 h wrap is not assumed (it would pass a 300 min uptake as real)
    late = suv_card([make_pet(series_time="043000", acquisition_time="043000", rps_datetime=None, rps_time="233000")])
    _refusal(late, r"^RadiopharmaceuticalStartTime is 1140.0 min after the series start .* uptake of 300 min, above")


@pytest.mark.parametrize(
    ("rps_datetime", "minutes"), [("20250101070000", "240.0"), ("20250101105000", "10.0"), ("20241231110000", "1440.0")]
)
def test_uptake_outside_20_to_180_min_is_refused_in_minutes(rps_datetime: str, minutes: str) -> None:
    card = suv_card([make_pet(rps_datetime=rps_datetime)])
    _refusal(card, rf"failed check: uptake_time\): the uptake time is {minutes} min, outside the plausible 20-180 min")
    assert [(c.name, c.outcome) for c in card.checks][0] == ("uptake_time", "fail")


def test_uptake_bound_refuses_none_but_only_warns_for_admin() -> None:
    """NONE: the uptake enters the per-image factor (refused); ADMIN: the factor does not use it (warn)."""
    none = [make_pet(decay_correction="NONE", corrected_image="ATTN", actual_frame_duration_ms="180000",
                     rps_datetime="20250101070000")]
    _refusal(suv_card(none), r"uptake_time\): the uptake time is 240.0 min")
    admin = suv_card([make_pet(decay_correction="ADMIN", rps_datetime="20250101070000")])
    assert admin.suvbw_scale_factor == pytest.approx(70000 / 3.7e8, rel=1e-12)
    check = next(c for c in admin.checks if c.name == "uptake_time")
    assert check.outcome == "warn" and "ADMIN: the factor does not use it" in check.detail


def test_every_failed_check_is_listed() -> None:
    card = suv_card([make_pet(weight="7.44", dose="10", height="175", sex="F", rps_datetime="20250101070000")],
                    SuvOptions(sul=True))
    reason = _refusal(card, r"^implausible SUV input, no SUV computed \(failed check: weight_range, dose_range, "
                            r"uptake_time, height_range\): PatientWeight .*; RadionuclideTotalDose .*; the uptake time "
                            r"is 240.0 min.*; PatientSize \(0010,1020\) is 175: that looks like centimetres")
    assert {c.name: c.outcome for c in card.checks if c.outcome == "fail"} == dict.fromkeys(
        ["uptake_time", "weight_range", "dose_range", "height_range"], "fail"), reason


def test_reference_cases_and_dros_stay_inside_the_bounds() -> None:
    """The bounds are not tuned away from the references: every real/IBSI case lies inside them with a margin."""
    assert suv.WEIGHT_RANGE_KG == (30.0, 250.0) and suv.HEIGHT_RANGE_M == (1.2, 2.2)
    assert suv.DOSE_RANGE_BQ == (20e6, 1e9) and suv.UPTAKE_RANGE_S == (1200.0, 10800.0)
    for row in _reference_rows():
        if row["group"] == "calculate-suv-unit":  # arithmetic fixtures (100 Bq doses): bounds off in _row_options
            continue
        assert 30 <= float(row["weight_kg"]) <= 250 and 1.2 <= float(row["height_m"]) <= 2.2, row["case_id"]
        if row["uptake_s"] and row["decay_correction"] != "ADMIN":
            assert 1200 <= float(row["uptake_s"]) <= 10800, row["case_id"]


# ---- item 2: FrameReferenceTime 0


def test_frame_reference_time_zero_is_not_back_computed() -> None:
    """FRT 0 with a 300 s frame: back-computation would put the start 150 s late; the earliest acquisition is used."""
    ds = make_pet(series_time="113000", acquisition_time="110000", frame_reference_time_ms="0",
                  actual_frame_duration_ms="300000")
    card = suv_card([ds])
    assert card.branch.endswith("tref=earliest_acquisition") and "backcompute" not in card.branch
    assert card.uptake_s == pytest.approx(3600.0)
    assert rel(card.suvbw_scale_factor, bqml_start(70, 3.7e8, 6586.2, 3600.0)) < 1e-9
    check = next(c for c in card.checks if c.name == "frame_reference_time")
    assert (check.outcome, check.value) == ("warn", 1.0)
    assert "FrameReferenceTime (0054,1300) is 0 in 1 of 1 images" in check.detail and "QIBA" in check.detail
    assert "FrameReferenceTime 0" in card.decay_reference
    # a series time not after the acquisition needs no back-computation: FRT 0 is not even looked at
    plain = suv_card([make_pet(frame_reference_time_ms="0", actual_frame_duration_ms="300000")])
    assert plain.branch.endswith("tref=series_time") and "frame_reference_time" not in {c.name for c in plain.checks}


@pytest.mark.shared
def test_frame_reference_time_zero_on_the_real_ge_series(extracted: Path) -> None:
    """STS_001's first bed has FrameReferenceTime 0; with a series time after acquisition it is reported, not used."""
    card = suv_card(_ge_headers(extracted, SeriesTime="115000.00"))
    assert card.branch == "units=BQML;dc=START;start=RPSTime+SeriesDate;tref=earliest_acquisition"
    assert card.uptake_s == pytest.approx(2711.0)
    assert rel(card.suvbw_scale_factor, STS_FACTOR) < 1e-9
    check = next(c for c in card.checks if c.name == "frame_reference_time")
    assert check.outcome == "warn" and 0 < check.value < 267


# ---- overrides


def test_override_replaces_a_header_typo_and_is_shown_on_the_card() -> None:
    override = suv.SuvOverride(weight_kg=74.4, reason="header 7.44 kg is a typo; 74.4 kg in the eCRF")
    card = suv_card([make_pet(weight="7.44", height="1.70", sex="F")], SuvOptions(sul=True, override=override))
    assert card.refused_reason is None
    assert rel(card.suvbw_scale_factor, bqml_start(74.4, 3.7e8, 6586.2, 3600)) < 1e-9
    assert card.inputs["weight_kg"] == 74.4  # what the SUL, SUVbsa and PET metrics use
    data = json.loads(json.dumps(card.to_json_dict()))
    assert data["overrides"] == {
        "reason": "header 7.44 kg is a typo; 74.4 kg in the eCRF",
        "given": {"reason": "header 7.44 kg is a typo; 74.4 kg in the eCRF", "weight_kg": 74.4},
        "applied": {"weight_kg": {"header": 7.44, "used": 74.4, "action": "replaced"}},
    }
    check = next(c for c in card.checks if c.name == "weight_range")
    assert check.outcome == "warn" and check.detail.endswith("replaced by override: " + override.reason)
    lines = _text_lines(card)
    assert lines["weight"] == "74.4 kg [overridden: replaced header 7.44 kg; see override below]"
    assert lines["reason"] == override.reason and lines["values used"] == "weight_kg (replaced)"
    assert "{" not in card.to_text()
    assert suv_card([make_pet(weight="7.44")]).to_json_dict()["overrides"] is None


def test_override_equal_to_the_header_lets_an_out_of_range_value_through() -> None:
    """A 28 kg patient (below the bound) confirmed by an override giving the same value; any other value replaces."""
    override = suv.SuvOverride(weight_kg=28.0, reason="cachectic patient, weighed on the day (site note)")
    card = suv_card([make_pet(weight="28")], SuvOptions(override=override))
    assert rel(card.suvbw_scale_factor, bqml_start(28, 3.7e8, 6586.2, 3600)) < 1e-9
    assert card.overrides["applied"]["weight_kg"] == {"header": 28.0, "used": 28.0, "action": "confirmed"}
    check = next(c for c in card.checks if c.name == "weight_range")
    assert check.outcome == "warn" and "confirmed by override, range not applied" in check.detail
    # a replacement must itself be plausible
    wrong = suv_card([make_pet(weight="70")], SuvOptions(override=suv.SuvOverride(weight_kg=7.0, reason="x")))
    _refusal(wrong, r"weight_range\): the suv_overrides weight_kg is 7 kg, outside the adult range 30-250 kg")
    assert wrong.overrides["applied"]["weight_kg"]["action"] == "replaced"


def test_override_of_height_dose_and_uptake() -> None:
    options = SuvOptions(sul=True, suvbsa=True, override=suv.SuvOverride(
        height_m=1.75, dose_bq=3.7e8, uptake_min=60, reason="PatientSize in cm, dose in MBq, injection time wrong"))
    card = suv_card([make_pet(height="175", sex="F", dose="370000000000", rps_datetime="20250101070000")], options)
    assert card.refused_reason is None
    same = suv_card([make_pet(height="1.75", sex="F")], SuvOptions(sul=True, suvbsa=True))
    assert card.suvbw_scale_factor == pytest.approx(same.suvbw_scale_factor, rel=1e-12)
    assert card.sul_scale_factor == pytest.approx(same.sul_scale_factor, rel=1e-12)
    assert card.uptake_s == pytest.approx(3600.0) and card.inputs["height_m"] == 1.75
    applied = card.overrides["applied"]
    assert {k: v["action"] for k, v in applied.items()} == dict.fromkeys(["dose_bq", "uptake_min", "height_m"], "replaced")
    assert applied["uptake_min"]["header"] == pytest.approx(240.0)
    lines = _text_lines(card)
    assert lines["uptake time"] == "3600 s (60.0 min) [overridden: replaced header 240 min; see override below]"
    assert lines["total dose"] == "370000000 Bq [overridden: replaced header 370000000000 Bq; see override below]"
    # an uptake override within 0.5 min of the header's confirms it (header value, to the second, used)
    confirmed = suv_card([make_pet(rps_datetime="20250101065930")],
                         SuvOptions(override=suv.SuvOverride(uptake_min=240, reason="delayed scan, protocol deviation")))
    assert confirmed.uptake_s == pytest.approx(14430.0)
    assert confirmed.overrides["applied"]["uptake_min"]["action"] == "confirmed"
    # injection time absent: the override's uptake places the injection
    absent = suv_card([make_pet(rps_datetime=None)], SuvOptions(override=suv.SuvOverride(uptake_min=60, reason="r")))
    assert absent.uptake_s == pytest.approx(3600.0) and absent.overrides["applied"]["uptake_min"]["header"] is None
    assert rel(absent.suvbw_scale_factor, bqml_start(70, 3.7e8, 6586.2, 3600)) < 1e-9


@pytest.mark.shared
def test_override_on_the_real_ge_series_restores_the_reference_factor(extracted: Path) -> None:
    override = suv.SuvOverride(weight_kg=71.0, reason="7.1 kg is a typo for 71 kg")
    card = suv_card(_ge_headers(extracted, PatientWeight="7.1"), SuvOptions(override=override))
    assert rel(card.suvbw_scale_factor, STS_FACTOR) < 1e-9
    assert card.to_json_dict()["overrides"]["applied"] == {"weight_kg": {"header": 7.1, "used": 71.0, "action": "replaced"}}


def test_override_is_validated() -> None:
    with pytest.raises(ConfigError, match="needs a reason"):
        suv.SuvOverride.from_mapping({"weight_kg": 70})
    with pytest.raises(ConfigError, match="needs a reason"):
        suv.SuvOverride(reason=" ", weight_kg=70)
    with pytest.raises(ConfigError, match=r"unknown SUV override key\(s\) \['weight'\]"):
        suv.SuvOverride.from_mapping({"weight": 70, "reason": "r"})
    with pytest.raises(ConfigError, match="gives none of"):
        suv.SuvOverride.from_mapping({"reason": "r"})
    with pytest.raises(ConfigError, match=r"height_m must be a number in \(0.3, 2.75\] m. Found: 175"):
        suv.SuvOverride.from_mapping({"height_m": 175, "reason": "r"})
    assert suv.SuvOverride.from_mapping({"dose_bq": 3.7e8, "reason": "r"}).to_json_dict() == {"reason": "r", "dose_bq": 3.7e8}
    with pytest.raises(ConfigError, match="override must be a SuvOverride"):
        SuvOptions(override={"weight_kg": 70, "reason": "r"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weight_range_kg must be None or"):
        SuvOptions(weight_range_kg=(250.0, 30.0))
