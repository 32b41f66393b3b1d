"""The QC report: a cohort page and one page per site and 50 patients, every lesion seen, every patient accounted for.

``results/qc/report.html`` is the cohort page: the flow from clinical-export rows to the tables with the
reason for every patient lost between steps, feature distributions by centre (before and after ComBat),
missingness per column, HU/SUV outliers by centre, failures and warnings. It links to
``results/qc/report/<SITE>-<n>.html``, each holding up to :data:`PATIENTS_PER_PAGE` patients: per patient and
modality the scanner (batch) variables, the SUV card summary, the PET maximum-intensity projection with
the lesions marked, every failure and warning with its reason; per lesion its pictures before and after
resampling (drawn by the features stage with :mod:`palmares_radiomics.preview`, the upload page's
renderer), its volumes, flags, SUVmax/SUVpeak, the rating it has in ``qc_ratings`` and a rating widget.

Ratings are kept in the browser (``localStorage``, shared by the report's pages) and downloaded as
``qc_ratings.csv`` (pseudonym, modality, lesion_id, rating, comment, rater); named as ``qc_ratings`` in the
config, the next run excludes rejected lesions from the tables (:mod:`palmares_radiomics.ratings`).
Pages refer only to files in ``results/qc/report/`` (images copied beside them, loaded lazily) and open
from disk, with no server and nothing from the network.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..files import write_text
from .plots import distribution_figure, feature_column, flow_figure
from .provenance import harmonisation_record

#: Patients per site page: a page of 50 patients holds about 300 lesions (600 lazily loaded pictures).
PATIENTS_PER_PAGE = 50
#: Lesions whose mean HU (CT) or SUVmax (PET) lies beyond this many interquartile ranges outside the
#: quartiles of all lesions of the modality (Tukey's far-out fences) are listed as outliers, by centre.
OUTLIER_IQR = 3.0
OUTLIER_FEATURES = {"ct": ("firstorder_Mean", "mean HU"), "pet": ("pet_suvmax", "SUVmax")}
REPORT_DIR = "report"


@dataclass
class LesionView:
    """One lesion as its row on a site page."""

    lesion_id: str
    organ: str
    label: int | None = None
    in_table: bool = False
    reason: str = ""  # why it is not in the lesion table (failed features, rejected in QC)
    volume_ml: float | None = None
    volume_ml_resampled: float | None = None
    volume_change_pct: float | None = None
    volume_flag: bool = False
    small: bool = False
    suvmax: float | None = None
    suvpeak: float | None = None
    original: str = ""  # picture path relative to the page
    resampled: str = ""
    picture_note: str = ""
    rating: str = ""  # from qc_ratings: "rejected by ...: ..." / "accepted by ..."


@dataclass
class ModalityView:
    """One patient and modality: where it stands and why."""

    modality: str
    state: str  # "in the tables", "failed at <stage>", "absent"
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scanner: list[tuple[str, str]] = field(default_factory=list)
    suv: list[tuple[str, str]] = field(default_factory=list)
    mip: str = ""
    lesions: list[LesionView] = field(default_factory=list)


@dataclass
class PatientView:
    """One eligible patient on a site page."""

    patient: str
    site: str
    in_table: bool
    modalities: list[ModalityView] = field(default_factory=list)


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                       autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()


def _status(status_dir: Path | None, stage: str, name: str) -> Any:
    from ..records import read_status

    path = status_dir / stage / f"{name}.json" if status_dir else None
    return read_status(path) if path is not None and path.is_file() else None


def _number(value: Any, digits: int = 2) -> str:
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _suv_summary(card: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The SUV card in a few lines: branch, uptake, factors, checks that did not pass cleanly."""
    if not card:
        return []
    rows = [("branch", str(card.get("branch", "–"))),
            ("uptake", f"{card['uptake_s'] / 60:.0f} min" if card.get("uptake_s") else "–"),
            ("decay factor", _number(card.get("decay_factor"), 4)),
            ("SUVbw scale factor", _number(card.get("suvbw_scale_factor"), 6))]
    for name in ("sul_scale_factor", "suvbsa_scale_factor"):
        if card.get(name) is not None:
            rows.append((name.replace("_", " "), _number(card[name], 6)))
    checks = card.get("checks") or []
    rows.append(("checks", ", ".join(f"{c.get('name')}: {c.get('outcome')}" for c in checks) or "–"))
    if card.get("overrides"):
        rows.append(("override", str(card["overrides"].get("reason", ""))))
    return rows


def _copy_picture(source_dir: str, name: str, report_dir: Path, patient: str, modality: str) -> str:
    """Copy a features-stage picture beside the pages; its path relative to a page ("" when absent)."""
    if not name:
        return ""
    source = Path(source_dir) / name
    if not source.is_file():
        return ""
    target = report_dir / "img" / patient / modality / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # a hard link: the report is rebuilt at every ratings edit, 40,000 pictures need not be copied each time
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)
    return f"img/{patient}/{modality}/{name}"


def _ratings_by_lesion(applied: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(pseudonym, modality, lesion_id) -> "rejected by A: comment; accepted by B" from qc_ratings_applied.csv."""
    out: dict[tuple[str, str, str], list[str]] = {}
    if applied.empty or "pseudonym" not in applied:
        return {}
    for row in applied.to_dict("records"):
        if row.get("status", "applied") != "applied":
            continue
        words = f"{row.get('rating', '')}ed by {row.get('rater') or 'an unnamed rater'}"
        if row.get("comment"):
            words += f": {row['comment']}"
        out.setdefault((row["pseudonym"], row["modality"], row["lesion_id"]), []).append(words)
    return {k: "; ".join(v) for k, v in out.items()}


def _modality_view(patient: str, modality: str, status_dir: Path | None, failures: Mapping[tuple[str, str], list],
                   listed: Mapping[tuple[str, str], set], ratings: Mapping[tuple[str, str, str], str],
                   absent: Mapping[tuple[str, str], str], report_dir: Path) -> ModalityView:
    """``failures``: failures.csv rows by (patient, modality); ``listed``: lesion ids in the lesion table by
    (patient, modality) (both indexed once: a per-view DataFrame filter costs minutes over 7,000 views)."""
    name = f"{patient}_{modality}"
    if (patient, modality) in absent:
        return ModalityView(modality, "absent", [absent[(patient, modality)]])
    rows = failures.get((patient, modality), [])
    first = [r for r in rows if not r.get("lesion_id")]
    in_table = listed.get((patient, modality), set())
    state = f"failed at {first[0]['stage']}" if first else ("in the tables" if in_table else "not in the tables")
    view = ModalityView(modality, state, [f"{r['stage']}: {r['reason']}" for r in first])
    image = _status(status_dir, "image", name)
    if image is not None and image.details:
        scanner = image.details.get("scanner") or {}
        view.scanner = [(k.replace("_", " "), _number(v) if isinstance(v, float) else str(v))
                        for k, v in scanner.items() if v not in (None, "")]
        view.suv = _suv_summary(image.details.get("suv_card") or {})
    mask = _status(status_dir, "mask", name)
    if mask is not None:
        view.warnings += [w.get("message", "") for w in mask.details.get("warnings", [])]
        view.warnings += [f"{s}: not a lesion, ignored" for s in mask.details.get("ignored", [])]
    features = _status(status_dir, "features", name)
    qc = (features.details.get("qc") if features is not None else None) or {}
    view.mip = _copy_picture(qc.get("dir", ""), qc.get("mip", ""), report_dir, patient, modality)
    lesion_failures = {r["lesion_id"]: f"{r['stage']}: {r['reason']}" for r in rows if r.get("lesion_id")}
    whole = f"{first[0]['stage']}: {first[0]['reason']}" if first else ""  # the modality failed: each lesion says so
    listed = in_table
    seen: set[str] = set()
    for item in qc.get("lesions", []):
        lesion_id = str(item.get("lesion_id", ""))
        seen.add(lesion_id)
        view.lesions.append(LesionView(
            lesion_id, str(item.get("organ", "")), item.get("label"), lesion_id in listed,
            lesion_failures.get(lesion_id, "" if lesion_id in listed else whole), item.get("volume_ml"), item.get("volume_ml_resampled"),
            item.get("volume_change_pct"), bool(item.get("volume_flag")), bool(item.get("small")),
            item.get("suvmax"), item.get("suvpeak"),
            _copy_picture(qc.get("dir", ""), item.get("original", ""), report_dir, patient, modality),
            _copy_picture(qc.get("dir", ""), item.get("resampled", ""), report_dir, patient, modality),
            str(item.get("error", "")), ratings.get((patient, modality, lesion_id), "")))
    for lesion_id in sorted(listed - seen):  # a row of the table without pictures (an older run): still listed
        view.lesions.append(LesionView(lesion_id, "", in_table=True, picture_note="no picture recorded",
                                       rating=ratings.get((patient, modality, lesion_id), "")))
    return view


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: The DAG's per-patient stages in order, with the flow step each leads to.
FLOW_STAGES = (("deid", "de-identified"), ("image", "volume read (HU / SUV)"), ("mask", "segmented"),
               ("features", "features extracted"))


def _lost_between_steps(flow: pd.DataFrame, failures: pd.DataFrame, lesions: pd.DataFrame,
                        modalities: pd.DataFrame) -> list[dict[str, Any]]:
    """The cohort flow, step by step, with every patient lost between two steps and the reason.

    A patient leaves the flow at the stage where the last of its selected modalities failed (a CT failing at
    ``image`` and a PET at ``mask``: lost at ``mask``), with every modality's reason.
    """
    flow = flow[flow["status"] != "no clinical row"]
    eligible = flow[flow["status"] == "eligible"]
    steps: list[dict[str, Any]] = [
        {"step": "clinical-export rows", "patients": len(flow), "lost": []},
        {"step": "eligible", "patients": len(eligible),
         "lost": [(r["patient"] or f"{r['source']} row {r['row']}", f"{r['status']}: {r['reason']}")
                  for r in flow[flow["status"] != "eligible"].to_dict("records")]}]
    selected: dict[str, set[str]] = {}
    reasons_absent: dict[str, list[str]] = {}
    for r in (modalities.to_dict("records") if not modalities.empty else []):
        if r["status"] == "selected":
            selected.setdefault(r["patient"], set()).add(r["modality"])
        else:
            reasons_absent.setdefault(r["patient"], []).append(f"{r['modality'].upper()}: {r['reason']}")
    no_image = [p for p in eligible["patient"] if p not in selected]
    steps.append({"step": "with a baseline scan selected", "patients": len(eligible) - len(no_image),
                  "lost": [(p, "; ".join(reasons_absent.get(p, [])) or "no baseline series") for p in no_image]})
    order = {stage: i for i, (stage, _) in enumerate(FLOW_STAGES)}
    failed_at: dict[str, dict[str, tuple[int, str]]] = {}  # patient -> modality -> (stage index, reason)
    for r in (failures.to_dict("records") if not failures.empty else []):
        if not r.get("lesion_id") and r["stage"] in order:
            failed_at.setdefault(r["patient"], {})[r["modality"]] = (order[r["stage"]], r["reason"])
    lost_at: dict[int, list[tuple[str, str]]] = {}
    remaining = [p for p in eligible["patient"] if p in selected]
    for patient in remaining:
        failed = failed_at.get(patient, {})
        if selected[patient] <= set(failed):  # every selected modality failed: lost where the last one did
            last = max(index for index, _ in failed.values())
            why = "; ".join(f"{m.upper()} at {FLOW_STAGES[i][0]}: {reason}" for m, (i, reason) in sorted(failed.items()))
            lost_at.setdefault(last, []).append((patient, why))
    count = len(remaining)
    for index, (_, title) in enumerate(FLOW_STAGES):
        lost = lost_at.get(index, [])
        count -= len(lost)
        steps.append({"step": title, "patients": count, "lost": lost})
    gone = {p for group in lost_at.values() for p, _ in group}
    in_table = set(flow.loc[flow["in_patients_table"].astype(str) == "True", "patient"])
    steps.append({"step": "in patients.parquet", "patients": len(in_table),
                  "lost": [(p, "no lesion row left (every lesion rejected in visual QC, or no feature)")
                           for p in remaining if p not in gone and p not in in_table]})
    return steps


def _missingness(table: pd.DataFrame, name: str) -> list[dict[str, Any]]:
    """Missing values per column; the lesion table per modality (a PET column is not missing on a CT row)."""
    if table.empty:
        return []
    if "modality" in table and name == "lesions":
        return [row for modality, part in table.groupby("modality", sort=True)
                for row in _missingness(part.dropna(axis=1, how="all"), f"lesions ({modality.upper()})")]
    share = table.isna().mean()
    return [{"table": name, "column": column, "missing": int(table[column].isna().sum()), "percent": 100 * pct}
            for column, pct in share[share > 0].sort_values(ascending=False).items()]


def _outliers(lesions: pd.DataFrame) -> list[dict[str, Any]]:
    """Lesions beyond Tukey's far-out fences of their modality (mean HU on CT, SUVmax on PET), by centre."""
    rows: list[dict[str, Any]] = []
    for modality, (stem, what) in OUTLIER_FEATURES.items():
        part = lesions[lesions["modality"] == modality] if not lesions.empty else lesions
        column = feature_column(part, stem) if not part.empty else None
        if column is None:
            continue
        values = pd.to_numeric(part[column], errors="coerce")
        q1, q3 = values.quantile(0.25), values.quantile(0.75)
        low, high = q1 - OUTLIER_IQR * (q3 - q1), q3 + OUTLIER_IQR * (q3 - q1)
        for site, group in part.assign(value=values).groupby("site", sort=True):
            out = group[(group["value"] < low) | (group["value"] > high)]
            rows.append({"site": site, "modality": modality.upper(), "measure": what, "lesions": len(group),
                         "median": group["value"].median(), "outliers": len(out),
                         "which": ", ".join(f"{p} {les} ({v:.1f})" for p, les, v in
                                            zip(out["patient"], out["lesion_id"], out["value"], strict=True))})
    return rows


def render_report(results_dir: Path, combat: Path | None = None, status_dir: Path | None = None,
                  modalities_table: Path | None = None) -> Path:
    """Write the cohort page ``qc/report.html`` and the site pages, pictures and figures in ``qc/report/``."""
    results = Path(results_dir)
    qc = results / "qc"
    report_dir = qc / REPORT_DIR
    if report_dir.exists():  # pages of patients no longer in the study must not linger
        shutil.rmtree(report_dir)
    (report_dir / "fig").mkdir(parents=True)
    lesions = pd.read_parquet(results / "features" / "lesions.parquet")
    patients = pd.read_parquet(results / "tables" / "patients.parquet")
    failures = _read_csv(qc / "failures.csv")
    if not failures.empty and "lesion_id" not in failures:
        failures["lesion_id"] = ""
    issues = _read_csv(qc / "clinical_issues.csv")
    checks = _read_csv(qc / "suv_checks.csv")
    flow = _read_csv(qc / "patient_flow.csv")
    notes = _read_csv(qc / "segmentation_notes.csv")
    applied = _read_csv(qc / "qc_ratings_applied.csv")
    modalities = _read_csv(Path(modalities_table)) if modalities_table else pd.DataFrame()
    combat_lesions = results / "features" / "lesions_combat.parquet"
    harmonisation = harmonisation_record(combat)
    ratings = _ratings_by_lesion(applied)
    absent = ({(r["patient"], r["modality"]): r["reason"] for r in modalities.to_dict("records")
               if r["status"] != "selected"} if not modalities.empty else {})
    mods = sorted(set(modalities["modality"])) if not modalities.empty else sorted(set(lesions.get("modality", [])))

    failures_of: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in (failures.to_dict("records") if not failures.empty else []):
        failures_of.setdefault((row["patient"], row["modality"]), []).append(row)
    listed: dict[tuple[str, str], set[str]] = {}
    for patient, modality, lesion_id in (zip(lesions["patient"], lesions["modality"], lesions["lesion_id"], strict=True)
                                         if not lesions.empty else []):
        listed.setdefault((patient, modality), set()).add(lesion_id)
    env = _environment()
    eligible = flow[flow["status"] == "eligible"] if not flow.empty else flow
    in_table = set(patients["patient"]) if "patient" in patients else set()
    pages = []
    for site, group in (eligible.groupby("site", sort=True) if not eligible.empty else []):
        people = sorted(group["patient"])
        for number, chunk in enumerate(_chunks(people, PATIENTS_PER_PAGE), start=1):
            views = [PatientView(p, site, p in in_table,
                                 [_modality_view(p, m, status_dir, failures_of, listed, ratings, absent, report_dir)
                                  for m in mods]) for p in chunk]
            name = f"{site}-{number}.html"
            pages.append({"name": name, "site": site, "first": chunk[0], "last": chunk[-1], "patients": len(chunk),
                          "lesions": sum(len(m.lesions) for v in views for m in v.modalities)})
            write_text(report_dir / name, env.get_template("site.html").render(
                site=site, number=number, patients=views, number_format=_number))

    figures = {"flow": "report/fig/flow.png", "distributions": "report/fig/distributions.png",
               "distributions_combat": ""}
    steps = _lost_between_steps(flow, failures, lesions, modalities) if not flow.empty else []
    flow_figure(steps, report_dir / "fig" / "flow.png")
    chosen = distribution_figure(lesions, report_dir / "fig" / "distributions.png", "as extracted")
    if combat is not None and combat_lesions.is_file():
        distribution_figure(pd.read_parquet(combat_lesions), report_dir / "fig" / "distributions_combat.png",
                            "after ComBat", columns=chosen)
        figures["distributions_combat"] = "report/fig/distributions_combat.png"
    patient_failures = failures[failures["lesion_id"] == ""] if not failures.empty else failures
    body = env.get_template("cohort.html").render(
        n_patients=len(patients), n_lesions=len(lesions), n_failures=len(patient_failures),
        n_lesion_failures=len(failures) - len(patient_failures), n_issues=len(issues), steps=steps, pages=pages,
        figures=figures, missing=_missingness(lesions, "lesions") + _missingness(patients, "patients"),
        outliers=_outliers(lesions), failures=failures.to_dict("records"), notes=notes.to_dict("records"),
        issues=issues.to_dict("records"),
        suv_warnings=checks[checks["outcome"] == "warn"].to_dict("records") if "outcome" in checks else [],
        n_checks=len(checks), harmonisation=harmonisation, ratings=applied.to_dict("records"),
        outlier_iqr=OUTLIER_IQR, per_page=PATIENTS_PER_PAGE, number_format=_number)
    return write_text(qc / "report.html", body)
