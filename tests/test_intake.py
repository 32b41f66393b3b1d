"""The intake: per-patient records rewritten only when their content changes (what makes reruns exact),
tree fingerprints, and `palmares locate` (where is my patient?)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from palmares_radiomics.cli import main
from palmares_radiomics.errors import LesionTableError
from palmares_radiomics.intake import (
    read_modalities,
    read_patients,
    run_intake,
    tree_fingerprint,
    write_if_changed,
)
from palmares_radiomics.pseudonym import pseudonym

KEY = "palmares-test-key-0123456789abcdefghijklmnopqrstuv"


def test_tree_fingerprint_sees_added_rewritten_and_non_utf8_files(tmp_path: Path) -> None:
    root = tmp_path / "IT01"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.dcm").write_bytes(b"x")
    empty = tree_fingerprint(tmp_path / "missing")
    first = tree_fingerprint(root)
    assert first != empty and tree_fingerprint(root) == first, "stable when nothing changed"
    (root / "a" / "2.dcm").write_bytes(b"y")
    second = tree_fingerprint(root)
    assert second != first, "a new file changes it"
    stamp = (root / "a" / "2.dcm").stat().st_mtime_ns
    os.utime(root / "a" / "2.dcm", ns=(stamp + 10**9, stamp + 10**9))
    assert tree_fingerprint(root) != second, "a re-exported (touched) file changes it"
    os.mkdir(os.fsencode(root) + b"/Rossi_\xe8")  # a Latin-1 folder name from a Windows export
    (Path(os.fsdecode(os.fsencode(root) + b"/Rossi_\xe8")) / "3.dcm").write_bytes(b"z")
    assert tree_fingerprint(root) != second


def test_records_are_rewritten_only_when_their_content_changes(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert write_if_changed(path, {"a": 1})
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert not write_if_changed(path, {"a": 1})
    assert path.stat().st_mtime_ns == before, "an unchanged record keeps its time: no rerun"
    assert write_if_changed(path, {"a": 2})


def _phi_side(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A tiny PHI side: two patients of IT01, one with CT and PET, one with CT only."""
    site = "IT01"
    p1, p2 = pseudonym(KEY.encode(), site, "111"), pseudonym(KEY.encode(), site, "222")
    selection = pd.DataFrame([
        {"site": site, "patient_id": "111", "patient": p1, "modality": "ct", "status": "ok", "reason": "",
         "series_uid": "1.1"},
        {"site": site, "patient_id": "111", "patient": p1, "modality": "pet", "status": "ok", "reason": "",
         "series_uid": "1.2"},
        {"site": site, "patient_id": "222", "patient": p2, "modality": "ct", "status": "ok", "reason": "",
         "series_uid": "2.1"},
        {"site": site, "patient_id": "222", "patient": p2, "modality": "pet", "status": "failed",
         "reason": "no PET image series in the IT01 export for this patient", "series_uid": ""}])
    index = pd.DataFrame([{"site": site, "path": f"/raw/{uid}/{i}.dcm", "status": "ok", "series_uid": uid,
                           "size": "10", "mtime_ns": "5"} for uid in ("1.1", "1.2", "2.1") for i in range(2)])
    lesions = pd.DataFrame([
        {"site": site, "patient_id": "111", "modality": "ct", "lesion_id": "L1", "label": "10",
         "roi_name": "GTV-1", "organ": "lung"},
        {"site": site, "patient_id": "222", "modality": "ct", "lesion_id": "L1", "label": "1", "roi_name": "",
         "organ": "liver"}])
    (tmp_path / "phi").mkdir()
    selection.to_csv(tmp_path / "phi" / "selection.csv", index=False)
    index.to_csv(tmp_path / "phi" / "index.csv", index=False)
    lesions.to_csv(tmp_path / "lesions.csv", index=False)
    seg = tmp_path / "segmentations" / site / "111" / "ct"
    seg.mkdir(parents=True)
    (seg / "RS.1.2.3.dcm").write_bytes(b"rt")
    return tmp_path / "phi" / "selection.csv", tmp_path / "phi" / "index.csv", tmp_path / "lesions.csv", seg


def _intake(tmp_path: Path, selection: Path, index: Path, lesions: Path):
    return run_intake([selection], [index], tmp_path / "segmentations", lesions, ["ct", "pet"],
                      tmp_path / "phi" / "intake", tmp_path / "work" / "intake" / "modalities.csv")


def test_intake_writes_records_and_changes_only_the_affected_ones(tmp_path: Path) -> None:
    selection, index, lesions, seg = _phi_side(tmp_path)
    summary = _intake(tmp_path, selection, index, lesions)
    records = tmp_path / "phi" / "intake"
    p1, p2 = pseudonym(KEY.encode(), "IT01", "111"), pseudonym(KEY.encode(), "IT01", "222")
    assert read_patients(records / "patients.csv") == {p1: "IT01", p2: "IT01"}
    assert (summary.patients, summary.series, summary.changed) == (2, 3, 5)
    assert sorted(read_modalities(tmp_path / "work" / "intake" / "modalities.csv")) == sorted(
        [(p1, "ct"), (p1, "pet"), (p2, "ct")]), "a CT-only patient has only CT jobs"
    public = pd.read_csv(tmp_path / "work" / "intake" / "modalities.csv", dtype=str, keep_default_na=False)
    assert "patient_id" not in public.columns and not public.isin(["111", "222"]).any().any()
    times = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    time.sleep(0.01)
    assert _intake(tmp_path, selection, index, lesions).changed == 0, "a second intake changes nothing"
    # a re-exported segmentation of patient 111's CT: only that record
    (seg / "RS.1.2.3.dcm").write_bytes(b"rt2")
    assert _intake(tmp_path, selection, index, lesions).changed == 1
    changed = {p.name for p in records.glob("*.json") if p.stat().st_mtime_ns != times[p.name]}
    assert changed == {f"{p1}_ct.json"}
    # a corrected lesion row of patient 222: only 222's CT record
    table = pd.read_csv(lesions, dtype=str, keep_default_na=False)
    table.loc[1, "organ"] = "bone"
    table.to_csv(lesions, index=False)
    assert _intake(tmp_path, selection, index, lesions).changed == 1


def test_a_lesion_table_without_its_columns_is_refused(tmp_path: Path) -> None:
    selection, index, lesions, _ = _phi_side(tmp_path)
    pd.read_csv(lesions).drop(columns=["organ"]).to_csv(lesions, index=False)
    with pytest.raises(LesionTableError, match=r"lacks the column\(s\) organ"):
        _intake(tmp_path, selection, index, lesions)


def test_locate_prints_the_local_patient_behind_a_pseudonym(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame({"site": ["IT01", "IT01", "IT02"], "patient_id": ["111", "222", "333"]}).to_csv(clinical, index=False)
    p2 = pseudonym(KEY.encode(), "IT01", "222")
    assert main(["locate", p2, "--site", "IT01", "--ids-from", str(clinical), "--key-file", str(key)]) == 0
    assert capsys.readouterr().out.split() == [p2, "IT01", "222"]
    # another centre's patient is not found at this centre
    p3 = pseudonym(KEY.encode(), "IT02", "333")
    assert main(["locate", p3, "--site", "IT01", "--ids-from", str(clinical), "--key-file", str(key)]) == 1
    assert "not a patient of IT01" in capsys.readouterr().out
    # every failure of the centre, from the PHI-side lookup (no key needed)
    selection, index, lesions, _ = _phi_side(tmp_path)
    _intake(tmp_path, selection, index, lesions)
    failures = tmp_path / "failures.csv"
    pd.DataFrame([{"patient": p2, "site": "IT01", "modality": "ct", "stage": "mask", "lesion_id": "",
                   "status": "failed", "reason": "no segmentation uploaded"}]).to_csv(failures, index=False)
    assert main(["locate", "--failures", str(failures), "--site", "IT01", "--ids-from",
                 str(tmp_path / "phi" / "intake" / "patients.csv")]) == 0
    assert capsys.readouterr().out.strip().split("\t") == [p2, "IT01", "222", "ct mask: no segmentation uploaded"]


def test_locate_needs_something_to_look_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"site": ["IT01"], "no_id": ["1"]}).to_csv(ids, index=False)
    assert main(["locate", "PAL2-0000000000", "--site", "IT01", "--ids-from", str(ids), "--key-env", "X"]) == 1
    assert "has no patient_id column" in capsys.readouterr().err


def test_imaged_patients_without_a_clinical_row_are_counted_without_identifiers() -> None:
    from palmares_radiomics.intake import unmatched_images
    from palmares_radiomics.tables import patient_flow

    ct = "1.2.840.10008.5.1.4.1.1.2"
    index = pd.DataFrame([{"site": "IT01", "patient_id": pid, "series_uid": uid, "sop_class_uid": sop}
                          for pid, uid, sop in (("111", "1.1", ct), ("999", "9.1", ct), ("999", "9.2", ct),
                                                ("888", "8.1", "1.2.840.10008.5.1.4.1.1.481.3"))])
    selection = pd.DataFrame({"site": ["IT01"], "patient_id": ["111"]})
    counts = unmatched_images(index, selection)
    assert counts.to_dict("records") == [{"site": "IT01", "patients": 1, "series": 2}], \
        "999 is imaged but not in the clinical export; 888 has only an RTSTRUCT (no image)"
    flow = pd.DataFrame([{"patient": "PAL2-A", "site": "IT01", "source": "clinical.csv", "row": 2,
                          "status": "eligible", "reason": ""}])
    out = patient_flow(flow, pd.DataFrame({"patient": ["PAL2-A"]}), None, counts)
    assert list(out["status"]) == ["eligible", "no clinical row"]
    assert "999" not in out.to_csv() and out.iloc[1]["reason"].startswith("1 imaged patient(s) (2 series) in the IT01 export have no valid row")


@pytest.mark.parametrize(("row", "message"), [
    ({"organ": "Liver"}, r"lesion L1: organ must be one of .*Found: 'Liver'; correct the row"),
    ({"label": "two"}, r"label must be a whole number .*Found: 'two'"),
    ({"label": "0"}, r"label must be an integer from 1 to 65535. Found: 0"),
    ({"lesion_id": " "}, r"CT row 1 of this patient: lesion_id is empty; give every lesion its own id"),
])
def test_a_bad_lesion_table_row_fails_that_patient_with_the_row_named(row: dict, message: str) -> None:
    """The lesion table is checked row by row when its patient's mask is imported: a typo fails that patient and
    modality with a reason naming the lesion and the value (a LesionTableError), never a traceback."""
    from palmares_radiomics.intake import lesion_specs

    good = {"modality": "ct", "lesion_id": "L1", "label": "1", "roi_name": "", "organ": "liver"}
    assert lesion_specs([good], "ct")[0].organ == "liver"
    with pytest.raises(LesionTableError, match=message):
        lesion_specs([{**good, **row}], "ct")


def test_the_segmentation_is_found_by_content_whatever_its_name(tmp_path: Path) -> None:
    """One file per folder, any name; an RT export's structure set beside its images is found by SOP class;
    several segmentations, or none, are refused without quoting a file name."""
    import shutil

    from conftest import shared_path
    from palmares_radiomics.deid import DeidContext
    from palmares_radiomics.errors import SegmentationError
    from palmares_radiomics.stages.deid import deidentify_segmentation

    rtstruct = shared_path("dicom", "rtstruct_sts-001_pet.dcm")
    image = shared_path("dicom", "pt_ge_sts-001_slice238.dcm")
    ctx = DeidContext(key=KEY.encode(), site="IT01")
    folder = tmp_path / "ROSSI MARIO" / "pet"
    folder.mkdir(parents=True)
    with pytest.raises(SegmentationError, match="^no segmentation uploaded"):
        deidentify_segmentation(folder, tmp_path / "out", ctx, [])
    shutil.copy(image, folder / "PT.1.dcm")
    shutil.copy(rtstruct, folder / "RS.ROSSI_MARIO.dcm")
    audits: list = []
    written, digest = deidentify_segmentation(folder, tmp_path / "out", ctx, audits)
    assert written.name == "rtstruct.dcm" and len(digest) == 64 and len(audits) == 1
    (folder / "mask.nii.gz").write_bytes(b"not really")
    with pytest.raises(SegmentationError, match=r"^2 files in the segmentation folder .*keep exactly one") as caught:
        deidentify_segmentation(folder, tmp_path / "out", ctx, [])
    assert "ROSSI" not in str(caught.value)


def test_a_latin1_lesion_table_is_read_and_an_empty_one_refused(tmp_path: Path) -> None:
    from palmares_radiomics.intake import read_lesion_table

    path = tmp_path / "lesions.csv"
    path.write_bytes("site,patient_id,modality,lesion_id,label,roi_name,organ\n"
                     "IT01,111,ct,L1,1,Metastasi epatica più grande,liver\n".encode("latin-1"))
    assert read_lesion_table(path).loc[0, "roi_name"] == "Metastasi epatica più grande"
    path.write_bytes(b"")
    with pytest.raises(LesionTableError, match="is empty: it needs a header row"):
        read_lesion_table(path)


def test_earl_status_is_read_on_the_phi_side_before_de_identification_replaces_the_description(
        tmp_path: Path) -> None:
    """Sites state EARL in the SeriesDescription, which de-identification replaces: the index reads it from the
    original header and the intake record carries it to the image stage's batch variables."""
    import pydicom

    from conftest import shared_path
    from palmares_radiomics import deid
    from palmares_radiomics.index import read_index_row

    ds = pydicom.dcmread(shared_path("dicom", "pt_ge_sts-001_slice238.dcm"))
    ds.SeriesDescription = "PET WB FDG EARL2 harmonised"
    if "ReconstructionMethod" in ds:
        del ds.ReconstructionMethod
    raw = tmp_path / "raw" / "IM1.dcm"
    raw.parent.mkdir()
    ds.save_as(raw)
    row = read_index_row(raw, "IT01")
    assert (row.status, row.earl) == ("ok", "EARL2")
    result = deid.deidentify_file(raw, tmp_path / "out", deid.DeidContext(key=KEY.encode(), site="IT01"))
    assert "EARL" not in str(pydicom.dcmread(result.output).get("SeriesDescription", "")), \
        "the de-identified header no longer states it: only the PHI-side index can"


def test_review_findings_series_lesion_rows_and_names(tmp_path: Path) -> None:
    """A series UID reused at another centre is not mixed into a patient's series; a lesion-table row with an
    unquoted comma is refused with its row number (never silently shifted); codes are normalised; structure
    names holding dates or record numbers are withheld."""
    from palmares_radiomics.intake import read_lesion_table
    from palmares_radiomics.structure_names import is_structure_name

    selection, index, lesions, _ = _phi_side(tmp_path)
    other = pd.DataFrame([{"site": "IT02", "path": "/raw/IT02/x.dcm", "status": "ok", "series_uid": "1.1",
                           "size": "1", "mtime_ns": "1", "patient_id": "B999"}])
    table = pd.read_csv(index, dtype=str, keep_default_na=False).assign(patient_id=lambda t: t["path"].map(
        lambda p: "111" if "/1." in p else "222"))
    pd.concat([table, other]).to_csv(index, index=False)
    _intake(tmp_path, selection, index, lesions)
    record = (tmp_path / "phi" / "intake" / f"{pseudonym(KEY.encode(), 'IT01', '111')}.json").read_text()
    assert "/raw/1.1/0.dcm" in record and "IT02" not in record
    bad = tmp_path / "bad.csv"
    bad.write_text("site,patient_id,modality,lesion_id,label,roi_name,organ\n"
                   "it01,123,CT,L1,1,GTV-1,lung\nIT01,123,ct,L2,2,Neoplasm, Secondary,liver\n")
    with pytest.raises(LesionTableError, match=r"row 3: 8 fields for 7 columns; put a name holding a comma"):
        read_lesion_table(bad)
    bad.write_text("site,patient_id,modality,lesion_id,label,roi_name,organ\nit01,123,CT,L1,1,GTV-1,lung\n")
    assert read_lesion_table(bad).iloc[0][["site", "modality"]].tolist() == ["IT01", "ct"]
    assert is_structure_name("GTV-1") and is_structure_name("Liver met 2")
    for name in ("GTV 12345678", "Lesion 2024-03-15", "Met 15/03/2024", "Liver 1957"):
        assert not is_structure_name(name), name
