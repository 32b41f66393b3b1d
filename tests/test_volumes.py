"""Reading image volumes: a DICOM series with missing, duplicated or unevenly spaced slices is refused (issue 14).

Read as one volume, such a series gets a uniform slice spacing that is wrong (slices every 4 mm with one
missing: 5.33 mm), and every feature computed on it silently changes. The synthetic series are written here
with SimpleITK, one 2-D slice per file, at the slice positions each test chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
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
