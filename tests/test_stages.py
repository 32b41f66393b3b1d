"""The DAG's stage glue: what a features job writes for the tables stage to read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from palmares_radiomics.stages import write_rows


def test_feature_rows_read_back_as_pandas_wrote_them(tmp_path: Path) -> None:
    """A features job writes its rows with pyarrow alone; the tables stage reads them with pandas and gets the frame
    pandas itself would have written: columns in order of first appearance, a missing key or NaN a null, PET
    metrics that are None everywhere an empty object column, whole numbers mixed with floats as floats."""
    rows = [{"lesion_id": "L1", "organ": "liver", "pet_suvbsa_max": None, "shape_Volume": np.float64(1.5),
             "pet_suvmax": math.nan},
            {"lesion_id": "L2", "organ": "bone", "pet_suvbsa_max": None, "shape_Volume": 2.0, "extra": 3,
             "pet_suvmax": 4.25},
            {"lesion_id": "L10", "organ": "bone", "shape_Volume": 2, "pet_suvbsa_max": None, "pet_suvmax": None}]
    write_rows(rows, tmp_path / "ours.parquet")
    pd.DataFrame(rows).to_parquet(tmp_path / "pandas.parquet", index=False)
    ours, theirs = pd.read_parquet(tmp_path / "ours.parquet"), pd.read_parquet(tmp_path / "pandas.parquet")
    pd.testing.assert_frame_equal(ours, theirs)
    assert list(ours.columns) == ["lesion_id", "organ", "pet_suvbsa_max", "shape_Volume", "pet_suvmax", "extra"]
    assert ours["pet_suvmax"].isna().tolist() == [True, False, True] and ours["extra"].isna().sum() == 2
    write_rows([], tmp_path / "none.parquet")  # no lesion gave features: an empty table, as pandas writes it
    assert pd.read_parquet(tmp_path / "none.parquet").shape == (0, 0)
