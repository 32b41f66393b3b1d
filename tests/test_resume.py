"""A run killed hard (SIGKILL to snakemake and its jobs) resumes with the same command and gives the same bytes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palmares_radiomics.runlock import OWNER_FILE, LockOwner, record_owner, release_stale_lock
from test_workflow import run, snakemake_command  # noqa: F401 - `run` is the finished uninterrupted run (fixture)

#: The published tables that must come out byte for byte the same.
TABLES = ("results/features/lesions.parquet", "results/features/lesions.csv", "results/tables/patients.parquet",
          "results/tables/patients.csv", "results/tables/dictionary.csv", "results/qc/failures.csv")


def _wait_for(condition, process: subprocess.Popen, what: str, limit_s: float = 600) -> None:
    """Poll ``condition`` until it holds; fail when the process ends first (or after ``limit_s``, a hang guard)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"snakemake ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"snakemake did not reach '{what}' within {limit_s} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_command_to_identical_tables(run: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    for name in ("cohort", "secret.key", "config.yaml"):  # same cohort, key and config as the uninterrupted run
        (shutil.copytree if (run / name).is_dir() else shutil.copy)(run / name, study / name)
    command, env = snakemake_command()
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, cwd=study, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: snakemake and its jobs
        try:
            _wait_for(lambda: any((study / "work/status/features").glob("*.json")), process,
                      "the first patient's features were written")
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (study / "results/features/lesions.parquet").exists(), "killed mid-way, before the tables"
    assert any((study / ".snakemake/locks").glob("*.lock")), "a SIGKILL leaves Snakemake's lock behind"

    resumed = subprocess.run(command, cwd=study, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed the lock left by a killed run" in resumed.stderr
    for table in TABLES:
        assert (study / table).read_bytes() == (run / table).read_bytes(), f"{table} differs after the resume"
    leftovers = [p for p in (study / "work/status").rglob("*.json") if p.name.startswith(".")]
    assert not leftovers, "a temporary file left by a killed job must never look like a status record"


def test_a_lock_whose_owner_is_alive_or_elsewhere_is_kept(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "0.input.lock").write_text("some/file\n")
    assert not release_stale_lock(tmp_path), "no owner record: left to Snakemake"
    record_owner(tmp_path)  # this (living) process
    assert not release_stale_lock(tmp_path)
    other_host = LockOwner("another-node", 1, 0)
    (tmp_path / OWNER_FILE).write_text(f'{{"host": "{other_host.host}", "pid": 1, "start_ticks": 0}}')
    assert not release_stale_lock(tmp_path), "a process on another host cannot be seen: never declared gone"
    assert (locks / "0.input.lock").exists()


def test_a_lock_whose_owner_is_gone_is_released_unless_a_newer_run_took_it(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "0.output.lock").write_text("some/file\n")
    child = subprocess.Popen(["sleep", "0"])
    owner = LockOwner.this_process()
    child.wait()
    dead = f'{{"host": "{owner.host}", "pid": {child.pid}, "start_ticks": 1}}'
    (tmp_path / OWNER_FILE).write_text(dead)
    newer = (tmp_path / OWNER_FILE).stat().st_mtime_ns + 1_000_000_000
    os.utime(locks / "0.output.lock", ns=(newer, newer))
    assert not release_stale_lock(tmp_path), "a lock newer than the owner record belongs to a starting run"
    os.utime(locks / "0.output.lock", ns=(newer - 2_000_000_000, newer - 2_000_000_000))
    assert release_stale_lock(tmp_path)
    assert not list(locks.glob("*.lock")) and not (tmp_path / OWNER_FILE).exists()


def test_json_records_are_the_same_bytes_whatever_the_process_hash_seed(tmp_path: Path) -> None:
    """Sets (e.g. the de-identification audit's remapped UIDs) iterate in a per-process order."""
    code = ("import sys; from palmares_radiomics.files import write_json; "
            "write_json(sys.argv[1], {'uids': frozenset(f'2.25.{i}' for i in range(50))})")
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{seed}.json")], check=True, timeout=60,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "2.json").read_bytes()
    assert '"2.25.0",' in (tmp_path / "1.json").read_text(), "a set is written as a sorted list"

