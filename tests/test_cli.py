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
