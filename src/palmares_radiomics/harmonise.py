"""Optional ComBat harmonisation by centre, written to separate ``*_combat.parquet`` tables.

ComBat (Johnson, Li & Rabinovic, Biostatistics 2007; for imaging features Fortin et al., NeuroImage
2017/2018, and Orlhac et al., J Nucl Med 2018 for radiomics) models each feature as
``y = alpha + X beta + gamma_centre + delta_centre * e`` and removes the additive (gamma) and
multiplicative (delta) centre effects with empirical-Bayes shrinkage across features, while keeping
the effects ``beta`` of the declared covariates ``X`` (here: clinical covariates such as age or
visceral disease, and the lesion's organ). It runs through ``neuroCombat`` (the engine that
neuroHarmonize also calls; neuroHarmonize 2.5.2 itself pins numpy < 2, which would downgrade this
project's numpy).

It is never applied to ``lesions.parquet`` / ``patients.parquet`` and never silently: off unless
``harmonisation.combat`` is true, and every group of rows (one modality of one table) is recorded in
``qc/combat.csv`` with what was harmonised, what was left out and why; the report and provenance show it.
Columns ComBat did not harmonise keep their original values; harmonised columns are empty (NaN) in
rows that could not be part of the fit (a missing covariate, or the only row of its centre), and
``qc/combat.csv`` counts those rows.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .configcheck import require_extra
from .errors import ConfigError
from .columns import AGGREGATE_PREFIX, LESION_COLUMNS, PET_LESION, PET_LESION_NORMALISED, PET_PATIENT_COLUMNS
from .tables import feature_columns, write_table

log = logging.getLogger(__name__)

#: Lesion-table columns ComBat harmonises besides the features: the PET metrics (never the identifiers, the batch
#: variables or the lesion volume on the original grid).
LESION_PET = frozenset(c.name for c in (*PET_LESION, *PET_LESION_NORMALISED))
RECORD_COLUMNS = ["table", "group", "status", "rows", "rows_left_out", "centres", "features_harmonised",
                  "features_skipped", "covariates", "reason"]


@dataclass(frozen=True, slots=True)
class CombatSettings:
    """Config ``harmonisation``: the covariates whose effects ComBat preserves. The batch is always the
    centre (``site``): there is no other batch option."""

    covariates: tuple[str, ...] = ()
    lesion_covariates: tuple[str, ...] = ("organ",)

    def __post_init__(self) -> None:
        if any(c not in LESION_COLUMNS for c in self.lesion_covariates):
            raise ConfigError(f"harmonisation.lesion_covariates must be lesion-table columns. Found: "
                              f"{list(self.lesion_covariates)}")


@dataclass(frozen=True, slots=True)
class CombatRecord:
    """What ComBat did to one group of rows (one modality of one table)."""

    table: str
    group: str
    status: str  # harmonised | skipped
    rows: int
    rows_left_out: int
    centres: int
    features_harmonised: int
    features_skipped: int
    covariates: str
    reason: str


def combat(values: pd.DataFrame, batch: pd.Series, covariates: pd.DataFrame) -> pd.DataFrame:
    """ComBat-harmonised copy of ``values`` (rows = samples, columns = features), keeping covariate effects.

    Every value must be finite, every centre must have at least 2 rows and there must be at least 2
    centres; covariates of float dtype are continuous, any other dtype categorical. Uses empirical
    Bayes (parametric priors) when there are at least 2 features, plain location/scale otherwise.
    Raises :class:`ConfigError` when the design (centres + covariates) is not of full rank: a declared
    covariate (config ``harmonisation``) is confounded with the centres in these data.
    """
    require_extra("harmonise")
    from neuroCombat import neuroCombat

    continuous = [c for c in covariates.columns if pd.api.types.is_float_dtype(covariates[c])]
    categorical = [c for c in covariates.columns if c not in continuous]
    covars = pd.DataFrame({"_batch": batch.astype(str).to_numpy()}, index=values.index)
    for column in covariates.columns:
        covars[column] = (covariates[column].astype(float) if column in continuous
                          else covariates[column].astype(str)).to_numpy()
    design = [pd.get_dummies(covars["_batch"], dtype=float).to_numpy()]
    design += [pd.get_dummies(covars[c], dtype=float).to_numpy()[:, 1:] for c in categorical]
    design += [covars[[c]].to_numpy(dtype=float) for c in continuous]
    matrix = np.hstack(design)
    if np.linalg.matrix_rank(matrix) < matrix.shape[1]:
        raise ConfigError(f"the covariates ({', '.join(covariates.columns)}) are confounded with the centres (design "
                          "matrix not of full rank): ComBat cannot tell their effects from the centre's; remove the "
                          "covariate from config harmonisation.covariates / lesion_covariates")
    with contextlib.redirect_stdout(io.StringIO()) as chatter:  # neuroCombat prints its progress
        result = neuroCombat(dat=values.to_numpy(dtype=float).T, covars=covars, batch_col="_batch",
                             categorical_cols=categorical, continuous_cols=continuous, eb=values.shape[1] > 1)
    log.debug("neuroCombat: %s", chatter.getvalue().strip().replace("\n", "; "))
    return pd.DataFrame(np.asarray(result["data"], dtype=float).T, index=values.index, columns=values.columns)


def harmonise_group(table: pd.DataFrame, rows: pd.Series, features: Sequence[str], covariates: pd.DataFrame,
                    name: str, group: str) -> tuple[pd.DataFrame, CombatRecord]:
    """Harmonise ``features`` over the rows selected by ``rows`` (a boolean mask of ``table``) by centre (``site``).

    Returns the harmonised block (those rows; columns that could be harmonised) and its record.
    """
    covariate_names = ", ".join(covariates.columns) or "none"

    def skipped(reason: str, n_rows: int, left_out: int = 0) -> tuple[pd.DataFrame, CombatRecord]:
        return pd.DataFrame(), CombatRecord(name, group, "skipped", n_rows, left_out, 0, 0, len(features),
                                            covariate_names, reason)

    selected = table[rows.to_numpy()]
    complete = covariates.loc[selected.index].notna().all(axis=1) & selected["site"].astype(bool)
    counts = selected.loc[complete, "site"].value_counts()
    alone = set(counts[counts < 2].index)
    usable = complete & ~selected["site"].isin(alone)
    reasons = []
    if (~complete).sum():
        reasons.append(f"{int((~complete).sum())} row(s) with a missing covariate left out")
    if alone:
        reasons.append(f"centre(s) {', '.join(sorted(alone))} with a single row left out (ComBat needs at least 2 "
                       "rows per centre)")
    fit = selected[usable]
    left_out = len(selected) - len(fit)
    if fit["site"].nunique() < 2:
        return skipped("; ".join(reasons + [f"{fit['site'].nunique()} centre(s) with at least 2 rows: ComBat needs "
                                            "at least 2 centres"]), len(selected), left_out)
    values = fit[list(features)].apply(pd.to_numeric, errors="coerce")
    finite = np.isfinite(values.to_numpy(dtype=float))
    missing = [c for c, ok in zip(values.columns, finite.all(axis=0)) if not ok]
    constant = [c for c in values.columns if c not in missing and values[c].std(ddof=0) == 0]
    keep = [c for c in values.columns if c not in missing and c not in constant]
    if missing or constant:
        reasons.append(f"{len(missing)} feature(s) with missing values and {len(constant)} constant feature(s) "
                       "kept as they are")
    if not keep:
        return skipped("; ".join(reasons + ["no feature to harmonise"]), len(selected), left_out)
    try:
        harmonised = combat(values[keep], fit["site"], covariates.loc[fit.index])
    except (ConfigError, ValueError, np.linalg.LinAlgError) as exc:  # ValueError, LinAlgError: from neuroCombat
        return skipped("; ".join(reasons + [str(exc)]), len(selected), left_out)
    if not np.isfinite(harmonised.to_numpy()).all():
        return skipped("; ".join(reasons + ["ComBat returned non-finite values"]), len(selected), left_out)
    block = harmonised.reindex(selected.index)  # rows left out: NaN in the harmonised columns
    return block, CombatRecord(name, group, "harmonised", len(selected), left_out, int(fit["site"].nunique()),
                               len(keep), len(features) - len(keep), covariate_names, "; ".join(reasons))


def lesion_features(lesions: pd.DataFrame) -> list[str]:
    """Lesion-table columns ComBat harmonises: every numeric feature and PET metric (not ids, batch variables or
    the lesion volume)."""
    harmonised = LESION_PET | set(feature_columns(lesions.columns))  # an unknown column is refused
    return [c for c in lesions.columns if c in harmonised and pd.api.types.is_numeric_dtype(lesions[c])
            and not pd.api.types.is_bool_dtype(lesions[c])]


def patient_features(patients: pd.DataFrame, modality: str) -> list[str]:
    """Patient-table columns of one modality ComBat harmonises: the lesion-feature aggregates and, for PET, the
    PET stage's continuous metrics (not counts)."""
    prefixes = tuple(f"{modality}_{p}_" for p in AGGREGATE_PREFIX.values())
    out = [c for c in patients.columns if c.startswith(prefixes)]
    if modality == "pet":
        out += [c for c in patients.columns if c in PET_PATIENT_COLUMNS and not c.endswith("lesion_count")
                and pd.api.types.is_float_dtype(patients[c])]
    return out


def run_harmonise(results_dir: Path, modalities: Sequence[str], settings: CombatSettings) -> pd.DataFrame:
    """Write ``lesions_combat.parquet``, ``patients_combat.parquet`` (+ CSV twins) and ``qc/combat.csv``."""
    results = Path(results_dir)
    lesions = pd.read_parquet(results / "features" / "lesions.parquet")
    patients = pd.read_parquet(results / "tables" / "patients.parquet")
    unknown = [c for c in settings.covariates if c not in patients.columns]
    if unknown:
        raise ConfigError(f"harmonisation.covariates {unknown} are not columns of patients.parquet; choose among the "
                          "clinical covariates (results/tables/dictionary.csv, source_stage clinical)")
    records = []
    lesions_out = lesions.copy()
    joined = lesions.merge(patients[["patient", *settings.covariates]], on="patient", how="left")
    joined.index = lesions.index
    lesion_covariates = joined[[*settings.lesion_covariates, *settings.covariates]]
    for modality in modalities:
        rows = lesions["modality"] == modality
        features = [c for c in lesion_features(lesions) if lesions.loc[rows, c].notna().any()]
        block, record = harmonise_group(lesions, rows, features, lesion_covariates, "lesions", modality)
        records.append(record)
        if not block.empty:
            lesions_out.loc[block.index, block.columns] = block
    patients_out = patients.copy()
    for modality in modalities:
        count = f"{modality}_lesion_count"
        rows = patients[count] > 0 if count in patients else patients[patient_features(patients, modality)].notna().any(
            axis=1)
        block, record = harmonise_group(patients, rows, patient_features(patients, modality),
                                        patients[list(settings.covariates)], "patients", modality)
        records.append(record)
        if not block.empty:
            patients_out.loc[block.index, block.columns] = block
    write_table(lesions_out, results / "features" / "lesions_combat.parquet",
                results / "features" / "lesions_combat.csv")
    write_table(patients_out, results / "tables" / "patients_combat.parquet",
                results / "tables" / "patients_combat.csv")
    table = pd.DataFrame([asdict(r) for r in records], columns=RECORD_COLUMNS)
    write_table(table, None, results / "qc" / "combat.csv")
    return table
