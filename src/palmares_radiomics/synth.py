"""Synthetic multicentre cohort: hospital-like DICOM exports, radiologists' masks, a clinical export and the truth.

``synthesize_cohort`` writes, from a seed alone, what the study receives from its sites (see
``docs/data-layout.md``) plus the answers a test needs: every PHI marker planted, the baseline series
UIDs, lesion positions, HU and SUVbw, and the survival outcomes.

Design choices (the truth stays meaningful because every one of them is fixed here):

- **Sessions.** The baseline exam is one PET/CT session (one study, one FrameOfReferenceUID): a
  contrast-enhanced diagnostic CT (``TC TORACE ADDOME MDC``) acquired 3 minutes before an FDG PET
  (``PET WB AC``); for every second patient the same session also holds a non-attenuation-corrected
  PET (``PET WB NAC``, CorrectedImage without ATTN) and an older diagnostic CT study 150-400 days
  before therapy start (own study and frame of reference, no lesions yet), so series selection is real.
- **Geometry.** CT: ``shape`` = (columns, rows, slices), 2.0 mm pixels, 2.5 mm slices, axial HFS,
  centred on the table axis. PET: the same field of view on a 4 mm grid (about half the matrix).
- **Values.** Tissues: air -1000 HU / SUV 0, soft tissue 40 HU / SUV 1.0, lung -850 HU / SUV 0.4,
  liver 60 HU / SUV 2.0, spine 700 HU / SUV 1.5. Lesions are spheres (hard edges, no partial volume)
  with the HU of ``LESION_CT_HU`` and a seeded SUVbw in ``LESION_SUV_RANGE``. Noise: additive Gaussian,
  SD ``CT_NOISE_SD_HU`` = 8 HU on CT, multiplicative Gaussian, SD ``PET_NOISE_REL_SD`` = 5 % of the
  local SUV on PET, so a lesion's mean stays at its truth value.
- **PET units.** Bq/ml decay-corrected to series start (DecayCorrection START):
  activity = SUVbw x dose x 2^(-(series time - injection time) / T1/2) / weight_g, stored as uint16
  with a per-slice RescaleSlope (the DS string written is the one used, so stored x slope is exact).
- **PHI.** Every value a PS3.15 Basic-profile de-identifier must remove or replace, and every folder
  name derived from one, carries a unique marker ``ZQX`` + 6 upper-case letters/digits, listed in
  ``truth/markers.txt`` (``truth/markers.csv`` says where each one went). Dates are real dates, recorded
  in ``truth/patients.csv``. Values a de-identifier keeps (sex, age, weight, size, pixel data, modality,
  manufacturer, acquisition parameters, lesion and organ ROI names) carry no marker; one extra RTSTRUCT ROI
  name (a reader's note, not a lesion) does, as free text typed in a structure set can.
- **Segmentations as radiologists export them** (issue 13). RTSTRUCTs also hold structures that are not
  lesions (:data:`RTSTRUCT_OTHER_ROIS`: 'Body' enclosing everything, 'Spinal-Cord', both lungs, 'Liver',
  an 'Edema' around the first lesion, and the note ROI), and ROI Numbers are not positions: the other ROIs
  come first with numbers 1-9 in a shuffled order, lesions follow from :data:`RTSTRUCT_FIRST_LESION_NUMBER`;
  the lesion table's label of an RTSTRUCT lesion is its ROI Number. DICOM-SEG lesions all carry the segment
  label :data:`SEG_SHARED_LABEL` (as real SEG tools repeat it); the lesion table names them by it and tells
  them apart by the segment number in its label column.
- **Determinism.** All randomness comes from ``numpy.random.default_rng([seed, ...])`` streams and all
  UIDs are ``2.25.<int>`` derived from SHA-256 of the seed and the object's role; no wall-clock time is
  read, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    RTStructureSetStorage,
)
from pydicom.valuerep import format_number_as_ds
from skimage import measure

from .errors import ConfigError
from .files import atomic_path, write_text

CT_PIXEL_MM = 2.0
CT_SLICE_MM = 2.5
PET_PIXEL_MM = 4.0
PET_SLICE_MM = 4.0
CT_RESCALE_INTERCEPT = -1024.0
CT_NOISE_SD_HU = 8.0
PET_NOISE_REL_SD = 0.05
#: Largest stored PET value per slice; the slice's RescaleSlope maps it to the slice maximum.
PET_STORED_MAX = 32000
F18_HALF_LIFE_S = 6586.2
#: Minutes from injection to PET series start (uptake time) and from CT start to PET start.
UPTAKE_MINUTES = (55, 70)
CT_BEFORE_PET_MINUTES = 3
BASELINE_DAYS_BEFORE_START = (5, 40)
OLD_CT_DAYS_BEFORE_START = (150, 400)
MARKER_PREFIX = "ZQX"
MARKER_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MARKER_LENGTH = 6
SEGMENTATION_FORMATS: tuple[str, ...] = ("nifti", "seg", "rtstruct")
SEGMENTATION_FILES = MappingProxyType({"nifti": "mask.nii.gz", "seg": "seg.dcm", "rtstruct": "rtstruct.dcm"})
LESION_ORGANS: tuple[str, ...] = ("liver", "bone", "lymph_node", "lung")
LESION_CT_HU = MappingProxyType({"liver": 30.0, "bone": 1000.0, "lymph_node": 55.0, "lung": 20.0})
LESION_SUV_RANGE = MappingProxyType({"liver": (5.0, 12.0), "bone": (4.0, 10.0), "lymph_node": (4.0, 12.0),
                                     "lung": (4.0, 9.0)})
LESION_RADIUS_MM = MappingProxyType({"liver": (8.0, 15.0), "bone": (6.0, 10.0), "lymph_node": (6.0, 10.0),
                                     "lung": (6.0, 10.0)})
#: Tissue classes painted in this order (later wins): value = (HU, SUV).
TISSUES = MappingProxyType({"air": (-1000.0, 0.0), "soft": (40.0, 1.0), "lung": (-850.0, 0.4),
                            "liver": (60.0, 2.0), "bone": (700.0, 1.5)})
LESION_GAP_MM = 8.0
#: RTSTRUCT structures that are not lesions, in file order: (ROIName, ROI Number, RTROIInterpretedType). The
#: numbers are deliberately not the positions; None as name: the note ROI, whose name carries a PHI marker.
RTSTRUCT_OTHER_ROIS: tuple[tuple[str | None, int, str], ...] = (
    ("Spinal-Cord", 2, "ORGAN"), ("Lung-Left", 3, "ORGAN"), ("Lung-Right", 4, "ORGAN"), ("Liver", 5, "ORGAN"),
    ("Body", 1, "EXTERNAL"), ("Edema", 9, "ORGAN"), (None, 8, "MARKER"))
#: ROI Number of an RTSTRUCT patient's first lesion (the others follow): its label in the lesion table.
RTSTRUCT_FIRST_LESION_NUMBER = 10
#: Segment label of every DICOM-SEG lesion (several segments share it, as in real SEGs).
SEG_SHARED_LABEL = "Neoplasm, Secondary"
#: The 'Edema' ROI is the first lesion's sphere grown by this much.
EDEMA_MARGIN_MM = 3.0
#: Smallest CT matrix (columns/rows, slices) on which every seed places at least one lesion in its organ.
MIN_MATRIX_INPLANE = 32
MIN_SLICES = 16

CLINICAL_COLUMNS: tuple[str, ...] = (
    "site", "patient_id", "birth_date", "advanced_diagnosis_date", "cdk46i_start_date", "cdk46i_line", "cdk46i_drug",
    "endocrine_partner", "menopausal_status", "disease_setting", "visceral_disease", "bone_only_disease", "ecog",
    "progression_date", "death_date", "last_followup_date")
LESION_TABLE_COLUMNS: tuple[str, ...] = ("site", "patient_id", "modality", "lesion_id", "label", "roi_name", "organ")
TRUTH_LESION_COLUMNS: tuple[str, ...] = (
    "site", "patient_id", "modality", "lesion_id", "organ", "label", "roi_name", "volume_ml", "n_voxels", "ct_hu",
    "suvbw", "center_mm_x", "center_mm_y", "center_mm_z", "radius_mm")
TRUTH_PATIENT_COLUMNS: tuple[str, ...] = (
    "site", "patient_id", "patient_name", "birth_date", "cdk46i_start_date", "segmentation_format", "segmentation_date",
    "study_uid", "frame_of_reference_uid", "study_date", "ct_series_uid", "ct_series_time", "pet_series_uid",
    "pet_series_time", "pet_nac_series_uid", "old_ct_study_uid", "old_ct_series_uid", "old_ct_study_date",
    "weight_kg", "height_m", "dose_bq", "injection_datetime", "uptake_s", "suvbw_scale_g_per_ml",
    "n_lesions", "os_days", "os_event", "pfs_days", "pfs_event")

FAMILY_NAMES = ("ROSSI", "RUSSO", "FERRARI", "ESPOSITO", "BIANCHI", "ROMANO", "COLOMBO", "RICCI", "MARINO",
                "GRECO", "BRUNO", "GALLO", "CONTI", "DE LUCA", "MANCINI", "COSTA", "GIORDANO", "RIZZO")
GIVEN_NAMES = ("MARIA", "ANNA", "GIUSEPPINA", "ROSA", "ANGELA", "GIOVANNA", "TERESA", "LUCIA", "CARMELA",
               "FRANCESCA", "ELENA", "CHIARA", "PAOLA", "SILVIA", "LAURA", "VALENTINA", "GIULIA", "SARA")
CITIES = ("MILANO", "TORINO", "BOLOGNA", "FIRENZE", "ROMA", "NAPOLI", "BARI", "PALERMO", "GENOVA", "PADOVA")


@dataclass(frozen=True, slots=True)
class Vendor:
    """A PET/CT scanner make; sites cycle through these so headers vary like a real consortium."""

    manufacturer: str
    model: str
    software: str
    kernel: str


VENDORS: tuple[Vendor, ...] = (
    Vendor("GE MEDICAL SYSTEMS", "Discovery MI", "pet_coreload.46.00", "STANDARD"),
    Vendor("SIEMENS", "Biograph Vision 600", "VG80B", "Br38f"),
    Vendor("Philips", "Vereos PET/CT", "2.0.5", "B"),
)


@dataclass(frozen=True, slots=True)
class CohortSummary:
    """What ``synthesize_cohort`` wrote: counts, the PHI markers planted, and where."""

    out_dir: Path
    n_patients: int
    n_lesions: int
    n_files: int
    markers: tuple[str, ...]
    seed: int
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Grid:
    """An axial image grid (IOP 1/0/0/0/1/0): ``origin`` is the centre of the first voxel in LPS mm."""

    cols: int
    rows: int
    slices: int
    pixel_mm: float
    slice_mm: float
    origin: tuple[float, float, float]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (slices, rows, columns) used for volumes in this module."""
        return (self.slices, self.rows, self.cols)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates (x per column, y per row, z per slice) in LPS mm."""
        x = self.origin[0] + self.pixel_mm * np.arange(self.cols)
        y = self.origin[1] + self.pixel_mm * np.arange(self.rows)
        z = self.origin[2] + self.slice_mm * np.arange(self.slices)
        return x, y, z

    def mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x) coordinate arrays of shape (S,1,1), (1,R,1), (1,1,C)."""
        x, y, z = self.axes()
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def slice_z(self, k: int) -> float:
        """z (LPS mm) of slice ``k``."""
        return self.origin[2] + self.slice_mm * k

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return self.pixel_mm * self.pixel_mm * self.slice_mm / 1000.0

    def affine_ras(self) -> np.ndarray:
        """NIfTI affine for an (x=column, y=row, z=slice) array: the DICOM LPS geometry flipped to RAS."""
        return np.array([[-self.pixel_mm, 0.0, 0.0, -self.origin[0]],
                         [0.0, -self.pixel_mm, 0.0, -self.origin[1]],
                         [0.0, 0.0, self.slice_mm, self.origin[2]],
                         [0.0, 0.0, 0.0, 1.0]])


@dataclass(frozen=True, slots=True)
class Anatomy:
    """Phantom anatomy in LPS mm, scaled to the field of view: body ellipse, lungs, liver, spine."""

    cx: float
    cy: float
    z_mid: float
    body_ax: float
    body_ay: float
    lung_dx: float
    lung_cy: float
    lung_ax: float
    lung_ay: float
    liver_cx: float
    liver_cy: float
    liver_a: float
    spine_cy: float
    spine_r: float
    z_min: float
    z_max: float


@dataclass(frozen=True, slots=True)
class Lesion:
    """One synthetic lesion: a sphere with known centre, radius, CT HU and SUVbw."""

    lesion_id: str
    label: int
    organ: str
    center_mm: tuple[float, float, float]
    radius_mm: float
    ct_hu: float
    suvbw: float
    name: str = ""

    @property
    def roi_name(self) -> str:
        """ROI / segment name the radiologist uses for this lesion (kept by de-identification: no PHI)."""
        return self.name or f"{self.lesion_id}_{self.organ}"


@dataclass(frozen=True, slots=True)
class Site:
    """One centre: code, scanner and its identifying equipment/institution values (each with a marker)."""

    code: str
    index: int
    vendor: Vendor
    institution: str
    institution_address: str
    department: str
    station: str
    device_serial: str
    software_versions: str


@dataclass(frozen=True, slots=True)
class Clinical:
    """One row of the clinical export, with dates as ``datetime.date`` (None = missing)."""

    birth_date: dt.date
    diagnosis_date: dt.date
    start_date: dt.date
    drug: str
    partner: str
    menopausal_status: str
    disease_setting: str
    ecog: int
    progression_date: dt.date | None
    death_date: dt.date | None
    last_followup_date: dt.date


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One DICOM series to write: its role, UIDs, descriptions (with markers), times and grid."""

    role: str  # ct | pet | pet_nac | ct_old
    modality: str  # CT | PT
    study_key: str  # session | old
    series_uid: str
    frame_uid: str
    number: int
    description: str
    protocol: str
    comments: str
    operator: str
    performing_physician: str
    start: dt.datetime
    grid: Grid


@dataclass(frozen=True, slots=True)
class StudySpec:
    """One DICOM study: UID, identifying ids and descriptions (markers), date and time."""

    study_uid: str
    study_id: str
    accession: str
    description: str
    start: dt.datetime
    requested_procedure_id: str
    scheduled_step_id: str
    request_description: str
    reading_physician: str


@dataclass(frozen=True, slots=True)
class Identity:
    """A patient's identifying values, each carrying its own marker (PatientID, name, address, ...)."""

    patient_id: str
    family: str
    given: str
    name_marker: str
    address: str
    other_ids: tuple[tuple[str, str], ...]
    telephone: str
    history: str
    referring: str
    private_text: str
    private_comment: str
    folder_marker: str
    seg_creator: str
    seg_description: str
    seg_series_description: str
    roi_note: str = ""

    @property
    def patient_name(self) -> str:
        """DICOM PN value: family^given^middle, the middle name being the name marker."""
        return f"{self.family}^{self.given}^{self.name_marker}"


@dataclass(frozen=True, slots=True)
class Session:
    """Times and grids of the baseline PET/CT session."""

    injection: dt.datetime
    pet_start: dt.datetime
    ct_start: dt.datetime
    ct_grid: Grid
    pet_grid: Grid


@dataclass(frozen=True, slots=True)
class Patient:
    """Everything decided at random for one patient; rendering and writing only read it."""

    index: int
    site: Site
    identity: Identity
    weight_kg: float
    height_m: float
    dose_bq: float
    injection: dt.datetime
    clinical: Clinical
    lesions: tuple[Lesion, ...]
    studies: Mapping[str, StudySpec]
    series: tuple[SeriesSpec, ...]
    segmentation_format: str
    dicom_extension: str

    @property
    def patient_id(self) -> str:
        """The hospital's local patient id (PHI; contains a marker)."""
        return self.identity.patient_id

    @property
    def patient_name(self) -> str:
        """DICOM PN value of the patient."""
        return self.identity.patient_name

    @property
    def birth_date(self) -> dt.date:
        """Birth date (identifying, a real date)."""
        return self.clinical.birth_date

    @property
    def age_years(self) -> int:
        """Age in whole years at the baseline session."""
        session = self.studies["session"].start.date()
        years = session.year - self.birth_date.year
        return years - ((session.month, session.day) < (self.birth_date.month, self.birth_date.day))

    def series_by_role(self, role: str) -> SeriesSpec | None:
        """The series with ``role`` (ct, pet, pet_nac, ct_old), or None when this patient has none."""
        return next((s for s in self.series if s.role == role), None)


class _MarkerBook:
    """Draws unique PHI markers from a seeded stream and remembers where each one was planted."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 99])
        self._entries: list[tuple[str, str, str, str]] = []
        self._seen: set[str] = set()

    def draw(self) -> str:
        """A marker never issued before in this cohort (not yet recorded: call ``record``)."""
        while True:
            chars = self._rng.integers(0, len(MARKER_ALPHABET), MARKER_LENGTH)
            marker = MARKER_PREFIX + "".join(MARKER_ALPHABET[int(c)] for c in chars)
            if marker not in self._seen:
                self._seen.add(marker)
                return marker

    def record(self, marker: str, site: str, patient_id: str, where: str) -> None:
        """Remember that ``marker`` was planted in attribute ``where`` of ``patient_id`` at ``site``."""
        self._entries.append((marker, site, patient_id, where))

    def new(self, site: str, patient_id: str, where: str) -> str:
        """Draw a marker and record where it goes."""
        marker = self.draw()
        self.record(marker, site, patient_id, where)
        return marker

    @property
    def entries(self) -> tuple[tuple[str, str, str, str], ...]:
        """(marker, site, patient_id, where) in the order issued."""
        return tuple(self._entries)


# ----------------------------------------------------------------------------------------------- identifiers


def make_uid(seed: int, *parts: object) -> str:
    """Deterministic ``2.25.<int>`` UID from SHA-256 of the seed and the object's role (PS3.5 B.2, <= 64 chars)."""
    text = "\x1f".join(str(p) for p in (seed, *parts))
    return f"2.25.{int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], 'big')}"


def _da(value: dt.date) -> str:
    """DICOM DA string."""
    return value.strftime("%Y%m%d")


def _tm(value: dt.datetime) -> str:
    """DICOM TM string (whole seconds)."""
    return value.strftime("%H%M%S")


def _dt(value: dt.datetime) -> str:
    """DICOM DT string (whole seconds, no offset)."""
    return value.strftime("%Y%m%d%H%M%S")


def _safe(text: str) -> str:
    """Folder-name form of a header value: characters other than letters, digits, space, dot, dash -> '_'."""
    return re.sub(r"[^A-Za-z0-9 .\-]", "_", text).strip()


def _ds(value: float) -> str:
    """A DS string (<= 16 characters) for ``value``; callers use ``float()`` of it so written == used."""
    return format_number_as_ds(float(value))


# ----------------------------------------------------------------------------------------------- planning


def _validate(patients: int, seed: int, shape: tuple[int, int, int], sites: int) -> tuple[int, int, int]:
    """Check the arguments, returning ``shape`` as ints; a bad value raises ConfigError naming it."""
    if not isinstance(patients, int) or patients < 1:
        raise ConfigError(f"patients must be a positive integer. Found: {patients!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer. Found: {seed!r}")
    if not isinstance(sites, int) or not 1 <= sites <= 99:
        raise ConfigError(f"sites must be an integer from 1 to 99. Found: {sites!r}")
    if (len(shape) != 3 or any(not isinstance(n, (int, np.integer)) for n in shape)
            or min(shape[0], shape[1]) < MIN_MATRIX_INPLANE or shape[2] < MIN_SLICES):
        raise ConfigError(f"shape must be three integers (columns, rows, slices), columns and rows >= "
                          f"{MIN_MATRIX_INPLANE}, slices >= {MIN_SLICES}. Found: {shape!r}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _ct_grid(shape: tuple[int, int, int], z0: float) -> Grid:
    """CT grid of ``shape`` (columns, rows, slices), centred in x/y on the table axis, first slice at ``z0``."""
    cols, rows, slices = shape
    origin = (-(cols - 1) * CT_PIXEL_MM / 2.0, -(rows - 1) * CT_PIXEL_MM / 2.0, z0)
    return Grid(cols, rows, slices, CT_PIXEL_MM, CT_SLICE_MM, origin)


def _pet_grid(ct: Grid) -> Grid:
    """PET grid covering the CT field of view at PET_PIXEL_MM / PET_SLICE_MM (about half the matrix)."""
    cols = max(1, round(ct.cols * ct.pixel_mm / PET_PIXEL_MM))
    rows = max(1, round(ct.rows * ct.pixel_mm / PET_PIXEL_MM))
    slices = max(1, round(ct.slices * ct.slice_mm / PET_SLICE_MM))
    z_low = ct.origin[2] - ct.slice_mm / 2.0
    origin = (-(cols - 1) * PET_PIXEL_MM / 2.0, -(rows - 1) * PET_PIXEL_MM / 2.0, z_low + PET_SLICE_MM / 2.0)
    return Grid(cols, rows, slices, PET_PIXEL_MM, PET_SLICE_MM, origin)


def _anatomy(grid: Grid) -> Anatomy:
    """Organ geometry scaled to the grid's field of view (thorax in the upper half, abdomen in the lower)."""
    fx, fy = grid.cols * grid.pixel_mm, grid.rows * grid.pixel_mm
    z_min = grid.origin[2] - grid.slice_mm / 2.0
    z_max = z_min + grid.slices * grid.slice_mm
    return Anatomy(cx=0.0, cy=0.0, z_mid=(z_min + z_max) / 2.0, body_ax=0.44 * fx, body_ay=0.34 * fy,
                   lung_dx=0.2 * fx, lung_cy=-0.02 * fy, lung_ax=0.14 * fx, lung_ay=0.2 * fy,
                   liver_cx=-0.17 * fx, liver_cy=-0.03 * fy, liver_a=0.2 * min(fx, fy),
                   spine_cy=0.22 * fy, spine_r=0.085 * min(fx, fy), z_min=z_min, z_max=z_max)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """True inside the axis-aligned ellipse (works on scalars and broadcast arrays)."""
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _tissue_map(grid: Grid, anatomy: Anatomy) -> np.ndarray:
    """Tissue class per voxel (index into TISSUES, shape (S, R, C)): body, lungs, liver and spine."""
    z, y, x = grid.mesh()
    names = list(TISSUES)
    out = np.zeros(grid.shape_zyx, dtype=np.uint8)
    a = anatomy
    body = np.broadcast_to(_ellipse(x, y, a.cx, a.cy, a.body_ax, a.body_ay), grid.shape_zyx)
    out[body] = names.index("soft")
    thorax = z >= a.z_mid
    lungs = (_ellipse(x, y, a.cx - a.lung_dx, a.lung_cy, a.lung_ax, a.lung_ay)
             | _ellipse(x, y, a.cx + a.lung_dx, a.lung_cy, a.lung_ax, a.lung_ay)) & thorax
    out[np.broadcast_to(lungs, grid.shape_zyx)] = names.index("lung")
    liver = _ellipse(x, y, a.liver_cx, a.liver_cy, a.liver_a, a.liver_a) & ~thorax
    out[np.broadcast_to(liver, grid.shape_zyx)] = names.index("liver")
    spine = _ellipse(x, y, a.cx, a.spine_cy, a.spine_r, a.spine_r) & np.ones_like(z, dtype=bool)
    out[np.broadcast_to(spine, grid.shape_zyx)] = names.index("bone")
    return out


def _centre_fits(organ: str, c: tuple[float, float, float], r: float, a: Anatomy) -> bool:
    """True when a sphere (centre ``c``, radius ``r``) lies in the body and its organ, away from the FOV edge."""
    x, y, z = c
    margin = PET_SLICE_MM
    if not (a.z_min + r + margin <= z <= a.z_max - r - margin):
        return False
    if not _ellipse(x, y, a.cx, a.cy, a.body_ax - r - margin, a.body_ay - r - margin):
        return False
    if organ == "liver":
        return z <= a.z_mid - r and bool(_ellipse(x, y, a.liver_cx, a.liver_cy, a.liver_a - r, a.liver_a - r))
    if organ == "lung":
        inside = [_ellipse(x, y, a.cx + s * a.lung_dx, a.lung_cy, a.lung_ax - r, a.lung_ay - r) for s in (-1, 1)]
        return z >= a.z_mid + r and bool(any(inside))
    if organ == "bone":
        return bool(_ellipse(x, y, a.cx, a.spine_cy, a.spine_r, a.spine_r))
    in_lung = z >= a.z_mid - r and any(
        _ellipse(x, y, a.cx + s * a.lung_dx, a.lung_cy, a.lung_ax + r, a.lung_ay + r) for s in (-1, 1))
    in_liver = z <= a.z_mid + r and _ellipse(x, y, a.liver_cx, a.liver_cy, a.liver_a + r, a.liver_a + r)
    in_spine = _ellipse(x, y, a.cx, a.spine_cy, a.spine_r + r, a.spine_r + r)
    return not (in_lung or bool(in_liver) or bool(in_spine))  # lymph node: soft tissue clear of the organs


def _place_lesions(rng: np.random.Generator, a: Anatomy, n: int) -> tuple[Lesion, ...]:
    """Draw ``n`` non-overlapping lesions (organ, radius, centre, SUV) that fit the anatomy.

    Rejection sampling: the drawn organ first, shrinking the radius towards its minimum; when the organ
    is full the next organ is tried. When a further lesion fits nowhere (small fields of view), the
    patient keeps the lesions placed so far (the truth tables list what was placed); when not even the
    first one fits, raise ConfigError rather than write a lesion that leaves its organ or the image.
    """
    lesions: list[Lesion] = []
    for k in range(n):
        first = int(rng.integers(len(LESION_ORGANS)))
        radius_draw = float(rng.uniform(0.0, 1.0))
        placed = None
        for organ in LESION_ORGANS[first:] + LESION_ORGANS[:first]:
            placed = _try_place(rng, a, organ, radius_draw, lesions)
            if placed is not None:
                break
        if placed is None and lesions:
            break
        if placed is None:
            raise ConfigError(f"the field of view is too small to place a lesion; "
                              "use a larger shape (the default is 64 x 64 x 40)")
        organ, centre, radius = placed
        s_min, s_max = LESION_SUV_RANGE[organ]
        suv = float(np.round(rng.uniform(s_min, s_max), 1))
        lesions.append(Lesion(f"L{k + 1}", k + 1, organ, centre, radius, LESION_CT_HU[organ], suv))
    return tuple(lesions)


def _try_place(rng: np.random.Generator, a: Anatomy, organ: str, radius_draw: float,
               others: Sequence[Lesion]) -> tuple[str, tuple[float, float, float], float] | None:
    """Up to 600 centre draws for one organ (radius shrinks every 150); (organ, centre, radius) or None."""
    r_min, r_max = LESION_RADIUS_MM[organ]
    radius = float(np.round((r_min + radius_draw * (r_max - r_min)) * 2.0) / 2.0)
    for attempt in range(600):
        if attempt and attempt % 150 == 0:
            radius = max(r_min, radius - 2.0)
        c = (float(np.round(rng.uniform(-a.body_ax, a.body_ax), 1)),
             float(np.round(rng.uniform(-a.body_ay, a.body_ay), 1)),
             float(np.round(rng.uniform(a.z_min, a.z_max), 1)))
        apart = all(math.dist(c, o.center_mm) >= radius + o.radius_mm + LESION_GAP_MM for o in others)
        if apart and _centre_fits(organ, c, radius, a):
            return organ, c, radius
    return None


def _plan_site(seed: int, index: int, book: _MarkerBook) -> Site:
    """Site ``index``: code IT01..., a scanner make cycling GE/Siemens/Philips, identifying equipment values."""
    code = f"IT{index + 1:02d}"
    rng = np.random.default_rng([seed, 0, index])
    city = CITIES[int(rng.integers(len(CITIES)))]
    vendor = VENDORS[index % len(VENDORS)]

    def m(where: str) -> str:
        return book.new(code, "", where)

    return Site(code=code, index=index, vendor=vendor,
                institution=f"OSPEDALE {city} {m('InstitutionName')}",
                institution_address=f"VIA DELL'OSPEDALE {int(rng.integers(1, 200))}, {city} {m('InstitutionAddress')}",
                department=f"MEDICINA NUCLEARE {m('InstitutionalDepartmentName')}",
                station=f"PETCT{index + 1}{m('StationName')}",
                device_serial=f"SN{int(rng.integers(10000, 99999))} {m('DeviceSerialNumber')}",
                software_versions=f"{vendor.software} {m('SoftwareVersions')}")


def _plan_clinical(rng: np.random.Generator, index: int, start: dt.date) -> Clinical:
    """Clinical export row: consistent dates and an outcome pattern cycling by patient index.

    Pattern ``index % 4``: 0 progressed then died, 1 progressed alive, 2 censored without event,
    3 died without progression.
    """
    def days(lo: int, hi: int) -> dt.timedelta:
        return dt.timedelta(days=int(rng.integers(lo, hi + 1)))

    age = int(rng.integers(38, 80))
    birth = dt.date(start.year - age, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    setting = ("de_novo", "recurrent")[int(rng.integers(2))]
    diagnosis = start - days(7, 90)
    progression = death = None
    pattern = index % 4
    if pattern == 0:
        progression = start + days(120, 500)
        death = progression + days(30, 300)
        last = death
    elif pattern == 1:
        progression = start + days(100, 600)
        last = progression + days(30, 400)
    elif pattern == 2:
        last = start + days(200, 900)
    else:
        death = start + days(200, 700)
        last = death
    return Clinical(birth_date=birth, diagnosis_date=diagnosis, start_date=start,
                    drug=("palbociclib", "ribociclib", "abemaciclib")[int(rng.integers(3))],
                    partner=("aromatase_inhibitor", "fulvestrant")[int(rng.integers(2))],
                    menopausal_status="post" if age >= 52 else ("pre", "post")[int(rng.integers(2))],
                    disease_setting=setting, ecog=int(rng.integers(0, 3)), progression_date=progression,
                    death_date=death, last_followup_date=last)


def _plan_identity(rng: np.random.Generator, site: Site, dicom_masks: bool, book: _MarkerBook,
                   rtstruct: bool = False) -> Identity:
    """Identifying values of one patient, each with a fresh marker; segmentation ones only for DICOM masks,
    the note ROI name only for RTSTRUCT masks."""
    pid_marker = book.draw()
    patient_id = f"{int(rng.integers(1_000_000, 9_999_999))}-{pid_marker}"
    book.record(pid_marker, site.code, patient_id, "PatientID")

    def m(where: str) -> str:
        return book.new(site.code, patient_id, where)

    family = FAMILY_NAMES[int(rng.integers(len(FAMILY_NAMES)))]
    given = GIVEN_NAMES[int(rng.integers(len(GIVEN_NAMES)))]
    city = CITIES[int(rng.integers(len(CITIES)))]
    referring = f"VERDI^PAOLO^{m('ReferringPhysicianName')}"
    return Identity(
        patient_id=patient_id, family=family, given=given, name_marker=m("PatientName"),
        address=f"VIA GARIBALDI {int(rng.integers(1, 150))}, {city} {m('PatientAddress')}",
        other_ids=((f"TS{m('OtherPatientIDs[0]')}", f"SSN {m('IssuerOfPatientID[0]')}"),
                   (f"RIS{m('OtherPatientIDs[1]')}", f"RIS {site.code} {m('IssuerOfPatientID[1]')}")),
        telephone=f"333 {m('PatientTelephoneNumbers')}",
        history=f"Ca mammella, paziente {family} {m('AdditionalPatientHistory')}",
        referring=referring,
        private_text=f"{family} {given} {m('Private(0029,1010)')}",
        private_comment=f"Inviata da {referring.replace('^', ' ')} {m('Private(0029,1011)>PatientComments')}",
        folder_marker=m("folder"),
        seg_creator=f"RADIOLOGO^ELENA^{m('ContentCreatorName')}" if dicom_masks else "",
        seg_description=f"Lesioni {family} {m('ContentDescription')}" if dicom_masks else "",
        seg_series_description=f"SEGMENTAZIONE LESIONI {m('SEG:SeriesDescription')}" if dicom_masks else "",
        roi_note=f"{family} {m('RTSTRUCT:ROIName')}" if rtstruct else "")


def _plan_session(rng: np.random.Generator, start: dt.date, shape: tuple[int, int, int]) -> Session:
    """Baseline PET/CT session 5-40 days before ``start``: injection, PET start 55-70 min later, CT 3 min before."""
    day = start - dt.timedelta(days=int(rng.integers(BASELINE_DAYS_BEFORE_START[0], BASELINE_DAYS_BEFORE_START[1] + 1)))
    injection = dt.datetime.combine(day, dt.time(8, 0)) + dt.timedelta(
        minutes=int(rng.integers(0, 180)), seconds=int(rng.integers(0, 60)))
    pet_start = injection + dt.timedelta(minutes=int(rng.integers(UPTAKE_MINUTES[0], UPTAKE_MINUTES[1] + 1)),
                                         seconds=int(rng.integers(0, 60)))
    ct_grid = _ct_grid(shape, float(-900.0 + rng.integers(0, 200)))
    return Session(injection=injection, pet_start=pet_start,
                   ct_start=pet_start - dt.timedelta(minutes=CT_BEFORE_PET_MINUTES),
                   ct_grid=ct_grid, pet_grid=_pet_grid(ct_grid))


def _study_spec(seed: int, index: int, key: str, description: str, when: dt.datetime, mark: Callable[[str], str]
                ) -> StudySpec:
    """One study (``key`` session or old) with marker-bearing ids and descriptions."""
    return StudySpec(study_uid=make_uid(seed, "study", index, key), study_id=f"S{mark(key + ':StudyID')}",
                     accession=f"A{mark(key + ':AccessionNumber')}",
                     description=f"{description} {mark(key + ':StudyDescription')}", start=when,
                     requested_procedure_id=f"RP{mark(key + ':RequestedProcedureID')}",
                     scheduled_step_id=f"SPS{mark(key + ':ScheduledProcedureStepID')}",
                     request_description=f"{description} {mark(key + ':RequestedProcedureDescription')}",
                     reading_physician=f"NERI^LUCA^{mark(key + ':NameOfPhysiciansReadingStudy')}")


def _series_spec(seed: int, index: int, identity: Identity, role: str, study_key: str, number: int,
                 description: str, when: dt.datetime, grid: Grid, frame: str, mark: Callable[[str], str]
                 ) -> SeriesSpec:
    """One series (``role`` ct, pet, pet_nac or ct_old) with marker-bearing descriptions and staff names."""
    return SeriesSpec(role=role, modality="PT" if role.startswith("pet") else "CT", study_key=study_key,
                      series_uid=make_uid(seed, "series", index, role), frame_uid=frame, number=number,
                      description=f"{description} {mark(role + ':SeriesDescription')}",
                      protocol=f"ONCO WB {mark(role + ':ProtocolName')}",
                      comments=f"Paz. {identity.family} {identity.given} {mark(role + ':ImageComments')}",
                      operator=f"TSRM^ANNA^{mark(role + ':OperatorsName')}",
                      performing_physician=f"BLU^MARCO^{mark(role + ':PerformingPhysicianName')}",
                      start=when, grid=grid)


def _plan_exams(seed: int, index: int, identity: Identity, session: Session, start: dt.date,
                shape: tuple[int, int, int], with_extra: bool, rng: np.random.Generator, mark: Callable[[str], str]
                ) -> tuple[dict[str, StudySpec], tuple[SeriesSpec, ...]]:
    """Studies and series: the PET/CT session (CT + PET AC), plus PET NAC and an old CT when ``with_extra``."""
    studies = {"session": _study_spec(seed, index, "session", "PET-TC TOTAL BODY FDG",
                                      session.ct_start - dt.timedelta(minutes=2), mark)}
    frame = make_uid(seed, "frame", index, "session")
    series = [_series_spec(seed, index, identity, "ct", "session", 3, "TC TORACE ADDOME MDC", session.ct_start,
                           session.ct_grid, frame, mark),
              _series_spec(seed, index, identity, "pet", "session", 5, "PET WB AC", session.pet_start,
                           session.pet_grid, frame, mark)]
    if with_extra:
        series.append(_series_spec(seed, index, identity, "pet_nac", "session", 6, "PET WB NAC", session.pet_start,
                                   session.pet_grid, frame, mark))
        day = start - dt.timedelta(days=int(rng.integers(OLD_CT_DAYS_BEFORE_START[0], OLD_CT_DAYS_BEFORE_START[1] + 1)))
        when = dt.datetime.combine(day, dt.time(14, 0)) + dt.timedelta(minutes=int(rng.integers(0, 120)))
        studies["old"] = _study_spec(seed, index, "old", "TC TORACE ADDOME MDC", when - dt.timedelta(minutes=2), mark)
        series.append(_series_spec(seed, index, identity, "ct_old", "old", 2, "TC TORACE ADDOME MDC", when,
                                   _ct_grid(shape, float(-900.0 + rng.integers(0, 200))),
                                   make_uid(seed, "frame", index, "old"), mark))
    return studies, tuple(series)


def _plan_patient(seed: int, index: int, site: Site, shape: tuple[int, int, int], book: _MarkerBook) -> Patient:
    """Draw one patient from independent seeded streams (identity, session, lesions, clinical, body, exams).

    Segmentation formats cycle NIfTI / SEG / RTSTRUCT by patient index; every second patient (odd
    index) also gets a NAC PET in the session and an older CT study; odd indices use '.dcm' file names.
    """
    def stream(part: int) -> np.random.Generator:
        return np.random.default_rng([seed, 1, index, part])

    segmentation_format = SEGMENTATION_FORMATS[index % len(SEGMENTATION_FORMATS)]
    identity = _plan_identity(stream(0), site, segmentation_format != "nifti", book, segmentation_format == "rtstruct")
    start = dt.date(2021, 3, 1) + dt.timedelta(days=int(stream(1).integers(0, 1000)))
    session = _plan_session(stream(2), start, shape)
    lesions = _place_lesions(stream(3), _anatomy(session.ct_grid), int(stream(4).integers(1, 5)))
    if segmentation_format == "rtstruct":  # label = ROI Number, not the position
        lesions = tuple(dataclasses.replace(lesion, label=RTSTRUCT_FIRST_LESION_NUMBER + i)
                        for i, lesion in enumerate(lesions))
    elif segmentation_format == "seg":  # one segment label shared by every lesion; label = segment number
        lesions = tuple(dataclasses.replace(lesion, name=SEG_SHARED_LABEL) for lesion in lesions)
    clinical = _plan_clinical(stream(5), index, start)
    body = stream(6)
    studies, series = _plan_exams(seed, index, identity, session, start, shape, index % 2 == 1, stream(7),
                                  lambda where: book.new(site.code, identity.patient_id, where))
    return Patient(index=index, site=site, identity=identity,
                   weight_kg=float(np.round(body.uniform(50.0, 95.0), 1)),
                   height_m=float(np.round(body.uniform(1.50, 1.80), 2)),
                   dose_bq=float(int(body.uniform(250e6, 400e6) / 1e4) * 1e4), injection=session.injection,
                   clinical=clinical, lesions=lesions, studies=MappingProxyType(studies), series=series,
                   segmentation_format=segmentation_format, dicom_extension="" if index % 2 == 0 else ".dcm")


# ----------------------------------------------------------------------------------------------- SUV and images


def decayed_dose_bq(patient: Patient, series_start: dt.datetime) -> float:
    """Injected F-18 dose decayed from injection to ``series_start``: D x 2^(-t / 6586.2 s)."""
    elapsed = (series_start - patient.injection).total_seconds()
    return patient.dose_bq * 2.0 ** (-elapsed / F18_HALF_LIFE_S)


def suvbw_scale(patient: Patient, series_start: dt.datetime) -> float:
    """SUVbw per Bq/ml (g/ml): weight_g / decayed dose, for an image decay-corrected to series start."""
    return patient.weight_kg * 1000.0 / decayed_dose_bq(patient, series_start)


def _lesion_mask(grid: Grid, lesion: Lesion) -> np.ndarray:
    """Boolean (S, R, C) mask of voxels whose centre lies inside the lesion sphere."""
    z, y, x = grid.mesh()
    cx, cy, cz = lesion.center_mm
    return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= lesion.radius_mm ** 2


def _label_map(grid: Grid, lesions: Iterable[Lesion]) -> np.ndarray:
    """int16 (S, R, C) label map: each lesion's voxels carry its label, background 0."""
    labels = np.zeros(grid.shape_zyx, dtype=np.int16)
    for lesion in lesions:
        labels[_lesion_mask(grid, lesion)] = lesion.label
    return labels


def _truth_volume(grid: Grid, lesions: Iterable[Lesion], column: int, lesion_value: str) -> np.ndarray:
    """Noise-free tissue values (column 0 = HU, 1 = SUV) with lesions painted over (``lesion_value`` attribute)."""
    values = np.array([v[column] for v in TISSUES.values()])
    volume = values[_tissue_map(grid, _anatomy(grid))]
    for lesion in lesions:
        volume[_lesion_mask(grid, lesion)] = getattr(lesion, lesion_value)
    return volume


def ct_hu_volume(grid: Grid, lesions: Sequence[Lesion], rng: np.random.Generator) -> np.ndarray:
    """CT in HU with additive Gaussian noise (SD CT_NOISE_SD_HU), shape (S, R, C)."""
    return _truth_volume(grid, lesions, 0, "ct_hu") + rng.normal(0.0, CT_NOISE_SD_HU, grid.shape_zyx)


def pet_suv_volume(grid: Grid, lesions: Sequence[Lesion], rng: np.random.Generator) -> np.ndarray:
    """PET in SUVbw with multiplicative Gaussian noise (SD PET_NOISE_REL_SD of the local SUV), never negative."""
    suv = _truth_volume(grid, lesions, 1, "suvbw")
    return np.clip(suv * (1.0 + rng.normal(0.0, PET_NOISE_REL_SD, grid.shape_zyx)), 0.0, None)


def _nac_factor(grid: Grid) -> np.ndarray:
    """Smooth in-plane factor mimicking missing attenuation correction (deep tissue darker), shape (1, R, C)."""
    _, y, x = grid.mesh()
    half = max(grid.cols, grid.rows) * grid.pixel_mm / 2.0
    return 0.3 + 0.5 * np.clip((x ** 2 + y ** 2) / half ** 2, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- DICOM headers


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _common_header(patient: Patient, spec: SeriesSpec) -> Dataset:
    """Patient, study, series, equipment and private attributes shared by every slice of a series.

    Every identifying value carries its own marker (see the module docstring).
    """
    site, study = patient.site, patient.studies[spec.study_key]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = _da(spec.start.date())
    ds.InstanceCreationTime = _tm(spec.start)
    ds.StudyDate = _da(study.start.date())
    ds.SeriesDate = _da(spec.start.date())
    ds.AcquisitionDate = _da(spec.start.date())
    ds.ContentDate = _da(spec.start.date())
    ds.StudyTime = _tm(study.start)
    ds.SeriesTime = _tm(spec.start)
    ds.AcquisitionTime = _tm(spec.start)
    ds.ContentTime = _tm(spec.start)
    ds.AccessionNumber = study.accession
    ds.Modality = spec.modality
    ds.Manufacturer = site.vendor.manufacturer
    ds.InstitutionName = site.institution
    ds.InstitutionAddress = site.institution_address
    ds.ReferringPhysicianName = patient.identity.referring
    ds.StationName = site.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = spec.description
    ds.InstitutionalDepartmentName = site.department
    ds.PerformingPhysicianName = spec.performing_physician
    ds.NameOfPhysiciansReadingStudy = study.reading_physician
    ds.OperatorsName = spec.operator
    ds.ManufacturerModelName = site.vendor.model
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = "F"
    ds.OtherPatientIDsSequence = DicomSequence([_other_id(pid, issuer) for pid, issuer in patient.identity.other_ids])
    ds.PatientAge = f"{patient.age_years:03d}Y"
    ds.PatientSize = _ds(patient.height_m)
    ds.PatientWeight = _ds(patient.weight_kg)
    ds.PatientAddress = patient.identity.address
    ds.PatientTelephoneNumbers = patient.identity.telephone
    ds.AdditionalPatientHistory = patient.identity.history
    ds.BodyPartExamined = "WHOLEBODY" if spec.role != "ct_old" else "CHEST"
    ds.DeviceSerialNumber = site.device_serial
    ds.SoftwareVersions = site.software_versions
    ds.ProtocolName = spec.protocol
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = spec.number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = spec.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = spec.comments
    ds.RequestAttributesSequence = DicomSequence([_request_item(study)])
    ds.BurnedInAnnotation = "NO"
    _private_block(ds, patient)
    return ds


def _other_id(patient_id: str, issuer: str) -> Dataset:
    """An OtherPatientIDsSequence item."""
    item = Dataset()
    item.PatientID = patient_id
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def _request_item(study: StudySpec) -> Dataset:
    """A RequestAttributesSequence item: requested procedure and scheduled step ids (identifying)."""
    item = Dataset()
    item.RequestedProcedureID = study.requested_procedure_id
    item.ScheduledProcedureStepID = study.scheduled_step_id
    item.ScheduledProcedureStepDescription = study.request_description
    item.AccessionNumber = study.accession
    return item


def _private_block(ds: Dataset, patient: Patient) -> None:
    """Add the 'PALMARES SYNTH' private block: (0029,1010) LO with the name, (0029,1011) SQ with a comment."""
    block = ds.private_block(0x0029, "PALMARES SYNTH", create=True)
    block.add_new(0x10, "LO", patient.identity.private_text)
    item = Dataset()
    item.PatientComments = patient.identity.private_comment
    item.PatientName = patient.patient_name
    block.add_new(0x11, "SQ", DicomSequence([item]))


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    """File meta information: Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _image_plane(ds: Dataset, grid: Grid, k: int) -> None:
    """Image plane and pixel module attributes of slice ``k`` (axial, HFS)."""
    ds.ImagePositionPatient = [_ds(grid.origin[0]), _ds(grid.origin[1]), _ds(grid.slice_z(k))]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = _ds(grid.slice_z(k))
    ds.SliceThickness = _ds(grid.slice_mm)
    ds.PixelSpacing = [_ds(grid.pixel_mm), _ds(grid.pixel_mm)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0


def _ct_slices(patient: Patient, spec: SeriesSpec, hu: np.ndarray, seed: int) -> list[Dataset]:
    """CT Image Storage datasets, one per slice: uint16 stored = HU + 1024 (RescaleIntercept -1024, slope 1)."""
    base = _common_header(patient, spec)
    base.SOPClassUID = CTImageStorage
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.KVP = "120"
    base.ConvolutionKernel = patient.site.vendor.kernel
    base.ContrastBolusAgent = "IOMERON 350"
    base.RescaleIntercept = _ds(CT_RESCALE_INTERCEPT)
    base.RescaleSlope = "1"
    base.RescaleType = "HU"
    base.WindowCenter = "40"
    base.WindowWidth = "400"
    stored = np.clip(np.rint(hu - CT_RESCALE_INTERCEPT), 0, 4095).astype(np.uint16)
    out = []
    for k in range(spec.grid.slices):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = make_uid(seed, "sop", patient.index, spec.role, k)
        ds.InstanceNumber = k + 1
        _image_plane(ds, spec.grid, k)
        ds.PixelData = stored[k].tobytes()
        ds.file_meta = _file_meta(CTImageStorage, ds.SOPInstanceUID)
        out.append(ds)
    return out


def _pet_slices(patient: Patient, spec: SeriesSpec, activity: np.ndarray, seed: int) -> list[Dataset]:
    """PET Image Storage datasets, one per slice: uint16 with a per-slice RescaleSlope giving Bq/ml."""
    base = _common_header(patient, spec)
    base.SOPClassUID = PositronEmissionTomographyImageStorage
    base.ImageType = ["ORIGINAL", "PRIMARY"]
    base.SeriesType = ["WHOLE BODY", "IMAGE"]
    base.Units = "BQML"
    base.CountsSource = "EMISSION"
    base.DecayCorrection = "START"
    nac = spec.role == "pet_nac"
    base.CorrectedImage = ["DECY", "NORM", "DTIM", "RAN"] if nac else ["ATTN", "SCAT", "DECY", "NORM", "DTIM", "RAN"]
    base.RandomsCorrectionMethod = "DLYD"
    if not nac:
        base.AttenuationCorrectionMethod = "CTAC"
        base.ScatterCorrectionMethod = "MODEL BASED"
    base.ReconstructionMethod = "OSEM 3I21S"
    base.NumberOfSlices = spec.grid.slices
    base.ActualFrameDuration = 120000
    base.FrameReferenceTime = "0"
    base.DecayFactor = "1"
    base.DoseCalibrationFactor = "1"
    base.SliceSensitivityFactor = "1"
    base.RescaleIntercept = "0"
    base.RadiopharmaceuticalInformationSequence = DicomSequence([_radiopharmaceutical(patient)])
    base.PatientOrientationCodeSequence = DicomSequence([_code_item("F-10450", "99SDM", "recumbent")])
    base.PatientGantryRelationshipCodeSequence = DicomSequence([_code_item("F-10470", "99SDM", "headfirst")])
    out = []
    for k in range(spec.grid.slices):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = make_uid(seed, "sop", patient.index, spec.role, k)
        ds.InstanceNumber = k + 1
        ds.ImageIndex = k + 1
        _image_plane(ds, spec.grid, k)
        peak = float(activity[k].max())
        slope_text = _ds(peak / PET_STORED_MAX if peak > 0 else 1.0)
        ds.RescaleSlope = slope_text
        ds.PixelData = np.clip(np.rint(activity[k] / float(slope_text)), 0, 65535).astype(np.uint16).tobytes()
        ds.file_meta = _file_meta(PositronEmissionTomographyImageStorage, ds.SOPInstanceUID)
        out.append(ds)
    return out


def _radiopharmaceutical(patient: Patient) -> Dataset:
    """RadiopharmaceuticalInformationSequence item: FDG, dose (Bq), half-life (s), injection date/time."""
    item = Dataset()
    item.Radiopharmaceutical = "Fludeoxyglucose F^18^"
    item.RadiopharmaceuticalStartTime = _tm(patient.injection)
    item.RadiopharmaceuticalStartDateTime = _dt(patient.injection)
    item.RadionuclideTotalDose = _ds(patient.dose_bq)
    item.RadionuclideHalfLife = _ds(F18_HALF_LIFE_S)
    item.RadionuclidePositronFraction = "0.9673"
    item.RadionuclideCodeSequence = DicomSequence([_code_item("77004003", "SCT", "^18^Fluorine")])
    item.RadiopharmaceuticalCodeSequence = DicomSequence([_code_item("35321007", "SCT", "Fluorodeoxyglucose F^18^")])
    return item


# ----------------------------------------------------------------------------------------------- writing


def _write_dataset(path: Path, ds: Dataset) -> Path:
    """Write a DICOM Part-10 file atomically."""
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return path


def _series_folder(root: Path, patient: Patient, spec: SeriesSpec) -> Path:
    """Export folder of a series; two site styles, both with identifying (marker-bearing) folder names.

    Even site index: ``EXPORT_2024/<PatientName>_<marker>/<StudyDate> <StudyDescription>/Series N - <desc>``.
    Odd site index: ``PACS/<PatientID>/<AccessionNumber>_<StudyDate>/S00N_<desc>``.
    """
    study = patient.studies[spec.study_key]
    site_root = root / "raw" / "dicom" / patient.site.code
    if patient.site.index % 2 == 0:
        return (site_root / "EXPORT_2024" / _safe(f"{patient.patient_name}_{patient.identity.folder_marker}")
                / _safe(f"{_da(study.start.date())} {study.description}")
                / _safe(f"Series {spec.number} - {spec.description}"))
    return (site_root / "PACS" / _safe(f"{patient.patient_id} {patient.identity.folder_marker}")
            / _safe(f"{study.accession}_{_da(study.start.date())}") / _safe(f"S{spec.number:03d}_{spec.description}"))


def _write_series(root: Path, patient: Patient, spec: SeriesSpec, slices: Sequence[Dataset]) -> list[Path]:
    """Write a series' slices into its export folder (IM00001 or IMG0001.dcm style names)."""
    folder = _series_folder(root, patient, spec)
    stem = "IM{:05d}" if patient.site.index % 2 == 0 else "IMG{:04d}"
    return [_write_dataset(folder / (stem.format(k + 1) + patient.dicom_extension), ds) for k, ds in enumerate(slices)]


def _write_nifti(path: Path, grid: Grid, labels: np.ndarray) -> Path:
    """Label map as gzip NIfTI (int16, (x, y, z) order, RAS affine), gzip without name or time: reproducible."""
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), grid.affine_ras())
    image.header.set_qform(grid.affine_ras(), code=1)
    image.header.set_sform(grid.affine_ras(), code=1)
    image.header.set_xyzt_units("mm")
    data = gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _copy_identity(target: Dataset, source: Dataset) -> None:
    """Copy identifying patient/study/equipment attributes (and the private block) from an image slice."""
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAddress",
                    "OtherPatientIDsSequence", "PatientAge", "PatientWeight", "PatientSize", "AccessionNumber",
                    "StudyID", "StudyDate", "StudyTime", "StudyDescription", "ReferringPhysicianName",
                    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
                    "OperatorsName", "RequestAttributesSequence", "SpecificCharacterSet"):
        if keyword in source:
            setattr(target, keyword, copy.deepcopy(source[keyword].value))
    for tag in (0x00290010, 0x00291010, 0x00291011):
        if tag in source:
            target.add(copy.deepcopy(source[tag]))


def _seg_dataset(patient: Patient, modality: str, slices: Sequence[Dataset], labels: np.ndarray,
                 seed: int, when: dt.datetime) -> Dataset:
    """DICOM-SEG (BINARY, one segment per lesion, segment number = label) on the baseline series."""
    organ_codes = {"liver": codes.SCT.Liver, "bone": codes.SCT.Bone, "lymph_node": codes.SCT.LymphNode,
                   "lung": codes.SCT.Lung}
    descriptions = [hd.seg.SegmentDescription(
        segment_number=lesion.label, segment_label=lesion.roi_name,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        anatomic_regions=[organ_codes[lesion.organ]]) for lesion in patient.lesions]
    site = patient.site
    seg = hd.seg.Segmentation(
        source_images=list(slices), pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=make_uid(seed, "series", patient.index, f"seg-{modality}"), series_number=100,
        sop_instance_uid=make_uid(seed, "sop", patient.index, f"seg-{modality}"), instance_number=1,
        manufacturer=site.vendor.manufacturer, manufacturer_model_name="PALMARES SEGMENTATION",
        software_versions=site.software_versions, device_serial_number=site.device_serial,
        content_description=patient.identity.seg_description[:64], content_creator_name=patient.identity.seg_creator,
        content_label="LESIONS", content_date=when.date(), content_time=when.time(),
        series_date=when.date(), series_time=when.time(), series_description=patient.identity.seg_series_description,
        institution_name=site.institution, institutional_department_name=site.department)
    _pin_seg_clock_and_uids(seg, make_uid(seed, "dimension-organization", patient.index, modality), when)
    _copy_identity(seg, slices[0])
    return seg


def _pin_seg_clock_and_uids(seg: Dataset, dimension_uid: str, when: dt.datetime) -> None:
    """Replace what highdicom draws from the clock or a random generator, so SEG files are reproducible.

    Instance creation date/time and ContributionDateTime come from ``datetime.now()`` and the
    DimensionOrganizationUID from a random UID in highdicom 0.28; all are set to fixed values here.
    """
    seg.InstanceCreationDate = _da(when.date())
    seg.InstanceCreationTime = _tm(when)
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = _dt(when)
    for keyword in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(keyword, []):
            item.DimensionOrganizationUID = dimension_uid


def _rtstruct_dataset(patient: Patient, modality: str, spec: SeriesSpec, slices: Sequence[Dataset],
                      seed: int, when: dt.datetime) -> Dataset:
    """RT Structure Set: the other ROIs (:data:`RTSTRUCT_OTHER_ROIS`), then one ROI per lesion (ROINumber = label),
    CLOSED_PLANAR contours per slice in LPS mm.

    Contours come from ``skimage.measure.find_contours`` at level 0.5 on each lesion's binary slice,
    so they pass half-way between inside and outside voxel centres and rasterise back to the mask.
    """
    sop_uid = make_uid(seed, "sop", patient.index, f"rtstruct-{modality}")
    ds = Dataset()
    _copy_identity(ds, slices[0])
    ds.InstanceCreationDate = _da(when.date())
    ds.InstanceCreationTime = _tm(when)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = slices[0].StudyInstanceUID
    ds.SeriesInstanceUID = make_uid(seed, "series", patient.index, f"rtstruct-{modality}")
    ds.Modality = "RTSTRUCT"
    ds.SeriesNumber = 101
    ds.InstanceNumber = 1
    ds.SeriesDate = _da(when.date())
    ds.SeriesTime = _tm(when)
    ds.SeriesDescription = patient.identity.seg_series_description
    ds.Manufacturer = patient.site.vendor.manufacturer
    ds.ManufacturerModelName = "PALMARES SEGMENTATION"
    ds.SoftwareVersions = patient.site.software_versions
    ds.DeviceSerialNumber = patient.site.device_serial
    ds.ContentCreatorName = patient.identity.seg_creator
    ds.StructureSetLabel = "LESIONI"
    ds.StructureSetName = patient.identity.seg_description[:64]
    ds.StructureSetDate = _da(when.date())
    ds.StructureSetTime = _tm(when)
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_referenced_frame(spec, slices)])
    others = _other_rois(patient, spec)
    ds.StructureSetROISequence = DicomSequence(
        [_structure_roi_item(spec, number, name) for name, number, _kind, _mask in others]
        + [_roi_item(spec, lesion) for lesion in patient.lesions])
    ds.ROIContourSequence = DicomSequence(
        [_structure_contour_item(number, mask, spec, slices) for _name, number, _kind, mask in others if mask is not None]
        + [_roi_contour_item(spec, lesion, slices) for lesion in patient.lesions])
    ds.RTROIObservationsSequence = DicomSequence(
        [_structure_observation_item(number, kind, patient.identity.seg_creator) for _n, number, kind, _m in others]
        + [_roi_observation_item(lesion, patient.identity.seg_creator) for lesion in patient.lesions])
    ds.ApprovalStatus = "UNAPPROVED"
    ds.file_meta = _file_meta(RTStructureSetStorage, sop_uid)
    return ds


def _referenced_frame(spec: SeriesSpec, slices: Sequence[Dataset]) -> Dataset:
    """ReferencedFrameOfReferenceSequence item: frame -> study -> series -> every image slice."""
    series_item = Dataset()
    series_item.SeriesInstanceUID = spec.series_uid
    series_item.ContourImageSequence = DicomSequence(_image_ref(s) for s in slices)
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (conventional)
    study_item.ReferencedSOPInstanceUID = slices[0].StudyInstanceUID
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = spec.frame_uid
    frame_item.RTReferencedStudySequence = DicomSequence([study_item])
    return frame_item


def _other_rois(patient: Patient, spec: SeriesSpec) -> list[tuple[str, int, str, np.ndarray | None]]:
    """(ROIName, ROI Number, RTROIInterpretedType, mask or None) of the RTSTRUCT structures that are not lesions.

    Organs follow the phantom anatomy of the CT field of view (the one lesions were placed in): 'Body' is
    the body ellipse on every slice (it encloses every lesion), the lungs the thorax half, 'Liver' the
    abdominal half (a liver or lung lesion lies inside its organ's contour), 'Spinal-Cord' a cylinder in
    the spine; 'Edema' is the first lesion's sphere grown by :data:`EDEMA_MARGIN_MM`. The note ROI has no
    contour.
    """
    ct = patient.series_by_role("ct")
    assert ct is not None
    a = _anatomy(ct.grid)
    grid = spec.grid
    z, y, x = grid.mesh()
    shape = grid.shape_zyx
    thorax = np.broadcast_to(z >= a.z_mid, shape)

    def everywhere(area: np.ndarray) -> np.ndarray:
        return np.broadcast_to(area, shape)

    first = patient.lesions[0]
    masks = {"Body": everywhere(_ellipse(x, y, a.cx, a.cy, a.body_ax, a.body_ay)),
             "Spinal-Cord": everywhere(_ellipse(x, y, a.cx, a.spine_cy, 0.35 * a.spine_r, 0.35 * a.spine_r)),
             "Lung-Left": everywhere(_ellipse(x, y, a.cx + a.lung_dx, a.lung_cy, a.lung_ax, a.lung_ay)) & thorax,
             "Lung-Right": everywhere(_ellipse(x, y, a.cx - a.lung_dx, a.lung_cy, a.lung_ax, a.lung_ay)) & thorax,
             "Liver": everywhere(_ellipse(x, y, a.liver_cx, a.liver_cy, a.liver_a, a.liver_a)) & ~thorax,
             "Edema": _lesion_mask(grid, dataclasses.replace(first, radius_mm=first.radius_mm + EDEMA_MARGIN_MM))}
    return [(name, number, kind, masks[name]) if name is not None else (patient.identity.roi_note, number, kind, None)
            for name, number, kind in RTSTRUCT_OTHER_ROIS]


def _structure_roi_item(spec: SeriesSpec, number: int, name: str) -> Dataset:
    """StructureSetROISequence item of a structure that is not a lesion."""
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = spec.frame_uid
    roi.ROIName = name
    roi.ROIGenerationAlgorithm = "MANUAL"
    return roi


def _structure_contour_item(number: int, mask: np.ndarray, spec: SeriesSpec, slices: Sequence[Dataset]) -> Dataset:
    """ROIContourSequence item of a structure that is not a lesion: contours of ``mask`` on ``spec``'s grid."""
    item = Dataset()
    item.ROIDisplayColor = ["0", "255", "0"]
    item.ReferencedROINumber = number
    item.ContourSequence = DicomSequence(_lesion_contours(spec.grid, np.asarray(mask), slices))
    return item


def _structure_observation_item(number: int, kind: str, interpreter: str) -> Dataset:
    """RTROIObservationsSequence item of a structure that is not a lesion (ORGAN, EXTERNAL, MARKER)."""
    obs = Dataset()
    obs.ObservationNumber = number
    obs.ReferencedROINumber = number
    obs.RTROIInterpretedType = kind
    obs.ROIInterpreter = interpreter
    return obs


def _roi_item(spec: SeriesSpec, lesion: Lesion) -> Dataset:
    """StructureSetROISequence item: ROINumber = label, ROIName = roi_name."""
    roi = Dataset()
    roi.ROINumber = lesion.label
    roi.ReferencedFrameOfReferenceUID = spec.frame_uid
    roi.ROIName = lesion.roi_name
    roi.ROIGenerationAlgorithm = "MANUAL"
    return roi


def _roi_contour_item(spec: SeriesSpec, lesion: Lesion, slices: Sequence[Dataset]) -> Dataset:
    """ROIContourSequence item: the lesion's planar contours on ``spec``'s grid."""
    item = Dataset()
    item.ROIDisplayColor = ["255", "0", "0"]
    item.ReferencedROINumber = lesion.label
    item.ContourSequence = DicomSequence(_lesion_contours(spec.grid, _lesion_mask(spec.grid, lesion), slices))
    return item


def _roi_observation_item(lesion: Lesion, interpreter: str) -> Dataset:
    """RTROIObservationsSequence item (GTV), with the identifying ROIInterpreter."""
    obs = Dataset()
    obs.ObservationNumber = lesion.label
    obs.ReferencedROINumber = lesion.label
    obs.RTROIInterpretedType = "GTV"
    obs.ROIInterpreter = interpreter
    return obs


def _image_ref(image: Dataset) -> Dataset:
    """A ContourImageSequence item referencing one image slice."""
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def _lesion_contours(grid: Grid, mask: np.ndarray, slices: Sequence[Dataset]) -> list[Dataset]:
    """CLOSED_PLANAR contour items (LPS mm, closing point not repeated) for every slice the mask touches."""
    items = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        padded = np.pad(mask[k].astype(float), 1)
        for contour in measure.find_contours(padded, 0.5):
            points = contour[:-1] - 1.0  # (row, col) in voxel indices; drop the repeated closing point
            x = grid.origin[0] + points[:, 1] * grid.pixel_mm
            y = grid.origin[1] + points[:, 0] * grid.pixel_mm
            z = np.full_like(x, grid.slice_z(int(k)))
            item = Dataset()
            item.ContourImageSequence = DicomSequence([_image_ref(slices[int(k)])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourData = [_ds(round(float(v), 3)) for v in np.column_stack([x, y, z]).ravel()]
            items.append(item)
    return items


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> Path:
    """Write rows as CSV (header first, '\\n' line ends, missing values empty) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return write_text(path, buffer.getvalue())


def _iso(value: dt.date | None) -> str:
    """ISO date or empty string."""
    return "" if value is None else value.isoformat()


def _clinical_row(patient: Patient) -> dict[str, object]:
    """One row of raw/clinical.csv (columns in CLINICAL_COLUMNS)."""
    c = patient.clinical
    organs = {lesion.organ for lesion in patient.lesions}
    return {"site": patient.site.code, "patient_id": patient.patient_id, "birth_date": _iso(c.birth_date),
            "advanced_diagnosis_date": _iso(c.diagnosis_date), "cdk46i_start_date": _iso(c.start_date),
            "cdk46i_line": 1, "cdk46i_drug": c.drug, "endocrine_partner": c.partner,
            "menopausal_status": c.menopausal_status, "disease_setting": c.disease_setting, "visceral_disease": "yes" if organs & {"liver", "lung"} else "no",
            "bone_only_disease": "yes" if organs == {"bone"} else "no", "ecog": c.ecog,
            "progression_date": _iso(c.progression_date), "death_date": _iso(c.death_date),
            "last_followup_date": _iso(c.last_followup_date)}


def outcomes(clinical: Clinical) -> dict[str, int]:
    """OS and PFS from the clinical dates (days from CDK4/6i start; event 1 = death, or progression/death)."""
    os_end = clinical.death_date or clinical.last_followup_date
    events = [d for d in (clinical.progression_date, clinical.death_date) if d is not None]
    pfs_end = min(events) if events else clinical.last_followup_date
    return {"os_days": (os_end - clinical.start_date).days, "os_event": int(clinical.death_date is not None),
            "pfs_days": (pfs_end - clinical.start_date).days, "pfs_event": int(bool(events))}


def _truth_patient_row(patient: Patient) -> dict[str, object]:
    """One row of truth/patients.csv: baseline UIDs, dates, SUV inputs and scale, outcomes."""
    ct, pet = patient.series_by_role("ct"), patient.series_by_role("pet")
    nac, old = patient.series_by_role("pet_nac"), patient.series_by_role("ct_old")
    assert ct is not None and pet is not None
    session = patient.studies["session"]
    old_study = patient.studies.get("old")
    return {"site": patient.site.code, "patient_id": patient.patient_id, "patient_name": patient.patient_name,
            "birth_date": _iso(patient.birth_date), "cdk46i_start_date": _iso(patient.clinical.start_date),
            "segmentation_format": patient.segmentation_format,
            "segmentation_date": _iso(segmentation_time(patient).date()), "study_uid": session.study_uid,
            "frame_of_reference_uid": ct.frame_uid, "study_date": _iso(session.start.date()),
            "ct_series_uid": ct.series_uid, "ct_series_time": ct.start.isoformat(),
            "pet_series_uid": pet.series_uid, "pet_series_time": pet.start.isoformat(),
            "pet_nac_series_uid": nac.series_uid if nac else "",
            "old_ct_study_uid": old_study.study_uid if old_study else "",
            "old_ct_series_uid": old.series_uid if old else "",
            "old_ct_study_date": _iso(old_study.start.date()) if old_study else "",
            "weight_kg": patient.weight_kg, "height_m": patient.height_m, "dose_bq": int(patient.dose_bq),
            "injection_datetime": patient.injection.isoformat(),
            "uptake_s": int((pet.start - patient.injection).total_seconds()),
            "suvbw_scale_g_per_ml": f"{suvbw_scale(patient, pet.start):.9g}",
            "n_lesions": len(patient.lesions), **outcomes(patient.clinical)}


def _truth_lesion_rows(patient: Patient) -> list[dict[str, object]]:
    """Rows of truth/lesions.csv: one per lesion per modality; volume_ml is the voxelised volume on that grid."""
    rows = []
    for modality, role in (("ct", "ct"), ("pet", "pet")):
        spec = patient.series_by_role(role)
        assert spec is not None
        for lesion in patient.lesions:
            n = int(_lesion_mask(spec.grid, lesion).sum())
            rows.append({"site": patient.site.code, "patient_id": patient.patient_id, "modality": modality,
                         "lesion_id": lesion.lesion_id, "organ": lesion.organ, "label": lesion.label,
                         "roi_name": lesion.roi_name, "volume_ml": f"{n * spec.grid.voxel_ml:.4f}", "n_voxels": n,
                         "ct_hu": lesion.ct_hu, "suvbw": lesion.suvbw, "center_mm_x": lesion.center_mm[0],
                         "center_mm_y": lesion.center_mm[1], "center_mm_z": lesion.center_mm[2],
                         "radius_mm": lesion.radius_mm})
    return rows


def _lesion_table_rows(patient: Patient) -> list[dict[str, object]]:
    """Rows of raw/lesions.csv (what the radiologists declare), one per lesion per modality."""
    return [{"site": patient.site.code, "patient_id": patient.patient_id, "modality": modality,
             "lesion_id": lesion.lesion_id, "label": lesion.label, "roi_name": lesion.roi_name, "organ": lesion.organ}
            for modality in ("ct", "pet") for lesion in patient.lesions]


def segmentation_time(patient: Patient) -> dt.datetime:
    """When the radiologist saved the masks: 16:30 two days after the PET/CT session (SEG/RTSTRUCT dates)."""
    return dt.datetime.combine(patient.studies["session"].start.date() + dt.timedelta(days=2), dt.time(16, 30))


def _write_patient(root: Path, patient: Patient, seed: int) -> int:
    """Render and write one patient's DICOM series and segmentations; returns the number of files written."""
    n_files = 0
    written: dict[str, list[Dataset]] = {}
    for number, spec in enumerate(patient.series):
        rng = np.random.default_rng([seed, 2, patient.index, number])
        lesions = () if spec.role == "ct_old" else patient.lesions
        if spec.modality == "CT":
            slices = _ct_slices(patient, spec, ct_hu_volume(spec.grid, lesions, rng), seed)
        else:
            activity = pet_suv_volume(spec.grid, lesions, rng) / suvbw_scale(patient, spec.start)
            if spec.role == "pet_nac":
                activity = activity * _nac_factor(spec.grid)
            slices = _pet_slices(patient, spec, activity, seed)
        n_files += len(_write_series(root, patient, spec, slices))
        written[spec.role] = slices
    seg_time = segmentation_time(patient)
    for modality in ("ct", "pet"):
        spec = patient.series_by_role(modality)
        assert spec is not None
        folder = root / "raw" / "segmentations" / patient.site.code / patient.patient_id / modality
        path = folder / SEGMENTATION_FILES[patient.segmentation_format]
        labels = _label_map(spec.grid, patient.lesions)
        if patient.segmentation_format == "nifti":
            _write_nifti(path, spec.grid, labels)
        elif patient.segmentation_format == "seg":
            _write_dataset(path, _seg_dataset(patient, modality, written[modality], labels, seed, seg_time))
        else:
            _write_dataset(path, _rtstruct_dataset(patient, modality, spec, written[modality], seed, seg_time))
        n_files += 1
    return n_files


def synthesize_cohort(out_dir: Path, patients: int = 3, seed: int = 0, shape: tuple[int, int, int] = (64, 64, 40),
                      sites: int = 2) -> CohortSummary:
    """Write a synthetic multicentre cohort under ``out_dir`` (layout in docs/data-layout.md) and its truth.

    ``shape`` is the CT matrix (columns, rows, slices); patients are spread over ``sites`` sites
    (patient i at site i mod sites). Same arguments give byte-identical files. Refuses an ``out_dir``
    that already holds ``raw/`` or ``truth/``, so two cohorts never mix.
    """
    shape = _validate(patients, seed, shape, sites)
    root = Path(out_dir)
    for part in ("raw", "truth"):
        if (root / part).exists():
            raise ConfigError(f"{root / part} already exists; choose an empty output folder or delete it")
    book = _MarkerBook(seed)
    site_plans = [_plan_site(seed, s, book) for s in range(sites)]
    plans = [_plan_patient(seed, i, site_plans[i % sites], shape, book) for i in range(patients)]
    n_files = sum(_write_patient(root, p, seed) for p in plans)
    markers = tuple(entry[0] for entry in book.entries)
    tables = (
        _write_csv(root / "raw" / "lesions.csv", LESION_TABLE_COLUMNS, [r for p in plans for r in _lesion_table_rows(p)]),
        _write_csv(root / "raw" / "clinical.csv", CLINICAL_COLUMNS, [_clinical_row(p) for p in plans]),
        _write_csv(root / "truth" / "patients.csv", TRUTH_PATIENT_COLUMNS, [_truth_patient_row(p) for p in plans]),
        _write_csv(root / "truth" / "lesions.csv", TRUTH_LESION_COLUMNS,
                   [r for p in plans for r in _truth_lesion_rows(p)]),
        write_text(root / "truth" / "markers.txt", "".join(f"{m}\n" for m in markers)),
        _write_csv(root / "truth" / "markers.csv", ("marker", "site", "patient_id", "where"),
                   [dict(zip(("marker", "site", "patient_id", "where"), e)) for e in book.entries]),
    )
    return CohortSummary(out_dir=root, n_patients=patients, n_lesions=sum(len(p.lesions) for p in plans),
                         n_files=n_files + len(tables), markers=markers, seed=seed,
                         sites=tuple(s.code for s in site_plans))
