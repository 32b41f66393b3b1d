"""Image volumes: read a DICOM series or a NIfTI/NRRD file into a SimpleITK image."""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import SimpleITK as sitk

from .errors import DicomReadError, SliceGeometryError, SuvError

if TYPE_CHECKING:
    from .suv import SuvCard, SuvOptions

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File formats recognised by content (:func:`sniff_format`), named by the suffix they are stored with.
NIFTI, NIFTI_GZ, NRRD, DICOM = "nii", "nii.gz", "nrrd", "dcm"
LABEL_MAP_FORMATS = (NIFTI, NIFTI_GZ, NRRD)

#: A slice may lie at most this far from where a volume of evenly spaced slices puts it (from the first to the last
#: slice): the larger of 0.01 mm and 2 % of the slice spacing. Scanners and DICOM writers leave a few hundredths of a
#: mm of jitter (the GE PET series in ../shared/data/suv: one gap of 3.19 mm among 3.27 mm ones, every slice within
#: 0.04 mm, 1.2 %, of the even grid). A missing slice moves slices by a third of the spacing or more (4 -> 5.33 mm):
#: a larger tolerance would let such a series be read as a uniform volume with a silently wrong slice spacing.
SLICE_POSITION_TOLERANCE_MM = 0.01
SLICE_POSITION_TOLERANCE_FRACTION = 0.02
#: Largest difference between two slices' ImageOrientationPatient direction cosines (rounding of decimal strings).
ORIENTATION_TOLERANCE = 1e-4


def sniff_format(path: Path) -> str | None:
    """The upload's format from its first bytes: NIfTI-1/2 (plain or gzipped), NRRD or DICOM Part 10; else None.

    NIfTI: ``sizeof_hdr`` 348 (NIfTI-1) or 540 (NIfTI-2) in either byte order, and the magic ``n+1``/``ni1``
    (``n+2``/``ni2``); a gzip stream is opened and its first bytes checked the same way. NRRD: ``NRRD000``.
    DICOM: ``DICM`` at byte 128 (the Part 10 preamble every SEG and RTSTRUCT export carries).
    """
    with open(path, "rb") as handle:
        head = handle.read(544)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                inner = handle.read(544)
        except (OSError, EOFError):
            return None
        return NIFTI_GZ if _is_nifti(inner) else None
    if _is_nifti(head):
        return NIFTI
    if head.startswith(b"NRRD000"):
        return NRRD
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    return None


def _is_nifti(head: bytes) -> bool:
    if len(head) < 348:
        return False
    size_le, size_be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    if 348 in (size_le, size_be):
        return head[344:347] in (b"n+1", b"ni1")
    if 540 in (size_le, size_be):
        return head[4:7] in (b"n+2", b"ni2")
    return False


def label_map_format(path: str | os.PathLike[str]) -> str | None:
    """``"nii"``, ``"nii.gz"`` or ``"nrrd"`` when ``path`` holds a NIfTI/NRRD label map by its content, whatever its
    name (the upload page stores the current segmentation as ``segmentation``); None otherwise (DICOM, other
    content, or unreadable)."""
    try:
        fmt = sniff_format(Path(path))
    except OSError:
        return None
    return fmt if fmt in LABEL_MAP_FORMATS else None


@contextlib.contextmanager
def readable_name(path: str | os.PathLike[str], fmt: str) -> Iterator[Path]:
    """``path`` itself when its name ends with ``.fmt``, else a temporary symlink that does: ITK and nibabel choose
    their reader by the suffix. Read the file inside the block."""
    path = Path(path)
    if path.name.lower().endswith(f".{fmt}"):
        yield path
        return
    with tempfile.TemporaryDirectory() as scratch:
        named = Path(scratch) / f"segmentation.{fmt}"
        named.symlink_to(path.resolve())
        yield named


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
    A folder holding one multi-frame CT file (Enhanced CT, Legacy Converted Enhanced CT) is read by
    :func:`read_multiframe`, with the same checks; other multi-frame files are refused (DicomReadError).
    """
    path = Path(path)
    if path.is_dir():
        return _read_series(path, series_files(path), pixel_type)
    if not path.is_file():
        raise DicomReadError(f"{path}: no such file or folder")
    try:
        return sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise DicomReadError(f"{path}: not a readable image file ({str(exc).strip().splitlines()[-1]})") from exc


def series_files(folder: Path) -> tuple[str, ...]:
    """The files of the one DICOM image series in ``folder``, ordered by position (GDCM); a folder with no series
    or several is refused (DicomReadError: the caller must say which one).

    GDCM reads the folder's headers once when its first series holds every file of the folder (the stages'
    de-identified series: 0.1 CPU-s per 200 files saved); otherwise it lists the series first, then the files of
    the only one."""
    first = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if first and len(first) == sum(1 for entry in os.scandir(folder) if entry.is_file()):
        return tuple(first)  # every file is in that series: there is no other
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DicomReadError(f"{folder}: no DICOM image series found in this folder")
    if len(series) > 1:
        raise DicomReadError(f"{folder}: {len(series)} DICOM series in one folder; put one series per folder")
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _read_series(path: Path, files: Sequence[str], pixel_type: int) -> sitk.Image:
    """:func:`read_image` of the series ``files`` (:func:`series_files`) of the folder ``path``."""
    if len(files) == 1 and _number_of_frames(path, files[0]) > 1:
        return read_multiframe(path, files[0], pixel_type)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(pixel_type)
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice headers, for the slice-position check
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomReadError(f"{path}: the DICOM series could not be read ({str(exc).strip().splitlines()[-1]})") from exc
    frames = [_slice_tag(reader, i, "0028|0008") for i in range(len(files))]
    multiframe = sum(1 for f in frames if (f or "").strip() not in ("", "1"))
    if multiframe or image.GetDimension() != 3:
        raise DicomReadError(f"{path}: {multiframe or 'some'} of the {len(files)} files of the series are "
                             "multi-frame (a series split over several multi-frame files, or mixed with "
                             "single-frame ones); only one multi-frame file per folder, or single-frame files, "
                             "can be read as a volume: " + _UNSUPPORTED)
    if len(files) > 1:
        check_slice_positions([_slice_tag(reader, i, "0020|0032") for i in range(len(files))],
                              [_slice_tag(reader, i, "0020|0037") for i in range(len(files))])
    return image


#: Multi-frame image storage classes read as a volume by :func:`read_multiframe` (geometry and rescale in the
#: functional groups). Other multi-frame classes (Enhanced / Legacy Converted Enhanced PET, whose SUV needs
#: per-frame decay and timing the SUV card does not read yet; MR; NM) are refused with their name.
MULTIFRAME_CLASSES = {"1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
                      "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage"}
_OTHER_MULTIFRAME_CLASSES = {"1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
                             "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
                             "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
                             "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
                             "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage"}
_UNSUPPORTED = "re-export the series from PACS as single-frame (classic) images"


def _read_header(folder: Path, file: str, stop_before_pixels: bool = True):
    """The pydicom dataset of ``file`` (of the series in ``folder``); a file pydicom cannot parse is a
    :class:`DicomReadError` naming the folder (file names of raw exports may carry PHI)."""
    import pydicom

    try:
        return pydicom.dcmread(file, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a file it cannot parse
        if _machine_failure(exc):
            raise
        raise DicomReadError(f"{folder}: the DICOM file of the series cannot be read ({type(exc).__name__}: "
                             f"{str(exc).strip()[:200]}); re-export it from PACS") from exc


def _machine_failure(exc: BaseException) -> bool:
    """True for an error of the machine (out of memory, an OSError with an errno: disk, permissions), which must
    reach :func:`palmares_radiomics.stages.status.guarded` as it is, not as a DicomReadError of the patient's file."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno is not None)


def _number_of_frames(folder: Path, file: str) -> int:
    """NumberOfFrames (0028,0008) of ``file``: 1 when absent."""
    value = _read_header(folder, file).get("NumberOfFrames", 1)
    try:
        return int(value or 1)
    except (TypeError, ValueError):
        raise DicomReadError(f"{folder}: NumberOfFrames (0028,0008) is not a number ({value!r}); "
                             "re-export the series from PACS") from None


def _frame_item(ds, frame, sequence: str):
    """The one item of the functional group ``sequence`` for one frame: the frame's own (Per-Frame Functional
    Groups) or else the one shared by every frame; None when neither holds it."""
    for group in (frame, *(ds.get("SharedFunctionalGroupsSequence") or [None])[:1]):
        items = group.get(sequence) if group is not None else None
        if items:
            return items[0]
    return None


def read_multiframe(folder: str | os.PathLike[str], file: str | os.PathLike[str],
                    pixel_type: int = sitk.sitkFloat64) -> sitk.Image:
    """Read one multi-frame CT file (Enhanced CT, Legacy Converted Enhanced CT) as a 3-D image of ``pixel_type``.

    GDCM reads such a file as a 4-D image without its per-frame geometry, so it is read here with pydicom:
    each frame's ImagePositionPatient (Plane Position Sequence), ImageOrientationPatient (Plane Orientation
    Sequence), PixelSpacing (Pixel Measures Sequence) and RescaleSlope/Intercept (Pixel Value Transformation
    Sequence; the frame's own, else the shared one), as a series of single-frame slices would give them. Frames
    are ordered along the slice normal (row x column direction cosines), the origin is the first frame's
    position and the slice spacing the mean gap, exactly as for a single-frame series; the same slice-gap checks
    apply (:func:`check_slice_positions`: several stacks or time points at one position are duplicated slices).
    Anything this cannot read without guessing (another multi-frame class, colour, frames of different pixel
    spacing, no plane position or orientation, CT without a rescale) is a :class:`DicomReadError`.
    """
    folder = Path(folder)
    header = _read_header(folder, str(file))
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class not in MULTIFRAME_CLASSES:
        name = _OTHER_MULTIFRAME_CLASSES.get(sop_class, f"SOP Class {sop_class or '(none)'}")
        raise DicomReadError(f"{folder}: a multi-frame {name} file cannot be read as a volume (supported: "
                             f"{', '.join(MULTIFRAME_CLASSES.values())}); {_UNSUPPORTED}")
    count = int(header.get("NumberOfFrames", 1) or 1)
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != count:
        raise DicomReadError(f"{folder}: the multi-frame file has {count} frames but "
                             f"{0 if per_frame is None else len(per_frame)} Per-Frame Functional Groups; "
                             + _UNSUPPORTED)
    if int(header.get("SamplesPerPixel", 1)) != 1:
        raise DicomReadError(f"{folder}: the multi-frame file is not greyscale (SamplesPerPixel "
                             f"{header.get('SamplesPerPixel')}); {_UNSUPPORTED}")
    positions, orientations, spacings, rescales = [], [], set(), []
    for number, frame in enumerate(per_frame, start=1):
        position = _frame_item(header, frame, "PlanePositionSequence")
        orientation = _frame_item(header, frame, "PlaneOrientationSequence")
        measures = _frame_item(header, frame, "PixelMeasuresSequence")
        missing = [name for name, item, key in (("Plane Position", position, "ImagePositionPatient"),
                                                ("Plane Orientation", orientation, "ImageOrientationPatient"),
                                                ("Pixel Measures", measures, "PixelSpacing"))
                   if item is None or key not in item]
        if missing:
            raise DicomReadError(f"{folder}: frame {number} of {count} of the multi-frame file has no "
                                 f"{' / '.join(missing)} Sequence, so its place in the volume is unknown; "
                                 + _UNSUPPORTED)
        positions.append("\\".join(str(v) for v in position.ImagePositionPatient))
        orientations.append("\\".join(str(v) for v in orientation.ImageOrientationPatient))
        spacings.add(tuple(round(float(v), 6) for v in measures.PixelSpacing))
        transform = _frame_item(header, frame, "PixelValueTransformationSequence")
        source = transform if transform is not None and "RescaleSlope" in transform else header
        if "RescaleSlope" not in source or "RescaleIntercept" not in source:
            raise DicomReadError(f"{folder}: frame {number} of {count} of the multi-frame CT has no RescaleSlope / "
                                 "RescaleIntercept (Pixel Value Transformation Sequence), so its values cannot be "
                                 f"converted to HU; {_UNSUPPORTED}")
        rescales.append((float(source.RescaleSlope), float(source.RescaleIntercept)))
    if len(spacings) != 1:
        raise DicomReadError(f"{folder}: the frames of the multi-frame file have different pixel spacings "
                             f"({sorted(spacings)} mm); {_UNSUPPORTED}")
    if count > 1:
        check_slice_positions(positions, orientations)
    cosines = np.array([float(v) for v in orientations[0].split("\\")])
    row, column = cosines[:3], cosines[3:]
    normal = np.cross(row, column)
    points = np.array([[float(v) for v in p.split("\\")] for p in positions])
    order = np.argsort(points @ normal, kind="stable")
    try:
        stored = _read_header(folder, str(file), stop_before_pixels=False).pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for pixel data it cannot decode
        if isinstance(exc, DicomReadError) or _machine_failure(exc):
            raise
        raise DicomReadError(f"{folder}: the pixel data of the multi-frame file cannot be decoded "
                             f"({type(exc).__name__}: {str(exc).strip()[:200]}); {_UNSUPPORTED}") from exc
    stored = np.asarray(stored).reshape(count, int(header.Rows), int(header.Columns))
    slopes = np.array([r[0] for r in rescales])[:, None, None]
    intercepts = np.array([r[1] for r in rescales])[:, None, None]
    values = (stored.astype(np.float64) * slopes + intercepts)[order]
    image = sitk.GetImageFromArray(values)
    pixel_spacing = next(iter(spacings))  # (between rows, between columns) in mm
    along = points[order] @ normal
    slice_spacing = float((along[-1] - along[0]) / (count - 1)) if count > 1 else _single_frame_thickness(header)
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], slice_spacing))
    image.SetOrigin(tuple(float(v) for v in points[order[0]]))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()))
    return sitk.Cast(image, pixel_type) if pixel_type != sitk.sitkFloat64 else image


def _single_frame_thickness(header) -> float:
    """Slice spacing of a one-frame volume: SpacingBetweenSlices, else SliceThickness (shared Pixel Measures),
    else 1 mm."""
    measures = _frame_item(header, None, "PixelMeasuresSequence")
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = measures.get(key) if measures is not None else None
        if value:
            return float(value)
    return 1.0


def _series_modality(first: str) -> str:
    """Modality (0008,0060) of a series (upper case), from its first file's header."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return str(pydicom.dcmread(first, stop_before_pixels=True).get("Modality", "")).strip().upper()
    except (InvalidDicomError, EOFError, OSError) as exc:
        raise DicomReadError(f"{first}: the DICOM header cannot be read ({exc})") from exc


def read_study_image_and_card(path: str | os.PathLike[str], suv_options: SuvOptions | None = None,
                              ct_pixel_type: int = sitk.sitkFloat64) -> tuple[sitk.Image, SuvCard | None]:
    """The volume in the units features are computed on, and the PET SUV card (``None`` for anything else).

    A DICOM series folder is read with :func:`read_image` (CT in HU); a PET series (Modality PT) is then
    converted to SUVbw through the SUV card, exactly as the DAG's image stage does
    (:func:`palmares_radiomics.suv.suv_card_for_series` with ``suv_options``, then
    :func:`palmares_radiomics.suv.to_suvbw`). A refused card raises :class:`SuvError` with the card's
    reason: raw Bq/ml are never passed on. A NIfTI/NRRD/MetaImage file is taken as it is (its units are
    the file's own). Returns ``(image, card)``: float64, except a DICOM series that is not PET, read as
    ``ct_pixel_type`` (the image stage reads CT as float32: the HU it stores, in half the memory).
    """
    path = Path(path)
    if not path.is_dir():
        return read_image(path), None
    files = series_files(path)  # listed once, for the modality and the pixels
    if _series_modality(files[0]) != "PT":
        return _read_series(path, files, ct_pixel_type), None
    from . import suv

    card = suv.suv_card_for_series(path, suv_options or suv.SuvOptions())
    if card.refused_reason:  # before reading any pixel
        raise SuvError(card.refused_reason)
    return suv.to_suvbw(_read_series(path, files, sitk.sitkFloat64), card), card


def write_volume(image: sitk.Image, path: str | os.PathLike[str], *, int16_when_lossless: bool = False) -> None:
    """Write a stage's volume for the next stages to read: uncompressed, Float32 (or Int16 when that is lossless).

    With ``int16_when_lossless`` (CT), Int16 when every voxel is a whole number in the int16 range (HU read with
    an integer rescale: the same values in half the bytes); Float32 otherwise (PET in SUV, CT with a fractional
    rescale). Uncompressed because gzip cost 13 CPU-s per 512x512x200 CT (3 s even as Int16) and every later
    stage read it back; uncompressed, it is written in 0.1 s and read in 0.1 s (benchmarks/bench_cohort.py).
    ``path`` must not end in ``.gz`` (SimpleITK would compress it): ValueError.
    """
    if str(path).endswith(".gz"):
        raise ValueError(f"{path}: stage volumes are written uncompressed; name them *.nii")
    values = sitk.GetArrayViewFromImage(image)
    limits = np.iinfo(np.int16)
    fits = (int16_when_lossless and values.size > 0
            and limits.min <= values.min() and values.max() <= limits.max)  # False with a NaN
    whole = fits and (values.dtype.kind in "iu" or all(np.array_equal(plane, plane.astype(np.int16))
                                                       for plane in values))  # a slice at a time: no volume copy
    pixel_type = sitk.sitkInt16 if whole else sitk.sitkFloat32
    sitk.WriteImage(image if image.GetPixelID() == pixel_type else sitk.Cast(image, pixel_type), str(path),
                    useCompression=False)


def read_volume(path: str | os.PathLike[str]) -> sitk.Image:
    """A volume written by :func:`write_volume`: Int16 as it is (whole numbers: every consumer casts its crop to
    float64 exactly, and the scan takes a quarter of float64's memory), anything else as Float64."""
    image = take_volume(path)
    return image if image.GetPixelID() == sitk.sitkInt16 else sitk.Cast(image, sitk.sitkFloat64)


class _Kept(NamedTuple):
    identity: tuple[int, int, int, int]  #: the file's device, inode, size and modification time (ns)
    image: sitk.Image  #: as reading the file gives it


#: Volumes handed from one stage of the per-patient job to the next (:func:`keep_volume`), by absolute path.
_kept: dict[str, _Kept] = {}


def _identity(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def keep_volume(path: str | os.PathLike[str], image: sitk.Image) -> None:
    """Hand ``image``, the content of the volume file ``path`` (just written under its final name, or read and left
    unchanged), to the next stage of this process that reads the file (:func:`take_volume`): in the per-patient
    job the mask stage hands the features stage the CT it read and the label map it wrote (a 512x512x200 CT:
    0.15 CPU-s and 100 MB of page faults each, benchmarks/bench_cohort.py).

    The pixels are ``image``'s (NIfTI stores them as they are); its geometry is set to the file's, as the file's
    reader reports it (NIfTI keeps it in single precision). Nothing is kept if the file's pixel type or size
    differs. ``image`` is handed over, not copied (a copy would double the memory): the caller must not use it
    afterwards.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if (reader.GetPixelID(), reader.GetSize(), reader.GetNumberOfComponents()) != (
            image.GetPixelID(), image.GetSize(), image.GetNumberOfComponentsPerPixel()):
        return
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    _kept[os.path.abspath(path)] = _Kept(_identity(path), image)


def take_volume(path: str | os.PathLike[str]) -> sitk.Image:
    """``sitk.ReadImage(path)``: the image :func:`keep_volume` was given for the file, if it is the same file since
    (device, inode, size and modification time), handed over (it is kept no longer); else the file as read."""
    kept = _kept.pop(os.path.abspath(path), None)
    if kept is not None and kept.identity == _identity(path):
        return kept.image
    return sitk.ReadImage(str(path))


def forget_volumes() -> None:
    """Drop every volume :func:`keep_volume` was given (the per-patient job, once a series is done)."""
    _kept.clear()


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
