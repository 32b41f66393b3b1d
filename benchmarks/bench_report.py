"""What the QC report costs: seconds and MB per 100 patients, on a finished run of a synthetic cohort.

Builds (or reuses, ``--workdir``) a ``palmares synth`` cohort of ``--patients`` patients (default 50) run through the
real study command (``snakemake``, default profile, 2 cores), then, in one process:

- the baseline: copying the run's QC pictures (``work/qc``) once, the I/O the report cannot avoid;
- ``report.render_report`` (cohort page, site pages, figures, pictures copied beside the pages), median of
  ``--repeat`` runs, and its ratio to the baseline;
- the size of ``results/qc/report.html`` + ``results/qc/report/`` and the number of pictures;
- the pictures' share of the features jobs: ``stages.run_features`` for ``--sample`` patient x modality pairs,
  once without and once with the QC pictures (``qc_dir``), in this process, and the ratio of the two.

Times are wall and CPU seconds of this process; everything is also given per 100 patients (linear in patients:
one set of pictures per lesion, one page per 50 patients). Nothing is asserted.

    .venv/bin/python benchmarks/bench_report.py [--patients 50] [--repeat 3] [--sample 6] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "src"))


def timed(function, *args, **kwargs):
    """((wall s, CPU s of this process), result)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return (time.perf_counter() - start, time.process_time() - cpu), result


def build_and_run(root: Path, patients: int) -> None:
    """A synthetic cohort, a key and the demo's config pointed at them (the tests' prepare_study), then the real
    study command."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_workflow import prepare_study

    prepare_study(root, patients=patients, seed=5)
    command = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
               "--profile", str(REPO / "workflow" / "profiles" / "default"), "--cores", "2"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=7200)
    if result.returncode != 0:
        raise SystemExit(f"the study command failed in {root}:\n{(result.stdout + result.stderr)[-3000:]}")


def folder_size(paths: list[Path]) -> tuple[int, int]:
    """(bytes, files) below ``paths``."""
    total = files = 0
    for path in paths:
        for item in ([path] if path.is_file() else path.rglob("*")):
            if item.is_file():
                total += item.stat().st_size
                files += 1
    return total, files


def features_sample(root: Path, sample: int) -> tuple[tuple[float, float], tuple[float, float], int]:
    """run_features without and with QC pictures on ``sample`` (patient, modality) pairs: times and lesions."""
    from palmares_radiomics import stages

    statuses = sorted((root / "work/status/features").glob("*.json"))[:sample]
    plain = drawn = (0.0, 0.0)
    lesions = 0
    with tempfile.TemporaryDirectory() as scratch:
        for path in statuses:
            patient, modality = path.stem.rsplit("_", 1)
            image, mask = root / f"work/status/image/{path.name}", root / f"work/status/mask/{path.name}"
            params = REPO / "params" / f"{modality}.yaml"
            out = Path(scratch) / f"{path.stem}.json"
            a, status = timed(stages.run_features, patient, modality, image, mask, params, out,
                              Path(scratch) / f"{path.stem}-a.json")
            b, _ = timed(stages.run_features, patient, modality, image, mask, params, out,
                         Path(scratch) / f"{path.stem}-b.json", qc_dir=Path(scratch) / path.stem)
            plain = (plain[0] + a[0], plain[1] + a[1])
            drawn = (drawn[0] + b[0], drawn[1] + b[1])
            lesions += sum(lesion.ok for lesion in status.lesions)
    return plain, drawn, lesions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=6, help="patient x modality pairs for the features timing")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="2 patients, one render, one pair: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.patients, args.repeat, args.sample = 2, 1, 1
    existed = args.workdir is not None and args.workdir.exists()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if not (root / "results/qc/report.html").is_file():
            start = time.perf_counter()
            build_and_run(root, args.patients)
            print(f"{args.patients}-patient cohort through the study command: {time.perf_counter() - start:.0f} s")
        import pandas as pd

        from palmares_radiomics.report import render_report

        os.chdir(root)  # status records and picture folders are recorded relative to the run folder, as the DAG runs

        results = root / "results"
        patients = len(pd.read_csv(results / "qc/patient_flow.csv").query("status == 'eligible'"))
        lesions = len(pd.read_parquet(results / "features/lesions.parquet"))
        combat = results / "qc/combat.csv"
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            baseline, _ = timed(shutil.copytree, root / "work/qc", Path(scratch) / "qc")
        renders = [timed(render_report, results, combat if combat.is_file() else None, root / "work/status",
                         root / "work/intake/modalities.csv")[0] for _ in range(args.repeat)]
        render = tuple(statistics.median(r[i] for r in renders) for i in (0, 1))
        size, files = folder_size([results / "qc/report.html", results / "qc/report"])
        plain, drawn, sampled = features_sample(root, args.sample)
        per = 100 / patients
        print(f"\n{patients} eligible patients, {lesions} lesion rows, {files} report files\n")
        print("| measure | value | per 100 patients |")
        print("|---|---:|---:|")
        print(f"| baseline: copy the QC pictures (wall s) | {baseline[0]:.2f} | {baseline[0] * per:.2f} |")
        print(f"| `render_report`, median of {args.repeat} (wall s) | {render[0]:.2f} | {render[0] * per:.2f} |")
        print(f"| `render_report` (CPU s) | {render[1]:.2f} | {render[1] * per:.2f} |")
        print(f"| render / baseline | {render[0] / baseline[0]:.1f} | |")
        print(f"| report size (MB) | {size / 1e6:.1f} | {size / 1e6 * per:.1f} |")
        print(f"| features jobs of {args.sample} pairs ({sampled} lesions), no pictures (CPU s) | {plain[1]:.2f} | |")
        print(f"| the same with the QC pictures (CPU s) | {drawn[1]:.2f} | |")
        print(f"| pictures: added CPU s per lesion | {(drawn[1] - plain[1]) / max(sampled, 1):.2f} | "
              f"{(drawn[1] - plain[1]) / max(sampled, 1) * lesions * per:.0f} |")
        print(f"| with / without pictures | {drawn[1] / plain[1]:.2f} | |")
        print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        if not args.keep and not existed:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep:
            print(f"study kept in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
