"""End-to-end: the real snakemake on a 3-patient synthetic cohort, checked against the generator's truth."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from palmares_radiomics.pseudonym import load_key, pseudonym
from palmares_radiomics.synth import synthesize_cohort

pytestmark = pytest.mark.slow


def snakemake_command(*extra: str, profile: str = "default") -> tuple[list[str], dict[str, str]]:
    """Command line and environment of the real snakemake CLI of this environment on the project's Snakefile
    (run it in a folder made by ``prepare_study``)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cores = ["--cores", "2"] if profile == "default" else []
    command = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile",
               "config.yaml", "--profile", str(REPO / "workflow" / "profiles" / profile), *cores, *extra]
    return command, env


def _snakemake(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the real snakemake CLI of this environment on the project's Snakefile in ``workdir``."""
    command, env = snakemake_command(*extra)
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def prepare_study(workdir: Path, patients: int = 3, seed: int = 11, **synth_options) -> Path:
    """A study folder: a synthetic cohort, a random key and a config.yaml (the demo's) pointing at them.
    ``synth_options`` go to ``synthesize_cohort`` (``shape``, ``sites``); the benchmarks build their studies here too."""
    synthesize_cohort(workdir / "cohort", patients=patients, seed=seed, **synth_options)
    (workdir / "secret.key").write_text(secrets.token_urlsafe(48))
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config.update(raw_dicom="cohort/raw/dicom", segmentations="cohort/raw/segmentations",
                  lesions="cohort/raw/lesions.csv", clinical="cohort/raw/clinical.csv", key_file="secret.key",
                  work_dir="work", results_dir="results",
                  params={m: str(REPO / "params" / f"{m}.yaml") for m in ("ct", "pet")})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


@pytest.mark.parametrize("layout", ["merged", "per_centre"])
def test_an_invalid_clinical_row_does_not_stop_the_dag(tmp_path: Path, layout: str) -> None:
    """A row whose site breaks the pattern ("it01") is no patient and its site no site of the DAG: the dry run
    plans every other patient, and no raw text of that row is printed. per_centre: each centre's export is
    called export.csv, in its own folder."""
    workdir = prepare_study(tmp_path, patients=4)
    export = pd.read_csv(workdir / "cohort/raw/clinical.csv", dtype=str, keep_default_na=False)
    bad = export.index[export["site"] == "IT01"][0]
    export.loc[bad, "site"] = "it01"
    if layout == "merged":
        export.to_csv(workdir / "cohort/raw/clinical.csv", index=False)
    else:
        config = yaml.safe_load((workdir / "config.yaml").read_text())
        config["clinical"] = {}
        for site in ("IT01", "IT02"):
            (workdir / "cohort/raw" / site).mkdir()
            rows = export[export["site"].str.upper() == site]
            rows.to_csv(workdir / "cohort/raw" / site / "export.csv", index=False)
            config["clinical"][site] = f"cohort/raw/{site}/export.csv"
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # the PHI side (index, selection, intake) runs first; then the DAG plans each patient's jobs
    phi = _snakemake(workdir, "--until", "intake")
    assert phi.returncode == 0, (phi.stdout + phi.stderr)[-3000:]
    result = _snakemake(workdir, "-n", "--quiet", "rules")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in output.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert jobs["patient"] == 3 and "index" not in jobs, output
    for text in (output, phi.stdout + phi.stderr):
        assert "it01" not in text and export.loc[bad, "patient_id"] not in text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished pipeline run on 3 synthetic patients (one per segmentation format)."""
    workdir = prepare_study(tmp_path_factory.mktemp("e2e"))
    result = _snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (workdir / "snakemake-console.log").write_text(result.stdout + result.stderr)  # what the user's terminal showed
    return workdir


def test_tables_have_the_expected_shape(run: Path) -> None:
    lesions = pd.read_parquet(run / "results/features/lesions.parquet")
    patients = pd.read_parquet(run / "results/tables/patients.parquet")
    truth = pd.read_csv(run / "cohort/truth/lesions.csv", dtype={"patient_id": str})
    assert len(lesions) == len(truth), "every lesion of every modality has a row"
    assert len(patients) == 3
    assert lesions["patient"].str.fullmatch(r"PAL2-[0-9A-Z]{10}").all()
    assert pd.read_csv(run / "results/features/lesions.csv").shape == lesions.shape
    assert pd.read_csv(run / "results/tables/patients.csv").shape == patients.shape
    assert pd.read_csv(run / "results/qc/failures.csv").empty
    checks = pd.read_csv(run / "results/qc/suv_checks.csv")
    assert set(checks["patient"]) == set(patients["patient"]), "every PET SUV card is reported in QC"
    assert (checks.loc[checks["check"].str.contains("image|body|liver"), "outcome"] == "pass").all()
    assert "PET SUV plausibility warnings" in (run / "results/qc/report.html").read_text(encoding="utf-8")


def test_every_lesion_got_features_matching_the_truth(run: Path) -> None:
    lesions = pd.read_parquet(run / "results/features/lesions.parquet")
    truth = pd.read_csv(run / "cohort/truth/lesions.csv", dtype={"patient_id": str})
    key = load_key(run / "secret.key")
    truth["patient"] = [pseudonym(key, s, p) for s, p in zip(truth["site"], truth["patient_id"])]
    merged = truth.merge(lesions, on=["patient", "modality", "lesion_id"], suffixes=("_truth", ""),
                         validate="one_to_one")
    assert len(merged) == len(truth)
    feature_columns = [c for c in lesions.columns if c.startswith(("firstorder_", "shape_", "glcm_", "glrlm_",
                                                                   "glszm_", "gldm_", "ngtdm_"))]
    assert len(feature_columns) >= 100
    assert lesions[feature_columns].notna().all().all(), "no silent NaN"
    # Volumes on the original grid are the generator's voxel counts.
    assert ((merged["volume_ml"] - merged["volume_ml_truth"]).abs() <= 0.02 * merged["volume_ml_truth"]).all()
    # IBSI resampling (linear mask interpolation, 0.5 threshold) preserves the lesion volume: CT 2x2.5 mm -> 1 mm
    # within 5 %; PET 4 mm -> 3 mm within 25 % (lesions of 10-80 voxels, measured worst case 18 %).
    ratio = merged["shape_VoxelVolume_YEKZ"] / 1000 / merged["volume_ml"]
    is_ct = merged["modality"] == "ct"
    assert ((ratio[is_ct] - 1).abs() < 0.05).all(), ratio[is_ct]
    assert ((ratio[~is_ct] - 1).abs() < 0.25).all(), ratio[~is_ct]
    # CT lesions well inside soft tissue keep their HU; PET SUVmax reaches the planted SUV (noise included).
    ct = merged[(merged["modality"] == "ct") & merged["organ"].isin(["liver", "bone", "lymph_node"])]
    assert ((ct["firstorder_Median_Y12H"] - ct["ct_hu"]).abs() < 0.15 * ct["ct_hu"].abs() + 25).all()
    pet = merged[merged["modality"] == "pet"]
    assert ((pet["firstorder_Maximum_84IY"] / pet["suvbw"]).between(0.7, 1.3)).all()
    # PET metrics on the native grid: SUVmax reaches the planted SUV (5 % noise), SUVpeak <= SUVmax.
    assert ((pet["pet_suvmax"] / pet["suvbw"]).between(0.9, 1.3)).all(), pet[["pet_suvmax", "suvbw"]]
    assert (pet["pet_suvpeak"] <= pet["pet_suvmax"]).all()
    assert merged.loc[merged["modality"] == "ct", "pet_suvmax"].isna().all(), "PET metrics only on PET rows"
    patients = pd.read_parquet(run / "results/tables/patients.parquet")
    assert (patients["pet_total_mtv_suv2p5_ml"] > 0).all() and (patients["pet_hottest_suvmax"] > 2.5).all()


def test_outcomes_match_the_generator_truth(run: Path) -> None:
    patients = pd.read_parquet(run / "results/tables/patients.parquet")
    truth = pd.read_csv(run / "cohort/truth/patients.csv", dtype={"patient_id": str})
    key = load_key(run / "secret.key")
    truth["patient"] = [pseudonym(key, s, p) for s, p in zip(truth["site"], truth["patient_id"])]
    merged = truth.merge(patients, on="patient", suffixes=("_truth", ""), validate="one_to_one")
    assert len(merged) == 3
    for column in ("os_days", "pfs_days"):
        assert (merged[column] == merged[f"{column}_truth"]).all(), column
    for column in ("os_event", "pfs_event"):
        assert (merged[column] == merged[f"{column}_truth"].astype(bool)).all(), column
    assert patients["os_days"].dtype == "int64" and patients["os_event"].dtype == "bool"


def test_dictionary_describes_every_column_once(run: Path) -> None:
    dictionary = pd.read_csv(run / "results/tables/dictionary.csv", keep_default_na=False)
    assert not dictionary.duplicated(["column", "table"]).any()
    for table, path in (("lesions", "results/features/lesions.parquet"), ("patients", "results/tables/patients.parquet")):
        columns = set(pd.read_parquet(run / path).columns)
        assert columns == set(dictionary.loc[dictionary["table"] == table, "column"])
    assert (dictionary.loc[dictionary["column"] == "glcm_JointEntropy_TU9B_ITBB", "ibsi_code"] == "TU9B").all()
    assert_dictionary_from_registry(run, ["ct", "pet"])


def assert_dictionary_from_registry(workdir: Path, modalities: list[str]) -> None:
    """A finished study's ``dictionary.csv`` is generated from the column registry: each row is the registry's
    definition of that column (the clinical ones from the clinical stage's columns.csv), with the table's dtype."""
    from palmares_radiomics.tables import clinical_definitions, describe

    dictionary = pd.read_csv(workdir / "results/tables/dictionary.csv", keep_default_na=False)
    declared = pd.read_csv(workdir / "work/clinical/columns.csv", keep_default_na=False)
    clinical = clinical_definitions(declared.itertuples(index=False))
    tables = {t: pd.read_parquet(workdir / p) for t, p in (("lesions", "results/features/lesions.parquet"),
                                                           ("patients", "results/tables/patients.parquet"))}
    assert [(r.table, r.column) for r in dictionary.itertuples()] == [
        (name, column) for name, table in tables.items() for column in table.columns]
    for row in dictionary.astype(str).itertuples(index=False):
        defined = describe(row.column, row.table, modalities, clinical)
        assert tuple(row) == defined.row(str(tables[row.table][row.column].dtype)), row


def test_modelling_outputs_flow_combat_and_pet_extras(run: Path) -> None:
    """Patient flow, ComBat tables and record (the demo config turns ComBat, SUL and SUVbsa on), PET extras."""
    flow = pd.read_csv(run / "results/qc/patient_flow.csv", keep_default_na=False)
    patients = pd.read_parquet(run / "results/tables/patients.parquet")
    assert (flow["status"] == "eligible").all() and flow["in_patients_table"].astype(str).eq("True").all()
    assert set(flow["patient"]) == set(patients["patient"])
    record = pd.read_csv(run / "results/qc/combat.csv", keep_default_na=False)
    assert list(record["table"]) == ["lesions", "lesions", "patients", "patients"]
    assert (record.loc[record["table"] == "lesions", "status"] == "harmonised").all(), record.to_string()
    assert (record["reason"].str.len() > 0).where(record["status"] == "skipped", True).all(), "never silent"
    lesions = pd.read_parquet(run / "results/features/lesions.parquet")
    combat = pd.read_parquet(run / "results/features/lesions_combat.parquet")
    assert list(combat.columns) == list(lesions.columns) and len(combat) == len(lesions)
    assert not combat["firstorder_Mean_Q4LE"].equals(lesions["firstorder_Mean_Q4LE"])
    provenance = json.loads((run / "results/provenance.json").read_text())
    assert provenance["harmonisation"]["combat"] == "on"
    assert "ComBat harmonisation" in (run / "results/qc/report.html").read_text(encoding="utf-8")
    pet = lesions[lesions["modality"] == "pet"]
    assert (pet["pet_sul_max"] < pet["pet_suvmax"]).all() and pet["pet_suvbsa_peak"].notna().all()
    assert (pet["reconstruction"] != "").all() and "earl" in lesions
    organs = [c for c in patients.columns if c.endswith("_lesion_count") and c.startswith("pet_")
              and c != "pet_lesion_count"]
    assert (patients[organs].sum(axis=1) == patients["pet_lesion_count"]).all(), "per-organ counts add up"


def test_no_marker_crosses_the_phi_boundary(run: Path) -> None:
    markers = [m for m in (run / "cohort/truth/markers.txt").read_text().split() if m]
    assert len(markers) > 50
    # past the boundary: the results, the work area outside work/phi, and what Snakemake showed and kept (the
    # console, .snakemake/log/, a cluster's logs/slurm/): PHI-side job logs must never be copied there
    published = [p for p in (run / "results").rglob("*")] + [
        p for p in (run / "work").rglob("*") if "phi" not in p.relative_to(run / "work").parts] + [
        run / "snakemake-console.log", *(run / ".snakemake" / "log").glob("*"), *(run / "logs").rglob("*")]
    files = [p for p in published if p.is_file()]
    assert len(files) > 40
    leaks = []
    for path in files:
        data = path.read_bytes()
        for marker in markers:
            if marker.encode() in data or marker in str(path.relative_to(run)):
                leaks.append((str(path.relative_to(run)), marker))
    print(f"checked {len(markers)} markers in {len(files)} files past the PHI boundary")
    assert not leaks, leaks[:10]


def test_key_is_never_written(run: Path) -> None:
    key = (run / "secret.key").read_text().strip().encode()
    for path in [*(run / "results").rglob("*"), *(run / "work").rglob("*"), *(run / ".snakemake").rglob("*")]:
        if path.is_file():
            assert key not in path.read_bytes(), path


def test_rerun_is_a_no_op_and_reports_nothing_to_do(run: Path) -> None:
    before = (run / "results/tables/patients.parquet").read_bytes()
    result = _snakemake(run)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
    assert (run / "results/tables/patients.parquet").read_bytes() == before


def test_the_patient_job_equals_the_stages_run_apart(tmp_path: Path, run: Path) -> None:
    """The DAG's job per patient (`palmares stage patient`) gives what `palmares stage deid`, `image`, `mask` and
    `features` give when typed one after the other: the same de-identified files and feature rows, byte for byte,
    and the same status details; the image and features stages keep their own logs past the PHI boundary, and the
    job's whole log stays PHI-side."""
    statuses = sorted((run / "work/status/features").glob("*_ct.json"))
    patient = statuses[0].stem.rpartition("_")[0]
    key = ["--key-file", str(run / "secret.key")]
    palmares = str(Path(sys.executable).parent / "palmares")
    out = tmp_path
    steps = [["deid", "--patient", patient, "--record", str(run / f"work/phi/intake/{patient}.json"), *key,
              "--out-dir", str(out / "deid"), "--status", str(out / "deid.json"), "--audit", str(out / "audit.json")]]
    for modality in ("ct", "pet"):
        common = ["--patient", patient, "--modality", modality]
        image, mask = str(out / f"image_{modality}.json"), str(out / f"mask_{modality}.json")
        steps += [["image", *common, "--deid-status", str(out / "deid.json"), "--suv-normalisations", "sul", "suvbsa",
                   "--out", str(out / f"image_{modality}.nii"), "--status", image],
                  ["mask", *common, "--record", str(run / f"work/phi/intake/{patient}_{modality}.json"),
                   "--deid-status", str(out / "deid.json"), "--image-status", image, *key,
                   "--out", str(out / f"mask_{modality}.nii.gz"), "--status", mask,
                   "--audit", str(out / f"audit_{modality}.json")],
                  ["features", *common, "--image-status", image, "--mask-status", mask,
                   "--params", str(REPO / f"params/{modality}.yaml"), "--qc-dir", str(out / f"qc_{modality}"),
                   "--out", str(out / f"{modality}.json"), "--status", str(out / f"features_{modality}.json")]]
    for step in steps:  # typed as a user types them: all the machine's BLAS threads (a DAG job gets one)
        done = subprocess.run([palmares, "stage", *step], capture_output=True, text=True, cwd=run)
        assert done.returncode == 0, done.stderr[-2000:]
    apart_deid = json.loads((out / "deid.json").read_text())
    job_deid = json.loads((run / f"work/status/deid/{patient}.json").read_text())
    assert apart_deid["status"] == job_deid["status"] == "ok" and apart_deid["details"] == job_deid["details"]
    ours = sorted(p.relative_to(out / "deid") for p in (out / "deid").rglob("*.dcm"))
    assert ours and ours == sorted(p.relative_to(run / f"work/deid/{patient}")
                                   for p in (run / f"work/deid/{patient}").rglob("*.dcm"))
    assert all((out / "deid" / p).read_bytes() == (run / f"work/deid/{patient}" / p).read_bytes() for p in ours)
    for modality in ("ct", "pet"):
        for stage in ("image", "mask", "features"):
            apart = json.loads((out / f"{stage}_{modality}.json").read_text())
            job = json.loads((run / f"work/status/{stage}/{patient}_{modality}.json").read_text())
            assert apart["status"] == job["status"] == "ok", (apart["reason"], job["reason"])
            apart["details"].pop("qc", None), job["details"].pop("qc", None)  # where the pictures are: other folders
            assert apart["details"] == job["details"], (stage, modality)
        rows = run / f"work/features/{patient}/{modality}.json"
        assert len(json.loads(rows.read_text())["rows"]) >= 1
        assert (out / f"{modality}.json").read_bytes() == rows.read_bytes()
    job_log = (run / f"work/phi/logs/patient/{patient}.log").read_text()
    assert f"deid {patient}: ok" in job_log
    assert "GLCM is symmetrical" not in job_log, "pyradiomics' per-lesion warnings are filtered out"
    for modality in ("ct", "pet"):
        image_log = (run / f"work/logs/image/{patient}_{modality}.log").read_text()
        features_log = (run / f"work/logs/features/{patient}_{modality}.log").read_text()
        assert f"image {patient} {modality}: ok" in image_log and f"features {patient} {modality}: ok" in features_log
        assert f"mask {patient} {modality}: ok" in job_log and "mask " not in image_log + features_log
        assert "deid " not in image_log + features_log
        assert set((image_log + features_log).splitlines()) <= set(job_log.splitlines()), "the job's log has them all"


def test_one_bad_patient_is_recorded_and_the_others_finish(tmp_path: Path, run: Path) -> None:
    shutil.copytree(run / "cohort", tmp_path / "cohort")
    shutil.copy(run / "secret.key", tmp_path / "secret.key")
    shutil.copy(run / "config.yaml", tmp_path / "config.yaml")
    lesions = pd.read_csv(tmp_path / "cohort/raw/lesions.csv", dtype=str, keep_default_na=False)
    victim = lesions.iloc[0]
    for path in (tmp_path / "cohort/raw/segmentations" / victim["site"] / victim["patient_id"] / "ct").iterdir():
        path.write_bytes(b"not a segmentation")  # a corrupt upload
    export = pd.read_csv(tmp_path / "cohort/raw/clinical.csv", dtype=str, keep_default_na=False)
    second_line = export.index[export["patient_id"] != victim["patient_id"]][0]
    export.loc[second_line, "cdk46i_line"] = "2"  # ineligible by protocol: imaged, but not in the patient table
    export.to_csv(tmp_path / "cohort/raw/clinical.csv", index=False)
    result = _snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    failures = pd.read_csv(tmp_path / "results/qc/failures.csv")
    key = load_key(tmp_path / "secret.key")
    bad = pseudonym(key, victim["site"], victim["patient_id"])
    assert set(failures["patient"]) == {bad}
    assert set(failures["modality"]) == {"ct"}
    assert failures["reason"].str.len().min() > 20
    assert victim["patient_id"] not in failures.to_csv()
    # the mask stage read the raw upload: its traceback is in the job's PHI-side log, not in the stages' public logs
    assert "segmentation could not be read" in (tmp_path / f"work/phi/logs/patient/{bad}.log").read_text()
    public = [path.read_text() for path in (tmp_path / "work/logs").rglob(f"{bad}_ct.log")]
    assert len(public) == 2 and not any("segmentation could not be read" in text for text in public)
    lesions_out = pd.read_parquet(tmp_path / "results/features/lesions.parquet")
    second = export.loc[second_line, "patient_id"]
    assert len(lesions_out) == len(lesions) - int(((lesions["patient_id"] == victim["patient_id"])
                                                   & (lesions["modality"] == "ct")).sum()) - int(
        (lesions["patient_id"] == second).sum())
    ineligible = pseudonym(key, export.loc[second_line, "site"], export.loc[second_line, "patient_id"])
    patients = pd.read_parquet(tmp_path / "results/tables/patients.parquet")
    everyone = {pseudonym(key, s, p) for s, p in zip(export["site"], export["patient_id"])}
    assert set(patients["patient"]) == everyone - {ineligible}, "exactly the eligible patients with images"
    flow = pd.read_csv(tmp_path / "results/qc/patient_flow.csv", keep_default_na=False).set_index("patient")
    assert flow.loc[ineligible, "reason"] == "CDK4/6i given as line 2 of therapy, not first line"
    assert ineligible not in set(lesions_out["patient"]), "one cohort: its lesions are in neither table"


def test_the_study_params_may_list_ibsi2_filters(tmp_path: Path) -> None:
    """params/ct.yaml with an IBSI 2 filter in palmares.filters: the tables get the response map's intensity
    statistics as ``<filter>__<feature>`` columns (and their patient aggregates), each described in the dictionary with
    the filter's settings and the statistic's IBSI code."""
    workdir = prepare_study(tmp_path, patients=2)
    params = yaml.safe_load((REPO / "params" / "ct.yaml").read_text())
    params["palmares"]["filters"] = [{"filter": "laplacian_of_gaussian", "sigma_mm": 2.0, "truncation": 4.0,
                                      "boundary": "mirror", "dimensions": "3D"}]
    (workdir / "ct_filters.yaml").write_text(yaml.safe_dump(params))
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["params"]["ct"] = str(workdir / "ct_filters.yaml")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(workdir, str(Path("results/tables/dictionary.csv")))
    assert result.returncode == 0, result.stderr[-3000:]
    lesions = pd.read_parquet(workdir / "results/features/lesions.parquet")
    filtered = [c for c in lesions.columns if c.startswith("log_s2__firstorder_")]
    assert len(filtered) == 16 and "log_s2__firstorder_Mean_Q4LE" in filtered  # ct.yaml's firstorder list
    ct = lesions[lesions["modality"] == "ct"]
    assert ct[filtered].notna().all().all() and lesions.loc[lesions["modality"] == "pet", filtered].isna().all().all()
    dictionary = pd.read_csv(workdir / "results/tables/dictionary.csv", keep_default_na=False)
    row = dictionary[(dictionary["column"] == "log_s2__firstorder_Mean_Q4LE") & (dictionary["table"] == "lesions")]
    assert row["ibsi_code"].tolist() == ["Q4LE"]
    assert "laplacian_of_gaussian (IBSI 2 L6PA): sigma_mm 2.0, truncation 4.0; boundary mirror; 3D" in \
        row["description"].iloc[0]
    patients = pd.read_parquet(workdir / "results/tables/patients.parquet")
    assert any(c.startswith("ct_") and "log_s2__firstorder_Mean_Q4LE" in c for c in patients.columns)


def test_the_workflow_is_snakefmt_formatted_and_lint_clean(tmp_path: Path) -> None:
    """The anchor workflows' CI habits: `snakefmt --check` and `snakemake --lint` with nothing to say."""
    formatted = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "workflow"],
                               cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    prepare_study(tmp_path, patients=1)
    lint = _snakemake(tmp_path, "--lint")
    said = lint.stdout + lint.stderr
    assert lint.returncode == 0 and "Congratulations, your workflow is in a good condition!" in said, said[-4000:]
