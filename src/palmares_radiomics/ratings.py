"""Visual QC ratings: reviewers' accept / reject per lesion, read from ``qc_ratings.csv``, applied to the lesion table.

The QC report lets reviewers rate each lesion and downloads the ratings as a CSV with the columns
:data:`RATING_COLUMNS`. With ``qc_ratings: <path>`` in the config the tables stage reads it
(:func:`read_ratings`) and drops the rejected lesions before the patient aggregates are computed
(:func:`apply_ratings`). The exclusion rule is conservative: for each lesion every rater's LAST row
counts (a rater may change their mind), and the lesion is excluded when ANY rater's last rating is
``reject``; one reviewer's doubt is enough to keep a lesion out of the modelling tables.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from .clinical import decode_export
from .errors import RatingsError

#: Columns of the ratings file the QC report downloads (``pseudonym`` is the tables' ``patient``).
RATING_COLUMNS = ("pseudonym", "modality", "lesion_id", "rating", "comment", "rater")
#: Accepted values of ``rating`` (case and surrounding spaces do not matter; empty = not rated, skipped).
RATINGS = ("accept", "reject")
#: Values of ``modality``.
RATING_MODALITIES = ("ct", "pet")
PSEUDONYM_PATTERN = re.compile(r"^PAL2-[0-9A-Z]{10}$")
#: What :func:`read_ratings` returns: the rating columns and ``row``, the file row (header = row 1).
READ_COLUMNS = (*RATING_COLUMNS, "row")
#: ``results/qc/qc_ratings_applied.csv``: every counted rating; ``status`` applied (the lesion is in the lesion
#: table) or unmatched (no such lesion: a typo, or a lesion that failed anyway); ``decision`` the lesion's outcome,
#: excluded or kept (empty when unmatched).
APPLIED_COLUMNS = (*READ_COLUMNS, "status", "decision")
#: One row per excluded lesion: the rejecting rater(s) and comment(s) joined with "; ", and the failure reason.
REJECTED_COLUMNS = ("patient", "modality", "lesion_id", "rater", "comment", "reason")
#: Longest comment quoted in a failure reason, in characters.
MAX_REASON_COMMENT = 200


def no_ratings() -> pd.DataFrame:
    """An empty ratings table (no ``qc_ratings`` in the config): nothing is excluded."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "object") for c in READ_COLUMNS})


def read_ratings(path: str | Path) -> pd.DataFrame:
    """The counted ratings of ``path``: each rater's last row per lesion, with its file row (columns READ_COLUMNS).

    Read as text cells (UTF-8, else cp1252: a file saved again by a spreadsheet). Rows with an empty
    rating are unrated and skipped. Raises :class:`RatingsError` for an empty file, a missing column, a
    row with more cells than the header, a rating other than accept / reject, a modality other than
    ct / pet, a pseudonym that is not ``PAL2-`` + 10 upper-case letters or digits, or an empty lesion_id
    or rater. A repeated header row (several raters' downloads joined) is skipped; rater names are compared
    without regard to case. Messages name the file (not its folder), the row and the column, never a comment.
    """
    label = Path(path).name
    text, _ = decode_export(Path(path).read_bytes())
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records or not any(cell.strip() for cell in records[0]):
        raise RatingsError(f"the ratings file {label} is empty: download it again from the QC report (its header "
                           f"is {', '.join(RATING_COLUMNS)})")
    header = [cell.strip() for cell in records[0]]
    missing = [c for c in RATING_COLUMNS if c not in header]
    if missing:
        raise RatingsError(f"the ratings file {label} row 1 (header) lacks the column(s) {', '.join(missing)}: "
                           f"its header must hold {', '.join(RATING_COLUMNS)}")
    where = {c: header.index(c) for c in RATING_COLUMNS}
    problems: list[str] = []
    rows: list[dict[str, object]] = []
    for number, record in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in record):
            continue
        if [cell.strip() for cell in record] == header:
            continue  # the header again: several raters' downloads joined into one file
        if len(record) > len(header):
            problems.append(f"row {number} has {len(record)} cells but the header {len(header)}: quote a cell "
                            "that holds a comma")
            continue
        cells = {c: (record[i] if i < len(record) else "") for c, i in where.items()}
        rating = cells["rating"].strip().lower()
        if not rating:
            continue  # not rated
        if rating not in RATINGS:
            problems.append(f"row {number}, column rating: {cells['rating'].strip()[:20]!r} is neither accept nor "
                            "reject (case does not matter; leave it empty for a lesion not rated)")
        modality = cells["modality"].strip().lower()
        if modality not in RATING_MODALITIES:
            problems.append(f"row {number}, column modality: {cells['modality'].strip()[:20]!r} is neither ct nor "
                            "pet")
        pseudonym = cells["pseudonym"].strip()
        if not PSEUDONYM_PATTERN.fullmatch(pseudonym):  # the value is not shown: it might be a local patient id
            problems.append(f"row {number}, column pseudonym: not a pseudonym PAL2- followed by 10 upper-case "
                            "letters or digits (never a local patient id)")
        for column in ("lesion_id", "rater"):
            if not cells[column].strip():
                problems.append(f"row {number}, column {column}: empty; every rating needs "
                                + ("the lesion_id of the lesion table" if column == "lesion_id"
                                   else "the rater's name or initials"))
        rows.append({"pseudonym": pseudonym, "modality": modality, "lesion_id": cells["lesion_id"].strip(),
                     "rating": rating, "comment": cells["comment"].strip(), "rater": cells["rater"].strip(),
                     "row": number})
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise RatingsError(f"the ratings file {label} has {len(problems)} invalid cell(s): {shown}; correct them "
                           "(or download the ratings again from the QC report) and rerun")
    if not rows:
        return no_ratings()
    table = pd.DataFrame(rows, columns=list(READ_COLUMNS))
    rater = table["rater"].str.casefold()  # "AB" and "ab " are one rater: a later accept undoes their reject
    last = table[~pd.concat([table[["pseudonym", "modality", "lesion_id"]], rater], axis=1)
                 .duplicated(keep="last")]
    return last.sort_values("row").reset_index(drop=True)


def _one_line(comment: str) -> str:
    """A comment as one line of at most MAX_REASON_COMMENT characters; "no comment" when empty."""
    text = " ".join(str(comment).split())
    if not text:
        return "no comment"
    return text if len(text) <= MAX_REASON_COMMENT else text[:MAX_REASON_COMMENT] + "…"


def apply_ratings(lesions: pd.DataFrame, ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Drop the rejected lesions: ``(kept lesions, rejected, applied)``.

    A lesion (patient, modality, lesion_id) is excluded when any rating of ``ratings`` (as read by
    :func:`read_ratings`: each rater's last) rejects it. ``rejected`` has one row per excluded lesion
    (REJECTED_COLUMNS) with the failure reason ``rejected in visual QC by <rater>: <comment>``;
    ``applied`` is every rating (APPLIED_COLUMNS) with its status, applied or unmatched.
    """
    keys = pd.MultiIndex.from_arrays([lesions["patient"].astype(str), lesions["modality"].astype(str),
                                      lesions["lesion_id"].astype(str)])
    rating_keys = pd.MultiIndex.from_arrays([ratings["pseudonym"].astype(str), ratings["modality"].astype(str),
                                             ratings["lesion_id"].astype(str)])
    matched = rating_keys.isin(keys)
    rejecting = ratings[matched & (ratings["rating"] == "reject").to_numpy()]
    rows = []
    for (patient, modality, lesion_id), group in rejecting.groupby(["pseudonym", "modality", "lesion_id"],
                                                                   sort=True):
        reason = "rejected in visual QC by " + "; by ".join(
            f"{rater}: {_one_line(comment)}" for rater, comment in zip(group["rater"], group["comment"]))
        rows.append({"patient": patient, "modality": modality, "lesion_id": lesion_id,
                     "rater": "; ".join(group["rater"]), "comment": "; ".join(group["comment"]), "reason": reason})
    rejected = pd.DataFrame(rows, columns=list(REJECTED_COLUMNS))
    excluded = pd.MultiIndex.from_arrays([rejected[c].astype(str) for c in ("patient", "modality", "lesion_id")])
    applied = ratings.copy()
    applied["status"] = ["applied" if m else "unmatched" for m in matched]
    applied["decision"] = ["" if not m else "excluded" if k in excluded else "kept"
                           for m, k in zip(matched, rating_keys)]
    kept = lesions[~keys.isin(excluded)].reset_index(drop=True)
    return kept, rejected, applied[list(APPLIED_COLUMNS)].reset_index(drop=True)
