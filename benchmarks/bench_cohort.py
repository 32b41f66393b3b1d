"""End-to-end throughput per patient at clinical size: the real DAG on a synthetic cohort, stage by stage.

Run by hand (``tests/test_benchmarks_smoke.py`` runs ``--smoke``)::

    .venv/bin/python benchmarks/bench_cohort.py [--patients 4] [--shape 512 512 200] [--cores 2]
                                                [--profile] [--keep DIR] [--compare DIR] [--repo PATH]
                                                [--baseline COMMIT] [--smoke]

It writes an N-patient synthetic cohort with ``palmares synth`` (CT of ``--shape`` voxels plus PET, 1-4 lesions per
patient, two sites) in a temporary folder, then runs the project's Snakefile on it as a user does (``snakemake
--profile workflow/profiles/default --cores C``, the demo configuration pointing at that folder). It prints:

* per stage (and modality): CPU seconds per patient (mean, min-max) and the peak RSS of any one job, as each job's
  process recorded them at exit (``benchmarks/rusage/sitecustomize.py``, ``getrusage``: exact, where Snakemake's
  ``benchmark:`` files sample CPU about once a second), and wall seconds per patient from those files;
* the sum over the per-patient stages, the whole run's CPU (snakemake and every job: the cohort-level stages and
  Snakemake's own work included) and wall time per patient;
* the projection to the study: CPU-hours for 3,500 patients, and the wall time on one 16-core node with the
  default profile (every core busy, each job single-threaded: CPU / 16; memory permitting, 16 x the peak RSS);
* with ``--profile``: one patient's per-patient jobs run again under cProfile (``PALMARES_PROFILE_DIR``), and
  the functions that take the most time in each (cumulative, then own time);
* with ``--baseline COMMIT``: that commit's code (``git archive``, the repository untouched) run first on the same
  cohort, in a folder of its own, its table printed the same way, and the ratio of the two: a before/after pair
  measured one run after the other on one machine (machines differ: one of 2026-12-03 read DICOM headers 3.4x
  slower than another, so absolute seconds from different days do not compare);
* with ``--compare DIR`` (a ``--keep`` folder of an earlier run, e.g. of the previous commit through
  ``--repo``): whether every published table (``results/features``, ``results/tables``) is byte-identical.

``--repo PATH`` runs another checkout's Snakefile and package (its ``src`` first on PYTHONPATH) with this
environment, so a before/after pair is measured by the same script on the same machine. The package's bytecode is
compiled first (``compileall``), as after a first run: where Python does not write it (``PYTHONDONTWRITEBYTECODE``,
a read-only checkout) every job would compile the package's modules again, and a checkout measured for the first
time would pay for it. ``--smoke`` runs two small patients (64 x 64 x 40) to prove the script works; it measures
nothing.
"""

from __future__ import annotations

import argparse
import compileall
import csv
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "src"))

from palmares_radiomics.files import sha256_file  # noqa: E402
RUSAGE = REPO / "benchmarks" / "rusage"  #: its sitecustomize.py records each process's CPU
RUSAGE_FILE = "rusage.jsonl"  #: in the run folder
STUDY_PATIENTS = 3500
NODE_CORES = 16
#: The per-patient rules with a ``benchmark:`` file, in DAG order (index runs once per site): today's one job per
#: patient, and the deid, image, mask and features rules it replaced, so that ``--repo`` also measures an older
#: checkout.
STAGES = ("patient", "deid", "image", "mask", "features")
SMOKE = {"patients": 2, "shape": (64, 64, 40)}


@dataclass(frozen=True, slots=True)
class JobCost:
    """One job's cost: CPU and peak RSS as its process recorded them at exit, wall time from its ``benchmark:`` file."""

    stage: str        # rule, with the modality for per-modality jobs: "patient", "image ct"
    patient: str      # pseudonym, or the site for the index
    cpu_s: float
    wall_s: float
    max_rss_mb: float


def build_cohort(root: Path, repo: Path, patients: int, shape: tuple[int, int, int], seed: int) -> Path:
    """Write the synthetic cohort, its key and a configuration under ``root``; returns the configuration file."""
    subprocess.run([str(BIN / "palmares"), "synth", "demo", "--patients", str(patients), "--seed", str(seed),
                    "--shape", *map(str, shape)], cwd=root, env=_env(repo), check=True, stdout=subprocess.DEVNULL)
    # a key fixed by the seed (synthetic patients only): the same pseudonyms in every run, so that --compare can
    # find two runs' tables byte-identical
    (root / "demo" / "secret.key").write_text(hashlib.sha256(f"bench_cohort {seed}".encode()).hexdigest())
    return write_config(root, repo)


def write_config(root: Path, repo: Path) -> Path:
    """``repo``'s demo configuration for the cohort under ``root`` (its own parameter files and clinical schema)."""
    config = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    config["clinical_schema"] = str(repo / config["clinical_schema"])
    config["params"] = {modality: str(repo / path) for modality, path in config["params"].items()}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def export_commit(commit: str, into: Path) -> Path:
    """The tree of ``commit`` of this repository (``git archive``) written to the new folder ``into``, which it
    returns; the repository is not touched. A commit that is not here (a shallow clone) stops the script with
    git's reason. ``tests/test_tables_unchanged.py`` takes its reference commit's code with it too."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {commit}: {archive.stderr.decode(errors='replace').strip()} "
                         "(a shallow clone lacks older commits: git fetch --unshallow)")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def share_cohort(root: Path, other: Path, repo: Path) -> Path:
    """A run folder ``other`` reading ``root``'s cohort (raw data and key, linked, not copied) with ``repo``'s
    configuration, so that two checkouts are measured on the same patients; returns its configuration file."""
    (other / "demo").mkdir(parents=True)
    for name in ("raw", "secret.key"):
        (other / "demo" / name).symlink_to(os.path.relpath(root / "demo" / name, other / "demo"))  # --keep copies
    return write_config(other, repo)


def _env(repo: Path, **extra: str) -> dict[str, str]:
    """This environment with ``repo``'s package first on the path (its ``palmares`` is this environment's), then
    ``benchmarks/rusage`` (every process records its CPU where ``BENCH_RUSAGE_FILE`` says)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo / "src"), str(RUSAGE), env.get("PYTHONPATH", "")) if p)
    return env


def run_dag(root: Path, repo: Path, config: Path, cores: int, *targets: str, **env: str) -> tuple[float, float]:
    """Run the Snakefile of ``repo`` in ``root``; returns (wall s, CPU s of snakemake and all its jobs)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [str(BIN / "snakemake"), "-s", str(repo / "Snakefile"), "--configfile", str(config),
               "--profile", str(repo / "workflow" / "profiles" / "default"), "--cores", str(cores), *targets]
    env.setdefault("BENCH_RUSAGE_FILE", str(root / RUSAGE_FILE))
    done = subprocess.run(command, cwd=root, env=_env(repo, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"snakemake failed (exit {done.returncode}); its output's end is above")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def read_costs(work: Path, rusage: Path) -> list[JobCost]:
    """Every per-patient job (and the per-site index) under the work folder: its wall time from Snakemake's
    ``benchmark:`` file, its CPU and peak RSS as the job's process recorded them at exit (``rusage``, written by
    ``benchmarks/rusage/sitecustomize.py``: exact, where the benchmark file samples). A job with no record of its
    own stops the script: a figure left to the sampled file could be plausible and wrong."""
    exact = {_job_key(record["argv"]): record for record in map(json.loads, rusage.read_text().splitlines())}
    costs = []
    for stage in ("index", *STAGES):
        folder = work / ("phi/benchmarks" if stage in ("index", "deid") else "benchmarks") / stage
        for tsv in sorted(folder.glob("*.tsv")):
            with tsv.open(newline="") as handle:
                row = list(csv.DictReader(handle, delimiter="\t"))[-1]
            patient, _, modality = tsv.stem.rpartition("_") if tsv.stem.endswith(("_ct", "_pet")) \
                else (tsv.stem, "", "")
            record = exact.get((stage, tsv.stem))
            if record is None:
                raise SystemExit(f"{tsv}: the job left no CPU record in {rusage} (was benchmarks/rusage on its "
                                 "PYTHONPATH?)")
            costs.append(JobCost(f"{stage} {modality}".strip(), patient, record["cpu_s"], float(row["s"]),
                                 record["max_rss_mb"]))
    return costs


def _job_key(argv: list[str]) -> tuple[str, str]:
    """(stage, the name of its benchmark file) of a ``palmares stage <stage> --patient P [--modality M]`` or
    ``--site S`` process; ("", "") for any other process (Snakemake itself, another command)."""
    def option(name: str) -> str:
        return argv[argv.index(name) + 1] if name in argv[:-1] else ""

    if len(argv) < 3 or Path(argv[0]).name != "palmares" or argv[1] != "stage":
        return "", ""
    name = option("--site") if argv[2] == "index" else "_".join(filter(None, (option("--patient"),
                                                                                  option("--modality"))))
    return argv[2], name


def stage_table(costs: list[JobCost], patients: int) -> tuple[list[str], float, float, float]:
    """Markdown rows per stage; returns (rows, CPU s per patient summed over stages, wall s likewise, peak RSS MB)."""
    by_stage: dict[str, list[JobCost]] = defaultdict(list)
    for cost in costs:
        by_stage[cost.stage].append(cost)
    rows = ["| stage | jobs | CPU s per patient (mean, min-max) | wall s per patient | peak RSS MB |",
            "|---|---:|---:|---:|---:|"]
    cpu_total = wall_total = peak = 0.0
    for stage, jobs in by_stage.items():
        cpu = [job.cpu_s for job in jobs]
        per_patient = sum(cpu) / patients  # the index runs per site: its total shared by the patients
        wall = sum(job.wall_s for job in jobs) / patients
        rss = max(job.max_rss_mb for job in jobs)
        cpu_total, wall_total, peak = cpu_total + per_patient, wall_total + wall, max(peak, rss)
        spread = f"{min(cpu):.2f}-{max(cpu):.2f}" if stage != "index" else f"{sum(cpu):.2f} per run"
        rows.append(f"| {stage} | {len(jobs)} | {per_patient:.2f} ({spread}) | {wall:.2f} | {rss:.0f} |")
    rows.append(f"| **all per-patient stages** | {len(costs)} | **{cpu_total:.2f}** | {wall_total:.2f} | {peak:.0f} |")
    return rows, cpu_total, wall_total, peak


def projection(stage_cpu: float, run_cpu_per_patient: float, peak_mb: float) -> list[str]:
    """The study's cost from the measured per-patient CPU (the stages' and the whole run's)."""
    lines = []
    for what, cpu in (("per-patient stages", stage_cpu), ("whole run (Snakemake and cohort stages included)",
                                                           run_cpu_per_patient)):
        hours = cpu * STUDY_PATIENTS / 3600
        lines.append(f"- {what}: {cpu:.2f} CPU-s per patient -> {hours:.1f} CPU-hours for {STUDY_PATIENTS:,} "
                     f"patients, {hours / NODE_CORES * 60:.0f} min on one {NODE_CORES}-core node")
    lines.append(f"- memory: {NODE_CORES} jobs at the peak RSS of {peak_mb:.0f} MB need "
                 f"{NODE_CORES * peak_mb / 1024:.1f} GB")
    return lines


def profile_patient(root: Path, repo: Path, config: Path, cores: int, patient: str, top: int) -> list[str]:
    """Run ``patient``'s per-patient jobs again under cProfile; the top functions of each job as text lines."""
    folder = root / "profile"
    work = root / "demo" / "work"
    targets = [str(path.relative_to(root)) for path in sorted((work / "status" / "features").glob(f"{patient}_*.json"))]
    rules = [stage for stage in STAGES if any(work.glob(f"**/benchmarks/{stage}/{patient}*.tsv"))]
    run_dag(root, repo, config, cores, *targets, "--forcerun", *rules, PALMARES_PROFILE_DIR=str(folder))
    lines = []
    for prof in sorted(folder.glob("*.prof")):
        stats = pstats.Stats(str(prof))
        total = max(stat[3] for stat in stats.stats.values())  # cumulative of the outermost call
        lines.append(f"\n{prof.stem} ({total:.2f} s under cProfile)")
        for key, label in (("cumulative", "cumulative"), ("tottime", "own")):
            lines.append(f"  top {top} by {label} time:")
            entries = sorted(stats.stats.items(), key=lambda item: item[1][3 if key == "cumulative" else 2],
                             reverse=True)
            shown = 0
            for (file, line, function), (_, calls, own, cumulative, _) in entries:
                if key == "cumulative" and (function in ("<module>", "main", "<built-in method builtins.exec>")
                                            or file.startswith("<frozen")):
                    continue  # the entry points and import machinery: every job has them
                lines.append(f"    {cumulative if key == 'cumulative' else own:7.3f} s  {calls:>7}  "
                             f"{_short(file)}:{line}({function})")
                shown += 1
                if shown == top:
                    break
    return lines


def _short(file: str) -> str:
    """A profile entry's file, from the package or site-packages folder on."""
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def table_digests(results: Path) -> dict[str, str]:
    """sha256 of every published table (results/features, results/tables)."""
    return {str(path.relative_to(results)): sha256_file(path)
            for folder in ("features", "tables") for path in sorted((results / folder).rglob("*")) if path.is_file()}


def compare_tables(results: Path, other: Path) -> list[str]:
    """Lines saying whether every table under ``results`` is byte-identical to ``other``'s."""
    ours, theirs = table_digests(results), table_digests(other)
    differing = sorted(name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))
    if not differing:
        return [f"- tables: all {len(ours)} files byte-identical to {other}"]
    return [f"- tables: {len(differing)} of {len(ours | theirs)} files differ from {other}: {', '.join(differing)}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=4, help="synthetic patients (default 4)")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200), metavar=("X", "Y", "Z"),
                        help="CT matrix (default 512 512 200: clinical size)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic cohort seed (default 7, as make demo)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    parser.add_argument("--profile", action="store_true", help="also profile one patient's jobs (cProfile)")
    parser.add_argument("--top", type=int, default=8, help="functions shown per profiled job (default 8)")
    parser.add_argument("--keep", type=Path, help="keep the run (cohort, work, results) in this new folder")
    parser.add_argument("--compare", type=Path, help="a --keep folder of an earlier run: compare the tables")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to run (default: this one)")
    parser.add_argument("--baseline", metavar="COMMIT",
                        help="also run this commit's code (git archive) first on the same cohort; print the ratio")
    parser.add_argument("--smoke", action="store_true", help="two small patients: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.patients, args.shape = SMOKE["patients"], SMOKE["shape"]
    repo = args.repo.resolve()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: the folder exists; give a new one")
    compileall.compile_dir(repo / "src", quiet=1)  # steady state: each job imports compiled modules
    root = Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    try:
        # the baseline's code first: a commit that is not here stops the script before the cohort is written
        base_repo = export_commit(args.baseline, root / "baseline_repo") if args.baseline is not None else None
        started = time.perf_counter()
        config = build_cohort(root, repo, args.patients, tuple(args.shape), args.seed)
        print(f"cohort of {args.patients} written in {time.perf_counter() - started:.0f} s; running the DAG",
              file=sys.stderr, flush=True)
        baseline = None
        if base_repo is not None:  # first, on the same cohort, in a folder of its own
            compileall.compile_dir(base_repo / "src", quiet=1)
            base_root = root / "baseline"
            base_config = share_cohort(root, base_root, base_repo)
            baseline = measure(base_root, base_repo, base_config, args, f"baseline: {args.baseline} "
                               f"({_commit(REPO, args.baseline)})")
        ours = measure(root, repo, config, args, f"{repo.name} at {_commit(repo)}")
        if baseline is not None:
            print(f"\n## Ratio to the baseline ({args.baseline}), same cohort, one run after the other\n")
            print(f"- per-patient stages: {ours[0]:.2f} / {baseline[0]:.2f} CPU-s per patient = "
                  f"**{ours[0] / baseline[0]:.3f}**")
            print(f"- whole run: {ours[1]:.2f} / {baseline[1]:.2f} CPU-s per patient = {ours[1] / baseline[1]:.3f}")
        if args.compare is not None:
            print("\n".join(compare_tables(root / "results", args.compare / "results")))
        if args.profile:
            costs = read_costs(root / "demo" / "work", root / RUSAGE_FILE)
            patient = min(cost.patient for cost in costs if cost.stage != "index")  # a pseudonym, not a site
            print(f"\n## cProfile of patient {patient}'s jobs")
            print("\n".join(profile_patient(root, repo, config, args.cores, patient, args.top)))
        if args.keep is not None:
            shutil.copytree(root, args.keep, symlinks=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def measure(root: Path, repo: Path, config: Path, args: argparse.Namespace, label: str) -> tuple[float, float]:
    """Run the DAG of ``repo`` in ``root`` and print its costs; returns (CPU-s per patient of the per-patient stages,
    of the whole run)."""
    wall, cpu = run_dag(root, repo, config, args.cores)
    rows, stage_cpu, _, peak = stage_table(read_costs(root / "demo" / "work", root / RUSAGE_FILE), args.patients)
    x, y, z = args.shape
    print(f"\n## {args.patients} patients, CT {x}x{y}x{z} + PET, {args.cores} cores, default profile ({label})\n")
    print("\n".join(rows))
    print(f"\n- whole run: {wall:.1f} s wall, {cpu:.1f} CPU-s (snakemake and every job): "
          f"{cpu / args.patients:.2f} CPU-s and {wall / args.patients:.1f} s wall per patient")
    print("\n".join(projection(stage_cpu, cpu / args.patients, peak)))
    return stage_cpu, cpu / args.patients


def _commit(repo: Path, revision: str = "HEAD") -> str:
    """The short commit of ``revision`` (for HEAD: "+ changes" when the tree differs), or "?" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", revision) or "?"
    changed = revision == "HEAD" and git("status", "--porcelain", "--untracked-files=no")
    return commit + (" + changes" if changed else "")


if __name__ == "__main__":
    raise SystemExit(main())
