"""Resume after a hard kill: release the Snakemake lock left by a run whose process is gone.

Snakemake locks its working directory (``.snakemake/locks/``) for the length of a run and removes
the lock when it ends, also on Ctrl-C. A ``kill -9``, an out-of-memory kill or a lost login
session leaves the lock behind, and the next run refuses to start until someone runs
``--unlock``. To make "the same command resumes" true, the workflow records which process holds
the lock (``record_owner``, from ``onstart``, i.e. only in a real run that has taken the lock) and,
at the next start, ``release_stale_lock`` removes the lock only when all of these hold:

* the recorded owner ran on this host and that process no longer exists (or the PID now belongs
  to a process started later), so a run on another node of a shared filesystem is never touched;
* no lock file is newer than the owner record, so a run that has just taken the lock but not yet
  recorded itself is never touched.

Anything else is left to Snakemake, which then reports the lock as usual.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import write_json

OWNER_FILE = "palmares-lock-owner.json"


@dataclass(frozen=True, slots=True)
class LockOwner:
    """The process holding a working directory's Snakemake lock: host, PID and the PID's start time."""

    host: str
    pid: int
    start_ticks: int

    @classmethod
    def this_process(cls) -> LockOwner:
        """The current process as a lock owner."""
        return cls(socket.gethostname(), os.getpid(), process_start_ticks(os.getpid()))

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


def record_owner(snakemake_dir: Path) -> Path:
    """Record the current process as the owner of ``snakemake_dir``'s lock (call while holding it)."""
    return write_json(Path(snakemake_dir) / OWNER_FILE, asdict(LockOwner.this_process()))


def release_stale_lock(snakemake_dir: Path) -> bool:
    """Remove ``snakemake_dir``'s lock files when their recorded owner is gone (see the module docstring).

    Returns True when a stale lock was removed (the caller says so to the user).
    """
    snakemake_dir = Path(snakemake_dir)
    owner_path = snakemake_dir / OWNER_FILE
    locks = sorted((snakemake_dir / "locks").glob("*.lock"))
    if not locks or not owner_path.is_file():
        return False
    try:
        owner = LockOwner(**json.loads(owner_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return False
    recorded = owner_path.stat().st_mtime_ns
    if not owner.is_gone() or any(lock.stat().st_mtime_ns > recorded for lock in locks):
        return False
    for lock in locks:
        lock.unlink(missing_ok=True)
    owner_path.unlink(missing_ok=True)
    return True
