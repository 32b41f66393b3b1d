"""docs/modelling.md: its Cox example runs, unchanged, on a patients.parquet written by the table functions."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from palmares_radiomics.clinical import ClinicalInputs, prepare_clinical
from palmares_radiomics.tables import aggregate_patients, write_table

DOC = REPO / "docs" / "modelling.md"
START = dt.date(2022, 1, 1)


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _patients_table(root: Path, key: bytes, n: int = 80, seed: int = 3) -> Path:
    """A patient table from the real clinical and aggregation code: survival shortens as PET MTV grows."""
    rng = np.random.default_rng(seed)
    mtv = rng.lognormal(3.0, 1.0, n)
    hazard = np.exp(0.8 * (np.log1p(mtv) - np.log1p(mtv).mean()))
    death_days = rng.exponential(700 / hazard).astype(int) + 1
    followup_days = rng.integers(200, 1200, n)
    rows = []
    for k in range(n):
        died = death_days[k] <= followup_days[k]
        last = START + dt.timedelta(days=int(min(death_days[k], followup_days[k])))
        rows.append({"site": f"IT0{k % 3 + 1}", "patient_id": f"P{k}", "birth_date": f"{1950 + k % 30}-03-01",
                     "advanced_diagnosis_date": "2021-12-01", "cdk46i_start_date": START.isoformat(),
                     "cdk46i_line": "1", "cdk46i_drug": "palbociclib", "endocrine_partner": "fulvestrant",
                     "menopausal_status": "post", "disease_setting": "recurrent",
                     "visceral_disease": "yes" if k % 2 else "no", "bone_only_disease": "no", "ecog": "0",
                     "progression_date": "", "death_date": last.isoformat() if died else "",
                     "last_followup_date": last.isoformat()})
    export = root / "clinical.csv"
    pd.DataFrame(rows).to_csv(export, index=False)
    inputs = ClinicalInputs.from_specs([str(export)], REPO / "config" / "clinical_schema.yaml")
    clinical = prepare_clinical(inputs.read(), key, dt.date(2025, 6, 30), inputs.schema, today=dt.date(2025, 7, 1))
    patient_of_row = clinical.flow.sort_values("row")["patient"].to_numpy()  # export row k+2 is patient k
    lesions = pd.DataFrame({"patient": patient_of_row, "site": "IT01", "modality": "pet", "lesion_id": "L1",
                            "organ": "liver", "volume_ml": mtv, "firstorder_Mean_Q4LE": 5.0})
    pet = pd.DataFrame({"patient": patient_of_row, "pet_total_mtv_suv2p5_ml": mtv})
    table = aggregate_patients(lesions, clinical.table, ["pet"], pet, ("count", "largest"))
    path = root / "results" / "tables" / "patients.parquet"
    write_table(table, path, None)
    return path


def test_the_cox_example_runs_on_a_pipeline_table(tmp_path: Path, test_key: bytes,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _code_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1 and "CoxPHFitter" in blocks[0]
    table = pd.read_parquet(_patients_table(tmp_path, test_key))
    assert len(table) == 80 and table["os_event"].sum() > 20
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # noqa: S102 - the documented example, verbatim
    cox = namespace["cox"]
    assert list(cox.params_.index) == ["age_at_start_years", "visceral_disease", "log_mtv"]
    assert cox.hazard_ratios_["log_mtv"] > 1.5, "the simulated MTV effect (HR 2.2 per log unit) is found"
    assert 0.6 < cox.concordance_index_ < 0.9
