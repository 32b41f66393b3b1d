"""Import and validate lesion segmentations: one UInt16 label map on the image grid, or a clear refusal.

A segmentation arrives as a NIfTI/NRRD label map, a DICOM-SEG or an RTSTRUCT. Whatever the format,
the result is a label map with exactly the image's size, origin, spacing and direction, one label
per lesion (``LesionSpec.label``). Anything that would need guessing (another grid, another series,
a missing or empty lesion, overlapping lesions, contours between slices or outside the image) raises
:class:`~palmares_radiomics.errors.SegmentationError` with a message a radiologist can act on. The
lesion table chooses the lesions; other structures (organs at risk, 'Body', 'Edema') are ignored and
reported as information. Structures are named as the file names them: ``'Spinal-Cord' (ROI Number 6)``,
``segment 3 ('Neoplasm, Secondary')``, ``label 3``.

Messages never quote file or folder names (raw exports carry patient names in them), UIDs or
header values other than geometry and structure names; the caller adds the patient pseudonym and
the de-identified file name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from skimage.draw import polygon as fill_polygon

from .errors import ConfigError, DicomReadError, SegmentationError
from .records import LesionSpec
from .volumes import is_volume_file, label_map_format, read_image, readable_name, series_files

#: Geometric tolerance, as a fraction of the image voxel spacing along each axis. A mask voxel
#: centre (NIfTI grid corners, SEG frame pixels, RTSTRUCT contour planes) may sit at most this far
#: from the image voxel centre it is assigned to. Rounding in DICOM decimal strings (6-16
#: significant digits) and in float32 NIfTI headers moves centres by < 1e-3 voxel, so 0.1 voxel
#: never rejects a mask drawn on the same series; but it does reject a half-voxel shift (voxel
#: corner vs centre origin), and, for a grid of 512 voxels, a spacing that differs by more than
#: 0.02 % (the error accumulates to the far edge). A larger tolerance would silently move masks.
GRID_TOLERANCE_VOXELS = 0.1

#: A FRACTIONAL DICOM-SEG pixel is inside the lesion when its value is at least this fraction of
#: MaximumFractionalValue (the IBSI partial-volume convention for mask interpolation).
FRACTIONAL_THRESHOLD = 0.5

#: Lesions with fewer voxels than this (a 3x3x3 cube) get a warning in the verdict: shape and
#: texture features of such small regions are dominated by discretisation.
MIN_LESION_VOXELS = 27

#: A mask axis whose cosine with an image axis is below this points the opposite way (a flip);
#: |cosine| above -FLIP_COSINE counts as the same line, for lossless axis reordering (the grid
#: check then applies the real tolerance).
FLIP_COSINE = -0.9

#: A label map may declare at most this many times the image's voxels (the same grid stored another way has
#: exactly as many); beyond it the file is refused from its header, before a compressed file is inflated.
MAX_MASK_VOXELS_FACTOR = 4
#: An NRRD header longer than this is refused (real headers are a few hundred bytes).
NRRD_HEADER_MAX_BYTES = 64 * 1024
#: DICOM transfer syntax Deflated Explicit VR Little Endian: inflated whole by the reader, so refused in uploads.
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

KIND_LABEL_MAP = "label map"
KIND_SEG = "DICOM-SEG"
KIND_RTSTRUCT = "RTSTRUCT"

EXPORT_HINT = "Export the segmentation from the series used for the study."

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Structure:
    """One structure found in a mask file: label value, SEG segment or RTSTRUCT ROI.

    ``number`` is the structure's number in the file, one meaning for the three formats: the label value
    (NIfTI/NRRD), the SegmentNumber (0062,0004) of a DICOM-SEG, the ROI Number (3006,0022) of an RTSTRUCT
    (not its position in StructureSetROISequence). ``name`` is the ROIName or SegmentLabel as the file
    spells it, "" for label maps and for a name that is empty or was withheld by de-identification
    (an emptied ROIName, a SegmentLabel replaced by ``Segment <n>``).
    """

    number: int
    name: str

    def describe(self, kind: str) -> str:
        """Human wording, as the file names it: ``'Spinal-Cord' (ROI Number 6)``, ``segment 3 ('Neoplasm,
        Secondary')``, ``label 3``; without a name ``ROI Number 9 (no name)`` or ``segment 4 (no name)``."""
        if kind == KIND_RTSTRUCT:
            return f"'{self.name}' (ROI Number {self.number})" if self.name else f"ROI Number {self.number} (no name)"
        if kind == KIND_SEG:
            return f"segment {self.number} ('{self.name}')" if self.name else f"segment {self.number} (no name)"
        return f"label {self.number}"


@dataclass(frozen=True, slots=True)
class ImageReference:
    """Identity of a DICOM image series, used to check what a SEG or RTSTRUCT was drawn on."""

    series_instance_uid: str
    frame_of_reference_uid: str


@dataclass(frozen=True, slots=True)
class LabelSummary:
    """One label of a validated label map: which lesion, how many voxels, what volume."""

    label: int
    lesion_id: str
    structure: str
    voxels: int
    volume_ml: float


@dataclass(frozen=True, slots=True)
class SegmentationVerdict:
    """Outcome of :func:`check_segmentation`: ``ok`` is False when any problem was found.

    ``problems`` are errors (the mask cannot be used as it is); ``warnings`` do not block the run;
    ``ignored`` describes the structures that are not lesions (not in the lesion table, or not selected):
    information only.
    """

    ok: bool
    mask_kind: str
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    labels: tuple[LabelSummary, ...]
    image_size: tuple[int, int, int]
    image_spacing_mm: tuple[float, float, float]
    ignored: tuple[str, ...] = ()

    @property
    def n_labels(self) -> int:
        """Number of non-empty labels in the label map (0 when the mask was refused)."""
        return len(self.labels)

    @property
    def voxels_per_label(self) -> dict[int, int]:
        """Voxel count per label value."""
        return {s.label: s.voxels for s in self.labels}

    def summary(self) -> str:
        """A few lines for the command line: verdict, grid, one line per label, ignored structures, problems, warnings."""
        head = "OK" if self.ok else "REFUSED"
        lines = [f"{head}: {self.mask_kind or 'mask'} on an image of {_fmt_size(self.image_size)} voxels "
                 f"at {_fmt_spacing(self.image_spacing_mm)} mm; {self.n_labels} label(s)"]
        for s in self.labels:
            lines.append(f"  label {s.label:>3}  {s.lesion_id or '-':<12} {s.structure:<28} "
                         f"{s.voxels:>9} voxels  {s.volume_ml:9.3f} ml")
        lines += [f"  info: {name}: not a lesion, ignored" for name in self.ignored]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ImportedSegmentation:
    """A validated segmentation (:func:`import_segmentation`): the label map and what went into it.

    ``kind`` is :data:`KIND_LABEL_MAP`, :data:`KIND_SEG` or :data:`KIND_RTSTRUCT`; ``label_map`` is UInt16 on
    the image grid, each lesion with its ``LesionSpec.label`` value; ``lesions`` has one summary per chosen
    lesion (sorted by label); ``ignored`` describes, in file order, the structures that are not lesions
    (e.g. ``'Spinal-Cord' (ROI Number 6)``); ``polygons`` holds, for an RTSTRUCT, each lesion's closed planar
    contours (N×3 arrays, mm) as the rasteriser read them, in the order of ``lesions`` (empty otherwise).
    """

    kind: str
    label_map: sitk.Image
    lesions: tuple[LabelSummary, ...]
    ignored: tuple[str, ...]
    polygons: tuple[tuple[np.ndarray, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class _Selection:
    """One structure to put in the label map, with the value it gets and the lesion it stands for."""

    structure: Structure
    value: int
    lesion_id: str


@dataclass(frozen=True, slots=True)
class _MaskSource:
    """A mask file opened for rasterisation: its structures and a function giving each one's voxels."""

    kind: str
    structures: tuple[Structure, ...]
    rasterise: Callable[[Structure], np.ndarray]
    polygons: Callable[[Structure], list[np.ndarray]] | None = None  # RTSTRUCT: the contours rasterise fills


# ----------------------------------------------------------------------------------------------
# Formatting helpers (geometry only: no identifiers)
# ----------------------------------------------------------------------------------------------


def _fmt_size(size: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in size)


def _fmt_spacing(spacing: Sequence[float]) -> str:
    return "×".join(f"{s:.4g}" for s in spacing)


def _fmt_names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


# ----------------------------------------------------------------------------------------------
# Grid geometry
# ----------------------------------------------------------------------------------------------


def _index_to_physical_matrix(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(A, o) with physical = A @ index + o, for continuous (x, y, z) indices of ``image``."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    return direction * np.array(image.GetSpacing(), dtype=float), np.array(image.GetOrigin(), dtype=float)


def physical_to_continuous_index(image: sitk.Image, points_mm: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) voxel indices of patient-coordinate points (N×3, mm) on ``image``'s grid.

    The same affine as ``image.TransformPhysicalPointToContinuousIndex``, vectorised for contours
    with tens of thousands of points.
    """
    matrix, origin = _index_to_physical_matrix(image)
    return np.linalg.solve(matrix, (np.asarray(points_mm, dtype=float) - origin).T).T


def _tolerance_voxels(image: sitk.Image, tolerance_mm: float | None) -> np.ndarray:
    """Per-axis tolerance in image voxels; a tolerance of half a voxel or more is refused."""
    spacing = np.array(image.GetSpacing(), dtype=float)
    if tolerance_mm is None:
        return np.full(3, GRID_TOLERANCE_VOXELS)
    if not 0 <= tolerance_mm < 0.5 * spacing.min():
        raise ConfigError(f"tolerance_mm must be from 0 to less than half the smallest voxel spacing "
                         f"({0.5 * spacing.min():.3g} mm): a larger one would move masks by whole voxels. "
                         f"Found: {tolerance_mm}")
    return tolerance_mm / spacing


def _reorient_like(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    """``mask`` with its axes permuted and reversed to run along ``image``'s axes, voxels unchanged.

    A label map may store the same voxels in another index order (e.g. rows reversed by a NIfTI
    converter, or a sagittal storage order): when each mask axis is parallel or antiparallel to one
    image axis, reordering the array is lossless and every voxel keeps its physical position. Masks
    whose axes are not so aligned are returned unchanged (the grid check then refuses them).
    """
    if mask.GetDimension() != 3:
        return mask
    m_dir = np.array(mask.GetDirection(), dtype=float).reshape(3, 3)
    i_dir = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    cosines = i_dir.T @ m_dir  # [i, j]: cosine between image axis i and mask axis j
    order = [int(np.argmax(np.abs(cosines[i]))) for i in range(3)]
    aligned = sorted(order) == [0, 1, 2] and bool(np.all(np.abs(cosines[range(3), order]) >= -FLIP_COSINE))
    if not aligned or (order == [0, 1, 2] and np.all(np.diag(cosines) > 0)):
        return mask
    signs = np.sign(cosines[range(3), order])
    xyz = sitk.GetArrayFromImage(mask).transpose(2, 1, 0).transpose(order)
    for axis in range(3):
        if signs[axis] < 0:
            xyz = np.flip(xyz, axis=axis)
    size = mask.GetSize()
    first = [0] * 3
    for axis in range(3):
        first[order[axis]] = 0 if signs[axis] > 0 else size[order[axis]] - 1
    out = sitk.GetImageFromArray(np.ascontiguousarray(xyz.transpose(2, 1, 0)))
    out.SetSpacing([mask.GetSpacing()[order[axis]] for axis in range(3)])
    out.SetDirection((m_dir[:, order] * signs).ravel().tolist())
    out.SetOrigin(mask.TransformIndexToPhysicalPoint(first))
    return out


_ANATOMY = (("to the patient's left", "to the patient's right"), ("posterior", "anterior"),
            ("towards the head", "towards the feet"))


def _fmt_mm(value: float) -> str:
    """A length in mm for messages: one decimal from 1 mm, two below (a half voxel of 0.75 mm stays 0.75)."""
    return f"{abs(value):.1f}" if abs(value) >= 1 else f"{abs(value):.2f}"


def describe_shift(shift_mm: Sequence[float], min_mm: float = 0.05) -> str:
    """A patient-coordinate (LPS) displacement in anatomical words: ``50.0 mm to the patient's left and 2.0 mm
    posterior``. DICOM patient axes: +x towards the patient's left, +y posterior, +z towards the head; components
    below ``min_mm`` are not named."""
    parts = [f"{_fmt_mm(v)} mm {_ANATOMY[axis][0 if v > 0 else 1]}"
             for axis, v in enumerate(shift_mm) if abs(v) >= min_mm]
    if not parts:
        return f"less than {min_mm:g} mm"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _grid_problem(mask: sitk.Image, image: sitk.Image, tol_vox: np.ndarray,
                  stored: sitk.Image | None = None) -> SegmentationError | None:
    """Why ``mask`` is not on ``image``'s grid, as a SegmentationError with its code, or None when it is.

    The decision is physical: every mask voxel centre must lie within the tolerance of the image
    voxel centre with the same index. The map is affine, so checking the 8 grid corners suffices.
    The wording then names the most likely cause (a single slice, flipped axes, other series, rotation,
    shift). ``stored`` is the mask as stored, before :func:`_reorient_like`, to tell a flip from a reordering.
    """
    stored = stored or mask
    m_size, i_size = mask.GetSize(), image.GetSize()
    m_sp, i_sp = mask.GetSpacing(), image.GetSpacing()
    what = (f"The mask is {_fmt_size(stored.GetSize())} voxels at {_fmt_spacing(stored.GetSpacing())} mm but the "
            f"image is {_fmt_size(i_size)} at {_fmt_spacing(i_sp)} mm")
    n_slices = int(i_size[2]) if len(i_size) == 3 else 1
    if mask.GetDimension() != 3 or (m_size[2] == 1 and n_slices > 1):
        if n_slices > 1 and mask.GetDimension() in (2, 3):
            shape = _fmt_size(stored.GetSize()) + (", a 2-D image" if mask.GetDimension() == 2 else "")
            return SegmentationError(f"The mask is a single slice ({shape}) but the image has {n_slices} slices: a "
                                     "3-D label map with every slice of the series is required (the segmentation was "
                                     "probably exported from one slice only).",
                                     code="mask_2d", fix=EXPORT_HINT)
        return SegmentationError(f"The mask has {mask.GetDimension()} dimensions; a 3-D label map is required.",
                                 code="mask_2d", fix=EXPORT_HINT)
    if tuple(m_size) == tuple(i_size):
        corners = np.array([[x, y, z] for x in (0, m_size[0] - 1) for y in (0, m_size[1] - 1)
                            for z in (0, m_size[2] - 1)], dtype=float)
        m_matrix, m_origin = _index_to_physical_matrix(mask)
        offset = physical_to_continuous_index(image, corners @ m_matrix.T + m_origin) - corners
        if np.all(np.abs(offset) <= tol_vox):
            return None
    s_dir = np.array(stored.GetDirection(), dtype=float).reshape(3, 3)
    i_dir = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    flipped = [axis for axis, c in zip("xyz", np.einsum("ij,ij->j", s_dir, i_dir), strict=True) if c < FLIP_COSINE]
    if flipped:
        return SegmentationError(
            f"{what}, and its {' and '.join(flipped)} {'axis points' if len(flipped) == 1 else 'axes point'} "
            "the opposite way to the image's without covering the same voxels: the mask is flipped. This is the "
            "typical result of an LPS/RAS confusion when the NIfTI affine was written (e.g. a converter that "
            "negates or omits the x/y signs).", code="flipped_axis",
            fix=f"Re-export the mask with the image's orientation. {EXPORT_HINT}")
    if tuple(m_size) != tuple(i_size):
        return SegmentationError(f"{what}: it was probably drawn on another series (e.g. a reconstruction with a "
                                 "different slice thickness or field of view).", code="grid_size", fix=EXPORT_HINT)
    spacing_rel = np.abs(np.array(m_sp) - np.array(i_sp)) / np.array(i_sp)
    if np.any(spacing_rel * (np.array(i_size) - 1) > tol_vox):
        return SegmentationError(f"{what}: it was probably drawn on another series (e.g. a reconstruction with a "
                                 "different slice thickness or pixel size).", code="grid_spacing", fix=EXPORT_HINT)
    m_dir = np.array(mask.GetDirection(), dtype=float).reshape(3, 3)
    cosines = np.einsum("ij,ij->j", m_dir, i_dir)
    angle = math.degrees(math.acos(float(np.clip(cosines.min(), -1.0, 1.0))))
    if math.radians(angle) * max(i_size) > tol_vox.min():
        return SegmentationError(f"The mask's axes are rotated by {angle:.2f}° relative to the image's (same size "
                                 f"{_fmt_size(i_size)} and spacing {_fmt_spacing(i_sp)} mm): it was drawn on a "
                                 "reformatted or differently oriented series.", code="grid_rotation", fix=EXPORT_HINT)
    shift_mm = np.array(mask.GetOrigin()) - np.array(image.GetOrigin())
    shift_vox = physical_to_continuous_index(image, np.array([mask.GetOrigin()]))[0]
    return SegmentationError(
        f"The mask is shifted {describe_shift(shift_mm)} of the image ({', '.join(f'{v:.2f}' for v in shift_vox)} "
        f"voxels along the image's columns, rows and slices; tolerance {tol_vox.max():.2g} voxel; mask grid "
        f"{_fmt_size(m_size)} voxels at {_fmt_spacing(m_sp)} mm): it was drawn on another series with a different "
        "origin, or the origin was altered on export (e.g. voxel corner instead of voxel centre).",
        code="grid_shift", fix=EXPORT_HINT)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """True when ``a`` and ``b`` have the same grid (same index order) within :data:`GRID_TOLERANCE_VOXELS`."""
    return _grid_problem(a, b, np.full(3, GRID_TOLERANCE_VOXELS)) is None


# ----------------------------------------------------------------------------------------------
# Image references (DICOM series folder)
# ----------------------------------------------------------------------------------------------


def image_reference(image_path: Path) -> ImageReference | None:
    """Series and frame of reference UIDs of a DICOM series folder; None for a volume file."""
    image_path = Path(image_path)
    if not image_path.is_dir():
        return None
    files = series_files(image_path)  # one series per folder (DicomReadError otherwise), its headers read once
    tags = ["SeriesInstanceUID", "FrameOfReferenceUID"]
    headers = [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags) for f in files]
    frames = {str(h.get("FrameOfReferenceUID", "")) for h in headers}
    if len(frames) != 1:
        raise DicomReadError(f"The image series has {len(frames)} frames of reference; re-export it from PACS")
    return ImageReference(series_instance_uid=str(headers[0].SeriesInstanceUID), frame_of_reference_uid=frames.pop())


def _mask_references(ds: pydicom.Dataset) -> tuple[set[str], set[str]]:
    """(frame of reference UIDs, referenced series UIDs) a SEG or RTSTRUCT declares."""
    frames: set[str] = set()
    series: set[str] = set()
    if ds.SOPClassUID == RTSTRUCT_SOP_CLASS:
        for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
            frames.add(str(ref.FrameOfReferenceUID))
            for study in ref.get("RTReferencedStudySequence", []):
                for se in study.get("RTReferencedSeriesSequence", []):
                    series.add(str(se.SeriesInstanceUID))
        for roi in ds.get("StructureSetROISequence", []):
            if "ReferencedFrameOfReferenceUID" in roi:
                frames.add(str(roi.ReferencedFrameOfReferenceUID))
    else:
        if "FrameOfReferenceUID" in ds:
            frames.add(str(ds.FrameOfReferenceUID))
        for se in ds.get("ReferencedSeriesSequence", []):
            series.add(str(se.SeriesInstanceUID))
    return frames, series


def check_references(ds: pydicom.Dataset, kind: str, reference: ImageReference) -> None:
    """Raise SegmentationError when a SEG/RTSTRUCT was drawn on another frame of reference or series."""
    frames, series = _mask_references(ds)
    if frames and reference.frame_of_reference_uid not in frames:
        raise SegmentationError(
            f"The {kind} belongs to a different frame of reference than the image: it was drawn on images of "
            "another acquisition (e.g. the PET instead of the CT, or another study date).",
            code="wrong_frame_of_reference", fix=EXPORT_HINT)
    if series and reference.series_instance_uid not in series:
        raise SegmentationError(
            f"The {kind} was drawn on a different series than this image (same frame of reference, other "
            "series, e.g. another reconstruction of the same acquisition).", code="wrong_series", fix=EXPORT_HINT)


# ----------------------------------------------------------------------------------------------
# Reading the three formats
# ----------------------------------------------------------------------------------------------


def _nrrd_header(path: Path) -> dict[str, str]:
    """The fields of an NRRD header (``key: value``, keys lower case without spaces), read as bytes and never
    past :data:`NRRD_HEADER_MAX_BYTES`; a header with no end in that span is refused."""
    with open(path, "rb") as handle:
        head = handle.read(NRRD_HEADER_MAX_BYTES)
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0), default=-1)
    if end < 0:
        raise SegmentationError("The NRRD file has no complete header, or a detached header (.nhdr) without its data.",
                                code="unreadable_file", fix="Export the segmentation as one .nrrd or .nii.gz file.")
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower().replace(" ", "")] = value.strip().lower()
    return fields


def check_label_map_file(path: Path, max_voxels: int, image: sitk.Image | None = None) -> None:
    """Refuse, before any voxel is read, a NIfTI/NRRD label map the readers must not open as it is.

    An NRRD header may name other files to read (``data file``), skip into them (``line skip``, ``byte skip``)
    or store voxels as text (``encoding: ascii``/``hex``): on a server, the first two would read whatever file
    the header names and the third crashes ITK's reader; only self-contained ``raw`` or ``gzip`` NRRDs are
    accepted. Any label map declaring more than ``max_voxels`` voxels is refused from its header, before a
    compressed file is inflated (a few MB of zeros can declare tens of GB).
    """
    from .volumes import NRRD, sniff_format

    path = Path(path)
    if sniff_format(path) == NRRD:
        fields = _nrrd_header(path)
        unsafe = sorted({"datafile", "lineskip", "byteskip"} & set(fields))
        if unsafe or fields.get("encoding", "raw") not in ("raw", "gzip", "gz"):
            raise SegmentationError(
                "The NRRD file refers to other files, skips into its data or stores its voxels as text "
                f"({', '.join(unsafe) or 'encoding ' + fields.get('encoding', '')}): only self-contained raw or gzip "
                "NRRD label maps are read.", code="unreadable_file",
                fix="Export the segmentation as one .nii.gz (or a single .nrrd with gzip encoding).")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        log.debug("label map header unreadable: %s", exc)  # the reader's text may quote file contents: not shown
        raise SegmentationError("The mask file is not a readable label map (its header could not be decoded).",
                                code="unreadable_file", fix="Re-export it as NIfTI (.nii.gz).") from None
    size = tuple(int(n) for n in reader.GetSize())
    if math.prod(size) * max(reader.GetNumberOfComponents(), 1) > max_voxels:
        if image is not None:  # worded as the grid check words it, from the header alone
            raise SegmentationError(
                f"The mask is {_fmt_size(size)} voxels at {_fmt_spacing(reader.GetSpacing())} mm but the image is "
                f"{_fmt_size(image.GetSize())} at {_fmt_spacing(image.GetSpacing())} mm: it was probably drawn on "
                "another series (e.g. a reconstruction with a different slice thickness or field of view).",
                code="grid_size", fix=EXPORT_HINT)
        raise SegmentationError(f"The mask declares {_fmt_size(size)} voxels, more than any study image holds: the "
                                "file is damaged or was not exported from the study's scan.", code="grid_size",
                                fix=EXPORT_HINT)


def _open_label_map(path: Path, image: sitk.Image, tol_vox: np.ndarray) -> _MaskSource:
    """A NIfTI/NRRD label map, which must already be on the image grid."""
    check_label_map_file(path, MAX_MASK_VOXELS_FACTOR * math.prod(image.GetSize()), image)
    try:
        mask = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        log.debug("label map unreadable: %s", exc)  # the reader's text may quote file contents: not shown
        raise SegmentationError("The mask file is not a readable label map (its voxels could not be decoded).",
                                code="unreadable_file", fix="Re-export it as NIfTI.") from None
    if mask.GetNumberOfComponentsPerPixel() != 1:
        raise SegmentationError("The mask has several values per voxel (vector/RGB image); a label map with one "
                                "integer per voxel is required.", code="not_a_segmentation",
                                fix="Re-export it as a label map.")
    reoriented = _reorient_like(mask, image)
    problem = _grid_problem(reoriented, image, tol_vox, stored=mask)
    if problem is not None:
        raise problem
    array = sitk.GetArrayFromImage(reoriented)
    if array.dtype.kind == "f" and (not np.all(np.isfinite(array)) or np.any(array != np.round(array))):
        raise SegmentationError("The mask has non-integer values (a probability map or an interpolated mask); a "
                                "label map with one integer label per lesion is required.", code="non_integer_labels",
                                fix="Re-export it as a label map.")
    if array.min() < 0 or array.max() > 65535:
        raise SegmentationError(f"The mask has label values from {array.min():g} to {array.max():g}; labels must be "
                                "integers from 0 (background) to 65535.", code="non_integer_labels",
                                fix="Re-export it as a label map with one label value per lesion.")
    # whole numbers from 0 to 65535: a non-negative int16 has a uint16's bits (a view, not a copy of the volume)
    labels = array.view(np.uint16) if array.dtype == np.int16 else array.astype(np.uint16, copy=False)
    present = tuple(Structure(int(v), "") for v in np.unique(labels[labels != 0]))  # sorting the labelled voxels only
    return _MaskSource(KIND_LABEL_MAP, present, lambda s: labels == s.number)


def _read_dicom_mask(path: Path) -> pydicom.Dataset:
    """Read a DICOM mask file, refusing anything that is neither a SEG nor an RTSTRUCT (and deflated files, which
    the reader inflates whole before anything can be checked)."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) == DEFLATED_TRANSFER_SYNTAX:
            raise SegmentationError("The DICOM file is stored deflated (compressed as a whole).", code="unreadable_file",
                                    fix="Export the segmentation with an uncompressed transfer syntax.")
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
        raise SegmentationError("The mask file is neither a NIfTI/NRRD label map nor readable DICOM.",
                                code="unreadable_file",
                                fix="Export the segmentation as NIfTI, DICOM-SEG or RTSTRUCT.") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in (SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS, RTSTRUCT_SOP_CLASS):
        raise SegmentationError(f"The mask file is DICOM but neither a segmentation (SEG) nor a structure "
                                f"set (RTSTRUCT): its modality is {ds.get('Modality', 'unknown')}.",
                                code="not_a_segmentation",
                                fix="Export the segmentation as NIfTI, DICOM-SEG or RTSTRUCT.")
    return ds


def _rtstruct_structures(ds: pydicom.Dataset) -> tuple[Structure, ...]:
    """ROIs in StructureSetROISequence order, each numbered by its own ROI Number (3006,0022)."""
    structures: list[Structure] = []
    for i, roi in enumerate(ds.get("StructureSetROISequence", []), start=1):
        try:
            number = int(roi.ROINumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise SegmentationError(f"Item {i} of the RTSTRUCT's StructureSetROISequence has no valid ROI Number: "
                                    "the file is inconsistent.", code="inconsistent_file", fix="Re-export it.") from exc
        if any(s.number == number for s in structures):
            raise SegmentationError(f"The RTSTRUCT declares ROI Number {number} more than once: the file is "
                                    "inconsistent.", code="inconsistent_file", fix="Re-export it.")
        structures.append(Structure(number, str(roi.get("ROIName", "") or "").strip()))
    return tuple(structures)


def _rtstruct_contours(ds: pydicom.Dataset, numbers: set[int]) -> dict[int, list[pydicom.Dataset]]:
    """Contour items per ROI Number; checked only when a ROI is rasterised (an ignored ROI may hold anything)."""
    contours: dict[int, list[pydicom.Dataset]] = {}
    for rc in ds.get("ROIContourSequence", []):
        try:
            number = int(rc.ReferencedROINumber)
        except (AttributeError, TypeError, ValueError):
            raise SegmentationError("The RTSTRUCT has contours without a valid Referenced ROI Number: the file is "
                                    "inconsistent.", code="inconsistent_file", fix="Re-export it.") from None
        if number not in numbers:
            raise SegmentationError(f"The RTSTRUCT has contours for ROI Number {number}, which is not declared in its "
                                    "StructureSetROISequence: the file is inconsistent.", code="inconsistent_file",
                                    fix="Re-export it.")
        contours.setdefault(number, []).extend(rc.get("ContourSequence", []))
    return contours


def _contour_points(item: pydicom.Dataset) -> np.ndarray:
    """ContourData (3006,0050) as floats, parsed from the file's bytes when still raw: pydicom's own DS
    conversion makes a validated Python object per number (about 1 s for 200 contours of a large lesion)."""
    if "ContourData" not in item:
        return np.zeros(0)
    element = item.get_item("ContourData")
    value = element.value
    if isinstance(value, bytes | bytearray):
        text = bytes(value).replace(b"\\", b" ").decode("ascii", errors="replace")
        try:
            return np.array(text.split(), dtype=float)
        except ValueError:
            pass  # an odd number format: let pydicom convert it (and report it) as usual
    return np.asarray(item.ContourData, dtype=float)


def _closed_polygons(items: Sequence[pydicom.Dataset], what: str) -> list[np.ndarray]:
    """Closed planar contours (N×3 mm arrays) of one ROI; other contour types are refused, points skipped."""
    polys = []
    for c in items:
        kind = str(c.get("ContourGeometricType", ""))
        points = _contour_points(c)
        if kind == "POINT":
            continue  # markers carry no volume; ROIs made only of points end up empty and are reported
        if kind != "CLOSED_PLANAR":
            raise SegmentationError(f"{what} has a {kind} contour; only closed planar contours "
                                    "enclose a volume.", code="open_contour",
                                    fix="Close the contour or delete it and re-export.")
        if points.size < 9 or points.size % 3:
            raise SegmentationError(f"{what} has a contour with fewer than 3 points.", code="open_contour",
                                    fix="Delete it and re-export.")
        polys.append(points.reshape(-1, 3))
    return polys


def _rasterise_contours(polys: Sequence[np.ndarray], name: str, image: sitk.Image,
                        tol_vox: np.ndarray) -> np.ndarray:
    """Boolean (z, y, x) mask of one ROI's closed planar contours on ``image``'s grid.

    Each polygon goes to the image slice whose centre is nearest to its plane (it must be within
    the tolerance of that centre, not between slices), and is filled with ``skimage.draw.polygon``
    (voxel centres inside the polygon). Several contours on one slice combine by XOR (even-odd rule),
    so a contour inside another is a hole, as the RTSTRUCT standard (PS3.3 C.8.8.6) intends. ``name``
    is the ROI as messages name it (:meth:`Structure.describe`).
    """
    nx, ny, nz = image.GetSize()
    out = np.zeros((nz, ny, nx), dtype=bool)
    for poly in polys:
        idx = physical_to_continuous_index(image, poly)
        k = idx[:, 2]
        if np.ptp(k) > 2 * tol_vox[2]:
            raise SegmentationError(f"{name} has a contour that is not parallel to the image slices (it spans "
                                    f"{np.ptp(k):.2f} slices): it was drawn on a reformatted or differently oriented "
                                    "series.", code="not_parallel", fix=EXPORT_HINT)
        plane = float(k.mean())
        slice_index = int(round(plane))
        if not 0 <= slice_index < nz:
            raise SegmentationError(f"{name} has a contour outside the image extent (at slice position "
                                    f"{plane:.1f} of 0..{nz - 1}): the structure set covers more than this series.",
                                    code="outside_image", fix=EXPORT_HINT)
        if abs(plane - slice_index) > tol_vox[2]:
            raise SegmentationError(f"{name} has a contour between two image slices ({abs(plane - slice_index):.2f} "
                                    f"slice spacings from the nearest slice centre): it was drawn on a series with "
                                    "other slice positions.", code="between_slices", fix=EXPORT_HINT)
        lo, hi = -0.5 - tol_vox[:2], np.array([nx, ny]) - 0.5 + tol_vox[:2]
        if np.any(idx[:, :2] < lo) or np.any(idx[:, :2] > hi):
            raise SegmentationError(f"{name} has a contour outside the image extent on slice {slice_index} "
                                    f"(the image field of view is {nx}×{ny} voxels): it was drawn on a series with a "
                                    "larger field of view.", code="outside_image", fix=EXPORT_HINT)
        rr, cc = fill_polygon(idx[:, 1], idx[:, 0], shape=(ny, nx))
        filled = np.zeros((ny, nx), dtype=bool)
        filled[rr, cc] = True
        out[slice_index] ^= filled
    return out


def _open_rtstruct(ds: pydicom.Dataset, image: sitk.Image, tol_vox: np.ndarray) -> _MaskSource:
    """An RTSTRUCT whose ROIs are rasterised on demand on the image's slices."""
    structures = _rtstruct_structures(ds)
    contours = _rtstruct_contours(ds, {s.number for s in structures})

    def polygons(s: Structure) -> list[np.ndarray]:
        return _closed_polygons(contours.get(s.number, []), s.describe(KIND_RTSTRUCT))

    def rasterise(s: Structure) -> np.ndarray:
        return _rasterise_contours(polygons(s), s.describe(KIND_RTSTRUCT), image, tol_vox)

    return _MaskSource(KIND_RTSTRUCT, structures, rasterise, polygons)


def _frame_geometry(ds: pydicom.Dataset, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, row/column direction cosines 2×3, pixel spacing (row, col)) of a SEG frame (0-based)."""
    def item(seq_name: str) -> pydicom.Dataset:
        per_frame = ds.PerFrameFunctionalGroupsSequence[frame]
        if seq_name in per_frame:
            return per_frame[seq_name][0]
        return ds.SharedFunctionalGroupsSequence[0][seq_name][0]

    position = np.array(item("PlanePositionSequence").ImagePositionPatient, dtype=float)
    cosines = np.array(item("PlaneOrientationSequence").ImageOrientationPatient, dtype=float).reshape(2, 3)
    spacing = np.array(item("PixelMeasuresSequence").PixelSpacing, dtype=float)
    return position, cosines, spacing


def _place_seg_frame(ds: pydicom.Dataset, frame: int, image: sitk.Image,
                     tol_vox: np.ndarray) -> tuple[tuple[int, int, int], float]:
    """Image (slice, row, column) of a SEG frame's first pixel, and the frame plane's distance from that slice.

    The frame's pixel (r, c) is at position + c·Δc·row_cosine + r·Δr·column_cosine (PS3.3 C.7.6.2.1.1).
    Its first, last-row and last-column pixels must land within the tolerance of image voxel
    centres with unit steps along the image's x and y, in one image slice plane: otherwise the SEG
    has another pixel size or orientation than the image. The distance from the slice centre (in
    slice spacings) is checked by the caller, and only for frames that hold segmented pixels.
    """
    position, cosines, spacing = _frame_geometry(ds, frame)
    rows, cols = int(ds.Rows), int(ds.Columns)
    corners_rc = np.array([[0, 0], [0, cols - 1], [rows - 1, 0]], dtype=float)
    physical = (position + corners_rc[:, 1:2] * spacing[1] * cosines[0]
                + corners_rc[:, 0:1] * spacing[0] * cosines[1])
    idx = physical_to_continuous_index(image, physical)
    start = np.round(idx[0])
    expected = start + np.array([[0, 0, 0], [cols - 1, 0, 0], [0, rows - 1, 0]], dtype=float)
    in_plane_error = np.abs(idx - expected)[:, :2]
    if np.any(in_plane_error > tol_vox[:2]) or np.any(np.abs(idx[:, 2] - idx[0, 2]) > tol_vox[2]):
        i_sp = image.GetSpacing()
        raise SegmentationError(
            f"The DICOM-SEG frames are {cols}×{rows} pixels at {_fmt_spacing(spacing[::-1])} mm and do not fall on "
            f"the image's {i_sp[0]:.4g}×{i_sp[1]:.4g} mm pixel grid (other pixel size, orientation or in-plane "
            "shift): it was drawn on another series.", code="grid_spacing", fix=EXPORT_HINT)
    return (int(start[2]), int(start[1]), int(start[0])), float(abs(idx[0, 2] - start[2]))


def _paste_frame(out: np.ndarray, pixels: np.ndarray, where: tuple[int, int, int], plane_offset: float,
                 tol_slices: float, what: str) -> None:
    """OR a boolean frame into ``out`` at (slice, row, col); refuse pixels outside the image or between slices."""
    nz, ny, nx = out.shape
    k, r0, c0 = where
    what = what[0].upper() + what[1:]
    rows, cols = pixels.shape
    total = int(pixels.sum())
    if not total:
        return
    if not 0 <= k < nz:
        raise SegmentationError(f"{what} has {total} voxels on a slice outside the image extent (slice {k} of "
                                f"0..{nz - 1}): the segmentation covers more than this series.", code="outside_image",
                                fix=EXPORT_HINT)
    if plane_offset > tol_slices:
        raise SegmentationError(f"The DICOM-SEG has a frame between two image slices ({plane_offset:.2f} slice "
                                "spacings from the nearest slice centre): it was drawn on a series with other slice "
                                "positions.", code="between_slices", fix=EXPORT_HINT)
    r_lo, r_hi = max(r0, 0), min(r0 + rows, ny)
    c_lo, c_hi = max(c0, 0), min(c0 + cols, nx)
    inside = pixels[r_lo - r0:r_hi - r0, c_lo - c0:c_hi - c0] if r_lo < r_hi and c_lo < c_hi else pixels[:0, :0]
    if int(inside.sum()) != total:
        raise SegmentationError(f"{what} has {total - int(inside.sum())} voxels outside the image field of view on "
                                f"slice {k}: it was drawn on a series with a larger field of view.",
                                code="outside_image", fix=EXPORT_HINT)
    out[k, r_lo:r_hi, c_lo:c_hi] |= inside


def _segment_name(item: pydicom.Dataset) -> str:
    """SegmentLabel, or "" when empty or withheld by de-identification (replaced by ``Segment <n>``)."""
    name = str(item.get("SegmentLabel", "") or "").strip()
    return "" if name == f"Segment {int(item.SegmentNumber)}" else name


def _open_seg(path: Path, image: sitk.Image, tol_vox: np.ndarray) -> _MaskSource:
    """A DICOM-SEG (BINARY, FRACTIONAL or LABELMAP) whose frames are placed on the image grid by geometry."""
    import highdicom as hd  # here: its import costs 0.3 s in every mask job, and only a SEG needs it

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom/pydicom raise many types for a malformed SEG
        raise SegmentationError(f"The DICOM-SEG could not be decoded ({exc}).", code="unreadable_file",
                                fix="Re-export it.") from exc
    # segment 0 is the background of a LABELMAP SEG, not a structure
    structures = tuple(Structure(int(s.SegmentNumber), _segment_name(s)) for s in seg.SegmentSequence
                       if int(s.SegmentNumber) != 0)
    seg_type = str(seg.SegmentationType)
    max_fraction = float(seg.get("MaximumFractionalValue", 1) or 1)
    nx, ny, nz = image.GetSize()
    cache: dict[int, np.ndarray] = {}

    def frame_segment(frame: int) -> int | None:
        for group in (seg.PerFrameFunctionalGroupsSequence[frame], seg.SharedFunctionalGroupsSequence[0]):
            if "SegmentIdentificationSequence" in group:
                return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        return None

    def rasterise(s: Structure) -> np.ndarray:
        if s.number in cache:
            return cache[s.number]
        out = np.zeros((nz, ny, nx), dtype=bool)
        for frame in range(int(seg.get("NumberOfFrames", 1))):
            owner = frame_segment(frame)
            if seg_type != "LABELMAP" and owner != s.number:
                continue
            stored = seg.get_stored_frame(frame + 1)
            if seg_type == "LABELMAP":
                pixels = stored == s.number
            elif seg_type == "FRACTIONAL":
                pixels = stored >= FRACTIONAL_THRESHOLD * max_fraction
            else:
                pixels = stored > 0
            try:
                where, plane_offset = _place_seg_frame(seg, frame, image, tol_vox)
            except (AttributeError, KeyError, IndexError, TypeError, ValueError):
                raise SegmentationError(f"The DICOM-SEG frame {frame + 1} lacks its geometry (PlanePositionSequence, "
                                        "PlaneOrientationSequence or PixelMeasuresSequence): the file is incomplete.",
                                        code="inconsistent_file", fix="Re-export it.") from None
            _paste_frame(out, pixels, where, plane_offset, float(tol_vox[2]), s.describe(KIND_SEG))
        cache[s.number] = out
        return out

    return _MaskSource(KIND_SEG, structures, rasterise)


def _open_mask(mask_path: Path, image: sitk.Image, tol_vox: np.ndarray) -> tuple[_MaskSource, pydicom.Dataset | None]:
    """Open a mask file of any supported format; returns the source and, for DICOM, its header."""
    mask_path = Path(mask_path)
    if not mask_path.is_file():
        raise SegmentationError("The mask file does not exist.", code="unreadable_file", fix="Check the path given.")
    if is_volume_file(mask_path):
        return _open_label_map(mask_path, image, tol_vox), None
    fmt = label_map_format(mask_path)
    if fmt:  # a label map under another name (the upload page's current file is `segmentation`)
        with readable_name(mask_path, fmt) as named:
            return _open_label_map(named, image, tol_vox), None  # its voxels are read before the link goes
    ds = _read_dicom_mask(mask_path)
    if ds.SOPClassUID == RTSTRUCT_SOP_CLASS:
        return _open_rtstruct(ds, image, tol_vox), ds
    return _open_seg(mask_path, image, tol_vox), ds


# ----------------------------------------------------------------------------------------------
# Which structures go into the label map
# ----------------------------------------------------------------------------------------------


def _noun(source: _MaskSource) -> str:
    return "ROI" if source.kind == KIND_RTSTRUCT else "segment"


def _number_noun(source: _MaskSource) -> str:
    return "ROI Number" if source.kind == KIND_RTSTRUCT else "segment number"


def _find_by_name(source: _MaskSource, name: str, lesion_id: str = "", label: int | None = None) -> Structure:
    """The structure called ``name``; refuses absent or ambiguous names, listing what exists.

    When several structures share the name (real SEGs repeat 'Neoplasm, Secondary'), ``label`` (the lesion
    table's label) picks the one with that number; without a matching number the name is ambiguous.
    """
    matches = [s for s in source.structures if s.name and s.name == name.strip()]
    what = _noun(source)
    found = _fmt_names(sorted({s.name for s in source.structures if s.name}))
    table = f" is in the lesion table (lesion {lesion_id})" if lesion_id else " was requested"
    if not matches:
        near = [s.name for s in source.structures if s.name.casefold() == name.strip().casefold() and s.name]
        hint = f" (a {what} named '{near[0]}' differs only in case)" if near else ""
        raise SegmentationError(f"{what[0].upper()}{what[1:]} '{name}'{table} but not in the {source.kind}{hint}; "
                                f"{what}s found: {found}.", code="lesion_not_found",
                                fix=f"Name the {what} in the lesion table as the {source.kind} does, or add it to the "
                                    "segmentation and re-export." if lesion_id else f"Choose one of the {what}s found.")
    if len(matches) == 1:
        return matches[0]
    for s in matches:
        if s.number == label:
            return s
    numbers = ", ".join(str(s.number) for s in matches)
    given = f"; the lesion table gives label {label}, which is none of them" if lesion_id and label is not None else ""
    where = "in the label column of the lesion table" if lesion_id else "as the label (--label) instead of the name"
    raise SegmentationError(f"{what[0].upper()}{what[1:]} name '{name}' is used by {len(matches)} {what}s "
                            f"({_number_noun(source)}s {numbers}) in the {source.kind}{given}:", code="ambiguous_name",
                            fix=f"put the wanted {_number_noun(source)} {where}.")


def _find_by_number(source: _MaskSource, number: int, lesion_id: str = "") -> Structure:
    """The structure with label value / segment number / ROI Number ``number``; refuses an absent one."""
    for s in source.structures:
        if s.number == number:
            return s
    table = f" is in the lesion table (lesion {lesion_id})" if lesion_id else " was requested"
    if source.kind == KIND_LABEL_MAP:
        found = ", ".join(str(s.number) for s in source.structures) or "none"
        raise SegmentationError(f"Label {number}{table} but is empty in the mask; labels found: {found}.",
                                code="lesion_not_found", fix="Segment the lesion or remove it from the lesion table.")
    if source.kind == KIND_RTSTRUCT:
        found = ", ".join(s.describe(source.kind) for s in source.structures) or "none"
        raise SegmentationError(f"ROI Number {number}{table} but not in the RTSTRUCT; found: {found}.",
                                code="lesion_not_found",
                                fix="Give the lesion's ROI Number or name in the lesion table, or add the ROI and "
                                    "re-export.")
    found = ", ".join(f"{s.number} ('{s.name}')" if s.name else f"{s.number} (no name)"
                      for s in source.structures) or "none"
    raise SegmentationError(f"Segment {number}{table} but not in the {source.kind}; found: {found}.",
                            code="lesion_not_found",
                            fix="Give the lesion's segment number or name in the lesion table, or add the segment and "
                                "re-export.")


def _match_lesion(source: _MaskSource, lesion: LesionSpec) -> Structure:
    """The structure a lesion of the table stands for: by ``roi_name`` (SEG/RTSTRUCT, the label deciding
    between structures that share the name), else by number (``label``)."""
    if lesion.roi_name and source.kind != KIND_LABEL_MAP:
        return _find_by_name(source, lesion.roi_name, lesion.lesion_id, lesion.label)
    return _find_by_number(source, lesion.label, lesion.lesion_id)


def _check_lesion_table(lesions: Sequence[LesionSpec]) -> None:
    """Refuse a lesion table with repeated labels or lesion ids (they would be ambiguous).

    A repeated ``roi_name`` is allowed when the file has several structures of that name (each lesion's
    label then picks its own); :func:`_select` refuses it when two lesions end up on one structure.
    """
    for field in ("label", "lesion_id"):
        values = [getattr(les, field) for les in lesions if getattr(les, field) != ""]
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise SegmentationError(f"The lesion table repeats {field} {', '.join(repeated)} for one patient and "
                                    "modality; each lesion needs its own.", code="lesion_table",
                                    fix="Correct the lesion table.")


def _one_structure_per_lesion(source: _MaskSource, selections: Sequence[_Selection],
                              lesions: Sequence[LesionSpec]) -> None:
    """Refuse two lesions of the table that select the same structure."""
    by_id = {les.lesion_id: les for les in lesions}
    seen: dict[Structure, _Selection] = {}
    for sel in selections:
        first = seen.setdefault(sel.structure, sel)
        if first is sel:
            continue
        a, b = by_id.get(first.lesion_id), by_id.get(sel.lesion_id)
        name = a.roi_name if a is not None and b is not None and a.roi_name and a.roi_name == b.roi_name else ""
        why = (f"repeats roi_name '{name}' (lesions {first.lesion_id} and {sel.lesion_id}) but the {source.kind} has "
               f"one {_noun(source)} of that name, {sel.structure.describe(source.kind)}" if name else
               f"has lesions {first.lesion_id} and {sel.lesion_id} that both select "
               f"{sel.structure.describe(source.kind)}")
        raise SegmentationError(f"The lesion table {why}: each lesion needs its own structure.", code="lesion_table",
                                fix=f"Correct the lesion table (for a name several {_noun(source)}s share, put the "
                                    f"wanted {_number_noun(source)} in the label column).")


def _select(source: _MaskSource, lesions: Sequence[LesionSpec] | None, roi: Sequence[str] | None,
            label: int | None) -> tuple[list[_Selection], list[Structure]]:
    """The structures to rasterise with the value each gets, and the structures ignored (file order).

    With a lesion table, the table chooses the lesions: label maps match by label value; SEG and RTSTRUCT
    by ``roi_name`` when the table gives one (several structures of that name: the one whose number is
    the lesion's label), else by number (``label`` = segment number / ROI Number). Structures the table
    does not name are ignored. Without a lesion table every structure is kept with its own number.
    ``roi`` (names or lesion ids; values 1..n in the given order) or ``label`` (value 1) narrows the
    choice to those structures; the others are ignored.
    """
    if roi is not None and label is not None:
        raise ValueError("give roi or label, not both")
    if not source.structures:
        raise SegmentationError(f"The {source.kind} is empty: it contains no segmented voxels or structures.",
                                code="empty_mask", fix="Check that the segmentation was saved before export.")
    selections: list[_Selection] = []
    if lesions:
        _check_lesion_table(lesions)
        if roi is not None:
            for value, name in enumerate(roi, start=1):
                chosen = [les for les in lesions if name in (les.roi_name, les.lesion_id)]
                if len(chosen) > 1:
                    raise SegmentationError(f"'{name}' is the roi_name of lesions "
                                            f"{', '.join(les.lesion_id for les in chosen)} in the lesion table:",
                                            code="ambiguous_name", fix="select one by its lesion id.")
                if chosen:
                    selections.append(_Selection(_match_lesion(source, chosen[0]), value, chosen[0].lesion_id))
                elif source.kind == KIND_LABEL_MAP:
                    ids = _fmt_names([les.roi_name or les.lesion_id for les in lesions])
                    raise SegmentationError(f"'{name}' is neither a ROI name nor a lesion id in the lesion table "
                                            f"(found: {ids}).", code="lesion_not_found",
                                            fix="Select a lesion of the lesion table.")
                else:
                    selections.append(_Selection(_find_by_name(source, name), value, ""))
        elif label is not None:
            chosen = [les for les in lesions if les.label == label]
            if not chosen:
                raise SegmentationError(f"Label {label} is not in the lesion table (labels: "
                                        f"{', '.join(str(les.label) for les in lesions)}).", code="lesion_not_found",
                                        fix="Select a label of the lesion table.")
            selections.append(_Selection(_match_lesion(source, chosen[0]), 1, chosen[0].lesion_id))
        else:
            selections = [_Selection(_match_lesion(source, les), les.label, les.lesion_id) for les in lesions]
        _one_structure_per_lesion(source, selections, lesions)
    elif roi is not None:
        if source.kind == KIND_LABEL_MAP:
            raise SegmentationError(f"A ROI name ('{', '.join(roi)}') was given but a label map has no names:",
                                    code="lesion_not_found",
                                    fix="give the label value instead, or a lesion table with roi_name.")
        selections = [_Selection(_find_by_name(source, name), value, "") for value, name in enumerate(roi, start=1)]
    elif label is not None:
        selections = [_Selection(_find_by_number(source, label), 1, "")]
    else:
        selections = [_Selection(s, s.number, "") for s in source.structures]
    chosen_structures = {sel.structure for sel in selections}
    if len(chosen_structures) < len(selections):
        repeated = [sel.structure.describe(source.kind) for sel in selections
                    if sum(other.structure == sel.structure for other in selections) > 1]
        raise SegmentationError(f"{repeated[0][0].upper()}{repeated[0][1:]} was selected more than once;",
                                code="ambiguous_name", fix="select each structure once.")
    for sel in selections:
        if sel.value > 65535:
            raise SegmentationError(f"{sel.structure.describe(source.kind)} would get label {sel.value}, above the "
                                    "largest label value 65535:", code="lesion_table",
                                    fix="give it a smaller label in the lesion table.")
    return selections, [s for s in source.structures if s not in chosen_structures]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _compose(source: _MaskSource, selections: Sequence[_Selection], image: sitk.Image) -> np.ndarray:
    """Rasterise the selections into one UInt16 (z, y, x) array; refuse empty or overlapping lesions."""
    nx, ny, nz = image.GetSize()
    out = np.zeros((nz, ny, nx), dtype=np.uint16)
    owner: dict[int, _Selection] = {}
    for sel in selections:
        full = source.rasterise(sel.structure)
        count = int(np.count_nonzero(full))
        name = sel.structure.describe(source.kind)
        lesion = f"lesion {sel.lesion_id} ({name})" if sel.lesion_id else name
        if count == 0:
            raise SegmentationError(f"{lesion[0].upper()}{lesion[1:]} is in the {source.kind} but covers no voxel of "
                                    "the image (empty, or smaller than one voxel).", code="empty_lesion",
                                    fix="Redraw it or remove it from the lesion table.")
        # work on the slices the lesion touches only: a 512×512×300 volume costs ~0.1 s per whole-volume pass
        slices = np.flatnonzero(full.reshape(nz, -1).any(axis=1))
        slab = slice(int(slices[0]), int(slices[-1]) + 1)
        voxels, target = full[slab], out[slab]
        clash = voxels & (target != 0)
        if clash.any():
            other_value = int(np.bincount(target[clash]).argmax())
            other = owner[other_value]
            other_name = other.structure.describe(source.kind)
            other_lesion = f"lesion {other.lesion_id} ({other_name})" if other.lesion_id else other_name
            raise SegmentationError(f"{lesion[0].upper()}{lesion[1:]} and {other_lesion} overlap in {int(clash.sum())} "
                                    "voxels; a voxel can belong to one lesion only.", code="overlap",
                                    fix="Edit the segmentations so that they do not overlap.")
        target[voxels] = sel.value  # a view of ``out``
        owner[sel.value] = sel
    return out


def _as_names(roi: str | Sequence[str] | None) -> list[str] | None:
    """``roi`` as a list of names (one name given as a string is one selection)."""
    if roi is None:
        return None
    names = [roi] if isinstance(roi, str) else [str(r) for r in roi]
    if not names:
        raise ValueError("roi must name at least one structure")
    return names


def import_segmentation(mask_path: Path, image: sitk.Image, lesions: Sequence[LesionSpec] | None = None,
                        roi: str | Sequence[str] | None = None, label: int | None = None, *,
                        reference: ImageReference | None = None,
                        tolerance_mm: float | None = None) -> ImportedSegmentation:
    """Import a NIfTI/NRRD label map, DICOM-SEG or RTSTRUCT onto ``image``'s grid, or raise SegmentationError.

    A structure's number is its number in the file, one meaning for the three formats: the label value
    (NIfTI/NRRD), the SegmentNumber (DICOM-SEG), the ROI Number (RTSTRUCT; not its position in the file).

    With ``lesions`` (the lesion table of this patient and modality) the table chooses the lesions: label
    maps match by label value; SEG and RTSTRUCT by ``roi_name`` when given (when several structures share
    the name, the one whose number equals the lesion's ``label``), else by number (``label``). Each lesion
    gets its ``LesionSpec.label`` in the label map; structures the table does not name (organs at risk,
    'Body', 'Edema', ...) are ignored and listed in ``ignored``; overlap is checked between lesions only.
    Without a lesion table every structure is kept with its own number. ``roi`` (one name, or several:
    values 1..n in the given order) or ``label`` (a number as in the file, or a lesion table label; value 1)
    selects structures, the others being ignored. ``reference`` (from :func:`image_reference`) also checks
    that a SEG/RTSTRUCT was drawn on the image's series. ``tolerance_mm`` replaces the default geometric
    tolerance (:data:`GRID_TOLERANCE_VOXELS` of a voxel).
    """
    tol_vox = _tolerance_voxels(image, tolerance_mm)
    source, ds = _open_mask(Path(mask_path), image, tol_vox)
    if ds is not None and reference is not None:
        check_references(ds, source.kind, reference)
    selections, ignored = _select(source, lesions, _as_names(roi), label)
    array = _compose(source, selections, image)
    label_map = sitk.GetImageFromArray(array)
    label_map.CopyInformation(image)
    # only the labelled voxels: a bincount of the whole volume would make an int64 copy of it (420 MB at 512x512x200)
    counts = np.bincount(array[array != 0], minlength=max((sel.value for sel in selections), default=0) + 1)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    ordered = sorted(selections, key=lambda sel: sel.value)
    summaries = tuple(LabelSummary(sel.value, sel.lesion_id, sel.structure.describe(source.kind),
                                   int(counts[sel.value]), int(counts[sel.value]) * voxel_ml) for sel in ordered)
    polygons = tuple(tuple(source.polygons(sel.structure)) for sel in ordered) if source.polygons else ()
    return ImportedSegmentation(source.kind, label_map, summaries, tuple(s.describe(source.kind) for s in ignored),
                                polygons)


def load_label_map(mask_path: Path, image: sitk.Image, lesions: Sequence[LesionSpec] | None = None,
                   roi: str | None = None, label: int | None = None, *,
                   reference: ImageReference | None = None, tolerance_mm: float | None = None) -> sitk.Image:
    """The UInt16 label map of :func:`import_segmentation` (same arguments, same refusals).

    ``label`` and the numbers kept without a lesion table are the structures' numbers in the file: NIfTI
    label value, SEG segment number, RTSTRUCT ROI Number. ``roi`` or ``label`` selects one structure and
    the result is binary (0/1).
    """
    return import_segmentation(mask_path, image, lesions, roi, label, reference=reference,
                               tolerance_mm=tolerance_mm).label_map


def _mask_kind(mask_path: Path) -> str:
    """Format of a mask file from its name, content or SOP class, for the verdict; "" when unrecognised."""
    if is_volume_file(mask_path) or label_map_format(mask_path):
        return KIND_LABEL_MAP
    try:
        sop_class = str(pydicom.dcmread(mask_path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
                        .get("SOPClassUID", ""))
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        return ""
    return {RTSTRUCT_SOP_CLASS: KIND_RTSTRUCT, SEG_SOP_CLASS: KIND_SEG, LABELMAP_SEG_SOP_CLASS: KIND_SEG}.get(sop_class, "")


def _image_description(image_path: Path) -> str:
    """'CT' / 'PET' for a DICOM folder (from the Modality of its first file), else 'image'."""
    if not image_path.is_dir():
        return "image"
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(image_path))
    if not files:
        return "image"
    modality = str(pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    return {"CT": "CT", "PT": "PET", "MR": "MR"}.get(modality, "image")


def check_segmentation(image_path: Path, mask_path: Path, lesions: Sequence[LesionSpec] | None = None,
                       tolerance_mm: float | None = None, roi: Sequence[str] | None = None, *,
                       min_volume_ml: float | None = None, modality: str | None = None) -> SegmentationVerdict:
    """Validate a segmentation against its image and say, in words, whether and why it can be used.

    Runs the validation the pipeline runs (:func:`~palmares_radiomics.validate.validate_segmentation`, with the
    DICOM references of the image folder), so a verdict of OK means the mask stage accepts the mask. ``lesions``
    (the patient's lesion table for this modality) chooses the lesions; ``roi`` (several names) judges only
    those structures, valued 1..n in the given order. Structures left out are listed in ``ignored``.
    ``min_volume_ml`` defaults to the study default (``validate.DEFAULT_MIN_LESION_VOLUME_ML``); ``modality``
    ("ct"/"pet", for the body-region check) defaults to the lesions' modality, else to the image's (a PET
    series: "pet", anything else "ct"). Errors reading the image itself propagate: they are not a
    segmentation problem.
    """
    from .validate import DEFAULT_MIN_LESION_VOLUME_ML, _validate

    image_path, mask_path = Path(image_path), Path(mask_path)
    image = read_image(image_path)
    reference = image_reference(image_path)
    noun = _image_description(image_path)
    if modality is None:
        modality = lesions[0].modality if lesions else ("pet" if noun == "PET" else "ct")
    validation = _validate(mask_path, image, lesions, modality=modality, noun=noun, reference=reference,
                           tolerance_mm=tolerance_mm, roi=roi, series_hint="",
                           min_volume_ml=DEFAULT_MIN_LESION_VOLUME_ML if min_volume_ml is None else min_volume_ml)
    return SegmentationVerdict(validation.ok, validation.kind, tuple(p.text() for p in validation.problems),
                               tuple(w.text() for w in validation.warnings), validation.lesions,
                               tuple(int(n) for n in image.GetSize()),  # type: ignore[arg-type]
                               tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
                               validation.ignored)
