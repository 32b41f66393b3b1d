"""A run killed hard (SIGKILL to snakemake and its jobs) resumes after ``palmares unlock`` and gives the same bytes;
``palmares unlock`` never releases the lock of a run that may still be going."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palmares_radiomics.runlock import OWNERS_DIR, LockInUse, LockOwner, forget_owner, record_owner, run_processes, unlock
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
def test_killed_run_resumes_after_palmares_unlock_to_identical_tables(run: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    for name in ("cohort", "secret.key", "config.yaml"):  # same cohort, key and config as the uninterrupted run
        (shutil.copytree if (run / name).is_dir() else shutil.copy)(run / name, study / name)
    command, env = snakemake_command()
    palmares = [str(Path(sys.executable).parent / "palmares"), "unlock"]
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, cwd=study, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: snakemake and its jobs
        try:
            _wait_for(lambda: any((study / "work/status/features").glob("*.json")), process,
                      "the first patient's features were written")
            busy = subprocess.run(palmares, cwd=study, capture_output=True, text=True, timeout=60)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert busy.returncode == 1 and "still going (Snakemake PID" in busy.stderr, busy.stderr
    assert process.returncode == -signal.SIGKILL
    assert not (study / "results/features/lesions.parquet").exists(), "killed mid-way, before the tables"
    assert list((study / ".snakemake/locks").glob("*.lock")), "a SIGKILL leaves Snakemake's lock behind"
    assert len(list((study / ".snakemake" / OWNERS_DIR).glob("*.json"))) == 1, "the killed run recorded itself"
    assert not list((run / ".snakemake" / OWNERS_DIR).glob("*.json")), "a run that ends drops its owner record"

    refused = subprocess.run(command, cwd=study, env=env, capture_output=True, text=True, timeout=900)
    assert refused.returncode != 0 and "Directory cannot be locked" in refused.stderr, refused.stderr[-3000:]
    released = subprocess.run(palmares, cwd=study, capture_output=True, text=True, timeout=60)
    assert released.returncode == 0 and "removed 2 lock file(s)" in released.stdout, released.stderr
    assert not list((study / ".snakemake" / OWNERS_DIR).glob("*.json")), "the dead run's record went with the lock"
    resumed = subprocess.run(command, cwd=study, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((study / ".snakemake" / OWNERS_DIR).glob("*.json")), "the resumed run dropped its record too"
    for table in TABLES:
        assert (study / table).read_bytes() == (run / table).read_bytes(), f"{table} differs after the resume"
    leftovers = [p for p in (study / "work/status").rglob("*.json") if p.name.startswith(".")]
    assert not leftovers, "a temporary file left by a killed job must never look like a status record"
    again = subprocess.run(palmares, cwd=study, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "is not locked" in again.stdout


def _take_locks(snakemake_dir: Path, n: int) -> list[Path]:
    """Lock files as Snakemake writes them for the run with number ``n`` (``<n>.input.lock``, ``<n>.output.lock``)."""
    (snakemake_dir / "locks").mkdir(parents=True, exist_ok=True)
    locks = [snakemake_dir / "locks" / f"{n}.{kind}.lock" for kind in ("input", "output")]
    for lock in locks:
        lock.write_text(f"work/run{n}/file\n")
    return locks


def _dead_owner() -> LockOwner:
    """An owner on this host whose process has ended (a reaped child)."""
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    return LockOwner(LockOwner.this_process().host, child.pid, 1)


def test_the_lock_of_a_run_killed_on_this_host_is_released_with_its_record(tmp_path: Path) -> None:
    locks = _take_locks(tmp_path / ".snakemake", 0)
    record = _dead_owner().write(tmp_path / ".snakemake")
    assert unlock(tmp_path).removed == tuple(p.name for p in locks)
    assert not (tmp_path / ".snakemake/locks").exists() and not record.exists()
    assert unlock(tmp_path).removed == (), "nothing left to release"


def test_a_live_recorded_run_keeps_its_lock(tmp_path: Path) -> None:
    locks = _take_locks(tmp_path / ".snakemake", 0)
    record_owner(tmp_path / ".snakemake")  # this (living) process, as the workflow's onstart records it
    try:
        with pytest.raises(LockInUse, match=f"Snakemake PID {os.getpid()}"):
            unlock(tmp_path, force=True)
    finally:
        forget_owner(tmp_path / ".snakemake")
    assert all(lock.exists() for lock in locks)


#: A process whose command line is a job's (``python .../palmares stage patient``): a job of a killed Snakemake.
FAKE_JOB = "import time\ntime.sleep(120)\n"


@pytest.mark.parametrize("kind", ["snakemake", "job"])
def test_an_unrecorded_run_or_job_working_in_the_directory_keeps_the_lock(tmp_path: Path, kind: str) -> None:
    """A run that locked but has not recorded itself yet, or a job a killed Snakemake left running."""
    run_dir = tmp_path / "run"
    locks = _take_locks(run_dir / ".snakemake", 0)
    if kind == "snakemake":
        argv = ["bash", "-c", "exec -a snakemake sleep 120"]
    else:
        script = tmp_path / "bin" / "palmares"
        script.parent.mkdir()
        script.write_text(f"#!{sys.executable}\n{FAKE_JOB}")
        script.chmod(0o755)
        argv = [str(script), "stage", "patient", "--patient", "PAL2-0000000000"]
    process = subprocess.Popen(argv, cwd=run_dir)
    try:
        _wait_for(lambda: run_processes(run_dir), process, "the process started")
        what = "Snakemake" if kind == "snakemake" else "a job"
        with pytest.raises(LockInUse, match=f"{what} PID {process.pid}"):
            unlock(run_dir, force=True)
        assert unlock(tmp_path).removed == (), "a process in another folder is no run of this one"
    finally:
        process.kill()
        process.wait()
    assert all(lock.exists() for lock in locks)
    assert len(unlock(run_dir).removed) == 2, "once it has ended, the lock is released"


def test_a_run_recorded_on_another_host_needs_force(tmp_path: Path) -> None:
    locks = _take_locks(tmp_path / ".snakemake", 0)
    record = LockOwner("another-login-node", 1, 0).write(tmp_path / ".snakemake")
    with pytest.raises(LockInUse, match="started on another-login-node .*`palmares unlock --force`"):
        unlock(tmp_path)
    assert all(lock.exists() for lock in locks) and record.exists()
    assert len(unlock(tmp_path, force=True).removed) == 2 and not record.exists()


def test_an_unreadable_record_keeps_the_lock(tmp_path: Path) -> None:
    locks = _take_locks(tmp_path / ".snakemake", 0)
    (tmp_path / ".snakemake" / OWNERS_DIR).mkdir()
    (tmp_path / ".snakemake" / OWNERS_DIR / "broken.json").write_text("{")
    with pytest.raises(LockInUse, match="cannot read the run record"):
        unlock(tmp_path, force=True)
    assert all(lock.exists() for lock in locks)


def test_no_lock_leaves_every_record_alone(tmp_path: Path) -> None:
    """Not locked: nothing to do, and the record of a run elsewhere (maybe live) stays."""
    record = LockOwner("another-login-node", 1, 0).write(tmp_path / ".snakemake")
    assert unlock(tmp_path).removed == () and record.exists()


def test_json_records_are_the_same_bytes_whatever_the_process_hash_seed(tmp_path: Path) -> None:
    """Sets (e.g. the de-identification audit's remapped UIDs) iterate in a per-process order."""
    code = ("import sys; from palmares_radiomics.files import write_json; "
            "write_json(sys.argv[1], {'uids': frozenset(f'2.25.{i}' for i in range(50))})")
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{seed}.json")], check=True, timeout=60,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "2.json").read_bytes()
    assert '"2.25.0",' in (tmp_path / "1.json").read_text(), "a set is written as a sorted list"

