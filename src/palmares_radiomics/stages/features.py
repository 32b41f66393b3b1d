"""The features stage: IBSI features of every lesion of one patient and modality, the PET metrics, the QC pictures.

Its rows go to the tables stage as JSON (:func:`write_rows` / :func:`read_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .. import columns, volumes
from ..files import write_rows
from ..records import FAILED, OK, LesionOutcome, LesionSpec, StageStatus, read_status
from .qc import clear_qc_pictures, draw_qc_pictures
from .status import guarded, skipped, write_status


def run_features(patient: str, modality: str, image_status_path: Path, mask_status_path: Path, params_path: Path,
                 out_table: Path, status_path: Path, qc_dir: Path | None = None) -> StageStatus:
    """Features of every lesion of one patient and modality (one row per lesion).

    With ``qc_dir``, the QC pictures are drawn there too (:func:`draw_qc_pictures`: every lesion before and after
    IBSI resampling, the PET MIP) and described in ``details["qc"]``, on an OK status and on a FAILED one alike;
    pictures of an earlier run of the job are removed first.
    """
    from ..features import extract_lesions, load_params

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
        rows, outcomes = [], []
        for result in results:
            lesion = result.lesion
            outcomes.append(LesionOutcome(lesion.lesion_id, lesion.organ, FAILED if result.error else OK,
                                          result.error or ""))
            if not result.error:
                rows.append({"lesion_id": lesion.lesion_id, "organ": lesion.organ,
                             **pet_rows.get(lesion.lesion_id, {}), **result.values})
        write_rows(rows, out_table)
        qc_details = {"qc": qc} if qc else {}
        if not rows:
            return StageStatus("features", patient, modality, FAILED,
                               "no lesion gave features: " + "; ".join(o.reason for o in outcomes),
                               details=qc_details, lesions=tuple(outcomes))
        return StageStatus("features", patient, modality, OK, outputs={"table": str(out_table)},
                           details={"params_sha256": params.sha256, "patient_pet": patient_pet, **qc_details,
                                    **({"filters": {spec.name: spec.describe() for spec in params.filters}}
                                       if params.filters else {})},
                           lesions=tuple(outcomes))

    status = guarded("features", patient, modality, status_path, body)
    if qc and status.status == FAILED and "qc" not in status.details:  # failed after the pictures were drawn
        status = write_status(status_path, replace(status, details={**status.details, "qc": qc}))
    return status


def pet_lesion_metrics(suv: sitk.Image, label_map: sitk.Image, lesions: Sequence[LesionSpec],
                       image_status: StageStatus) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """SUVmax/mean/peak, MTV and TLG per lesion, and the patient's PET totals (Dmax, Dmax/BSA when height is known),
    overall and per organ site, plus SUL / SUVbsa max, mean and peak when the image stage was asked for them.

    SUL and SUVbsa differ from SUVbw by one factor per series (lean body mass / weight, BSA / weight: the
    card's ``sul_scale_factor`` and ``suvbsa_scale_factor`` over ``suvbw_scale_factor``), so they are the
    SUVbw values times that ratio; MTV and TLG stay defined on SUVbw. A requested normalisation the card
    could not compute (height or sex missing, see qc/suv_checks.csv) gives empty values.
    """
    from .. import pet

    metrics = pet.lesion_metrics(suv, label_map, lesions)
    per_lesion = {m.lesion_id: {c.name: getattr(m, c.source) for c in columns.PET_LESION} for m in metrics}
    card = image_status.details.get("suv_card", {})
    inputs = card.get("inputs", {})
    patient = pet.patient_metrics(metrics, inputs.get("weight_kg"), inputs.get("height_m"))
    row = {**patient.all_lesions.as_row(), "sdmax_per_m": patient.sdmax_per_m}
    totals: dict[str, Any] = {c.name: row[c.source] for c in columns.PET_PATIENT}
    organ_rows = patient.as_row()
    totals.update({c.name: organ_rows[c.name.removeprefix("pet_")] for c in columns.PET_ORGAN})
    for name in image_status.details.get("suv_normalisations", []):
        factor = card.get(f"{name}_scale_factor")
        ratio = factor / card["suvbw_scale_factor"] if factor is not None else None
        for m in metrics:
            for what in columns.NORMALISED_LESION_STATISTICS:
                value = getattr(m, f"suv{what}")
                per_lesion[m.lesion_id][columns.normalised_lesion_column(name, what)] = \
                    value * ratio if ratio is not None else None
        for what in columns.NORMALISED_PATIENT_STATISTICS:
            hottest = row[f"hottest_suv{what}"]
            totals[columns.normalised_patient_column(name, what)] = \
                hottest * ratio if ratio is not None and hottest is not None else None
    return per_lesion, totals
