"""The mask stage: the patient's segmentation de-identified, judged against its scan and imported onto the image
grid as a label map, one label per lesion of the lesion table."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .. import volumes
from ..files import atomic_path, write_json
from ..intake import lesion_specs
from ..records import FAILED, OK, StageStatus, read_status
from .deid import deidentify_segmentation
from .status import guarded, skipped


def run_mask(patient: str, modality: str, record_path: Path, deid_status_path: Path, image_status_path: Path,
             key: bytes, out_mask: Path, status_path: Path, audit_path: Path, *,
             min_volume_ml: float) -> StageStatus:
    """De-identify the patient's segmentation (intake record) and import it onto the image grid as a label
    map, one label per lesion of the lesion table; structures the table does not name are listed as ignored.

    The segmentation is judged by :func:`~palmares_radiomics.validate.validate_segmentation`, as check-segmentation
    and the upload page judge it (``min_volume_ml``: config ``min_lesion_volume_ml``); the first problem fails the
    stage, warnings go into the status details."""
    from .. import deid, masks
    from ..errors import SegmentationError
    from ..intake import read_record
    from ..validate import validate_segmentation

    def body() -> StageStatus:
        image_status = read_status(image_status_path)
        if not image_status.ok:
            return skipped("mask", image_status, modality)
        record = read_record(record_path)
        lesions = lesion_specs(record["lesions"], modality)
        if not lesions:
            return StageStatus("mask", patient, modality, FAILED,
                               f"the lesion table has no {modality.upper()} lesion for this patient")
        root = Path(read_status(deid_status_path).outputs["dir"])
        ctx = deid.DeidContext(key=key, site=record["site"],
                               safe_roi_names=frozenset(les.roi_name for les in lesions) - {""})
        audits: list[dict[str, Any]] = []
        seg_dir = root / modality / "segmentation"
        if seg_dir.exists():
            shutil.rmtree(seg_dir)
        segmentation, digest = deidentify_segmentation(Path(record["folder"]), seg_dir, ctx, audits)
        write_json(audit_path, {"patient": patient, "objects": audits})
        # read as stored (CT Int16: half the memory of Float32); not handed over by the image stage: kept through the
        # segmentation's de-identification and the reference check, it raised this stage's peak (benchmarks/README.md)
        image = sitk.ReadImage(image_status.outputs["image"])
        # series/frame UIDs for the SEG/RTSTRUCT reference checks (a label map names no series: not read for it)
        reference = None if volumes.is_volume_file(segmentation) else masks.image_reference(root / modality / "image")
        imported = validate_segmentation(segmentation, image, lesions, modality=modality, reference=reference,
                                         min_volume_ml=min_volume_ml)
        if not imported.ok or imported.label_map is None:
            first = imported.problems[0]
            raise SegmentationError(first.message, code=first.code, fix=first.fix)
        label_map = sitk.Cast(imported.label_map, sitk.sitkUInt16)
        with atomic_path(out_mask) as tmp:
            sitk.WriteImage(label_map, str(tmp), useCompression=True)
        volumes.keep_volume(out_mask, label_map)  # the features stage takes both from memory
        volumes.keep_volume(image_status.outputs["image"], image)
        summary = {s.label: s for s in imported.lesions}
        details = {"lesions": [{**asdict(les), "structure": summary[les.label].structure,
                                "voxels": summary[les.label].voxels, "volume_ml": summary[les.label].volume_ml}
                               for les in lesions],
                   "format": imported.kind, "ignored": list(imported.ignored),
                   "warnings": [{"code": w.code, "message": w.message, "fix": w.fix} for w in imported.warnings],
                   "segmentation": {"file": segmentation.name, "sha256": digest}}
        return StageStatus("mask", patient, modality, OK, outputs={"mask": str(out_mask)}, details=details)

    return guarded("mask", patient, modality, status_path, body)
