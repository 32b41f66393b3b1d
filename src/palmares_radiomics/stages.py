"""The DAG's per-patient stages: each reads its inputs, calls the stage modules, and always writes a
status record, so that one failing patient is recorded with a reason and never stops the others.

Every stage output declared to Snakemake is a small JSON status (``StageStatus``): ``ok`` with the
paths of its products, or ``failed``/``skipped`` with a reason a person can act on. A stage whose
upstream failed writes ``skipped`` and carries the upstream reason forward, so the failure table
names the first stage that failed. Reasons never contain PHI: they come from the pipeline's own
messages; anything unexpected is reported by type only and logged in full in the PHI-area log.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk

from .errors import PalmaresError
from .files import atomic_path, write_json
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
    """Run ``body()`` (returning a StageStatus); turn any exception into a ``failed`` status.

    ``PalmaresError`` messages are written as they are (they are PHI-free by construction); any
    other exception is reported by type only, its traceback going to the job's log.
    """
    try:
        status = body()
    except PalmaresError as exc:
        status = StageStatus(stage, patient, modality, FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad patient must not stop the run
        log.error("unexpected error in stage %s:\n%s", stage, traceback.format_exc())
        status = StageStatus(stage, patient, modality, FAILED,
                             f"unexpected {type(exc).__name__} in stage {stage}; see the job log")
    return write_status(status_path, status)


# --- de-identification (the PHI boundary) ------------------------------------------------------

SEGMENTATION_FILES = ("mask.nii.gz", "seg.dcm", "rtstruct.dcm")


def clean_nifti(src: Path, dst: Path) -> None:
    """Copy a NIfTI label map keeping only voxels and geometry: description, aux file, intent name
    and header extensions (where segmentation tools may store names or paths) are dropped."""
    image = nib.load(str(src))
    data = np.asanyarray(image.dataobj)
    clean = nib.Nifti1Image(data, image.affine)
    clean.header.set_qform(image.affine, code=int(image.header["qform_code"]) or 1)
    clean.header.set_sform(image.affine, code=int(image.header["sform_code"]) or 1)
    clean.header.set_xyzt_units("mm", "sec")
    with atomic_path(dst) as tmp:
        nib.save(clean, str(tmp))


def run_deid(patient: str, selections: Sequence[Path], indexes: Sequence[Path], segmentations: Path,
             lesions_csv: Path, modalities: Sequence[str], key: bytes, out_dir: Path, status_path: Path,
             audit_path: Path) -> StageStatus:
    """De-identify one patient's baseline series and segmentations into ``out_dir``.

    Output layout: ``out_dir/<modality>/image/<SOPInstanceUID>.dcm``, the segmentation as
    ``out_dir/<modality>/<seg.dcm|rtstruct.dcm|mask.nii.gz>`` and the patient's lesion table
    ``out_dir/lesions.csv`` (pseudonym only). The audit (PHI area) goes to ``audit_path``.
    """
    from . import deid

    def body() -> StageStatus:
        selection = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in selections])
        rows = selection[selection["patient"] == patient]
        if rows.empty:
            raise PalmaresError("patient not found in the series selection (no clinical row for this pseudonym)")
        site, patient_id = rows.iloc[0]["site"], rows.iloc[0]["patient_id"]
        index = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in indexes])
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a rerun never mixes old and new files
        lesion_table = pd.read_csv(lesions_csv, dtype=str, keep_default_na=False)
        lesion_rows = lesion_table[(lesion_table["site"] == site) & (lesion_table["patient_id"] == patient_id)]
        # ROI names declared in the lesion table are the study's lesion vocabulary: kept so masks match by name.
        ctx = deid.DeidContext(key=key, site=site, safe_roi_names=frozenset(lesion_rows["roi_name"]) - {""})
        audits: list[dict[str, Any]] = []
        per_modality: dict[str, dict[str, Any]] = {}
        for modality in modalities:
            chosen = rows[rows["modality"] == modality]
            if chosen.empty or chosen.iloc[0]["status"] != OK:
                reason = chosen.iloc[0]["reason"] if not chosen.empty else f"no {modality.upper()} selection"
                per_modality[modality] = {"status": FAILED, "reason": f"select: {reason}"}
                continue
            files = index[(index["series_uid"] == chosen.iloc[0]["series_uid"]) & (index["status"] == OK)]["path"]
            image_dir = out_dir / modality / "image"
            written = 0
            problems: list[str] = []
            for number, path in enumerate(sorted(files), start=1):
                result = deid.deidentify_file(Path(path), image_dir, ctx, output=_image_file)
                if result.status != "written":  # unreadable, no pixel data, quarantine, missing PatientID, ...
                    problems.append(f"file {number} of {len(files)} of the selected series: {result.reason}")
                    continue
                audits.append(_audit_dict(result.audit))
                written += 1
            if problems or not written:
                shutil.rmtree(out_dir / modality, ignore_errors=True)
                reason = problems[0] if problems else "no file of the selected series could be de-identified"
                per_modality[modality] = {"status": FAILED, "reason": f"deid: {reason}"}
                continue
            seg_info = _deid_segmentation(segmentations / site / patient_id / modality, out_dir / modality, ctx, audits)
            per_modality[modality] = {"status": OK, "files": written, **seg_info}
        lesions_out = lesion_rows.drop(columns=["site", "patient_id"])
        with atomic_path(out_dir / "lesions.csv") as tmp:
            lesions_out.to_csv(tmp, index=False)
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


def _deid_segmentation(folder: Path, out: Path, ctx: Any, audits: list[dict[str, Any]]) -> dict[str, Any]:
    """De-identify the single segmentation file in ``folder`` into ``out``; say which one (or none)."""
    from . import deid

    found = [name for name in SEGMENTATION_FILES if (folder / name).is_file()]
    if not found:
        return {"segmentation": "", "segmentation_problem": "no segmentation uploaded (mask.nii.gz, seg.dcm or rtstruct.dcm)"}
    if len(found) > 1:
        return {"segmentation": "", "segmentation_problem": f"several segmentations uploaded ({', '.join(found)}); keep one"}
    name = found[0]
    try:
        if name.endswith(".nii.gz"):
            clean_nifti(folder / name, out / name)
        else:
            result = deid.deidentify_file(folder / name, out, ctx, output=lambda root, _audit: root / name)
            if result.status != "written":
                return {"segmentation": "",
                        "segmentation_problem": f"the uploaded {name} was not de-identified: {result.reason}"}
            audits.append(_audit_dict(result.audit))
    except PalmaresError as exc:
        return {"segmentation": "", "segmentation_problem": f"the uploaded {name} was not de-identified: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a corrupt upload fails this modality's mask, nothing else
        log.error("segmentation %s could not be read:\n%s", name, traceback.format_exc())
        kind = "NIfTI" if name.endswith(".nii.gz") else "DICOM"
        return {"segmentation": "", "segmentation_problem": f"the uploaded {name} is not a readable {kind} file "
                f"({type(exc).__name__}); export the segmentation again and re-upload it"}
    return {"segmentation": name}


# --- image volumes ------------------------------------------------------------------------------

SCANNER_TAGS = {"manufacturer": "Manufacturer", "model": "ManufacturerModelName", "kernel": "ConvolutionKernel",
                "slice_thickness_mm": "SliceThickness", "reconstruction": "ReconstructionMethod"}
#: EARL accreditation as PET headers state it: "EARL", "EARL1", "EARL 2", "EARL-2", "EARL2 harmonised" ...
_EARL = re.compile(r"\bEARL[\s_-]?([12])?(?![0-9A-Z])", re.IGNORECASE)


def earl_status(*texts: str) -> str:
    """EARL status stated in PET header text (ReconstructionMethod, SeriesDescription): EARL1, EARL2, EARL
    (version not stated) or "" when no text mentions it. There is no standard DICOM attribute for it."""
    for text in texts:
        found = _EARL.search(text or "")
        if found:
            return f"EARL{found.group(1) or ''}"
    return ""


def scanner_details(series_dir: Path) -> dict[str, Any]:
    """Batch variables of a (de-identified) series: manufacturer, model, kernel, slice thickness, pixel spacing,
    PET reconstruction and EARL status (the latter empty for CT and when the header does not state it)."""
    first = sorted(series_dir.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    out: dict[str, Any] = {}
    for name, keyword in SCANNER_TAGS.items():
        value = ds.get(keyword)
        out[name] = "\\".join(map(str, value)) if isinstance(value, pydicom.multival.MultiValue) else (
            str(value) if value not in (None, "") else "")
    spacing = ds.get("PixelSpacing")
    out["pixel_spacing_mm"] = float(spacing[0]) if spacing else None
    out["slice_thickness_mm"] = float(out["slice_thickness_mm"]) if out["slice_thickness_mm"] else None
    out["earl"] = earl_status(out["reconstruction"], str(ds.get("SeriesDescription", ""))) \
        if ds.get("Modality") == "PT" else ""
    return out


def run_image(patient: str, modality: str, deid_status_path: Path, out_image: Path, status_path: Path,
              suv_normalisations: Sequence[str] = ()) -> StageStatus:
    """The patient's baseline volume: CT in HU, PET converted to SUVbw (refused, never guessed).

    ``suv_normalisations`` (``sul``, ``suvbsa``): also compute those scale factors on the PET SUV card;
    the image stays SUVbw, the PET metrics report the extra normalisations.
    """
    from . import volumes

    def body() -> StageStatus:
        upstream = read_status(deid_status_path)
        if not upstream.ok:
            return skipped("image", upstream, modality)
        info = upstream.details["modalities"].get(modality, {})
        if info.get("status") != OK:
            return StageStatus("image", patient, modality, SKIPPED, info.get("reason", "no de-identified series"))
        series_dir = Path(upstream.outputs["dir"]) / modality / "image"
        image = volumes.read_image(series_dir)
        details: dict[str, Any] = {"scanner": scanner_details(series_dir), "size": list(image.GetSize()),
                                   "spacing_mm": list(image.GetSpacing())}
        if modality == "pet":
            from . import suv

            card = suv.suv_card_for_series(series_dir, suv.SuvOptions(sul="sul" in suv_normalisations,
                                                                      suvbsa="suvbsa" in suv_normalisations))
            image = suv.to_suvbw(image, card)
            card = suv.with_image_check(card, image)  # whole-image mean SUV plausibility, reported in QC
            details["suv_card"] = card.to_json_dict()
            details["unit"] = "SUVbw (g/ml)"
            details["suv_normalisations"] = [n for n in SUV_NORMALISATIONS if n in suv_normalisations]
        else:
            details["unit"] = "HU"
        with atomic_path(out_image) as tmp:
            sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(tmp), useCompression=True)
        return StageStatus("image", patient, modality, OK, outputs={"image": str(out_image)}, details=details)

    return guarded("image", patient, modality, status_path, body)


# --- masks ----------------------------------------------------------------------------------------

def read_lesions(path: Path, modality: str) -> list[LesionSpec]:
    """The lesions of one modality from a (pseudonymised) lesion table."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table[table["modality"] == modality]
    return [LesionSpec(lesion_id=r["lesion_id"], modality=r["modality"], label=int(r["label"]), organ=r["organ"],
                       roi_name=r.get("roi_name", "")) for _, r in table.iterrows()]


def run_mask(patient: str, modality: str, deid_status_path: Path, image_status_path: Path, out_mask: Path,
             status_path: Path) -> StageStatus:
    """Import the patient's segmentation onto the image grid as a label map (one label per lesion)."""
    from . import masks

    def body() -> StageStatus:
        image_status = read_status(image_status_path)
        if not image_status.ok:
            return skipped("mask", image_status, modality)
        deid_status = read_status(deid_status_path)
        info = deid_status.details["modalities"][modality]
        if not info.get("segmentation"):
            return StageStatus("mask", patient, modality, FAILED, info.get("segmentation_problem", "no segmentation"))
        root = Path(deid_status.outputs["dir"])
        lesions = read_lesions(root / "lesions.csv", modality)
        if not lesions:
            return StageStatus("mask", patient, modality, FAILED,
                               f"the lesion table has no {modality.upper()} lesion for this patient")
        image = sitk.ReadImage(image_status.outputs["image"])
        reference = masks.image_reference(root / modality / "image")  # series/frame UIDs for SEG/RTSTRUCT checks
        label_map = masks.load_label_map(root / modality / info["segmentation"], image, lesions, reference=reference)
        with atomic_path(out_mask) as tmp:
            sitk.WriteImage(sitk.Cast(label_map, sitk.sitkUInt16), str(tmp), useCompression=True)
        counts = np.bincount(sitk.GetArrayViewFromImage(label_map).ravel())
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        details = {"lesions": [{**asdict(l), "voxels": int(counts[l.label]) if l.label < len(counts) else 0,
                                "volume_ml": (int(counts[l.label]) if l.label < len(counts) else 0) * voxel_ml}
                               for l in lesions], "format": info["segmentation"]}
        return StageStatus("mask", patient, modality, OK, outputs={"mask": str(out_mask)}, details=details)

    return guarded("mask", patient, modality, status_path, body)


# --- features -------------------------------------------------------------------------------------

def run_features(patient: str, modality: str, image_status_path: Path, mask_status_path: Path, params_path: Path,
                 out_table: Path, status_path: Path) -> StageStatus:
    """Features of every lesion of one patient and modality (one row per lesion)."""
    from .features import extract_lesions, load_params

    def body() -> StageStatus:
        mask_status = read_status(mask_status_path)
        if not mask_status.ok:
            return skipped("features", mask_status, modality)
        image_status = read_status(image_status_path)
        params = load_params(params_path)
        image = sitk.ReadImage(image_status.outputs["image"], sitk.sitkFloat64)
        label_map = sitk.ReadImage(mask_status.outputs["mask"])
        lesions = [LesionSpec(**{k: v for k, v in d.items() if k in LesionSpec.__slots__})
                   for d in mask_status.details["lesions"]]
        results = extract_lesions(image, label_map, lesions, params)
        pet_rows, patient_pet = pet_lesion_metrics(image, label_map, lesions, image_status) if modality == "pet" \
            else ({}, {})
        rows, lesion_failures = [], []
        for result in results:
            if result.error:
                lesion_failures.append({"lesion_id": result.lesion.lesion_id, "reason": result.error})
                continue
            rows.append({"lesion_id": result.lesion.lesion_id, "organ": result.lesion.organ,
                         **pet_rows.get(result.lesion.lesion_id, {}), **result.values})
        table = pd.DataFrame(rows)
        with atomic_path(out_table) as tmp:
            table.to_parquet(tmp, index=False)
        if not rows:
            return StageStatus("features", patient, modality, FAILED,
                               "no lesion gave features: " + "; ".join(f["reason"] for f in lesion_failures))
        return StageStatus("features", patient, modality, OK, outputs={"table": str(out_table)},
                           details={"params_sha256": params.sha256, "lesion_failures": lesion_failures,
                                    "lesions": len(rows), "patient_pet": patient_pet})

    return guarded("features", patient, modality, status_path, body)


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
