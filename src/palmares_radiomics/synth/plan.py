"""The cohort plan: constants, the frozen records the writers read, and the seeded draws that fill them.

Everything random is decided here (sites, identities and PHI markers, sessions, studies and series, lesions,
clinical dates, UIDs); rendering and writing (:mod:`.truth`, :mod:`.dicom`, :mod:`.masks`, :mod:`.clinical`)
only read a :class:`Patient`.

- **Sessions.** The baseline exam is one PET/CT session (one study, one FrameOfReferenceUID): a
  contrast-enhanced diagnostic CT (``TC TORACE ADDOME MDC``) acquired 3 minutes before an FDG PET
  (``PET WB AC``); for every second patient the same session also holds a non-attenuation-corrected
  PET (``PET WB NAC``, CorrectedImage without ATTN) and an older diagnostic CT study 150-400 days
  before therapy start (own study and frame of reference, no lesions yet), so series selection is real.
- **Geometry.** CT: ``shape`` = (columns, rows, slices), 2.0 mm pixels, 2.5 mm slices, axial HFS,
  centred on the table axis. PET: the same field of view on a 4 mm grid (about half the matrix).
- **PHI.** Every value a PS3.15 Basic-profile de-identifier must remove or replace, and every folder
  name derived from one, carries a unique marker ``ZQX`` + 6 upper-case letters/digits, listed in
  ``truth/markers.txt`` (``truth/markers.csv`` says where each one went). Dates are real dates, recorded
  in ``truth/patients.csv``. Values a de-identifier keeps (sex, age, weight, size, pixel data, modality,
  manufacturer, acquisition parameters, lesion and organ ROI names) carry no marker; one extra RTSTRUCT ROI
  name (a reader's note, not a lesion) does, as free text typed in a structure set can.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..errors import ConfigError

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
            raise ConfigError("the field of view is too small to place a lesion; "
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
