"""The upload page's HTTP API (Flask test client) on a synthetic study whose intake has run: every status code,
the verdicts on real NIfTI / DICOM-SEG / RTSTRUCT uploads, versioning, concurrency and token scoping."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from palmares_radiomics.errors import ConfigError
from palmares_radiomics.intake import segmentation_files
from palmares_radiomics.serve import is_loopback, serve
from palmares_radiomics.serve.app import create_app
from palmares_radiomics.serve.auth import Tokens
from palmares_radiomics.validate import validate_segmentation
from palmares_radiomics.volumes import sniff_format
from palmares_radiomics.serve.study import Study
from serve_study import lesion_table, make_study, png_file, shifted_nifti, source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("serve"))


@pytest.fixture()
def fresh(tmp_path: Path, study_dir: Path) -> Path:
    """A copy of the study for a test that uploads (uploads change the segmentation folders)."""
    import shutil

    work = tmp_path / "study"
    shutil.copytree(study_dir, work, symlinks=True)
    return work


def client(workdir: Path, tokens: Tokens | None = None):
    return create_app(Study(workdir / "config.yaml", root=workdir), tokens).test_client()


def post(c, site: str, patient_id: str, modality: str, path: Path | None, name: str = "upload.bin", **headers):
    data = {"site": site, "patient_id": patient_id, "modality": modality}
    if path is not None:
        data["file"] = (io.BytesIO(path.read_bytes()), name)
    return c.post("/api/segmentations", data=data, content_type="multipart/form-data", headers=headers)


def test_patients_lists_every_selected_patient_and_modality(study_dir: Path) -> None:
    rows = client(study_dir).get("/api/patients").get_json()
    table = lesion_table(study_dir)
    assert {(r["site"], r["patient_id"], r["modality"]) for r in rows} == \
        set(zip(table["site"], table["patient_id"], table["modality"]))
    assert all(r["status"] == "none" and r["version"] is None for r in rows)
    assert all(set(r) == {"site", "patient_id", "modality", "status", "version"} for r in rows)


@pytest.mark.parametrize("fmt", ["mask.nii.gz", "seg.dcm", "rtstruct.dcm"])
def test_each_format_is_accepted_stored_where_the_dag_reads_it_and_previewed(fresh: Path, fmt: str) -> None:
    site, patient_id, path = source(fresh, fmt)
    c = client(fresh)
    response = post(c, site, patient_id, "ct", path, name="Rossi Mario export.weird")  # the name is never used
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["accepted"] is True and body["version"] == 1 and body["problems"] == []
    expected = lesion_table(fresh).query("site == @site and patient_id == @patient_id and modality == 'ct'")
    assert [les["lesion_id"] for les in body["lesions"]] == list(expected["lesion_id"])
    assert all(les["volume_ml"] > 0.5 and les["voxels"] > 0 for les in body["lesions"])
    for url in [body["preview"]] + [les["preview"] for les in body["lesions"]]:
        image = c.get(url)
        assert image.status_code == 200 and image.mimetype == "image/png" and image.data[:4] == b"\x89PNG"
        image.close()
    folder = fresh / "cohort/raw/segmentations" / site / patient_id / "ct"
    suffix = "nii.gz" if fmt == "mask.nii.gz" else "dcm"
    assert [name for name, *_ in segmentation_files(folder)] == ["segmentation"]  # what the intake gives the mask stage
    assert (folder / "segmentation").read_bytes() == path.read_bytes() == (folder / f"versions/v0001.{suffix}").read_bytes()
    if fmt == "rtstruct.dcm":  # organs at risk are not lesions: listed, not fatal
        assert "'Spinal-Cord' (ROI Number 2)" in body["ignored"]
    row = next(r for r in c.get("/api/patients").get_json()
               if (r["site"], r["patient_id"], r["modality"]) == (site, patient_id, "ct"))
    assert (row["status"], row["version"]) == ("accepted", 1)


def test_a_shifted_nifti_is_refused_in_words_with_the_offset_and_nothing_is_stored(fresh: Path, tmp_path: Path) -> None:
    site, patient_id, path = source(fresh, "mask.nii.gz")
    c = client(fresh)
    assert post(c, site, patient_id, "ct", path).status_code == 200
    shifted = shifted_nifti(path, tmp_path / "shifted.nii.gz", (50.0, 0.0, 0.0))
    response = post(c, site, patient_id, "ct", shifted)
    body = response.get_json()
    assert response.status_code == 422 and body["accepted"] is False and body["version"] is None
    problem = body["problems"][0]
    assert problem["code"] == "grid_shift", problem
    assert "50.0 mm" in problem["message"] and "patient's left" in problem["message"]
    assert "baseline CT (series" in problem["fix"]  # names the series to export from (this centre's own)
    folder = fresh / "cohort/raw/segmentations" / site / patient_id / "ct"
    assert (folder / "segmentation").read_bytes() == path.read_bytes()  # version 1 still current
    history = c.get("/api/history", query_string={"site": site, "patient_id": patient_id, "modality": "ct"}).get_json()
    assert [(h["version"], h["accepted"]) for h in history] == [(None, False), (1, True)]
    row = next(r for r in c.get("/api/patients").get_json()
               if (r["site"], r["patient_id"], r["modality"]) == (site, patient_id, "ct"))
    assert (row["status"], row["version"]) == ("refused", 1)


def test_a_reupload_keeps_the_previous_version_and_a_new_format_replaces_the_current_file(fresh: Path) -> None:
    site, patient_id, nifti = source(fresh, "mask.nii.gz")
    c = client(fresh)
    assert post(c, site, patient_id, "ct", nifti).get_json()["version"] == 1
    assert post(c, site, patient_id, "ct", nifti).get_json()["version"] == 2
    folder = fresh / "cohort/raw/segmentations" / site / patient_id / "ct"
    assert sorted(p.name for p in (folder / "versions").glob("v*")) == ["v0001.nii.gz", "v0002.nii.gz"]
    (folder / "by-hand.nii.gz").write_bytes(b"placed by hand")  # a file someone copied in: kept, not deleted
    assert post(c, site, patient_id, "ct", nifti).get_json()["version"] == 3
    assert [name for name, *_ in segmentation_files(folder)] == ["segmentation"]
    (folder / "segmentation").write_bytes(b"edited by hand")  # the current file overwritten by hand: kept too
    assert post(c, site, patient_id, "ct", nifti).get_json()["version"] == 4
    kept = sorted(p.read_bytes() for p in (folder / "versions").iterdir() if p.name.startswith("replaced-"))
    assert kept == [b"edited by hand", b"placed by hand"]
    assert (folder / "segmentation").read_bytes() == nifti.read_bytes()


@pytest.mark.parametrize("case, status, code", [
    ("png", 415, "unsupported_type"),
    ("missing_file", 400, "missing_field"),
    ("missing_site", 400, "missing_field"),
    ("unknown_patient", 404, "unknown_patient"),
    ("unknown_modality", 404, "unknown_patient"),
])
def test_status_codes(fresh: Path, tmp_path: Path, case: str, status: int, code: str) -> None:
    site, patient_id, path = source(fresh, "mask.nii.gz")
    c = client(fresh)
    if case == "png":
        response = post(c, site, patient_id, "ct", png_file(tmp_path / "scan.nii.gz"), name="scan.nii.gz")
    elif case == "missing_file":
        response = post(c, site, patient_id, "ct", None)
    elif case == "missing_site":
        response = post(c, "", patient_id, "ct", path)
    elif case == "unknown_patient":
        response = post(c, site, "NOBODY", "ct", path)
    else:
        response = post(c, site, patient_id, "mr", path)
    body = response.get_json()
    assert response.status_code == status and body["problems"][0]["code"] == code, body
    assert body["accepted"] is False and body["version"] is None and body["problems"][0]["fix"]
    assert not list((fresh / "cohort/raw/segmentations").rglob("segmentation"))


def test_an_upload_over_the_limit_is_413(fresh: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((fresh / "config.yaml").read_text())
    config["serve"] = {"max_upload_mb": 0.01}
    (fresh / "config.yaml").write_text(yaml.safe_dump(config))
    site, patient_id, path = source(fresh, "mask.nii.gz")
    big = tmp_path / "big.nii"
    big.write_bytes(path.read_bytes() + bytes(64 * 1024))  # 64 kB over a 10 kB limit
    response = post(client(fresh), site, patient_id, "ct", big)
    assert response.status_code == 413 and response.get_json()["problems"][0]["code"] == "too_large"


def test_a_dicom_image_is_not_a_segmentation(fresh: Path) -> None:
    site, patient_id, _ = source(fresh, "mask.nii.gz")
    ct_file = next(p for p in sorted((fresh / "cohort/raw/dicom" / site).rglob("*")) if p.is_file())
    response = post(client(fresh), site, patient_id, "ct", ct_file)
    body = response.get_json()
    assert response.status_code == 422 and body["problems"][0]["code"] == "not_a_segmentation", body


def test_a_lesion_missing_from_the_file_is_refused_and_names_what_the_file_holds(fresh: Path) -> None:
    site, patient_id, path = source(fresh, "rtstruct.dcm")
    table = lesion_table(fresh)
    row = table[(table["patient_id"] == patient_id) & (table["modality"] == "ct")].index[0]
    table.loc[row, "roi_name"] = "L9_typo"
    table.to_csv(fresh / "cohort/raw/lesions.csv", index=False)  # read afresh at every upload
    body = post(client(fresh), site, patient_id, "ct", path).get_json()
    assert body["accepted"] is False and body["problems"][0]["code"] == "lesion_not_found", body
    assert "L9_typo" in body["problems"][0]["message"] and "Spinal-Cord" in body["problems"][0]["message"]


def test_twenty_concurrent_uploads_become_twenty_versions(fresh: Path) -> None:
    site, patient_id, path = source(fresh, "mask.nii.gz")
    app = create_app(Study(fresh / "config.yaml", root=fresh))
    answers: list[dict] = []

    def one() -> None:
        answers.append(post(app.test_client(), site, patient_id, "ct", path).get_json())

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["version"] for a in answers) == list(range(1, 21)), answers
    folder = fresh / "cohort/raw/segmentations" / site / patient_id / "ct"
    assert len(list((folder / "versions").glob("v*.nii.gz"))) == 20
    history = [json.loads(line) for line in (folder / "versions/history.jsonl").read_text().splitlines()]
    assert sorted(h["version"] for h in history) == list(range(1, 21))
    assert (folder / "segmentation").read_bytes() == path.read_bytes()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_tokens_scope_every_request_to_the_tokens_site(fresh: Path) -> None:
    it01, it_all = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    (fresh / "tokens.txt").write_text(f"# centre tokens\nIT01 {it01}\n* {it_all}\n")
    tokens = Tokens.read(fresh / "tokens.txt")
    c = client(fresh, tokens)
    assert c.get("/api/patients").status_code == 401
    wrong = it01[:-1] + ("y" if it01.endswith("x") else "x")  # one character off (a random token may end in "x")
    assert c.get("/api/patients", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert c.get("/").status_code == 302  # the page sends a browser to the token form
    own = c.get("/api/patients", headers={"Authorization": f"Bearer {it01}"}).get_json()
    assert own and {r["site"] for r in own} == {"IT01"}
    everyone = c.get("/api/patients", headers={"Authorization": f"Bearer {it_all}"}).get_json()
    assert {r["site"] for r in everyone} == {"IT01", "IT02"}
    site, patient_id, path = source(fresh, "seg.dcm")
    assert site == "IT02"
    other = post(c, site, patient_id, "ct", path, Authorization=f"Bearer {it01}")
    unknown = post(c, site, "NOBODY", "ct", path, Authorization=f"Bearer {it01}")
    assert other.status_code == unknown.status_code == 404 and other.get_json() == unknown.get_json()
    history = c.get("/api/history", query_string={"site": site, "patient_id": patient_id, "modality": "ct"},
                    headers={"Authorization": f"Bearer {it01}"})
    assert history.status_code == 404
    accepted = post(c, site, patient_id, "ct", path, Authorization=f"Bearer {it_all}").get_json()
    assert accepted["accepted"], accepted
    assert c.get(accepted["preview"], headers={"Authorization": f"Bearer {it01}"}).status_code == 404
    allowed = c.get(accepted["preview"], headers={"Authorization": f"Bearer {it_all}"})
    assert allowed.status_code == 200
    allowed.close()
    # a browser: the token form sets an HttpOnly cookie; a POST with the cookie alone (another site's form) is refused
    assert c.post("/login", data={"token": "wrong" * 5}).status_code == 401
    login = c.post("/login", data={"token": it01})
    assert login.status_code == 302 and "HttpOnly" in login.headers["Set-Cookie"] and "SameSite=Strict" in \
        login.headers["Set-Cookie"]
    assert {r["site"] for r in c.get("/api/patients").get_json()} == {"IT01"}
    site1, patient1, nifti = source(fresh, "mask.nii.gz")
    assert post(c, site1, patient1, "ct", nifti).status_code == 403
    assert post(c, site1, patient1, "ct", nifti, **{"X-Requested-With": "palmares"}).status_code == 200


def test_token_file_and_binding_refusals(tmp_path: Path, study_dir: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(ConfigError, match="--token-file"):
        serve(study_dir / "config.yaml", host="0.0.0.0")
    for text, words in [("IT01 short\n", "shorter than 20"), ("IT01\n", "two fields"), ("", "no 'SITE TOKEN'"),
                        (f"IT 01 {'x' * 30}\n", "two fields"), (f"IT01 {'a' * 30}\nIT02 {'a' * 30}\n", "its own")]:
        (tmp_path / "t.txt").write_text(text)
        with pytest.raises(ConfigError, match=words) as info:
            Tokens.read(tmp_path / "t.txt")
        assert "a" * 30 not in str(info.value)
    result = subprocess.run([str(Path(sys.executable).parent / "palmares"), "serve", "--configfile", "config.yaml",
                             "--host", "0.0.0.0"], cwd=study_dir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "--token-file" in result.stderr


def test_sniffing_reads_content_not_names(tmp_path: Path, study_dir: Path) -> None:
    _, _, nifti = source(study_dir, "mask.nii.gz")
    _, _, seg = source(study_dir, "seg.dcm")
    assert sniff_format(nifti) == "nii.gz" and sniff_format(seg) == "dcm"
    assert sniff_format(png_file(tmp_path / "x.nii.gz")) is None
    (tmp_path / "text.dcm").write_text("not dicom")
    assert sniff_format(tmp_path / "text.dcm") is None


def test_the_next_study_run_uses_the_uploaded_versions(fresh: Path) -> None:
    """Upload every patient's CT and PET segmentation through the API, then the study command: every lesion of
    the lesion table has features, and a later re-upload reruns only that patient's job."""
    from test_workflow import _snakemake

    c = client(fresh)
    for path in sorted((fresh / "cohort/uploads").glob("*/*/*/*")):
        site, patient_id, modality = path.parts[-4:-1]
        assert post(c, site, patient_id, modality, path).status_code == 200
    result = _snakemake(fresh)
    assert result.returncode == 0, result.stderr[-3000:]
    import pandas as pd

    lesions = pd.read_parquet(fresh / "results/features/lesions.parquet")
    assert len(lesions) == len(lesion_table(fresh))
    site, patient_id, nifti = source(fresh, "mask.nii.gz")
    assert post(c, site, patient_id, "ct", nifti).get_json()["version"] == 2
    from test_study import jobs_run

    rerun = _snakemake(fresh)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    per_patient = {(rule, w) for rule, w in jobs_run(rerun) if w.startswith("patient=")}
    patient = pd.read_csv(fresh / "work/phi/intake/patients.csv", dtype=str).query("patient_id == @patient_id")
    assert per_patient == {("patient", f"patient={patient['patient'].iloc[0]}")}


NRRD_HEAD = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 64 64 40\n"


@pytest.mark.parametrize("header, words", [
    ("encoding: ascii\nbyte skip: 0\ndata file: ../../../../../secret.key\n", "datafile"),
    ("encoding: raw\ndata file: /proc/self/environ\n", "datafile"),
    ("encoding: raw\nline skip: 2\n", "lineskip"),
    ("encoding: ascii\n", "encoding ascii"),  # ITK's text reader crashes the process on a long body
])
def test_an_nrrd_that_reads_other_files_or_text_is_refused_from_its_header(fresh: Path, tmp_path: Path,
                                                                         header: str, words: str) -> None:
    site, patient_id, _ = source(fresh, "mask.nii.gz")
    upload = tmp_path / "evil.nrrd"
    upload.write_bytes((NRRD_HEAD + header + "\n").encode() + b"A" * 5000)
    response = post(client(fresh), site, patient_id, "ct", upload)
    body = response.get_json()
    assert response.status_code == 422 and body["problems"][0]["code"] == "unreadable_file", body
    assert words in body["problems"][0]["message"]
    assert (fresh / "secret.key").read_text() not in json.dumps(body)


def test_a_decompression_bomb_is_refused_from_its_header(fresh: Path, tmp_path: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    site, patient_id, _ = source(fresh, "mask.nii.gz")
    bomb = tmp_path / "bomb.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((512, 512, 256), np.uint8)), str(bomb), useCompression=True)
    assert bomb.stat().st_size < 1 << 20  # 64 M voxels in well under a MB
    body = post(client(fresh), site, patient_id, "ct", bomb).get_json()
    assert body["problems"][0]["code"] == "grid_size", body
    assert "The mask is 256×512×512 voxels" in body["problems"][0]["message"]


def test_a_deflated_dicom_is_refused_before_it_is_inflated(fresh: Path, tmp_path: Path) -> None:
    import pydicom

    site, patient_id, rtstruct = source(fresh, "rtstruct.dcm")
    ds = pydicom.dcmread(rtstruct)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    body = post(client(fresh), site, patient_id, "ct", tmp_path / "deflated.dcm").get_json()
    assert body["problems"][0]["code"] == "unreadable_file" and "deflated" in body["problems"][0]["message"]


def test_cross_site_posts_and_rebinding_hosts_are_refused(fresh: Path) -> None:
    site, patient_id, nifti = source(fresh, "mask.nii.gz")
    c = client(fresh)
    assert post(c, site, patient_id, "ct", nifti, Origin="http://attacker.example").status_code == 403
    assert c.get("/api/patients", headers={"Host": "rebind.attacker.example"}).status_code == 403
    assert post(c, site, patient_id, "ct", nifti, Origin="http://localhost").status_code == 200  # the page itself
    assert post(c, site, patient_id, "ct", nifti).status_code == 200  # a script (curl) sends no Origin


def test_a_history_line_cut_by_a_crash_does_not_swallow_the_next(fresh: Path, tmp_path: Path) -> None:
    site, patient_id, nifti = source(fresh, "mask.nii.gz")
    c = client(fresh)
    assert post(c, site, patient_id, "ct", nifti).status_code == 200
    history = fresh / "cohort/raw/segmentations" / site / patient_id / "ct/versions/history.jsonl"
    with open(history, "a") as handle:
        handle.write('{"upload_id": "crashed", "ver')
    assert post(c, site, patient_id, "ct", nifti).get_json()["version"] == 2
    items = c.get("/api/history", query_string={"site": site, "patient_id": patient_id, "modality": "ct"}).get_json()
    assert [h["version"] for h in items] == [2, 1]


def test_the_dag_reads_the_current_segmentation_by_content(fresh: Path, tmp_path: Path) -> None:
    """The page stores every format as `segmentation` (no suffix): the mask stage's de-identification tells a
    NIfTI from a DICOM-SEG by content and reads each (here directly, as the mask job calls it)."""
    from palmares_radiomics import deid
    from palmares_radiomics.stages.deid import deidentify_segmentation

    c = client(fresh)
    for fmt, written in (("mask.nii.gz", "mask.nii.gz"), ("seg.dcm", "seg.dcm"), ("rtstruct.dcm", "rtstruct.dcm")):
        site, patient_id, path = source(fresh, fmt)
        assert post(c, site, patient_id, "ct", path).status_code == 200
        folder = fresh / "cohort/raw/segmentations" / site / patient_id / "ct"
        ctx = deid.DeidContext(key=b"k" * 32, site=site)
        out, _ = deidentify_segmentation(folder, tmp_path / fmt, ctx, [])
        assert out.name == written
        if fmt == "mask.nii.gz":  # the one validation reads it by content too (check-segmentation on the folder)
            study = Study(fresh / "config.yaml", root=fresh)
            baseline = study.baseline(study.find(site, patient_id, "ct"))
            verdict = validate_segmentation(folder / "segmentation", baseline.image, modality="ct")
            assert verdict.ok and verdict.kind == "label map", verdict.problems
