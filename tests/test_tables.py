"""The modelling tables: lesion → patient aggregation, the dictionary (with time basis), the failure table, the
joined table on a small work area written to disk, the PET stage's extra columns, and the leakage guard."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

from conftest import REPO
from palmares_radiomics.errors import ConfigError
from palmares_radiomics.clinical import (
    OUTCOME_COLUMNS,
    ClinicalInputs,
    ClinicalSchema,
    output_columns,
    prepare_clinical,
)
from palmares_radiomics.index import earl_status
from palmares_radiomics.records import ORGANS, LesionSpec
from palmares_radiomics.columns import PET_PATIENT_COLUMNS
from palmares_radiomics.files import read_rows, write_rows
from palmares_radiomics.stages import LesionOutcome, StageStatus, read_status, write_status
from palmares_radiomics.stages.features import pet_lesion_metrics
from palmares_radiomics.stages.image import scanner_details
from palmares_radiomics.tables import (
    aggregate_patients,
    dictionary,
    failure_table,
    natural_key,
    read_statuses,
    run_tables,
)

SCHEMA = REPO / "config" / "clinical_schema.yaml"
FEATURE = "firstorder_Mean_Q4LE"  # an IBSI-coded first-order feature (code Q4LE)
OTHER = "glcm_MCC_ITBB"         # a feature without an IBSI definition (3D-averaged texture)


def _lesions() -> pd.DataFrame:
    return pd.DataFrame({
        "patient": ["PAL2-A", "PAL2-A", "PAL2-A", "PAL2-B"], "site": "IT01",
        "modality": ["ct", "ct", "pet", "ct"], "lesion_id": ["L1", "L2", "L1", "L1"],
        "organ": ["liver", "bone", "liver", "lung"], "volume_ml": [2.0, 5.0, 2.1, 1.0],
        FEATURE: [10.0, 20.0, 3.5, 30.0], OTHER: [0.1, np.nan, 0.3, 0.4],
    })


def _clinical() -> pd.DataFrame:
    return pd.DataFrame({"patient": ["PAL2-A", "PAL2-B", "PAL2-C"], "site": "IT01", "os_days": [100, 200, 300],
                         "os_event": [True, False, True], "pfs_days": [50, 200, 100],
                         "pfs_event": [True, False, True]})


def _clinical_columns() -> pd.DataFrame:
    return output_columns(ClinicalSchema.load(SCHEMA))


ALL = ("count", "largest", "volume_weighted_mean", "min", "max")


def test_aggregates_match_hand_computed_values() -> None:
    patients = aggregate_patients(_lesions(), _clinical(), ["ct", "pet"], aggregates=ALL)
    assert list(patients["patient"]) == ["PAL2-A", "PAL2-B"], "patients without any imaged lesion are left out"
    a = patients.set_index("patient").loc["PAL2-A"]
    assert a["ct_lesion_count"] == 2 and a["pet_lesion_count"] == 1
    assert a["ct_total_volume_ml"] == 7.0
    assert a[f"ct_largest_{FEATURE}"] == 20.0, "the 5 ml bone lesion is the largest"
    assert math.isnan(a[f"ct_largest_{OTHER}"]), "the largest lesion's own value, even when missing"
    assert a[f"ct_vwmean_{FEATURE}"] == pytest.approx((2 * 10 + 5 * 20) / 7)
    assert a[f"ct_vwmean_{OTHER}"] == pytest.approx(0.1), "weights of lesions without a value are left out"
    assert (a[f"ct_min_{FEATURE}"], a[f"ct_max_{FEATURE}"]) == (10.0, 20.0)
    assert (a[f"ct_min_{OTHER}"], a[f"ct_max_{OTHER}"]) == (0.1, 0.1)
    assert a[f"pet_vwmean_{FEATURE}"] == 3.5
    b = patients.set_index("patient").loc["PAL2-B"]
    assert b["pet_lesion_count"] == 0 and b["pet_total_volume_ml"] == 0.0 and math.isnan(b[f"pet_max_{FEATURE}"])


def test_only_the_configured_aggregates_are_written() -> None:
    patients = aggregate_patients(_lesions(), _clinical(), ["ct", "pet"], aggregates=("volume_weighted_mean",))
    derived = [c for c in patients.columns if c.startswith(("ct_", "pet_"))]
    assert sorted(derived) == sorted(f"{m}_vwmean_{f}" for m in ("ct", "pet") for f in (FEATURE, OTHER))
    assert list(patients["patient"]) == ["PAL2-A", "PAL2-B"]
    with pytest.raises(ConfigError, match=r"aggregates must be among .* Found: \['median'\]"):
        aggregate_patients(_lesions(), _clinical(), ["ct"], aggregates=("median",))


def test_dictionary_covers_every_column_once_with_codes_and_time_basis() -> None:
    lesions = _lesions()
    patients = aggregate_patients(lesions, _clinical(), ["ct", "pet"], aggregates=ALL)
    table = dictionary(lesions, patients, ["ct", "pet"], _clinical_columns())
    assert list(table.columns) == ["column", "table", "description", "unit", "dtype", "ibsi_code", "source_stage",
                                   "time_basis"]
    assert not table.duplicated(["column", "table"]).any()
    for name, frame in (("lesions", lesions), ("patients", patients)):
        assert sorted(table.loc[table["table"] == name, "column"]) == sorted(frame.columns)
    codes = dict(zip(table["column"], table["ibsi_code"]))
    assert codes[FEATURE] == "Q4LE" and codes[f"ct_vwmean_{FEATURE}"] == "Q4LE"
    assert codes[OTHER] == "non-IBSI"
    assert codes["os_days"] == ""
    described = dict(zip(table["column"], table["description"]))
    assert described[f"pet_max_{FEATURE}"].startswith("maximum over PET lesions: ")
    assert described[f"ct_vwmean_{FEATURE}"].startswith("volume-weighted mean over CT lesions (weights volume_ml)")
    assert (table["description"].str.len() > 5).all()
    with pytest.raises(ValueError, match="patients column ct_median_x is neither declared nor a ct aggregate"):
        dictionary(lesions, patients.assign(ct_median_x=1.0), ["ct", "pet"], _clinical_columns())


def test_failure_table_lists_the_first_failing_stage_per_patient_and_modality() -> None:
    """README: failures.csv lists the first stage that failed for each patient and modality (the skipped
    stages after it are not repeated), a modality's de-identification problem, and one row per failed lesion."""
    statuses = [StageStatus("deid", "PAL2-A", "", "ok", details={"modalities": {"ct": {"status": "ok"},
                                                                              "pet": {"status": "ok"}}}),
                StageStatus("image", "PAL2-A", "pet", "failed", "SUV refused: no patient weight"),
                StageStatus("mask", "PAL2-A", "pet", "skipped", "image: SUV refused: no patient weight"),
                StageStatus("features", "PAL2-A", "pet", "skipped", "image: SUV refused: no patient weight"),
                StageStatus("image", "PAL2-A", "ct", "ok"), StageStatus("mask", "PAL2-A", "ct", "ok"),
                StageStatus("features", "PAL2-A", "ct", "ok", lesions=(
                    LesionOutcome("L1", "liver", "ok"), LesionOutcome("L10", "bone", "failed", "too small"),
                    LesionOutcome("L2", "lung", "failed", "empty"))),
                StageStatus("deid", "PAL2-B", "", "ok", details={"modalities": {
                    "ct": {"status": "failed", "reason": "deid: file 3 of 40 of the selected series: burned-in"}}}),
                StageStatus("image", "PAL2-B", "ct", "skipped", "deid: file 3 of 40 of the selected series: burned-in")]
    table = failure_table(statuses, {"PAL2-A": "IT01", "PAL2-B": "IT02"})
    assert list(zip(table["patient"], table["modality"], table["stage"], table["lesion_id"])) == [
        ("PAL2-A", "ct", "features", "L2"), ("PAL2-A", "ct", "features", "L10"), ("PAL2-A", "pet", "image", ""),
        ("PAL2-B", "ct", "deid", "")]
    assert table.loc[3, "reason"] == "file 3 of 40 of the selected series: burned-in"
    assert list(table["site"]) == ["IT01", "IT01", "IT01", "IT02"]


def test_natural_lesion_order() -> None:
    assert sorted(["L10", "L2", "L1", "L11"], key=natural_key) == ["L1", "L2", "L10", "L11"]


# ------------------------------------------------------------------------------------------------ a work area on disk

BASE = {"site": "IT01", "patient_id": "P1", "birth_date": "1960-05-01", "advanced_diagnosis_date": "2023-11-01",
        "cdk46i_start_date": "2024-01-01", "cdk46i_line": "1", "cdk46i_drug": "ribociclib",
        "endocrine_partner": "fulvestrant", "menopausal_status": "post", "disease_setting": "de_novo",
        "visceral_disease": "no", "bone_only_disease": "yes", "ecog": "1", "progression_date": "",
        "death_date": "", "last_followup_date": "2024-06-01"}
EXPORT = [
    BASE,                                                                             # eligible, imaged
    {**BASE, "patient_id": "P2", "site": "IT02", "progression_date": "2024-03-01"},  # eligible, imaged
    {**BASE, "patient_id": "P3", "cdk46i_line": "2"},                                 # ineligible, imaged
    {**BASE, "patient_id": "P4", "cdk46i_drug": "tamoxifen"},                         # invalid (stale images)
    {**BASE, "patient_id": "P5"},                                                     # eligible, segmentation failed
]
SCANNER = {"manufacturer": "SIEMENS", "model": "Biograph Vision 600", "kernel": "", "reconstruction": "OSEM 3I21S",
           "earl": "EARL2", "slice_thickness_mm": 4.0, "pixel_spacing_mm": 4.0}


def _clinical_stage(root: Path, export: list[dict[str, str]], key: bytes) -> Path:
    """What the clinical stage writes, from the real clinical module."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "clinical.csv"
    pd.DataFrame(export).to_csv(path, index=False)
    inputs = ClinicalInputs.from_specs([str(path)], SCHEMA)
    result = prepare_clinical(inputs.read(), key, dt.date(2025, 6, 30), inputs.schema, today=dt.date(2025, 9, 1))
    out = root / "work" / "clinical"
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_parquet(out / "clinical.parquet", index=False)
    for name, frame in (("issues", result.issues), ("flow", result.flow), ("columns", result.columns)):
        frame.to_csv(out / f"{name}.csv", index=False)
    return out


def _imaging_stages(status_dir: Path, patient: str, site: str, ok: bool, value: float) -> None:
    """Status records of one patient as the DAG writes them: one PET lesion with features, or a mask failure."""
    write_status(status_dir / "deid" / f"{patient}.json", StageStatus("deid", patient, "", "ok",
                                                                      details={"site": site}))
    write_status(status_dir / "image" / f"{patient}_pet.json",
                 StageStatus("image", patient, "pet", "ok", details={"scanner": SCANNER}))
    if not ok:
        write_status(status_dir / "mask" / f"{patient}_pet.json",
                     StageStatus("mask", patient, "pet", "failed", "the SEG references another series"))
        write_status(status_dir / "features" / f"{patient}_pet.json",
                     StageStatus("features", patient, "pet", "skipped", "mask: the SEG references another series"))
        return
    write_status(status_dir / "mask" / f"{patient}_pet.json", StageStatus(
        "mask", patient, "pet", "ok", details={"lesions": [{"lesion_id": "L1", "volume_ml": 2.0}]}))
    table = status_dir.parent / "features" / f"{patient}_pet.json"
    write_rows([{"lesion_id": "L1", "organ": "liver", "pet_suvmax": value, FEATURE: value}], table)
    pet = {"pet_total_mtv_suv2p5_ml": 2.0, "pet_hottest_suvmax": value, "pet_liver_lesion_count": 1,
           "pet_bone_lesion_count": 0}
    write_status(status_dir / "features" / f"{patient}_pet.json", StageStatus(
        "features", patient, "pet", "ok", outputs={"table": str(table)}, details={"patient_pet": pet}))


def _work_area(root: Path, export: list[dict[str, str]], key: bytes) -> tuple[Path, dict[str, str]]:
    clinical_dir = _clinical_stage(root, export, key)
    flow = pd.read_csv(clinical_dir / "flow.csv")
    who = dict(zip(flow["row"].map(lambda r: f"P{r - 1}"), flow["patient"]))
    status_dir = root / "work" / "status"
    for number, (name, patient) in enumerate(who.items(), start=1):
        _imaging_stages(status_dir, patient, "IT02" if name == "P2" else "IT01", ok=name != "P5", value=float(number))
    return clinical_dir, who


def test_a_study_resumed_across_the_sul_rename_reads_the_former_names(tmp_path: Path, test_key: bytes) -> None:
    """Feature records written before pet_sulmax became pet_sul_max (fe0bf0e) are read under the new names: the
    tables stage runs and publishes the registry's names, with no patient job rerun."""
    clinical_dir, who = _work_area(tmp_path, EXPORT, test_key)
    status_dir = tmp_path / "work" / "status"
    for patient in who.values():
        path = status_dir / "features" / f"{patient}_pet.json"
        status = read_status(path)
        if not status.ok:
            continue
        rows = read_rows(status.outputs["table"])
        write_rows([{**row, "pet_sulmax": 2.0 * row["pet_suvmax"]} for row in rows], Path(status.outputs["table"]))
        write_status(path, dataclasses.replace(status, details={
            **status.details, "patient_pet": {**status.details["patient_pet"], "pet_hottest_sulmax": 4.0}}))
    run_tables(status_dir, clinical_dir, ["pet"], tmp_path / "results", ALL)
    lesions = pd.read_parquet(tmp_path / "results" / "features" / "lesions.parquet")
    patients = pd.read_parquet(tmp_path / "results" / "tables" / "patients.parquet")
    assert (lesions["pet_sul_max"] == 2.0 * lesions["pet_suvmax"]).all() and "pet_sulmax" not in lesions
    assert (patients["pet_hottest_sul_max"] == 4.0).all() and "pet_hottest_sulmax" not in patients


def test_the_joined_table_has_exactly_the_eligible_patients_with_images(tmp_path: Path, test_key: bytes) -> None:
    clinical_dir, who = _work_area(tmp_path, EXPORT, test_key)
    stale = "PAL2-STALE00000"  # removed from the clinical export, its work files left behind
    _imaging_stages(tmp_path / "work" / "status", stale, "IT01", ok=True, value=99.0)
    counts = run_tables(tmp_path / "work" / "status", clinical_dir, ["pet"], tmp_path / "results", ALL)
    results = tmp_path / "results"
    patients = pd.read_parquet(results / "tables" / "patients.parquet")
    lesions = pd.read_parquet(results / "features" / "lesions.parquet")
    assert sorted(patients["patient"]) == sorted([who["P1"], who["P2"]]), "eligible and imaged only"
    assert counts["patients"] == 2
    assert sorted(lesions["patient"]) == sorted(patients["patient"]), \
        "one cohort: not the ineligible P3, the invalid P4 or the stale patient"
    assert stale not in (results / "qc" / "failures.csv").read_text()
    flow = pd.read_csv(results / "qc" / "patient_flow.csv", keep_default_na=False).set_index("patient")
    assert flow.loc[who["P3"], "status"] == "ineligible" and "not first line" in flow.loc[who["P3"], "reason"]
    assert flow.loc[who["P4"], "status"] == "invalid" and "unknown CDK4/6 inhibitor" in flow.loc[who["P4"], "reason"]
    assert flow.loc[who["P5"], "reason"] == "no imaged lesion with features (see qc/failures.csv)"
    assert flow["in_patients_table"].astype(str).eq("True").sum() == 2
    failures = pd.read_csv(results / "qc" / "failures.csv")
    assert set(failures["patient"]) == {who["P5"]}, "an invalid row is no patient of the DAG: its stale files unread"
    # scanner / batch variables from the image stage, PET totals and per-organ counts from the PET stage
    assert (lesions[["manufacturer", "reconstruction", "earl"]].drop_duplicates().values.tolist()
            == [["SIEMENS", "OSEM 3I21S", "EARL2"]])
    assert lesions["slice_thickness_mm"].eq(4.0).all() and lesions["pixel_spacing_mm"].eq(4.0).all()
    p2 = patients.set_index("patient").loc[who["P2"]]
    assert (p2["pet_hottest_suvmax"], p2["pet_liver_lesion_count"], p2["pet_bone_lesion_count"]) == (2.0, 1, 0)
    assert p2["pfs_days"] == 60 and bool(p2["pfs_event"])
    dictionary_csv = pd.read_csv(results / "tables" / "dictionary.csv", keep_default_na=False)
    for name, frame in (("lesions", lesions), ("patients", patients)):
        described = dictionary_csv.loc[dictionary_csv["table"] == name, "column"]
        assert sorted(described) == sorted(frame.columns) and not described.duplicated().any()


def test_the_lesion_table_and_combat_hold_the_patient_table_cohort(tmp_path: Path, test_key: bytes) -> None:
    """An ineligible patient's lesions are in neither table, so lesion-level ComBat is fitted on the same cohort."""
    from palmares_radiomics.harmonise import CombatSettings, run_harmonise

    clinical_dir, who = _work_area(tmp_path, EXPORT, test_key)
    run_tables(tmp_path / "work" / "status", clinical_dir, ["pet"], tmp_path / "results", ALL)
    results = tmp_path / "results"
    lesions = pd.read_parquet(results / "features" / "lesions.parquet")
    assert who["P3"] not in set(lesions["patient"]) and who["P4"] not in set(lesions["patient"])
    run_harmonise(results, ["pet"], CombatSettings(covariates=("age_at_start_years",)))
    combat = pd.read_parquet(results / "features" / "lesions_combat.parquet")
    record = pd.read_csv(results / "qc" / "combat.csv", keep_default_na=False).set_index("table")
    assert set(combat["patient"]) == set(pd.read_parquet(results / "tables" / "patients.parquet")["patient"])
    assert record.loc["lesions", "rows"] == 2 and "missing covariate" not in record.loc["lesions", "reason"]


def test_a_site_that_breaks_the_pattern_reaches_no_qc_table(tmp_path: Path, test_key: bytes) -> None:
    export = [BASE, {**BASE, "patient_id": "P2", "site": "it01"}]
    clinical_dir, who = _work_area(tmp_path, export, test_key)
    _imaging_stages(tmp_path / "work" / "status", who["P2"], "it01", ok=False, value=1.0)  # a stale earlier run
    run_tables(tmp_path / "work" / "status", clinical_dir, ["pet"], tmp_path / "results", ALL)
    qc = tmp_path / "results" / "qc"
    for name in ("clinical_issues.csv", "patient_flow.csv", "failures.csv"):
        assert "it01" not in (qc / name).read_text(), name
    flow = pd.read_csv(qc / "patient_flow.csv", keep_default_na=False).set_index("patient")
    assert (flow.loc[who["P1"], "site"], flow.loc[who["P2"], "site"]) == ("IT01", "")
    assert flow.loc[who["P2"], "status"] == "invalid"


def test_no_date_and_no_local_identifier_reaches_the_tables(tmp_path: Path, test_key: bytes) -> None:
    clinical_dir, _ = _work_area(tmp_path, EXPORT, test_key)
    run_tables(tmp_path / "work" / "status", clinical_dir, ["pet"], tmp_path / "results", ALL)
    iso = re.compile(r"\d{4}-\d{2}-\d{2}")
    for path in (tmp_path / "results").rglob("*"):
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            assert not any(pd.api.types.is_datetime64_any_dtype(frame[c]) for c in frame.columns), path
            assert not any("date" in c for c in frame.columns), path
            if "patient" in frame:
                assert frame["patient"].str.fullmatch(r"PAL2-[0-9A-Z]{10}").all(), path
        if path.is_file():
            text = path.read_text(errors="replace") if path.suffix == ".csv" else ""
            assert not iso.search(text), (path, iso.search(text))
            assert not re.search(r"\bP[1-5]\b", text), path


# ------------------------------------------------------------------------------------------------ leakage guard

def test_only_the_declared_outcome_columns_use_post_baseline_information(tmp_path: Path, test_key: bytes) -> None:
    """Static: the dictionary gives every column a time basis; only the outcome columns are post-baseline."""
    clinical_dir, _ = _work_area(tmp_path, EXPORT, test_key)
    run_tables(tmp_path / "work" / "status", clinical_dir, ["pet"], tmp_path / "results", ALL)
    table = pd.read_csv(tmp_path / "results" / "tables" / "dictionary.csv", keep_default_na=False)
    assert set(table["time_basis"]) <= {"identifier", "baseline", "outcome"}
    assert sorted(table.loc[table["time_basis"] == "outcome", "column"]) == sorted(OUTCOME_COLUMNS)
    assert set(table.loc[table["time_basis"] == "identifier", "column"]) <= {"patient", "site", "modality", "lesion_id"}
    clinical = table[table["source_stage"] == "clinical"].set_index("column")["time_basis"]
    schema = ClinicalSchema.load(SCHEMA)
    for column in schema.covariates:  # a published covariate is declared baseline in the clinical schema
        assert clinical[column] == schema.columns[column].time_basis == "baseline"


def test_changing_post_baseline_dates_changes_only_the_outcome_columns(tmp_path: Path, test_key: bytes) -> None:
    """Behavioural: move every progression, death and follow-up date; only os/pfs columns may change."""
    changed = [{**row, "progression_date": "2024-02-15", "death_date": "2024-04-01", "last_followup_date": "2024-04-01"}
               for row in EXPORT]
    tables = []
    for name, export in (("before", EXPORT), ("after", changed)):
        clinical_dir, _ = _work_area(tmp_path / name, export, test_key)
        run_tables(tmp_path / name / "work" / "status", clinical_dir, ["pet"], tmp_path / name / "results", ALL)
        tables.append(pd.read_parquet(tmp_path / name / "results" / "tables" / "patients.parquet"))
    before, after = tables
    assert list(before.columns) == list(after.columns) and list(before["patient"]) == list(after["patient"])
    differs = [c for c in before.columns if not before[c].equals(after[c])]
    assert differs and set(differs) <= set(OUTCOME_COLUMNS), differs
    assert after["os_event"].all() and after["pfs_event"].all()


# ------------------------------------------------------------------------------------------------ PET stage extras

def test_pet_stage_adds_sul_suvbsa_and_per_organ_metrics() -> None:
    suv = np.full((20, 20, 20), 1.0)
    labels = np.zeros((20, 20, 20), dtype=np.uint16)
    labels[3:6, 3:6, 3:6], suv[3:6, 3:6, 3:6] = 1, 6.0      # liver lesion, 27 voxels of SUVbw 6
    labels[12:16, 12:16, 12:16], suv[12:16, 12:16, 12:16] = 2, 4.0  # bone lesion, 64 voxels of SUVbw 4
    image, label_map = sitk.GetImageFromArray(suv), sitk.GetImageFromArray(labels)
    for im in (image, label_map):
        im.SetSpacing((2.0, 2.0, 2.0))
    lesions = [LesionSpec("L1", "pet", 1, "liver"), LesionSpec("L2", "pet", 2, "bone")]
    card = {"suvbw_scale_factor": 2.0, "sul_scale_factor": 1.4, "suvbsa_scale_factor": None,
            "inputs": {"weight_kg": 70.0, "height_m": 1.70}}
    status = StageStatus("image", "PAL2-A", "pet", "ok", details={"suv_card": card,
                                                                  "suv_normalisations": ["sul", "suvbsa"]})
    per_lesion, patient = pet_lesion_metrics(image, label_map, lesions, status)
    assert per_lesion["L1"]["pet_suvmax"] == 6.0
    assert per_lesion["L1"]["pet_sul_max"] == pytest.approx(6.0 * 0.7), "SUL = SUVbw x LBM/weight (factor ratio)"
    assert per_lesion["L2"]["pet_sul_mean"] == pytest.approx(4.0 * 0.7)
    assert per_lesion["L1"]["pet_suvbsa_max"] is None, "requested but not computable: empty, reason in suv_checks"
    assert patient["pet_hottest_sul_max"] == pytest.approx(4.2)
    assert (patient["pet_liver_lesion_count"], patient["pet_bone_lesion_count"], patient["pet_lung_lesion_count"]) \
        == (1, 1, 0)
    assert patient["pet_liver_total_mtv_suv2p5_ml"] == pytest.approx(27 * 8 / 1000)
    assert patient["pet_bone_hottest_suvmax"] == 4.0 and patient["pet_lung_hottest_suvmax"] is None
    assert patient["pet_liver_dmax_mm"] == 0.0
    assert all(c in PET_PATIENT_COLUMNS for c in patient), "every PET patient column is in the column registry"
    assert {f"pet_{o}_lesion_count" for o in ORGANS} <= set(patient)
    plain = StageStatus("image", "PAL2-A", "pet", "ok", details={"suv_card": card})
    assert not any("sul" in c for c in pet_lesion_metrics(image, label_map, lesions, plain)[1]), \
        "SUVbw only unless configured"


@pytest.mark.parametrize(("texts", "expected"), [
    (("OSEM 3I21S EARL2", ""), "EARL2"), (("PSF+TOF", "WB EARL 1"), "EARL1"), (("OSEM earl",), "EARL"),
    (("OSEM 3I21S", "PET AC"), ""), (("PEARLS",), ""),
])
def test_earl_status_is_read_from_header_text(texts, expected) -> None:
    assert earl_status(*texts) == expected


def test_scanner_details_fill_the_batch_variables(tmp_path: Path) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = PositronEmissionTomographyImageStorage, generate_uid()
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "PT", "SIEMENS", "Biograph Vision 600"
    ds.ReconstructionMethod, ds.ConvolutionKernel = "PSF+TOF 4i5s EARL2", "XYZGAUSSIAN4.00"
    ds.SliceThickness, ds.PixelSpacing = "3.0", ["4.0", "4.0"]
    ds.save_as(tmp_path / "1.dcm", enforce_file_format=True)
    assert scanner_details(tmp_path) == {"manufacturer": "SIEMENS", "model": "Biograph Vision 600",
                                         "kernel": "XYZGAUSSIAN4.00", "slice_thickness_mm": 3.0,
                                         "reconstruction": "PSF+TOF 4i5s EARL2", "pixel_spacing_mm": 4.0,
                                         "earl": "EARL2"}
    # a header as some exports write it: one PixelSpacing value (not a reason to fail the patient), an empty kernel
    ds.PixelSpacing, ds.ConvolutionKernel, ds.SliceThickness = "3.9", "", "3.27"
    ds.save_as(tmp_path / "1.dcm", enforce_file_format=True)
    details = scanner_details(tmp_path)
    assert (details["pixel_spacing_mm"], details["slice_thickness_mm"], details["kernel"]) == (3.9, 3.27, "")


def test_status_records_of_patients_outside_the_list_are_not_read(tmp_path: Path) -> None:
    for patient in ("PAL2-AAAAAAAAAA", "PAL2-BBBBBBBBBB"):
        _imaging_stages(tmp_path / "status", patient, "IT01", ok=False, value=1.0)
    kept = read_statuses(tmp_path / "status", {"PAL2-AAAAAAAAAA"})
    assert {s.patient for s in kept} == {"PAL2-AAAAAAAAAA"} and len(kept) == 4
    assert len(read_statuses(tmp_path / "status")) == 8
    assert read_status(tmp_path / "status" / "deid" / "PAL2-BBBBBBBBBB.json").patient == "PAL2-BBBBBBBBBB"


# ------------------------------------------------------------------------------------------------ qc/suv_checks.csv

def _sts_headers(drop: str | None = None) -> list[pydicom.Dataset]:
    """The PET headers of TCIA STS_001 (real GE series, ../shared/data/suv), read from the zip; ``drop`` one keyword."""
    import zipfile

    from conftest import shared_path

    headers = []
    with zipfile.ZipFile(shared_path("suv", "dicom", "tcia-sts-001-fdg-pet.zip")) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith("FDG_PET/image/") and n.endswith(".dcm")):
            with zf.open(name) as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
            if drop:
                delattr(ds, drop)
            headers.append(ds)
    return headers


@pytest.mark.shared
def test_suv_checks_list_every_check_and_the_sul_suvbsa_normalisations(tmp_path: Path) -> None:
    """Computed SUL / SUVbsa are rows (value = the card's factor), not computable ones the card's n/a rows."""
    import csv

    from conftest import shared_path
    from palmares_radiomics.suv import SuvOptions, suv_card
    from palmares_radiomics.tables import suv_checks

    both = SuvOptions(sul=True, suvbsa=True)
    cards = {"PAL2-AAAAAAAAAA": suv_card(_sts_headers(), both),
             "PAL2-BBBBBBBBBB": suv_card(_sts_headers(drop="PatientSize"), both),
             "PAL2-CCCCCCCCCC": suv_card(_sts_headers())}  # SUVbw only: no SUL / SUVbsa row
    for patient, card in cards.items():
        wanted = [] if patient == "PAL2-CCCCCCCCCC" else ["sul", "suvbsa"]
        write_status(tmp_path / "image" / f"{patient}_pet.json",
                     StageStatus("image", patient, "pet", "ok",
                                 details={"suv_card": card.to_json_dict(), "suv_normalisations": wanted}))
    # an image status written before SUL was requested: the request still shows, as n/a
    write_status(tmp_path / "image" / "PAL2-DDDDDDDDDD_pet.json",
                 StageStatus("image", "PAL2-DDDDDDDDDD", "pet", "ok",
                             details={"suv_card": cards["PAL2-CCCCCCCCCC"].to_json_dict(),
                                      "suv_normalisations": ["sul"]}))
    table = suv_checks(read_statuses(tmp_path))
    rows = {(r.patient, r.check): r for r in table.itertuples()}
    with shared_path("suv", "suv-reference-cases.csv").open(newline="", encoding="utf-8") as handle:
        reference = next(r for r in csv.DictReader(handle) if r["case_id"] == "mirp-sts-001-fdg-pet")
    sul, bsa = rows[("PAL2-AAAAAAAAAA", "sul")], rows[("PAL2-AAAAAAAAAA", "suvbsa")]
    assert (sul.outcome, bsa.outcome) == ("pass", "pass")
    assert sul.value == pytest.approx(float(reference["sul_janma_scale_factor"]), rel=1e-9)
    assert bsa.value == pytest.approx(float(reference["suvbsa_scale_factor"]), rel=1e-9)
    assert "lean body mass (Janmahasatian) 52.856 kg, weight 71.0 kg" in sul.detail
    assert "body surface area (Du Bois) 17659.9 cm2" in bsa.detail
    for check in ("sul", "suvbsa"):
        missing = rows[("PAL2-BBBBBBBBBB", check)]
        assert (missing.outcome, missing.detail) == ("n/a", "PatientSize absent or not in metres")
    assert not any(k in rows for k in (("PAL2-CCCCCCCCCC", "sul"), ("PAL2-CCCCCCCCCC", "suvbsa")))
    stale = rows[("PAL2-DDDDDDDDDD", "sul")]
    assert stale.outcome == "n/a" and stale.detail == "SUL requested but not on the SUV card: rerun the image stage"
    for patient, card in cards.items():  # every check on each card is a row, once
        on_card = [c.name for c in card.checks]
        assert [c for c in table.loc[table["patient"] == patient, "check"] if c in on_card] == on_card
    # the cards' checks, A's two computed factors, D (C's card again) and its stale request
    assert len(table) == sum(len(c.checks) for c in cards.values()) + 2 + len(cards["PAL2-CCCCCCCCCC"].checks) + 1
