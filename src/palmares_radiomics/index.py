"""Index a raw DICOM export: one row per file with the header fields series selection needs.

Headers only (pixel data is never read), so a site's export of thousands of series indexes in
minutes. Files that are not DICOM, DICOMDIRs and unreadable files are listed with a reason
instead of stopping the run. The index lives in the PHI work area: it holds local identifiers.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from .files import atomic_path

if TYPE_CHECKING:  # pandas is imported where a table is built: the stages that only read EARL text skip its import
    import pandas as pd

#: IndexRow field -> header keyword, for the fields read as they stand.
_FIELD_KEYWORDS = {
    "patient_id": "PatientID", "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID",
    "sop_uid": "SOPInstanceUID", "sop_class_uid": "SOPClassUID", "modality": "Modality",
    "study_date": "StudyDate", "series_date": "SeriesDate", "acquisition_date": "AcquisitionDate",
    "series_time": "SeriesTime", "series_description": "SeriesDescription", "image_type": "ImageType",
    "corrected_image": "CorrectedImage", "units": "Units", "burned_in_annotation": "BurnedInAnnotation",
    "rows": "Rows", "columns": "Columns", "number_of_frames": "NumberOfFrames",
}
#: Header fields read per file (keywords); everything series selection and the later stages need.
INDEX_TAGS = (*_FIELD_KEYWORDS.values(), "ReconstructionMethod")
#: The same by tag (pydicom would look every keyword up again for every file).
_FIELD_TAGS = tuple((name, tag_for_keyword(keyword)) for name, keyword in _FIELD_KEYWORDS.items())
_INDEX_TAG_NUMBERS = sorted(tag_for_keyword(keyword) for keyword in INDEX_TAGS)
_RECONSTRUCTION_METHOD = tag_for_keyword("ReconstructionMethod")
#: EARL accreditation as PET headers state it: "EARL", "EARL1", "EARL 2", "EARL-2", "EARL2 harmonised" ...
_EARL = re.compile(r"\bEARL[\s_-]?([12])?(?![0-9A-Z])", re.IGNORECASE)


def earl_status(*texts: str) -> str:
    """EARL status stated in PET header text (ReconstructionMethod, SeriesDescription): EARL1, EARL2, EARL
    (version not stated) or "" when no text mentions it. There is no standard DICOM attribute for it.

    Read on the PHI side (the index), from the original header: de-identification replaces the
    SeriesDescription, where sites often state it."""
    for text in texts:
        found = _EARL.search(text or "")
        if found:
            return f"EARL{found.group(1) or ''}"
    return ""


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One file of the export: where it is and the header fields selection uses (or why it was skipped)."""

    site: str
    path: str
    status: str
    reason: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    sop_class_uid: str = ""
    modality: str = ""
    study_date: str = ""
    series_date: str = ""
    acquisition_date: str = ""
    series_time: str = ""
    series_description: str = ""
    image_type: str = ""
    corrected_image: str = ""
    units: str = ""
    burned_in_annotation: str = ""
    rows: str = ""
    columns: str = ""
    #: Frames in the file: empty for a single-frame image; a multi-frame one (Enhanced CT/PET) holds a whole volume.
    number_of_frames: str = ""
    #: File size (bytes) and modification time (ns) when indexed: the intake records compare them to notice a
    #: re-exported file (palmares_radiomics.intake).
    size: str = ""
    mtime_ns: str = ""
    #: PET EARL status stated in ReconstructionMethod or SeriesDescription (see earl_status); "" otherwise.
    earl: str = ""


def iter_files(root: Path) -> Iterator[Path]:
    """Every file below ``root`` in a stable order (sorted), following symlinked folders (an export assembled
    from links is read whole) but each real folder once (a link loop ends). Dangling links are yielded too:
    the index records them as unreadable rather than skipping them silently."""
    seen: set[str] = set()
    unlisted: list[str] = []
    for folder, dirs, names in os.walk(root, followlinks=True, onerror=lambda exc: unlisted.append(exc.filename)):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name
    for folder in sorted(f for f in unlisted if f and os.path.realpath(f) != os.path.realpath(root)):
        yield Path(folder)  # a folder that could not be listed: the index records it, never a silent loss


def _text(value: object) -> str:
    """A header value as one line of text (multi-valued joined with a backslash, as in DICOM)."""
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _value(ds: pydicom.Dataset, tag: int) -> object:
    """The decoded value of ``ds``'s element ``tag``; None when it has none."""
    elem = ds.get(tag)
    return None if elem is None else elem.value


def read_index_row(path: Path, site: str) -> IndexRow:
    """Index one file; never raises for a bad file (the row says why it was skipped)."""
    try:
        info = os.stat(path)
    except OSError as exc:  # a dangling link, or a file removed while indexing
        return IndexRow(site, str(path), "skipped", f"unreadable file ({type(exc).__name__})")
    if stat.S_ISDIR(info.st_mode):
        return IndexRow(site, str(path), "skipped", "unreadable folder: its files could not be listed (permissions?)")
    stamp = {"size": str(info.st_size), "mtime_ns": str(info.st_mtime_ns)}
    if path.name.upper() == "DICOMDIR":
        return IndexRow(site, str(path), "skipped", "DICOMDIR (a media directory, not an image)", **stamp)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_INDEX_TAG_NUMBERS)
    except InvalidDicomError:
        return IndexRow(site, str(path), "skipped", "not a DICOM file", **stamp)
    except Exception as exc:  # truncated or corrupt files raise many types inside pydicom
        return IndexRow(site, str(path), "skipped", f"unreadable DICOM ({type(exc).__name__})", **stamp)
    values = {name: _text(_value(ds, tag)).strip() for name, tag in _FIELD_TAGS}
    values.update(site=site, path=str(path), status="ok", reason="", **stamp)
    if values["modality"] == "PT":
        values["earl"] = earl_status(_text(_value(ds, _RECONSTRUCTION_METHOD)), values["series_description"])
    if not values["series_uid"] or not values["sop_uid"]:
        values.update(status="skipped", reason="no SeriesInstanceUID/SOPInstanceUID (not a composite DICOM object)")
    return IndexRow(**values)


def index_tree(root: Path, site: str) -> pd.DataFrame:
    """Index every file under ``root`` (one site's export) into a table of ``IndexRow``."""
    import pandas as pd

    rows = [asdict(read_index_row(path, site)) for path in iter_files(Path(root))]
    columns = [f.name for f in fields(IndexRow)]
    return pd.DataFrame(rows, columns=columns).astype(str)


def write_index(table: pd.DataFrame, out: Path) -> None:
    """Write the index CSV atomically."""
    with atomic_path(out) as tmp:  # a file name that is not UTF-8 is kept byte for byte (surrogate escapes)
        table.to_csv(tmp, index=False, encoding="utf-8", errors="surrogateescape")


def read_index(path: Path) -> pd.DataFrame:
    """Read an index CSV with every column as text (UIDs and dates must not become numbers)."""
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="surrogateescape")
