"""The DAG's per-patient stages: each reads its inputs, calls the stage modules, and always writes a
status record, so that one failing patient is recorded with a reason and never stops the others.

Each job is one process, so its imports are part of every patient's cost: libraries one stage alone needs
(pydicom, pandas, nibabel) are imported inside that stage's functions (benchmarks/bench_cohort.py).

Every stage output declared to Snakemake is a small JSON status (``StageStatus``): ``ok`` with the
paths of its products, or ``failed``/``skipped`` with a reason a person can act on. A stage whose
upstream failed writes ``skipped`` and carries the upstream reason forward, so the failure table
names the first stage that failed. Reasons never contain PHI: they come from the pipeline's own
messages; anything unexpected is reported by type only and logged in full in the PHI-area log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import volumes
from .errors import PalmaresError
from .files import atomic_path, sha256_file, write_json
from .records import ORGANS, LesionSpec

log = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True, slots=True)
class StageStatus:
    """Outcome of one stage for one patient (and modality): products on success, a reason otherwise."""

    stage: str
    patient: str
    modality: str
    status: str
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK


def write_status(path: Path, status: StageStatus) -> StageStatus:
    """Write a status record atomically and return it."""
    write_json(path, asdict(status))
    return status


def read_status(path: Path) -> StageStatus:
    """Read a status record written by ``write_status``."""
    return StageStatus(**json.loads(Path(path).read_text(encoding="utf-8")))


def skipped(stage: str, upstream: StageStatus, modality: str = "") -> StageStatus:
    """The status of a stage that cannot run because ``upstream`` did not succeed."""
    reason = upstream.reason if upstream.status == SKIPPED else f"{upstream.stage}: {upstream.reason}"
    return StageStatus(stage, upstream.patient, modality or upstream.modality, SKIPPED, reason)


def guarded(stage: str, patient: str, modality: str, status_path: Path, body) -> StageStatus:
    """Run ``body()`` (returning a StageStatus); turn a data failure into a ``failed`` status.

    ``PalmaresError`` messages are written as they are (they are PHI-free by construction); any
    other exception is reported by type only, its traceback going to the job's log (a last resort:
    expected failures are PalmaresError subclasses). An infrastructure failure
    (:func:`~palmares_radiomics.errors.is_infrastructure_failure`: disk full, I/O error, no permission on the
    work area, out of memory) is re-raised and no status is written (an earlier one is removed), so the job
    fails and the same command runs the stage again once the machine is fixed, instead of recording the
    patient as failed for good. The outcome is logged in one line (``image PAL2-… ct: ok``), whoever ran the stage.
    """
    from .errors import is_infrastructure_failure

    try:
        status = body()
    except Exception as exc:  # noqa: BLE001 - one bad patient must not stop the run (MemoryError is one too)
        if is_infrastructure_failure(exc):
            log.error("stage %s of %s %s stopped by an infrastructure error (%s: %s); no status written: the job "
                      "fails and the same command runs it again once the machine is fixed",
                      stage, patient, modality, type(exc).__name__, getattr(exc, "strerror", None) or exc)
            try:
                Path(status_path).unlink(missing_ok=True)
            except OSError:
                pass
            raise
        if isinstance(exc, PalmaresError):
            status = StageStatus(stage, patient, modality, FAILED, str(exc))
        else:
            log.error("unexpected error in stage %s:\n%s", stage, traceback.format_exc())
            status = StageStatus(stage, patient, modality, FAILED,
                                 f"unexpected {type(exc).__name__} in stage {stage}; see the job log")
    log.info("%s: %s %s", " ".join(part for part in (stage, patient, modality) if part), status.status, status.reason)
    return write_status(status_path, status)


# --- de-identification (the PHI boundary) ------------------------------------------------------

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
    from . import deid
    from .intake import read_record

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

    from . import deid
    from .errors import SegmentationError
    from .masks import RTSTRUCT_SOP_CLASS

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

            from .masks import check_label_map_file

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

    from .masks import LABELMAP_SEG_SOP_CLASS, RTSTRUCT_SOP_CLASS, SEG_SOP_CLASS

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


# --- image volumes ------------------------------------------------------------------------------

SCANNER_TAGS = {"manufacturer": "Manufacturer", "model": "ManufacturerModelName", "kernel": "ConvolutionKernel",
                "slice_thickness_mm": "SliceThickness", "reconstruction": "ReconstructionMethod"}
def _number(value: Any) -> float | None:
    """A header decimal as a float, or None when absent or malformed (batch variables only; geometry is checked
    where the volume is read)."""
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def scanner_details(series_dir: Path) -> dict[str, Any]:
    """Batch variables of a (de-identified) series: manufacturer, model, kernel, slice thickness, pixel spacing,
    PET reconstruction and EARL status (the latter empty for CT and when the header does not state it)."""
    import pydicom

    from .index import earl_status

    first = sorted(series_dir.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    out: dict[str, Any] = {}
    for name, keyword in SCANNER_TAGS.items():
        value = ds.get(keyword)
        out[name] = "\\".join(map(str, value)) if isinstance(value, pydicom.multival.MultiValue) else (
            str(value) if value not in (None, "") else "")
    spacing = ds.get("PixelSpacing")
    out["pixel_spacing_mm"] = _number(spacing[0] if spacing else None)
    out["slice_thickness_mm"] = _number(out["slice_thickness_mm"].split("\\")[0])  # a batch variable, not a geometry
    out["earl"] = earl_status(out["reconstruction"], str(ds.get("SeriesDescription", ""))) \
        if ds.get("Modality") == "PT" else ""
    return out


def run_image(patient: str, modality: str, deid_status_path: Path, out_image: Path, status_path: Path,
              suv_normalisations: Sequence[str] = (), suv_override: str | dict[str, Any] | None = None) -> StageStatus:
    """The patient's baseline volume: CT in HU, PET converted to SUVbw (refused, never guessed).

    ``suv_normalisations`` (``sul``, ``suvbsa``): also compute those scale factors on the PET SUV card;
    the image stays SUVbw, the PET metrics report the extra normalisations. ``suv_override``: this patient's
    audited ``suv_overrides`` entry (a mapping, or its JSON text) for the PET SUV card (ignored for CT); an
    invalid entry fails the stage with the reason.
    """
    from .errors import ConfigError

    def body() -> StageStatus:
        upstream = read_status(deid_status_path)
        if not upstream.ok:
            return skipped("image", upstream, modality)
        info = upstream.details["modalities"].get(modality, {})
        if info.get("status") != OK:
            return StageStatus("image", patient, modality, SKIPPED, info.get("reason", "no de-identified series"))
        series_dir = Path(upstream.outputs["dir"]) / modality / "image"
        from . import suv

        override = None
        if suv_override and modality == "pet":
            try:
                entry = json.loads(suv_override) if isinstance(suv_override, str) else suv_override
                override = suv.SuvOverride.from_mapping(entry)
            except (ConfigError, ValueError, TypeError) as exc:
                raise ConfigError(f"suv_overrides entry of this patient: {exc}") from None
        # one path with `palmares features`: CT in HU, PET in SUVbw through the SUV card (refused, never guessed)
        image, card = volumes.read_study_image_and_card(series_dir, suv.SuvOptions(
            sul="sul" in suv_normalisations, suvbsa="suvbsa" in suv_normalisations, override=override),
            ct_pixel_type=sitk.sitkFloat32)
        scanner = scanner_details(series_dir)
        if modality == "pet":  # stated in the original header, read on the PHI side before de-identification
            scanner["earl"] = info.get("earl") or scanner["earl"]
        details: dict[str, Any] = {"scanner": scanner, "size": list(image.GetSize()),
                                   "spacing_mm": list(image.GetSpacing())}
        if modality == "pet":
            if card is None:
                raise PalmaresError("the selected PET series is not a PET series (its Modality is not PT)")
            card = suv.with_image_check(card, image)  # whole-image mean SUV plausibility, reported in QC
            details["suv_card"] = card.to_json_dict()
            details["unit"] = "SUVbw (g/ml)"
            details["suv_normalisations"] = [n for n in SUV_NORMALISATIONS if n in suv_normalisations]
        else:
            details["unit"] = "HU"
        with atomic_path(out_image) as tmp:
            volumes.write_volume(image, tmp, int16_when_lossless=modality == "ct")
        return StageStatus("image", patient, modality, OK, outputs={"image": str(out_image)}, details=details)

    return guarded("image", patient, modality, status_path, body)


# --- masks ----------------------------------------------------------------------------------------

def lesion_specs(rows: Sequence[dict[str, str]], modality: str) -> list[LesionSpec]:
    """The lesions of one modality from lesion-table rows; a bad row is a LesionTableError naming it."""
    from .errors import LesionTableError

    lesions = []
    for number, row in enumerate(rows, start=1):
        if row.get("modality", modality) != modality:
            continue
        if not row.get("lesion_id", "").strip():
            raise LesionTableError(f"lesion table, {modality.upper()} row {number} of this patient: lesion_id is empty; "
                                   "give every lesion its own id (e.g. L1)")
        try:
            label = int(row["label"])
        except (TypeError, ValueError):
            raise LesionTableError(f"lesion table, {modality.upper()} lesion {row.get('lesion_id', number)}: label "
                                   f"must be a whole number (the structure's number in the segmentation file). "
                                   f"Found: {row.get('label')!r}") from None
        try:
            lesions.append(LesionSpec(lesion_id=row["lesion_id"], modality=modality, label=label,
                                      organ=row["organ"], roi_name=row.get("roi_name", "")))
        except ValueError as exc:
            raise LesionTableError(f"lesion table: {exc}; correct the row and rerun") from None
    return lesions


def run_mask(patient: str, modality: str, record_path: Path, deid_status_path: Path, image_status_path: Path,
             key: bytes, out_mask: Path, status_path: Path, audit_path: Path, *,
             min_volume_ml: float) -> StageStatus:
    """De-identify the patient's segmentation (intake record) and import it onto the image grid as a label
    map, one label per lesion of the lesion table; structures the table does not name are listed as ignored.

    The segmentation is judged by :func:`~palmares_radiomics.validate.validate_segmentation`, as check-segmentation
    and the upload page judge it (``min_volume_ml``: config ``min_lesion_volume_ml``); the first problem fails the
    stage, warnings go into the status details."""
    from . import deid, masks
    from .errors import SegmentationError
    from .intake import read_record
    from .validate import validate_segmentation

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


# --- features -------------------------------------------------------------------------------------

def run_features(patient: str, modality: str, image_status_path: Path, mask_status_path: Path, params_path: Path,
                 out_table: Path, status_path: Path, qc_dir: Path | None = None) -> StageStatus:
    """Features of every lesion of one patient and modality (one row per lesion).

    With ``qc_dir``, the QC pictures are drawn there too (:func:`draw_qc_pictures`: every lesion before and after
    IBSI resampling, the PET MIP) and described in ``details["qc"]``, on an OK status and on a FAILED one alike;
    pictures of an earlier run of the job are removed first.
    """
    from .features import extract_lesions, load_params

    qc: dict[str, Any] = {}  # filled once the pictures are drawn, so a later failure still reports them

    def body() -> StageStatus:
        if qc_dir is not None:
            clear_qc_pictures(Path(qc_dir))
        mask_status = read_status(mask_status_path)
        if not mask_status.ok:
            return skipped("features", mask_status, modality)
        image_status = read_status(image_status_path)
        params = load_params(params_path)
        image = volumes.read_volume(image_status.outputs["image"])
        label_map = volumes.take_volume(mask_status.outputs["mask"])
        lesions = [LesionSpec(**{k: v for k, v in d.items() if k in LesionSpec.__slots__})
                   for d in mask_status.details["lesions"]]
        results = extract_lesions(image, label_map, lesions, params, keep_resampled=qc_dir is not None)
        if qc_dir is not None:
            qc.update(draw_qc_pictures(image, label_map, results, modality, params_path, params.settings, Path(qc_dir)))
            results = [replace(result, resampled=None) for result in results]  # the crops are no longer needed
        pet_rows, patient_pet = pet_lesion_metrics(image, label_map, lesions, image_status) if modality == "pet" \
            else ({}, {})
        if qc:
            for entry in qc["lesions"]:
                pet_row = pet_rows.get(entry["lesion_id"], {})
                entry["suvmax"], entry["suvpeak"] = pet_row.get("pet_suvmax"), pet_row.get("pet_suvpeak")
        rows, lesion_failures = [], []
        for result in results:
            if result.error:
                lesion_failures.append({"lesion_id": result.lesion.lesion_id, "reason": result.error})
                continue
            rows.append({"lesion_id": result.lesion.lesion_id, "organ": result.lesion.organ,
                         **pet_rows.get(result.lesion.lesion_id, {}), **result.values})
        write_rows(rows, out_table)
        qc_details = {"qc": qc} if qc else {}
        if not rows:
            return StageStatus("features", patient, modality, FAILED,
                               "no lesion gave features: " + "; ".join(f["reason"] for f in lesion_failures),
                               details=qc_details)
        return StageStatus("features", patient, modality, OK, outputs={"table": str(out_table)},
                           details={"params_sha256": params.sha256, "lesion_failures": lesion_failures,
                                    "lesions": len(rows), "patient_pet": patient_pet, **qc_details,
                                    **({"filters": {spec.name: spec.describe() for spec in params.filters}}
                                       if params.filters else {})})

    status = guarded("features", patient, modality, status_path, body)
    if qc and status.status == FAILED and "qc" not in status.details:  # failed after the pictures were drawn
        status = write_status(status_path, replace(status, details={**status.details, "qc": qc}))
    return status


# --- one patient, one process -------------------------------------------------------------------------

@contextlib.contextmanager
def stage_log(path: Path) -> Iterator[None]:
    """Copy this process's log records to ``path`` while the block runs (a stage's own log file, beside the
    job's whole log on stderr)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


#: glibc ``mallopt`` parameters (malloc.h) and the size under which freed memory is kept for reuse.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _KEEP_BYTES = -1, -3, 1 << 30


@cache
def _glibc() -> Any:
    """The C library when it is glibc (``mallopt``, ``malloc_trim``), else None."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 1 GiB for reuse instead of giving them back to the kernel.

    A stage allocates and frees whole-volume arrays (100-400 MB for a clinical CT) again and again; by default glibc
    maps each afresh, and the kernel zero-fills it page by page (535,000 page faults and 1.7 s of system time per
    patient, benchmarks/bench_cohort.py). The per-patient job calls :func:`release_freed_memory` between stages, so
    that what one stage kept does not add to the next one's peak. For the per-patient job's process only. Returns
    False where there is no glibc (nothing changes)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) \
        and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def release_freed_memory() -> None:
    """Give the memory freed so far back to the kernel (glibc ``malloc_trim``; nothing elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: The stages of one series, in the order the per-patient job runs them after de-identification.
SERIES_STAGES = ("image", "mask", "features")


@dataclass(frozen=True, slots=True)
class WorkLayout:
    """Where the per-patient job reads and writes under the study's work folder (``work_dir``): past the PHI
    boundary, and in its ``phi/`` area. ``workflow/rules/patient.smk`` declares the same paths to Snakemake (the
    end-to-end tests fail if the two disagree: Snakemake then misses an output)."""

    work: Path

    @property
    def phi(self) -> Path:
        return self.work / "phi"

    def record(self, patient: str, modality: str = "") -> Path:
        """The intake's record of the patient (``modality`` "") or of one of its series (PHI side)."""
        return self.phi / "intake" / (f"{patient}_{modality}.json" if modality else f"{patient}.json")

    def status(self, stage: str, patient: str, modality: str = "") -> Path:
        return self.work / "status" / stage / (f"{patient}_{modality}.json" if modality else f"{patient}.json")

    def log(self, stage: str, patient: str, modality: str) -> Path:
        """A series stage's own log, past the boundary (image, features)."""
        return self.work / "logs" / stage / f"{patient}_{modality}.log"

    def audit(self, patient: str, modality: str = "") -> Path:
        """De-identification audit (PHI side): of the DICOM series, or of one modality's segmentation."""
        return self.phi / "audit" / (f"{patient}_{modality}_segmentation.json" if modality else f"{patient}.json")

    def deid(self, patient: str) -> Path:
        return self.work / "deid" / patient

    def product(self, stage: str, patient: str, modality: str) -> Path:
        """What a series stage writes: the image volume, the label map, the feature rows."""
        name = {"image": f"images/{patient}/{modality}.nii", "mask": f"masks/{patient}/{modality}.nii.gz",
                "features": f"features/{patient}/{modality}.json"}[stage]
        return self.work / name

    def qc(self, patient: str, modality: str) -> Path:
        return self.work / "qc" / patient / modality


def run_patient(patient: str, layout: WorkLayout, modalities: Sequence[str], key: bytes, params: Mapping[str, Path],
                *, suv_normalisations: Sequence[str] = (), suv_override: str | dict[str, Any] | None = None,
                min_volume_ml: float) -> list[StageStatus]:
    """Every per-patient stage in one process, the DAG's job per patient (``palmares stage patient``):
    de-identification, then for each of ``modalities`` the image, mask and features stages in turn.

    One process per patient instead of seven saves their start-ups (numpy, SimpleITK, scipy, pydicom, radiomics:
    0.6-1.5 CPU-s each, ``benchmarks/bench_cohort.py``) and six sevenths of the DAG's jobs. Each stage still writes
    its own status record, read by the next as when they ran apart: the outcome is that of ``palmares stage deid``,
    ``image``, ``mask`` and ``features`` run in turn (a modality the patient has no series of gets ``skipped``
    records, which the tables leave out). The image and features stages also log to their own files past the PHI
    boundary; de-identification and the mask stage read raw data, so their records go only to the job's stderr,
    which the DAG keeps on the PHI side. ``suv_override``: the patient's audited entry, for the PET image stage.
    """
    deid_status = layout.status("deid", patient)
    statuses = [run_deid(patient, layout.record(patient), key, layout.deid(patient), deid_status,
                         layout.audit(patient))]
    for modality in modalities:
        paths = {stage: layout.status(stage, patient, modality) for stage in SERIES_STAGES}
        release_freed_memory()  # each stage's peak on its own, as if it ran in a process of its own
        with stage_log(layout.log("image", patient, modality)):
            image = run_image(patient, modality, deid_status, layout.product("image", patient, modality),
                              paths["image"], suv_normalisations, suv_override if modality == "pet" else None)
        release_freed_memory()
        mask = run_mask(patient, modality, layout.record(patient, modality), deid_status, paths["image"], key,
                        layout.product("mask", patient, modality), paths["mask"], layout.audit(patient, modality),
                        min_volume_ml=min_volume_ml)
        release_freed_memory()
        with stage_log(layout.log("features", patient, modality)):
            features = run_features(patient, modality, paths["image"], paths["mask"], params[modality],
                                    layout.product("features", patient, modality), paths["features"],
                                    qc_dir=layout.qc(patient, modality))
        statuses += [image, mask, features]
        volumes.forget_volumes()
    return statuses


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write a features job's rows (one dict per lesion) for the tables stage (:func:`read_rows`): JSON with the
    columns in order of first appearance and one list of values per row, a value the row lacks null.

    JSON, not Parquet: writing Parquet imports pandas (pyarrow checks every array for it), 0.4 CPU-s in every
    features job (benchmarks/bench_cohort.py); floats survive JSON exactly (shortest repr), NaN as ``NaN``.
    """
    columns = list(dict.fromkeys(name for row in rows for name in row))
    write_json(path, {"columns": columns, "rows": [[_plain(row.get(name)) for name in columns] for row in rows]})


def _plain(value: Any) -> str | int | float | bool | None:
    """A table value as JSON writes it exactly: numpy scalars as Python numbers; anything else is a bug, refused
    (``write_json`` would write it as text, and the column would become a text column)."""
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a feature table value must be a number, text or empty, not {type(value).__name__}")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows :func:`write_rows` wrote, as dicts (every column in every row, in the written order)."""
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], values)) for values in table["rows"]]


# --- QC pictures of the features stage -------------------------------------------------------------

#: A lesion whose volume changes by more than this percentage (either way) through IBSI resampling is flagged in
#: the QC report: a thin or small lesion on thick slices gains or loses partial-volume voxels at the 0.5 mask
#: threshold, and its shape and texture features then describe the new grid more than the lesion.
VOLUME_CHANGE_FLAG_PCT = 10.0
#: Files a features job writes in its QC folder (and removes there before drawing, so none is left from an
#: earlier run with more lesions); the last pattern is a temporary file left by a killed job.
QC_FILE_PATTERNS = ("lesion_*_original.png", "lesion_*_resampled.png", "mip.png", ".*.png.*.tmp")
QC_MIP = "mip.png"


def clear_qc_pictures(qc_dir: Path) -> None:
    """Remove the QC pictures (``QC_FILE_PATTERNS``) an earlier run of the job left in ``qc_dir``."""
    if not qc_dir.is_dir():
        return
    for pattern in QC_FILE_PATTERNS:
        for path in qc_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def _spacing_text(image: sitk.Image) -> str:
    """Voxel spacing as ``0.98×0.98×2.5 mm`` (x, y, z)."""
    return "\u00d7".join(f"{s:.2f}".rstrip("0").rstrip(".") for s in image.GetSpacing()) + " mm"


def _volume_ml(voxels: int, image: sitk.Image) -> float:
    return voxels * float(np.prod(image.GetSpacing())) / 1000.0


def _label_voxels(label_map: sitk.Image) -> dict[int, int]:
    """Voxel count of every non-zero label of ``label_map``."""
    labels = sitk.GetArrayViewFromImage(label_map)
    values, counts = np.unique(labels[labels != 0], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _draw(what: str, lesion_id: str, draw) -> str:
    """Call ``draw()``; return "" or, when it raised, the QC error text (the traceback goes to the job log).

    A picture that cannot be drawn never fails the stage; an infrastructure failure (disk full, no permission,
    out of memory: :func:`~palmares_radiomics.errors.is_infrastructure_failure`) is re-raised, as ``guarded``
    re-raises it, so the job fails and runs again once the machine is fixed.
    """
    from .errors import is_infrastructure_failure

    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - a QC picture must not fail the features
        if is_infrastructure_failure(exc):
            raise
        log.error("QC picture %s of lesion %s could not be drawn:\n%s", what, lesion_id, traceback.format_exc())
        return f"preview failed: {type(exc).__name__}"
    return ""


def draw_qc_pictures(image: sitk.Image, label_map: sitk.Image, results: Sequence[Any], modality: str,
                     params_path: Path, settings: Mapping[str, Any], qc_dir: Path) -> dict[str, Any]:
    """Draw the QC pictures of one patient and modality into ``qc_dir`` and return ``details["qc"]``.

    Per lesion (``results``: ``features.LesionFeatures`` with their resampled crops): ``lesion_<label>_original.png``
    (the image stage's volume and the mask) and ``lesion_<label>_resampled.png`` (the crop on the IBSI grid the
    features were computed on, ``""`` when resampling failed); PET: ``mip.png`` with every lesion marked. Each
    lesion's entry gives its volume before and after resampling, the change (``volume_flag`` beyond
    ``VOLUME_CHANGE_FLAG_PCT``), ``small`` (fewer than ``masks.MIN_LESION_VOXELS`` voxels, or below
    ``minimumROISize`` after resampling) and ``error`` (why a picture is missing; "" when none is). ``suvmax`` and
    ``suvpeak`` are None here and filled from the PET metrics by the caller.
    """
    from . import preview
    from .masks import MIN_LESION_VOXELS

    display = preview.display_range(params_path, modality)
    counts = _label_voxels(label_map)
    minimum = settings.get("minimumROISize")
    scan: list[Any] = []
    scan_error = _draw("scan", "(all)", lambda: scan.append(preview.PreviewScan.of(image, label_map)))
    original_grid = f"original grid {_spacing_text(image)}"
    entries = []
    for result in results:
        lesion = result.lesion
        name = f"{modality.upper()} lesion {lesion.lesion_id}, {lesion.organ}"
        voxels = counts.get(lesion.label, 0)
        volume = _volume_ml(voxels, image)
        errors = []
        original = f"lesion_{lesion.label}_original.png"

        def draw_original(out: Path = qc_dir / original, label: int = lesion.label, title: str = name) -> None:
            with atomic_path(out, suffix=".tmp") as tmp:
                scan[0].lesion_preview(label, modality, tmp, display=display, title=f"{title}, {original_grid}")

        error = scan_error or _draw("original", lesion.lesion_id, draw_original)
        if error:
            errors.append(f"original: {error}")
            original = ""
        resampled, volume_r, voxels_r = "", None, None
        if result.resampled is None:
            errors.append(f"resampled: {result.error or 'not resampled'}")
        else:
            image_r, mask_r = result.resampled
            voxels_r = int(sitk.GetArrayViewFromImage(mask_r).sum())
            volume_r = _volume_ml(voxels_r, image_r)
            resampled = f"lesion_{lesion.label}_resampled.png"
            grid = f"resampled {_spacing_text(image_r)}" if tuple(image_r.GetSpacing()) != tuple(image.GetSpacing()) \
                else f"cropped, not resampled {_spacing_text(image_r)}"

            def draw_resampled(out: Path = qc_dir / resampled, image_r: sitk.Image = image_r, mask_r: sitk.Image = mask_r,
                               title: str = f"{name}, {grid}") -> None:
                with atomic_path(out, suffix=".tmp") as tmp:
                    preview.lesion_preview(image_r, mask_r, 1, modality, tmp, display=display, title=title)

            error = _draw("resampled", lesion.lesion_id, draw_resampled)
            if error:
                errors.append(f"resampled: {error}")
                resampled = ""
        change = 100.0 * (volume_r - volume) / volume if volume_r is not None and volume > 0 else None
        entries.append({
            "lesion_id": lesion.lesion_id, "label": lesion.label, "organ": lesion.organ, "voxels": voxels,
            "volume_ml": round(volume, 6),
            "volume_ml_resampled": round(volume_r, 6) if volume_r is not None else None,
            "volume_change_pct": round(change, 2) if change is not None else None,
            "volume_flag": change is not None and abs(change) > VOLUME_CHANGE_FLAG_PCT,
            "small": voxels < MIN_LESION_VOXELS or (voxels_r is not None and minimum is not None
                                                     and voxels_r < int(minimum)),
            "suvmax": None, "suvpeak": None,
            "original": original, "resampled": resampled, "error": "; ".join(errors)})
    mip = ""
    if modality == "pet":
        marked = {r.lesion.label: r.lesion.lesion_id for r in results if counts.get(r.lesion.label, 0)}

        def draw_mip() -> None:
            with atomic_path(qc_dir / QC_MIP, suffix=".tmp") as tmp:
                preview.mip_preview(image, label_map, marked, tmp, display=display,
                                    title=f"PET, {len(marked)} lesion{'s' if len(marked) != 1 else ''} marked")

        if not _draw("mip", "(all)", draw_mip):
            mip = QC_MIP
    return {"dir": str(qc_dir), "mip": mip, "lesions": entries}


#: Per-lesion PET metrics copied into the lesion table (pet.LesionPetMetrics fields), prefixed ``pet_``.
PET_LESION_FIELDS = ("suvmax", "suvmean", "suvpeak", "mtv_suv2p5_ml", "tlg_suv2p5", "mtv_41pct_ml", "tlg_41pct")
#: Per-patient PET totals copied into the patient table (pet.OrganPetMetrics over all lesions), prefixed ``pet_``.
PET_PATIENT_FIELDS = ("total_mtv_suv2p5_ml", "total_tlg_suv2p5", "total_mtv_41pct_ml", "total_tlg_41pct",
                      "hottest_suvmax", "hottest_suvpeak", "dmax_mm", "sdmax_per_m")
#: Per-organ PET metrics (pet.OrganPetMetrics of the lesions in one organ), as ``pet_<organ>_<field>``.
PET_ORGAN_FIELDS = ("lesion_count", "total_mtv_suv2p5_ml", "total_tlg_suv2p5", "total_mtv_41pct_ml", "total_tlg_41pct",
                    "hottest_suvmax", "hottest_suvpeak", "dmax_mm")
#: Extra SUV normalisations (config suv_normalisations): name -> column stem. SUVbw is always computed.
SUV_NORMALISATIONS = {"sul": "sul", "suvbsa": "suvbsa_"}
#: Lesion SUVbw metrics re-expressed in each extra normalisation (the patient's hottest max/peak too).
SUV_SCALED_LESION = ("max", "mean", "peak")


def pet_lesion_metrics(suv: sitk.Image, label_map: sitk.Image, lesions: Sequence[LesionSpec],
                       image_status: StageStatus) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """SUVmax/mean/peak, MTV and TLG per lesion, and the patient's PET totals (Dmax, Dmax/BSA when height is known),
    overall and per organ site, plus SUL / SUVbsa max, mean and peak when the image stage was asked for them.

    SUL and SUVbsa differ from SUVbw by one factor per series (lean body mass / weight, BSA / weight: the
    card's ``sul_scale_factor`` and ``suvbsa_scale_factor`` over ``suvbw_scale_factor``), so they are the
    SUVbw values times that ratio; MTV and TLG stay defined on SUVbw. A requested normalisation the card
    could not compute (height or sex missing, see qc/suv_checks.csv) gives empty values.
    """
    from . import pet

    metrics = pet.lesion_metrics(suv, label_map, lesions)
    per_lesion = {m.lesion_id: {f"pet_{k}": getattr(m, k) for k in PET_LESION_FIELDS} for m in metrics}
    card = image_status.details.get("suv_card", {})
    inputs = card.get("inputs", {})
    patient = pet.patient_metrics(metrics, inputs.get("weight_kg"), inputs.get("height_m"))
    row = {**patient.all_lesions.as_row(), "sdmax_per_m": patient.sdmax_per_m}
    totals: dict[str, Any] = {f"pet_{k}": row[k] for k in PET_PATIENT_FIELDS}
    organ_rows = patient.as_row()
    for organ in ORGANS:
        for field_name in PET_ORGAN_FIELDS:
            totals[f"pet_{organ}_{field_name}"] = organ_rows[f"{organ}_{field_name}"]
    for name in image_status.details.get("suv_normalisations", []):
        stem = SUV_NORMALISATIONS[name]
        factor = card.get(f"{name}_scale_factor")
        ratio = factor / card["suvbw_scale_factor"] if factor is not None else None
        for m in metrics:
            for what in SUV_SCALED_LESION:
                value = getattr(m, f"suv{what}")
                per_lesion[m.lesion_id][f"pet_{stem}{what}"] = value * ratio if ratio is not None else None
        for what in ("max", "peak"):
            hottest = row[f"hottest_suv{what}"]
            totals[f"pet_hottest_{stem}{what}"] = hottest * ratio if ratio is not None and hottest is not None else None
    return per_lesion, totals
