"""Resume after a hard kill: release the Snakemake lock files left by a run whose process is gone.

Snakemake locks its working directory for the length of a run: the run writes its own lock files,
``.snakemake/locks/<n>.input.lock`` and ``<n>.output.lock``, and removes them when it ends, also on
Ctrl-C. Several runs may share a directory when their targets do not overlap, each with its own
files. A ``kill -9``, an out-of-memory kill or a lost login session leaves the files behind, and the
next run refuses to start until someone runs ``--unlock``.

To make "the same command resumes" true without ever touching a live run's lock:

* each run records itself in its own owner record, ``.snakemake/palmares-lock-owners/<host>.<pid>.
  <start>.json``: host, PID, the PID's start time and the names of the lock files *this run*
  created (``record_owner``, from ``onstart``: only a real run, after it has locked);
* a run that ends by itself removes its record (``forget_owner``, from ``onsuccess``/``onerror``),
  so a finished run never speaks for lock files it no longer holds;
* at the next start, ``release_stale_lock`` unlinks lock files only when *every* lock file in the
  directory is held by a dead owner, i.e. named in the record of an owner that ran on this host and
  whose process no longer exists (or whose PID now belongs to a later process), the file being no
  newer than the record (a name reused by a later run is not the dead owner's) and named by no live
  owner's record.

A single lock file not accounted for that way (a live run's, a run that has locked but not yet
recorded itself, a run on another node of a shared filesystem, an unreadable record) and nothing is
removed: Snakemake then reports the lock as usual. Records of dead owners that hold no lock file any
more are deleted. The lock file names come from Snakemake's ``FilePersistence._lockfile`` (read in
``common.smk``); if a Snakemake release renames it, runs record no files and nothing is ever released,
which ``tests/test_resume.py`` (a real ``kill -9`` and resume) detects.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import write_json

#: Folder of ``.snakemake`` holding one owner record per running (or killed) run.
OWNERS_DIR = "palmares-lock-owners"


@dataclass(frozen=True, slots=True)
class LockOwner:
    """A run holding Snakemake lock files: host, PID, the PID's start time and its lock files' names."""

    host: str
    pid: int
    start_ticks: int
    #: Names (in ``.snakemake/locks/``) of the lock files this run created.
    locks: tuple[str, ...] = ()

    @classmethod
    def this_process(cls, locks: Iterable[str | os.PathLike[str]] = ()) -> LockOwner:
        """The current process as the owner of the lock files ``locks`` (paths or names)."""
        names = tuple(sorted(Path(lock).name for lock in locks))
        return cls(socket.gethostname(), os.getpid(), process_start_ticks(os.getpid()), names)

    @property
    def record_name(self) -> str:
        """File name of this owner's record in :data:`OWNERS_DIR` (one per process)."""
        return f"{self.host}.{self.pid}.{self.start_ticks}.json"

    def write(self, snakemake_dir: Path) -> Path:
        """Write this owner's record atomically; returns its path."""
        return write_json(Path(snakemake_dir) / OWNERS_DIR / self.record_name, asdict(self))

    def is_gone(self) -> bool:
        """True when this owner ran on this host and its process no longer exists.

        A PID reused by a later process (different start time) counts as gone; an owner on another
        host is never declared gone, since its process cannot be seen from here.
        """
        if self.host != socket.gethostname():
            return False
        return process_start_ticks(self.pid) != self.start_ticks


def process_start_ticks(pid: int) -> int:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or -1 when there is none.

    A killed process that nobody has reaped yet (a zombie) no longer runs, so it counts as none.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return -1
    # Fields after the command name, which is in parentheses and may hold spaces: state (3), ..., starttime (22).
    fields = stat.rsplit(")", 1)[1].split()
    return -1 if fields[0] in ("Z", "X") else int(fields[19])


def record_owner(snakemake_dir: Path, lock_files: Iterable[str | os.PathLike[str]]) -> Path:
    """Record the current process as the owner of ``lock_files``, the lock files it has just created."""
    return LockOwner.this_process(lock_files).write(snakemake_dir)


def forget_owner(snakemake_dir: Path) -> None:
    """Remove the current process's owner record (the run is ending by itself and Snakemake unlocks)."""
    (Path(snakemake_dir) / OWNERS_DIR / LockOwner.this_process().record_name).unlink(missing_ok=True)


def release_stale_lock(snakemake_dir: Path) -> bool:
    """Remove ``snakemake_dir``'s lock files when dead owners hold all of them (see the module docstring).

    Returns True when stale lock files were removed (the caller says so to the user).
    """
    snakemake_dir = Path(snakemake_dir)
    lock_dir = snakemake_dir / "locks"
    records: dict[Path, tuple[LockOwner, int]] = {}  # record -> (owner, when it was written)
    for path in sorted((snakemake_dir / OWNERS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records[path] = LockOwner(**{**data, "locks": tuple(data["locks"])}), path.stat().st_mtime_ns
        except (OSError, ValueError, TypeError, KeyError):
            return False  # a record being removed, or one we cannot read: its run's files are unknown
    dead = {path: entry for path, entry in records.items() if entry[0].is_gone()}
    live = {name for path, (owner, _) in records.items() if path not in dead for name in owner.locks}
    held: dict[Path, set[str]] = {}  # dead owner's record -> the lock files it still holds
    for path, (owner, recorded) in dead.items():
        files = [lock_dir / name for name in owner.locks if name not in live]
        held[path] = {f.name for f in files if f.is_file() and f.stat().st_mtime_ns <= recorded}
    for path in [p for p, names in held.items() if not names]:
        path.unlink(missing_ok=True)  # a dead owner that holds nothing any more
    locks = sorted(lock_dir.glob("*.lock"))
    stale = set().union(*held.values())
    if not locks or any(lock.name not in stale for lock in locks):
        return False
    for lock in locks:
        lock.unlink(missing_ok=True)
    for path in held:
        path.unlink(missing_ok=True)
    return True
