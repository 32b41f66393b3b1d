"""De-identification throughput and SUV safety: palmares deid vs a plain file copy vs dicognito, in one run.

Run by hand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_deid.py [--ct-slices 300] [--pet-slices 300] [--repeat 3]

It builds a 300-slice CT series and a PET series in a temporary folder from the real public files in
``../shared/data/dicom`` (each slice a copy of the template with its own SOP Instance UID, instance number and
position), then times, on the same files and the same warm page cache:

* ``copy``: ``shutil.copy`` of every file (the ceiling: no parsing at all);
* ``palmares``: :func:`palmares_radiomics.deid.deidentify_tree` in this process, then with ``workers`` = the
  number of CPUs;
* ``dicognito``: the ``dicognito`` command from PyPI, installed in a separate virtual environment that this
  script creates under ``$XDG_CACHE_HOME/palmares-radiomics/bench-venvs`` (never in the project's ``.venv``).
  Its wall time includes the interpreter start-up, measured separately and printed.

For every tool it also says whether SUVbw computed from the output equals SUVbw from the input (relative
difference below 1e-6), from first principles: weight, total dose, half-life, injection time vs SeriesTime.
It prints one Markdown table (best of ``--repeat`` interleaved rounds).
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
from pathlib import Path

import pydicom

from palmares_radiomics.suv import suv_card
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from palmares_radiomics.deid import DeidContext, deidentify_tree  # noqa: E402

SHARED = Path(os.environ.get("PALMARES_SHARED_DATA", REPO.parent / "shared" / "data"))
CT_TEMPLATE = SHARED / "dicom" / "ct_ge_crlm-ct-1004_slice020.dcm"
PET_TEMPLATE = SHARED / "dicom" / "pt_ge_sts-001_slice238.dcm"
DICOGNITO = "dicognito==0.19.0"
BENCH_KEY = b"benchmark-key-not-for-real-data-0123456789abcdef"


def cache_dir() -> Path:
    """Where the benchmark keeps its own virtual environments."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "palmares-radiomics" / "bench-venvs"


def ensure_dicognito() -> list[str]:
    """Create (once) a venv with dicognito under :func:`cache_dir`; return the command that runs it.

    ``python -m dicognito``: the ``dicognito`` console script of 0.19.0 calls ``main()`` without its
    required argument and fails with a TypeError.
    """
    env_dir = cache_dir() / DICOGNITO.replace("==", "-")
    python = env_dir / "bin" / "python"
    if not (env_dir / "bin" / "dicognito").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", DICOGNITO], check=True)
    return [str(python), "-m", "dicognito"]


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


def suvbw_factor(ds: pydicom.Dataset) -> float:
    """SUVbw scale factor (g/ml per Bq/ml) by the pipeline's own SUV stage; NaN when it refuses the header
    (e.g. a de-identifier that shifted Series Time but not the injection time, giving a negative uptake)."""
    card = suv_card([ds])
    return float("nan") if card.suvbw_scale_factor is None else card.suvbw_scale_factor


def suv_verdict(before: Path, after_dir: Path) -> str:
    """'yes' if SUVbw of the de-identified copy of ``before`` (found by InstanceNumber) equals the original."""
    original = pydicom.dcmread(before)
    for path in sorted(p for p in after_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - manifests and the like
            continue
        if ds.get("InstanceNumber") == original.InstanceNumber:
            try:
                f0, f1 = suvbw_factor(original), suvbw_factor(ds)
            except (AttributeError, ValueError, KeyError, TypeError) as exc:
                return f"no (not computable: {type(exc).__name__})"
            if f1 != f1:  # NaN: the SUV stage refuses the de-identified header
                return "no (SUV refused after de-identification)"
            rel = abs(f1 - f0) / f0
            return "yes" if rel < 1e-6 else f"no (SUVbw x{f1 / f0:.4f})"
    return "no (slice not found)"


def timed_round_robin(tools: list[tuple[str, object]], repeat: int, fresh: Path) -> dict[str, float]:
    """Best wall time of each tool over ``repeat`` rounds; tools alternate within a round so that a noisy
    neighbour on a shared machine slows them alike. Each run writes into an empty folder; the last is kept."""
    best = {name: float("inf") for name, _ in tools}
    for i in range(repeat):
        for name, action in tools:
            out = fresh / name.split()[0] / f"run{i}"
            start = time.perf_counter()
            action(out)  # type: ignore[operator]
            best[name] = min(best[name], time.perf_counter() - start)
            if i < repeat - 1:
                shutil.rmtree(out)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct-slices", type=int, default=300)
    parser.add_argument("--pet-slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-dicognito", action="store_true", help="skip the dicognito comparison")
    args = parser.parse_args(argv)
    dicognito = None if args.no_dicognito else ensure_dicognito()
    ctx = DeidContext(key=BENCH_KEY, site="BENCH")
    rows = []
    startup = None
    if dicognito:
        start = time.perf_counter()
        subprocess.run([*dicognito, "--version"], check=True, capture_output=True)
        startup = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        root = Path(tmp)
        for label, template, slices in (("CT", CT_TEMPLATE, args.ct_slices), ("PET", PET_TEMPLATE, args.pet_slices)):
            files = make_series(template, root / label / "in", slices, label)
            megabytes = sum(p.stat().st_size for p in files) / 1e6

            def copy(out: Path, files=files) -> None:
                out.mkdir(parents=True)
                for path in files:
                    shutil.copy(path, out / path.name)

            def palmares(out: Path, label=label) -> None:
                deidentify_tree(root / label / "in", out, ctx, audit_dir=out.parent / f"{out.name}_audit")

            def run_dicognito(out: Path, label=label) -> None:
                out.mkdir(parents=True)
                subprocess.run([*dicognito, "--quiet", "--output-directory", str(out), str(root / label / "in")],
                               check=True, capture_output=True)

            def palmares_parallel(out: Path, label=label) -> None:
                deidentify_tree(root / label / "in", out, ctx, audit_dir=out.parent / f"{out.name}_audit",
                                workers=os.cpu_count() or 1)

            tools = [("copy (shutil.copy)", copy), ("palmares deid", palmares),
                     (f"palmares-{os.cpu_count()}p deid (workers={os.cpu_count()})", palmares_parallel)]
            if dicognito:
                tools.append(("dicognito 0.19.0", run_dicognito))
            copy_rate = None
            best = timed_round_robin(tools, args.repeat, root / label)
            for name, _action in tools:
                seconds = best[name]
                rate = megabytes / seconds
                copy_rate = copy_rate or rate
                out_dir = root / label / name.split()[0] / f"run{args.repeat - 1}"
                suv = suv_verdict(files[0], out_dir) if label == "PET" else "n/a"
                rows.append((label, slices, f"{megabytes:.1f}", name, f"{seconds:.3f}", f"{rate:.1f}",
                             f"{slices / seconds:.0f}", f"{100 * rate / copy_rate:.0f} %", suv))
    print("| series | files | MB | tool | best wall time (s) | MB/s | files/s | vs copy | SUVbw after = before |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    if startup is not None:
        print(f"\ndicognito start-up (`python -m dicognito --version`): {startup:.2f} s, included in its wall times.")
    print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, {os.cpu_count()} CPUs, "
          f"best of {args.repeat} interleaved rounds, warm page cache")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
