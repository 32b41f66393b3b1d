"""De-identification throughput and SUV safety: palmares deid vs a plain file copy vs peer tools, in one run.

Run by hand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_deid.py [--ct-slices 300] [--pet-slices 300] [--repeat 3] [--no-peers]
                                              [--cold]

It builds a 300-slice CT series and a PET series in a temporary folder from the real public files in
``../shared/data/dicom`` (each slice a copy of the template with its own SOP Instance UID, instance number and
position), then times, on the same files, with a warm page cache (or, with ``--cold``, after dropping the
input files from it before every run, so that every tool reads them from the disk):

* ``copy``: ``shutil.copy`` of every file (the ceiling: no parsing at all);
* ``palmares``: :func:`palmares_radiomics.deid.deidentify_tree` in this process (one process), then with
  ``workers`` = the number of CPUs;
* a bound (warm cache only): pydicom reading each header and doing nothing else, the least any de-identifier
  built on pydicom spends per file;
* the peers, from PyPI, installed together in one virtual environment that this script creates under
  ``$XDG_CACHE_HOME/palmares-radiomics/bench-venvs`` (never in the project's ``.venv``), each run as its user
  would run it from the command line, so their wall times include the interpreter start-up (measured
  separately and printed):

  - ``dicognito`` (:data:`DICOGNITO`): ``python -m dicognito --output-directory OUT IN``;
  - ``pydicom-deid`` (:data:`DEID`, the ``deid`` package) with its default recipe (``deid.dicom``):
    ``deid --outfolder OUT identifiers --input IN --action all`` (get the identifiers, then replace them);
  - GDCM (:data:`GDCM`, warm cache only), a second bound: its C++ reader and writer round-trip every file
    with nothing changed, timed inside that venv's process against a copy timed there too.

For every tool it also says whether SUVbw computed from the output equals SUVbw from the input (relative
difference below 1e-6), using the pipeline's own SUV stage on the same slice before and after. It prints one
Markdown table (best of ``--repeat`` interleaved rounds; pending writes are flushed before every run).
"""

from __future__ import annotations

import argparse
import json
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
GDCM = "python-gdcm==3.2.6"  # GDCM's C++ reader and writer: the floor of any parse-and-rewrite
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
    packages = (DICOGNITO, DEID, GDCM)
    env_dir = cache_dir() / "peers-{}".format("-".join(p.replace("==", "-") for p in packages))
    python, deid = env_dir / "bin" / "python", env_dir / "bin" / "deid"
    if not ((env_dir / "bin" / "dicognito").exists() and deid.exists() and (env_dir / ".complete").exists()):
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
        (env_dir / ".complete").touch()
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
                      fresh: Path, cold: list[Path] | None = None) -> dict[str, float]:
    """Best wall time of each tool over ``repeat`` rounds; tools alternate within a round so that a noisy
    neighbour on a shared machine slows them alike. Each run writes into an empty folder; the last is kept.
    ``cold``: the input files, dropped from the page cache before every run."""
    best = {name: float("inf") for name, _ in tools}
    for i in range(repeat):
        for number, (name, action) in enumerate(tools):
            out = fresh / f"tool{number}" / f"run{i}"
            if cold:
                evict(cold)
            else:
                os.sync()  # every run starts without the previous runs' dirty pages to write back
            start = time.perf_counter()
            action(out)
            best[name] = min(best[name], time.perf_counter() - start)
            if i < repeat - 1:
                shutil.rmtree(out)
    return best


#: Run in the peers' venv: best time of a copy and of a GDCM read + write (nothing changed) of every file, each
#: timed in that process, alternating, so the ratio compares like with like.
GDCM_FLOOR = """
import gdcm, json, os, shutil, sys, time
from pathlib import Path
files, out, repeat = [Path(p) for p in sys.argv[3:]], Path(sys.argv[1]), int(sys.argv[2])
def copy(target):
    for path in files:
        shutil.copy(path, target / path.name)
def gdcm_round_trip(target):
    for path in files:
        reader = gdcm.Reader()
        reader.SetFileName(str(path))
        if not reader.Read():
            raise SystemExit(f"GDCM cannot read {path}")
        writer = gdcm.Writer()
        writer.SetFile(reader.GetFile())
        writer.SetFileName(str(target / path.name))
        if not writer.Write():
            raise SystemExit(f"GDCM cannot write {path}")
best = {"copy": float("inf"), "gdcm": float("inf")}
for i in range(repeat):
    for name, action in (("copy", copy), ("gdcm", gdcm_round_trip)):
        target = out / f"{name}{i}"
        target.mkdir(parents=True)
        os.sync()
        start = time.perf_counter()
        action(target)
        best[name] = min(best[name], time.perf_counter() - start)
        shutil.rmtree(target)
print(json.dumps(best))
"""


def gdcm_floor(python: list[str], files: list[Path], out: Path, repeat: int) -> dict[str, float]:
    """Best seconds of a copy and of a GDCM read + write of ``files``, timed in one process of the peers' venv."""
    done = subprocess.run([*python, "-c", GDCM_FLOOR, str(out), str(repeat), *map(str, files)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (``df --output=fstype``), "" if unknown."""
    done = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    return done.stdout.split()[-1] if done.returncode == 0 and done.stdout.split() else ""


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the page cache (written back first), so the next read comes from the disk."""
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


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
    parser.add_argument("--no-peers", action="store_true",
                        help="skip the dicognito, pydicom-deid and GDCM comparison")
    parser.add_argument("--cold", action="store_true",
                        help="drop the input files from the page cache before every run (reads come from the disk)")
    parser.add_argument("--smoke", action="store_true", help="5 + 5 slices, one round, no peers: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.ct_slices, args.pet_slices, args.repeat, args.no_peers, args.cold = 5, 5, 1, True, False
    if args.cold and file_system(Path(tempfile.gettempdir())) in ("tmpfs", "ramfs"):
        parser.error(f"--cold needs the temporary folder on a disk, and {tempfile.gettempdir()} is in memory: "
                     "set TMPDIR to a folder on a disk")
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

            def pydicom_read(out: Path, files: list[Path] = files) -> None:
                out.mkdir(parents=True)
                for path in files:
                    pydicom.dcmread(path, stop_before_pixels=True)

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
            if not args.cold:  # reading a header from the disk reads less than a copy does: no bound then
                tools.append((f"bound: pydicom {pydicom.__version__} reads each header, nothing else", pydicom_read))
            if peers:
                tools += [(DICOGNITO.replace("==", " "), run_dicognito),
                          (f"pydicom-deid {DEID.split('==')[1]}, default recipe", run_deid)]
            best = timed_round_robin(tools, args.repeat, root / label, files if args.cold else None)
            copy_rate = megabytes / best[tools[0][0]]
            for number, (name, _action) in enumerate(tools):
                seconds = best[name]
                rate = megabytes / seconds
                out_dir = root / label / f"tool{number}" / f"run{args.repeat - 1}"
                suv = suv_verdict(files[0], out_dir) if label == "PET" and not name.startswith("bound") else "n/a"
                rows.append((label, slices, f"{megabytes:.1f}", name, f"{seconds:.3f}", f"{1000 * seconds / slices:.2f}",
                             f"{rate:.1f}", f"{100 * rate / copy_rate:.0f} %", suv))
            if peers and not args.cold:  # GDCM: its own process, its own copy baseline
                floor = gdcm_floor(peers["python"], files, root / label / "gdcm", args.repeat)
                rows.append((label, slices, f"{megabytes:.1f}",
                             f"bound: GDCM {GDCM.split('==')[1]} (C++) reads and writes each file, nothing changed",
                             f"{floor['gdcm']:.3f}", f"{1000 * floor['gdcm'] / slices:.2f}",
                             f"{megabytes / floor['gdcm']:.1f}", f"{100 * floor['copy'] / floor['gdcm']:.0f} %", "n/a"))
    print("| series | files | MB | tool | best wall time (s) | ms/file | MB/s | vs copy | SUVbw after = before |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    if startups:
        print("\npeer start-up (interpreter and imports), included in their wall times: "
              + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in startups.items()))
    print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, {cpus} CPUs, "
          f"best of {args.repeat} interleaved rounds, "
          + ("inputs dropped from the page cache before every run" if args.cold else "warm page cache"))
    if peers and not args.cold:
        print("GDCM's row: timed in its own process (the peers' venv) against a copy timed in that process.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
