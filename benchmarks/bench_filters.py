"""Per-lesion cost of each IBSI 2 filter: palmares vs pyradiomics' nearest filter vs MIRP, ratios measured in one run.

Run by hand (not part of the test suite; ``tests/test_benchmarks_smoke.py`` runs ``--smoke``)::

    .venv/bin/python benchmarks/bench_filters.py [--repeat 3] [--inner 5] [--no-mirp] [--filters KEY ...]
                                                 [--profile KEY] [--smoke]

On the synthetic 512 x 512 x 120 CT of ``bench_features.py`` (:func:`bench_features.ct_volume`), for its largest
lesion (14.6 ml) and one representative 3-D configuration of each filter family (:data:`CASES`, IBSI-typical
settings, mirror boundary), it times in interleaved rounds (medians over ``--repeat`` rounds of ``--inner`` runs,
after one untimed warm-up call of each task, which imports and plans):

* ``ours``: :func:`palmares_radiomics.features.extract_lesion` with ``params/ct.yaml``'s settings, feature class
  ``firstorder`` only, plus the one filter, *minus* the same without the filter: the filter's own cost (the larger
  crop its apron needs, the response map and its 18 intensity statistics);
* ``apply``: :func:`palmares_radiomics.filters.apply` alone on the lesion's resampled crop (the response map only);
* pyradiomics' nearest filter (:data:`PYRADIOMICS_FILTERS`: its LoG, or its Wavelet, which always computes all 8
  sub-bands) with its own 1 mm resampling and crop (``preCrop``, as its users run it) and ``firstorder`` only:
  ``imageType`` Original + the filter *minus* Original alone;
* MIRP (``mirp==2.7.0``, in its own virtual environment as :func:`bench_features.ensure_mirp` installs it) in a
  subprocess: ``extract_features`` with the same filter (``filter_kernels`` and its settings) and statistics features
  only, *minus* MIRP with no filter; it crops its 1 mm grid to the margin ours uses for each filter
  (``crop_around_roi``).

pyradiomics and MIRP get the lesion's neighbourhood of the CT (:func:`neighbourhood`: native grid, the largest
filter margin + 5 mm), ours the whole CT as in the pipeline. On the whole CT their per-lesion baselines are long and
unsteady (pyradiomics 0.6-0.8 s, ``numpy.unique`` over the whole label map, varying by 100 ms on a shared machine;
MIRP 20-35 s, interpolating the whole image, varying by seconds), which hides filters costing 10-100 ms: in a first
run pyradiomics' LoG differences came out negative.

It prints one Markdown table (one row per filter) with the crop each filter runs on, the ratio to pyradiomics'
nearest filter against the issue's aim (<= 2x) and the ratio to MIRP. ``--profile KEY`` prints a cProfile of
``extract_lesion`` with that filter on the lesion instead.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import (BARE_SETTINGS, LESIONS, MIRP_SETTINGS, OWN_RESAMPLING, ORIGIN, PARAMS, SHAPE,  # noqa: E402
                            SMOKE_GRID, SPACING, check_params, ct_volume, ensure_mirp)

from palmares_radiomics.features import (FILTER_SEPARATOR, ExtractionParams, extract_lesion,  # noqa: E402
                                         needs_whole_image, lesion_margin_mm, load_params)
from palmares_radiomics.filters import FilterSpec, apply, parse_filters  # noqa: E402
from palmares_radiomics.resample import bounding_box, resample_lesion  # noqa: E402

#: The lesion timed: the largest of bench_features.LESIONS (14.6 ml, with an air cavity).
LABEL = LESIONS[0][0]
#: IBSI 2's mirror boundary (the edge voxel repeated) is scipy's "reflect", the name MIRP uses (scipy's names).
MIRP_BOUNDARY = "reflect"
#: Margin (mm) of the neighbourhood handed to pyradiomics and MIRP beyond the largest filter margin of :data:`CASES`
#: (room for their interpolation and pyradiomics' padDistance).
PRECROP_EXTRA_MM = 5.0
#: A MIRP configuration slower than this (s, its warm-up run) runs once per round instead of ``--inner`` times.
MIRP_SLOW_S = 2.0

#: pyradiomics' filters (``imageType`` entries, added to Original) that the cases are compared with.
PYRADIOMICS_FILTERS: dict[str, dict[str, Any]] = {
    "LoG sigma 1.5 mm": {"LoG": {"sigma": [1.5]}},
    "LoG sigma 3 mm": {"LoG": {"sigma": [3.0]}},
    "Wavelet coif1 level 1, all 8 sub-bands": {"Wavelet": {"wavelet": "coif1", "start_level": 0, "level": 1}},
}


@dataclass(frozen=True, slots=True)
class FilterCase:
    """One filter of the benchmark: its ``palmares.filters`` entry, pyradiomics' nearest filter (a key of
    :data:`PYRADIOMICS_FILTERS`) and the ``mirp.extract_features`` keyword arguments of the same filter."""

    key: str
    title: str
    block: Mapping[str, Any]
    nearest: str
    mirp: Mapping[str, Any]


#: One representative 3-D configuration per family (IBSI 2 phase 2 settings where it has them), mirror boundary.
#: pyradiomics has no mean, Laws, Gabor or Simoncelli filter: their nearest is its cheapest smoothing filter (LoG
#: 1.5 mm, recursive Gaussian) for the mean filter, and its only filter bank (Wavelet, 8 separable sub-bands) for the
#: filters that pool or combine several responses.
CASES: tuple[FilterCase, ...] = (
    FilterCase("mean", "mean, support 5 voxels",
               {"filter": "mean", "support_voxels": 5},
               "LoG sigma 1.5 mm", {"filter_kernels": "mean", "mean_filter_kernel_size": 5}),
    FilterCase("log1.5", "LoG sigma 1.5 mm, truncation 4",
               {"filter": "laplacian_of_gaussian", "sigma_mm": 1.5, "truncation": 4.0},
               "LoG sigma 1.5 mm", {"filter_kernels": "laplacian_of_gaussian", "laplacian_of_gaussian_sigma": 1.5,
                                    "laplacian_of_gaussian_kernel_truncate": 4.0}),
    FilterCase("log3", "LoG sigma 3 mm, truncation 4",
               {"filter": "laplacian_of_gaussian", "sigma_mm": 3.0, "truncation": 4.0},
               "LoG sigma 3 mm", {"filter_kernels": "laplacian_of_gaussian", "laplacian_of_gaussian_sigma": 3.0,
                                  "laplacian_of_gaussian_kernel_truncate": 4.0}),
    FilterCase("laws", "Laws L5E5E5 energy (delta 7), rotation invariant (max)",
               {"filter": "laws", "kernel": "L5E5E5", "rotation_invariance": True, "pooling": "max",
                "energy_map": True, "energy_delta_voxels": 7},
               "Wavelet coif1 level 1, all 8 sub-bands",
               {"filter_kernels": "laws", "laws_kernel": "L5E5E5", "laws_delta": 7, "laws_compute_energy": True,
                "laws_rotation_invariance": True, "laws_pooling_method": "max"}),
    FilterCase("gabor", "Gabor sigma 5 mm, gamma 1.5, lambda 2 mm, 22.5 deg steps, 3D invariant (average)",
               {"filter": "gabor", "sigma_mm": 5.0, "gamma": 1.5, "lambda_mm": 2.0, "theta_deg": 0,
                "theta_step_deg": 22.5, "rotation_invariance": True, "pooling": "average", "truncation": 4.0,
                "response": "modulus"},
               "Wavelet coif1 level 1, all 8 sub-bands",
               {"filter_kernels": "gabor", "gabor_sigma": 5.0, "gabor_gamma": 1.5, "gabor_lambda": 2.0,
                "gabor_theta": 0.0, "gabor_theta_step": 22.5, "gabor_rotation_invariance": True,
                "gabor_pooling_method": "mean", "gabor_response": "modulus"}),
    FilterCase("wavelet", "wavelet coif1 LLH level 1",
               {"filter": "separable_wavelet", "wavelet": "coif1", "subband": "LLH", "level": 1,
                "rotation_invariance": False, "pooling": "none"},
               "Wavelet coif1 level 1, all 8 sub-bands",
               {"filter_kernels": "separable_wavelet", "separable_wavelet_families": "coif1",
                "separable_wavelet_set": "llh", "separable_wavelet_decomposition_level": 1,
                "separable_wavelet_rotation_invariance": False}),
    FilterCase("wavelet-invariant", "wavelet coif1 LLH level 1, rotation invariant (average)",
               {"filter": "separable_wavelet", "wavelet": "coif1", "subband": "LLH", "level": 1,
                "rotation_invariance": True, "pooling": "average"},
               "Wavelet coif1 level 1, all 8 sub-bands",
               {"filter_kernels": "separable_wavelet", "separable_wavelet_families": "coif1",
                "separable_wavelet_set": "llh", "separable_wavelet_decomposition_level": 1,
                "separable_wavelet_rotation_invariance": True, "separable_wavelet_pooling_method": "mean"}),
    FilterCase("simoncelli", "Simoncelli wavelet level 1",
               {"filter": "simoncelli_wavelet", "level": 1},
               "Wavelet coif1 level 1, all 8 sub-bands",
               {"filter_kernels": "nonseparable_wavelet", "nonseparable_wavelet_families": "simoncelli",
                "nonseparable_wavelet_decomposition_level": 1, "nonseparable_wavelet_response": "real"}),
)
#: ``--smoke``: three cheap filters (both pyradiomics filter types), bench_features' coarse grid, one round, no MIRP.
SMOKE_CASES = ("mean", "log1.5", "wavelet")
#: Name of the no-filter runs in the timing tables.
NONE = "none"

#: Runs in MIRP's virtual environment: times extract_features per configuration in interleaved rounds, after one
#: untimed warm-up run of each (``inner`` runs per round, one for a configuration whose warm-up took over
#: ``slow_s``), prints JSON on the last line: seconds and the number of statistics columns.
MIRP_WORKER = r"""
import importlib.metadata, json, numbers, sys, time, warnings
warnings.simplefilter("ignore")
from mirp import extract_features
args = json.loads(sys.argv[1])

def run(settings):
    start = time.perf_counter()
    tables = extract_features(image=args["image"], mask=args["mask"], roi_name=args["roi"], export_features=True,
                              **args["base"], **settings)
    elapsed = time.perf_counter() - start
    row = tables[0].iloc[0]
    return elapsed, sum(1 for k, v in row.items() if "stat_" in k and isinstance(v, numbers.Real))

warm = {name: run(settings) for name, settings in args["configs"].items()}
inner = {name: 1 if warm[name][0] > args["slow_s"] else args["inner"] for name in warm}
times = {name: [] for name in args["configs"]}
for _ in range(args["repeat"]):
    for name, settings in args["configs"].items():
        times[name].extend(run(settings)[0] for _ in range(inner[name]))
statistics = {name: count for name, (_, count) in warm.items()}
print(json.dumps({"version": importlib.metadata.version("mirp"), "times": times, "statistics": statistics}))
"""


def filter_spec(case: FilterCase) -> FilterSpec:
    """The validated filter of ``case`` (3-D, mirror boundary), as a parameter file would give it."""
    block = {**case.block, "boundary": "mirror", "dimensions": "3D"}
    return parse_filters([block], f"bench_filters.py CASES[{case.key!r}]")[0]


def firstorder_params(params: ExtractionParams) -> ExtractionParams:
    """``params`` with feature class firstorder only and no filter: the baseline every filter is added to."""
    return dataclasses.replace(params, classes={"firstorder": params.classes["firstorder"]}, ivh=None, filters=())


def pyradiomics_extractor(image_types: Mapping[str, Any]) -> Any:
    """pyradiomics with ct.yaml's settings in its spelling, its own 1 mm resampling and pre-crop, firstorder only,
    on Original plus ``image_types``."""
    from radiomics import featureextractor

    settings = {"setting": {**BARE_SETTINGS["setting"], **OWN_RESAMPLING, "preCrop": True},
                "imageType": {"Original": {}, **image_types}, "featureClass": {"firstorder": None}}
    return featureextractor.RadiomicsFeatureExtractor(settings)


def filtered_count(result: Mapping[str, Any], prefix: str) -> int:
    """Number of feature values in ``result`` whose key starts with ``prefix`` (the features of one filter)."""
    return sum(1 for key in result if key.startswith(prefix))


def pyradiomics_filtered(result: Mapping[str, Any]) -> int:
    """Number of pyradiomics feature values computed on a filtered image (neither diagnostics nor original)."""
    return sum(1 for key in result if not key.startswith(("diagnostics_", "original_")))


def neighbourhood(image: sitk.Image, label_map: sitk.Image, margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The lesion's bounding box plus ``margin_mm`` of the native image and label map (clipped to the image)."""
    box = bounding_box(label_map, LABEL)
    assert box is not None, "the benchmark CT has lesion 1"
    index, size = box
    low = [max(0, i - int(np.ceil(margin_mm / s))) for i, s in zip(index, image.GetSpacing())]
    high = [min(n, i + z + int(np.ceil(margin_mm / s)))
            for i, z, n, s in zip(index, size, image.GetSize(), image.GetSpacing())]
    extent = [h - lo for lo, h in zip(low, high)]
    return sitk.RegionOfInterest(image, extent, low), sitk.RegionOfInterest(label_map, extent, low)


def run_mirp(python: Path, image_n: sitk.Image, label_n: sitk.Image, cases: tuple[FilterCase, ...],
             margins: Mapping[str, float], repeat: int, inner: int) -> dict[str, Any]:
    """MIRP on the lesion's neighbourhood (NIfTI copies of ``image_n``, ``label_n``) in its own process,
    ``extract_features`` timed ``inner`` times per configuration and round (:data:`MIRP_WORKER`); each configuration
    crops MIRP's 1 mm grid to the margin ours uses (``margins``: key -> mm)."""
    base = {**MIRP_SETTINGS, "base_feature_families": ["statistics"], "crop_around_roi": True,
            "boundary_condition": MIRP_BOUNDARY}
    configs = {NONE: {"crop_distance": margins[NONE]}}
    configs.update({case.key: {**case.mirp, "crop_distance": margins[case.key]} for case in cases})
    with tempfile.TemporaryDirectory(prefix="bench-filters-") as tmp:
        image_path, mask_path = Path(tmp) / "image.nii", Path(tmp) / "labels.nii"
        sitk.WriteImage(image_n, str(image_path))
        sitk.WriteImage(label_n, str(mask_path))
        args = {"image": str(image_path), "mask": str(mask_path), "roi": str(LABEL), "repeat": repeat,
                "inner": inner, "slow_s": MIRP_SLOW_S, "base": base, "configs": configs}
        done = subprocess.run([str(python), "-c", MIRP_WORKER, json.dumps(args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"MIRP failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile(case: FilterCase, image: sitk.Image, label_map: sitk.Image, params: ExtractionParams) -> None:
    """cProfile of ``extract_lesion`` with ``case``'s filter on the lesion (after one warm-up run): the functions
    with the most time of their own, and the cumulative view."""
    run = dataclasses.replace(params, filters=(filter_spec(case),))
    extract_lesion(image, label_map, LABEL, run)
    profiler = cProfile.Profile()
    profiler.runcall(extract_lesion, image, label_map, LABEL, run)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (MIRP: rounds in its process)")
    parser.add_argument("--inner", type=int, default=5,
                        help=f"runs per round of each task (MIRP: of each configuration faster than {MIRP_SLOW_S:g} s)")
    parser.add_argument("--no-mirp", action="store_true", help="skip the MIRP comparison")
    parser.add_argument("--filters", nargs="+", choices=[c.key for c in CASES], metavar="KEY",
                        help=f"only these filters (default: all of {', '.join(c.key for c in CASES)})")
    parser.add_argument("--profile", choices=[c.key for c in CASES], metavar="KEY",
                        help="print a cProfile of extract_lesion with this filter on the lesion, and nothing else")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny coarse CT, one round, no MIRP, filters {', '.join(SMOKE_CASES)}: checks the script runs")
    args = parser.parse_args(argv)
    grid_spec = (SHAPE, SPACING, ORIGIN)
    keys = args.filters or [c.key for c in CASES]
    if args.smoke:
        args.repeat, args.inner, args.no_mirp, grid_spec, keys = 1, 1, True, SMOKE_GRID, list(SMOKE_CASES)
    cases = tuple(c for c in CASES if c.key in keys)
    logging.disable(logging.WARNING)  # pyradiomics warns on every lesion
    params = load_params(PARAMS)
    check_params(params)
    base = firstorder_params(params)
    image, label_map = ct_volume(grid=grid_spec)
    if args.profile:
        profile(next(c for c in CASES if c.key == args.profile), image, label_map, base)
        return 0
    mirp_python = None if args.no_mirp else ensure_mirp()

    specs = {case.key: filter_spec(case) for case in cases}
    runs = {NONE: base, **{key: dataclasses.replace(base, filters=(spec,)) for key, spec in specs.items()}}
    margins = {key: lesion_margin_mm(run, image) for key, run in runs.items()}
    # the same neighbourhood whichever --filters are chosen; filters that take the whole image (Simoncelli,
    # features.needs_whole_image) would make it the whole CT, so the largest margin of the others
    largest = max(lesion_margin_mm(dataclasses.replace(base, filters=(spec,)), image)
                  for spec in map(filter_spec, CASES) if not needs_whole_image(spec))
    image_n, label_n = neighbourhood(image, label_map, largest + PRECROP_EXTRA_MM)
    crops = {key: resample_lesion(image, label_map, base.resampling, margins[key], LABEL)[0] for key in specs}
    nearest = {case.nearest for case in cases}
    extractors = {NONE: pyradiomics_extractor({}),
                  **{name: pyradiomics_extractor(PYRADIOMICS_FILTERS[name]) for name in PYRADIOMICS_FILTERS
                     if name in nearest}}

    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    def timed(task: str, action: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = action()
        times.setdefault(task, []).append(time.perf_counter() - start)
        return result

    if not args.smoke:  # first calls import and plan (pywt, FFT): not what a lesion costs in a study
        for key, run in runs.items():
            extract_lesion(image, label_map, LABEL, run)
        for extractor in extractors.values():
            extractor.execute(image_n, label_n, label=LABEL)
    for round_ in range(args.repeat):
        print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
        for _ in range(args.inner):
            for key, run in runs.items():
                values = timed(f"ours {key}", lambda: extract_lesion(image, label_map, LABEL, run))
                if key != NONE:
                    counts[f"ours {key}"] = filtered_count(values, specs[key].name + FILTER_SEPARATOR)
            for key, spec in specs.items():
                timed(f"apply {key}", lambda: apply(spec, crops[key]))
            for name, extractor in extractors.items():
                result = timed(f"pyradiomics {name}", lambda: extractor.execute(image_n, label_n, label=LABEL))
                counts[f"pyradiomics {name}"] = pyradiomics_filtered(result)
    median_ms = {task: 1000 * statistics.median(samples) for task, samples in times.items()}

    mirp: dict[str, Any] | None = None
    mirp_note = "MIRP not run"
    if mirp_python is not None:
        print("MIRP", file=sys.stderr, flush=True)
        try:
            mirp = run_mirp(mirp_python, image_n, label_n, cases, margins, args.repeat, args.inner)
        except RuntimeError as exc:
            mirp_note = str(exc)
        else:
            mirp_note = (f"MIRP {mirp['version']}: {args.repeat} rounds of {args.inner} runs (1 for a configuration "
                         f"slower than {MIRP_SLOW_S:g} s) in its own process on the lesion's neighbourhood (NIfTI), "
                         "crop_around_roi")
    mirp_ms = {k: 1000 * statistics.median(v) for k, v in mirp["times"].items()} if mirp else {}

    unapplied = [f"{tool} {key}" for tool, key, n in
                 [("ours", c.key, counts[f"ours {c.key}"]) for c in cases]
                 + [("pyradiomics", c.nearest, counts[f"pyradiomics {c.nearest}"]) for c in cases]
                 + ([("MIRP", c.key, mirp["statistics"][c.key] - mirp["statistics"][NONE]) for c in cases] if mirp else [])
                 if n <= 0]
    if unapplied:
        raise SystemExit(f"no feature of the filtered image came back from: {', '.join(unapplied)}")

    volume_ml = int((sitk.GetArrayViewFromImage(label_map) == LABEL).sum()) * float(np.prod(grid_spec[1])) / 1000
    base_crop = resample_lesion(image, label_map, base.resampling, margins[NONE], LABEL)[0]
    print(f"| filter ({volume_ml:.1f} ml lesion) | crop at 1 mm (voxels) | ours (ms) | of which apply (ms) "
          f"| pyradiomics nearest | pyradiomics (ms) | ours / pyradiomics | aim (<= 2x) | MIRP (ms) | ours / MIRP "
          f"| statistics added: ours / pyradiomics / MIRP |")
    print("|---|---|---:|---:|---|---:|---:|---|---:|---:|---|")
    ours_base, pyr_base = median_ms[f"ours {NONE}"], median_ms[f"pyradiomics {NONE}"]
    mirp_base = mirp_ms.get(NONE)
    print(f"| no filter: firstorder of the image, the baseline subtracted below (ours: whole CT in; the others: the "
          f"neighbourhood) | {'x'.join(map(str, base_crop.GetSize()))} | {ours_base:.1f} | | Original "
          f"| {pyr_base:.1f} | | | {f'{mirp_base:.1f}' if mirp_base else ''} | | |")
    for case in cases:
        ours = median_ms[f"ours {case.key}"] - ours_base
        pyr = median_ms[f"pyradiomics {case.nearest}"] - pyr_base
        ratio = f"{ours / pyr:.2f}" if pyr > 0 else "n/a"
        met = ("met" if ours <= 2.0 * pyr else "**not met**") if pyr > 0 else "unmeasured (pyradiomics' cost <= 0)"
        if mirp:
            m = mirp_ms[case.key] - mirp_ms[NONE]
            mirp_cells = f"{m:.1f} | {ours / m:.2f}" if m > 0 else f"{m:.1f} | "
            mirp_stats = str(mirp["statistics"][case.key] - mirp["statistics"][NONE])
        else:
            mirp_cells, mirp_stats = " | ", ""
        print(f"| {case.title} | {'x'.join(map(str, crops[case.key].GetSize()))} | {ours:.1f} "
              f"| {median_ms[f'apply {case.key}']:.1f} | {case.nearest} | {pyr:.1f} | {ratio} | {met} "
              f"| {mirp_cells} | {counts[f'ours {case.key}']} / {counts[f'pyradiomics {case.nearest}']} / {mirp_stats} |")
    import radiomics
    from radiomics import imageoperations

    pyr_crop, _ = imageoperations.resampleImage(image_n, label_n, label=LABEL, **OWN_RESAMPLING)
    shape, spacing = grid_spec[0], grid_spec[1]
    print(f"\nCT {shape[0]}x{shape[1]}x{shape[2]} ({' x '.join(f'{s:g}' for s in spacing)} mm), lesion {LABEL} "
          f"({volume_ml:.1f} ml); our crops on params/ct.yaml's 1 mm grid with crop_margin_mm + the filter's apron; "
          f"neighbourhood given to pyradiomics and MIRP {'x'.join(map(str, image_n.GetSize()))} native voxels "
          f"(margin {largest + PRECROP_EXTRA_MM:g} mm); pyradiomics filters its own "
          f"{'x'.join(map(str, pyr_crop.GetSize()))} crop (bounding box + padDistance 5 voxels at 1 mm). "
          f"python {sys.version.split()[0]}, pyradiomics {radiomics.__version__}, SimpleITK "
          f"{sitk.Version.VersionString()}, {os.cpu_count()} CPUs; medians of {args.repeat} interleaved rounds of "
          f"{args.inner} runs; {mirp_note}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
