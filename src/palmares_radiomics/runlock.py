"""Resume after a hard kill: ``palmares unlock`` releases the lock a dead Snakemake run left behind.

Snakemake locks its working directory for the length of a run (``.snakemake/locks/<n>.input.lock``
and ``<n>.output.lock``) and removes the lock when it ends, also on Ctrl-C. A ``kill -9``, an
out-of-memory kill or a lost login session leaves it behind, and the next run refuses to start.
``snakemake --unlock`` removes it whatever holds it; ``palmares unlock`` removes it only when no run
that could still be writing to the directory is found:

* every run records itself in ``.snakemake/palmares-lock-owners/<host>.<pid>.<start>.json`` (host,
  PID and the PID's start time; ``record_owner``, from the workflow's ``onstart``) and drops its
  record when it ends by itself (``forget_owner``, from ``onsuccess``/``onerror``);
* a run whose record names this host and whose process is gone (or whose PID now belongs to a later
  process) is dead; a run recorded on another host cannot be seen from here and counts as alive
  unless the user says it has ended (``--force``, e.g. after the login node it ran on rebooted);
* any Snakemake process on this host whose working directory is the run directory counts as alive,
  recorded or not (a run that has locked but not yet recorded itself, or one started without this
  workflow's hooks), and so does a job (``palmares stage ...``) there: a job of a killed Snakemake may
  run on, and a second run would write the same outputs;
* so does a SLURM job of the user (``squeue --me``) whose working directory is the run directory.

Only public behaviour of Snakemake is relied on: the lock folder it documents in its lock error and
removes on ``--unlock``, and the ``onstart``/``onsuccess``/``onerror`` hooks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import write_json

#: Folder of ``.snakemake`` holding one owner record per running (or killed) run.
OWNERS_DIR = "palmares-lock-owners"


@dataclass(frozen=True, slots=True)
class LockOwner:
    """A Snakemake run of a directory: its host, PID and the PID's start time."""

    host: str
    pid: int
    start_ticks: int

    @classmethod
    def this_process(cls) -> LockOwner:
        """The current process."""
        return cls(socket.gethostname(), os.getpid(), process_start_ticks(os.getpid()))

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


@dataclass(frozen=True, slots=True)
class Unlocked:
    """What :func:`unlock` did: the lock files it removed (none when the directory was not locked)."""

    removed: tuple[str, ...]


class LockInUse(RuntimeError):
    """The directory's lock may belong to a run that is still going: the message says which and what to do."""


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
    """Record the current process as a run of the directory (the workflow's ``onstart``)."""
    return LockOwner.this_process().write(snakemake_dir)


def forget_owner(snakemake_dir: Path) -> None:
    """Remove the current process's record (the run is ending by itself and Snakemake unlocks)."""
    (Path(snakemake_dir) / OWNERS_DIR / LockOwner.this_process().record_name).unlink(missing_ok=True)


def _run_process(argv: list[str]) -> str:
    """What a command line is, when it belongs to a run: "Snakemake" (``snakemake ...``, ``python .../snakemake``,
    ``python -m snakemake``, also a cluster job's), "a job" (``palmares stage ...``), else ""."""
    words = [Path(word).name for word in argv[:3]]
    if "snakemake" in words:
        return "Snakemake"
    if "palmares" in words[:2] and argv[words.index("palmares") + 1 : words.index("palmares") + 2] == ["stage"]:
        return "a job"
    return ""


def run_processes(run_dir: Path) -> list[tuple[int, str]]:
    """(PID, what) of this host's processes of a run working in ``run_dir``: Snakemake and its jobs (a job of a
    killed Snakemake may run on and write its outputs)."""
    target = Path(run_dir).resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            what = _run_process((entry / "cmdline").read_bytes().decode("utf-8", "replace").split("\0"))
            if what and Path(os.readlink(entry / "cwd")) == target:
                found.append((int(entry.name), what))
        except OSError:  # ended meanwhile, or another user's process
            continue
    return sorted(found)


def slurm_jobs(run_dir: Path) -> list[str]:
    """Ids of the user's SLURM jobs (queued or running) whose working directory is ``run_dir``: jobs of a killed
    Snakemake go on running on the cluster. Empty where there is no ``squeue`` or it cannot reach a controller."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return []
    try:
        listed = subprocess.run([squeue, "--me", "--noheader", "--format=%i|%Z"], capture_output=True, text=True,
                                timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    target = Path(run_dir).resolve()
    return [job for job, _, folder in (line.partition("|") for line in listed.splitlines())
            if folder and Path(folder).resolve() == target]


def _records(snakemake_dir: Path) -> dict[Path, LockOwner]:
    """The owner records of the directory; an unreadable one is a refusal (its run is unknown)."""
    records = {}
    for path in sorted((snakemake_dir / OWNERS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records[path] = LockOwner(str(data["host"]), int(data["pid"]), int(data["start_ticks"]))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise LockInUse(f"cannot read the run record {path} ({type(error).__name__}); if no Snakemake run of "
                            "this directory is going on, delete that file and run `palmares unlock` again") from None
    return records


def unlock(run_dir: Path, force: bool = False) -> Unlocked:
    """Remove the Snakemake lock of ``run_dir`` when no run that may still be going is found.

    Raises :class:`LockInUse` naming the live run (PID, or host for a run recorded elsewhere) instead.
    ``force`` also releases a lock whose run was recorded on another host (the user checked it has ended);
    a live Snakemake process on this host is never overridden.
    """
    snakemake_dir = Path(run_dir) / ".snakemake"
    locks = sorted((snakemake_dir / "locks").glob("*.lock"))
    if not locks:
        return Unlocked(())
    records = _records(snakemake_dir)
    here = socket.gethostname()
    live = run_processes(Path(run_dir)) + [(owner.pid, "Snakemake") for owner in records.values()
                                           if owner.host == here and not owner.is_gone()]
    if live:
        named = ", ".join(f"{what} PID {pid}" for pid, what in sorted(set(live)))
        raise LockInUse(f"a run of this directory is still going ({named}): let it finish, or stop it with Ctrl-C "
                        "(Snakemake then unlocks by itself); a job left by a killed Snakemake can be stopped with "
                        "`kill PID`")
    jobs = slurm_jobs(Path(run_dir))
    if jobs:
        raise LockInUse(f"SLURM job(s) {' '.join(jobs)} of this directory are still queued or running: wait for "
                        f"them, or cancel them with `scancel {' '.join(jobs)}`")
    elsewhere = sorted({owner.host for owner in records.values() if owner.host != here})
    if elsewhere and not force:
        raise LockInUse(f"a run of this directory was started on {', '.join(elsewhere)} and may still be going: "
                        "check there (`ps -u $USER | grep snakemake`), then run `palmares unlock --force` if it "
                        "has ended")
    for path in records:  # every recorded run has ended: their records go with the lock
        path.unlink(missing_ok=True)
    shutil.rmtree(snakemake_dir / "locks", ignore_errors=True)  # what `snakemake --unlock` removes
    return Unlocked(tuple(lock.name for lock in locks))
