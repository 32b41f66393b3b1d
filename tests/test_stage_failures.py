"""Issue 14, no silent loss: infrastructure errors fail the job (Snakemake reruns it); data errors become a status."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from palmares_radiomics.errors import DicomReadError, PalmaresError
from palmares_radiomics.stages import FAILED, OK, LesionOutcome, StageStatus, guarded, read_status


def _body(exc: BaseException):
    def body() -> StageStatus:
        raise exc
    return body


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EIO, "Input/output error"),
    PermissionError(errno.EACCES, "Permission denied"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    MemoryError(),
], ids=["ENOSPC", "EIO", "EACCES", "EDQUOT", "MemoryError"])
def test_an_infrastructure_error_fails_the_job_and_writes_no_status(tmp_path: Path, exc: BaseException) -> None:
    """After space is freed the same command must run the stage again: no permanent 'failed' record."""
    status_path = tmp_path / "image.json"
    with pytest.raises(type(exc)) as raised:
        guarded("image", "PX", "ct", status_path, _body(exc))
    assert raised.value is exc
    assert not status_path.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_infrastructure_error_keeps_an_earlier_status_out_of_the_way(tmp_path: Path) -> None:
    """A status left by an earlier run is removed, so Snakemake cannot take it for this run's output."""
    status_path = tmp_path / "image.json"
    status_path.write_text("{}", encoding="utf-8")
    with pytest.raises(OSError, match="No space left"):
        guarded("image", "PX", "ct", status_path, _body(OSError(errno.ENOSPC, "No space left on device")))
    assert not status_path.exists()


def test_a_data_error_raised_from_a_full_disk_still_fails_the_job(tmp_path: Path) -> None:
    """Stage code that wraps 'cannot read/write this file' into a PalmaresError must not hide a full disk."""
    def body() -> StageStatus:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise DicomReadError("the DICOM header cannot be read") from exc

    with pytest.raises(DicomReadError, match="cannot be read"):
        guarded("image", "PX", "ct", tmp_path / "image.json", body)
    assert not (tmp_path / "image.json").exists()


def test_a_corrupt_file_is_a_data_error_not_the_disk(tmp_path: Path) -> None:
    """gzip.BadGzipFile is an OSError without errno: a bad upload, recorded as failed (rerunning would not help)."""
    import gzip

    bad = tmp_path / "mask.nii.gz"
    bad.write_bytes(b"not gzip at all")

    def body() -> StageStatus:
        with gzip.open(bad) as handle:
            handle.read()
        raise AssertionError("unreachable")

    status = guarded("mask", "PX", "ct", tmp_path / "mask.json", body)
    assert status.status == FAILED and status.reason == "unexpected BadGzipFile in stage mask; see the job log"


def test_a_data_error_is_a_failed_status(tmp_path: Path) -> None:
    status_path = tmp_path / "image.json"
    status = guarded("image", "PX", "ct", status_path,
                     _body(DicomReadError("PX: the DICOM series could not be read (truncated file)")))
    assert status.status == FAILED and "truncated" in status.reason
    assert read_status(status_path) == status


def test_an_unexpected_error_is_still_a_failed_status_as_a_last_resort(tmp_path: Path) -> None:
    status_path = tmp_path / "image.json"
    status = guarded("image", "PX", "ct", status_path, _body(ValueError("secret PHI value")))
    assert status.status == FAILED
    assert status.reason == "unexpected ValueError in stage image; see the job log"
    assert read_status(status_path) == status


def test_a_successful_body_writes_its_status(tmp_path: Path) -> None:
    status_path = tmp_path / "image.json"
    status = guarded("image", "PX", "ct", status_path, lambda: StageStatus("image", "PX", "ct", OK))
    assert status.ok and read_status(status_path) == status


def test_per_lesion_outcomes_are_typed_records_on_disk_and_back(tmp_path: Path) -> None:
    status_path = tmp_path / "features.json"
    lesions = (LesionOutcome("L1", "liver", OK), LesionOutcome("L2", "bone", FAILED, "label 2 is empty in the mask"))
    status = guarded("features", "PX", "ct", status_path,
                     lambda: StageStatus("features", "PX", "ct", OK, lesions=lesions))
    again = read_status(status_path)
    assert again == status and again.lesions == lesions and isinstance(again.lesions[1], LesionOutcome)
    assert again.failed_lesions == (lesions[1],) and not again.failed_lesions[0].ok


def _tmpfs(mount_point: Path, size: str) -> None:
    """Mount a small tmpfs, or skip with the reason (needs root and a kernel that allows it)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root; the OSError tests above cover the logic")
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (container without CAP_SYS_ADMIN?): {done.stderr.strip()}")


def test_a_really_full_disk_fails_the_job_and_a_rerun_after_freeing_space_succeeds(tmp_path: Path) -> None:
    work = tmp_path / "work"
    _tmpfs(work, "64k")
    try:
        status_path = work / "image.json"
        filler = work / "filler"

        def body() -> StageStatus:
            with open(work / "volume.bin", "wb") as handle:  # a stage writing its product
                handle.write(b"\0" * 32 * 1024)
                handle.flush()
                os.fsync(handle.fileno())
            return StageStatus("image", "PX", "ct", OK, outputs={"image": str(work / "volume.bin")})

        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk
        try:
            with pytest.raises(OSError) as full:
                while True:
                    os.write(fd, b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
        with pytest.raises(OSError) as raised:
            guarded("image", "PX", "ct", status_path, body)
        assert raised.value.errno == errno.ENOSPC and not status_path.exists()
        filler.unlink()  # space freed: the same stage now succeeds
        assert guarded("image", "PX", "ct", status_path, body).ok and read_status(status_path).ok
    finally:
        subprocess.run(["umount", str(work)], check=False)


def test_palmares_error_is_the_data_boundary() -> None:
    assert issubclass(DicomReadError, PalmaresError) and not issubclass(DicomReadError, OSError)


def test_expected_data_failures_are_palmares_errors_with_a_reason(tmp_path: Path) -> None:
    """Issue 14 item 2: a PET header with the height in cm was 'unexpected ValueError ... see the job log'."""
    from palmares_radiomics import pet
    from palmares_radiomics.errors import SuvError

    def body() -> StageStatus:
        pet.patient_metrics([], weight_kg=70.0, height_m=175.0)
        raise AssertionError("unreachable")

    status = guarded("features", "PX", "pet", tmp_path / "features.json", body)
    assert status.status == FAILED and "PatientSize (0010,1020)" in status.reason
    with pytest.raises(SuvError):
        body()


def test_a_full_disk_while_de_identifying_a_file_fails_the_job_not_the_file(tmp_path: Path) -> None:
    """deid.deidentify_file turns a bad file into a skipped result, but a full disk while writing is the machine:
    it propagates (the DAG job fails and is run again), never a permanent 'skipped: OSError' record. A real
    16 kB tmpfs cannot hold the 39 kB CT file."""
    from conftest import shared_path
    from palmares_radiomics import deid

    out = tmp_path / "out"
    _tmpfs(out, "16k")
    try:
        ctx = deid.DeidContext(key=b"palmares-test-key-0123456789abcdefghijklmnopqrstuv", site="IT01")
        with pytest.raises(OSError, match="No space left"):
            deid.deidentify_file(shared_path("dicom", "ct_ge_ctsmall.dcm"), out, ctx)
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_a_status_written_before_the_per_lesion_records_keeps_its_failed_lesions(tmp_path: Path) -> None:
    """A study resumed with this version reads the features records of the version before (fe0bf0e): their failed
    lesions still reach the failure table."""
    path = tmp_path / "features.json"
    path.write_text(json.dumps({"stage": "features", "patient": "PX", "modality": "ct", "status": OK, "reason": "",
                                "outputs": {"table": "t.json"}, "details": {"lesions": 1, "lesion_failures": [
                                    {"lesion_id": "L2", "reason": "label 2 is empty in the mask"}]}}))
    status = read_status(path)
    assert status.failed_lesions == (LesionOutcome("L2", "", FAILED, "label 2 is empty in the mask"),)
