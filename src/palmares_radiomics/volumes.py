"""Image volumes: read a DICOM series or a NIfTI/NRRD file into a SimpleITK image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from .errors import DicomReadError, SliceGeometryError, SuvError

if TYPE_CHECKING:
    from .suv import SuvCard, SuvOptions

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

#: A slice may lie at most this far from where a volume of evenly spaced slices puts it (from the first to the last
#: slice): the larger of 0.01 mm and 2 % of the slice spacing. Scanners and DICOM writers leave a few hundredths of a
#: mm of jitter (the GE PET series in ../shared/data/suv: one gap of 3.19 mm among 3.27 mm ones, every slice within
#: 0.04 mm, 1.2 %, of the even grid). A missing slice moves slices by a third of the spacing or more (4 -> 5.33 mm):
#: a larger tolerance would let such a series be read as a uniform volume with a silently wrong slice spacing.
SLICE_POSITION_TOLERANCE_MM = 0.01
SLICE_POSITION_TOLERANCE_FRACTION = 0.02
#: Largest difference between two slices' ImageOrientationPatient direction cosines (rounding of decimal strings).
ORIENTATION_TOLERANCE = 1e-4


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names a single-file volume format (NIfTI, NRRD, MetaImage)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def read_image(path: str | os.PathLike[str], pixel_type: int = sitk.sitkFloat64) -> sitk.Image:
    """Read a DICOM series folder, or a NIfTI/NRRD/MetaImage file, as a 3-D image of ``pixel_type``.

    DICOM slices are ordered by position (GDCM) and each slice's RescaleSlope/Intercept is applied,
    so CT comes out in HU and PET in the stored activity units. A folder with several series is
    refused: the caller must say which one. So is a series whose slices are missing, duplicated or
    unevenly spaced (:func:`check_slice_positions`): read as one volume, its slice spacing would be wrong.
    """
    path = Path(path)
    if path.is_dir():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise DicomReadError(f"{path}: no DICOM image series found in this folder")
        if len(series) > 1:
            raise DicomReadError(f"{path}: {len(series)} DICOM series in one folder; put one series per folder")
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.SetOutputPixelType(pixel_type)
        reader.MetaDataDictionaryArrayUpdateOn()  # per-slice headers, for the slice-position check
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise DicomReadError(f"{path}: the DICOM series could not be read ({str(exc).strip().splitlines()[-1]})") from exc
        if len(files) > 1:
            check_slice_positions([_slice_tag(reader, i, "0020|0032") for i in range(len(files))],
                                  [_slice_tag(reader, i, "0020|0037") for i in range(len(files))])
        return image
    if not path.is_file():
        raise DicomReadError(f"{path}: no such file or folder")
    try:
        return sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise DicomReadError(f"{path}: not a readable image file ({str(exc).strip().splitlines()[-1]})") from exc


def _series_modality(folder: Path) -> str:
    """Modality (0008,0060) of the one image series in ``folder`` (upper case), from its first file's header;
    '' when the folder does not hold exactly one series (:func:`read_image` then says why)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        return ""
    first = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])[0]
    try:
        return str(pydicom.dcmread(first, stop_before_pixels=True).get("Modality", "")).strip().upper()
    except (InvalidDicomError, EOFError, OSError) as exc:
        raise DicomReadError(f"{first}: the DICOM header cannot be read ({exc})") from exc


def read_study_image_and_card(path: str | os.PathLike[str],
                              suv_options: SuvOptions | None = None) -> tuple[sitk.Image, SuvCard | None]:
    """The volume in the units features are computed on, and the PET SUV card (``None`` for anything else).

    A DICOM series folder is read with :func:`read_image` (CT in HU); a PET series (Modality PT) is then
    converted to SUVbw through the SUV card, exactly as the DAG's image stage does
    (:func:`palmares_radiomics.suv.suv_card_for_series` with ``suv_options``, then
    :func:`palmares_radiomics.suv.to_suvbw`). A refused card raises :class:`SuvError` with the card's
    reason: raw Bq/ml are never passed on. A NIfTI/NRRD/MetaImage file is taken as it is (its units are
    the file's own). Returns ``(image, card)``; float64.
    """
    path = Path(path)
    if not path.is_dir() or _series_modality(path) != "PT":
        return read_image(path), None
    from . import suv

    card = suv.suv_card_for_series(path, suv_options or suv.SuvOptions())
    if card.refused_reason:  # before reading any pixel
        raise SuvError(card.refused_reason)
    return suv.to_suvbw(read_image(path), card), card


def read_study_image(path: str | os.PathLike[str]) -> sitk.Image:
    """CT in HU and PET in SUVbw (g/ml) for a DICOM series folder; a NIfTI/NRRD volume as it is.

    A PET series whose SUV cannot be computed without guessing raises :class:`SuvError` with the SUV
    card's reason. See :func:`read_study_image_and_card`.
    """
    return read_study_image_and_card(path)[0]


def _slice_tag(reader: sitk.ImageSeriesReader, index: int, tag: str) -> str | None:
    """The value of ``tag`` in slice ``index`` of a series just read, or None when the slice lacks it."""
    return reader.GetMetaData(index, tag) if reader.HasMetaDataKey(index, tag) else None


def _numbers(value: str | None, count: int) -> np.ndarray | None:
    """A DICOM multi-valued decimal string (``a\\b\\c``) as ``count`` floats, or None when absent or malformed."""
    try:
        numbers = np.array([float(v) for v in (value or "").split("\\")])
    except ValueError:
        return None
    return numbers if numbers.shape == (count,) and np.isfinite(numbers).all() else None


def check_slice_positions(positions: list[str | None], orientations: list[str | None]) -> None:
    """Refuse a series whose slices are not evenly spaced along the slice normal (SliceGeometryError).

    ``positions`` and ``orientations`` are each slice's ImagePositionPatient and ImageOrientationPatient
    strings. The slice normal is the cross product of the row and column direction cosines; each slice's
    position along it ("z": the patient z for axial slices, the normal pointing to +x, +y or +z) is compared
    with its neighbour's. The series spacing is the median gap. A gap within the tolerance of 0 is a duplicated
    slice; a gap of about k spacings (k >= 2) means k - 1 missing slices; otherwise every slice must lie within
    the tolerance (:data:`SLICE_POSITION_TOLERANCE_MM` or :data:`SLICE_POSITION_TOLERANCE_FRACTION` of the
    spacing, the larger) of the evenly spaced grid from the first to the last slice, which is where the volume
    puts it. Messages give positions and gaps in mm, never file names (raw names may carry PHI).
    """
    fix = "re-export the complete series from PACS"
    cosines = [_numbers(o, 6) for o in orientations]
    points = [_numbers(p, 3) for p in positions]
    unreadable = sum(c is None or p is None for c, p in zip(cosines, points))
    if unreadable:
        raise SliceGeometryError(f"{unreadable} of {len(points)} slices have no valid ImagePositionPatient or "
                                 f"ImageOrientationPatient, so the slice spacing cannot be checked; {fix}")
    deviation = max(float(np.abs(c - cosines[0]).max()) for c in cosines)
    if deviation > ORIENTATION_TOLERANCE:
        raise SliceGeometryError(f"the slices of the series have different orientations (ImageOrientationPatient "
                                 f"differs by up to {deviation:.3g}, tolerance {ORIENTATION_TOLERANCE:g}); "
                                 "read each orientation as its own series or " + fix)
    normal = np.cross(cosines[0][:3], cosines[0][3:])
    normal *= np.sign(normal[np.argmax(np.abs(normal))])  # along +x, +y or +z: positions read as patient coordinates
    z = np.sort(np.array([float(p @ normal) for p in points]))
    gaps = np.diff(z)
    spacing = float(np.median(gaps))
    tolerance = max(SLICE_POSITION_TOLERANCE_MM, SLICE_POSITION_TOLERANCE_FRACTION * spacing)
    duplicated = np.flatnonzero(gaps <= 2 * tolerance)  # a gap is the difference of two positions: twice the jitter
    if duplicated.size:
        i = int(duplicated[0])
        others = f" ({duplicated.size - 1} more duplicated position(s) in the series)" if duplicated.size > 1 else ""
        raise SliceGeometryError(f"duplicated slice position: two slices at z = {z[i]:g} mm and z = {z[i + 1]:g} mm "
                                 f"(expected spacing {spacing:g} mm, found a gap of {gaps[i]:g} mm; a gap of at most "
                                 f"{2 * tolerance:g} mm is a duplicate){others}; remove the duplicated slices or {fix}")
    steps = np.rint(gaps / spacing)
    missing = np.flatnonzero((steps >= 2) & (np.abs(gaps - steps * spacing) <= 2 * tolerance * steps))
    if missing.size:
        i = int(missing[0])
        others = f" ({missing.size - 1} more gap(s) with missing slices in the series)" if missing.size > 1 else ""
        raise SliceGeometryError(f"{int(steps[i]) - 1} slice(s) missing between z = {z[i]:g} mm and z = {z[i + 1]:g} mm "
                                 f"(expected spacing {spacing:g} mm, found a gap of {gaps[i]:g} mm){others}; {fix}")
    even = z[0] + np.arange(len(z)) * (z[-1] - z[0]) / (len(z) - 1)
    off = float(np.abs(z - even).max())
    if off > tolerance:
        i = int(np.argmax(np.abs(gaps - spacing)))
        raise SliceGeometryError(f"non-uniform slice spacing between z = {z[i]:g} mm and z = {z[i + 1]:g} mm (expected "
                                 f"spacing {spacing:g} mm, found a gap of {gaps[i]:g} mm): slices lie up to {off:.3g} mm "
                                 f"from an evenly spaced volume, tolerance {tolerance:g} mm; a volume needs evenly "
                                 "spaced slices: " + fix)
