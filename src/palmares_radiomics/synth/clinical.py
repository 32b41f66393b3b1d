"""The sites' CSV exports: the clinical export (raw/clinical.csv) and the radiologists' lesion table
(raw/lesions.csv), and the CSV writer every table of the cohort (truth included) goes through."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..files import write_text
from .plan import Patient


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> Path:
    """Write rows as CSV (header first, '\\n' line ends, missing values empty) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return write_text(path, buffer.getvalue())


def _iso(value: dt.date | None) -> str:
    """ISO date or empty string."""
    return "" if value is None else value.isoformat()


def _clinical_row(patient: Patient) -> dict[str, object]:
    """One row of raw/clinical.csv (columns in CLINICAL_COLUMNS)."""
    c = patient.clinical
    organs = {lesion.organ for lesion in patient.lesions}
    return {"site": patient.site.code, "patient_id": patient.patient_id, "birth_date": _iso(c.birth_date),
            "advanced_diagnosis_date": _iso(c.diagnosis_date), "cdk46i_start_date": _iso(c.start_date),
            "cdk46i_line": 1, "cdk46i_drug": c.drug, "endocrine_partner": c.partner,
            "menopausal_status": c.menopausal_status, "disease_setting": c.disease_setting, "visceral_disease": "yes" if organs & {"liver", "lung"} else "no",
            "bone_only_disease": "yes" if organs == {"bone"} else "no", "ecog": c.ecog,
            "progression_date": _iso(c.progression_date), "death_date": _iso(c.death_date),
            "last_followup_date": _iso(c.last_followup_date)}


def _lesion_table_rows(patient: Patient) -> list[dict[str, object]]:
    """Rows of raw/lesions.csv (what the radiologists declare), one per lesion per modality."""
    return [{"site": patient.site.code, "patient_id": patient.patient_id, "modality": modality,
             "lesion_id": lesion.lesion_id, "label": lesion.label, "roi_name": lesion.roi_name, "organ": lesion.organ}
            for modality in ("ct", "pet") for lesion in patient.lesions]
