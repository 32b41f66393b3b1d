"""The study command exactly as README "Running on study data" types it, on a study laid out as README says,
with PATH reduced to the system's; then incremental reruns: each input change reruns exactly its patient's jobs.

The study starts with what real centres send: one patient with only a baseline CT (no PET at all), one CT
segmentation not uploaded yet, RTSTRUCTs with organ-at-risk ROIs, a SEG with repeated labels. Then, run
after run: the late segmentation arrives, the PET series of the CT-only patient arrives, a lesion-table row
is corrected, a segmentation is re-exported; each time only the affected patient's jobs (and the
study-wide intake, tables and report) run.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from conftest import REPO
from palmares_radiomics.pseudonym import load_key, pseudonym
from palmares_radiomics.synth import synthesize_cohort

pytestmark = pytest.mark.slow

#: The README's study command, word for word.
STUDY_COMMAND = ".venv/bin/snakemake --profile workflow/profiles/default --cores 8"
#: Rules that run once for the whole study whenever any input changed.
STUDY_RULES = {"intake", "tables", "report", "all"}


def study(root: Path) -> Path:
    """A study folder as README lays it out: the pipeline's files (linked), raw/, secrets/, config/config.yaml."""
    for name in ("Snakefile", "workflow", "params", ".venv"):
        (root / name).symlink_to(REPO / name)
    (root / "config").mkdir()
    for name in ("config.yaml", "clinical_schema.yaml"):
        shutil.copy(REPO / "config" / name, root / "config" / name)
    synthesize_cohort(root, patients=3, seed=5)  # writes root/raw/{dicom,segmentations,lesions.csv,clinical.csv}
    (root / "secrets").mkdir()
    (root / "secrets" / "palmares.key").write_text(secrets.token_urlsafe(48))
    return root


def run_study(root: Path) -> subprocess.CompletedProcess[str]:
    """The README's command typed in a new shell whose PATH is the system's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "CONDA"))}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run(["bash", "-c", STUDY_COMMAND], cwd=root, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def jobs_run(result: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a Snakemake run started."""
    jobs, rule = set(), None
    for line in (result.stdout + result.stderr).splitlines():
        found = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if found:
            if rule is not None:
                jobs.add((rule, ""))
            rule = found.group(1)
            continue
        wildcards = re.match(r"^\s+wildcards: (.*)$", line)
        if wildcards and rule is not None:
            jobs.add((rule, wildcards.group(1)))
            rule = None
        elif line.startswith("    jobid:") and rule is not None and rule in STUDY_RULES | {"clinical", "harmonise"}:
            jobs.add((rule, ""))
            rule = None
    if rule is not None:
        jobs.add((rule, ""))
    return jobs


def patient_jobs(jobs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The per-patient jobs of a run (rules with a patient wildcard)."""
    return {(rule, w) for rule, w in jobs if "patient=" in w}


def series_folder(root: Path, series_uid: str) -> Path:
    """The raw folder holding a series (found by reading one header per folder, as a centre would look)."""
    for folder, _, names in os.walk(root / "raw" / "dicom"):
        for name in sorted(names)[:1]:
            header = pydicom.dcmread(Path(folder) / name, stop_before_pixels=True, force=True,
                                     specific_tags=["SeriesInstanceUID"])
            if header.get("SeriesInstanceUID") == series_uid:
                return Path(folder)
    raise AssertionError(f"series {series_uid} not found")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The study's first run, with a CT-only patient and a CT segmentation still missing."""
    root = study(tmp_path_factory.mktemp("study"))
    truth = pd.read_csv(root / "truth" / "patients.csv", dtype=str, keep_default_na=False)
    key = load_key(root / "secrets" / "palmares.key")
    ct_only, late = truth.iloc[0], truth.iloc[1]
    held = root.parent / f"{root.name}-held"
    held.mkdir()
    # patient 0 has no PET at all yet: its PET series folder, PET segmentation and PET lesion rows wait outside
    pet_folder = series_folder(root, ct_only["pet_series_uid"])
    shutil.move(pet_folder, held / "pet_series")
    pet_seg = root / "raw" / "segmentations" / ct_only["site"] / ct_only["patient_id"] / "pet"
    shutil.move(pet_seg, held / "pet_segmentation")
    lesions = pd.read_csv(root / "raw" / "lesions.csv", dtype=str, keep_default_na=False)
    is_pet_of_0 = (lesions["patient_id"] == ct_only["patient_id"]) & (lesions["modality"] == "pet")
    lesions[is_pet_of_0].to_csv(held / "pet_lesions.csv", index=False)
    lesions[~is_pet_of_0].to_csv(root / "raw" / "lesions.csv", index=False)
    # patient 1's CT segmentation is uploaded late
    late_seg = root / "raw" / "segmentations" / late["site"] / late["patient_id"] / "ct"
    shutil.move(late_seg, held / "late_ct_segmentation")
    result = run_study(root)
    return {"root": root, "held": held, "result": result, "ct_only": ct_only, "late": late,
            "ct_only_patient": pseudonym(key, ct_only["site"], ct_only["patient_id"]),
            "late_patient": pseudonym(key, late["site"], late["patient_id"]),
            "third_patient": pseudonym(key, truth.iloc[2]["site"], truth.iloc[2]["patient_id"]),
            "third": truth.iloc[2]}


def test_study_command_works_as_typed_with_the_system_path(first_run: dict) -> None:
    """README's study command, PATH=/usr/bin:/bin: every rule found its `palmares` (no 'command not found')."""
    root, output = first_run["root"], first_run["result"].stdout + first_run["result"].stderr
    assert "command not found" not in output
    for name in ("features/lesions.parquet", "tables/patients.parquet", "qc/failures.csv", "qc/report.html"):
        assert (root / "results" / name).is_file(), name


def test_a_single_modality_patient_is_complete_not_a_failure(first_run: dict) -> None:
    root, patient = first_run["root"], first_run["ct_only_patient"]
    failures = pd.read_csv(root / "results" / "qc" / "failures.csv", dtype=str, keep_default_na=False)
    assert not (failures["patient"] == patient).any(), failures
    flow = pd.read_csv(root / "results" / "qc" / "patient_flow.csv", dtype=str, keep_default_na=False)
    row = flow[flow["patient"] == patient].iloc[0]
    assert row["modalities"] == "ct" and row["in_patients_table"] == "True"
    assert set(flow.loc[flow["patient"] == first_run["third_patient"], "modalities"]) == {"ct+pet"}
    # one row per patient and modality that failed, with the first failing stage: here only the late segmentation
    assert list(zip(failures["patient"], failures["modality"], failures["stage"])) == [
        (first_run["late_patient"], "ct", "mask")]
    assert failures.loc[0, "reason"].startswith("no segmentation uploaded")
    assert "1</span> patient-modality" in (root / "results" / "qc" / "report.html").read_text(encoding="utf-8")


def test_rtstruct_organs_at_risk_are_listed_as_not_lesions(first_run: dict) -> None:
    notes = pd.read_csv(first_run["root"] / "results" / "qc" / "segmentation_notes.csv", dtype=str,
                        keep_default_na=False)
    rtstruct = notes[notes["format"] == "RTSTRUCT"]
    assert not rtstruct.empty and (rtstruct["note"] == "not a lesion, ignored").all()
    assert rtstruct["structure"].str.contains(r"ROI Number \d+").all(), rtstruct
    assert rtstruct["structure"].str.fullmatch(r"'Spinal-Cord' \(ROI Number \d+\)").any(), rtstruct
    markers = (first_run["root"] / "truth" / "markers.txt").read_text().split()
    text = (first_run["root"] / "results" / "qc" / "segmentation_notes.csv").read_text()
    assert not [m for m in markers if m in text], "a planted identifier reached the QC table"


def test_a_second_run_does_nothing(first_run: dict) -> None:
    again = run_study(first_run["root"])
    assert "Nothing to be done" in again.stdout + again.stderr


def _restore(first_run: dict, what: str, to: Path) -> None:
    shutil.move(first_run["held"] / what, to)


def test_incremental_reruns_touch_only_the_affected_patient(first_run: dict) -> None:
    """Each change reruns exactly the affected patient's jobs; the tables follow."""
    root = first_run["root"]
    late, late_patient = first_run["late"], first_run["late_patient"]
    ct_only, ct_only_patient = first_run["ct_only"], first_run["ct_only_patient"]
    third, third_patient = first_run["third"], first_run["third_patient"]

    # 1. the late CT segmentation is uploaded: only that patient's job
    _restore(first_run, "late_ct_segmentation",
             root / "raw" / "segmentations" / late["site"] / late["patient_id"] / "ct")
    jobs = jobs_run(run_study(root))
    assert patient_jobs(jobs) == {("patient", f"patient={late_patient}")}, jobs
    assert {"tables", "report"} <= {rule for rule, _ in jobs}
    failures = pd.read_csv(root / "results" / "qc" / "failures.csv", dtype=str, keep_default_na=False)
    assert failures.empty, failures

    # 2. the CT-only patient's PET series, segmentation and lesion rows arrive: only that patient's jobs
    _restore(first_run, "pet_series", series_folder_parent(root, ct_only) / "late PET series")
    _restore(first_run, "pet_segmentation",
             root / "raw" / "segmentations" / ct_only["site"] / ct_only["patient_id"] / "pet")
    lesions = pd.concat([pd.read_csv(root / "raw" / "lesions.csv", dtype=str, keep_default_na=False),
                         pd.read_csv(first_run["held"] / "pet_lesions.csv", dtype=str, keep_default_na=False)])
    lesions.to_csv(root / "raw" / "lesions.csv", index=False)
    jobs = jobs_run(run_study(root))
    assert {w.split(",")[0] for _, w in patient_jobs(jobs)} == {f"patient={ct_only_patient}"}, jobs
    assert patient_jobs(jobs) == {("patient", f"patient={ct_only_patient}")}, jobs
    flow = pd.read_csv(root / "results" / "qc" / "patient_flow.csv", dtype=str, keep_default_na=False)
    assert set(flow.loc[flow["patient"] == ct_only_patient, "modalities"]) == {"ct+pet"}

    # 3. one lesion-table row is corrected (organ): only that patient's job
    lesions = pd.read_csv(root / "raw" / "lesions.csv", dtype=str, keep_default_na=False)
    row = lesions.index[(lesions["patient_id"] == third["patient_id"]) & (lesions["modality"] == "pet")][0]
    lesions.loc[row, "organ"] = "other" if lesions.loc[row, "organ"] != "other" else "liver"
    lesions.to_csv(root / "raw" / "lesions.csv", index=False)
    jobs = jobs_run(run_study(root))
    assert patient_jobs(jobs) == {("patient", f"patient={third_patient}")}, jobs
    table = pd.read_parquet(root / "results" / "features" / "lesions.parquet")
    changed = table[(table["patient"] == third_patient) & (table["modality"] == "pet")
                    & (table["lesion_id"] == lesions.loc[row, "lesion_id"])]
    assert list(changed["organ"]) == [lesions.loc[row, "organ"]]

    # 4. a segmentation is re-exported (same content, new file): only that patient's job
    folder = root / "raw" / "segmentations" / third["site"] / third["patient_id"] / "ct"
    exported = next(p for p in folder.iterdir() if p.is_file())
    exported.write_bytes(exported.read_bytes())
    jobs = jobs_run(run_study(root))
    assert patient_jobs(jobs) == {("patient", f"patient={third_patient}")}, jobs

    # 5. a file of another series lands in the export (a localizer): the index, nothing of any patient
    series = series_folder(root, third["ct_series_uid"])
    first = pydicom.dcmread(sorted(p for p in series.iterdir() if p.is_file())[0])
    first.SeriesInstanceUID, first.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    first.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    first.save_as(series.parent / "scout.dcm")
    jobs = jobs_run(run_study(root))
    assert ("index", f"site={third['site']}") in jobs and not patient_jobs(jobs), jobs

    # 6. a new DICOM file in a patient's selected series (a resent slice): that patient's jobs only
    first.SeriesInstanceUID, first.SOPInstanceUID = third["ct_series_uid"], pydicom.uid.generate_uid()
    first.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    first.save_as(series / "resent.dcm")
    jobs = jobs_run(run_study(root))
    assert {w.split(",")[0] for _, w in patient_jobs(jobs)} == {f"patient={third_patient}"}, jobs
    assert ("patient", f"patient={third_patient}") in jobs


def series_folder_parent(root: Path, patient: pd.Series) -> Path:
    """The study folder of a patient's CT series: where a late PET series of the same session lands."""
    return series_folder(root, patient["ct_series_uid"]).parent
