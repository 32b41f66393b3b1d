"""The de-identification stage (the PHI boundary): the patient's selected series, and its segmentations.

``run_deid`` writes the de-identified DICOM of every selected baseline series; the mask stage calls
``deidentify_segmentation`` for each uploaded segmentation (so that a new one reruns only that stage).
"""

from __future__ import annotations

import logging
import shutil
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .. import volumes
from ..errors import PalmaresError
from ..files import atomic_path, sha256_file, write_json
from ..records import FAILED, OK, StageStatus
from .status import guarded

log = logging.getLogger(__name__)



#: Segmentation files by name, for messages only (the file's content decides how it is read).
_LABEL_MAP_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
#: The largest label map the mask stage reads (1 G voxels, 2 GB as UInt16): a bigger header is refused before
#: a compressed file is inflated.
MAX_LABEL_MAP_VOXELS = 1 << 30


def clean_nifti(src: Path, dst: Path) -> None:
    """Copy a NIfTI label map keeping only voxels and geometry: description, aux file, intent name
    and header extensions (where segmentation tools may store names or paths) are dropped."""
    import nibabel as nib

    image = nib.load(str(src))
    data = np.asanyarray(image.dataobj)
    clean = nib.Nifti1Image(data, image.affine)
    clean.header.set_qform(image.affine, code=int(image.header["qform_code"]) or 1)
    clean.header.set_sform(image.affine, code=int(image.header["sform_code"]) or 1)
    clean.header.set_xyzt_units("mm", "sec")
    with atomic_path(dst) as tmp:
        nib.save(clean, str(tmp))


def sha256_files(paths: Sequence[Path]) -> str:
    """SHA-256 over the SHA-256 of each file, in the order given: one content hash for a series."""
    import hashlib

    return hashlib.sha256(b"".join(bytes.fromhex(sha256_file(path)) for path in paths)).hexdigest()


def run_deid(patient: str, record_path: Path, key: bytes, out_dir: Path, status_path: Path,
             audit_path: Path) -> StageStatus:
    """De-identify one patient's selected baseline series (the intake record) into ``out_dir``.

    Output layout: ``out_dir/<modality>/image/<SOPInstanceUID>.dcm``; the details give, per modality,
    the number of files and the content hash of the source series (provenance). The audit (PHI area)
    goes to ``audit_path``. Segmentations are the mask stage's (so that a new one reruns only that).
    """
    from .. import deid
    from ..intake import read_record

    def body() -> StageStatus:
        record = read_record(record_path)
        site = record["site"]
        ctx = deid.DeidContext(key=key, site=site)
        audits: list[dict[str, Any]] = []
        per_modality: dict[str, dict[str, Any]] = {}
        for modality, series in sorted(record["series"].items()):
            image_dir = out_dir / modality / "image"
            if image_dir.exists():
                shutil.rmtree(image_dir)  # a rerun never mixes old and new files
            files = [Path(f[0]) for f in series["files"]]
            written = 0
            problems: list[str] = []
            # Files sharing a SOP Instance UID (one output name): an identical copy is de-identified once and
            # counted as a duplicate; different files refuse the series (which one is right cannot be told).
            by_instance: dict[str, list[Path]] = {}
            for number, path in enumerate(files, start=1):
                result = deid.deidentify_file(path, image_dir, ctx, output=_image_file)
                if result.status != "written":  # unreadable, no pixel data, quarantine, missing PatientID, ...
                    problems.append(f"file {number} of {len(files)} of the selected series: {result.reason}")
                    continue
                same = by_instance.setdefault(result.audit.sop_instance_uid, [])
                same.append(path)
                if len(same) > 1:
                    continue  # settled below, once every file has been read
                audits.append(_audit_dict(result.audit))
                written += 1
            duplicates = conflicting = 0
            for same in by_instance.values():
                if len(same) > 1:
                    if len({sha256_file(p) for p in same}) == 1:
                        duplicates += len(same) - 1
                    else:
                        conflicting += len(same)
            if conflicting and not problems:
                problems.append(f"{conflicting} files of the selected series share a SOP Instance UID but differ "
                                "in content (which one is right cannot be told); re-export the series from PACS")
            if problems or not written:
                shutil.rmtree(image_dir, ignore_errors=True)
                reason = problems[0] if problems else "no file of the selected series could be de-identified"
                per_modality[modality] = {"status": FAILED, "reason": f"deid: {reason}"}
                continue
            per_modality[modality] = {"status": OK, "files": written, "sha256": sha256_files(files),
                                      # EARL status read from the original header on the PHI side (index.py):
                                      # de-identification replaces the SeriesDescription that often states it
                                      "earl": series.get("earl", "")}
            if duplicates:
                per_modality[modality]["duplicates"] = duplicates  # identical copies, de-identified once
        write_json(audit_path, {"patient": patient, "objects": audits})
        return StageStatus("deid", patient, "", OK, outputs={"dir": str(out_dir)},
                           details={"site": site, "modalities": per_modality})

    return guarded("deid", patient, "", status_path, body)


def _image_file(image_dir: Path, audit: Any) -> Path:
    """Where the DAG writes a de-identified image: ``<image_dir>/<new SOPInstanceUID>.dcm``."""
    return image_dir / f"{audit.sop_instance_uid}.dcm"


def _audit_dict(audit: Any) -> dict[str, Any]:
    """The de-identifier's audit record as a plain dict."""
    try:
        return asdict(audit)
    except TypeError:
        return dict(audit) if isinstance(audit, dict) else {"audit": str(audit)}


def deidentify_segmentation(folder: Path, out: Path, ctx: Any, audits: list[dict[str, Any]]) -> tuple[Path, str]:
    """De-identify the one segmentation file in ``folder`` into ``out``; returns (written file, its sha256).

    Any file name is accepted (``*.nii``, ``*.nii.gz``, ``*.nrrd`` label maps; anything else must be a
    DICOM-SEG or RTSTRUCT); a label map keeps only voxels and geometry (``mask.nii.gz``), a DICOM file
    goes through the PS3.15 de-identifier (``seg.dcm`` / ``rtstruct.dcm``). Raises SegmentationError
    when there is none, several, or one that cannot be read; messages never quote the file's name.
    """
    import pydicom

    from .. import deid
    from ..errors import SegmentationError
    from ..masks import RTSTRUCT_SOP_CLASS

    out.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    if not found:
        raise SegmentationError("no segmentation uploaded for this patient and modality (a NIfTI/NRRD label map, "
                                "a DICOM-SEG or an RTSTRUCT)")
    if len(found) > 1:  # an RT export may put the structure set beside the images it was drawn on
        found = [p for p in found if volumes.label_map_format(p) or p.name.lower().endswith(_LABEL_MAP_SUFFIXES)
                 or _segmentation_sop_class(p)]  # a damaged "mask.nii.gz" still counts: it was meant as one
    if len(found) != 1:
        kinds = ", ".join(sorted({_describe_file(p) for p in found})) or "none is a segmentation"
        raise SegmentationError(f"{len(found) or 'several'} files in the segmentation folder ({kinds}); keep "
                                "exactly one segmentation per patient and modality")
    src = found[0]
    unreadable = None
    try:
        digest = sha256_files([src])
    except OSError as exc:  # the upload itself (permissions, a vanished file): that patient's problem
        unreadable = exc.strerror or type(exc).__name__
    if unreadable is not None:  # raised outside the handler: no OSError in the chain, so not taken for the disk
        raise SegmentationError(f"the uploaded {_describe_file(src)} cannot be read ({unreadable}); ask the centre to "
                                "upload it again (or fix the file's permissions)")
    try:
        fmt = volumes.label_map_format(src)
        if fmt:  # by content: the upload page stores the current file as `segmentation`, with no suffix
            import tempfile

            from ..masks import check_label_map_file

            target = out / "mask.nii.gz"
            with volumes.readable_name(src, fmt) as named, tempfile.TemporaryDirectory(dir=out) as scratch:
                check_label_map_file(named, MAX_LABEL_MAP_VOXELS)
                if fmt == volumes.NRRD:  # voxels and geometry only, through SimpleITK, then the NIfTI clean-up
                    converted = Path(scratch) / "mask.nii.gz"
                    sitk.WriteImage(sitk.ReadImage(str(named)), str(converted))
                    named = converted
                clean_nifti(named, target)
            return target, digest
        sop_class = str(pydicom.dcmread(src, stop_before_pixels=True, specific_tags=["SOPClassUID"])
                        .get("SOPClassUID", ""))
        name = "rtstruct.dcm" if sop_class == RTSTRUCT_SOP_CLASS else "seg.dcm"
        result = deid.deidentify_file(src, out, ctx, output=lambda root, _audit: root / name)
    except PalmaresError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt upload fails this modality's mask, nothing else
        log.error("segmentation could not be read:\n%s", traceback.format_exc())
        raise SegmentationError(f"the uploaded {_describe_file(src)} is not readable ({type(exc).__name__}); export "
                                "the segmentation again and re-upload it") from exc
    if result.status != "written":
        raise SegmentationError(f"the uploaded {_describe_file(src)} was not de-identified: {result.reason}")
    audits.append(_audit_dict(result.audit))
    return out / name, digest


def _segmentation_sop_class(path: Path) -> bool:
    """True when ``path`` is a DICOM-SEG or RTSTRUCT (header only; anything unreadable is not)."""
    import pydicom

    from ..masks import LABELMAP_SEG_SOP_CLASS, RTSTRUCT_SOP_CLASS, SEG_SOP_CLASS

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM, truncated: not a segmentation
        return False
    return str(header.get("SOPClassUID", "")) in (SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS, RTSTRUCT_SOP_CLASS)


def _describe_file(path: Path) -> str:
    """'NIfTI label map', 'NRRD label map' or 'DICOM file': a file's kind without its (possibly identifying) name."""
    fmt = volumes.label_map_format(path)
    if fmt:
        return "NRRD label map" if fmt == volumes.NRRD else "NIfTI label map"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "NIfTI label map"
    if name.endswith((".nrrd", ".nhdr")):
        return "NRRD label map"
    return "DICOM file"
