"""Whole-DAG cases (``tests/configs/<case>/``, see its README): each configuration dry-run, and those with an
``expect.yaml`` run to the end with the real snakemake and checked."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from test_workflow import _snakemake, assert_dictionary_from_registry, prepare_study

pytestmark = pytest.mark.slow

CASES_DIR = REPO / "tests" / "configs"
CASES = sorted(path.name for path in CASES_DIR.iterdir() if (path / "config.yaml").is_file())
RUN_CASES = [case for case in CASES if (CASES_DIR / case / "expect.yaml").is_file()]
EXPECT_KEYS = {"failures", "lesion_modalities", "patients_rows", "columns_absent", "columns_present", "files_present",
               "files_absent", "combat"}


def _load(case: str, name: str) -> dict:
    path = CASES_DIR / case / name
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def prepare_case(case: str, workdir: Path) -> Path:
    """A study folder for ``case``: its cohort (``cohort.yaml``) and the demo configuration with its changes."""
    prepare_study(workdir, **_load(case, "cohort.yaml"))
    config = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8"))
    changes = _load(case, "config.yaml")
    unknown = set(changes) - set(config)
    assert not unknown, f"tests/configs/{case}/config.yaml: keys the demo configuration does not have: {unknown}"
    config.update(changes)
    config["params"] = {m: p for m, p in config["params"].items() if m in config["modalities"]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return workdir


def test_every_case_folder_is_complete_and_its_expectations_are_known() -> None:
    assert {"ct_only", "minimal", "demo_reference"} <= set(CASES)
    for case in CASES:
        cohort = _load(case, "cohort.yaml")
        assert set(cohort) <= {"patients", "seed", "sites", "shape"} and "patients" in cohort, case
        assert set(_load(case, "expect.yaml")) <= EXPECT_KEYS, case


@pytest.mark.parametrize("case", CASES)
def test_the_case_builds_its_dag(case: str, tmp_path: Path) -> None:
    """A new study's dry run: one index and one selection per site, the cohort stages once, ComBat only when on (the
    patients' jobs appear once the intake has run)."""
    workdir = prepare_case(case, tmp_path)
    result = _snakemake(workdir, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M)}
    sites = _load(case, "cohort.yaml").get("sites", 2)
    config = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8"))
    combat = {"harmonise": 1} if config["harmonisation"]["combat"] else {}
    assert jobs == {"clinical": 1, "index": sites, "select": sites, "intake": 1, "tables": 1, **combat, "report": 1,
                    "all": 1, "total": 5 + 2 * sites + len(combat)}, result.stdout[-2000:]


@pytest.mark.parametrize("case", RUN_CASES)
def test_the_case_runs_to_the_end_as_expected(case: str, tmp_path: Path) -> None:
    workdir = prepare_case(case, tmp_path)
    expect = _load(case, "expect.yaml")
    result = _snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    lesions = pd.read_parquet(workdir / "results/features/lesions.parquet")
    patients = pd.read_parquet(workdir / "results/tables/patients.parquet")
    failures = pd.read_csv(workdir / "results/qc/failures.csv", keep_default_na=False)

    # what every study must show
    tables = {"lesions": lesions, "patients": patients}
    assert_dictionary_from_registry(workdir, yaml.safe_load((workdir / "config.yaml").read_text())["modalities"])
    flow = pd.read_csv(workdir / "results/qc/patient_flow.csv", keep_default_na=False)
    clinical_rows = pd.read_csv(workdir / "cohort/raw/clinical.csv", dtype=str, keep_default_na=False)
    assert len(flow[flow["source"] != "DICOM export"]) == len(clinical_rows)
    again = _snakemake(workdir, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # what this case must show
    if "failures" in expect:
        assert len(failures) == expect["failures"], failures.to_string()
    if "lesion_modalities" in expect:
        assert sorted(set(lesions["modality"])) == sorted(expect["lesion_modalities"])
    if "patients_rows" in expect:
        assert len(patients) == expect["patients_rows"]
    for prefix in expect.get("columns_absent", []):
        found = [c for t in tables.values() for c in t.columns if c.startswith(prefix)]
        assert not found, f"columns starting with {prefix}: {found}"
    assert set(expect.get("columns_present", [])) <= set(patients.columns)
    for path in expect.get("files_present", []):
        assert (workdir / path).is_file(), path
    for path in expect.get("files_absent", []):
        assert not (workdir / path).exists(), path
    if "combat" in expect:
        record = pd.read_csv(workdir / "results/qc/combat.csv", keep_default_na=False)
        assert list(record["status"]) == expect["combat"], record.to_string()
