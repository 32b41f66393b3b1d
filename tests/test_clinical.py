"""Clinical export: validation with row/column reasons and outcome derivation against hand-computed cases."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from palmares_radiomics.clinical import derive_outcomes, prepare_clinical, read_export
from palmares_radiomics.errors import ClinicalDataError

CUTOFF = dt.date(2025, 6, 30)
D = dt.date


@pytest.mark.parametrize(
    ("progression", "death", "last", "expected"),
    [
        (None, None, D(2024, 1, 11), (10, False, 10, False)),                         # censored, no event
        (D(2024, 1, 21), None, D(2024, 3, 1), (60, False, 20, True)),                 # progressed, alive
        (D(2024, 1, 21), D(2024, 2, 10), D(2024, 2, 10), (40, True, 20, True)),        # progressed then died
        (None, D(2024, 2, 10), D(2024, 2, 10), (40, True, 40, True)),                  # death without progression
        (D(2025, 7, 10), D(2025, 8, 1), D(2025, 8, 1), (546, False, 546, False)),      # events after cut-off (366 + 180 days)
        (None, None, D(2026, 1, 1), (546, False, 546, False)),                         # follow-up past cut-off
    ],
)
def test_outcomes_by_hand(progression, death, last, expected) -> None:
    outcome = derive_outcomes(D(2024, 1, 1), progression, death, last, CUTOFF)
    assert (outcome.os_days, outcome.os_event, outcome.pfs_days, outcome.pfs_event) == expected


def _export(**changes: str) -> pd.DataFrame:
    row = {"site": "IT01", "patient_id": "P1", "birth_date": "1960-05-01", "advanced_diagnosis_date": "2023-11-01",
           "cdk46i_start_date": "2024-01-01", "cdk46i_drug": "ribociclib", "endocrine_partner": "fulvestrant",
           "menopausal_status": "post", "disease_setting": "de_novo", "visceral_disease": "no",
           "bone_only_disease": "yes", "ecog": "1", "progression_date": "", "death_date": "",
           "last_followup_date": "2024-06-01"}
    return pd.DataFrame([row, {**row, "patient_id": "P2", **changes}])


def test_valid_rows_give_pseudonymised_outcomes_without_dates(test_key: bytes) -> None:
    table, issues = prepare_clinical(_export(), test_key, CUTOFF)
    assert issues == []
    assert list(table["os_days"]) == [152, 152]
    assert not any("date" in c for c in table.columns)
    assert table["patient"].str.startswith("PAL2-").all() and "P1" not in table.to_csv()


@pytest.mark.parametrize(
    ("changes", "column", "problem"),
    [
        ({"cdk46i_drug": "tamoxifen"}, "cdk46i_drug", "unknown value"),
        ({"progression_date": "2023-12-01"}, "progression_date", "before the CDK4/6i start"),
        ({"cdk46i_start_date": "2026-01-01", "last_followup_date": "2026-02-01"}, "cdk46i_start_date", "after the data cut-off"),
        ({"birth_date": "01/05/1960"}, "birth_date", "YYYY-MM-DD"),
        ({"last_followup_date": ""}, "last_followup_date", "required value is empty"),
        ({"patient_id": "P1"}, "patient_id", "duplicate patient"),
    ],
)
def test_invalid_rows_are_excluded_with_row_and_column(test_key: bytes, changes, column, problem) -> None:
    table, issues = prepare_clinical(_export(**changes), test_key, CUTOFF)
    assert any(i.row == 3 and i.column == column and problem in i.problem for i in issues), issues
    assert len(table) == (0 if column == "patient_id" else 1)


def test_missing_required_column_is_named(tmp_path) -> None:
    path = tmp_path / "export.csv"
    _export().drop(columns=["cdk46i_start_date"]).to_csv(path, index=False)
    with pytest.raises(ClinicalDataError, match=r"required column\(s\) \['cdk46i_start_date'\]"):
        read_export(path)
