"""The published tables are byte-identical to those of the reference commit's code (``tests/tables_reference.yaml``):
a change of the code that is not meant to change a table (a move, a speed-up) proves it here.

Both runs share one cohort and one key (``tests/configs/demo_reference``); each runs its own Snakefile, package,
configuration file and parameter files, in this environment. The reference's code comes from git (``git archive``:
the repository's state is not touched), so the test needs the clone's history; outside CI it skips without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from palmares_radiomics.files import sha256_file
from test_configs import prepare_case

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_cohort import export_commit  # noqa: E402  (git archive of a commit, as the benchmark's --baseline)

pytestmark = pytest.mark.slow

REFERENCE = yaml.safe_load((REPO / "tests" / "tables_reference.yaml").read_text(encoding="utf-8"))
#: The published tables: every file of these folders of results/ (the report and provenance are not tables).
TABLE_FILES = ("features/*", "tables/*", "qc/*.csv")


def _git(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, **kwargs)


def reference_code(dest: Path) -> Path:
    """The reference commit's files under ``dest`` (skips, or fails in CI, when the clone lacks that commit)."""
    commit = REFERENCE["commit"]
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        message = (f"the reference commit {commit[:12]} of tests/tables_reference.yaml is not in this clone "
                   "(a shallow clone, or no git): fetch the history to compare the tables")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return export_commit(commit, dest)


def run_with(code: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """The real snakemake of this environment, running ``code``'s Snakefile and package (first on PYTHONPATH)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(code / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    which = subprocess.run([sys.executable, "-c", "import palmares_radiomics; print(palmares_radiomics.__file__)"],
                           env=env, cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(which).is_relative_to(code / "src"), f"the package imported is {which}, not {code}'s"
    command = [str(bin_dir / "snakemake"), "-s", str(code / "Snakefile"), "--configfile", "config.yaml",
               "--profile", str(code / "workflow" / "profiles" / "default"), "--cores", "2"]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def table_digests(results: Path) -> dict[str, str]:
    """sha256 of every published table file under ``results`` (TABLE_FILES), by path relative to it."""
    return {str(path.relative_to(results)): sha256_file(path)
            for pattern in TABLE_FILES for path in sorted(results.glob(pattern)) if path.is_file()}


def test_the_tables_are_byte_identical_to_the_reference_commits(tmp_path: Path) -> None:
    ours = prepare_case("demo_reference", tmp_path / "ours")
    reference = reference_code(tmp_path / "reference_code")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    for name in ("cohort", "secret.key"):  # one cohort, one key
        (shutil.copytree if (ours / name).is_dir() else shutil.copy)(ours / name, theirs / name)
    config = yaml.safe_load((ours / "config.yaml").read_text(encoding="utf-8"))
    reference_demo = yaml.safe_load((reference / "config" / "demo.yaml").read_text(encoding="utf-8"))
    paths = {key: config[key] for key in ("raw_dicom", "segmentations", "lesions", "clinical", "key_file", "work_dir",
                                          "results_dir")}
    (theirs / "config.yaml").write_text(yaml.safe_dump({
        **reference_demo, **paths,
        "params": {m: str(reference / path) for m, path in reference_demo["params"].items()}}), encoding="utf-8")

    for workdir, code in ((ours, REPO), (theirs, reference)):
        result = run_with(code, workdir)
        assert result.returncode == 0, f"{code}: {result.stderr[-3000:]}"
    mine, reference_tables = table_digests(ours / "results"), table_digests(theirs / "results")
    assert len(mine) >= 10 and {"features/lesions.parquet", "tables/patients.parquet", "tables/dictionary.csv",
                                "qc/failures.csv"} <= set(mine)
    assert set(mine) == set(reference_tables), "the same table files"
    differing = sorted(name for name in mine if mine[name] != reference_tables[name])
    renamed = REFERENCE.get("renamed") or {}
    unexplained = [name for name in differing
                   if not renamed or not equal_once_renamed(ours / "results" / name, theirs / "results" / name, renamed)]
    assert not unexplained, (f"tables differing from those of {REFERENCE['commit'][:12]} beyond the renamed columns of "
                             f"tests/tables_reference.yaml: {unexplained}")
    if renamed:  # the renamed columns are published (else the rename is not tested)
        assert set(renamed.values()) <= set(pd.read_parquet(ours / "results" / "features" / "lesions.parquet").columns) \
            | set(pd.read_parquet(ours / "results" / "tables" / "patients.parquet").columns)


def equal_once_renamed(ours: Path, theirs: Path, renamed: dict[str, str]) -> bool:
    """Whether the table ``theirs`` equals ``ours`` value for value once its columns (and, in the dictionary, the
    ``column`` entries) are renamed; Parquet with its dtypes, CSV as the text it holds."""
    if ours.suffix == ".parquet":
        read = pd.read_parquet
    elif ours.suffix == ".csv":
        def read(path: Path) -> pd.DataFrame:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        return False
    mine, reference = read(ours), read(theirs).rename(columns=renamed)
    if ours.name == "dictionary.csv":
        reference["column"] = reference["column"].replace(renamed)
    try:
        pd.testing.assert_frame_equal(mine, reference, check_exact=True)
    except AssertionError:
        return False
    return True
