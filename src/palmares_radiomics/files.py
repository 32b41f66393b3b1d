"""Atomic file writes: a reader (or a resumed Snakemake run) never sees half a file; the feature rows a features job
hands to the tables stage (:func:`write_rows`, :func:`read_rows`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The temporary file keeps ``target``'s suffixes by default (writers such as SimpleITK choose the
    format from them); pass ``suffix`` when they do not matter, so that a file left by a killed
    process never matches a glob for the real files (``*.json``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target, suffix=".tmp") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as sorted, indented JSON atomically, so identical inputs give identical bytes."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """JSON form of what ``json`` cannot write: sets as sorted lists (their iteration order changes from
    one process to the next with string hashing), anything else as its text."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write a features job's rows (one dict per lesion) for the tables stage (:func:`read_rows`): JSON with the
    columns in order of first appearance and one list of values per row, a value the row lacks null.

    JSON, not Parquet: writing Parquet imports pandas (pyarrow checks every array for it), 0.4 CPU-s in every
    features job (benchmarks/bench_cohort.py); floats survive JSON exactly (shortest repr), NaN as ``NaN``.
    """
    columns = list(dict.fromkeys(name for row in rows for name in row))
    write_json(path, {"columns": columns, "rows": [[_plain(row.get(name)) for name in columns] for row in rows]})


def _plain(value: Any) -> str | int | float | bool | None:
    """A table value as JSON writes it exactly: numpy scalars as Python numbers; anything else is a bug, refused
    (``write_json`` would write it as text, and the column would become a text column)."""
    import numpy as np  # the tables stage reads rows without it

    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a feature table value must be a number, text or empty, not {type(value).__name__}")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows :func:`write_rows` wrote, as dicts (every column in every row, in the written order)."""
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], values)) for values in table["rows"]]
