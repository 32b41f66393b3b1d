"""Versioned segmentation uploads where the DAG reads them: atomic, locked per patient, never overwritten.

The current segmentation of a patient and modality is the one file in
``<segmentations>/<site>/<patient_id>/<modality>/`` (the folder the intake checkpoint lists and the
mask stage de-identifies), always called ``segmentation`` whatever its format: the mask stage tells a
NIfTI, NRRD, DICOM-SEG or RTSTRUCT apart by content. One name for every format means a new file replaces
the old one with a single atomic rename: a Snakemake run listing the folder at any moment sees exactly
one complete file, never none, two, or half of one. Every accepted upload is also kept, beside it, in
``versions/v0001.<ext>``, ``v0002.<ext>``, ... (with the format's suffix, for people and tools), and
``versions/history.jsonl`` holds one line per attempt (accepted or refused) with its verdict, so the page
can show the history. The DAG never takes a sub-folder or a hidden file for a segmentation.

Commits take an exclusive ``fcntl`` lock per patient (``work/phi/uploads/locks/<site>/<hash>.lock``), so
twenty concurrent uploads become twenty versions, none lost. A file put in the folder by hand (any other
name, or a ``segmentation`` that is no kept version) is moved into ``versions/replaced-<time>-<n>`` first:
kept, never deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_path, sha256_file

CANONICAL_NAME = "segmentation"
VERSIONS = "versions"
HISTORY = "history.jsonl"
_VERSION_FILE = re.compile(r"^v(\d{4,})\.")


@dataclass(frozen=True, slots=True)
class Commit:
    """What :meth:`UploadStore.commit` stored: the version number and where the DAG now reads it."""

    version: int
    current: Path
    kept: Path


class UploadStore:
    """Segmentation folders of one study (``segmentations`` in the config) with their version history."""

    def __init__(self, segmentations: Path, locks: Path) -> None:
        self.segmentations = Path(segmentations)
        self.locks = Path(locks)

    def folder(self, site: str, patient_id: str, modality: str) -> Path:
        """The folder the DAG reads this patient's segmentation of ``modality`` from."""
        return self.segmentations / site / patient_id / modality

    @contextlib.contextmanager
    def patient_lock(self, site: str, patient_id: str) -> Iterator[None]:
        """Exclusive lock for one patient (all modalities), across threads and processes of this host."""
        digest = hashlib.sha256(f"{site}\0{patient_id}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
        path = self.locks / site / f"{digest}.lock"  # a hash: local ids may hold characters a file name cannot
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def history(self, site: str, patient_id: str, modality: str) -> list[dict[str, Any]]:
        """Every attempt, oldest first (a line cut short by a crash is skipped)."""
        path = self.folder(site, patient_id, modality) / VERSIONS / HISTORY
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def record_refusal(self, site: str, patient_id: str, modality: str, entry: dict[str, Any]) -> None:
        """Append a refused attempt to the history (nothing is written where the DAG reads)."""
        with self.patient_lock(site, patient_id):
            self._append(self.folder(site, patient_id, modality), {**entry, "version": None, "accepted": False})

    def commit(self, site: str, patient_id: str, modality: str, upload: Path, fmt: str,
               entry: dict[str, Any]) -> Commit:
        """Store an accepted upload as the next version and make it the current segmentation, atomically."""
        folder = self.folder(site, patient_id, modality)
        versions = folder / VERSIONS
        with self.patient_lock(site, patient_id):
            versions.mkdir(parents=True, exist_ok=True)
            version = 1 + max((int(m.group(1)) for p in versions.iterdir() if (m := _VERSION_FILE.match(p.name))),
                              default=0)
            kept = versions / f"v{version:04d}.{fmt}"
            _copy_atomic(upload, kept)
            current = folder / CANONICAL_NAME
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            others = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            for i, other in enumerate(others):
                if other == current and _same_content(other, versions):
                    continue  # the previous upload: already kept as its version, replaced by the rename below
                # a file put there by hand (or an older name): kept, never deleted
                os.replace(other, versions / f"replaced-{stamp}-{i}{_suffix(other)}")
            _copy_atomic(kept, current)
            self._append(folder, {**entry, "version": version, "accepted": True, "file": kept.name})
        return Commit(version, current, kept)

    @staticmethod
    def _append(folder: Path, entry: dict[str, Any]) -> None:
        versions = folder / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        with open(versions / HISTORY, "a+b") as handle:  # one write per line, under the lock
            handle.seek(0, os.SEEK_END)
            if handle.tell():  # a line cut short by a crash must not swallow this one
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a hidden temporary file beside it (:func:`~palmares_radiomics.files.atomic_path`),
    flushed to disk before the rename: a reader sees the old file or the whole new one."""
    with atomic_path(dst, suffix=".partial") as tmp:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def _same_content(path: Path, versions: Path) -> bool:
    """True when ``path`` is byte-identical to a version already kept (a previous upload's current file)."""
    size = path.stat().st_size
    digest = None
    for kept in versions.glob("v*.*"):
        if _VERSION_FILE.match(kept.name) and kept.stat().st_size == size:
            digest = digest or sha256_file(path)
            if sha256_file(kept) == digest:
                return True
    return False

