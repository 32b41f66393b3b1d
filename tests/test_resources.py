"""Cluster resources: the per-stage models and the series sizes they are scaled from."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from palmares_radiomics.index import index_tree
from palmares_radiomics.resources import (DEFAULT_VOXELS, STAGE_MODELS, ResourceModel, series_voxels, stage_mem_mb,
                                          stage_runtime, stage_threads)
from palmares_radiomics.select import BaselineWindow, Selection, select_series, selection_table
from palmares_radiomics.synth import synthesize_cohort


def test_a_model_scales_linearly_with_voxels_and_attempt() -> None:
    model = ResourceModel(threads=1, mem_mb_base=1000, mem_mb_per_megavoxel=30.0, runtime_base=5,
                          runtime_per_megavoxel=0.5)
    assert model.mem_mb(0) == 1000 and model.runtime(0) == 5
    assert model.mem_mb(10_000_000) == 1300 and model.runtime(10_000_000) == 10
    assert model.mem_mb(10_000_000, attempt=2) == 2600 and model.runtime(10_000_000, attempt=3) == 30
    assert model.mem_mb(1) == 1001, "rounded up, never down"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("threads", 0, "threads must be at least 1. Found: 0"),
    ("mem_mb_base", 0, "mem_mb_base must be at least 1. Found: 0"),
    ("runtime_per_megavoxel", -0.1, "runtime_per_megavoxel must not be negative. Found: -0.1"),
])
def test_a_model_refuses_impossible_values(field: str, value: float, message: str) -> None:
    values = dict(threads=1, mem_mb_base=1000, mem_mb_per_megavoxel=1.0, runtime_base=5, runtime_per_megavoxel=0.1)
    with pytest.raises(ValueError, match=message):
        ResourceModel(**{**values, field: value})


def test_every_per_patient_stage_has_a_model_and_a_whole_body_ct_fits_a_common_node() -> None:
    assert set(STAGE_MODELS) == {"deid", "image", "mask", "features", "patient"}
    for stage in STAGE_MODELS:
        assert stage_threads(stage) == 1
        assert stage_mem_mb(stage, DEFAULT_VOXELS["ct"]) < 8000, "a 512 x 512 x 400 CT job fits in 8 GB"
        assert stage_runtime(stage, DEFAULT_VOXELS["ct"]) <= 60
        assert stage_mem_mb(stage, 2 * DEFAULT_VOXELS["ct"]) > stage_mem_mb(stage, DEFAULT_VOXELS["ct"])
    with pytest.raises(ValueError, match="no resource model for stage 'tables'"):
        stage_mem_mb("tables", 1)


def _write_selection(path: Path, rows: list[Selection]) -> None:
    selection_table(rows).to_csv(path, index=False)


def test_series_voxels_come_from_the_selection_and_default_until_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "IT01.csv"
    assert series_voxels(path, "PAL2-AAAAAAAAAA", "ct") == DEFAULT_VOXELS["ct"], "before select has run"
    _write_selection(path, [Selection("IT01", "1", "PAL2-AAAAAAAAAA", "ct", "ok", n_files=10, voxels=655360),
                            Selection("IT01", "1", "PAL2-AAAAAAAAAA", "pet", "failed", "no PET")])
    assert series_voxels(path, "PAL2-AAAAAAAAAA", "ct") == 655360
    assert series_voxels(path, "PAL2-AAAAAAAAAA", "pet") == DEFAULT_VOXELS["pet"], "a failed selection has no size"
    assert series_voxels(path, "PAL2-BBBBBBBBBB", "ct") == DEFAULT_VOXELS["ct"]
    _write_selection(path, [Selection("IT01", "1", "PAL2-AAAAAAAAAA", "ct", "ok", n_files=20, voxels=1310720)])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert series_voxels(path, "PAL2-AAAAAAAAAA", "ct") == 1310720, "a rewritten selection is read again"


def test_selection_records_the_series_size_from_headers_only(tmp_path: Path) -> None:
    synthesize_cohort(tmp_path, patients=1, seed=5, shape=(40, 32, 16), sites=1)
    truth = pd.read_csv(tmp_path / "truth/patients.csv", dtype=str).iloc[0]
    index = index_tree(tmp_path / "raw/dicom" / truth["site"], truth["site"])
    start = dt.date.fromisoformat(truth["cdk46i_start_date"])
    ct = select_series(index, truth["site"], truth["patient_id"], "PAL2-X", "ct", start, BaselineWindow(60, 0))
    assert (ct.status, ct.n_files) == ("ok", 16)
    assert ct.voxels == 40 * 32 * 16
    pet = select_series(index, truth["site"], truth["patient_id"], "PAL2-X", "pet", start, BaselineWindow(60, 0))
    assert pet.status == "ok" and pet.voxels > 0 and pet.voxels % pet.n_files == 0


def _enhanced_ct_header(path: Path, rows: int, columns: int, frames: int) -> None:
    """A multi-frame Enhanced CT file's headers (the index never reads pixels, so none are written)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    enhanced_ct = "1.2.840.10008.5.1.4.1.1.2.1"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = enhanced_ct
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.2"
    ds.SOPClassUID, ds.SOPInstanceUID = enhanced_ct, "2.25.2"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "1", "2.25.0", "2.25.1"
    ds.Modality, ds.SeriesDate, ds.ImageType = "CT", "20240110", ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.save_as(path, enforce_file_format=True)


def test_a_multi_frame_series_counts_every_frame_and_sizes_the_jobs_by_them(tmp_path: Path) -> None:
    """Enhanced CT/PET store the whole volume in one file: Rows x Columns alone would be 400 times too small."""
    export = tmp_path / "export"
    export.mkdir()
    _enhanced_ct_header(export / "volume.dcm", 512, 512, 400)
    index = index_tree(export, "IT01")
    assert index["number_of_frames"].tolist() == ["400"]
    ct = select_series(index, "IT01", "1", "PAL2-AAAAAAAAAA", "ct", dt.date(2024, 1, 15), BaselineWindow(60, 0))
    assert (ct.status, ct.n_files, ct.voxels) == ("ok", 1, 512 * 512 * 400)
    path = tmp_path / "IT01.csv"
    _write_selection(path, [ct])
    assert series_voxels(path, "PAL2-AAAAAAAAAA", "ct") == 512 * 512 * 400
    mem_mb = stage_mem_mb("features", series_voxels(path, "PAL2-AAAAAAAAAA", "ct"))
    assert mem_mb == math.ceil(1500 + 50.0 * 512 * 512 * 400 / 1e6) and mem_mb > 6000, "several GB, not ~1.5 GB"


def test_the_patient_job_asks_for_its_largest_stage_memory_and_their_summed_time() -> None:
    """Every per-patient stage runs in turn in one job: it needs what the largest of them needs (each frees its
    volumes when it ends) for as long as they take together."""
    from palmares_radiomics.resources import in_turn

    voxels = DEFAULT_VOXELS["ct"]
    parts = ("deid", "image", "mask", "features")
    assert stage_mem_mb("patient", voxels) == max(stage_mem_mb(stage, voxels) for stage in parts)
    assert stage_runtime("patient", voxels) >= sum(stage_runtime(stage, voxels) for stage in parts) - len(parts)
    small, large = ResourceModel(1, 1000, 10.0, 5, 0.1), ResourceModel(2, 800, 40.0, 7, 0.2)
    both = in_turn(small, large)
    assert (both.threads, both.mem_mb_base, both.mem_mb_per_megavoxel) == (2, 1000, 40.0)
    assert (both.runtime_base, both.runtime_per_megavoxel) == (12, pytest.approx(0.3))
