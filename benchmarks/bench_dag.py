"""How long Snakemake takes to build the whole-study DAG (dry run) for a 3,500-patient study.

The DAG's size, not the compute, limits a whole-cohort run's start-up (DESIGN.md, Job granularity),
and the slurm profile's grouping adds work at DAG time. This builds the inputs the DAG needs for N
patients without any pixel: a small synthetic cohort made by ``palmares synth`` gives the clinical
export and lesion table formats, whose rows are replicated to N patients over S sites, with one empty
raw-DICOM folder per site. Two states are timed, each with ``snakemake -n`` on the project's Snakefile:

- ``new study``: nothing run yet; Snakemake plans the PHI side (index and selection per site, the intake
  checkpoint, the clinical stage); the per-patient jobs are planned when the intake has run;
- ``after selection``: the headers-only PHI side has run (per-site index and series selection written,
  sizes from a 512 x 512 x 300 CT and a 200 x 200 x 250 PET, and the intake's per-patient records); the DAG
  plans one job per patient (de-identification, then image, mask and features of each modality), its
  resources scaled from the selection, as when a real run is resumed or when the DAG is re-evaluated after the
  intake checkpoint.

Prints a Markdown table: state, profile, jobs, wall time, CPU time and peak RSS of the snakemake process
(``snakemake -n`` as a user types it: the DAG, the dry-run schedule and every job printed to a pipe).

    .venv/bin/python benchmarks/bench_dag.py [--patients 3500] [--sites 24] [--profiles default slurm]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "src"))

from palmares_radiomics.intake import run_intake  # noqa: E402
from palmares_radiomics.pseudonym import load_key, pseudonym  # noqa: E402
from palmares_radiomics.select import Selection, selection_table  # noqa: E402
from palmares_radiomics.synth import synthesize_cohort  # noqa: E402

CT_VOXELS, CT_FILES = 512 * 512 * 300, 300
PET_VOXELS, PET_FILES = 200 * 200 * 250, 250


def _replicate(template: Path, out: Path, patients: int, sites: list[str]) -> None:
    """Write ``out`` with the rows of the synthetic ``template`` CSV cycled to ``patients`` patients.

    Patient ``i`` gets the site ``sites[i % len(sites)]`` and the local ID ``BENCH{i:06d}``; every other
    value is the template row's, so the export stays valid whatever columns the current format has.
    """
    with open(template, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    by_patient: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], []).append(row)
    groups = list(by_patient.values())
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for i in range(patients):
            for row in groups[i % len(groups)]:
                writer.writerow({**row, "site": sites[i % len(sites)], "patient_id": f"BENCH{i:06d}"})


def build_study(root: Path, patients: int, n_sites: int) -> Path:
    """A study folder with a config.yaml, a key, the clinical export and lesion table for ``patients``."""
    synthesize_cohort(root / "template", patients=3, seed=1)
    sites = [f"IT{s + 1:02d}" for s in range(n_sites)]
    raw = root / "raw"
    for site in sites:
        (raw / "dicom" / site).mkdir(parents=True)
    (raw / "segmentations").mkdir()
    _replicate(root / "template/raw/clinical.csv", raw / "clinical.csv", patients, sites)
    _replicate(root / "template/raw/lesions.csv", raw / "lesions.csv", patients, sites)
    (root / "secret.key").write_text(secrets.token_urlsafe(48))
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config.update(raw_dicom="raw/dicom", segmentations="raw/segmentations", lesions="raw/lesions.csv",
                  clinical="raw/clinical.csv", key_file="secret.key", work_dir="work", results_dir="results",
                  params={m: str(REPO / "params" / f"{m}.yaml") for m in ("ct", "pet")})
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def write_selection(root: Path) -> int:
    """Write the PHI side's per-site index and series selection as if index + select had run (headers only).

    The index holds one row per selected series (the dry run never reads it; the deid stage would);
    the selection holds every patient's CT and PET with the sizes of ``CT_VOXELS`` and ``PET_VOXELS``.
    """
    key = load_key(root / "secret.key")
    with open(root / "raw/clinical.csv", newline="") as handle:
        patients = [(r["site"], r["patient_id"]) for r in csv.DictReader(handle)]
    by_site: dict[str, list[Selection]] = {}
    for site, patient_id in patients:
        name = pseudonym(key, site, patient_id)
        for modality, files, voxels in (("ct", CT_FILES, CT_VOXELS), ("pet", PET_FILES, PET_VOXELS)):
            by_site.setdefault(site, []).append(Selection(site, patient_id, name, modality, "ok",
                                                          series_uid=f"2.25.{len(by_site[site]) + 1}",
                                                          n_files=files, voxels=voxels))
    phi = root / "work" / "phi"
    for folder in ("index", "selection"):
        (phi / folder).mkdir(parents=True, exist_ok=True)
    for site, selections in by_site.items():
        table = selection_table(selections)
        index = table[["site", "patient_id", "series_uid"]].assign(
            status="ok", path=[f"raw/dicom/{site}/{uid}.dcm" for uid in table["series_uid"]], size="1", mtime_ns="1")
        index.to_csv(phi / "index" / f"{site}.csv", index=False)
        table.to_csv(phi / "selection" / f"{site}.csv", index=False)
    # the intake (PHI side, after selection) writes every patient's records; the DAG then plans their jobs
    run_intake(sorted((phi / "selection").glob("*.csv")), sorted((phi / "index").glob("*.csv")),
               root / "raw" / "segmentations", root / "raw" / "lesions.csv", ["ct", "pet"], phi / "intake",
               root / "work" / "intake" / "modalities.csv")
    return len(patients)


def dry_run(root: Path, profile: str) -> tuple[int, float, float, float]:
    """``snakemake -n`` in ``root`` with ``profile``: (jobs planned, wall time s, CPU time s, peak RSS MB).

    CPU time (user + system) is what to compare on a shared machine: wall time grows with other load.
    """
    command = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
               "--profile", str(REPO / "workflow" / "profiles" / profile), "-n"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    with process.stdout:
        output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # reaps the child and gives its own peak RSS
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"snakemake -n failed in {root}:\n{output[-3000:]}")
    total = re.search(r"^total\s+(\d+)\s*$", output, re.MULTILINE)
    jobs = int(total.group(1)) if total else 0
    return jobs, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=3500)
    parser.add_argument("--sites", type=int, default=24)
    parser.add_argument("--profiles", nargs="+", default=["default", "slurm"])
    parser.add_argument("--keep", type=Path, help="build the study here and keep it (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true",
                        help="20 patients over 2 sites, both profiles: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:  # it proves the script runs; the slurm profile's dry run needs no SLURM command (checked)
        args.patients, args.sites, args.profiles = 20, 2, ["default", "slurm"]
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        build_study(root, args.patients, args.sites)
        print(f"study of {args.patients} patients over {args.sites} sites built in "
              f"{time.perf_counter() - start:.1f} s\n")
        print("| state | profile | jobs | dry-run wall time (s) | CPU time (s) | peak RSS (MB) |")
        print("|---|---|---:|---:|---:|---:|")
        for state in ("new study", "after selection"):
            if state == "after selection":
                write_selection(root)
            for profile in args.profiles:
                jobs, wall, cpu, rss = dry_run(root, profile)
                print(f"| {state} | {profile} | {jobs} | {wall:.1f} | {cpu:.1f} | {rss:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
