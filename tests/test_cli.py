"""The `palmares` command contract: sub-commands, --help, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from palmares_radiomics.cli import main

CONTRACT = ("synth", "deid", "suv", "features", "check-segmentation")


def _palmares(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "palmares"), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("command", CONTRACT)
def test_every_contract_command_has_help(command: str) -> None:
    result = _palmares(command, "--help")
    assert result.returncode == 0
    assert f"usage: palmares {command}" in result.stdout


def test_top_level_help_lists_the_contract() -> None:
    result = _palmares("--help")
    assert result.returncode == 0 and all(c in result.stdout for c in CONTRACT)


def test_errors_are_one_clear_line_and_non_zero(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc")
    result = _palmares("deid", str(tmp_path), str(tmp_path / "out"), "--site", "IT01", "--key-file", str(short))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("palmares deid: the key in key file")
    assert "abc" not in result.stderr, "the key is never echoed"


def test_deid_workers_must_be_positive(tmp_path: Path) -> None:
    key = tmp_path / "study.key"
    key.write_text("k" * 40)
    result = _palmares("deid", str(tmp_path), str(tmp_path / "out"), "--site", "IT01", "--key-file", str(key),
                       "--workers", "0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "palmares deid: workers must be a positive integer. Found: 0"


def test_deid_workers_default_to_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from palmares_radiomics.cli import _available_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cpus = _available_cpus()
    assert cpus >= 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # a SLURM task given one CPU on a larger node
    assert _available_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4096")
    assert _available_cpus() == cpus


def test_features_on_a_missing_image_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["features", "--image", str(tmp_path / "none.nii.gz"), "--mask", str(tmp_path / "m.nii.gz"),
                 "--params", str(Path(__file__).parents[1] / "params" / "ct.yaml"), "--out", str(tmp_path / "o.csv")])
    assert code == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_the_aggregate_choices_are_the_tables_own() -> None:
    """One list of aggregates, not a copy: the CLI offers the table builder's own constants, and the config schema
    (JSON, which cannot import them) agrees with them."""
    import argparse

    import yaml

    from conftest import REPO
    from palmares_radiomics import tables
    from palmares_radiomics.cli import build_parser

    parser = build_parser()
    for name in ("stage", "tables"):
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    option = next(a for a in parser._actions if a.dest == "aggregates")
    assert option.choices is tables.AGGREGATES
    assert tuple(option.default) == tables.DEFAULT_AGGREGATES
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    entry = schema["properties"]["patient_aggregates"]
    assert tuple(entry["items"]["enum"]) == tables.AGGREGATES and tuple(entry["default"]) == tables.DEFAULT_AGGREGATES


# ------------------------------------------------------------------- PET through the DAG's SUV stage (issue 13)

STS_SUVMAX_GTV_MASS = 7.9107  # SUVbw max in GTV_Mass, TCIA STS_001 (../shared/data/suv/README.md; checked against MIRP)


@pytest.fixture(scope="module")
def sts_pet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real GE Discovery ST FDG PET series of TCIA STS_001 and its RTSTRUCT (image/, mask/1-1.dcm)."""
    import zipfile

    from conftest import shared_path

    root = tmp_path_factory.mktemp("sts")
    with zipfile.ZipFile(shared_path("suv", "dicom", "tcia-sts-001-fdg-pet.zip")) as zf:
        zf.extractall(root)
    return root / "FDG_PET"


def _pet_params(tmp_path: Path, native_grid: bool) -> Path:
    """params/pet.yaml, optionally without resampling (SUVmax on the native grid is what the reference states)."""
    import yaml

    document = yaml.safe_load((Path(__file__).parents[1] / "params" / "pet.yaml").read_text())
    if native_grid:
        document["palmares"]["resampling"] = None
    out = tmp_path / ("pet_native.yaml" if native_grid else "pet.yaml")
    out.write_text(yaml.safe_dump(document))
    return out


def _features(out: Path) -> dict[str, float]:
    import csv

    with out.open(newline="", encoding="utf-8") as handle:
        return {row["feature"]: float(row["value"]) for row in csv.DictReader(handle)}


@pytest.mark.shared
def test_features_on_a_pet_series_are_computed_on_suvbw(sts_pet: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`palmares features` on a PET DICOM folder converts it to SUVbw with the SUV card, as the DAG's image stage."""
    import pydicom

    rtstruct = sts_pet / "mask" / "1-1.dcm"
    assert [r.ROIName for r in pydicom.dcmread(rtstruct).StructureSetROISequence] == ["GTV_Mass", "GTV_Edema"]
    common = ["features", "--image", str(sts_pet / "image"), "--mask", str(rtstruct), "--roi", "GTV_Mass"]
    native = tmp_path / "native.csv"
    assert main([*common, "--params", str(_pet_params(tmp_path, True)), "--out", str(native)]) == 0, \
        capsys.readouterr().err
    values = _features(native)
    assert values["firstorder_Maximum_84IY"] == pytest.approx(STS_SUVMAX_GTV_MASS, abs=1e-3)
    assert values["firstorder_Minimum_1GSF"] == pytest.approx(0.1688, abs=1e-3)  # README: SUVmin 0.1688
    # the study's own PET parameters (3 mm resampling, re-segmentation [0, 100] SUV) no longer empty the ROI
    study = tmp_path / "study.csv"
    assert main([*common, "--params", str(Path(__file__).parents[1] / "params" / "pet.yaml"),
                 "--out", str(study)]) == 0, capsys.readouterr().err
    resampled = _features(study)["firstorder_Maximum_84IY"]
    assert 5.0 < resampled <= values["firstorder_Maximum_84IY"] + 1e-9, "interpolation cannot exceed the native max"


@pytest.mark.shared
@pytest.mark.parametrize(("removed", "reason"), [
    ("weight", r"^PatientWeight \(0010,1030\) is absent: SUV needs the weight in kg, none is assumed$"),
    ("dose", r"^RadionuclideTotalDose \(0018,1074\) is absent: SUV needs the injected activity$"),
])
def test_features_refuse_a_pet_series_the_suv_card_refuses(sts_pet: Path, tmp_path: Path, removed: str, reason: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No weight or no dose: the card's reason, exit 1, one line on stderr, no output file (never raw Bq/ml)."""
    import pydicom

    from palmares_radiomics.errors import SuvError
    from palmares_radiomics.suv import suv_card_for_series
    from palmares_radiomics.volumes import read_study_image

    series = tmp_path / "pet"
    series.mkdir()
    for path in sorted((sts_pet / "image").iterdir()):
        ds = pydicom.dcmread(path)
        if removed == "weight":
            del ds.PatientWeight
        else:
            del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
        ds.save_as(series / path.name)
    card_reason = suv_card_for_series(series).refused_reason
    assert card_reason is not None
    with pytest.raises(SuvError, match=reason):
        read_study_image(series)
    out = tmp_path / "f.csv"
    code = main(["features", "--image", str(series), "--mask", str(sts_pet / "mask" / "1-1.dcm"), "--roi", "GTV_Mass",
                 "--params", str(Path(__file__).parents[1] / "params" / "pet.yaml"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1] == f"palmares features: {card_reason}"
    assert not out.exists()


@pytest.mark.shared
def test_suv_prints_a_text_card_and_json_unchanged(sts_pet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json a readable card; with --json the card's dict exactly as before (keys sorted, indent 2)."""
    import json

    from palmares_radiomics.suv import suv_card_for_series

    series = str(sts_pet / "image")
    assert main(["suv", series, "--json"]) == 0
    printed = capsys.readouterr().out
    card = suv_card_for_series(series)
    assert printed == json.dumps(card.to_json_dict(), indent=2, sort_keys=True, default=str) + "\n"
    data = json.loads(printed)
    assert data["suvbw_scale_factor"] == pytest.approx(0.0002429029766148455, rel=1e-12)  # suv-reference-cases.csv
    assert data["refused_reason"] is None and data["checks"][0]["name"] == "uptake_time"
    assert main(["suv", series]) == 0
    text = capsys.readouterr().out
    assert text == card.to_text() + "\n"
    assert text.splitlines()[0].split() == ["verdict", "converted", "to", "SUVbw"]
    assert "{" not in text and "'" not in text, "no Python dict or repr in the text card"


@pytest.mark.shared
def test_stage_image_applies_the_patients_suv_override(sts_pet: Path, tmp_path: Path) -> None:
    """`palmares stage image --suv-override JSON` (issue 14): a 7.1 kg weight typo is refused without the override,
    converted with it (the card shows it), and an entry without a reason fails the stage with that reason."""
    import json
    import re

    import pydicom

    from palmares_radiomics.stages import StageStatus, read_status, write_status

    series = tmp_path / "deid" / "pet" / "image"
    series.mkdir(parents=True)
    for path in sorted((sts_pet / "image").iterdir()):
        ds = pydicom.dcmread(path)
        ds.PatientWeight = "7.1"
        ds.save_as(series / path.name)
    write_status(tmp_path / "deid.json", StageStatus("deid", "PAL2-AAAAAAAAAA", "", "ok",
                                                     outputs={"dir": str(tmp_path / "deid")},
                                                     details={"modalities": {"pet": {"status": "ok"}}}))
    base = ["stage", "image", "--patient", "PAL2-AAAAAAAAAA", "--modality", "pet", "--deid-status",
            str(tmp_path / "deid.json"), "--out", str(tmp_path / "pet.nii"), "--suv-normalisations"]

    def run(name: str, *extra: str) -> StageStatus:
        assert main([*base, *extra, "--status", str(tmp_path / f"{name}.json")]) == 0
        return read_status(tmp_path / f"{name}.json")

    refused = run("refused")
    assert refused.status == "failed"
    assert re.match(r"implausible SUV input, no SUV computed \(failed check: weight_range\): PatientWeight \(0010,1030\) "
                    r"is 7.1 kg", refused.reason)
    converted = run("override", "--suv-override", json.dumps({"weight_kg": 71, "reason": "7.1 kg is a typo for 71 kg"}))
    assert converted.ok, converted.reason
    card = converted.details["suv_card"]
    assert card["suvbw_scale_factor"] == pytest.approx(0.0002429029766148455, rel=1e-9)  # suv-reference-cases.csv
    assert card["inputs"]["weight_kg"] == 71
    assert card["overrides"]["reason"] == "7.1 kg is a typo for 71 kg"
    assert card["overrides"]["applied"] == {"weight_kg": {"header": 7.1, "used": 71, "action": "replaced"}}
    invalid = run("invalid", "--suv-override", json.dumps({"weight_kg": 71}))
    assert invalid.status == "failed"
    assert invalid.reason == "suv_overrides entry of this patient: an SUV override needs a reason (who decided, on what source)"


# --- check-segmentation: --roi (repeatable), --lesions/--site/--patient (issue 13) ---------------------------


@pytest.fixture()
def clinical_case(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A synthetic CT series, an RTSTRUCT with organs at risk around three lesions GTV_1..3 (ROI Numbers 20-22),
    and a lesion table with this patient's CT rows (and another patient's)."""
    import csv

    from test_masks import clinical_rtstruct, truth_lesions, write_ct_series

    from palmares_radiomics.volumes import read_image

    folder = tmp_path / "ct"
    datasets = write_ct_series(folder)
    image = read_image(folder)
    rt = clinical_rtstruct(datasets, image, truth_lesions(image), tmp_path / "rt.dcm")
    table = tmp_path / "lesions.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site", "patient_id", "modality", "lesion_id", "label", "roi_name", "organ"])
        for n in (1, 2, 3):
            writer.writerow(["IT01", "P1", "ct", f"L{n}", n, f"GTV_{n}", "liver"])
        writer.writerow(["IT01", "P1", "pet", "L1", 1, "GTV_1", "liver"])
        writer.writerow(["IT01", "P2", "ct", "L1", 1, "Liver", "liver"])
    return folder, rt, table


def test_check_segmentation_with_repeated_roi(clinical_case, capsys: pytest.CaptureFixture[str]) -> None:
    folder, rt, _ = clinical_case
    # GTV_3 is 0.14 ml, below the study minimum (tested in test_validate): judged here without a minimum
    code = main(["check-segmentation", str(folder), str(rt), "--roi", "GTV_3", "--roi", "GTV_1",
                 "--min-volume-ml", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("OK: RTSTRUCT") and "2 label(s)" in out
    assert "'GTV_3' (ROI Number 22)" in out.splitlines()[1] and "'GTV_1' (ROI Number 20)" in out.splitlines()[2]
    assert "  info: 'Spinal-Cord' (ROI Number 6): not a lesion, ignored" in out.splitlines()
    assert "  info: 'GTV_2' (ROI Number 21): not a lesion, ignored" in out.splitlines()
    code = main(["check-segmentation", str(folder), str(rt), "--roi", "GTV_1", "--roi", "GTV_9"])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("REFUSED")
    assert "ROI 'GTV_9' was requested but not in the RTSTRUCT" in out


def test_check_segmentation_with_a_lesion_table(clinical_case, capsys: pytest.CaptureFixture[str]) -> None:
    folder, rt, table = clinical_case
    code = main(["check-segmentation", str(folder), str(rt), "--lesions", str(table), "--site", "IT01",
                 "--patient", "P1", "--min-volume-ml", "0"])  # L3 (0.14 ml) is below the study minimum
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 label(s)" in out and "L2" in out
    assert [line for line in out.splitlines() if line.startswith("  info:")] == [
        "  info: 'Body' (ROI Number 1): not a lesion, ignored", "  info: 'Liver' (ROI Number 4): not a lesion, ignored",
        "  info: 'Spinal-Cord' (ROI Number 6): not a lesion, ignored",
        "  info: 'Edema' (ROI Number 7): not a lesion, ignored", "  info: ROI Number 9 (no name): not a lesion, ignored"]
    # P2's lesion is the 'Liver' contour: fine alone (nothing to overlap), so exit 0 with GTV_1..3 ignored
    assert main(["check-segmentation", str(folder), str(rt), "--lesions", str(table), "--site", "IT01",
                 "--patient", "P2", "--modality", "ct"]) == 0
    assert "'GTV_1' (ROI Number 20): not a lesion, ignored" in capsys.readouterr().out


def test_check_segmentation_lesion_table_refusal_exits_1(clinical_case, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder, rt, table = clinical_case
    bad = tmp_path / "bad.csv"
    bad.write_text(table.read_text().replace("GTV_3", "GTV_7"))
    code = main(["check-segmentation", str(folder), str(rt), "--lesions", str(bad), "--site", "IT01",
                 "--patient", "P1"])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("REFUSED")
    assert "ROI 'GTV_7' is in the lesion table (lesion L3) but not in the RTSTRUCT" in out


@pytest.mark.parametrize("extra, message", [
    (["--site", "IT01", "--patient", "P9"], "the patient given by --patient is not in the lesion table for site IT01"),
    (["--site", "IT09", "--patient", "P1"], "the patient given by --patient is not in the lesion table for site IT09"),
    (["--patient", "P1"], "--lesions needs --site and --patient"),
    (["--site", "IT01", "--patient", "P1", "--modality", "pet"], "the lesion table has no PET lesion"),
])
def test_check_segmentation_usage_errors_exit_2(clinical_case, capsys: pytest.CaptureFixture[str],
                                                extra: list[str], message: str) -> None:
    folder, rt, table = clinical_case
    table.write_text(table.read_text().replace("IT01,P1,pet,L1,1,GTV_1,liver\n", ""))
    code = main(["check-segmentation", str(folder), str(rt), "--lesions", str(table), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"palmares check-segmentation: {message}")
    assert "P9" not in err[0]  # the patient id is not echoed


def test_check_segmentation_modality_needed_for_a_volume_file(clinical_case, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import SimpleITK as sitk

    from palmares_radiomics.volumes import read_image

    folder, rt, table = clinical_case
    volume = tmp_path / "ct.nii.gz"
    sitk.WriteImage(read_image(folder), str(volume))
    code = main(["check-segmentation", str(volume), str(rt), "--lesions", str(table), "--site", "IT01",
                 "--patient", "P1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("palmares check-segmentation: give --modality ct or pet: it cannot be "
                                               "read from a volume file")
    assert main(["check-segmentation", str(volume), str(rt), "--lesions", str(table), "--site", "IT01",
                 "--patient", "P1", "--modality", "ct", "--min-volume-ml", "0"]) == 0
    code = main(["check-segmentation", str(folder), str(rt), "--site", "IT01"])
    assert code == 2
    assert "give --lesions too" in capsys.readouterr().err
    result = _palmares("check-segmentation", str(folder), str(rt), "--modality", "mr")
    assert result.returncode == 2 and "invalid choice: 'mr'" in result.stderr


def test_palmares_profile_dir_profiles_a_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PALMARES_PROFILE_DIR (benchmarks/bench_cohort.py --profile): the command runs as usual and leaves its
    cProfile statistics in the folder, named after the command."""
    import pstats

    monkeypatch.setenv("PALMARES_PROFILE_DIR", str(tmp_path / "profiles"))
    assert main(["synth", str(tmp_path / "cohort"), "--patients", "1"]) == 0
    assert (tmp_path / "cohort" / "raw" / "clinical.csv").is_file()
    profile = tmp_path / "profiles" / "synth.prof"
    assert any(function == "synthesize_cohort" for _, _, function in pstats.Stats(str(profile)).stats)


@pytest.mark.parametrize("params, words", [
    (["ct=params/ct.yaml"], "--params names no parameter file for pet: give MODALITY=FILE for each"),
    (["ct=params/ct.yaml", "pet"], "--params takes NAME=VALUE arguments, e.g. ct=params/ct.yaml. Found: 'pet'"),
])
def test_the_patient_job_refuses_a_parameter_list_it_cannot_use(tmp_path: Path, params: list[str], words: str) -> None:
    """`palmares stage patient` (the DAG's job) says in one line which parameter file is missing or malformed, before
    reading anything of the patient."""
    key = tmp_path / "key"
    key.write_text("k" * 64)
    result = _palmares("stage", "patient", "--patient", "PAL2-AAAAAAAAAA", "--work-dir", str(tmp_path / "work"),
                       "--modalities", "ct", "pet", "--params", *params, "--key-file", str(key))
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == f"palmares stage: {words}"
    assert not (tmp_path / "work").exists()
