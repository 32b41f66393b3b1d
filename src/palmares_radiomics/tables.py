"""The modelling tables: lesions, patients (with outcomes), the data dictionary, the failure table, patient flow.

``lesions`` has one row per lesion and modality (pseudonym, site, organ, scanner/batch variables,
every feature, PET metrics) of the patients of ``patients``; ``patients`` one row per eligible
patient with at least one imaged lesion: outcomes, baseline covariates, configurable per-modality
aggregates (count, largest lesion, volume-weighted mean, min, max) and the PET stage's totals,
overall and per organ. One cohort everywhere: an ineligible patient's lesions are in neither table.
Every column of both tables is described exactly once per table in ``dictionary.csv``, with its
time basis (identifier, baseline, outcome): only the declared outcome columns use post-baseline
information. Lesions rejected in visual QC (config ``qc_ratings``, :mod:`.ratings`) are in neither table: they are
dropped before the patient aggregates, and each is a ``qc`` row of the failure table.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from .features import feature_column, ibsi_code, ibsi_table
from .filters import family_of
from .ibsi import AGGREGATIONS, computed_by
from .errors import ConfigError
from .files import atomic_path
from .ratings import APPLIED_COLUMNS, apply_ratings, no_ratings, read_ratings
from .records import AGGREGATES, DEFAULT_AGGREGATES, ORGANS
from .stages import OK, SKIPPED, StageStatus, read_rows

#: Lesion-table columns other than features: description, unit, source stage, time basis. Time basis:
#: identifier, baseline (known at CDK4/6i start: every imaging column, the series being the baseline scan)
#: or outcome; only the declared outcome columns may use post-baseline information (the leakage guard).
LESION_META = {
    "patient": ("patient pseudonym PAL2-XXXXXXXXXX (keyed hash of site + local id)", "", "index", "identifier"),
    "site": ("centre code", "", "index", "identifier"),
    "modality": ("imaging modality: ct or pet", "", "index", "identifier"),
    "lesion_id": ("lesion identifier from the lesion table", "", "masks", "identifier"),
    "organ": ("organ site of the lesion: liver, bone, lymph_node, lung, breast, other", "", "masks", "baseline"),
    "manufacturer": ("scanner manufacturer (batch variable)", "", "image", "baseline"),
    "model": ("scanner model (batch variable)", "", "image", "baseline"),
    "kernel": ("convolution kernel / reconstruction filter (batch variable)", "", "image", "baseline"),
    "reconstruction": ("PET reconstruction method (batch variable; empty for CT)", "", "image", "baseline"),
    "earl": ("PET EARL status stated in the header (ReconstructionMethod or SeriesDescription): EARL1, EARL2, EARL; "
             "empty when not stated and for CT (batch variable)", "", "image", "baseline"),
    "slice_thickness_mm": ("reconstructed slice thickness (batch variable)", "mm", "image", "baseline"),
    "pixel_spacing_mm": ("in-plane pixel spacing (batch variable)", "mm", "image", "baseline"),
    "volume_ml": ("lesion volume on the original image grid (voxel count x voxel volume)", "ml", "masks", "baseline"),
    "pet_suvmax": ("PET rows: maximum SUVbw in the lesion", "g/ml", "pet", "baseline"),
    "pet_suvmean": ("PET rows: mean SUVbw in the lesion", "g/ml", "pet", "baseline"),
    "pet_suvpeak": ("PET rows: SUVpeak, mean SUVbw in a 1 cm3 sphere centred on the maximum (IBSI local intensity "
                    "peak) on the native PET grid; localintensity_LocalIntensityPeak_VJGA is the same definition on "
                    "the features' resampled grid", "g/ml", "pet", "baseline"),
    "pet_mtv_suv2p5_ml": ("PET rows: metabolic tumour volume, voxels with SUVbw >= 2.5", "ml", "pet", "baseline"),
    "pet_tlg_suv2p5": ("PET rows: total lesion glycolysis = MTV(SUV>=2.5) x its mean SUVbw", "g", "pet", "baseline"),
    "pet_mtv_41pct_ml": ("PET rows: metabolic tumour volume, voxels with SUVbw >= 41 % of SUVmax", "ml", "pet",
                         "baseline"),
    "pet_tlg_41pct": ("PET rows: total lesion glycolysis = MTV(41 %) x its mean SUVbw", "g", "pet", "baseline"),
    # config suv_normalisations: SUVbw x lean body mass / weight (SUL) or x BSA / weight (SUVbsa); empty when the
    # card could not compute the factor (height or sex missing: see qc/suv_checks.csv)
    "pet_sulmax": ("PET rows: SULmax = SUVmax x lean body mass (Janmahasatian) / weight", "g/ml", "pet", "baseline"),
    "pet_sulmean": ("PET rows: SULmean = SUVmean x lean body mass (Janmahasatian) / weight", "g/ml", "pet",
                    "baseline"),
    "pet_sulpeak": ("PET rows: SULpeak = SUVpeak x lean body mass (Janmahasatian) / weight (PERCIST)", "g/ml", "pet",
                    "baseline"),
    "pet_suvbsa_max": ("PET rows: SUVbsa max = SUVmax x body surface area (Du Bois) / weight", "cm2/ml", "pet",
                       "baseline"),
    "pet_suvbsa_mean": ("PET rows: SUVbsa mean = SUVmean x body surface area (Du Bois) / weight", "cm2/ml", "pet",
                        "baseline"),
    "pet_suvbsa_peak": ("PET rows: SUVbsa peak = SUVpeak x body surface area (Du Bois) / weight", "cm2/ml", "pet",
                        "baseline"),
}
#: Scanner / batch variables copied from the image stage into every lesion row.
SCANNER_COLUMNS = ("manufacturer", "model", "kernel", "reconstruction", "earl", "slice_thickness_mm",
                   "pixel_spacing_mm")
_ORGAN_METRICS = {
    "lesion_count": ("number of PET lesions", ""),
    "total_mtv_suv2p5_ml": ("sum of MTVs at SUVbw >= 2.5", "ml"),
    "total_tlg_suv2p5": ("sum of TLGs at SUVbw >= 2.5", "g"),
    "total_mtv_41pct_ml": ("sum of MTVs at 41 % of SUVmax", "ml"),
    "total_tlg_41pct": ("sum of TLGs at 41 % of SUVmax", "g"),
    "hottest_suvmax": ("SUVmax of the hottest lesion (empty without lesion)", "g/ml"),
    "hottest_suvpeak": ("highest lesion SUVpeak (empty without lesion)", "g/ml"),
    "dmax_mm": ("largest distance between lesion centroids (0 with one lesion, empty without lesion)", "mm"),
}
#: Patient-table PET columns from the PET stage (pet.patient_metrics): description, unit.
PET_PATIENT_META = {
    "pet_total_mtv_suv2p5_ml": ("sum of lesion MTVs at SUVbw >= 2.5", "ml"),
    "pet_total_tlg_suv2p5": ("sum of lesion TLGs at SUVbw >= 2.5", "g"),
    "pet_total_mtv_41pct_ml": ("sum of lesion MTVs at 41 % of SUVmax", "ml"),
    "pet_total_tlg_41pct": ("sum of lesion TLGs at 41 % of SUVmax", "g"),
    "pet_hottest_suvmax": ("SUVmax of the hottest lesion", "g/ml"),
    "pet_hottest_suvpeak": ("highest lesion SUVpeak", "g/ml"),
    "pet_dmax_mm": ("Dmax: largest distance between PET lesion centroids (0 with one lesion)", "mm"),
    "pet_sdmax_per_m": ("Dmax normalised by body surface area (Du Bois), when height and weight are known", "1/m"),
    **{f"pet_{organ}_{metric}": (f"PET lesions in {organ.replace('_', ' ')}: {description}", unit)
       for organ in ORGANS for metric, (description, unit) in _ORGAN_METRICS.items()},
    "pet_hottest_sulmax": ("SULmax of the hottest lesion (SUVmax x lean body mass / weight)", "g/ml"),
    "pet_hottest_sulpeak": ("highest lesion SULpeak (PERCIST)", "g/ml"),
    "pet_hottest_suvbsa_max": ("SUVbsa max of the hottest lesion (SUVmax x BSA / weight)", "cm2/ml"),
    "pet_hottest_suvbsa_peak": ("highest lesion SUVbsa peak", "cm2/ml"),
}
#: Column prefix each lesion -> patient aggregate (records.AGGREGATES) gives per modality.
AGGREGATE_PREFIX = {"largest": "largest", "volume_weighted_mean": "vwmean", "min": "min", "max": "max"}
_AGGREGATE_WORDS = {"largest": "largest {M} lesion (by volume_ml)",
                    "vwmean": "volume-weighted mean over {M} lesions (weights volume_ml)",
                    "min": "minimum over {M} lesions", "max": "maximum over {M} lesions"}
DICTIONARY_COLUMNS = ["column", "table", "description", "unit", "dtype", "ibsi_code", "source_stage", "time_basis"]
FAILURE_COLUMNS = ["patient", "site", "modality", "stage", "lesion_id", "status", "reason"]


def lesion_rows(features: pd.DataFrame, patient: str, site: str, modality: str, image: StageStatus,
                mask: StageStatus) -> pd.DataFrame:
    """Rows of the lesion table for one patient x modality (feature columns already carry their IBSI codes)."""
    scanner = image.details.get("scanner", {})
    volumes = {l["lesion_id"]: l["volume_ml"] for l in mask.details.get("lesions", [])}
    meta = pd.DataFrame({"patient": patient, "site": site, "modality": modality,
                         "lesion_id": features["lesion_id"], "organ": features["organ"],
                         **{k: scanner.get(k) for k in SCANNER_COLUMNS},
                         "volume_ml": features["lesion_id"].map(volumes)})
    return pd.concat([meta, features.drop(columns=["lesion_id", "organ"])], axis=1)


def aggregate_patients(lesions: pd.DataFrame, clinical: pd.DataFrame, modalities: Sequence[str],
                       patient_pet: pd.DataFrame | None = None,
                       aggregates: Sequence[str] = DEFAULT_AGGREGATES) -> pd.DataFrame:
    """One row per patient of ``clinical`` with at least one imaged lesion, with per-modality aggregates.

    ``aggregates`` (config ``patient_aggregates``), per modality ``m`` and feature ``f``:
    ``count`` → ``m_lesion_count``, ``m_total_volume_ml``; ``largest`` → ``m_largest_f`` (the features of
    the lesion with the largest volume_ml, ties broken by lesion id); ``volume_weighted_mean`` →
    ``m_vwmean_f`` = sum(volume_ml x f) / sum(volume_ml) over the lesions where f is known; ``min`` /
    ``max`` → ``m_min_f`` / ``m_max_f``. ``patient_pet`` (one row per patient, columns of
    PET_PATIENT_META) adds the PET stage's totals.
    """
    unknown = set(aggregates) - set(AGGREGATES)
    if unknown:
        raise ConfigError(f"patient_aggregates must be among {AGGREGATES}. Found: {sorted(unknown)}")
    feature_columns = [c for c in lesions.columns if c not in LESION_META]
    out = clinical.copy()
    imaged = pd.Series(False, index=out.index)
    for modality in modalities:
        sub = lesions[lesions["modality"] == modality]
        groups = sub.groupby("patient")
        counts = out["patient"].map(groups.size()).fillna(0).astype("int64")
        imaged |= counts > 0
        parts: list[pd.DataFrame | pd.Series] = []
        if "count" in aggregates:
            parts += [groups.size().rename(f"{modality}_lesion_count"),
                      groups["volume_ml"].sum().rename(f"{modality}_total_volume_ml")]
        values = sub[feature_columns].apply(pd.to_numeric, errors="coerce")
        for name in aggregates:
            if name == "largest":
                ordered = sub.sort_values(["patient", "volume_ml", "lesion_id"], ascending=[True, False, True])
                part = ordered.drop_duplicates("patient").set_index("patient")[feature_columns]
            elif name == "volume_weighted_mean":
                weights = sub["volume_ml"].where(sub["volume_ml"] > 0)
                known = values.notna().mul(weights, axis=0)
                part = (values.mul(weights, axis=0).groupby(sub["patient"]).sum(min_count=1)
                        / known.groupby(sub["patient"]).sum().replace(0.0, float("nan")))
            elif name in ("min", "max"):
                part = getattr(values.groupby(sub["patient"]), name)()
            else:
                continue
            parts.append(part.rename(columns=lambda c, n=name: f"{modality}_{AGGREGATE_PREFIX[n]}_{c}"))
        if parts:
            block = pd.concat(parts, axis=1)
            out = out.merge(block, left_on="patient", right_index=True, how="left")
        if "count" in aggregates:
            out[f"{modality}_lesion_count"] = out[f"{modality}_lesion_count"].fillna(0).astype("int64")
            out[f"{modality}_total_volume_ml"] = out[f"{modality}_total_volume_ml"].fillna(0.0)
    if patient_pet is not None and not patient_pet.empty:
        order = [c for c in PET_PATIENT_META if c in patient_pet.columns]
        out = out.merge(patient_pet[["patient", *order, *sorted(set(patient_pet.columns) - {"patient", *order})]],
                        on="patient", how="left")
    return out[imaged.to_numpy()].sort_values("patient").reset_index(drop=True)


def _feature_entry(feature: str, filters: Mapping[str, str] | None = None) -> tuple[str, str, str]:
    """Description, unit and IBSI code of a feature column (``glcm_Id_IB1Z_ITBB`` → the glcm_Id entry, 3D averaged).

    ``filters``: IBSI 2 filter name → its settings (``FilterSpec.describe``, from the features stage's records), for
    the columns of filtered images (``log_s1p5__firstorder_Mean_Q4LE``)."""
    column = feature_column(feature)
    base = column.feature if column else feature
    entry = ibsi_table().get(base)
    if entry is None:
        return f"pyradiomics feature {base}", "", ibsi_code(base)
    engine = computed_by(base)
    description = f"{entry.ibsi_name} ({entry.ibsi_family}), {engine} {base}" if entry.ibsi_code else (
        f"{engine} {base}: {entry.note}")
    if column and column.aggregation:
        description += f"; texture aggregation {AGGREGATIONS[column.aggregation].name} ({column.aggregation})"
    unit = entry.unit.replace("intensity", "HU (CT) or SUVbw (PET)")
    if column and column.filter:
        family = family_of(column.filter)
        kind = (filters or {}).get(column.filter) or (f"{family.FILTER}, IBSI 2 {family.IBSI_CODE}" if family
                                                      else "IBSI 2 filter")
        description += f"; of the response map of filter {column.filter} ({kind}), inside the re-segmented ROI"
        unit = entry.unit.replace("intensity", f"{column.filter} response")  # in image units only for the mean filter
    return description, unit, entry.ibsi_code or "non-IBSI"


def dictionary(lesions: pd.DataFrame, patients: pd.DataFrame, modalities: Sequence[str],
               clinical_columns: pd.DataFrame, filters: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The data dictionary: every column of both tables once per table (DICTIONARY_COLUMNS).

    ``filters``: IBSI 2 filter name → settings, for the columns of filtered images (:func:`_feature_entry`).

    ``clinical_columns`` (column, description, unit, time_basis) describes the clinical stage's
    columns (written by it from the declared clinical schema). ``time_basis`` says what each column
    may know: identifier, baseline, or outcome (post-baseline, only the declared outcome columns).
    """
    clinical = {r.column: (r.description, r.unit if isinstance(r.unit, str) else "", "clinical", r.time_basis)
                for r in clinical_columns.itertuples()}
    pet = {c: (d, u, "pet", "baseline") for c, (d, u) in PET_PATIENT_META.items()}
    rows = []
    for table_name, table, meta in (("lesions", lesions, LESION_META), ("patients", patients, {**clinical, **pet})):
        for column in table.columns:
            dtype = str(table[column].dtype)
            if column in meta:
                description, unit, stage, basis = meta[column]
                rows.append((column, table_name, description, unit, dtype, "", stage, basis))
                continue
            modality = next((m for m in modalities if column.startswith(f"{m}_")), "") if table_name == "patients" \
                else ""
            if modality and column in (f"{modality}_lesion_count", f"{modality}_total_volume_ml"):
                what = "number of lesions" if column.endswith("count") else "total lesion volume"
                rows.append((column, table_name, f"{what} on {modality.upper()}", "ml" if "volume" in column else "",
                             dtype, "", "tables", "baseline"))
                continue
            feature, how = column, ""
            if modality:
                prefix = next((p for p in _AGGREGATE_WORDS if column.startswith(f"{modality}_{p}_")), None)
                if prefix is None:
                    raise ValueError(f"patients column {column} is neither declared nor a {modality} aggregate")
                feature = column.removeprefix(f"{modality}_{prefix}_")
                how = _AGGREGATE_WORDS[prefix].format(M=modality.upper()) + ": "
            description, unit, code = _feature_entry(feature, filters)
            rows.append((column, table_name, how + description, unit, dtype, code, "features", "baseline"))
    return pd.DataFrame(rows, columns=DICTIONARY_COLUMNS)


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: L1, L2, L10 (not L1, L10, L2)."""
    parts = re.split(r"(\d+)", str(text))
    return tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts))


def _natural(column: pd.Series) -> pd.Series:
    """``sort_values`` key: lesion ids in natural order, other columns as they are."""
    return column.map(natural_key) if column.name == "lesion_id" else column


STAGE_ORDER = ("deid", "image", "mask", "features")


def failure_table(statuses: Sequence[StageStatus], sites: dict[str, str],
                  pairs: Collection[tuple[str, str]] | None = None,
                  rejected: pd.DataFrame | None = None) -> pd.DataFrame:
    """The first stage that failed for each patient x modality, with its reason, and one row per failed lesion.

    A stage skipped because an earlier one failed is not repeated (the first failure names the cause);
    a de-identification problem of one modality is that modality's row. ``pairs`` (patient, modality):
    the series the intake selected (default: every pair with a status record). ``rejected``
    (:func:`.ratings.apply_ratings`): one ``qc`` row per lesion rejected in visual QC, status ``rejected``.
    """
    by_key = {(s.stage, s.patient, s.modality): s for s in statuses}
    if pairs is None:
        pairs = {(s.patient, s.modality) for s in statuses if s.modality}
    rows = []
    for patient, modality in sorted(pairs):
        first = None
        deid = by_key.get(("deid", patient, ""))
        if deid is not None and not deid.ok:
            first = ("deid", deid.status, deid.reason)
        elif deid is not None and deid.details.get("modalities", {}).get(modality, {}).get("status", OK) != OK:
            detail = deid.details["modalities"][modality]["reason"]
            first = ("deid", "failed", detail.removeprefix("deid: "))
        else:
            for stage in STAGE_ORDER[1:]:
                status = by_key.get((stage, patient, modality))
                if status is not None and status.status not in (OK, SKIPPED):
                    first = (stage, status.status, status.reason)
                    break
        if first is not None:
            rows.append({"patient": patient, "site": sites.get(patient, ""), "modality": modality,
                         "stage": first[0], "lesion_id": "", "status": first[1], "reason": first[2]})
        features = by_key.get(("features", patient, modality))
        if features is not None and features.ok:
            for failure in features.details.get("lesion_failures", []):
                rows.append({"patient": patient, "site": sites.get(patient, ""), "modality": modality,
                             "stage": "features", "lesion_id": failure["lesion_id"], "status": "failed",
                             "reason": failure["reason"]})
    if rejected is not None:
        rows.extend({"patient": r.patient, "site": sites.get(r.patient, ""), "modality": r.modality, "stage": "qc",
                     "lesion_id": r.lesion_id, "status": "rejected", "reason": r.reason}
                    for r in rejected.itertuples())
    table = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    return table.sort_values(["patient", "modality", "lesion_id"], key=_natural).reset_index(drop=True)


SEGMENTATION_NOTE_COLUMNS = ["patient", "site", "modality", "format", "structure", "note"]


def segmentation_notes(statuses: Sequence[StageStatus], sites: dict[str, str]) -> pd.DataFrame:
    """Structures of each segmentation file that the lesion table does not name: listed once, ignored (info)."""
    rows = [{"patient": s.patient, "site": sites.get(s.patient, ""), "modality": s.modality,
             "format": s.details.get("format", ""), "structure": structure, "note": "not a lesion, ignored"}
            for s in statuses if s.stage == "mask" and s.ok for structure in s.details.get("ignored", [])]
    return pd.DataFrame(rows, columns=SEGMENTATION_NOTE_COLUMNS)


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
    """Every plausibility check of every PET SUV card (pass, warn or n/a), one row per patient and check.

    The SUL / SUVbsa normalisations (config ``suv_normalisations``) are rows too: the card's own ``sul`` /
    ``suvbsa`` check (n/a, with the reason) when the factor could not be computed, else one ``pass`` row
    whose value is the card's scale factor and whose detail gives the body size it came from; a requested
    normalisation the card does not mention at all is an ``n/a`` row (rerun the image stage).
    """
    rows = []
    for s in statuses:
        if not (s.stage == "image" and s.modality == "pet" and s.ok):
            continue
        card = s.details.get("suv_card", {})
        checks = card.get("checks", [])
        rows.extend({"patient": s.patient, "check": c["name"], "outcome": c["outcome"], "value": c.get("value"),
                     "detail": c.get("detail", "")} for c in checks)
        named = {c["name"] for c in checks}
        inputs, suvbw = card.get("inputs", {}), card.get("suvbw_scale_factor")
        for name, label, body, size_key, unit in (
                ("sul", "SUL", "lean body mass (Janmahasatian)", "lbm_janmahasatian_kg", "kg"),
                ("suvbsa", "SUVbsa", "body surface area (Du Bois)", "bsa_du_bois_cm2", "cm2")):
            factor = card.get(f"{name}_scale_factor")
            if name in named:  # not computable: the card's own n/a check, already a row
                continue
            if factor is not None:
                size = inputs.get(size_key)
                detail = (f"{label} computed: scale factor of the rescaled image; {body} "
                          f"{'absent' if size is None else f'{size:.6g}'} {unit}, weight {inputs.get('weight_kg')} kg"
                          + (f"; {label} = SUVbw x {factor / suvbw:.6g}" if suvbw else ""))
                rows.append({"patient": s.patient, "check": name, "outcome": "pass", "value": factor,
                             "detail": detail})
            elif name in s.details.get("suv_normalisations", []):
                rows.append({"patient": s.patient, "check": name, "outcome": "n/a", "value": None,
                             "detail": f"{label} requested but not on the SUV card: rerun the image stage"})
    return pd.DataFrame(rows, columns=SUV_CHECK_COLUMNS)


def read_statuses(status_dir: Path, patients: Collection[str] | None = None) -> list[StageStatus]:
    """The stage status records under ``status_dir`` (``<stage>/<patient>[_<modality>].json``), in a stable order.

    With ``patients``, only theirs: a patient removed from the clinical export whose files are still
    in the work area is not read (its pseudonym is the file name up to the first underscore).
    """
    from .stages import read_status

    paths = sorted(Path(status_dir).glob("*/*.json"))
    if patients is not None:
        wanted = set(patients)
        paths = [p for p in paths if p.stem.split("_", 1)[0] in wanted]
    return [read_status(p) for p in paths]


PATIENT_FLOW_COLUMNS = ["patient", "site", "source", "row", "status", "reason", "modalities", "in_patients_table"]


def patient_flow(flow: pd.DataFrame, patients: pd.DataFrame, modalities: pd.DataFrame | None = None,
                 unmatched: pd.DataFrame | None = None, rejected: Collection[str] = ()) -> pd.DataFrame:
    """Every clinical-export row and where it went: invalid, ineligible, eligible; in the patient table or why not.

    ``modalities`` (the intake's table): ``modalities`` names the baseline modalities each eligible patient
    has ("ct+pet", "ct", ...); an eligible patient with none gets the selection's reasons. ``unmatched``
    (the intake's unmatched.csv): one more row per site counting imaged patients without a clinical row.
    ``rejected``: patients with a lesion rejected in visual QC (one left out for that reason says so).
    """
    out = flow.copy()
    out["reason"] = out["reason"].fillna("")
    have: dict[str, list[str]] = {}
    absent: dict[str, list[str]] = {}
    if modalities is not None:
        for row in modalities.itertuples():
            (have if row.status == "selected" else absent).setdefault(row.patient, []).append(
                row.modality if row.status == "selected" else f"{row.modality.upper()}: {row.reason}")
    eligible = out["status"] == "eligible"
    out["modalities"] = [("+".join(have.get(p, [])) if e else "") for p, e in zip(out["patient"], eligible)]
    out["in_patients_table"] = out["patient"].isin(set(patients["patient"])) & eligible
    missing = eligible & ~out["in_patients_table"]
    no_imaging = missing & (out["modalities"] == "")
    out.loc[missing, "reason"] = "no imaged lesion with features (see qc/failures.csv)"
    out.loc[missing & out["patient"].isin(set(rejected)), "reason"] = (
        "no imaged lesion left: every lesion with features was rejected in visual QC (see qc/failures.csv)")
    if modalities is not None:
        out.loc[no_imaging, "reason"] = ["no baseline imaging: " + ("; ".join(absent[p]) if p in absent else
                                         "no DICOM export of this centre") for p in out.loc[no_imaging, "patient"]]
    if unmatched is not None and not unmatched.empty:  # imaged patients the clinical export does not list
        extra = pd.DataFrame({"patient": "", "site": unmatched["site"], "source": "DICOM export", "row": "",
                              "status": "no clinical row",
                              "reason": [f"{n} imaged patient(s) ({s} series) in the {site} export have no valid row in "
                                         f"the clinical export (none, or an invalid one: qc/clinical_issues.csv); the "
                                         f"centre finds them in work/phi/index/{site}.csv"
                                         for site, n, s in zip(unmatched["site"], unmatched["patients"],
                                                               unmatched["series"])],
                              "modalities": "", "in_patients_table": False})
        out = pd.concat([out, extra], ignore_index=True)
    return out[PATIENT_FLOW_COLUMNS]


def run_tables(status_dir: Path, clinical_dir: Path, modalities: Sequence[str], results_dir: Path,
               aggregates: Sequence[str] = DEFAULT_AGGREGATES, modalities_table: Path | None = None,
               qc_ratings: Path | None = None) -> dict[str, int]:
    """Build and write every results table from the stage statuses and the clinical stage's products.

    ``clinical_dir`` holds what the clinical stage wrote: ``clinical.parquet`` (eligible patients),
    ``issues.csv``, ``flow.csv`` (every export row; the pseudonyms of its valid rows are the patients of
    the DAG: status records of anyone else are ignored) and ``columns.csv`` (descriptions for the
    dictionary). The lesion table holds the lesions of the patient table's patients only, so both
    tables (and ComBat, fitted on them) describe one cohort; the other patients' lesions are dropped.

    ``qc_ratings`` (config ``qc_ratings``): the visual QC ratings; the lesions they reject are dropped
    before the patient aggregates (:func:`.ratings.apply_ratings`), and ``qc/qc_ratings_applied.csv``
    (header only without ratings) lists every rating, applied or unmatched. A modality whose every lesion
    is rejected is treated like one whose every lesion failed features: no lesion row, a lesion count of
    0 and empty aggregates, and a patient left without any lesion is not in the patient table. The PET
    stage's patient totals (pet_total_*, pet_hottest_*, pet_dmax_mm, per organ) cover every segmented
    lesion and cannot be recomputed here (Dmax needs the centroids), so they are left empty for a patient
    with a rejected PET lesion rather than published with it.
    """
    clinical_dir = Path(clinical_dir)
    clinical = pd.read_parquet(clinical_dir / "clinical.parquet")
    flow = pd.read_csv(clinical_dir / "flow.csv", dtype={"patient": str, "site": str, "source": str},
                       keep_default_na=False)
    current = set(flow.loc[flow["status"] != "invalid", "patient"]) - {""}
    selected = None
    if modalities_table is not None:
        selected = pd.read_csv(modalities_table, dtype=str, keep_default_na=False)
        selected = selected[selected["patient"].isin(current)]
        pairs = set(zip(*[selected.loc[selected["status"] == "selected", c] for c in ("patient", "modality")]))
    statuses = read_statuses(status_dir, current)
    if selected is not None:  # a modality no longer selected (its series removed) leaves no trace
        statuses = [s for s in statuses if not s.modality or (s.patient, s.modality) in pairs]
    by_key = {(s.stage, s.patient, s.modality): s for s in statuses}
    sites = {s.patient: s.details.get("site", "") for s in statuses if s.stage == "deid"}
    sites.update({p: s for p, s in zip(flow["patient"], flow["site"]) if p in current and s})
    cohort = set(clinical["patient"])
    parts = []
    for status in statuses:
        if status.stage != "features" or not status.ok or status.patient not in cohort:
            continue
        key = (status.patient, status.modality)
        features = pd.DataFrame(read_rows(status.outputs["table"]))
        parts.append(lesion_rows(features, status.patient, sites.get(status.patient, ""), status.modality,
                                 by_key[("image", *key)], by_key[("mask", *key)]))
    lesions = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(LESION_META)))
    lesions = lesions.sort_values(["patient", "modality", "lesion_id"], key=_natural).reset_index(drop=True)
    lesions, rejected, applied = apply_ratings(lesions, read_ratings(qc_ratings) if qc_ratings else no_ratings())
    pet_rejected = set(rejected.loc[rejected["modality"] == "pet", "patient"])  # their totals count a rejected lesion
    patient_pet = pd.DataFrame([{"patient": s.patient, **{k: None if s.patient in pet_rejected else v
                                                          for k, v in s.details.get("patient_pet", {}).items()}}
                                for s in statuses if s.stage == "features" and s.ok and s.details.get("patient_pet")])
    patients = aggregate_patients(lesions, clinical, modalities, patient_pet, aggregates)
    failures = failure_table(statuses, sites, pairs if selected is not None else None, rejected)
    results = Path(results_dir)
    write_table(lesions, results / "features" / "lesions.parquet", results / "features" / "lesions.csv")
    write_table(patients, results / "tables" / "patients.parquet", results / "tables" / "patients.csv")
    filters = {name: settings for s in statuses if s.stage == "features" and s.ok
               for name, settings in s.details.get("filters", {}).items()}
    write_table(dictionary(lesions, patients, modalities, pd.read_csv(clinical_dir / "columns.csv",
                                                                      keep_default_na=False), filters),
                None, results / "tables" / "dictionary.csv")
    write_table(failures, None, results / "qc" / "failures.csv")
    write_table(suv_checks(statuses), None, results / "qc" / "suv_checks.csv")
    write_table(pd.read_csv(clinical_dir / "issues.csv", dtype=str, keep_default_na=False), None,
                results / "qc" / "clinical_issues.csv")
    unmatched_path = Path(modalities_table).with_name("unmatched.csv") if modalities_table is not None else None
    unmatched = (pd.read_csv(unmatched_path, dtype={"site": str}, keep_default_na=False)
                 if unmatched_path is not None and unmatched_path.is_file() else None)
    write_table(patient_flow(flow, patients, selected, unmatched, set(rejected["patient"])), None,
                results / "qc" / "patient_flow.csv")
    write_table(segmentation_notes(statuses, sites), None, results / "qc" / "segmentation_notes.csv")
    write_table(applied[list(APPLIED_COLUMNS)], None, results / "qc" / "qc_ratings_applied.csv")
    return {"lesions": len(lesions), "patients": len(patients), "failures": len(failures),
            "qc_rejected": len(rejected)}
