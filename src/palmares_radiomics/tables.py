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
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import pandas as pd

from .columns import (AGGREGATE_PREFIX, AGGREGATE_WORDS, DICTIONARY_COLUMNS, FORMER_NAMES, LESION_COLUMNS, LESIONS,
                      PATIENTS, PET_PATIENT_COLUMNS, SCANNER, Column)
from .errors import ConfigError, PalmaresError
from .files import atomic_path, read_rows
from .ratings import APPLIED_COLUMNS, apply_ratings, no_ratings, read_ratings
from .records import AGGREGATES, DEFAULT_AGGREGATES, OK, SKIPPED, StageStatus, read_status

FAILURE_COLUMNS = ["patient", "site", "modality", "stage", "lesion_id", "status", "reason"]


def lesion_rows(features: pd.DataFrame, patient: str, site: str, modality: str, image: StageStatus,
                mask: StageStatus) -> pd.DataFrame:
    """Rows of the lesion table for one patient x modality (feature columns already carry their IBSI codes)."""
    scanner = image.details.get("scanner", {})
    volumes = {l["lesion_id"]: l["volume_ml"] for l in mask.details.get("lesions", [])}
    meta = pd.DataFrame({"patient": patient, "site": site, "modality": modality,
                         "lesion_id": features["lesion_id"], "organ": features["organ"],
                         **{c.name: scanner.get(c.name) for c in SCANNER},
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
    ``columns.PET_PATIENT_COLUMNS``) adds the PET stage's totals.
    """
    unknown = set(aggregates) - set(AGGREGATES)
    if unknown:
        raise ConfigError(f"patient_aggregates must be among {AGGREGATES}. Found: {sorted(unknown)}")
    features = feature_columns(lesions.columns)
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
        values = sub[features].apply(pd.to_numeric, errors="coerce")
        for name in aggregates:
            if name == "largest":
                ordered = sub.sort_values(["patient", "volume_ml", "lesion_id"], ascending=[True, False, True])
                part = ordered.drop_duplicates("patient").set_index("patient")[features]
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
        order = [c for c in PET_PATIENT_COLUMNS if c in patient_pet.columns]
        out = out.merge(patient_pet[["patient", *order, *sorted(set(patient_pet.columns) - {"patient", *order})]],
                        on="patient", how="left")
    return out[imaged.to_numpy()].sort_values("patient").reset_index(drop=True)


class UnknownColumnError(PalmaresError, ValueError):
    """A table holds a column the registry does not define, never taken for a feature: a bug of the pipeline, or a
    features record written by a version of it whose columns this one does not know (rerun that patient's job)."""


def is_feature(column: str) -> bool:
    """Whether a lesion-table column is a radiomic feature (reviewed in ``data/ibsi_codes.csv``)."""
    from .features import feature_column

    return feature_column(column) is not None


def feature_columns(columns: Iterable[str]) -> list[str]:
    """The feature columns of a lesion table, in order; a column the registry does not define is refused."""
    out = []
    for column in columns:
        if column in LESION_COLUMNS:
            continue
        if not is_feature(column):
            raise UnknownColumnError(f"lesions column {column} is neither a declared column (columns.py) nor a "
                                     "reviewed feature (data/ibsi_codes.csv)")
        out.append(column)
    return out


@cache
def _feature(feature: str, filters: tuple[tuple[str, str], ...]) -> Column:
    from .features import feature_column, ibsi_table
    from .filters import family_of
    from .ibsi import AGGREGATIONS, computed_by

    column = feature_column(feature)
    if column is None:
        raise UnknownColumnError(f"column {feature} is neither a declared column (columns.py) nor a reviewed feature "
                                 "(data/ibsi_codes.csv)")
    entry = ibsi_table()[column.feature]
    engine = computed_by(column.feature)
    description = f"{entry.ibsi_name} ({entry.ibsi_family}), {engine} {column.feature}" if entry.ibsi_code else (
        f"{engine} {column.feature}: {entry.note}")
    if column.aggregation:
        description += f"; texture aggregation {AGGREGATIONS[column.aggregation].name} ({column.aggregation})"
    unit = entry.unit.replace("intensity", "HU (CT) or SUVbw (PET)")
    if column.filter:
        family = family_of(column.filter)
        kind = dict(filters).get(column.filter) or (f"{family.FILTER}, IBSI 2 {family.IBSI_CODE}" if family
                                                    else "IBSI 2 filter")
        description += f"; of the response map of filter {column.filter} ({kind}), inside the re-segmented ROI"
        unit = entry.unit.replace("intensity", f"{column.filter} response")  # in image units only for the mean filter
    return Column(feature, LESIONS, description, unit, "features", "baseline", entry.ibsi_code or "non-IBSI")


def feature(column: str, filters: Mapping[str, str] | None = None) -> Column:
    """The definition of a feature column (``glcm_Id_IB1Z_ITBB`` → the glcm_Id entry, 3D averaged), from the reviewed
    IBSI mapping. ``filters``: IBSI 2 filter name → its settings (``FilterSpec.describe``, from the features stage's
    records), for the columns of filtered images (``log_s1p5__firstorder_Mean_Q4LE``)."""
    return _feature(column, tuple(sorted((filters or {}).items())))


def clinical_definitions(declared: Iterable[tuple[str, str, str, str]]) -> dict[str, Column]:
    """The clinical stage's columns (its ``columns.csv`` rows: column, description, unit, time basis)."""
    return {name: Column(name, PATIENTS, description, unit, "clinical", basis)
            for name, description, unit, basis in declared}


def aggregate(column: str, modalities: Sequence[str], filters: Mapping[str, str] | None = None) -> Column:
    """The definition of a per-modality aggregate of the patient table: ``ct_lesion_count``, ``pet_total_volume_ml``,
    ``ct_vwmean_<feature>``, ... (config ``patient_aggregates``)."""
    modality = next((m for m in modalities if column.startswith(f"{m}_")), "")
    if not modality:
        raise UnknownColumnError(f"patients column {column} is neither declared (columns.py, the clinical schema) nor "
                                 "a per-modality aggregate")
    if column in (f"{modality}_lesion_count", f"{modality}_total_volume_ml"):
        what = "number of lesions" if column.endswith("count") else "total lesion volume"
        return Column(column, PATIENTS, f"{what} on {modality.upper()}", "ml" if "volume" in column else "", "tables",
                      "baseline")
    prefix = next((p for p in AGGREGATE_WORDS if column.startswith(f"{modality}_{p}_")), None)
    if prefix is None:
        raise UnknownColumnError(f"patients column {column} is neither declared nor a {modality} aggregate")
    of = feature(column.removeprefix(f"{modality}_{prefix}_"), filters)
    how = AGGREGATE_WORDS[prefix].format(M=modality.upper())
    return Column(column, PATIENTS, f"{how}: {of.description}", of.unit, "features", "baseline", of.ibsi_code)


def describe(column: str, table: str, modalities: Sequence[str], clinical: Mapping[str, Column],
             filters: Mapping[str, str] | None = None) -> Column:
    """The definition of any column of ``table`` (``lesions`` or ``patients``); UnknownColumnError for anything else.

    ``clinical``: :func:`clinical_definitions` of the clinical stage. ``filters``: see :func:`feature`."""
    if table == LESIONS:
        return LESION_COLUMNS.get(column) or feature(column, filters)
    return clinical.get(column) or PET_PATIENT_COLUMNS.get(column) or aggregate(column, modalities, filters)


def dictionary(lesions: pd.DataFrame, patients: pd.DataFrame, modalities: Sequence[str],
               clinical_columns: pd.DataFrame, filters: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The data dictionary: every column of both tables once per table (DICTIONARY_COLUMNS), from the column
    registry (:mod:`.columns`, through :func:`describe`); a column it does not define is an UnknownColumnError.

    ``clinical_columns`` (column, description, unit, time_basis) describes the clinical stage's
    columns (written by it from the declared clinical schema). ``filters``: IBSI 2 filter name → settings, for
    the columns of filtered images. ``time_basis`` says what each column may know: identifier, baseline, or
    outcome (post-baseline, only the declared outcome columns).
    """
    clinical = clinical_definitions((r.column, r.description, r.unit if isinstance(r.unit, str) else "",
                                     r.time_basis) for r in clinical_columns.itertuples())
    rows = [describe(column, table_name, modalities, clinical, filters).row(str(table[column].dtype))
            for table_name, table in ((LESIONS, lesions), (PATIENTS, patients))
            for column in table.columns]
    return pd.DataFrame(rows, columns=list(DICTIONARY_COLUMNS))


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
            for lesion in features.failed_lesions:
                rows.append({"patient": patient, "site": sites.get(patient, ""), "modality": modality,
                             "stage": features.stage, "lesion_id": lesion.lesion_id, "status": lesion.status,
                             "reason": lesion.reason})
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
        features = pd.DataFrame(read_rows(status.outputs["table"])).rename(columns=FORMER_NAMES)
        parts.append(lesion_rows(features, status.patient, sites.get(status.patient, ""), status.modality,
                                 by_key[("image", *key)], by_key[("mask", *key)]))
    lesions = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(LESION_COLUMNS)))
    lesions = lesions.sort_values(["patient", "modality", "lesion_id"], key=_natural).reset_index(drop=True)
    lesions, rejected, applied = apply_ratings(lesions, read_ratings(qc_ratings) if qc_ratings else no_ratings())
    pet_rejected = set(rejected.loc[rejected["modality"] == "pet", "patient"])  # their totals count a rejected lesion
    patient_pet = pd.DataFrame([{"patient": s.patient, **{FORMER_NAMES.get(k, k): None if s.patient in pet_rejected
                                                          else v for k, v in s.details.get("patient_pet", {}).items()}}
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
