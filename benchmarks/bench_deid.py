"""De-identification throughput and SUV safety: palmares deid vs a plain file copy vs peer tools, in one run.

Run by hand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_deid.py [--ct-slices 300] [--pet-slices 300] [--repeat 3] [--no-peers]

It builds a 300-slice CT series and a PET series in a temporary folder from the real public files in
``../shared/data/dicom`` (each slice a copy of the template with its own SOP Instance UID, instance number and
position), then times, on the same files and the same warm page cache:

* ``copy``: ``shutil.copy`` of every file (the ceiling: no parsing at all);
* ``palmares``: :func:`palmares_radiomics.deid.deidentify_tree` in this process (one process), then with
  ``workers`` = the number of CPUs;
* the peers, from PyPI, installed together in one virtual environment that this script creates under
  ``$XDG_CACHE_HOME/palmares-radiomics/bench-venvs`` (never in the project's ``.venv``), each run as its user
  would run it from the command line, so their wall times include the interpreter start-up (measured
  separately and printed):

  - ``dicognito`` (:data:`DICOGNITO`): ``python -m dicognito --output-directory OUT IN``;
  - ``pydicom-deid`` (:data:`DEID`, the ``deid`` package) with its default recipe (``deid.dicom``):
    ``deid --outfolder OUT identifiers --input IN --action all`` (get the identifiers, then replace them).

For every tool it also says whether SUVbw computed from the output equals SUVbw from the input (relative
difference below 1e-6), using the pipeline's own SUV stage on the same slice before and after. It prints one
Markdown table (best of ``--repeat`` interleaved rounds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from palmares_radiomics.deid import DeidContext, deidentify_tree  # noqa: E402
from palmares_radiomics.suv import suv_card  # noqa: E402

SHARED = Path(os.environ.get("PALMARES_SHARED_DATA", REPO.parent / "shared" / "data"))
CT_TEMPLATE = SHARED / "dicom" / "ct_ge_crlm-ct-1004_slice020.dcm"
PET_TEMPLATE = SHARED / "dicom" / "pt_ge_sts-001_slice238.dcm"
DICOGNITO = "dicognito==0.19.0"
DEID = "deid==0.4.13"  # pydicom-deid
BENCH_KEY = b"benchmark-key-not-for-real-data-0123456789abcdef"


def cache_dir() -> Path:
    """Where the benchmark keeps its own virtual environments."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "palmares-radiomics" / "bench-venvs"


def ensure_peers() -> dict[str, list[str]]:
    """Create (once) one venv with the peers under :func:`cache_dir`; return the command that runs each.

    ``python -m dicognito``: the ``dicognito`` console script of 0.19.0 calls ``main()`` without its
    required argument and fails with a TypeError.
    """
    env_dir = cache_dir() / "peers-{}".format("-".join(p.replace("==", "-") for p in (DICOGNITO, DEID)))
    python, deid = env_dir / "bin" / "python", env_dir / "bin" / "deid"
    if not ((env_dir / "bin" / "dicognito").exists() and deid.exists()):
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", DICOGNITO, DEID], check=True)
    return {"dicognito": [str(python), "-m", "dicognito"], "deid": [str(deid)], "python": [str(python)]}


def make_series(template: Path, out: Path, slices: int, seed: str) -> list[Path]:
    """Write ``slices`` copies of ``template`` as one series (new instance UIDs, numbers and positions)."""
    ds = pydicom.dcmread(template)
    out.mkdir(parents=True)
    series = generate_uid(entropy_srcs=[seed, "series"])
    z0 = float(ds.ImagePositionPatient[2])
    thickness = float(ds.get("SliceThickness", 2.5) or 2.5)
    paths = []
    for i in range(slices):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[seed, str(i)])
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = i + 1
        z = z0 - i * thickness
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z:.2f}"]
        if "SliceLocation" in ds:
            ds.SliceLocation = f"{z:.2f}"
        path = out / f"IM{i:05d}"
        ds.save_as(path)
        paths.append(path)
    return paths


def suv_verdict(before: Path, after_dir: Path) -> str:
    """'yes' if SUVbw of the de-identified copy of ``before`` (found by InstanceNumber) equals the original.

    SUVbw comes from the pipeline's own SUV stage; when it refuses the de-identified header (e.g. a negative
    uptake time, or the injection time deleted) the verdict says why.
    """
    original = pydicom.dcmread(before)
    for path in sorted(p for p in after_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - manifests and the like
            continue
        if ds.get("InstanceNumber") != original.InstanceNumber:
            continue
        f0 = suv_card([original]).suvbw_scale_factor
        try:
            card = suv_card([ds])
        except Exception as exc:  # noqa: BLE001 - a peer may leave a header the SUV stage cannot even read
            return f"no (SUV not computable: {type(exc).__name__})"
        if card.suvbw_scale_factor is None:
            return f"no (SUV refused: {(card.refused_reason or '').split(':')[0][:90]})"
        rel = abs(card.suvbw_scale_factor - f0) / f0
        return "yes" if rel < 1e-6 else f"no (SUVbw x{card.suvbw_scale_factor / f0:.4f})"
    return "no (slice not found)"


def timed_round_robin(tools: list[tuple[str, Callable[[Path], None]]], repeat: int,
                      fresh: Path) -> dict[str, float]:
    """Best wall time of each tool over ``repeat`` rounds; tools alternate within a round so that a noisy
    neighbour on a shared machine slows them alike. Each run writes into an empty folder; the last is kept."""
    best = {name: float("inf") for name, _ in tools}
    for i in range(repeat):
        for number, (name, action) in enumerate(tools):
            out = fresh / f"tool{number}" / f"run{i}"
            start = time.perf_counter()
            action(out)
            best[name] = min(best[name], time.perf_counter() - start)
            if i < repeat - 1:
                shutil.rmtree(out)
    return best


def start_up(command: list[str]) -> float:
    """Wall time of a command that only starts a peer (interpreter and imports), included in its times."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct-slices", type=int, default=300)
    parser.add_argument("--pet-slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="skip the dicognito and pydicom-deid comparison")
    args = parser.parse_args(argv)
    peers = {} if args.no_peers else ensure_peers()
    ctx = DeidContext(key=BENCH_KEY, site="BENCH")
    cpus = os.cpu_count() or 1
    startups = {} if not peers else {  # (``deid --version`` returns before importing anything)
        "dicognito": start_up([*peers["dicognito"], "--version"]),
        "pydicom-deid": start_up([*peers["python"], "-c", "import deid.main.identifiers"]),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        root = Path(tmp)
        for label, template, slices in (("CT", CT_TEMPLATE, args.ct_slices), ("PET", PET_TEMPLATE, args.pet_slices)):
            source = root / label / "in"
            files = make_series(template, source, slices, label)
            megabytes = sum(p.stat().st_size for p in files) / 1e6

            def copy(out: Path, files: list[Path] = files) -> None:
                out.mkdir(parents=True)
                for path in files:
                    shutil.copy(path, out / path.name)

            def palmares(out: Path, source: Path = source, workers: int = 1) -> None:
                deidentify_tree(source, out, ctx, audit_dir=out.parent / f"{out.name}_audit", workers=workers)

            def palmares_parallel(out: Path, source: Path = source) -> None:
                palmares(out, source, workers=cpus)

            def run_dicognito(out: Path, source: Path = source) -> None:
                out.mkdir(parents=True)
                subprocess.run([*peers["dicognito"], "--quiet", "--output-directory", str(out), str(source)],
                               check=True, capture_output=True)

            def run_deid(out: Path, source: Path = source) -> None:
                out.mkdir(parents=True)
                subprocess.run([*peers["deid"], "--quiet", "--outfolder", str(out), "--overwrite", "identifiers",
                                "--input", str(source), "--action", "all"], check=True, capture_output=True)

            tools: list[tuple[str, Callable[[Path], None]]] = [
                ("copy (shutil.copy)", copy), ("palmares deid, 1 process", palmares),
                (f"palmares deid, {cpus} processes", palmares_parallel)]
            if peers:
                tools += [(DICOGNITO.replace("==", " "), run_dicognito),
                          (f"pydicom-deid {DEID.split('==')[1]}, default recipe", run_deid)]
            best = timed_round_robin(tools, args.repeat, root / label)
            copy_rate = megabytes / best[tools[0][0]]
            for number, (name, _action) in enumerate(tools):
                seconds = best[name]
                rate = megabytes / seconds
                out_dir = root / label / f"tool{number}" / f"run{args.repeat - 1}"
                suv = suv_verdict(files[0], out_dir) if label == "PET" else "n/a"
                rows.append((label, slices, f"{megabytes:.1f}", name, f"{seconds:.3f}", f"{1000 * seconds / slices:.2f}",
                             f"{rate:.1f}", f"{100 * rate / copy_rate:.0f} %", suv))
    print("| series | files | MB | tool | best wall time (s) | ms/file | MB/s | vs copy | SUVbw after = before |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    if startups:
        print("\npeer start-up (interpreter and imports), included in their wall times: "
              + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in startups.items()))
    print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, {cpus} CPUs, "
          f"best of {args.repeat} interleaved rounds, warm page cache")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
