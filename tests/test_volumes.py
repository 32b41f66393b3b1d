"""Reading image volumes: a DICOM series with missing, duplicated or unevenly spaced slices is refused (issue 14).

Read as one volume, such a series gets a uniform slice spacing that is wrong (slices every 4 mm with one
missing: 5.33 mm), and every feature computed on it silently changes. The synthetic series are written here
with SimpleITK, one 2-D slice per file, at the slice positions each test chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import shared_path
from palmares_radiomics.errors import DicomReadError, PalmaresError, SliceGeometryError
from palmares_radiomics.volumes import check_slice_positions, read_image

AXIAL = "1\\0\\0\\0\\1\\0"


def write_series(folder: Path, z_mm: Sequence[float], orientation: str = AXIAL) -> Path:
    """A CT series of 8 x 6-voxel slices (0.9 mm pixels) at the positions ``z_mm`` along z; slice k holds 100 k HU."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, z in enumerate(z_mm):
        slice_ = sitk.GetImageFromArray(np.full((1, 6, 8), 100 * k, np.int16))
        slice_.SetSpacing((0.9, 0.9, 1.0))
        for tag, value in {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
                           "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
                           "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.3.{k + 1}", "0020|0013": str(k + 1),
                           "0020|0032": f"-3.6\\-2.7\\{z}", "0020|0037": orientation, "0018|0050": "4",
                           "0028|1052": "0", "0028|1053": "1"}.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)
    return folder


def test_an_evenly_spaced_series_reads_with_its_spacing(tmp_path: Path) -> None:
    image = read_image(write_series(tmp_path / "ok", [-20.0, -16.0, -12.0, -8.0, -4.0]))
    assert image.GetSize() == (8, 6, 5)
    assert image.GetSpacing() == pytest.approx((0.9, 0.9, 4.0))
    assert image.GetOrigin() == pytest.approx((-3.6, -2.7, -20.0))


def test_a_folder_of_two_series_is_refused_and_a_stray_file_is_ignored(tmp_path: Path) -> None:
    """volumes.series_files reads the headers once when the folder's first series holds every file; two series
    in one folder are still refused, and a file that is not DICOM beside one series still leaves that series."""
    from palmares_radiomics.volumes import series_files

    folder = write_series(tmp_path / "one", [0.0, 4.0, 8.0])
    assert [Path(f).name for f in series_files(folder)] == ["slice000.dcm", "slice001.dcm", "slice002.dcm"]
    (folder / "notes.txt").write_text("not DICOM")
    assert len(series_files(folder)) == 3 and read_image(folder).GetSize() == (8, 6, 3)
    other = write_series(tmp_path / "other", [0.0, 4.0])
    for k, path in enumerate(sorted(other.iterdir())):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.9.9"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.9.{k + 1}"
        ds.save_as(folder / f"z_other{k}.dcm")
    with pytest.raises(DicomReadError, match="2 DICOM series in one folder"):
        series_files(folder)


def test_a_series_with_a_missing_slice_is_refused_not_read_with_a_wrong_spacing(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "gap", [0.0, 4.0, 8.0, 16.0, 20.0])  # the slice at z = 12 mm is missing
    sitk.ProcessObject.GlobalWarningDisplayOff()  # ITK's own warning about it goes to stderr
    try:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        assert reader.Execute().GetSpacing()[2] == pytest.approx(5.0)  # what was read before: 20 mm / 4 gaps
    finally:
        sitk.ProcessObject.GlobalWarningDisplayOn()
    with pytest.raises(SliceGeometryError, match=r"1 slice\(s\) missing between z = 8 mm and z = 16 mm \(expected "
                                                 r"spacing 4 mm, found a gap of 8 mm\); re-export "
                                                 r"the complete series from PACS") as refused:
        read_image(folder)
    assert str(folder) not in str(refused.value) and "slice003" not in str(refused.value)  # no file or folder names
    assert isinstance(refused.value, DicomReadError) and isinstance(refused.value, PalmaresError)


def test_two_missing_slices_and_jitter_within_the_tolerance(tmp_path: Path) -> None:
    # 0.02 mm of jitter (under 2 % of 4 mm) is accepted; a gap of 12 mm is two missing slices
    assert read_image(write_series(tmp_path / "jitter", [0.0, 4.02, 8.0, 11.99, 16.0])).GetSize()[2] == 5
    with pytest.raises(SliceGeometryError, match=r"2 slice\(s\) missing between z = 8 mm and z = 20 mm .*"
                                                 r"found a gap of 12 mm"):
        read_image(write_series(tmp_path / "two", [0.0, 4.0, 8.0, 20.0, 24.0, 28.0]))


def test_duplicated_slice_positions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SliceGeometryError, match=r"duplicated slice position: two slices at z = 4 mm and z = 4 mm "
                                                 r"\(expected spacing 4 mm, found a gap of 0 mm"):
        read_image(write_series(tmp_path / "dup", [0.0, 4.0, 4.0, 8.0, 12.0]))


def test_non_uniform_spacing_beyond_the_tolerance_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SliceGeometryError, match=r"non-uniform slice spacing between z = 8 mm and z = 10\.5 mm "
                                                 r"\(expected spacing 4 mm, found a gap of 2\.5 mm\): slices lie up to 0\.6 mm from an evenly spaced volume, "
                                                 r"tolerance 0\.08 mm"):
        read_image(write_series(tmp_path / "uneven", [0.0, 4.0, 8.0, 10.5, 14.5, 18.5]))


def test_slice_check_works_along_the_slice_normal_and_needs_positions() -> None:
    # sagittal slices (normal along x), 2 mm apart, one missing: positions are projected on the normal
    sagittal = "0\\1\\0\\0\\0\\-1"
    positions = [f"{x}\\5\\7" for x in (10.0, 12.0, 14.0, 18.0)]
    with pytest.raises(SliceGeometryError, match=r"missing between z = 14 mm and z = 18 mm \(expected spacing 2 mm"):
        check_slice_positions(positions, [sagittal] * 4)
    check_slice_positions([f"{x}\\5\\7" for x in (10.0, 12.0, 14.0, 16.0)], [sagittal] * 4)
    # real-scanner jitter (as the GE PET series in ../shared/data/suv: one short gap made up by a long one), 0.04 mm
    check_slice_positions([f"0\\0\\{z}" for z in (0.0, 3.27, 6.54, 9.77, 13.08, 16.35)], [AXIAL] * 6)
    with pytest.raises(SliceGeometryError, match=r"1 of 3 slices have no valid ImagePositionPatient"):
        check_slice_positions(["0\\0\\0", None, "0\\0\\2"], [AXIAL] * 3)
    with pytest.raises(SliceGeometryError, match=r"different orientations \(ImageOrientationPatient differs by up to 0\.1"):
        check_slice_positions(["0\\0\\0", "0\\0\\2"], [AXIAL, "1\\0\\0\\0\\0.9\\0.1"])


def test_the_ibsi_ct_phantom_series_still_reads() -> None:
    image = read_image(shared_path("ibsi", "ibsi_1_ct_radiomics_phantom", "dicom", "image"))
    assert image.GetSize() == (204, 201, 60)
    assert image.GetSpacing() == pytest.approx((0.977, 0.977, 3.0), abs=1e-3)
    assert image.GetOrigin()[2] == pytest.approx(-100.4, abs=1e-3)


# --------------------------------------------------------------------------------------------- multi-frame CT
# A Legacy Converted Enhanced CT (or an Enhanced CT) holds a whole series in one file, its geometry and rescale in
# per-frame functional groups. GDCM read it as a 4-D image without per-frame geometry ("too many values to
# unpack" downstream); it must read exactly as the single-frame series it was converted from.

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def ct_datasets(positions_mm: Sequence[float], orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                intercepts: Sequence[float] | None = None) -> list:
    """Single-frame CT datasets (6 rows x 8 columns, pixel spacing 0.9 x 0.8 mm) at ``positions_mm`` along the slice
    normal, complete enough for highdicom's legacy conversion; slice k stores 3 i + 100 k (i: pixel index)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k, along in enumerate(positions_mm):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Ct", "P1", "19600101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20240101", "120000", "20240101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID, ds.PositionReferenceIndicator = "A1", "", "1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = "CT", 2, k + 1, 1
        ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions, ds.DeviceSerialNumber = "ACME", "X", "1", "1"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [round(float(v), 4) for v in np.array([-3.6, -2.7, 5.0]) + along * normal]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing, ds.SliceThickness, ds.KVP = [0.9, 0.8], 4.0, 120
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 6, 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleType = 1, "HU"
        ds.RescaleIntercept = -1024 if intercepts is None else intercepts[k]
        ds.PixelData = (np.arange(48, dtype=np.int16).reshape(6, 8) * 3 + 100 * k).tobytes()
        out.append(ds)
    return out


def write_datasets(folder: Path, datasets: Sequence) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(datasets):
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return folder


def write_multiframe(folder: Path, datasets: Sequence, sop_class: str | None = None, name: str = "multiframe.dcm",
                     series_uid: str | None = None, edit=None) -> Path:
    """One Legacy Converted Enhanced CT file of ``datasets`` (highdicom), optionally re-labelled as ``sop_class``."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        list(datasets), series_instance_uid=series_uid or generate_uid(), series_number=3,
        sop_instance_uid=generate_uid(), instance_number=1)
    if sop_class:
        converted.SOPClassUID = converted.file_meta.MediaStorageSOPClassUID = sop_class
    if edit:
        edit(converted)
    folder.mkdir(parents=True, exist_ok=True)
    converted.save_as(folder / name)
    return folder


def assert_same_volume(a: sitk.Image, b: sitk.Image) -> None:
    assert b.GetDimension() == 3 and a.GetSize() == b.GetSize()
    assert a.GetSpacing() == pytest.approx(b.GetSpacing(), abs=1e-6)
    assert a.GetOrigin() == pytest.approx(b.GetOrigin(), abs=1e-6)
    assert a.GetDirection() == pytest.approx(b.GetDirection(), abs=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@pytest.mark.parametrize(("orientation", "intercepts"), [
    ((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), None),                           # axial, one shared rescale
    (SAGITTAL, None),                                                  # sagittal: frames ordered along the normal
    ((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), [-1024, -1000, -1024, -1010, -1024]),  # a rescale per frame
], ids=["axial", "sagittal", "per-frame-rescale"])
def test_a_legacy_converted_multiframe_ct_reads_as_its_single_frame_series(tmp_path: Path, orientation,
                                                                          intercepts) -> None:
    slices = ct_datasets([-20.0, -16.0, -12.0, -8.0, -4.0], orientation, intercepts)
    single = read_image(write_datasets(tmp_path / "single", slices))
    folder = write_multiframe(tmp_path / "multi", slices)
    assert pydicom_header(folder).SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.2"
    assert pydicom_header(folder).NumberOfFrames == 5
    multi = read_image(folder)
    assert_same_volume(single, multi)
    assert multi.GetSize() == (8, 6, 5) and multi.GetSpacing() == pytest.approx((0.8, 0.9, 4.0))
    if intercepts is not None:  # frame k: 3 i + 100 k + intercept k (HU)
        assert sitk.GetArrayViewFromImage(multi)[:, 0, 0].tolist() == [-1024, -900, -824, -710, -624]
    assert read_image(folder, sitk.sitkInt16).GetPixelID() == sitk.sitkInt16


def test_an_enhanced_ct_multiframe_reads_too(tmp_path: Path) -> None:
    slices = ct_datasets([0.0, 2.5, 5.0])
    single = read_image(write_datasets(tmp_path / "single", slices))
    assert_same_volume(single, read_image(write_multiframe(tmp_path / "multi", slices, "1.2.840.10008.5.1.4.1.1.2.1")))


def test_a_multiframe_ct_gets_the_same_slice_gap_checks(tmp_path: Path) -> None:
    slices = ct_datasets([0.0, 4.0, 8.0, 16.0, 20.0])  # slices at z = 5 + these: the one at z = 17 mm is missing
    with pytest.raises(SliceGeometryError, match=r"1 slice\(s\) missing between z = 13 mm and z = 21 mm \(expected "
                                                 r"spacing 4 mm, found a gap of 8 mm\)"):
        read_image(write_multiframe(tmp_path / "gap", slices))
    with pytest.raises(SliceGeometryError, match=r"duplicated slice position"):
        read_image(write_multiframe(tmp_path / "dup", ct_datasets([0.0, 4.0, 4.0, 8.0])))


def test_an_unsupported_multiframe_is_refused_with_a_reason(tmp_path: Path) -> None:
    slices = ct_datasets([0.0, 4.0, 8.0])
    with pytest.raises(DicomReadError, match=r"a multi-frame Legacy Converted Enhanced PET Image Storage file cannot "
                                             r"be read as a volume .*re-export the series from PACS as single-frame"):
        read_image(write_multiframe(tmp_path / "pet", slices, "1.2.840.10008.5.1.4.1.1.128.1"))

    def drop_position(ds) -> None:
        del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence

    with pytest.raises(DicomReadError, match=r"frame 2 of 3 of the multi-frame file has no Plane Position Sequence"):
        read_image(write_multiframe(tmp_path / "noposition", slices, edit=drop_position))

    def drop_rescale(ds) -> None:
        del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence

    with pytest.raises(DicomReadError, match=r"frame 1 of 3 of the multi-frame CT has no RescaleSlope"):
        read_image(write_multiframe(tmp_path / "norescale", slices, edit=drop_rescale))

    def cut_pixels(ds) -> None:
        ds.PixelData = ds.PixelData[:-10]

    with pytest.raises(DicomReadError, match=r"the pixel data of the multi-frame file cannot be decoded"):
        read_image(write_multiframe(tmp_path / "cut", slices, edit=cut_pixels))


def test_a_series_split_over_two_multiframe_files_is_refused(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    slices, series = ct_datasets([0.0, 4.0, 8.0, 12.0]), generate_uid()
    write_multiframe(tmp_path / "two", slices[:2], name="a.dcm", series_uid=series)
    write_multiframe(tmp_path / "two", slices[2:], name="b.dcm", series_uid=series)
    with pytest.raises(DicomReadError, match=r"of the 2 files of the series are multi-frame"):
        read_image(tmp_path / "two")


def pydicom_header(folder: Path):
    import pydicom

    (file,) = sorted(folder.glob("*.dcm"))
    return pydicom.dcmread(file, stop_before_pixels=True)


# --- the stage volumes the image stage writes and the features stage reads (issue 18) ------------------------

def _volume(values: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-100.0, -120.0, 40.0))
    return image


@pytest.mark.parametrize(("values", "int16_when_lossless", "stored"), [
    (np.array([[[-1024.0, 0.0], [3071.0, 17.0]]], np.float32), True, sitk.sitkInt16),        # CT in whole HU
    (np.array([[[-1024.0, 0.5], [3071.0, 17.0]]], np.float32), True, sitk.sitkFloat32),      # fractional rescale
    (np.array([[[-40000.0, 0.0], [1.0, 2.0]]], np.float32), True, sitk.sitkFloat32),         # beyond int16
    (np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float64), False, sitk.sitkFloat32),             # PET: always Float32
])
def test_a_stage_volume_round_trips_exactly(tmp_path: Path, values: np.ndarray, int16_when_lossless: bool,
                                            stored: int) -> None:
    from palmares_radiomics.volumes import read_volume, write_volume

    image = _volume(values)
    path = tmp_path / "ct.nii"
    write_volume(image, path, int16_when_lossless=int16_when_lossless)
    assert sitk.ReadImage(str(path)).GetPixelID() == stored
    assert path.read_bytes()[:4] != b"\x1f\x8b"  # uncompressed
    back = read_volume(path)
    assert back.GetPixelID() == (sitk.sitkInt16 if stored == sitk.sitkInt16 else sitk.sitkFloat64)
    # NIfTI keeps the geometry in float32, as the compressed files did
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-7)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), rtol=1e-7)
    expected = values.astype(np.float32).astype(np.float64)  # the image stage always stored Float32 values
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back).astype(np.float64), expected)


def test_a_stage_volume_is_never_gzipped(tmp_path: Path) -> None:
    from palmares_radiomics.volumes import write_volume

    with pytest.raises(ValueError, match="uncompressed"):
        write_volume(_volume(np.zeros((1, 2, 2), np.float32)), tmp_path / "ct.nii.gz")
    assert not list(tmp_path.iterdir())


def _same_image(a: sitk.Image, b: sitk.Image) -> None:
    """Pixel type, geometry and every voxel equal, bit for bit."""
    assert (a.GetPixelID(), a.GetSize(), a.GetOrigin(), a.GetSpacing(), a.GetDirection()) == (
        b.GetPixelID(), b.GetSize(), b.GetOrigin(), b.GetSpacing(), b.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@pytest.mark.parametrize("int16_when_lossless", [True, False])
def test_a_volume_kept_after_writing_is_what_reading_the_file_gives(tmp_path: Path, int16_when_lossless: bool) -> None:
    """The per-patient job hands what a stage wrote (or read) to the next stage (volumes.keep_volume, take_volume)
    instead of reading it back: what that stage takes must be what reading the file gives, bit for bit, geometry
    included (NIfTI stores it in single precision: an oblique direction and an origin with many digits do not
    survive exactly). It is taken once (then read from disk), and a file written again since is read from disk."""
    from palmares_radiomics.volumes import forget_volumes, keep_volume, read_volume, take_volume

    rng = np.random.default_rng(3)
    image = _volume(rng.integers(-1024, 3000, (5, 6, 7)).astype(np.float32))
    image.SetOrigin((-100.123456789, -120.987654321, 40.000000123))
    image.SetSpacing((0.7654321987, 0.7654321987, 2.0000001))
    angle = 0.3
    image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    label_map = sitk.Cast(image > 1000, sitk.sitkUInt16)
    path, mask = tmp_path / "ct.nii", tmp_path / "ct_mask.nii.gz"
    origin = image.GetOrigin()
    try:
        written = sitk.Cast(image, sitk.sitkInt16 if int16_when_lossless else sitk.sitkFloat32)
        sitk.WriteImage(written, str(path))
        keep_volume(path, written)
        sitk.WriteImage(label_map, str(mask), useCompression=True)
        keep_volume(mask, label_map)
        read = sitk.ReadImage(str(path))
        assert origin != read.GetOrigin()  # the file's geometry is not the image's
        taken = take_volume(path)
        _same_image(taken, read)
        _same_image(take_volume(mask), sitk.ReadImage(str(mask)))
        taken[0, 0, 0] = 5  # the taker's to change: the next take reads the file
        _same_image(take_volume(path), read)
        keep_volume(path, sitk.ReadImage(str(path)))
        _same_image(read_volume(path), sitk.Cast(read, read_volume(path).GetPixelID()))
        keep_volume(path, sitk.ReadImage(str(path)))
        other = _volume(np.full((5, 6, 7), 9.0, np.float32))
        sitk.WriteImage(other, str(tmp_path / "other.nii"))
        (tmp_path / "other.nii").replace(path)  # the file replaced since it was kept
        _same_image(take_volume(path), sitk.ReadImage(str(path)))
        assert sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).max() == 9.0
    finally:
        forget_volumes()
