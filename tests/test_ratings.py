"""Visual QC ratings: reading the QC report's qc_ratings.csv, the "any rater's last rating" rule, and rejected lesions
leaving the real tables stage's lesion and patient tables for the failure table."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from palmares_radiomics.clinical import ClinicalInputs, prepare_clinical
from palmares_radiomics.ratings import (
    APPLIED_COLUMNS,
    RATING_COLUMNS,
    RatingsError,
    apply_ratings,
    read_ratings,
)
from palmares_radiomics.files import write_rows
from palmares_radiomics.stages import StageStatus, write_status
from palmares_radiomics.tables import run_tables

A = "PAL2-7K3M9Q2X4B"
B = "PAL2-0000000001"
SECRET = "the patient's husband called"  # comment text that must never reach an error message


def _write(path: Path, rows: list[list[str]], encoding: str = "utf-8",
           header: tuple[str, ...] = RATING_COLUMNS) -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------ reading


def test_a_good_file_is_read_with_its_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "qc_ratings.csv", [
        [A, "ct", "L1", "accept", "", "AB"],
        [f" {A} ", " PET ", " L2 ", " Reject ", "blurred, motion", " CD "],
    ])
    ratings = read_ratings(path)
    assert ratings[list(RATING_COLUMNS)].values.tolist() == [
        [A, "ct", "L1", "accept", "", "AB"], [A, "pet", "L2", "reject", "blurred, motion", "CD"]]
    assert ratings["row"].tolist() == [2, 3], "rows numbered as in a spreadsheet: header is row 1"


def test_a_cp1252_file_keeps_its_accented_comment(tmp_path: Path) -> None:
    path = _write(tmp_path / "qc_ratings.csv", [[A, "ct", "L1", "reject", "lésion mal délimitée", "Zoë"]],
                  encoding="cp1252")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    ratings = read_ratings(path)
    assert ratings.loc[0, "comment"] == "lésion mal délimitée" and ratings.loc[0, "rater"] == "Zoë"


def test_an_empty_rating_is_an_unrated_row_and_is_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "qc_ratings.csv", [[A, "ct", "L1", "", SECRET, "AB"], [A, "ct", "L2", " ", "", ""],
                                                [A, "ct", "L3", "accept", "", "AB"]])
    ratings = read_ratings(path)
    assert ratings["lesion_id"].tolist() == ["L3"] and ratings["row"].tolist() == [4]


def test_a_header_only_file_gives_no_rating(tmp_path: Path) -> None:
    assert read_ratings(_write(tmp_path / "qc_ratings.csv", [])).empty


def test_a_missing_column_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "qc_ratings.csv", [[A, "ct", "L1", "reject", SECRET]], header=RATING_COLUMNS[:-1])
    with pytest.raises(RatingsError, match=r"qc_ratings\.csv row 1 \(header\) lacks the column\(s\) rater"):
        read_ratings(path)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qc_ratings.csv"
    path.write_bytes(b"")
    with pytest.raises(RatingsError, match="qc_ratings.csv is empty"):
        read_ratings(path)


@pytest.mark.parametrize(("row", "column", "message"), [
    ([A, "ct", "L1", "rejected", SECRET, "AB"], "rating", "'rejected' is neither accept nor reject"),
    ([A, "mr", "L1", "reject", SECRET, "AB"], "modality", "'mr' is neither ct nor pet"),
    (["PAL2-7k3m9q2x4b", "ct", "L1", "reject", SECRET, "AB"], "pseudonym", "not a pseudonym PAL2- followed by 10"),
    (["IT01-000123", "ct", "L1", "reject", SECRET, "AB"], "pseudonym", "never a local patient id"),
    ([A, "ct", "", "reject", SECRET, "AB"], "lesion_id", "empty"),
    ([A, "ct", "L1", "reject", SECRET, ""], "rater", "empty; every rating needs the rater's name"),
])
def test_an_invalid_cell_is_refused_with_its_row_and_column_and_no_comment(
        tmp_path: Path, row: list[str], column: str, message: str) -> None:
    path = _write(tmp_path / "qc_ratings.csv", [[A, "ct", "L9", "accept", "", "AB"], row])
    with pytest.raises(RatingsError, match=rf"row 3, column {column}: .*{message}") as caught:
        read_ratings(path)
    text = str(caught.value)
    assert SECRET not in text and "husband" not in text
    assert row[0] not in text or row[0] == A, "a value that is not a pseudonym is never shown (it may be a local id)"
    assert str(tmp_path) not in text, "the file is named, not its folder"


def test_a_row_longer_than_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qc_ratings.csv"
    path.write_text(",".join(RATING_COLUMNS) + f"\n{A},ct,L1,reject,{SECRET}, unquoted,AB\n", encoding="utf-8")
    with pytest.raises(RatingsError, match="row 2 has 7 cells but the header 6") as caught:
        read_ratings(path)
    assert SECRET not in str(caught.value)


def test_each_raters_last_row_counts_and_any_reject_excludes(tmp_path: Path) -> None:
    path = _write(tmp_path / "qc_ratings.csv", [
        [A, "ct", "L1", "reject", "edge missed", "AB"],  # AB changes their mind: accept
        [A, "ct", "L1", "accept", "fine after all", "AB"],
        [A, "ct", "L2", "accept", "", "AB"],             # AB accepts, CD rejects: excluded
        [A, "ct", "L2", "reject", "includes the aorta", "CD"],
        [A, "ct", "L3", "accept", "", "AB"],             # AB accepts, then rejects: excluded
        [A, "ct", "L3", "reject", "", "AB"],
        [A, "ct", "L4", "accept", "", "AB"],             # everyone accepts: kept
        [A, "ct", "L4", "accept", "", "CD"],
    ])
    ratings = read_ratings(path)
    assert ratings["row"].tolist() == [3, 4, 5, 7, 8, 9], "earlier rows of the same rater and lesion are dropped"
    lesions = pd.DataFrame({"patient": A, "modality": "ct", "lesion_id": ["L1", "L2", "L3", "L4"]})
    kept, rejected, applied = apply_ratings(lesions, ratings)
    assert kept["lesion_id"].tolist() == ["L1", "L4"]
    assert rejected["lesion_id"].tolist() == ["L2", "L3"]
    assert rejected["reason"].tolist() == ["rejected in visual QC by CD: includes the aorta",
                                           "rejected in visual QC by AB: no comment"]
    assert applied.set_index("row")["decision"].to_dict() == {3: "kept", 4: "excluded", 5: "excluded",
                                                              7: "excluded", 8: "kept", 9: "kept"}


def test_several_rejecting_raters_and_a_long_comment_make_one_reason() -> None:
    ratings = pd.DataFrame({"pseudonym": A, "modality": "pet", "lesion_id": "L1", "rating": "reject",
                            "comment": ["x" * 300, "two\nlines"], "rater": ["AB", "CD"], "row": [2, 3]})
    lesions = pd.DataFrame({"patient": [A], "modality": ["pet"], "lesion_id": ["L1"]})
    kept, rejected, _ = apply_ratings(lesions, ratings)
    assert kept.empty and len(rejected) == 1
    assert rejected.loc[0, "reason"] == f"rejected in visual QC by AB: {'x' * 200}…; by CD: two lines"
    assert rejected.loc[0, "rater"] == "AB; CD"


# ------------------------------------------------------------------------------------------------ the tables stage

EXPORT = [{"site": "IT01", "patient_id": pid, "birth_date": "1960-05-01", "advanced_diagnosis_date": "2023-11-01",
           "cdk46i_start_date": "2024-01-01", "cdk46i_line": "1", "cdk46i_drug": "ribociclib",
           "endocrine_partner": "fulvestrant", "menopausal_status": "post", "disease_setting": "de_novo",
           "visceral_disease": "no", "bone_only_disease": "yes", "ecog": "1", "progression_date": "",
           "death_date": "", "last_followup_date": "2024-06-01"} for pid in ("P1", "P2")]
FEATURE = "firstorder_Mean_Q4LE"


def _work_area(root: Path, key: bytes) -> tuple[Path, Path, list[str]]:
    """The clinical stage's products (real clinical module) and PET status records: P1 with lesions L1 (2 ml) and
    L2 (6 ml), P2 with one lesion L1."""
    export = root / "clinical.csv"
    pd.DataFrame(EXPORT).to_csv(export, index=False)
    inputs = ClinicalInputs.from_specs([str(export)], REPO / "config" / "clinical_schema.yaml")
    result = prepare_clinical(inputs.read(), key, dt.date(2025, 6, 30), inputs.schema, today=dt.date(2025, 9, 1))
    clinical_dir = root / "work" / "clinical"
    clinical_dir.mkdir(parents=True)
    result.table.to_parquet(clinical_dir / "clinical.parquet", index=False)
    for name, frame in (("issues", result.issues), ("flow", result.flow), ("columns", result.columns)):
        frame.to_csv(clinical_dir / f"{name}.csv", index=False)
    patients = result.flow["patient"].tolist()
    status_dir = root / "work" / "status"
    for patient, lesion_ids in zip(patients, (["L1", "L2"], ["L1"])):
        volumes = {"L1": 2.0, "L2": 6.0}
        write_status(status_dir / "deid" / f"{patient}.json", StageStatus("deid", patient, "", "ok",
                                                                          details={"site": "IT01"}))
        write_status(status_dir / "image" / f"{patient}_pet.json", StageStatus("image", patient, "pet", "ok"))
        write_status(status_dir / "mask" / f"{patient}_pet.json", StageStatus(
            "mask", patient, "pet", "ok",
            details={"lesions": [{"lesion_id": i, "volume_ml": volumes[i]} for i in lesion_ids]}))
        table = root / "work" / "features" / f"{patient}_pet.json"
        write_rows([{"lesion_id": i, "organ": "liver", FEATURE: volumes[i] * 10} for i in lesion_ids], table)
        pet = {"pet_total_mtv_suv2p5_ml": sum(volumes[i] for i in lesion_ids),
               "pet_liver_lesion_count": len(lesion_ids)}
        write_status(status_dir / "features" / f"{patient}_pet.json", StageStatus(
            "features", patient, "pet", "ok", outputs={"table": str(table)}, details={"patient_pet": pet}))
    return status_dir, clinical_dir, patients


def _tables(root: Path, status_dir: Path, clinical_dir: Path, ratings: Path | None) -> dict[str, pd.DataFrame]:
    results = root / "results"
    run_tables(status_dir, clinical_dir, ["pet"], results, ("count", "largest"), qc_ratings=ratings)
    return {"lesions": pd.read_parquet(results / "features" / "lesions.parquet"),
            "patients": pd.read_parquet(results / "tables" / "patients.parquet").set_index("patient"),
            "failures": pd.read_csv(results / "qc" / "failures.csv", keep_default_na=False),
            "applied": pd.read_csv(results / "qc" / "qc_ratings_applied.csv", keep_default_na=False),
            "flow": pd.read_csv(results / "qc" / "patient_flow.csv", keep_default_na=False).set_index("patient")}


def test_a_rejected_lesion_leaves_the_tables_for_the_failure_table(tmp_path: Path, test_key: bytes) -> None:
    status_dir, clinical_dir, (p1, p2) = _work_area(tmp_path, test_key)
    before = _tables(tmp_path, status_dir, clinical_dir, None)
    assert before["failures"].empty and before["applied"].columns.tolist() == list(APPLIED_COLUMNS)
    assert before["applied"].empty, "without ratings the file is still written, header only"
    assert before["patients"].loc[p1, "pet_lesion_count"] == 2
    assert before["patients"].loc[p1, f"pet_largest_{FEATURE}"] == 60.0

    ratings = _write(tmp_path / "qc_ratings.csv", [
        [p1, "pet", "L2", "reject", "segmentation includes the kidney", "AB"],
        [p1, "pet", "L1", "accept", "", "AB"],
        [p2, "pet", "L7", "reject", "typo in the id", "AB"],   # no such lesion
        [p2, "ct", "L1", "reject", "", "AB"],                  # no CT for this patient
    ])
    after = _tables(tmp_path, status_dir, clinical_dir, ratings)
    lesions = after["lesions"]
    assert sorted(zip(lesions["patient"], lesions["lesion_id"])) == sorted([(p1, "L1"), (p2, "L1")])
    assert after["patients"].loc[p1, "pet_lesion_count"] == 1
    assert after["patients"].loc[p1, "pet_total_volume_ml"] == 2.0
    assert after["patients"].loc[p1, f"pet_largest_{FEATURE}"] == 20.0, "the largest lesion is now L1"
    assert pd.isna(after["patients"].loc[p1, "pet_total_mtv_suv2p5_ml"]), \
        "the PET stage's totals counted the rejected lesion: left empty"
    assert after["patients"].loc[p2, "pet_total_mtv_suv2p5_ml"] == 2.0, "other patients keep theirs"
    failures = after["failures"]
    assert failures[["patient", "site", "modality", "stage", "lesion_id", "status", "reason"]].values.tolist() == [
        [p1, "IT01", "pet", "qc", "L2", "rejected", "rejected in visual QC by AB: segmentation includes the kidney"]]
    applied = after["applied"].set_index("row")
    assert applied["status"].to_dict() == {2: "applied", 3: "applied", 4: "unmatched", 5: "unmatched"}
    assert applied["decision"].to_dict() == {2: "excluded", 3: "kept", 4: "", 5: ""}
    assert bool(after["flow"].loc[p1, "in_patients_table"])


def test_a_patient_whose_every_lesion_is_rejected_leaves_the_patient_table(tmp_path: Path, test_key: bytes) -> None:
    """As when every lesion failed features: no lesion row; without a lesion of another modality, no patient row,
    and the patient flow says why."""
    status_dir, clinical_dir, (p1, p2) = _work_area(tmp_path, test_key)
    ratings = _write(tmp_path / "qc_ratings.csv", [[p2, "pet", "L1", "reject", "", "AB"]])
    after = _tables(tmp_path, status_dir, clinical_dir, ratings)
    assert p2 not in set(after["lesions"]["patient"]) and p2 not in after["patients"].index
    assert after["flow"].loc[p2, "reason"] == ("no imaged lesion left: every lesion with features was rejected in "
                                               "visual QC (see qc/failures.csv)")
    assert after["failures"]["stage"].tolist() == ["qc"]


def test_an_invalid_ratings_file_stops_the_tables_stage(tmp_path: Path, test_key: bytes) -> None:
    status_dir, clinical_dir, (p1, _) = _work_area(tmp_path, test_key)
    ratings = _write(tmp_path / "qc_ratings.csv", [[p1, "pet", "L2", "rejected", SECRET, "AB"]])
    with pytest.raises(RatingsError, match="row 2, column rating"):
        run_tables(status_dir, clinical_dir, ["pet"], tmp_path / "results", ("count",), qc_ratings=ratings)


# ------------------------------------------------------------------------------------------------ the workflow


def test_the_tables_rule_takes_the_ratings_as_input_and_argument(tmp_path: Path) -> None:
    """A Snakemake dry run with qc_ratings set: the rule's input and shell line carry the file; without it, not.
    (the intake has not run, so the DAG holds the PHI-side jobs and tables; --forcerun shows tables' command)"""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for folder in ("raw/dicom", "raw/segmentations"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("lesions.csv", "clinical.csv"):
        (tmp_path / "raw" / name).write_text("")
    (tmp_path / "secret.key").write_text("k" * 48)
    config.update(raw_dicom="raw/dicom", segmentations="raw/segmentations", lesions="raw/lesions.csv",
                  clinical="raw/clinical.csv", key_file="secret.key", work_dir="work",
                  params={m: str(REPO / "params" / f"{m}.yaml") for m in ("ct", "pet")})
    ratings = _write(tmp_path / "ratings.csv", [])
    for name, value in (("with", "ratings.csv"), ("without", "")):
        config["qc_ratings"] = value
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    out = {}
    for name in ("with", "without"):
        result = subprocess.run(
            [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile",
             f"{name}.yaml", "-n", "-p", "--cores", "1", "--forcerun", "tables", "--", "tables"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        out[name] = result.stdout + result.stderr
        assert result.returncode == 0, out[name][-3000:]
    assert ratings.name in out["with"] and "--qc-ratings ratings.csv" in out["with"]
    assert "--qc-ratings" not in out["without"]
    assert "qc_ratings_applied.csv" in out["with"] and "qc_ratings_applied.csv" in out["without"]
