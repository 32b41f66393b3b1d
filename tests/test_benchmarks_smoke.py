"""The benchmark scripts still run: ``--smoke`` of every script in ``benchmarks/``, in this process.

``--smoke`` shrinks each script's inputs (bench_features and bench_filters: a coarse 160 x 160 x 40 CT, one round,
no MIRP; bench_cohort: two 64 x 64 x 40 patients through the real DAG; bench_deid: 5 + 5 slices, no peers;
bench_dag: 20 patients; bench_report: 2 patients; bench_upload: a 128 x 128 x 60 CT): it measures nothing, it
proves that each script gets through every comparison and prints its Markdown table with one row per comparison,
feature class, filter, stage or measure. A change that breaks a benchmark fails here.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_features  # noqa: E402
import bench_filters  # noqa: E402

from conftest import shared_path  # noqa: E402
from palmares_radiomics.features import load_params  # noqa: E402


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """The scripts silence warnings process-wide (``logging.disable``) for pyradiomics; undo it for later tests."""
    yield
    logging.disable(logging.NOTSET)


def table_rows(output: str) -> list[str]:
    """First cells of the Markdown table rows printed (header and separator rows left out)."""
    rows = [line.split("|")[1].strip() for line in output.splitlines() if line.startswith("| ")]
    return [row for row in rows if row and not row.startswith(("comparison", "feature class", "filter"))]


def test_bench_features_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_features.main(["--smoke"]) == 0
    rows = table_rows(capsys.readouterr().out)
    comparisons = [row.split()[0] for row in rows if row.split()[0] in ("A0", "A1", "A2", "A3", "A4", "B1", "B2")]
    assert comparisons == ["A0", "A1", "A2", "A3", "A4", "B1", "B2"]
    classes = list(load_params(bench_features.PARAMS).classes)
    assert [row for row in rows if row in classes] == classes
    assert "all classes in one call" in rows


def test_bench_filters_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_filters.main(["--smoke"]) == 0
    rows = table_rows(capsys.readouterr().out)
    titles = [case.title for case in bench_filters.CASES if case.key in bench_filters.SMOKE_CASES]
    assert len(titles) == len(bench_filters.SMOKE_CASES) >= 3
    assert rows[0].startswith("no filter")
    assert rows[1:] == titles


def test_bench_cohort_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Two small patients through the real DAG: a row per per-patient job, the projection, and the tables of a second
    identical run byte-identical to the first (``--keep``, then ``--compare``), which also profiles one patient and
    runs the committed code first as its baseline (``--baseline HEAD``), with the ratio of the two."""
    import bench_cohort

    kept = tmp_path / "first"
    assert bench_cohort.main(["--smoke", "--keep", str(kept)]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert [row for row in rows if not row.startswith(("stage", "index", "**"))] == [
        "patient"]
    assert "CPU-hours for 3,500 patients" in output and "16-core node" in output
    assert (kept / "results" / "features" / "lesions.parquet").is_file()
    assert bench_cohort.main(["--smoke", "--compare", str(kept), "--profile", "--top", "3", "--baseline", "HEAD"]) == 0
    output = capsys.readouterr().out
    assert "byte-identical to" in output and "stage_patient_PAL2-" in output  # one patient's job under cProfile
    assert output.count("## 2 patients") == 2 and "(baseline: HEAD (" in output  # the baseline's run, then ours
    ratio = next(line for line in output.splitlines() if line.startswith("- per-patient stages:") and " = " in line)
    assert float(ratio.rsplit("= ", 1)[1].strip("*")) > 0


def test_bench_deid_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_deid

    if not bench_deid.CT_TEMPLATE.is_file():
        shared_path("dicom/ct_ge_crlm-ct-1004_slice020.dcm")  # skips outside CI, fails in CI
    assert bench_deid.main(["--smoke"]) == 0
    rows = [line.split("|")[1:5] for line in capsys.readouterr().out.splitlines() if line.startswith("| CT |")
            or line.startswith("| PET |")]
    tools = [cells[3].strip() for cells in rows]
    assert tools.count("copy (shutil.copy)") == 2 and tools.count("palmares deid, 1 process") == 2, tools


def test_bench_dag_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_dag

    assert bench_dag.main(["--smoke"]) == 0
    rows = [line.split("|")[1:4] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    states = {(state.strip(), profile.strip()): int(jobs) for state, profile, jobs in rows if jobs.strip().isdigit()}
    assert set(states) == {(state, profile) for state in ("new study", "after selection") for profile in ("default",
                                                                                                         "slurm")}
    assert states[("after selection", "default")] > 20  # the job of each of the 20 patients, and the cohort stages
    # the slurm profile's dry run works without any SLURM command (CI runs this before `make test-slurm` installs
    # them) and plans the same jobs (that it groups no patient is tests/test_profiles.py's)
    assert states[("after selection", "slurm")] == states[("after selection", "default")]
    assert states[("new study", "slurm")] == states[("new study", "default")]


def test_bench_report_smoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bench_report

    monkeypatch.chdir(tmp_path)  # the script changes into its study folder: the test's folder is restored after
    assert bench_report.main(["--smoke"]) == 0
    assert "`render_report`, median of 1 (wall s)" in capsys.readouterr().out


def test_bench_upload_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_upload

    assert bench_upload.main(["--smoke"]) == 0
    output = capsys.readouterr().out
    assert "answers: [200, 200], accepted: [True, True]" in output and "(c) POST, warm" in output
