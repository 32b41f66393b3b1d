"""The modelling tables: lesions, patients (with outcomes), the data dictionary and the failure table.

``lesions`` has one row per lesion and modality; ``patients`` one row per patient with valid
clinical data and at least one imaged modality: outcomes, covariates and per-modality aggregates
(lesion count, total volume, the largest lesion's features). Every column of both tables is
described exactly once per table in ``dictionary.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .features import column_name, feature_of_column, ibsi_code, ibsi_table
from .files import atomic_path
from .stages import OK, StageStatus

LESION_META = {
    "patient": ("patient pseudonym PAL2-XXXXXXXXXX (keyed hash of site + local id)", "", "index"),
    "site": ("centre code", "", "index"),
    "modality": ("imaging modality: ct or pet", "", "index"),
    "lesion_id": ("lesion identifier from the lesion table", "", "masks"),
    "organ": ("organ site of the lesion: liver, bone, lymph_node, lung, breast, other", "", "masks"),
    "manufacturer": ("scanner manufacturer (batch variable)", "", "image"),
    "model": ("scanner model (batch variable)", "", "image"),
    "kernel": ("CT convolution kernel (batch variable)", "", "image"),
    "reconstruction": ("PET reconstruction method (batch variable)", "", "image"),
    "slice_thickness_mm": ("reconstructed slice thickness (batch variable)", "mm", "image"),
    "pixel_spacing_mm": ("in-plane pixel spacing (batch variable)", "mm", "image"),
    "volume_ml": ("lesion volume on the original image grid (voxel count x voxel volume)", "ml", "masks"),
    "pet_suvmax": ("PET rows: maximum SUVbw in the lesion", "g/ml", "pet"),
    "pet_suvmean": ("PET rows: mean SUVbw in the lesion", "g/ml", "pet"),
    "pet_suvpeak": ("PET rows: SUVpeak, mean SUVbw in a 1 cm3 sphere centred on the maximum (IBSI local intensity "
                    "peak)", "g/ml", "pet"),
    "pet_mtv_suv2p5_ml": ("PET rows: metabolic tumour volume, voxels with SUVbw >= 2.5", "ml", "pet"),
    "pet_tlg_suv2p5": ("PET rows: total lesion glycolysis = MTV(SUV>=2.5) x its mean SUVbw", "g", "pet"),
    "pet_mtv_41pct_ml": ("PET rows: metabolic tumour volume, voxels with SUVbw >= 41 % of SUVmax", "ml", "pet"),
    "pet_tlg_41pct": ("PET rows: total lesion glycolysis = MTV(41 %) x its mean SUVbw", "g", "pet"),
}
PET_PATIENT_META = {
    "pet_total_mtv_suv2p5_ml": ("sum of lesion MTVs at SUVbw >= 2.5", "ml"),
    "pet_total_tlg_suv2p5": ("sum of lesion TLGs at SUVbw >= 2.5", "g"),
    "pet_total_mtv_41pct_ml": ("sum of lesion MTVs at 41 % of SUVmax", "ml"),
    "pet_total_tlg_41pct": ("sum of lesion TLGs at 41 % of SUVmax", "g"),
    "pet_hottest_suvmax": ("SUVmax of the hottest lesion", "g/ml"),
    "pet_hottest_suvpeak": ("highest lesion SUVpeak", "g/ml"),
    "pet_dmax_mm": ("Dmax: largest distance between PET lesion centroids (empty with one lesion)", "mm"),
    "pet_sdmax_per_m": ("Dmax normalised by body surface area (Du Bois), when height and weight are known", "1/m"),
}
PATIENT_META = {
    "patient": ("patient pseudonym PAL2-XXXXXXXXXX", "", "clinical"),
    "site": ("centre code", "", "clinical"),
    "age_at_start_years": ("age at CDK4/6i start", "years", "clinical"),
    "cdk46i_drug": ("CDK4/6 inhibitor: palbociclib, ribociclib, abemaciclib", "", "clinical"),
    "endocrine_partner": ("endocrine therapy partner: aromatase_inhibitor or fulvestrant", "", "clinical"),
    "menopausal_status": ("menopausal status at start: pre or post", "", "clinical"),
    "disease_setting": ("de_novo or recurrent advanced disease", "", "clinical"),
    "visceral_disease": ("visceral disease at baseline: yes/no", "", "clinical"),
    "bone_only_disease": ("bone-only disease at baseline: yes/no", "", "clinical"),
    "ecog": ("ECOG performance status at start", "", "clinical"),
    "os_days": ("overall survival time from CDK4/6i start to death or censoring (outcome)", "days", "clinical"),
    "os_event": ("overall survival event: True = death before the data cut-off (outcome)", "", "clinical"),
    "pfs_days": ("progression-free survival time from CDK4/6i start to progression, death or censoring (outcome)",
                 "days", "clinical"),
    "pfs_event": ("progression-free survival event: True = progression or death before the cut-off (outcome)", "",
                  "clinical"),
    **{column: (description, unit, "pet") for column, (description, unit) in PET_PATIENT_META.items()},
}
FAILURE_COLUMNS = ["patient", "site", "modality", "stage", "status", "reason"]


def lesion_rows(features: pd.DataFrame, patient: str, site: str, modality: str, image: StageStatus,
                mask: StageStatus) -> pd.DataFrame:
    """Rows of the lesion table for one patient x modality (features renamed with IBSI codes)."""
    scanner = image.details.get("scanner", {})
    volumes = {l["lesion_id"]: l["volume_ml"] for l in mask.details.get("lesions", [])}
    renamed = features.rename(columns={c: column_name(c) for c in features.columns if c not in ("lesion_id", "organ")})
    meta = pd.DataFrame({"patient": patient, "site": site, "modality": modality,
                         "lesion_id": renamed["lesion_id"], "organ": renamed["organ"],
                         **{k: scanner.get(k) for k in ("manufacturer", "model", "kernel", "reconstruction",
                                                         "slice_thickness_mm", "pixel_spacing_mm")},
                         "volume_ml": renamed["lesion_id"].map(volumes)})
    return pd.concat([meta, renamed.drop(columns=["lesion_id", "organ"])], axis=1)


def aggregate_patients(lesions: pd.DataFrame, clinical: pd.DataFrame, modalities: Sequence[str],
                       patient_pet: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per patient with clinical data and at least one imaged modality, with per-modality aggregates
    and, when given, the PET totals (``patient_pet``: one row per patient, columns of PET_PATIENT_META)."""
    feature_columns = [c for c in lesions.columns if c not in LESION_META]
    out = clinical.copy()
    if patient_pet is not None and not patient_pet.empty:
        out = out.merge(patient_pet, on="patient", how="left")
    for modality in modalities:
        sub = lesions[lesions["modality"] == modality]
        counts = sub.groupby("patient").size().rename(f"{modality}_lesion_count")
        total = sub.groupby("patient")["volume_ml"].sum().rename(f"{modality}_total_volume_ml")
        largest = sub.sort_values(["patient", "volume_ml", "lesion_id"], ascending=[True, False, True])
        largest = largest.drop_duplicates("patient").set_index("patient")[feature_columns]
        largest.columns = [f"{modality}_largest_{c}" for c in largest.columns]
        out = out.merge(counts, left_on="patient", right_index=True, how="left")
        out = out.merge(total, left_on="patient", right_index=True, how="left")
        out = out.merge(largest, left_on="patient", right_index=True, how="left")
        out[f"{modality}_lesion_count"] = out[f"{modality}_lesion_count"].fillna(0).astype("int64")
    imaged = sum(out[f"{m}_lesion_count"] for m in modalities) > 0
    return out[imaged].sort_values("patient").reset_index(drop=True)


def _feature_entry(feature: str) -> tuple[str, str, str]:
    """Description, unit and IBSI code of a feature column (``glcm_Id_IB1Z`` → the glcm_Id entry)."""
    base = feature_of_column(feature)
    entry = ibsi_table().get(base)
    if entry is None:
        return f"pyradiomics feature {base}", "", ibsi_code(base)
    description = f"{entry.ibsi_name} ({entry.ibsi_family}), pyradiomics {base}" if entry.ibsi_code else (
        f"pyradiomics {base}: {entry.note}")
    unit = entry.unit.replace("intensity", "HU (CT) or SUVbw (PET)")
    return description, unit, entry.ibsi_code or "non-IBSI"


def dictionary(lesions: pd.DataFrame, patients: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """The data dictionary: every column of both tables once per table."""
    rows = []
    for table_name, table, meta in (("lesions", lesions, LESION_META), ("patients", patients, PATIENT_META)):
        for column in table.columns:
            dtype = str(table[column].dtype)
            if column in meta:
                description, unit, stage = meta[column]
                rows.append((column, table_name, description, unit, dtype, "", stage))
                continue
            modality = next((m for m in modalities if column.startswith(f"{m}_")), "")
            if column in (f"{modality}_lesion_count", f"{modality}_total_volume_ml"):
                what = "number of lesions" if column.endswith("count") else "total lesion volume"
                rows.append((column, table_name, f"{what} on {modality.upper()}", "ml" if "volume" in column else "",
                             dtype, "", "tables"))
                continue
            feature = column.removeprefix(f"{modality}_largest_") if modality else column
            description, unit, code = _feature_entry(feature)
            if modality:
                description = f"largest {modality.upper()} lesion: {description}"
            rows.append((column, table_name, description, unit, dtype, code, "features"))
    return pd.DataFrame(rows, columns=["column", "table", "description", "unit", "dtype", "ibsi_code", "source_stage"])


def failure_table(statuses: Sequence[StageStatus], sites: dict[str, str]) -> pd.DataFrame:
    """Every stage that did not succeed, first failure per patient x modality (skips carry the reason)."""
    rows = []
    for status in statuses:
        if status.status == OK:
            continue
        rows.append({"patient": status.patient, "site": sites.get(status.patient, ""), "modality": status.modality,
                     "stage": status.stage, "status": status.status, "reason": status.reason})
    table = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    return table.sort_values(["patient", "modality", "stage"]).reset_index(drop=True)


def write_table(table: pd.DataFrame, parquet: Path | None, csv: Path | None) -> None:
    """Write a table as Parquet and/or CSV, atomically."""
    if parquet is not None:
        with atomic_path(parquet) as tmp:
            table.to_parquet(tmp, index=False)
    if csv is not None:
        with atomic_path(csv) as tmp:
            table.to_csv(tmp, index=False)


SUV_CHECK_COLUMNS = ["patient", "check", "outcome", "value", "detail"]


def suv_checks(statuses: Sequence[StageStatus]) -> pd.DataFrame:
    """Every plausibility check of every PET SUV card (pass, warn or n/a), one row per patient and check."""
    rows = [{"patient": s.patient, "check": c["name"], "outcome": c["outcome"], "value": c.get("value"),
             "detail": c.get("detail", "")}
            for s in statuses if s.stage == "image" and s.modality == "pet" and s.ok
            for c in s.details.get("suv_card", {}).get("checks", [])]
    return pd.DataFrame(rows, columns=SUV_CHECK_COLUMNS)


def read_statuses(status_dir: Path) -> list[StageStatus]:
    """Every stage status record under ``status_dir`` (``<stage>/<name>.json``), in a stable order."""
    from .stages import read_status

    return [read_status(p) for p in sorted(Path(status_dir).glob("*/*.json"))]


def run_tables(status_dir: Path, clinical_parquet: Path, clinical_issues: Path, modalities: Sequence[str],
               results_dir: Path) -> dict[str, int]:
    """Build and write every results table from the stage statuses and the prepared clinical table."""
    statuses = read_statuses(status_dir)
    by_key = {(s.stage, s.patient, s.modality): s for s in statuses}
    sites = {s.patient: s.details.get("site", "") for s in statuses if s.stage == "deid"}
    clinical = pd.read_parquet(clinical_parquet)
    sites.update(dict(zip(clinical["patient"], clinical["site"])))
    parts = []
    for status in statuses:
        if status.stage != "features" or not status.ok:
            continue
        key = (status.patient, status.modality)
        features = pd.read_parquet(status.outputs["table"])
        parts.append(lesion_rows(features, status.patient, sites.get(status.patient, ""), status.modality,
                                 by_key[("image", *key)], by_key[("mask", *key)]))
    lesions = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(LESION_META)))
    lesions = lesions.sort_values(["patient", "modality", "lesion_id"]).reset_index(drop=True)
    patient_pet = pd.DataFrame([{"patient": s.patient, **s.details.get("patient_pet", {})} for s in statuses
                                if s.stage == "features" and s.ok and s.details.get("patient_pet")])
    patients = aggregate_patients(lesions, clinical, modalities, patient_pet)
    failures = failure_table(statuses, sites)
    no_clinical = sorted(set(lesions["patient"]) - set(clinical["patient"]))
    extra = pd.DataFrame([{"patient": p, "site": sites.get(p, ""), "modality": "", "stage": "clinical",
                           "status": "failed", "reason": "no valid clinical row (see qc/clinical_issues.csv)"}
                          for p in no_clinical], columns=FAILURE_COLUMNS)
    failures = pd.concat([failures, extra], ignore_index=True) if not extra.empty else failures
    results = Path(results_dir)
    write_table(lesions, results / "features" / "lesions.parquet", results / "features" / "lesions.csv")
    write_table(patients, results / "tables" / "patients.parquet", results / "tables" / "patients.csv")
    write_table(dictionary(lesions, patients, modalities), None, results / "tables" / "dictionary.csv")
    write_table(failures, None, results / "qc" / "failures.csv")
    write_table(suv_checks(statuses), None, results / "qc" / "suv_checks.csv")
    write_table(pd.read_csv(clinical_issues, dtype=str, keep_default_na=False), None,
                results / "qc" / "clinical_issues.csv")
    return {"lesions": len(lesions), "patients": len(patients), "failures": len(failures)}
