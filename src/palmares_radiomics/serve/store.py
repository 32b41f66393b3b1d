"""Versioned segmentation uploads where the DAG reads them: atomic, locked per patient, never overwritten.

The current segmentation of a patient and modality is the one file in
``<segmentations>/<site>/<patient_id>/<modality>/`` (the folder the intake checkpoint lists and the
mask stage de-identifies), under a canonical name: ``segmentation.nii.gz``, ``segmentation.nii``,
``segmentation.nrrd`` or ``segmentation.dcm`` (a DICOM-SEG or RTSTRUCT, told apart by its SOP class).
Every accepted upload is also kept, beside it, in ``versions/v0001.<ext>``, ``v0002.<ext>``, ...;
``versions/history.jsonl`` holds one line per attempt (accepted or refused) with its verdict, so the
page can show the history. A sub-folder and hidden files are never taken for a segmentation by the DAG.

Commits take an exclusive ``fcntl`` lock per patient (``work/phi/uploads/locks/<site>/<patient>.lock``),
so twenty concurrent uploads become twenty versions, none lost. The new current file is written
under a hidden temporary name and renamed into place: a Snakemake run listing the folder at the same
moment sees the old complete file or the new complete file, never half of one. A file of another
format (or put there by hand) that the new one replaces is moved into ``versions/`` first, not deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Upload formats recognised by content (never by the client's file name), with the suffix they are stored with.
NIFTI, NIFTI_GZ, NRRD, DICOM = "nii", "nii.gz", "nrrd", "dcm"
CANONICAL_STEM = "segmentation"
VERSIONS = "versions"
HISTORY = "history.jsonl"
_VERSION_FILE = re.compile(r"^v(\d{4,})\.")


def sniff_format(path: Path) -> str | None:
    """The upload's format from its first bytes: NIfTI-1/2 (plain or gzipped), NRRD or DICOM Part 10; else None.

    NIfTI: ``sizeof_hdr`` 348 (NIfTI-1) or 540 (NIfTI-2) in either byte order, and the magic ``n+1``/``ni1``
    (``n+2``/``ni2``); a gzip stream is opened and its first bytes checked the same way. NRRD: ``NRRD000``.
    DICOM: ``DICM`` at byte 128 (the Part 10 preamble every SEG and RTSTRUCT export carries).
    """
    with open(path, "rb") as handle:
        head = handle.read(544)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                inner = handle.read(544)
        except (OSError, EOFError):
            return None
        return NIFTI_GZ if _is_nifti(inner) else None
    if _is_nifti(head):
        return NIFTI
    if head.startswith(b"NRRD000"):
        return NRRD
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    return None


def _is_nifti(head: bytes) -> bool:
    if len(head) < 348:
        return False
    size_le, size_be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    if 348 in (size_le, size_be):
        return head[344:347] in (b"n+1", b"ni1")
    if 540 in (size_le, size_be):
        return head[4:7] in (b"n+2", b"ni2")
    return False


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
            current = folder / f"{CANONICAL_STEM}.{fmt}"
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            for i, other in enumerate(sorted(p for p in folder.iterdir() if p.is_file() and p != current
                                             and not p.name.startswith("."))):
                # another format's current file, or one put there by hand: kept, never deleted
                if not _same_content(other, versions):
                    os.replace(other, versions / f"replaced-{stamp}-{i}{_suffix(other)}")
                else:
                    other.unlink()
            _copy_atomic(kept, current)
            self._append(folder, {**entry, "version": version, "accepted": True, "file": kept.name})
        return Commit(version, current, kept)

    @staticmethod
    def _append(folder: Path, entry: dict[str, Any]) -> None:
        versions = folder / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        with open(versions / HISTORY, "a", encoding="utf-8") as handle:  # one write per line, under the lock
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a hidden temporary file in ``dst``'s folder, then rename it into place."""
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def _same_content(path: Path, versions: Path) -> bool:
    """True when ``path`` is byte-identical to a version already kept (a previous upload's current file)."""
    size = path.stat().st_size
    digest = None
    for kept in versions.glob("v*.*"):
        if _VERSION_FILE.match(kept.name) and kept.stat().st_size == size:
            digest = digest or _sha256(path)
            if _sha256(kept) == digest:
                return True
    return False


def _sha256(path: Path) -> str:
    from ..files import sha256_file

    return sha256_file(path)
