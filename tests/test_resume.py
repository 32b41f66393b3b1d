"""A run killed hard (SIGKILL to snakemake and its jobs) resumes with the same command and gives the same bytes."""

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

from palmares_radiomics.runlock import OWNERS_DIR, LockOwner, forget_owner, record_owner, release_stale_lock
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
    locks = sorted(p.name for p in (study / ".snakemake/locks").glob("*.lock"))
    assert locks, "a SIGKILL leaves Snakemake's lock behind"
    records = [json.loads(p.read_text()) for p in (study / ".snakemake" / OWNERS_DIR).glob("*.json")]
    assert [r["locks"] for r in records] == [locks], "the killed run recorded exactly the lock files it created"
    assert not list((run / ".snakemake" / OWNERS_DIR).glob("*.json")), "a run that ends drops its owner record"

    resumed = subprocess.run(command, cwd=study, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed the lock left by a killed run" in resumed.stderr
    assert not list((study / ".snakemake" / OWNERS_DIR).glob("*.json")), "the resumed run dropped its record too"
    for table in TABLES:
        assert (study / table).read_bytes() == (run / table).read_bytes(), f"{table} differs after the resume"
    leftovers = [p for p in (study / "work/status").rglob("*.json") if p.name.startswith(".")]
    assert not leftovers, "a temporary file left by a killed job must never look like a status record"


def _take_locks(snakemake_dir: Path, n: int) -> list[Path]:
    """Lock files as Snakemake writes them for the run with number ``n`` (``<n>.input.lock``, ``<n>.output.lock``)."""
    (snakemake_dir / "locks").mkdir(exist_ok=True)
    locks = [snakemake_dir / "locks" / f"{n}.{kind}.lock" for kind in ("input", "output")]
    for lock in locks:
        lock.write_text(f"work/run{n}/file\n")
    return locks


def _dead_owner(locks: tuple[str, ...]) -> LockOwner:
    """An owner on this host whose process has ended (a reaped child)."""
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    return LockOwner(LockOwner.this_process().host, child.pid, 1, locks)


#: Run Y in its own process: take lock files 1.*, record them (onstart), then end normally (onsuccess drops the
#: record, then Snakemake removes the files) or be killed with SIGKILL (record and files stay).
RUN_Y = """import os, signal, sys
from pathlib import Path
from palmares_radiomics.runlock import forget_owner, record_owner
d = Path(sys.argv[1])
locks = [d / "locks" / f"1.{kind}.lock" for kind in ("input", "output")]
for lock in locks:
    lock.write_text("work/y\\n")
record_owner(d, locks)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
forget_owner(d)
for lock in locks:
    lock.unlink()
"""


def test_a_run_that_ended_never_lets_the_next_start_release_a_live_runs_lock(tmp_path: Path) -> None:
    """Run X (this process) holds its lock; run Y (other targets) locks the same directory and ends normally."""
    x_locks = _take_locks(tmp_path, 0)
    record_owner(tmp_path, x_locks)
    subprocess.run([sys.executable, "-c", RUN_Y, str(tmp_path), "ends"], check=True, timeout=60)
    assert not release_stale_lock(tmp_path), "X is alive: its lock is not Y's to give away"
    assert all(lock.exists() for lock in x_locks)
    assert [p.name for p in (tmp_path / OWNERS_DIR).glob("*.json")] == [LockOwner.this_process().record_name]


def test_a_killed_run_beside_a_live_one_is_released_only_once_the_live_one_ended(tmp_path: Path) -> None:
    x_locks = _take_locks(tmp_path, 0)
    record_owner(tmp_path, x_locks)
    y = subprocess.run([sys.executable, "-c", RUN_Y, str(tmp_path), "kill"], timeout=60)
    assert y.returncode == -signal.SIGKILL
    y_locks = sorted((tmp_path / "locks").glob("1.*.lock"))
    assert len(y_locks) == 2 and len(list((tmp_path / OWNERS_DIR).glob("*.json"))) == 2
    assert not release_stale_lock(tmp_path), "X's live lock is not held by a dead owner: nothing is released"
    assert all(lock.exists() for lock in x_locks + y_locks)
    forget_owner(tmp_path)  # X ends by itself ...
    for lock in x_locks:
        lock.unlink()  # ... and Snakemake removes its lock files
    assert release_stale_lock(tmp_path), "only the killed run's lock is left"
    assert not list((tmp_path / "locks").glob("*.lock")) and not list((tmp_path / OWNERS_DIR).glob("*.json"))


def test_a_lock_whose_owner_is_alive_or_elsewhere_or_unknown_is_kept(tmp_path: Path) -> None:
    locks = _take_locks(tmp_path, 0)
    assert not release_stale_lock(tmp_path), "no owner record (a run that locked but has not recorded itself yet)"
    record_owner(tmp_path, locks)  # this (living) process
    assert not release_stale_lock(tmp_path)
    forget_owner(tmp_path)
    LockOwner("another-node", 1, 0, tuple(p.name for p in locks)).write(tmp_path)
    assert not release_stale_lock(tmp_path), "a process on another host cannot be seen: never declared gone"
    _dead_owner(("0.input.lock",)).write(tmp_path)
    assert not release_stale_lock(tmp_path), "0.output.lock is no dead owner's"
    (tmp_path / OWNERS_DIR / "broken.json").write_text("{")
    assert not release_stale_lock(tmp_path), "an unreadable record: its run's lock files are unknown"
    assert all(lock.exists() for lock in locks)


def test_a_lock_whose_owner_is_gone_is_released_unless_a_newer_run_took_it(tmp_path: Path) -> None:
    """A kill -9: the dead run's record and lock files stay; the next start removes both."""
    locks = _take_locks(tmp_path, 0)
    record = _dead_owner(tuple(p.name for p in locks)).write(tmp_path)
    newer = record.stat().st_mtime_ns + 1_000_000_000
    os.utime(locks[1], ns=(newer, newer))
    assert not release_stale_lock(tmp_path), "a lock newer than the owner record belongs to a later run"
    os.utime(locks[1], ns=(newer - 2_000_000_000, newer - 2_000_000_000))
    assert release_stale_lock(tmp_path)
    assert not list((tmp_path / "locks").glob("*.lock")) and not record.exists()
    assert not release_stale_lock(tmp_path), "nothing left to release"


def test_the_record_of_a_dead_owner_that_holds_no_lock_any_more_is_dropped(tmp_path: Path) -> None:
    """E.g. after ``--unlock``, or a Ctrl-C (Snakemake unlocks, the hooks do not run)."""
    record = _dead_owner(("0.input.lock", "0.output.lock")).write(tmp_path)
    assert not release_stale_lock(tmp_path) and not record.exists()


def test_json_records_are_the_same_bytes_whatever_the_process_hash_seed(tmp_path: Path) -> None:
    """Sets (e.g. the de-identification audit's remapped UIDs) iterate in a per-process order."""
    code = ("import sys; from palmares_radiomics.files import write_json; "
            "write_json(sys.argv[1], {'uids': frozenset(f'2.25.{i}' for i in range(50))})")
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{seed}.json")], check=True, timeout=60,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "2.json").read_bytes()
    assert '"2.25.0",' in (tmp_path / "1.json").read_text(), "a set is written as a sorted list"

