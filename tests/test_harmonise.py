"""ComBat by centre (neuroCombat): synthetic batch effects removed, covariate effects kept, bookkeeping never silent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palmares_radiomics.errors import ConfigError
from palmares_radiomics.harmonise import CombatSettings, combat, harmonise_group, run_harmonise
from palmares_radiomics.report import write_provenance

SHIFT = {"A": 0.0, "B": 3.0, "C": -2.0}   # additive centre effects
SCALE = {"A": 1.0, "B": 2.0, "C": 0.5}    # multiplicative centre effects
SHARE = {"A": 0.8, "B": 0.2, "C": 0.5}    # share of x = 1 per centre: the covariate is unbalanced across centres
EFFECT = 2.0                              # true effect of x on every feature


def _cohort(n: int = 40, features: int = 20, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    covars = pd.DataFrame([{"site": c, "x": bool(rng.random() < SHARE[c]), "age": float(rng.normal(60, 10))}
                           for c in SHIFT for _ in range(n)])
    values = pd.DataFrame({f"f{k}": 1.0 + EFFECT * covars["x"] + 0.05 * covars["age"] + covars["site"].map(SHIFT)
                           + covars["site"].map(SCALE) * rng.normal(0, 1, len(covars)) for k in range(features)})
    return values, covars


def _fit(values: pd.DataFrame, covars: pd.DataFrame) -> dict[str, float]:
    """Mean over features of OLS coefficients: centre B and C vs A (with x and age), x without centre terms,
    and the ratio of the largest to the smallest per-centre residual SD."""
    one = np.ones(len(covars))
    full = np.column_stack([one, covars["x"], covars["age"], covars["site"] == "B",
                            covars["site"] == "C"]).astype(float)
    plain = np.column_stack([one, covars["x"], covars["age"]]).astype(float)
    b_full = np.linalg.lstsq(full, values.to_numpy(), rcond=None)[0]
    b_plain = np.linalg.lstsq(plain, values.to_numpy(), rcond=None)[0]
    residual = values.to_numpy() - full @ b_full
    sd = [residual[(covars["site"] == c).to_numpy()].std() for c in SHIFT]
    return {"centre_B": b_full[3].mean(), "centre_C": b_full[4].mean(), "x_effect": b_plain[1].mean(),
            "sd_ratio": max(sd) / min(sd)}


def test_combat_removes_centre_effects_and_keeps_the_covariate_effect() -> None:
    values, covars = _cohort()
    before = _fit(values, covars)
    after = _fit(combat(values, covars["site"], covars[["x", "age"]]), covars)
    print(f"before {before}\nafter  {after}")
    assert abs(before["centre_B"] - 3.0) < 0.3 and abs(before["centre_C"] + 2.0) < 0.3
    assert before["sd_ratio"] > 3.0
    assert abs(before["x_effect"] - EFFECT) > 0.8, "unharmonised, the centre effects confound x"
    assert abs(after["centre_B"]) < 0.2 and abs(after["centre_C"]) < 0.2, "additive centre effects removed"
    assert after["sd_ratio"] < 1.25, "multiplicative centre effects removed"
    assert abs(after["x_effect"] - EFFECT) < 0.2, "the declared covariate's effect is kept"


def test_without_the_covariate_combat_distorts_its_effect() -> None:
    """Why covariates are declared: x is unbalanced across centres, so ComBat without it removes part of it."""
    values, covars = _cohort()
    blind = _fit(combat(values, covars["site"], covars[[]]), covars)
    kept = _fit(combat(values, covars["site"], covars[["x", "age"]]), covars)
    assert abs(blind["x_effect"] - EFFECT) > 2 * abs(kept["x_effect"] - EFFECT)
    assert abs(blind["centre_B"]) > 0.5, "and a centre effect remains, aliased with x"


def test_confounded_covariates_are_refused_with_a_reason() -> None:
    values, covars = _cohort(n=5)
    covars["scanner"] = covars["site"]  # a covariate that is the centre itself
    with pytest.raises(ConfigError, match=r"covariates \(scanner\) are confounded with the centres .*remove the "
                                          r"covariate from config harmonisation"):
        combat(values, covars["site"], covars[["scanner"]])
    block, record = harmonise_group(covars.join(values), pd.Series(True, index=covars.index), list(values.columns),
                                    covars[["scanner"]], "patients", "ct")
    assert block.empty and record.status == "skipped" and "confounded" in record.reason


def test_rows_that_cannot_be_fitted_are_left_out_and_counted() -> None:
    values, covars = _cohort(n=6, features=4)
    values["constant"] = 7.0
    values.loc[0, "f3"] = np.nan
    table = covars.join(values)
    table.loc[len(table)] = {**{c: 1.0 for c in values.columns}, "site": "D", "x": True, "age": 50.0}  # alone
    covariates = table[["x", "age"]].copy()
    covariates.loc[1, "age"] = np.nan
    block, record = harmonise_group(table, pd.Series(True, index=table.index), list(values.columns), covariates,
                                    "patients", "ct")
    assert record.status == "harmonised" and record.rows == 19 and record.rows_left_out == 2 and record.centres == 3
    assert (record.features_harmonised, record.features_skipped) == (3, 2)
    assert "centre(s) D with a single row" in record.reason and "1 row(s) with a missing covariate" in record.reason
    assert block.loc[[1, 18]].isna().all().all(), "rows left out are empty, never silently unharmonised"
    assert list(block.columns) == ["f0", "f1", "f2"] and block.drop(index=[1, 18]).notna().all().all()


def _tables(results: Path) -> None:
    rng = np.random.default_rng(1)
    patients, lesions = [], []
    for k in range(18):
        site = "ABC"[k % 3]
        patient = f"PAL2-{k:010d}"
        patients.append({"patient": patient, "site": site, "age_at_start_years": float(rng.normal(60, 8)),
                         "visceral_disease": bool(k % 2), "os_days": 100 + k, "os_event": bool(k % 3),
                         "ct_lesion_count": 2,
                         "ct_largest_firstorder_Mean_Q4LE": rng.normal(40, 5) + 10 * (site == "B"),
                         "ct_max_firstorder_Mean_Q4LE": rng.normal(50, 5) + 10 * (site == "B")})
        for lesion in ("L1", "L2"):
            lesions.append({"patient": patient, "site": site, "modality": "ct", "lesion_id": lesion,
                            "organ": "liver" if lesion == "L1" else "bone", "volume_ml": 2.0,
                            "firstorder_Mean_Q4LE": rng.normal(40, 5) + 10 * (site == "B") + 30 * (lesion == "L2"),
                            "firstorder_Maximum_84IY": rng.normal(80, 5) + 5 * (site == "C")})
    (results / "features").mkdir(parents=True)
    (results / "tables").mkdir()
    pd.DataFrame(lesions).to_parquet(results / "features" / "lesions.parquet")
    pd.DataFrame(patients).to_parquet(results / "tables" / "patients.parquet")


def test_run_harmonise_writes_separate_tables_and_a_record(tmp_path: Path) -> None:
    _tables(tmp_path)
    originals = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    record = run_harmonise(tmp_path, ["ct"], CombatSettings(covariates=("age_at_start_years", "visceral_disease")))
    assert all(p.read_bytes() == data for p, data in originals.items()), "the main tables are never changed"
    lesions = pd.read_parquet(tmp_path / "features" / "lesions.parquet")
    harmonised = pd.read_parquet(tmp_path / "features" / "lesions_combat.parquet")
    assert list(harmonised.columns) == list(lesions.columns) and len(harmonised) == len(lesions)
    assert harmonised[["patient", "organ", "volume_ml"]].equals(lesions[["patient", "organ", "volume_ml"]])
    by_site = harmonised.groupby(["site", "organ"])["firstorder_Mean_Q4LE"].mean().unstack()
    raw = lesions.groupby(["site", "organ"])["firstorder_Mean_Q4LE"].mean().unstack()
    assert raw.loc["B", "liver"] - raw.loc["A", "liver"] > 5
    assert abs(by_site.loc["B", "liver"] - by_site.loc["A", "liver"]) < 4
    assert by_site.loc["A", "bone"] - by_site.loc["A", "liver"] > 20, "the organ effect (a lesion covariate) is kept"
    assert record[["table", "group", "status"]].values.tolist() == [["lesions", "ct", "harmonised"],
                                                                    ["patients", "ct", "harmonised"]]
    assert record.loc[0, "covariates"] == "organ, age_at_start_years, visceral_disease"
    written = pd.read_csv(tmp_path / "qc" / "combat.csv")
    assert written["features_harmonised"].tolist() == [2, 2]
    patients = pd.read_parquet(tmp_path / "tables" / "patients_combat.parquet")
    assert patients["os_days"].equals(pd.read_parquet(tmp_path / "tables" / "patients.parquet")["os_days"])
    with pytest.raises(ConfigError, match=r"harmonisation.covariates \['ecog'\] are not columns of patients.parquet"):
        run_harmonise(tmp_path, ["ct"], CombatSettings(covariates=("ecog",)))


def test_the_batch_is_always_the_centre_with_no_option_for_it() -> None:
    """harmonisation.batch accepted one value only: it is gone from the config schema, the settings and the CLI."""
    import yaml
    from snakemake.utils import validate

    from conftest import REPO
    from palmares_radiomics.cli import build_parser

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    assert "batch" not in config["harmonisation"]
    validate(config, schema=str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    config["harmonisation"]["batch"] = "site"
    with pytest.raises(Exception, match="Additional properties are not allowed"):
        validate(config, schema=str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    with pytest.raises(TypeError, match="batch"):
        CombatSettings(batch="site")  # type: ignore[call-arg]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stage", "harmonise", "--results", "r", "--modalities", "ct", "--batch", "site"])


def test_provenance_records_whether_combat_ran(tmp_path: Path) -> None:
    write_provenance(tmp_path / "off.json", {}, {}, [])
    assert json.loads((tmp_path / "off.json").read_text())["harmonisation"]["combat"] == "off"
    _tables(tmp_path / "results")
    run_harmonise(tmp_path / "results", ["ct"], CombatSettings())
    write_provenance(tmp_path / "on.json", {}, {}, [], combat=tmp_path / "results" / "qc" / "combat.csv")
    record = json.loads((tmp_path / "on.json").read_text())["harmonisation"]
    assert record["combat"] == "on" and [g["status"] for g in record["groups"]] == ["harmonised", "harmonised"]


def test_combat_without_its_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """neuroCombat is the optional `harmonise` extra: a config that turns ComBat on without it stops at parse time."""
    from palmares_radiomics.configcheck import check_extras

    values, covars = _cohort(n=12, features=3)
    check_extras({"harmonisation": {"combat": True}})  # installed here (make install takes the extra)
    monkeypatch.setitem(sys.modules, "neuroCombat", None)  # as if it were not installed: import and look-up fail
    check_extras({"harmonisation": {"combat": False}})
    with pytest.raises(ConfigError, match=r"needs neuroCombat, which is not installed: .*pip install -e '\.\[harmonise\]'"):
        check_extras({"harmonisation": {"combat": True}})
    with pytest.raises(ConfigError, match="harmonise"):
        combat(values, covars["site"], covars[["age"]])
