"""A folder de-identified at once (:func:`deidentify_tree`): walking, duplicates, the output marker, manifest, audit.

Outputs: ``<out>/<pseudonym>/<StudyUID'>/<Modality>_<SeriesUID'>/<SOPUID'>.dcm`` (names from pseudonyms and new
UIDs only), a PHI-free manifest and a key-fingerprint marker (:data:`OUTPUT_MARKER`: an output folder is never shared
by two keys) in the output folder, and a per-series audit in a PHI work-area folder (default
``<out>_audit`` beside the output, never inside it). The key and the date shift are written nowhere.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

from ..errors import ConfigError, DeidentificationError
from ..files import sha256_file, write_json, write_text
from .engine import DeidContext
from .records import REASONS, DeidResult, DeidSummary
from .table import METHOD_CODES, PROFILE_VERSION, SUPPORTED_OPTIONS
from .writer import deidentify_file

# The package's logger, as before the module was split: log lines still name palmares_radiomics.deid.
logger = logging.getLogger(__package__)


def _iter_files(in_dir: Path, avoid: tuple[Path, ...] = ()) -> list[tuple[Path, str]]:
    """Every entry under ``in_dir``, sorted: ``(path, "")`` for a file to de-identify (a link to a file included),
    ``(path, reason code)`` for one that is not read (:data:`REASONS`: a dangling link, a device, a loop).

    Links to folders are followed (an export tool or a mounted PACS share often links series folders), each real
    folder read once (its device and inode), so a loop ends; links into ``avoid`` (the output and audit folders)
    are not followed. Paths keep the names under ``in_dir`` (the link's, not its target's).
    """
    entries: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        real = folder.resolve()
        if any(real == a or a in real.parents for a in avoid):
            entries.append((folder, "output_folder_link"))
            return
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                entries.append((folder, "folder_visited"))
                return
            seen.add((info.st_dev, info.st_ino))
            children = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            entries.append((folder, "unreadable_folder"))
            return
        for entry in children:
            path = Path(entry.path)
            try:
                is_dir, is_file, is_link = entry.is_dir(), entry.is_file(), entry.is_symlink()
            except OSError:
                entries.append((path, "unreadable"))
                continue
            if is_dir:
                visit(path)
            elif is_file:
                entries.append((path, ""))
            else:
                entries.append((path, "dangling_link" if is_link and not path.exists() else "not_regular_file"))

    visit(in_dir)
    return sorted(entries)


#: Marker file in a de-identified output folder: which key wrote it, as a fingerprint (never the key).
OUTPUT_MARKER = "deid_output.json"
_FINGERPRINT_MESSAGE = b"palmares-deid output folder key check v1"


def key_fingerprint(key: bytes) -> str:
    """HMAC-SHA256 of a fixed string with the study key: tells two keys apart, gives nothing of the key away."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


def _claim_output(out_dir: Path, ctx: DeidContext) -> None:
    """Refuse an output folder that already holds something else than an earlier run with this key; mark it.

    Two keys' outputs side by side would be linkable (the same scans under two pseudonyms); any other non-empty
    folder is refused too (nothing there can be vouched for). An empty or new folder, or one an earlier run with
    the same key wrote (a rerun), is accepted and marked with :data:`OUTPUT_MARKER`.
    """
    fingerprint = key_fingerprint(ctx.key)
    if out_dir.exists() and not out_dir.is_dir():
        raise DeidentificationError(f"the output {out_dir} is a file, not a folder: choose an empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        marker = out_dir / OUTPUT_MARKER
        try:
            found = json.loads(marker.read_text(encoding="utf-8")).get("key_fingerprint")
        except (OSError, ValueError, AttributeError):
            found = None
        if found is None:
            raise DeidentificationError(
                f"the output folder {out_dir} is not empty and was not written by palmares deid: de-identify into "
                "an empty folder")
        if not hmac.compare_digest(str(found), fingerprint):
            raise DeidentificationError(
                f"the output folder {out_dir} holds files de-identified with another key: the two outputs side by "
                "side would be linkable; de-identify into an empty folder")
    write_json(out_dir / OUTPUT_MARKER, {"written_by": PROFILE_VERSION, "key_fingerprint": fingerprint})


def _settle_duplicates(results: list[DeidResult], out_dir: Path) -> None:
    """Make what is on disk and the audit agree when input files share a SOP Instance UID (in place).

    Identical files (same bytes): the first (in path order) is the one written, the others are ``ignored`` as
    ``duplicate_instance``. Different files: none is kept: every one is ``skipped`` as ``conflicting_instance`` and
    what they wrote is deleted (a last-writer-wins file would not be the one the audit names).
    """
    groups: dict[str, list[int]] = {}
    for index, result in enumerate(results):
        if result.status == "written" and result.audit is not None:
            groups.setdefault(result.audit.sop_instance_uid, []).append(index)
    for indices in groups.values():
        if len(indices) < 2:
            continue
        identical = len({sha256_file(results[i].source) for i in indices}) == 1
        if identical:
            for i in indices[1:]:
                results[i] = DeidResult(results[i].source, "ignored", reason_code="duplicate_instance",
                                        reason=REASONS["duplicate_instance"], audit=results[i].audit)
            continue
        for output in {results[i].output for i in indices if results[i].output is not None}:
            output.unlink(missing_ok=True)
            for parent in output.parents:  # series, study, patient folders left empty
                if parent == out_dir or out_dir not in parent.parents or any(parent.iterdir()):
                    break
                parent.rmdir()
        for i in indices:
            results[i] = DeidResult(results[i].source, "skipped", reason_code="conflicting_instance",
                                    reason=f"conflicting_instance: {REASONS['conflicting_instance']} "
                                           f"({len(indices)} files)", audit=results[i].audit)


def default_audit_dir(out_dir: Path) -> Path:
    """Default PHI audit folder: a sibling of ``out_dir`` named ``<out_dir name>_audit`` (never inside it)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}_audit"


def deidentify_tree(in_dir: Path, out_dir: Path, ctx: DeidContext, audit_dir: Path | None = None,
                    workers: int = 1) -> DeidSummary:
    """De-identify every file under ``in_dir`` into ``out_dir``; one bad file never stops the others.

    Writes ``out_dir/deid_manifest.csv`` and ``deid_manifest.json`` (no PHI: pseudonyms, new UIDs, counts and
    reason codes) and, in ``audit_dir`` (PHI work area, default :func:`default_audit_dir`),
    ``deid_series.json`` (one record per series) and ``deid_files.csv`` (one row per input file).
    ``workers`` > 1 de-identifies files in that many processes (same outputs, in the same order).

    ``out_dir`` must be empty, new, or written by an earlier run with the same key (:func:`_claim_output`:
    :class:`DeidentificationError` otherwise). Links to folders are followed once each; dangling links and other
    entries that are not files get a result with a reason (:func:`_iter_files`). Input files sharing a SOP Instance
    UID: an identical copy is ``ignored``, different files are all ``skipped`` and nothing of them is written
    (:func:`_settle_duplicates`), so the output, the manifest and the audit always agree.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer. Found: {workers!r}")
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    audit_dir = Path(audit_dir).resolve() if audit_dir is not None else default_audit_dir(out_dir)
    if not in_dir.is_dir():
        raise ConfigError(f"input folder {in_dir} does not exist")
    for inner, outer, what in ((out_dir, in_dir, "output"), (in_dir, out_dir, "input"),
                               (audit_dir, out_dir, "audit")):
        if inner == outer or outer in inner.parents:
            raise ConfigError(f"the {what} folder must not be inside the {'input' if what == 'output' else 'output'} "
                              f"folder: choose separate folders ({inner} vs {outer})")
    _claim_output(out_dir, ctx)
    entries = _iter_files(in_dir, (out_dir, audit_dir))
    paths = [path for path, code in entries if not code]
    workers = min(workers, len(paths))  # never more processes than files
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(deidentify_file, paths, repeat(out_dir), repeat(ctx),
                                     chunksize=max(1, min(32, len(paths) // (4 * workers)))))
    else:
        outcomes = [deidentify_file(path, out_dir, ctx) for path in paths]
    done = iter(outcomes)
    results = [next(done) if not code else
               DeidResult(path, "ignored" if code in ("folder_visited", "output_folder_link") else "skipped",
                          reason_code=code, reason=f"{code}: {REASONS[code]}")
               for path, code in entries]
    _settle_duplicates(results, out_dir)
    for result in results:
        logger.debug("%s %s %s", result.audit.patient if result.audit else "-", result.status, result.reason_code)
    summary = DeidSummary(tuple(results), out_dir / "deid_manifest.csv", out_dir / "deid_manifest.json", audit_dir)
    _write_manifest(summary, ctx, out_dir)
    _write_audit(summary, ctx, in_dir, out_dir, audit_dir)
    logger.info("de-identified %d files (%d skipped, %d quarantined, %d ignored); details in the audit folder",
                summary.count("written"), summary.count("skipped"), summary.count("quarantined"),
                summary.count("ignored"))
    return summary


def _csv_text(header: list[str], rows: Iterable[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_manifest(summary: DeidSummary, ctx: DeidContext, out_dir: Path) -> None:
    """PHI-free manifest: what was published (pseudonyms and new UIDs only) and counts of what was not."""
    rows = sorted(
        [r.audit.patient, r.audit.modality, r.audit.study_uid, r.audit.series_uid, r.audit.sop_instance_uid,
         r.audit.sop_class_uid, r.output.relative_to(out_dir).as_posix(), r.output.stat().st_size]
        for r in summary.results if r.status == "written" and r.audit and r.output
    )
    header = ["patient", "modality", "study_uid", "series_uid", "sop_instance_uid", "sop_class_uid", "path", "bytes"]
    write_text(summary.manifest_csv, _csv_text(header, rows))
    write_json(summary.manifest_json, {
        "profile_version": ctx.profile_version,
        "options": sorted(ctx.options),
        "method_codes": [METHOD_CODES["basic"][0]] + [METHOD_CODES[o][0] for o in SUPPORTED_OPTIONS
                                                      if o in ctx.options],
        "files": {s: summary.count(s) for s in ("written", "skipped", "quarantined", "ignored")},
        "not_written_by_reason": summary.reasons,
        "patients": len({row[0] for row in rows}),
        "series": len({row[3] for row in rows}),
    })


def _write_audit(summary: DeidSummary, ctx: DeidContext, in_dir: Path, out_dir: Path, audit_dir: Path) -> None:
    """PHI work area: one record per series (no date shift) and one row per input file with its reason."""
    series: dict[tuple[str, str], dict[str, object]] = {}
    uid_sets: dict[tuple[str, str], set[str]] = {}
    for result in summary.results:
        audit = result.audit
        if audit is None:
            continue
        key = (audit.patient, audit.series_uid)
        record = series.setdefault(key, {
            "patient": audit.patient, "site": audit.site, "source_patient_id": audit.source_patient_id,
            "modality": audit.modality, "source_study_uid": audit.source_study_uid,
            "source_series_uid": audit.source_series_uid, "study_uid": audit.study_uid,
            "series_uid": audit.series_uid, "files": Counter(), "actions": Counter(),
            "private_removed": 0, "private_kept": 0, "dates_shifted": 0,
            "profile_version": audit.profile_version, "warnings": set(),
        })
        record["files"][result.status] += 1  # type: ignore[index]
        if result.status == "written":
            record["actions"].update(audit.actions)  # type: ignore[union-attr]
            record["private_removed"] += audit.private_removed  # type: ignore[operator]
            record["private_kept"] += audit.private_kept  # type: ignore[operator]
            record["dates_shifted"] += audit.dates_shifted  # type: ignore[operator]
            record["warnings"].update(audit.warnings)  # type: ignore[union-attr]
            uid_sets.setdefault(key, set()).update(audit.remapped_uids)
    records = []
    for key, record in sorted(series.items()):
        record["uid_map_count"] = len(uid_sets.get(key, ()))
        record["files"] = dict(sorted(record["files"].items()))  # type: ignore[union-attr]
        record["actions"] = dict(sorted(record["actions"].items()))  # type: ignore[union-attr]
        record["warnings"] = sorted(record["warnings"])  # type: ignore[arg-type]
        records.append(record)
    write_json(audit_dir / "deid_series.json", {"profile_version": ctx.profile_version, "site": ctx.site,
                                                "series": records})
    rows = [[_file_name(r.source.relative_to(in_dir).as_posix() if r.source.is_relative_to(in_dir)
                        else str(r.source)),
             r.status, r.reason_code, r.reason, r.audit.patient if r.audit else "",
             r.output.relative_to(out_dir).as_posix() if r.output else ""] for r in summary.results]
    write_text(audit_dir / "deid_files.csv",
               _csv_text(["source", "status", "reason_code", "reason", "patient", "output"], rows))


def _file_name(name: str) -> str:
    """A file name for the (UTF-8) audit: a name whose bytes are not UTF-8 (``os.fsdecode`` keeps them as lone
    surrogates, which no UTF-8 writer accepts) is written with those bytes escaped (``Rossi_\\xe8.dcm``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
