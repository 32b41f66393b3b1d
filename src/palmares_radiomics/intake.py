"""What each patient brings into the DAG, as small PHI-side records that change only when the inputs do.

Snakemake decides what to rerun from file modification times, so the inputs of each patient's jobs
must be files whose time changes exactly when that patient's inputs change. After the per-site
index and series selection, the intake writes, in ``work/phi/intake/``:

- ``<patient>.json``: the patient's selected DICOM series (UID and every file with its size and
  modification time), the input of the patient's de-identification job;
- ``<patient>_<modality>.json``: the files in the patient's segmentation folder (name, size,
  modification time) and the patient's lesion-table rows of that modality, the input of the mask job;
- ``patients.csv``: pseudonym -> site and local patient id (where a centre finds its patient);

and, past the PHI boundary, ``work/intake/modalities.csv``: which baseline modalities each patient
has (or why one is absent), without local identifiers.

A record is rewritten only when its content changes (:func:`write_if_changed`), so a new DICOM file,
a re-exported segmentation or an edited lesion-table row reruns exactly the affected patient's jobs.
What triggers the intake itself is a cheap fingerprint of each input tree (:func:`tree_fingerprint`:
names, sizes and modification times, no file is opened) that the workflow passes as a parameter.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import atomic_path, write_json
from .records import LesionSpec

if TYPE_CHECKING:  # imported where a table is built: the mask stage reads only its patient's JSON record
    import pandas as pd

#: Columns of the lesion table (raw/lesions.csv), in the order records keep them.
LESION_COLUMNS = ("site", "patient_id", "modality", "lesion_id", "label", "roi_name", "organ")
#: Columns of work/intake/modalities.csv (no local identifier: it lies past the PHI boundary).
MODALITY_COLUMNS = ["patient", "site", "modality", "status", "reason"]
SELECTED, ABSENT = "selected", "absent"
#: Beside modalities.csv: per site, how many imaged patients have no clinical row (counts only, no identifier).
UNMATCHED_FILE = "unmatched.csv"
UNMATCHED_COLUMNS = ["site", "patients", "series"]


def tree_fingerprint(root: str | os.PathLike[str]) -> str:
    """SHA-256 over (relative path, size, modification time in ns) of every file below ``root``.

    Cheap (directory listings and ``stat`` only, no file is opened) and sensitive to any added, removed,
    renamed, rewritten or touched file. File names are hashed as bytes, so a name that is not UTF-8
    counts like any other. A missing ``root`` has the fingerprint of an empty tree.
    """
    from .index import iter_files

    digest = hashlib.sha256()
    root = Path(root)
    for path in iter_files(root):  # the files the index reads, symlinked folders included
        try:
            info = os.stat(path)
        except OSError:  # dangling link or a file removed while listing: its name still counts
            info = None
        rel = os.fsencode(os.path.relpath(path, root))
        digest.update(rel + b"\0" + (f"{info.st_size}:{info.st_mtime_ns}" if info else "missing").encode() + b"\n")
    return digest.hexdigest()


def write_if_changed(path: Path, record: dict[str, Any]) -> bool:
    """Write ``record`` as JSON unless ``path`` already holds exactly that; True when written."""
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8", errors="surrogateescape") == text:
        return False
    write_json(path, record)
    return True


def _file_entry(path: Path) -> list[Any]:
    """[name or path, size, mtime_ns] of one file (size -1 when it vanished since the listing)."""
    try:
        info = path.stat()
        return [str(path), info.st_size, info.st_mtime_ns]
    except OSError:
        return [str(path), -1, 0]


def segmentation_files(folder: Path) -> list[list[Any]]:
    """The regular files of one segmentation folder, sorted, as [name, size, mtime_ns] (hidden files skipped)."""
    if not folder.is_dir():
        return []
    entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [[p.name, *_file_entry(p)[1:]] for p in entries]


@dataclass(frozen=True, slots=True)
class IntakeSummary:
    """What one intake run found and how many records changed."""

    patients: int
    series: int
    changed: int
    removed: int


def read_lesion_table(path: Path) -> pd.DataFrame:
    """The raw lesion table with every column as text; a missing column is a clear error."""
    import pandas as pd

    from .clinical import decode_export
    from .errors import LesionTableError

    text, _encoding = decode_export(Path(path).read_bytes())  # UTF-8, else cp1252 / Latin-1 (Italian spreadsheets)
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise LesionTableError(f"the lesion table {Path(path).name} is empty: it needs a header row with the columns "
                               f"{', '.join(LESION_COLUMNS)}")
    header = [cell.strip() for cell in rows[0]]
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):  # e.g. an unquoted comma in a name: "Neoplasm, Secondary"
            raise LesionTableError(f"the lesion table {Path(path).name}, row {line}: {len(row)} fields for "
                                   f"{len(header)} columns; put a name holding a comma in double quotes")
    table = pd.DataFrame(rows[1:], columns=header, dtype=str)
    missing = [c for c in LESION_COLUMNS if c not in table.columns and c != "roi_name"]
    if missing:
        raise LesionTableError(f"the lesion table {Path(path).name} lacks the column(s) {', '.join(missing)}; "
                               f"its columns must be {', '.join(LESION_COLUMNS)}")
    if "roi_name" not in table.columns:
        table["roi_name"] = ""
    table = table[list(LESION_COLUMNS)].apply(lambda column: column.str.strip())
    table["site"] = table["site"].str.upper()  # site codes are upper case; modalities lower case (ct, pet)
    table["modality"] = table["modality"].str.lower()
    return table


def run_intake(selections: Sequence[Path], indexes: Sequence[Path], segmentations: Path, lesions_csv: Path,
               modalities: Sequence[str], records_dir: Path, modalities_out: Path) -> IntakeSummary:
    """Write every patient's intake records (only those that changed), the PHI-side patient list and
    the public modality table. Records of patients or modalities no longer present are removed."""
    import pandas as pd

    from .index import read_index

    selection = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in selections] or
                          [pd.DataFrame(columns=["site", "patient_id", "patient", "modality", "status", "reason",
                                                 "series_uid"])])
    index = pd.concat([read_index(p) for p in indexes] or [pd.DataFrame(columns=["series_uid", "status", "path"])])
    index = index[index["status"] == "ok"]
    # a series is the patient's own files at its own site (a UID reused by another centre's or patient's files,
    # e.g. an outside CD imported with its UIDs, must not be mixed in)
    files_of = {key: group for key, group in index.groupby(["site", "patient_id", "series_uid"], sort=False)} \
        if {"site", "patient_id"} <= set(index.columns) else {}
    lesions = read_lesion_table(lesions_csv)
    lesions_of = {key: group for key, group in lesions.groupby(["site", "patient_id", "modality"], sort=False)}
    records_dir.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    changed = series = 0
    people, public = [], []
    for patient, rows in selection.groupby("patient", sort=True):
        site, patient_id = rows.iloc[0]["site"], rows.iloc[0]["patient_id"]
        people.append({"patient": patient, "site": site, "patient_id": patient_id})
        chosen: dict[str, Any] = {}
        for modality in modalities:
            row = rows[rows["modality"] == modality]
            if row.empty or row.iloc[0]["status"] != "ok":
                reason = row.iloc[0]["reason"] if not row.empty else f"no {modality.upper()} selection"
                public.append({"patient": patient, "site": site, "modality": modality, "status": ABSENT,
                               "reason": reason})
                continue
            uid = row.iloc[0]["series_uid"]
            group = files_of.get((site, patient_id, uid), pd.DataFrame(columns=["path", "size", "mtime_ns"]))
            earl = sorted(set(group["earl"]) - {""}) if "earl" in group else []
            chosen[modality] = {"series_uid": uid, "files": _series_files(group), "earl": earl[0] if earl else ""}
            public.append({"patient": patient, "site": site, "modality": modality, "status": SELECTED, "reason": ""})
            folder = Path(segmentations) / site / patient_id / modality
            segmentation = {"patient": patient, "site": site, "patient_id": patient_id, "modality": modality,
                            "folder": str(folder), "files": segmentation_files(folder),
                            "lesions": lesion_rows(lesions_of.get((site, patient_id, modality)))}
            name = f"{patient}_{modality}.json"
            changed += write_if_changed(records_dir / name, segmentation)
            wanted.add(name)
            series += 1
        if chosen:
            name = f"{patient}.json"
            changed += write_if_changed(records_dir / name, {"patient": patient, "site": site,
                                                             "patient_id": patient_id, "series": chosen})
            wanted.add(name)
    removed = 0
    for stale in records_dir.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
            removed += 1
    _write_csv(pd.DataFrame(people, columns=["patient", "site", "patient_id"]), records_dir / "patients.csv")
    _write_csv(pd.DataFrame(public, columns=MODALITY_COLUMNS), Path(modalities_out))
    _write_csv(unmatched_images(index, selection), Path(modalities_out).with_name(UNMATCHED_FILE))
    return IntakeSummary(len(people), series, changed, removed)


def unmatched_images(index: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Per site, the patients (and their series) with image series in the export but no clinical row: counts
    only, for the public patient flow (a centre finds them in its own index, work/phi/index/<SITE>.csv)."""
    import pandas as pd

    from .select import IMAGE_SOP_CLASSES

    classes = set().union(*IMAGE_SOP_CLASSES.values())
    images = index[index["sop_class_uid"].isin(classes)] if "sop_class_uid" in index else index.iloc[:0]
    known = set(zip(selection["site"], selection["patient_id"]))
    rows = []
    for site, group in images.groupby("site", sort=True):
        lost = group[[(site, p) not in known for p in group["patient_id"]]]
        if not lost.empty:
            rows.append({"site": site, "patients": lost["patient_id"].nunique(), "series": lost["series_uid"].nunique()})
    return pd.DataFrame(rows, columns=UNMATCHED_COLUMNS)


def _series_files(group: pd.DataFrame) -> list[list[Any]]:
    """[path, size, mtime_ns] of a series' files, sorted by path (from the index, which stat-ed them)."""
    if {"size", "mtime_ns"} <= set(group.columns):
        entries = [[p, int(s or -1), int(m or 0)] for p, s, m in zip(group["path"], group["size"], group["mtime_ns"])]
    else:  # an index written before these columns existed
        entries = [_file_entry(Path(p)) for p in group["path"]]
    return sorted(entries)


def lesion_rows(rows: pd.DataFrame | None) -> list[dict[str, str]]:
    """The lesion-table rows of one patient and modality as plain dicts, in table order."""
    if rows is None:
        return []
    return [{k: v for k, v in row.items() if k not in ("site", "patient_id")} for row in rows.to_dict("records")]


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8", errors="surrogateescape")


def read_record(path: Path) -> dict[str, Any]:
    """An intake record written by :func:`run_intake`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_patients(path: Path) -> dict[str, str]:
    """pseudonym -> site from ``patients.csv`` (empty when it does not exist yet)."""
    import pandas as pd

    if not Path(path).is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["patient", "site"])
    return dict(zip(table["patient"], table["site"]))


def read_modalities(path: Path) -> list[tuple[str, str]]:
    """The (patient, modality) pairs with a selected baseline series, from ``modalities.csv``."""
    import pandas as pd

    if not Path(path).is_file():
        return []
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table[table["status"] == SELECTED]
    return list(zip(table["patient"], table["modality"]))


def lesion_specs(rows: Sequence[dict[str, str]], modality: str) -> list[LesionSpec]:
    """The lesions of one modality from lesion-table rows; a bad row is a LesionTableError naming it."""
    from .errors import LesionTableError

    lesions = []
    for number, row in enumerate(rows, start=1):
        if row.get("modality", modality) != modality:
            continue
        if not row.get("lesion_id", "").strip():
            raise LesionTableError(f"lesion table, {modality.upper()} row {number} of this patient: lesion_id is empty; "
                                   "give every lesion its own id (e.g. L1)")
        try:
            label = int(row["label"])
        except (TypeError, ValueError):
            raise LesionTableError(f"lesion table, {modality.upper()} lesion {row.get('lesion_id', number)}: label "
                                   f"must be a whole number (the structure's number in the segmentation file). "
                                   f"Found: {row.get('label')!r}") from None
        try:
            lesions.append(LesionSpec(lesion_id=row["lesion_id"], modality=modality, label=label,
                                      organ=row["organ"], roi_name=row.get("roi_name", "")))
        except ValueError as exc:
            raise LesionTableError(f"lesion table: {exc}; correct the row and rerun") from None
    return lesions
