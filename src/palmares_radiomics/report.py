"""A minimal, self-contained HTML QC report and the provenance record of a run."""

from __future__ import annotations

import html
import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .files import sha256_file, write_json, write_text

PACKAGES = ("palmares-radiomics", "pyradiomics-bhklab", "SimpleITK", "pydicom", "highdicom", "nibabel", "numpy",
            "pandas", "pyarrow", "snakemake", "scikit-image", "scipy", "pandera", "neuroCombat")


def _table_html(table: pd.DataFrame, empty: str) -> str:
    """A DataFrame as an HTML table (escaped), or a sentence when it is empty."""
    if table.empty:
        return f"<p>{html.escape(empty)}</p>"
    return table.to_html(index=False, escape=True, border=0, classes="t")


def harmonisation_record(combat: Path | None) -> dict[str, Any]:
    """What ComBat did (qc/combat.csv), or that it was off: for the report and the provenance record."""
    if combat is None:
        return {"combat": "off", "detail": "harmonisation.combat is false: no *_combat table was written"}
    table = pd.read_csv(combat, keep_default_na=False)
    return {"combat": "on", "method": "ComBat (neuroCombat, parametric empirical Bayes) by centre",
            "outputs": ["features/lesions_combat.parquet", "tables/patients_combat.parquet"],
            "groups": table.to_dict(orient="records")}


def _flow_summary(flow: pd.DataFrame) -> pd.DataFrame:
    """Patient flow counts: export rows, invalid, ineligible (per reason), eligible, in the patient table, and
    the imaged patients that have no clinical row (counted per site by the intake)."""
    unmatched = flow["status"] == "no clinical row"
    lost = int(flow.loc[unmatched, "reason"].str.extract(r"^(\d+)")[0].astype(int).sum()) if unmatched.any() else 0
    flow = flow[~unmatched]
    rows = [("clinical export rows", len(flow)),
            ("invalid (qc/clinical_issues.csv)", int((flow["status"] == "invalid").sum())),
            ("ineligible", int((flow["status"] == "ineligible").sum()))]
    ineligible = flow.loc[flow["status"] == "ineligible", "reason"].str.split("; ").explode()
    rows += [(f"  {reason}", int(n)) for reason, n in ineligible.value_counts().sort_index().items()]
    eligible = flow["status"] == "eligible"
    rows += [("eligible", int(eligible.sum())),
             ("eligible without an imaged lesion", int((eligible & ~flow["in_patients_table"]).sum())),
             ("in patients.parquet", int(flow["in_patients_table"].sum())),
             ("imaged patients without a clinical row (not in the rows above)", lost)]
    return pd.DataFrame(rows, columns=["step", "patients"])


def render_report(results_dir: Path, combat: Path | None = None) -> Path:
    """Write ``qc/report.html``: counts, patient flow, lesions per modality and organ, outcomes, failures, ComBat."""
    results = Path(results_dir)
    lesions = pd.read_parquet(results / "features" / "lesions.parquet")
    patients = pd.read_parquet(results / "tables" / "patients.parquet")
    failures = pd.read_csv(results / "qc" / "failures.csv", dtype=str, keep_default_na=False)
    issues = pd.read_csv(results / "qc" / "clinical_issues.csv", dtype=str, keep_default_na=False)
    checks = pd.read_csv(results / "qc" / "suv_checks.csv", dtype=str, keep_default_na=False)
    flow = pd.read_csv(results / "qc" / "patient_flow.csv", keep_default_na=False)
    flow["in_patients_table"] = flow["in_patients_table"].astype(str) == "True"
    notes_path = results / "qc" / "segmentation_notes.csv"
    notes = pd.read_csv(notes_path, dtype=str, keep_default_na=False) if notes_path.is_file() else pd.DataFrame()
    patient_failures = failures[failures["lesion_id"] == ""] if "lesion_id" in failures else failures
    modality_counts = (flow.loc[flow["status"] == "eligible", "modalities"].replace("", "none").value_counts()
                       .sort_index().rename_axis("baseline modalities").rename("eligible patients").reset_index()
                       if "modalities" in flow else pd.DataFrame())
    harmonisation = harmonisation_record(combat)
    combat_html = (_table_html(pd.DataFrame(harmonisation["groups"]), "ComBat ran on no group.")
                   if combat is not None else f"<p>{html.escape(harmonisation['detail'])}.</p>")
    suv_warnings = checks[checks["outcome"] == "warn"]
    per_organ = (lesions.groupby(["modality", "organ"]).size().rename("lesions").reset_index()
                 if not lesions.empty else pd.DataFrame())
    outcome_cols = [c for c in ("patient", "site", "os_days", "os_event", "pfs_days", "pfs_event") if c in patients]
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>palmares-radiomics QC report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} .t td,.t th{{padding:2px 8px;text-align:left}}
.t tr:nth-child(even){{background:#f3f3f3}} .n{{font-size:1.4em;font-weight:bold}}</style></head><body>
<h1>palmares-radiomics QC report</h1>
<p><span class="n">{len(patients)}</span> patients in the modelling table,
<span class="n">{len(lesions)}</span> lesion rows, <span class="n">{len(patient_failures)}</span> patient-modality
failures and <span class="n">{len(failures) - len(patient_failures)}</span> failed lesions,
<span class="n">{len(issues)}</span> clinical-data issues.</p>
<h2>Patient flow (qc/patient_flow.csv)</h2>{_table_html(_flow_summary(flow), "No clinical export row.")}
<h2>Lesions by modality and organ</h2>{_table_html(per_organ, "No lesion has features yet.")}
<h2>Outcomes</h2>{_table_html(patients[outcome_cols], "No patient in the modelling table.")}
<h2>Baseline modalities of the eligible patients</h2>{_table_html(modality_counts, "No eligible patient.")}
<h2>Failures (the first failing stage per patient and modality; one row per failed lesion)</h2>
<p>A centre finds its own patient behind a pseudonym with <code>palmares locate</code> (README, "Where is my
patient?").</p>{_table_html(failures, "No failure.")}
<h2>Segmentation structures that are not lesions (ignored)</h2>{_table_html(notes, "None: every structure is a lesion of the lesion table.")}
<h2>Clinical-data issues</h2>{_table_html(issues, "No issue.")}
<h2>PET SUV plausibility warnings</h2>{_table_html(suv_warnings, f"No warning in {len(checks)} SUV checks (all in qc/suv_checks.csv).")}
<h2>ComBat harmonisation</h2>{combat_html}
<p>Tables: <code>features/lesions.parquet</code>, <code>tables/patients.parquet</code> (CSV twins beside them),
<code>tables/dictionary.csv</code>; provenance in <code>provenance.json</code>.</p>
</body></html>
"""
    return write_text(results / "qc" / "report.html", body)


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def input_hashes(status_dir: Path, selected: set[tuple[str, str]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Content hash of every input series (SHA-256 over its files' SHA-256, from the de-identification stage)
    and of every segmentation file (from the mask stage), by pseudonym and modality: no path, no local id.
    ``selected``: the (patient, modality) pairs of this run's tables (records left by patients or series no
    longer in the study are not inputs of these results)."""
    from .stages import read_status

    def wanted(patient: str, modality: str) -> bool:
        return selected is None or (patient, modality) in selected

    series, segmentations = [], []
    for path in sorted(Path(status_dir).glob("deid/*.json")):
        status = read_status(path)
        for modality, info in sorted(status.details.get("modalities", {}).items()):
            if info.get("sha256") and wanted(status.patient, modality):
                series.append({"patient": status.patient, "modality": modality, "files": info.get("files"),
                               "sha256": info["sha256"]})
    for path in sorted(Path(status_dir).glob("mask/*.json")):
        status = read_status(path)
        info = status.details.get("segmentation")
        if status.ok and info and wanted(status.patient, status.modality):
            segmentations.append({"patient": status.patient, "modality": status.modality,
                                  "format": status.details.get("format", ""), "sha256": info["sha256"]})
    return {"series": series, "segmentations": segmentations}


def write_provenance(out: Path, config: Mapping[str, Any], params: Mapping[str, Path], inputs: Sequence[Path],
                     counts: Mapping[str, int] | None = None, combat: Path | None = None,
                     status_dir: Path | None = None, selected: set[tuple[str, str]] | None = None) -> Path:
    """Record versions, parameter and input hashes and the configuration (no key, no time stamp:
    the same inputs give the same bytes). Inputs are keyed by their path as given (two centres'
    ``export.csv`` in different folders are two entries, not one); with ``status_dir``, also the content
    hash of every DICOM series and segmentation file that went in (:func:`input_hashes`)."""
    record = {
        "python": platform.python_version(),
        "packages": package_versions(),
        "config": {k: v for k, v in config.items()},
        "params": {name: {"path": str(path), "sha256": sha256_file(Path(path))} for name, path in params.items()},
        "inputs": {str(p): sha256_file(Path(p)) for p in inputs},
        "imaging_inputs": input_hashes(status_dir, selected) if status_dir is not None else {},
        "counts": dict(counts or {}),
        "harmonisation": harmonisation_record(combat),
    }
    return write_json(out, record)
