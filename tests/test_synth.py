"""Tests of the synthetic cohort: determinism, geometry, values against truth, PHI markers, masks, clinical dates."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from skimage.draw import polygon

from palmares_radiomics import synth
from palmares_radiomics.errors import ConfigError
from palmares_radiomics.volumes import read_image

SHAPE = (64, 64, 40)


# ------------------------------------------------------------------------------------------- helpers


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def series_folders(root: Path) -> dict[str, Path]:
    """SeriesInstanceUID -> folder, from the first file of every leaf folder under raw/dicom."""
    out = {}
    for folder in sorted({p.parent for p in (root / "raw" / "dicom").rglob("*") if p.is_file()}):
        first = sorted(p for p in folder.iterdir() if p.is_file())[0]
        out[str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)] = folder
    return out


def first_header(folder: Path) -> pydicom.Dataset:
    """Header (no pixels) of the first file in a series folder."""
    return pydicom.dcmread(sorted(p for p in folder.iterdir() if p.is_file())[0], stop_before_pixels=True)


def lesion_values(image: sitk.Image, lesion: dict[str, str]) -> np.ndarray:
    """Voxel values whose centre lies inside the truth sphere of ``lesion`` (physical LPS mm from the image geometry)."""
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    k, j, i = np.indices(array.shape).reshape(3, -1)
    index = np.stack([i, j, k]).astype(float) * np.array(image.GetSpacing())[:, None]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.array(image.GetOrigin())[:, None] + direction @ index
    centre = np.array([float(lesion[f"center_mm_{a}"]) for a in "xyz"])[:, None]
    inside = np.linalg.norm(points - centre, axis=0) <= float(lesion["radius_mm"])
    return array.reshape(-1)[inside]


def parse_dicom_datetime(date: str, time: str) -> dt.datetime:
    """DICOM DA + TM (whole or fractional seconds) as a datetime."""
    return dt.datetime.strptime(date + time.split(".")[0], "%Y%m%d%H%M%S")


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=[0, 1], ids=["seed0", "seed1"])
def cohort(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> synth.CohortSummary:
    """A 3-patient, 2-site cohort at the default shape (seed 0: a one-segment SEG; seed 1: a four-segment SEG)."""
    return synth.synthesize_cohort(tmp_path_factory.mktemp("cohort") / "out", patients=3, seed=request.param,
                                   shape=SHAPE)


@pytest.fixture(scope="module")
def truth_patients(cohort: synth.CohortSummary) -> list[dict[str, str]]:
    """truth/patients.csv rows."""
    return read_csv(cohort.out_dir / "truth" / "patients.csv")


@pytest.fixture(scope="module")
def truth_lesions(cohort: synth.CohortSummary) -> list[dict[str, str]]:
    """truth/lesions.csv rows."""
    return read_csv(cohort.out_dir / "truth" / "lesions.csv")


@pytest.fixture(scope="module")
def folders(cohort: synth.CohortSummary) -> dict[str, Path]:
    """SeriesInstanceUID -> export folder."""
    return series_folders(cohort.out_dir)


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path, cohort: synth.CohortSummary) -> None:
    again = synth.synthesize_cohort(tmp_path / "again", patients=3, seed=cohort.seed, shape=SHAPE)
    other = synth.synthesize_cohort(tmp_path / "other", patients=3, seed=cohort.seed + 100, shape=SHAPE)
    reference = tree_digest(cohort.out_dir)
    assert tree_digest(again.out_dir) == reference
    assert again.markers == cohort.markers
    other_digest = tree_digest(other.out_dir)
    assert set(other_digest.values()).isdisjoint(reference.values())
    assert set(other.markers).isdisjoint(cohort.markers)


def test_summary_matches_what_was_written(cohort: synth.CohortSummary, truth_lesions: list[dict[str, str]]) -> None:
    files = [p for p in cohort.out_dir.rglob("*") if p.is_file()]
    assert cohort.n_files == len(files)
    assert cohort.n_patients == 3
    assert cohort.sites == ("IT01", "IT02")
    assert cohort.n_lesions == sum(1 for row in truth_lesions if row["modality"] == "ct")
    listed = (cohort.out_dir / "truth" / "markers.txt").read_text().split()
    assert tuple(listed) == cohort.markers
    assert len(set(listed)) == len(listed)
    assert all(len(m) == 9 and m.startswith("ZQX") and m.isalnum() and m.isupper() for m in listed)


def test_refuses_bad_arguments(tmp_path: Path, cohort: synth.CohortSummary) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        synth.synthesize_cohort(cohort.out_dir)
    with pytest.raises(ConfigError, match="patients must be a positive integer"):
        synth.synthesize_cohort(tmp_path / "a", patients=0)
    with pytest.raises(ConfigError, match="shape must be three integers"):
        synth.synthesize_cohort(tmp_path / "b", shape=(8, 8, 8))
    with pytest.raises(ConfigError, match="sites must be an integer"):
        synth.synthesize_cohort(tmp_path / "c", sites=0)


# ------------------------------------------------------------------------------------------- layout and headers


def test_export_layout_is_hospital_like(cohort: synth.CohortSummary, truth_patients: list[dict[str, str]]) -> None:
    raw = cohort.out_dir / "raw"
    files = [p for p in (raw / "dicom").rglob("*") if p.is_file()]
    assert {p.relative_to(raw / "dicom").parts[0] for p in files} == {"IT01", "IT02"}
    assert any(p.suffix == ".dcm" for p in files) and any(p.suffix == "" for p in files)
    assert any("EXPORT_2024" in p.parts for p in files) and any("PACS" in p.parts for p in files)
    formats = {row["segmentation_format"] for row in truth_patients}
    assert formats == {"nifti", "seg", "rtstruct"}
    for row in truth_patients:
        for modality in ("ct", "pet"):
            folder = raw / "segmentations" / row["site"] / row["patient_id"] / modality
            assert [p.name for p in folder.iterdir()] == [synth.SEGMENTATION_FILES[row["segmentation_format"]]]
    clinical = read_csv(raw / "clinical.csv")
    assert list(clinical[0]) == list(synth.CLINICAL_COLUMNS)
    lesions = read_csv(raw / "lesions.csv")
    assert list(lesions[0]) == ["site", "patient_id", "modality", "lesion_id", "label", "roi_name", "organ"]


def test_every_dicom_file_rereads_with_valid_file_meta(cohort: synth.CohortSummary) -> None:
    expected = {"CT": pydicom.uid.CTImageStorage, "PT": pydicom.uid.PositronEmissionTomographyImageStorage,
                "SEG": pydicom.uid.SegmentationStorage, "RTSTRUCT": pydicom.uid.RTStructureSetStorage}
    paths = [p for p in (cohort.out_dir / "raw").rglob("*") if p.is_file() and p.suffix not in (".csv", ".gz")]
    assert len(paths) > 200
    for path in paths:
        ds = pydicom.dcmread(path)  # warnings are errors in this suite
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == expected[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPInstanceUID.startswith("2.25.") and len(ds.SOPInstanceUID) <= 64


def test_every_marker_is_planted_in_raw_headers_or_paths(cohort: synth.CohortSummary) -> None:
    raw = cohort.out_dir / "raw"
    paths = sorted(raw.rglob("*"))
    blob = b"\n".join([p.read_bytes() for p in paths if p.is_file()] + [str(p.relative_to(raw)).encode() for p in paths])
    missing = [m for m in cohort.markers if m.encode() not in blob]
    assert missing == []
    clinical = read_csv(raw / "clinical.csv")
    assert all(any(m in row["patient_id"] for m in cohort.markers) for row in clinical)


def test_identifying_attributes_carry_markers_and_kept_ones_do_not(cohort: synth.CohortSummary,
                                                                   folders: dict[str, Path],
                                                                   truth_patients: list[dict[str, str]]) -> None:
    markers = set(cohort.markers)

    def marked(value: object) -> bool:
        return any(m in str(value) for m in markers)

    for row in truth_patients:
        for uid in (row["ct_series_uid"], row["pet_series_uid"]):
            ds = first_header(folders[uid])
            for keyword in ("PatientName", "PatientID", "PatientAddress", "InstitutionName", "InstitutionAddress",
                            "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "AccessionNumber",
                            "StudyID", "StudyDescription", "SeriesDescription", "DeviceSerialNumber", "StationName",
                            "SoftwareVersions", "ImageComments", "ProtocolName", "NameOfPhysiciansReadingStudy",
                            "InstitutionalDepartmentName", "PatientTelephoneNumbers", "AdditionalPatientHistory"):
                assert marked(ds[keyword].value), keyword
            assert all(marked(i.PatientID) and marked(i.IssuerOfPatientID) for i in ds.OtherPatientIDsSequence)
            request = ds.RequestAttributesSequence[0]
            assert marked(request.RequestedProcedureID) and marked(request.ScheduledProcedureStepID)
            block = ds.private_block(0x0029, "PALMARES SYNTH")
            assert marked(block[0x10].value) and row["patient_name"].split("^")[0] in block[0x10].value
            assert marked(block[0x11].value[0].PatientComments)
            assert ds.BurnedInAnnotation == "NO"
            for keyword in ("PatientSex", "PatientAge", "PatientWeight", "PatientSize", "Modality", "Manufacturer",
                            "ManufacturerModelName", "PixelSpacing", "SliceThickness"):
                assert not marked(ds[keyword].value), keyword
            assert ds.PatientBirthDate == row["birth_date"].replace("-", "")
            assert ds.StudyDate == row["study_date"].replace("-", "")
    manufacturers = {first_header(folders[row["ct_series_uid"]]).Manufacturer for row in truth_patients}
    assert len(manufacturers) == 2  # two sites, two scanner makes


# ------------------------------------------------------------------------------------------- images and values


def test_ct_series_geometry_and_lesion_hu(folders: dict[str, Path], truth_patients: list[dict[str, str]],
                                          truth_lesions: list[dict[str, str]]) -> None:
    for row in truth_patients:
        folder = folders[row["ct_series_uid"]]
        assert len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))) == 1
        image = read_image(folder)
        assert image.GetSize() == SHAPE
        assert image.GetSpacing() == pytest.approx((2.0, 2.0, 2.5))
        assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        assert image.GetOrigin()[:2] == pytest.approx((-63.0, -63.0))
        array = sitk.GetArrayFromImage(image)
        assert array[:, 0, 0].mean() == pytest.approx(-1000.0, abs=5.0)  # air in the corner
        for lesion in (r for r in truth_lesions if r["patient_id"] == row["patient_id"] and r["modality"] == "ct"):
            values = lesion_values(image, lesion)
            assert values.size == int(lesion["n_voxels"])
            assert values.mean() == pytest.approx(float(lesion["ct_hu"]), abs=4.0)
            assert 4.0 < values.std() < 12.0  # the documented noise, SD 8 HU


def test_pet_suvbw_from_headers_matches_truth(folders: dict[str, Path], truth_patients: list[dict[str, str]],
                                              truth_lesions: list[dict[str, str]]) -> None:
    for row in truth_patients:
        folder = folders[row["pet_series_uid"]]
        ds = first_header(folder)
        assert ds.Units == "BQML" and ds.DecayCorrection == "START"
        assert "ATTN" in ds.CorrectedImage and "DECY" in ds.CorrectedImage
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        assert rp.Radiopharmaceutical == "Fludeoxyglucose F^18^"
        assert float(rp.RadionuclideHalfLife) == 6586.2
        assert 250e6 <= float(rp.RadionuclideTotalDose) <= 400e6
        injection = dt.datetime.strptime(rp.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S")
        assert injection.strftime("%H%M%S") == rp.RadiopharmaceuticalStartTime
        series_time = parse_dicom_datetime(ds.SeriesDate, ds.SeriesTime)
        assert 50 <= (series_time - injection).total_seconds() / 60 <= 75
        elapsed = (series_time - injection).total_seconds()
        decayed = float(rp.RadionuclideTotalDose) * 2 ** (-elapsed / float(rp.RadionuclideHalfLife))
        scale = float(ds.PatientWeight) * 1000.0 / decayed
        assert scale == pytest.approx(float(row["suvbw_scale_g_per_ml"]), rel=1e-6)
        image = read_image(folder)
        assert image.GetSpacing() == pytest.approx((4.0, 4.0, 4.0))
        assert image.GetSize() == (32, 32, 25)
        slopes = {pydicom.dcmread(p, stop_before_pixels=True).RescaleSlope for p in folder.iterdir()}
        assert len(slopes) > 1  # per-slice rescale slope, as scanners write it
        for lesion in (r for r in truth_lesions if r["patient_id"] == row["patient_id"] and r["modality"] == "pet"):
            values = lesion_values(image, lesion) * scale
            assert values.size == int(lesion["n_voxels"])
            assert values.mean() == pytest.approx(float(lesion["suvbw"]), rel=0.05)


def test_ct_and_pet_share_the_session_frame_and_the_ct_lies_in_the_pet_field(
        folders: dict[str, Path], truth_patients: list[dict[str, str]]) -> None:
    for row in truth_patients:
        ct, pet = first_header(folders[row["ct_series_uid"]]), first_header(folders[row["pet_series_uid"]])
        assert ct.StudyInstanceUID == pet.StudyInstanceUID == row["study_uid"]
        assert ct.FrameOfReferenceUID == pet.FrameOfReferenceUID == row["frame_of_reference_uid"]
        ct_image, pet_image = read_image(folders[row["ct_series_uid"]]), read_image(folders[row["pet_series_uid"]])
        for image in (ct_image, pet_image):
            low = image.TransformContinuousIndexToPhysicalPoint([-0.5] * 3)
            high = image.TransformContinuousIndexToPhysicalPoint([s - 0.5 for s in image.GetSize()])
            assert low == pytest.approx((-64.0, -64.0, low[2]))
            assert high[:2] == pytest.approx((64.0, 64.0))
        ct_z = ct_image.TransformContinuousIndexToPhysicalPoint([0, 0, -0.5])[2]
        pet_z = pet_image.TransformContinuousIndexToPhysicalPoint([0, 0, -0.5])[2]
        assert ct_z == pytest.approx(pet_z)


def test_baseline_old_ct_and_nac_pet_make_selection_real(folders: dict[str, Path],
                                                        truth_patients: list[dict[str, str]]) -> None:
    with_extra = [row for row in truth_patients if row["old_ct_series_uid"]]
    assert 0 < len(with_extra) < len(truth_patients)
    for row in truth_patients:
        start = dt.date.fromisoformat(row["cdk46i_start_date"])
        for uid in (row["ct_series_uid"], row["pet_series_uid"]):
            ds = first_header(folders[uid])
            assert 5 <= (start - dt.datetime.strptime(ds.SeriesDate, "%Y%m%d").date()).days <= 40
    for row in with_extra:
        start = dt.date.fromisoformat(row["cdk46i_start_date"])
        old = first_header(folders[row["old_ct_series_uid"]])
        assert old.Modality == "CT" and old.StudyInstanceUID == row["old_ct_study_uid"] != row["study_uid"]
        assert 150 <= (start - dt.datetime.strptime(old.StudyDate, "%Y%m%d").date()).days <= 400
        nac = first_header(folders[row["pet_nac_series_uid"]])
        assert "ATTN" not in nac.CorrectedImage and "NAC" in nac.SeriesDescription
        assert nac.StudyInstanceUID == row["study_uid"]
        old_hu = sitk.GetArrayFromImage(read_image(folders[row["old_ct_series_uid"]]))
        assert old_hu.max() < 900.0  # no bone lesion (1000 HU) yet on the old CT


# ------------------------------------------------------------------------------------------- segmentations


def _patient_with(truth_patients: list[dict[str, str]], fmt: str) -> dict[str, str]:
    return next(row for row in truth_patients if row["segmentation_format"] == fmt)


def _lesions_of(truth_lesions: list[dict[str, str]], patient_id: str, modality: str) -> list[dict[str, str]]:
    return [r for r in truth_lesions if r["patient_id"] == patient_id and r["modality"] == modality]


def test_nifti_masks_align_with_the_images(cohort: synth.CohortSummary, folders: dict[str, Path],
                                           truth_patients: list[dict[str, str]],
                                           truth_lesions: list[dict[str, str]]) -> None:
    row = _patient_with(truth_patients, "nifti")
    for modality in ("ct", "pet"):
        path = cohort.out_dir / "raw" / "segmentations" / row["site"] / row["patient_id"] / modality / "mask.nii.gz"
        mask = nib.load(path)
        data = np.asarray(mask.dataobj)
        assert data.dtype == np.int16
        image = read_image(folders[row[f"{modality}_series_uid"]])
        assert data.shape == image.GetSize()
        as_sitk = sitk.ReadImage(str(path))  # ITK converts the NIfTI RAS affine back to LPS
        assert as_sitk.GetOrigin() == pytest.approx(image.GetOrigin(), abs=1e-4)
        assert as_sitk.GetSpacing() == pytest.approx(image.GetSpacing())
        assert as_sitk.GetDirection() == pytest.approx(image.GetDirection(), abs=1e-6)
        lesions = _lesions_of(truth_lesions, row["patient_id"], modality)
        assert sorted(int(v) for v in np.unique(data) if v) == sorted(int(r["label"]) for r in lesions)
        for lesion in lesions:
            voxels = np.argwhere(data == int(lesion["label"]))
            assert len(voxels) == int(lesion["n_voxels"])
            ras = nib.affines.apply_affine(mask.affine, voxels.mean(axis=0))
            lps = (-ras[0], -ras[1], ras[2])
            sitk_lps = image.TransformContinuousIndexToPhysicalPoint(voxels.mean(axis=0).tolist())
            assert lps == pytest.approx(sitk_lps, abs=1e-6)
            assert lps == pytest.approx([float(lesion[f"center_mm_{a}"]) for a in "xyz"], abs=2.5)


def test_dicom_seg_segments_match_truth(cohort: synth.CohortSummary, truth_patients: list[dict[str, str]],
                                        truth_lesions: list[dict[str, str]]) -> None:
    row = _patient_with(truth_patients, "seg")
    markers = set(cohort.markers)
    for modality in ("ct", "pet"):
        path = cohort.out_dir / "raw" / "segmentations" / row["site"] / row["patient_id"] / modality / "seg.dcm"
        seg = hd.seg.segread(path)
        lesions = _lesions_of(truth_lesions, row["patient_id"], modality)
        assert seg.number_of_segments == len(lesions)
        assert [s.SegmentLabel for s in seg.SegmentSequence] == [r["roi_name"] for r in lesions]
        assert seg.SegmentationType == "BINARY"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == row[f"{modality}_series_uid"]
        assert seg.FrameOfReferenceUID == row["frame_of_reference_uid"]
        frames = seg.pixel_array.reshape(seg.NumberOfFrames, seg.Rows, seg.Columns)
        shared = seg.SharedFunctionalGroupsSequence[0]
        numbers = [int((f if "SegmentIdentificationSequence" in f else shared)
                       .SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                   for f in seg.PerFrameFunctionalGroupsSequence]  # one segment: highdicom shares the item
        for lesion in lesions:
            count = sum(int(frames[i].sum()) for i, n in enumerate(numbers) if n == int(lesion["label"]))
            assert count == int(lesion["n_voxels"])
        assert any(m in str(seg.ContentCreatorName) for m in markers)
        assert str(seg.PatientName) == row["patient_name"]


def test_rtstruct_contours_match_truth(cohort: synth.CohortSummary, folders: dict[str, Path],
                                       truth_patients: list[dict[str, str]],
                                       truth_lesions: list[dict[str, str]]) -> None:
    row = _patient_with(truth_patients, "rtstruct")
    markers = set(cohort.markers)
    for modality in ("ct", "pet"):
        path = cohort.out_dir / "raw" / "segmentations" / row["site"] / row["patient_id"] / modality / "rtstruct.dcm"
        ds = pydicom.dcmread(path)
        lesions = _lesions_of(truth_lesions, row["patient_id"], modality)
        # issue 13: the structures that are not lesions come first, numbered 1-9 out of order; lesions follow,
        # their lesion-table label being their ROI Number (from 10), never their position
        n_other = len(synth.RTSTRUCT_OTHER_ROIS)
        rois = list(ds.StructureSetROISequence)
        assert [r.ROIName for r in rois[n_other:]] == [r["roi_name"] for r in lesions]
        assert [int(r.ROINumber) for r in rois[n_other:]] == [int(r["label"]) for r in lesions]
        assert [int(r["label"]) for r in lesions] == list(range(synth.RTSTRUCT_FIRST_LESION_NUMBER,
                                                               synth.RTSTRUCT_FIRST_LESION_NUMBER + len(lesions)))
        assert [(r.ROIName, int(r.ROINumber)) for r in rois[:n_other - 1]] == [
            (name, number) for name, number, _kind in synth.RTSTRUCT_OTHER_ROIS[:-1]]
        assert all(int(r.ROINumber) != position for position, r in enumerate(rois, start=1))
        assert any(m in str(rois[n_other - 1].ROIName) for m in markers)  # the reader's note: free text with PHI
        assert not any(m in str(r.ROIName) for r in rois[:n_other - 1] + rois[n_other:] for m in markers)
        contours = {int(c.ReferencedROINumber): c for c in ds.ROIContourSequence}
        assert set(contours) == {int(r.ROINumber) for r in rois} - {synth.RTSTRUCT_OTHER_ROIS[-1][1]}
        frame = ds.ReferencedFrameOfReferenceSequence[0]
        assert frame.FrameOfReferenceUID == row["frame_of_reference_uid"]
        series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert series.SeriesInstanceUID == row[f"{modality}_series_uid"]
        image = read_image(folders[row[f"{modality}_series_uid"]])
        slice_by_uid = {}
        for p in folders[row[f"{modality}_series_uid"]].iterdir():
            header = pydicom.dcmread(p, stop_before_pixels=True)
            slice_by_uid[header.SOPInstanceUID] = int(header.InstanceNumber) - 1
        assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(slice_by_uid)
        spacing, origin = image.GetSpacing(), image.GetOrigin()
        for lesion in lesions:
            roi = contours[int(lesion["label"])]
            filled = 0
            for contour in roi.ContourSequence:
                assert contour.ContourGeometricType == "CLOSED_PLANAR"
                points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
                assert len(points) == int(contour.NumberOfContourPoints)
                k = slice_by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
                assert points[:, 2] == pytest.approx(origin[2] + k * spacing[2])
                cols = (points[:, 0] - origin[0]) / spacing[0]
                rows = (points[:, 1] - origin[1]) / spacing[1]
                rr, _ = polygon(rows, cols)
                filled += len(rr)
            assert filled == int(lesion["n_voxels"])
        assert any(m in str(ds.ContentCreatorName) for m in markers)
        assert str(ds.PatientName) == row["patient_name"]


# ------------------------------------------------------------------------------------------- clinical


def test_clinical_dates_are_consistent_and_outcomes_mixed(cohort: synth.CohortSummary,
                                                          truth_patients: list[dict[str, str]]) -> None:
    def day(value: str) -> dt.date | None:
        return dt.date.fromisoformat(value) if value else None

    clinical = {row["patient_id"]: row for row in read_csv(cohort.out_dir / "raw" / "clinical.csv")}
    assert set(clinical) == {row["patient_id"] for row in truth_patients}
    patterns = set()
    for truth in truth_patients:
        row = clinical[truth["patient_id"]]
        birth, diagnosis, start = day(row["birth_date"]), day(row["advanced_diagnosis_date"]), day(row["cdk46i_start_date"])
        progression, death, last = day(row["progression_date"]), day(row["death_date"]), day(row["last_followup_date"])
        assert birth < diagnosis <= start <= last
        if progression:
            assert start < progression <= last
        if death:
            assert death >= (progression or start) and last >= death
        assert row["cdk46i_drug"] in ("palbociclib", "ribociclib", "abemaciclib")
        assert row["ecog"] in ("0", "1", "2", "3", "4")
        os_end = death or last
        pfs_end = min(d for d in (progression, death) if d) if (progression or death) else last
        assert int(truth["os_days"]) == (os_end - start).days and int(truth["os_event"]) == int(death is not None)
        assert int(truth["pfs_days"]) == (pfs_end - start).days
        assert int(truth["pfs_event"]) == int(bool(progression or death))
        patterns.add((progression is not None, death is not None))
    assert patterns == {(True, True), (True, False), (False, False)}
