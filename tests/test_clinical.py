"""Clinical export: declared schema (pandera) with row/column reasons, per-centre mapping, eligibility and
outcome derivation against hand-computed cases."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO
from palmares_radiomics.clinical import (
    ClinicalInputs,
    ClinicalMapping,
    ClinicalSchema,
    Eligibility,
    clinical_specs,
    derive_outcomes,
    output_columns,
    parse_specs,
    prepare_clinical,
    read_exports,
)
from palmares_radiomics.errors import ClinicalDataError, ConfigError

SCHEMA_PATH = REPO / "config" / "clinical_schema.yaml"
CUTOFF = dt.date(2025, 6, 30)
TODAY = dt.date(2025, 9, 1)
D = dt.date
ROW = {"site": "IT01", "patient_id": "P1", "birth_date": "1960-05-01", "advanced_diagnosis_date": "2023-11-01",
       "cdk46i_start_date": "2024-01-01", "cdk46i_line": "1", "cdk46i_drug": "ribociclib",
       "endocrine_partner": "fulvestrant", "menopausal_status": "post", "disease_setting": "de_novo",
       "visceral_disease": "no", "bone_only_disease": "yes", "ecog": "1", "progression_date": "", "death_date": "",
       "last_followup_date": "2024-06-01"}


@pytest.fixture(scope="module")
def schema() -> ClinicalSchema:
    return ClinicalSchema.load(SCHEMA_PATH)


def _prepare(tmp_path: Path, rows: list[dict[str, str]], key: bytes, **kwargs):
    path = tmp_path / "clinical.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    inputs = ClinicalInputs.from_specs([str(path)], SCHEMA_PATH)
    return prepare_clinical(inputs.read(), key, CUTOFF, inputs.schema, today=TODAY, **kwargs)


# ------------------------------------------------------------------------------------------------ outcomes

@pytest.mark.parametrize(
    ("progression", "death", "last", "expected"),
    [
        (None, None, D(2024, 1, 11), (10, False, 10, False)),                         # censored, no event
        (D(2024, 1, 21), None, D(2024, 3, 1), (60, False, 20, True)),                 # progressed, alive
        (D(2024, 1, 21), D(2024, 2, 10), D(2024, 2, 10), (40, True, 20, True)),        # progressed then died
        (None, D(2024, 2, 10), D(2024, 2, 10), (40, True, 40, True)),                  # death without progression
        (D(2025, 7, 10), D(2025, 8, 1), D(2025, 8, 1), (546, False, 546, False)),      # events after cut-off (366+180)
        (None, None, D(2026, 1, 1), (546, False, 546, False)),                         # follow-up past cut-off
        (D(2025, 3, 1), D(2025, 8, 1), D(2025, 8, 1), (546, False, 425, True)),        # progressed before, died after
        (None, D(2025, 6, 30), D(2025, 6, 30), (546, True, 546, True)),                # death on the cut-off day
        (D(2024, 1, 1), None, D(2024, 1, 1), (0, False, 0, True)),                     # progression on day 0
        # last follow-up 2025-03-01 (425 days) before the cut-off, but a later event date proves the patient was
        # followed past the cut-off: censored at the cut-off (546 days), not at the last follow-up
        (None, D(2025, 8, 1), D(2025, 3, 1), (546, False, 546, False)),                # died after the cut-off
        (D(2025, 7, 10), None, D(2025, 3, 1), (546, False, 546, False)),               # progressed after the cut-off
        (D(2025, 3, 1), D(2025, 8, 1), D(2025, 3, 1), (546, False, 425, True)),        # progressed before, died after
        (None, D(2025, 5, 1), D(2025, 3, 1), (486, True, 486, True)),                  # died before: 366+120 days
        (D(2025, 1, 1), None, D(2024, 12, 1), (366, False, 366, True)),               # progression after follow-up
    ],
)
def test_outcomes_by_hand(progression, death, last, expected) -> None:
    outcome = derive_outcomes(D(2024, 1, 1), progression, death, last, CUTOFF)
    assert (outcome.os_days, outcome.os_event, outcome.pfs_days, outcome.pfs_event) == expected


def test_outcomes_from_the_export_match_a_hand_computation(tmp_path: Path, test_key: bytes) -> None:
    rows = [ROW,  # censored at last follow-up: 2024-01-01 -> 2024-06-01 = 152 days (leap year)
            {**ROW, "patient_id": "P2", "death_date": "2024-03-01", "last_followup_date": "2024-03-01"},  # 60 days
            {**ROW, "patient_id": "P3", "progression_date": "2025-01-01", "last_followup_date": "2025-08-15"}]
    result = _prepare(tmp_path, rows, test_key)
    got = result.table.set_index("patient")
    by_row = dict(zip(result.flow["row"], result.flow["patient"]))
    assert tuple(got.loc[by_row[2], ["os_days", "os_event", "pfs_days", "pfs_event"]]) == (152, False, 152, False)
    assert tuple(got.loc[by_row[3], ["os_days", "os_event", "pfs_days", "pfs_event"]]) == (60, True, 60, True)
    # P3: progression after 366 days; alive at 2025-08-15, censored at the cut-off 2025-06-30 = 546 days
    assert tuple(got.loc[by_row[4], ["os_days", "os_event", "pfs_days", "pfs_event"]]) == (546, False, 366, True)


def test_valid_rows_give_pseudonymised_outcomes_without_dates(tmp_path: Path, test_key: bytes) -> None:
    result = _prepare(tmp_path, [ROW, {**ROW, "patient_id": "P2"}], test_key)
    assert result.issues.empty and (result.flow["status"] == "eligible").all()
    table = result.table
    assert list(table["os_days"]) == [152, 152]
    assert not any("date" in c for c in table.columns)
    assert not any(pd.api.types.is_datetime64_any_dtype(table[c]) for c in table.columns)
    assert table["patient"].str.fullmatch(r"PAL2-[0-9A-Z]{10}").all()
    published = table.to_csv() + result.flow.to_csv() + result.issues.to_csv()
    assert "P1" not in published and "2024-01-01" not in published and "1960" not in published
    assert str(table["os_days"].dtype) == "int64" and str(table["os_event"].dtype) == "bool"
    assert str(table["visceral_disease"].dtype) == "boolean" and str(table["ecog"].dtype) == "Int64"
    assert table["age_at_start_years"].tolist() == [63.7, 63.7]
    assert set(result.columns["column"]) == set(table.columns)


# ------------------------------------------------------------------------------------------------ schema errors

@pytest.mark.parametrize(
    ("changes", "column", "problem"),
    [
        ({"cdk46i_drug": "tamoxifen"}, "cdk46i_drug",
         "unknown CDK4/6 inhibitor; allowed: abemaciclib, palbociclib, ribociclib"),
        ({"progression_date": "2023-12-01"}, "progression_date", "before the CDK4/6i start date (cdk46i_start_date)"),
        ({"death_date": "2023-12-31"}, "death_date", "before the CDK4/6i start date"),
        ({"last_followup_date": "2025-12-01"}, "last_followup_date", "date in the future"),
        ({"birth_date": "01/05/1960"}, "birth_date", "not a date in the format YYYY-MM-DD (%Y-%m-%d)"),
        ({"birth_date": "1960-02-30"}, "birth_date", "not a date in the format YYYY-MM-DD"),
        ({"last_followup_date": ""}, "last_followup_date", "required value is empty"),
        ({"cdk46i_line": ""}, "cdk46i_line", "required value is empty"),
        ({"ecog": "5"}, "ecog", "not a whole number from 0 to 4"),
        ({"ecog": "1.5"}, "ecog", "not a whole number from 0 to 4"),
        ({"visceral_disease": "si"}, "visceral_disease", "unknown visceral disease code; allowed: no, yes"),
        ({"site": "it-1"}, "site", "not a valid centre code"),
        ({"birth_date": "2024-02-01"}, "birth_date", "after the CDK4/6i start date (cdk46i_start_date)"),
        ({"advanced_diagnosis_date": "2024-02-01"}, "advanced_diagnosis_date", "after the CDK4/6i start date"),
        ({"progression_date": "2024-05-01", "death_date": "2024-04-01", "last_followup_date": "2024-05-01"},
         "progression_date", "after the death date (death_date)"),
        ({"progression_date": "2024-07-01"}, "progression_date", "after the last follow-up date (last_followup_date)"),
        ({"death_date": "2024-05-01"}, "last_followup_date", "after the death date (death_date)"),  # follow-up 06-01
        ({"patient_id": "P1"}, "patient_id", "duplicate patient: the same site and patient_id are on rows 2, 3"),
    ],
)
def test_invalid_rows_are_excluded_with_row_and_column(tmp_path: Path, test_key: bytes, changes, column,
                                                       problem) -> None:
    rows = [ROW, {**ROW, "patient_id": "P2", **changes}, {**ROW, "patient_id": "P3"}]
    result = _prepare(tmp_path, rows, test_key)
    issues = result.issues
    hits = issues[(issues["row"] == 3) & (issues["column"] == column)]
    assert hits["problem"].str.contains(problem, regex=False).any(), issues.to_string()
    assert (issues["source"] == "clinical.csv").all()
    flow = result.flow.set_index("row")
    assert flow.loc[3, "status"] == "invalid" and column in flow.loc[3, "reason"]
    duplicate = column == "patient_id"
    assert len(result.table) == (1 if duplicate else 2), "the other rows proceed"
    assert set(issues["row"]) == ({2, 3} if duplicate else {3})
    for value in changes.values():  # dates are never echoed (a date is PHI)
        if len(value) >= 8:
            assert value not in issues.to_csv() + result.flow.to_csv()


def test_a_death_date_rule_is_skipped_when_the_death_date_is_empty(tmp_path: Path, test_key: bytes,
                                                                 schema: ClinicalSchema) -> None:
    """last_followup_date not_after death_date: alive (no death date) is no problem; follow-up on the death day
    is none either."""
    assert schema.columns["last_followup_date"].not_after == ("death_date",)
    rows = [{**ROW, "death_date": ""},
            {**ROW, "patient_id": "P2", "death_date": "2024-06-01", "last_followup_date": "2024-06-01"}]
    result = _prepare(tmp_path, rows, test_key)
    assert result.issues.empty, result.issues.to_string()
    assert (result.flow["status"] == "eligible").all()


def test_a_site_that_breaks_the_pattern_is_never_published(tmp_path: Path, test_key: bytes) -> None:
    rows = [ROW, {**ROW, "site": "it01", "patient_id": "P2"}, {**ROW, "site": "Ospedale Rossi", "patient_id": "P3"}]
    result = _prepare(tmp_path, rows, test_key)
    flow = result.flow.set_index("row")
    assert list(flow["status"]) == ["eligible", "invalid", "invalid"]
    assert list(flow["site"]) == ["IT01", "", ""], "the raw cell of an invalid site is not copied"
    assert set(result.issues["site"]) == {""} and set(result.issues["column"]) == {"site"}
    published = result.flow.to_csv() + result.issues.to_csv() + result.table.to_csv()
    assert "it01" not in published and "Rossi" not in published


def test_only_rows_that_pass_validation_are_patients_of_the_dag(tmp_path: Path) -> None:
    rows = [ROW, {**ROW, "site": "it01", "patient_id": "P2"}, {**ROW, "patient_id": "P3", "ecog": "7"},
            {**ROW, "site": "IT02", "patient_id": "P4", "cdk46i_line": "2"}]  # P4: valid, ineligible
    path = tmp_path / "clinical.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    inputs = ClinicalInputs.from_specs([str(path)], SCHEMA_PATH)
    assert inputs.valid_patients(TODAY) == [("IT01", "P1"), ("IT02", "P4")]
    assert inputs.valid_patients(D(2024, 5, 1)) == [], "every last follow-up lies after that day"


def test_two_centres_exports_may_share_a_file_name(tmp_path: Path, test_key: bytes, schema: ClinicalSchema) -> None:
    """{IT01: a/export.csv, IT02: b/export.csv}: rows are told apart by centre, not by file name + row."""
    for folder, rows in (("a", [{**ROW, "site": "IT01", "cdk46i_drug": "tamoxifen"}, {**ROW, "patient_id": "P2"}]),
                         ("b", [{**ROW, "site": "IT02"}, {**ROW, "site": "IT02", "patient_id": "P2"}])):
        (tmp_path / folder).mkdir()
        pd.DataFrame(rows).to_csv(tmp_path / folder / "export.csv", index=False)
    specs = clinical_specs({"IT02": str(tmp_path / "b" / "export.csv"), "IT01": str(tmp_path / "a" / "export.csv")})
    inputs = ClinicalInputs.from_specs(specs, SCHEMA_PATH)
    result = prepare_clinical(inputs.read(), test_key, CUTOFF, schema, today=TODAY)
    assert result.issues[["source", "row", "column"]].values.tolist() == [["IT01:export.csv", 2, "cdk46i_drug"]]
    flow = result.flow
    assert list(zip(flow["source"], flow["row"], flow["status"])) == [
        ("IT01:export.csv", 2, "invalid"), ("IT01:export.csv", 3, "eligible"),
        ("IT02:export.csv", 2, "eligible"), ("IT02:export.csv", 3, "eligible")]
    assert sorted(result.table["site"]) == ["IT01", "IT02", "IT02"]
    assert inputs.valid_patients(TODAY) == [("IT01", "P2"), ("IT02", "P1"), ("IT02", "P2")]


def test_clinical_specs_from_the_config_and_their_parsing() -> None:
    assert clinical_specs("raw/clinical.csv") == ["raw/clinical.csv"]
    assert clinical_specs({"IT02": "b/x.csv", "IT01": "a/x.csv"}) == ["IT01=a/x.csv", "IT02=b/x.csv"]
    assert parse_specs(["IT01=a/x.csv", "IT02=b/x.csv"]) == (("IT01", Path("a/x.csv")), ("IT02", Path("b/x.csv")))
    assert parse_specs(["raw/clinical.csv"]) == (("", Path("raw/clinical.csv")),)
    with pytest.raises(ConfigError, match=r"one SITE=PATH per centre; given more than once: IT01"):
        parse_specs(["IT01=a/x.csv", "IT01=b/x.csv"])
    with pytest.raises(ConfigError, match=r"give one PATH, or one SITE=PATH per centre. Found: a.csv IT02=b.csv"):
        parse_specs(["a.csv", "IT02=b.csv"])


def test_every_problem_of_a_row_is_listed(tmp_path: Path, test_key: bytes) -> None:
    bad = {**ROW, "cdk46i_drug": "Ibrance", "ecog": "7", "birth_date": "1960/05/01"}
    result = _prepare(tmp_path, [bad], test_key)
    assert list(result.issues["column"]) == ["birth_date", "cdk46i_drug", "ecog"], "in schema order"
    assert result.table.empty


def test_missing_required_column_is_named(tmp_path: Path, schema: ClinicalSchema) -> None:
    path = tmp_path / "export.csv"
    pd.DataFrame([ROW]).drop(columns=["cdk46i_start_date"]).to_csv(path, index=False)
    with pytest.raises(ClinicalDataError, match=r"export.csv: required column\(s\) \['cdk46i_start_date'\]"):
        read_exports([("", path)], schema, ClinicalMapping())


def test_an_optional_column_may_be_absent(tmp_path: Path, test_key: bytes) -> None:
    rows = [{k: v for k, v in ROW.items() if k != "menopausal_status"}]
    result = _prepare(tmp_path, rows, test_key)
    assert result.issues.empty and result.table["menopausal_status"].isna().all()


# ------------------------------------------------------------------------------------------------ per-centre mapping

def test_a_centre_export_with_its_own_names_dates_and_codes_fits_by_mapping(tmp_path: Path, test_key: bytes,
                                                                          schema: ClinicalSchema) -> None:
    canonical = tmp_path / "IT01.csv"
    pd.DataFrame([{**ROW, "site": "IT01"}]).to_csv(canonical, index=False)
    italian = {"codice_paziente": "P9", "data_nascita": "01/05/1960", "data_diagnosi_avanzata": "01/11/2023",
               "data_inizio": "01/01/2024", "linea": "1", "farmaco": "Kisqali", "endocrino": "fulvestrant",
               "menopausa": "post", "setting": "de_novo", "viscerale": "si", "solo_osso": "no", "ecog": "0",
               "data_progressione": "21/01/2024", "data_morte": "", "ultimo_follow_up": "01/03/2024"}
    other = tmp_path / "IT02.csv"
    pd.DataFrame([italian]).to_csv(other, index=False)  # no site column: the centre comes from the config key
    mapping = {"IT02": {"columns": {"patient_id": "codice_paziente", "birth_date": "data_nascita",
                                    "advanced_diagnosis_date": "data_diagnosi_avanzata",
                                    "cdk46i_start_date": "data_inizio", "cdk46i_line": "linea",
                                    "cdk46i_drug": "farmaco",
                                    "endocrine_partner": "endocrino", "menopausal_status": "menopausa",
                                    "disease_setting": "setting", "visceral_disease": "viscerale",
                                    "bone_only_disease": "solo_osso", "progression_date": "data_progressione",
                                    "death_date": "data_morte", "last_followup_date": "ultimo_follow_up"},
                        "date_format": "%d/%m/%Y",
                        "values": {"cdk46i_drug": {"Kisqali": "ribociclib"}, "visceral_disease": {"si": "yes"}}}}
    inputs = ClinicalInputs.from_specs([f"IT01={canonical}", f"IT02={other}"], SCHEMA_PATH, mapping)
    result = prepare_clinical(inputs.read(), test_key, CUTOFF, schema, today=TODAY)
    assert result.issues.empty, result.issues.to_string()
    it02 = result.table[result.table["site"] == "IT02"].iloc[0]
    assert (it02["cdk46i_drug"], bool(it02["visceral_disease"]), it02["pfs_days"], it02["os_days"]) == \
        ("ribociclib", True, 20, 60)
    # the same centre's file with a date in another format names that centre's format
    pd.DataFrame([{**italian, "data_inizio": "2024-01-01"}]).to_csv(other, index=False)
    result = prepare_clinical(inputs.read(), test_key, CUTOFF, schema, today=TODAY)
    assert result.issues[["source", "row", "column"]].values.tolist() == [["IT02:IT02.csv", 2, "cdk46i_start_date"]]
    assert result.issues["problem"].item() == "not a date in the format DD/MM/YYYY (%d/%m/%Y)"


def test_a_per_centre_export_holding_another_centre_is_refused_by_row(tmp_path: Path, test_key: bytes,
                                                                     schema: ClinicalSchema) -> None:
    path = tmp_path / "IT02.csv"
    pd.DataFrame([{**ROW, "site": "IT02"}, {**ROW, "site": "IT01", "patient_id": "P2"}]).to_csv(path, index=False)
    inputs = ClinicalInputs.from_specs([f"IT02={path}"], SCHEMA_PATH)
    result = prepare_clinical(inputs.read(), test_key, CUTOFF, schema, today=TODAY)
    assert result.issues[["row", "column", "problem"]].values.tolist() == [
        [3, "site", "not the centre of this per-centre export"]]


def test_mapping_errors_name_the_centre_and_column(tmp_path: Path, schema: ClinicalSchema) -> None:
    path = tmp_path / "IT02.csv"
    pd.DataFrame([ROW]).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"clinical_mapping.IT02: 'start_date' is not a column of the clinical"):
        ClinicalMapping.from_config({"IT02": {"columns": {"start_date": "x"}}}, schema)
    with pytest.raises(ConfigError, match=r"clinical_mapping.IT02.date_format: not a strftime date format"):
        ClinicalMapping.from_config({"IT02": {"date_format": "%d/%m"}}, schema)
    mapping = ClinicalMapping.from_config({"IT02": {"columns": {"cdk46i_start_date": "data_inizio"}}}, schema)
    with pytest.raises(ClinicalDataError, match=r"IT02.csv: the clinical_mapping names column\(s\) 'data_inizio' "
                                                r"\(mapped to cdk46i_start_date\) that the export lacks"):
        read_exports([("IT02", path)], schema, mapping)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"it02": {"columns": {}}}, "does not match"),                      # centre codes are upper case
        ({"IT02": {"colums": {}}}, "Additional properties"),                 # typo in a key
        ({"IT02": {"date_format": "dd/mm/yyyy"}}, "does not match"),        # not a strftime format
        ({"IT02": {"columns": {"Patient ID": "x"}}}, "does not match"),      # canonical names are snake_case
    ],
)
def test_the_config_schema_validates_the_mapping(mapping, message) -> None:
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["clinical_mapping"] = mapping
    with pytest.raises(Exception, match=message):
        validate(config, schema=str(REPO / "workflow" / "schemas" / "config.schema.yaml"))


# ------------------------------------------------------------------------------------------------ the schema file

def _schema_with(tmp_path: Path, column: str, **changes) -> Path:
    data = yaml.safe_load(SCHEMA_PATH.read_text())
    data["columns"][column].update(changes)
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_schema_refuses_a_post_baseline_covariate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"column progression_date: only baseline, non-date columns may be "
                                          r"published as covariates.*leak the future"):
        ClinicalSchema.load(_schema_with(tmp_path, "progression_date", covariate=True))


def test_a_schema_written_before_the_outcome_rename_is_told_the_new_word(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"column death_date: time_basis must be one of identifier, baseline, outcome\. "
                                          r"Found: 'post_baseline' \(post_baseline is now called outcome\)"):
        ClinicalSchema.load(_schema_with(tmp_path, "death_date", time_basis="post_baseline"))


def test_schema_refuses_unknown_keys_and_bad_types(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"column ecog: unknown key\(s\) \['maximun'\]"):
        ClinicalSchema.load(_schema_with(tmp_path, "ecog", maximun=4))
    with pytest.raises(ConfigError, match=r"column cdk46i_start_date must be declared with type date"):
        ClinicalSchema.load(_schema_with(tmp_path, "cdk46i_start_date", type="string"))
    with pytest.raises(ConfigError, match=r"column death_date: not_before/not_after must name date columns"):
        ClinicalSchema.load(_schema_with(tmp_path, "death_date", not_before=["ecog"]))
    data = yaml.safe_load(SCHEMA_PATH.read_text())
    del data["columns"]["site"]["pattern"]
    (tmp_path / "no_pattern.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"column site: a pattern is needed"):
        ClinicalSchema.load(tmp_path / "no_pattern.yaml")


def test_the_declared_covariates_are_baseline(schema: ClinicalSchema) -> None:
    assert schema.covariates == ("cdk46i_drug", "endocrine_partner", "menopausal_status", "disease_setting",
                                 "visceral_disease", "bone_only_disease", "ecog")
    post = {n for n, r in schema.columns.items() if r.time_basis == "outcome"}
    assert post == {"progression_date", "death_date", "last_followup_date"}


# ------------------------------------------------------------------------------------------------ eligibility

@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"cdk46i_start_date": "2025-04-01", "advanced_diagnosis_date": "2025-03-01",
          "last_followup_date": "2025-05-01"},
         "CDK4/6i started less than 3 months before the data cut-off"),
        ({"cdk46i_line": "2"}, "CDK4/6i given as line 2 of therapy, not first line"),
        ({"endocrine_partner": ""}, "no endocrine partner recorded: CDK4/6i not given with endocrine therapy"),
    ],
)
def test_each_exclusion_reason_is_reported(tmp_path: Path, test_key: bytes, changes, reason) -> None:
    result = _prepare(tmp_path, [ROW, {**ROW, "patient_id": "P2", **changes}], test_key)
    assert result.issues.empty, "ineligible is not invalid"
    flow = result.flow.set_index("row")
    assert (flow.loc[3, "status"], flow.loc[3, "reason"]) == ("ineligible", reason)
    assert flow.loc[2, "status"] == "eligible"
    assert list(result.table["patient"]) == [flow.loc[2, "patient"]]


def test_eligibility_boundary_and_rules_from_config(tmp_path: Path, test_key: bytes) -> None:
    exactly = {**ROW, "patient_id": "P2", "cdk46i_start_date": "2025-03-30", "advanced_diagnosis_date": "2025-03-01",
               "last_followup_date": "2025-04-01"}  # 2025-03-30 + 3 months = 2025-06-30 = the cut-off
    one_day_late = {**exactly, "patient_id": "P3", "cdk46i_start_date": "2025-03-31"}
    result = _prepare(tmp_path, [exactly, one_day_late], test_key)
    assert list(result.flow["status"]) == ["eligible", "ineligible"]
    relaxed = Eligibility.from_config({"min_followup_months": 0, "first_line_only": False})
    result = _prepare(tmp_path, [one_day_late, {**ROW, "cdk46i_line": "3"}], test_key, rules=relaxed)
    assert list(result.flow["status"]) == ["eligible", "eligible"]
    with pytest.raises(ConfigError, match=r"eligibility: unknown key\(s\) \['min_follow_up'\]"):
        Eligibility.from_config({"min_follow_up": 3})


def test_eligibility_ignores_what_happened_after_the_start(tmp_path: Path, test_key: bytes) -> None:
    """Early death or short actual follow-up never excludes a patient (that would bias survival)."""
    early_death = {**ROW, "patient_id": "P2", "death_date": "2024-01-05", "last_followup_date": "2024-01-05"}
    lost = {**ROW, "patient_id": "P3", "last_followup_date": "2024-01-02"}
    result = _prepare(tmp_path, [early_death, lost], test_key)
    assert (result.flow["status"] == "eligible").all() and len(result.table) == 2


# ------------------------------------------------------------------------------------------------ export encoding

def _write_export(path: Path, rows: list[dict[str, str]], encoding: str) -> None:
    """The export as a spreadsheet writes it: ``rows`` as CSV text encoded in ``encoding`` (real bytes)."""
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(row[c] for c in header) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-8", "utf-8-sig"])
def test_an_italian_export_is_read_in_its_encoding(tmp_path: Path, test_key: bytes, caplog,
                                                   encoding: str) -> None:
    """'Forlì', 'Nicolò' (and, in cp1252, a curly apostrophe) from an Italian spreadsheet: read, never a traceback."""
    path = tmp_path / "clinical.csv"
    name = "Nicolò D’Amico" if encoding == "cp1252" else "Nicolò"
    rows = [{**ROW, "patient_id": "Forlì-1"}, {**ROW, "patient_id": name}]
    _write_export(path, rows, encoding)
    if encoding in ("latin-1", "cp1252"):
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")  # the bytes really are not UTF-8
    inputs = ClinicalInputs.from_specs([str(path)], SCHEMA_PATH)
    with caplog.at_level("INFO", logger="palmares_radiomics.clinical"):
        table = inputs.read()
    assert sorted(table["patient_id"]) == sorted(["Forlì-1", name])
    expected = "cp1252" if encoding in ("latin-1", "cp1252") else "UTF-8"
    assert any(f"read as {expected}" in r.getMessage() and "clinical.csv" in r.getMessage() for r in caplog.records)
    result = prepare_clinical(table, test_key, CUTOFF, inputs.schema, today=TODAY)
    assert len(result.table) == 2 and result.issues.empty


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"   \n"])
def test_an_empty_export_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "clinical.csv"
    path.write_bytes(content)
    inputs = ClinicalInputs.from_specs([f"IT01={path}"], SCHEMA_PATH)
    with pytest.raises(ClinicalDataError, match=r"the clinical export IT01:clinical.csv is empty: .*header"):
        inputs.read()


def test_a_header_only_export_gives_no_patient_and_says_so(tmp_path: Path, test_key: bytes, caplog) -> None:
    path = tmp_path / "clinical.csv"
    path.write_bytes((",".join(ROW) + "\r\n").encode("utf-8"))
    inputs = ClinicalInputs.from_specs([str(path)], SCHEMA_PATH)
    with caplog.at_level("WARNING", logger="palmares_radiomics.clinical"):
        table = inputs.read()
        assert inputs.valid_patients(TODAY) == []
    assert table.empty
    assert any("clinical.csv has a header but no data rows" in r.getMessage() for r in caplog.records)
    result = prepare_clinical(table, test_key, CUTOFF, inputs.schema, today=TODAY)
    assert result.table.empty and result.flow.empty and result.issues.empty
    assert list(result.table.columns) == list(output_columns(inputs.schema)["column"])
