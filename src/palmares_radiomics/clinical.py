"""Clinical export: validate, pseudonymise and derive survival outcomes (OS, PFS) in days.

Outcomes are derived, never typed in: OS runs from CDK4/6i start to death (event) or last
follow-up (censored); PFS to progression or death, whichever comes first (event), or last
follow-up (censored). Both are administratively censored at the data cut-off. Dates never leave
this module: the output holds intervals in days and pseudonyms only. A row with an invalid value
is excluded with a reason naming its row and column; the other rows go on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import ClinicalDataError
from .pseudonym import pseudonym

DATE_COLUMNS = ("birth_date", "advanced_diagnosis_date", "cdk46i_start_date", "progression_date", "death_date",
                "last_followup_date")
REQUIRED = ("site", "patient_id", "birth_date", "cdk46i_start_date", "cdk46i_drug", "last_followup_date")
ALLOWED = {
    "cdk46i_drug": {"palbociclib", "ribociclib", "abemaciclib"},
    "endocrine_partner": {"aromatase_inhibitor", "fulvestrant"},
    "menopausal_status": {"pre", "post"},
    "disease_setting": {"de_novo", "recurrent"},
    "visceral_disease": {"yes", "no"},
    "bone_only_disease": {"yes", "no"},
    "ecog": {"0", "1", "2", "3", "4"},
}
COVARIATES = ("cdk46i_drug", "endocrine_partner", "menopausal_status", "disease_setting", "visceral_disease",
              "bone_only_disease", "ecog")


@dataclass(frozen=True, slots=True)
class ClinicalIssue:
    """Why one row of the export was excluded (row number as in a spreadsheet: header is row 1)."""

    row: int
    column: str
    problem: str


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Survival outcomes of one patient in whole days from CDK4/6i start."""

    os_days: int
    os_event: bool
    pfs_days: int
    pfs_event: bool


def read_export(path: Path) -> pd.DataFrame:
    """Read the clinical export with every value as stripped text (empty string = missing)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ClinicalDataError(f"{Path(path).name}: required column(s) {missing} are missing; columns found: "
                                f"{list(table.columns)}")
    return table.apply(lambda col: col.str.strip())


def parse_date(value: str) -> dt.date | None:
    """An ISO date (YYYY-MM-DD) or None when empty; raises ValueError when malformed."""
    return dt.date.fromisoformat(value) if value else None


def derive_outcomes(start: dt.date, progression: dt.date | None, death: dt.date | None, last_followup: dt.date,
                    cutoff: dt.date) -> Outcomes:
    """OS and PFS from the dates of one patient, administratively censored at ``cutoff``.

    An event after the cut-off is not an event: the patient is censored at the cut-off (or at the
    last follow-up when that comes first).
    """
    censor = min(last_followup, cutoff)
    if death is not None and death <= cutoff:
        os_days, os_event = (death - start).days, True
    else:
        os_days, os_event = (censor - start).days, False
    first_event = min((d for d in (progression, death) if d is not None), default=None)
    if first_event is not None and first_event <= cutoff:
        pfs_days, pfs_event = (first_event - start).days, True
    else:
        pfs_days, pfs_event = (censor - start).days, False
    return Outcomes(os_days, os_event, pfs_days, pfs_event)


def _row_issues(row: pd.Series, line: int, cutoff: dt.date) -> tuple[dict[str, dt.date | None], list[ClinicalIssue]]:
    """Parsed dates of one row and every problem found in it."""
    issues: list[ClinicalIssue] = []
    dates: dict[str, dt.date | None] = {}
    for column in REQUIRED:
        if not row.get(column, ""):
            issues.append(ClinicalIssue(line, column, "required value is empty"))
    for column in DATE_COLUMNS:
        try:
            dates[column] = parse_date(row.get(column, ""))
        except ValueError:
            dates[column] = None
            issues.append(ClinicalIssue(line, column, "not a date in YYYY-MM-DD format"))
    for column, allowed in ALLOWED.items():
        value = row.get(column, "")
        if value and value not in allowed:
            issues.append(ClinicalIssue(line, column, f"unknown value; allowed: {', '.join(sorted(allowed))}"))
    start = dates.get("cdk46i_start_date")
    for column, value in dates.items():
        if value is not None and value > cutoff and column not in ("progression_date", "death_date", "last_followup_date"):
            issues.append(ClinicalIssue(line, column, "date after the data cut-off"))
    if start is not None:
        for column in ("progression_date", "death_date", "last_followup_date"):
            value = dates.get(column)
            if value is not None and value < start:
                issues.append(ClinicalIssue(line, column, "before the CDK4/6i start date"))
        birth = dates.get("birth_date")
        if birth is not None and birth >= start:
            issues.append(ClinicalIssue(line, "birth_date", "not before the CDK4/6i start date"))
    return dates, issues


def prepare_clinical(table: pd.DataFrame, key: bytes, cutoff: dt.date) -> tuple[pd.DataFrame, list[ClinicalIssue]]:
    """Validated, pseudonymised clinical table with outcomes; excluded rows come back as issues.

    Output columns: patient, site, age_at_start_years, the covariates, os_days, os_event, pfs_days,
    pfs_event. No date and no local identifier survives.
    """
    duplicated = table.duplicated(["site", "patient_id"], keep=False)
    rows, issues = [], []
    for position, (_, row) in enumerate(table.iterrows()):
        line = position + 2
        if duplicated.iloc[position]:
            issues.append(ClinicalIssue(line, "patient_id", "duplicate patient (same site and patient_id on several rows)"))
            continue
        dates, row_issues = _row_issues(row, line, cutoff)
        if row_issues:
            issues.extend(row_issues)
            continue
        outcomes = derive_outcomes(dates["cdk46i_start_date"], dates["progression_date"], dates["death_date"],
                                   dates["last_followup_date"], cutoff)
        age = (dates["cdk46i_start_date"] - dates["birth_date"]).days / 365.25
        rows.append({"patient": pseudonym(key, row["site"], row["patient_id"]), "site": row["site"],
                     "age_at_start_years": round(age, 1), **{c: row.get(c, "") or None for c in COVARIATES},
                     "os_days": outcomes.os_days, "os_event": outcomes.os_event,
                     "pfs_days": outcomes.pfs_days, "pfs_event": outcomes.pfs_event})
    out = pd.DataFrame(rows, columns=["patient", "site", "age_at_start_years", *COVARIATES,
                                      "os_days", "os_event", "pfs_days", "pfs_event"])
    out = out.astype({"os_days": "int64", "pfs_days": "int64", "os_event": "bool", "pfs_event": "bool"})
    return out.sort_values("patient").reset_index(drop=True), issues


def therapy_starts(table: pd.DataFrame) -> dict[tuple[str, str], dt.date]:
    """CDK4/6i start date per (site, patient_id), for rows whose start date parses (PHI side only)."""
    starts = {}
    for site, patient_id, value in zip(table["site"], table["patient_id"], table["cdk46i_start_date"]):
        try:
            date = parse_date(value)
        except ValueError:
            continue
        if date is not None:
            starts[(site, patient_id)] = date
    return starts
