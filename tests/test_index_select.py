"""Index (headers only) and baseline series selection, on a synthetic hospital export."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from palmares_radiomics.clinical import ClinicalInputs, therapy_starts
from palmares_radiomics.index import index_tree, read_index_row
from palmares_radiomics.select import BaselineWindow, select_series
from palmares_radiomics.synth import synthesize_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic patients: some with an old CT and a non-attenuation-corrected PET."""
    out = tmp_path_factory.mktemp("cohort")
    synthesize_cohort(out, patients=4, seed=3, shape=(32, 32, 16))
    return out


def test_index_reads_every_dicom_file_and_explains_the_rest(cohort: Path, tmp_path: Path) -> None:
    site_dir = next((cohort / "raw/dicom").iterdir())
    (site_dir / "notes.txt").write_text("export log")
    (site_dir / "DICOMDIR").write_bytes(b"\0" * 200)
    (site_dir / "broken").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")  # truncated after the preamble
    table = index_tree(site_dir, site_dir.name)
    reasons = dict(zip(table["path"].map(lambda p: Path(p).name), table["reason"]))
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert table.loc[table["path"].str.endswith("broken"), "status"].item() == "skipped" and reasons["broken"]
    ok = table[table["status"] == "ok"]
    assert len(ok) == len(table) - 3 and len(ok) > 50
    assert set(ok["modality"]) >= {"CT", "PT"}
    assert (ok["site"] == site_dir.name).all()


def test_selection_picks_the_truth_baseline_series(cohort: Path, test_key: bytes) -> None:
    truth = pd.read_csv(cohort / "truth/patients.csv", dtype=str, keep_default_na=False)
    assert (truth["old_ct_series_uid"] != "").any() and (truth["pet_nac_series_uid"] != "").any(), \
        "the cohort exercises both traps"
    clinical = ClinicalInputs.from_specs([str(cohort / "raw/clinical.csv")],
                                         REPO / "config" / "clinical_schema.yaml").read()
    starts = therapy_starts(clinical)
    window = BaselineWindow(60, 0)
    indexes = {site.name: index_tree(site, site.name) for site in (cohort / "raw/dicom").iterdir()}
    for row in truth.itertuples():
        start = starts[(row.site, row.patient_id)]
        ct = select_series(indexes[row.site], row.site, row.patient_id, "PAL2-X", "ct", start, window)
        pet = select_series(indexes[row.site], row.site, row.patient_id, "PAL2-X", "pet", start, window)
        assert (ct.status, ct.series_uid) == ("ok", row.ct_series_uid)
        assert (pet.status, pet.series_uid) == ("ok", row.pet_series_uid)


def test_no_series_in_window_gives_a_reason_without_phi(cohort: Path) -> None:
    truth = pd.read_csv(cohort / "truth/patients.csv", dtype=str, keep_default_na=False)
    row = truth.iloc[0]
    index = index_tree(cohort / "raw/dicom" / row["site"], row["site"])
    far_future = dt.date(2040, 1, 1)
    selection = select_series(index, row["site"], row["patient_id"], "PAL2-X", "pet", far_future, BaselineWindow(60, 0))
    assert selection.status == "failed"
    assert "outside the baseline window (60 days before to 0 days after CDK4/6i start)" in selection.reason
    assert row["patient_id"] not in selection.reason and "20" not in selection.reason.split(":")[0]
    missing = select_series(index, row["site"], "nobody", "PAL2-X", "ct", far_future, BaselineWindow(60, 0))
    assert missing.reason == f"no CT image series in the {row['site']} export for this patient"


def test_index_row_of_a_non_composite_object(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.PatientID = "X"
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    row = read_index_row(path, "IT01")
    assert row.status == "skipped" and "SeriesInstanceUID" in row.reason


def test_index_follows_symlinked_folders_once_and_records_dangling_links(tmp_path: Path) -> None:
    """An export assembled from links is indexed whole; a link loop ends; a dangling link is a row that says
    the file is unreadable, never a silent skip."""
    import os
    import shutil

    from conftest import shared_path
    from palmares_radiomics.index import index_tree

    elsewhere = tmp_path / "elsewhere" / "series"
    elsewhere.mkdir(parents=True)
    shutil.copy(shared_path("dicom", "ct_ge_ctsmall.dcm"), elsewhere / "IM1")
    site = tmp_path / "IT01"
    site.mkdir()
    os.symlink(elsewhere, site / "linked")
    os.symlink(site, site / "linked" / "loop")  # a loop back to the site folder
    os.symlink(tmp_path / "gone.dcm", site / "dangling.dcm")
    table = index_tree(site, "IT01")
    ok = table[table["status"] == "ok"]
    assert len(ok) == 1 and ok.iloc[0]["path"].endswith("linked/IM1")
    dangling = table[table["path"].str.endswith("dangling.dcm")]
    assert list(dangling["status"]) == ["skipped"] and dangling.iloc[0]["reason"].startswith("unreadable file")
