"""The radiologists' masks: lesion label maps and the NIfTI, DICOM-SEG and RTSTRUCT segmentation writers.

- **Segmentations as radiologists export them** (issue 13). RTSTRUCTs also hold structures that are not
  lesions (:data:`RTSTRUCT_OTHER_ROIS`: 'Body' enclosing everything, 'Spinal-Cord', both lungs, 'Liver',
  an 'Edema' around the first lesion, and the note ROI), and ROI Numbers are not positions: the other ROIs
  come first with numbers 1-9 in a shuffled order, lesions follow from :data:`.plan.RTSTRUCT_FIRST_LESION_NUMBER`;
  the lesion table's label of an RTSTRUCT lesion is its ROI Number. DICOM-SEG lesions all carry the segment
  label :data:`.plan.SEG_SHARED_LABEL` (as real SEG tools repeat it); the lesion table names them by it and tells
  them apart by the segment number in its label column.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import gzip
from collections.abc import Iterable, Sequence
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import RTStructureSetStorage
from skimage import measure

from ..files import atomic_path
from .dicom import _da, _ds, _dt, _file_meta, _tm
from .plan import (
    EDEMA_MARGIN_MM,
    RTSTRUCT_OTHER_ROIS,
    Grid,
    Lesion,
    Patient,
    SeriesSpec,
    _anatomy,
    _ellipse,
    make_uid,
)


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


def segmentation_time(patient: Patient) -> dt.datetime:
    """When the radiologist saved the masks: 16:30 two days after the PET/CT session (SEG/RTSTRUCT dates)."""
    return dt.datetime.combine(patient.studies["session"].start.date() + dt.timedelta(days=2), dt.time(16, 30))
