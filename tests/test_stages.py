"""The DAG's stage glue: what a features job writes for the tables stage to read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palmares_radiomics.files import read_rows, write_rows


def test_feature_rows_read_back_as_the_parquet_they_replace(tmp_path: Path) -> None:
    """A features job writes its rows as JSON (no pandas import in the job); the tables stage builds the same frame
    from them as it read from the Parquet file pandas used to write: columns in order of first appearance, a
    missing key or NaN a NaN, PET metrics that are None everywhere an empty object column, whole numbers mixed
    with floats as floats, every float bit for bit."""
    rows = [{"lesion_id": "L1", "organ": "liver", "pet_suvbsa_max": None, "shape_Volume": np.float64(1.5),
             "pet_suvmax": math.nan, "glcm_Contrast": 0.1 + 0.2},
            {"lesion_id": "L2", "organ": "bone", "pet_suvbsa_max": None, "shape_Volume": 2.0, "extra": np.int64(3),
             "pet_suvmax": 4.25, "glcm_Contrast": 1e-300},
            {"lesion_id": "L10", "organ": "bone", "shape_Volume": 2, "pet_suvbsa_max": None, "pet_suvmax": None,
             "glcm_Contrast": -7.123456789012345e17}]
    write_rows(rows, tmp_path / "ours.json")
    pd.DataFrame(rows).to_parquet(tmp_path / "pandas.parquet", index=False)
    ours, parquet = pd.DataFrame(read_rows(tmp_path / "ours.json")), pd.read_parquet(tmp_path / "pandas.parquet")
    pd.testing.assert_frame_equal(ours, parquet, check_exact=True)
    assert list(ours.columns) == ["lesion_id", "organ", "pet_suvbsa_max", "shape_Volume", "pet_suvmax",
                                  "glcm_Contrast", "extra"]
    assert ours["pet_suvmax"].isna().tolist() == [True, False, True] and ours["extra"].isna().sum() == 2
    assert ours["glcm_Contrast"].tolist() == [0.1 + 0.2, 1e-300, -7.123456789012345e17]
    write_rows([], tmp_path / "none.json")  # no lesion gave features: an empty table
    assert read_rows(tmp_path / "none.json") == [] and pd.DataFrame(read_rows(tmp_path / "none.json")).empty


def test_a_value_json_would_write_as_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="number, text or empty, not list"):
        write_rows([{"lesion_id": "L1", "shape_Volume": [1.0]}], tmp_path / "rows.json")
    assert not (tmp_path / "rows.json").exists()
