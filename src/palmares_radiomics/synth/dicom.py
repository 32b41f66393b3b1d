"""Hospital-like DICOM exports: CT and PET image series (headers carrying the plan's PHI markers, the
'PALMARES SYNTH' private block, pixel data) written into each site's export folders, and the DICOM value strings
(DA, TM, DT, DS) every writer uses."""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage
from pydicom.valuerep import format_number_as_ds

from ..files import atomic_path
from .plan import CT_RESCALE_INTERCEPT, F18_HALF_LIFE_S, PET_STORED_MAX, Grid, Patient, SeriesSpec, StudySpec, make_uid


# ----------------------------------------------------------------------------------------------- DICOM value strings


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

    Every identifying value carries its own marker (see the docstring of :mod:`.plan`).
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
