"""Lesion → patient aggregation, the data dictionary and the failure table on small hand-made tables."""

from __future__ import annotations

import pandas as pd

from palmares_radiomics.stages import StageStatus
from palmares_radiomics.tables import aggregate_patients, dictionary, failure_table


def _lesions() -> pd.DataFrame:
    return pd.DataFrame({
        "patient": ["PAL2-A", "PAL2-A", "PAL2-A", "PAL2-B"], "site": "IT01",
        "modality": ["ct", "ct", "pet", "ct"], "lesion_id": ["L1", "L2", "L1", "L1"],
        "organ": ["liver", "bone", "liver", "lung"], "volume_ml": [2.0, 5.0, 2.1, 1.0],
        "firstorder_Mean_Q4LE": [10.0, 20.0, 3.5, 30.0], "glcm_MCC": [0.1, 0.2, 0.3, 0.4],
    })


def _clinical() -> pd.DataFrame:
    return pd.DataFrame({"patient": ["PAL2-A", "PAL2-B", "PAL2-C"], "site": "IT01", "os_days": [100, 200, 300],
                         "os_event": [True, False, True], "pfs_days": [50, 200, 100],
                         "pfs_event": [True, False, True]})


def test_aggregation_takes_the_largest_lesion_and_counts() -> None:
    patients = aggregate_patients(_lesions(), _clinical(), ["ct", "pet"])
    assert list(patients["patient"]) == ["PAL2-A", "PAL2-B"], "patients without any imaged lesion are left out"
    a = patients.set_index("patient").loc["PAL2-A"]
    assert a["ct_lesion_count"] == 2 and a["pet_lesion_count"] == 1
    assert a["ct_total_volume_ml"] == 7.0
    assert a["ct_largest_firstorder_Mean_Q4LE"] == 20.0, "the 5 ml bone lesion is the largest"
    assert patients.set_index("patient").loc["PAL2-B", "pet_lesion_count"] == 0


def test_dictionary_covers_every_column_with_codes() -> None:
    lesions = _lesions()
    patients = aggregate_patients(lesions, _clinical(), ["ct", "pet"])
    table = dictionary(lesions, patients, ["ct", "pet"])
    for name, frame in (("lesions", lesions), ("patients", patients)):
        assert sorted(table.loc[table["table"] == name, "column"]) == sorted(frame.columns)
    codes = dict(zip(table["column"], table["ibsi_code"]))
    assert codes["firstorder_Mean_Q4LE"] == "Q4LE"
    assert codes["ct_largest_firstorder_Mean_Q4LE"] == "Q4LE"
    assert codes["glcm_MCC"] == "non-IBSI"
    assert codes["os_days"] == ""
    assert (table["description"].str.len() > 5).all()


def test_failure_table_lists_only_non_ok_stages() -> None:
    statuses = [StageStatus("image", "PAL2-A", "pet", "failed", "SUV refused: no patient weight"),
                StageStatus("features", "PAL2-A", "pet", "skipped", "image: SUV refused: no patient weight"),
                StageStatus("image", "PAL2-A", "ct", "ok")]
    table = failure_table(statuses, {"PAL2-A": "IT01"})
    assert list(table["stage"]) == ["features", "image"]
    assert (table["site"] == "IT01").all()
