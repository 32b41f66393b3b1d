"""Per-lesion feature extraction speed: palmares vs bare pyradiomics vs MIRP, ratios measured in one run.

Run by hand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_features.py [--repeat 3] [--mirp-repeat 3] [--no-mirp]

It builds a synthetic 512 x 512 x 120 CT (int16 HU, 0.78 x 0.78 x 2.5 mm) with three textured lesions
(about 14, 4 and 1 ml) and times, per lesion, in interleaved rounds (median of ``--repeat``):

* ``ours``: :func:`palmares_radiomics.features.extract_lesion` with ``params/ct.yaml`` (crop the lesion's
  neighbourhood, IBSI resampling to 1 mm on the whole-image grid, IBSI-mode features);
* bare pyradiomics ``RadiomicsFeatureExtractor.execute`` with ct.yaml's settings in pyradiomics' own
  spelling (:data:`BARE_SETTINGS`), on the full native volume, on the whole volume resampled by
  ``resample.py`` (no crop), with pyradiomics' own resampling, and on the pre-cropped, pre-resampled input;
* ``ours`` without the crop (whole volume resampled, then extract_lesion with resampling off);
* MIRP (``mirp`` on PyPI), installed by this script in its own virtual environment under
  ``benchmarks/.cache/`` (never in the project's ``.venv``: it needs pandas >= 3), run in a subprocess on
  NIfTI copies of the same image and label map, with the same settings (1 mm, trilinear, no
  anti-aliasing, mask threshold 0.5, re-segmentation [-1000, 3000] HU, FBS 25 HU, 3-D).

It prints one Markdown table of ratios (see ``benchmarks/README.md`` for what each row compares), with
the number of features each tool computes and how many agree with ours within 1e-9 relative.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from palmares_radiomics.features import (ExtractionParams, compute_features, extract_lesion, feature_column,  # noqa: E402
                                         ibsi_table, load_params)
from palmares_radiomics.ibsi import computed_by  # noqa: E402
from palmares_radiomics.resample import ibsi_grid, resample_lesion  # noqa: E402

PARAMS = REPO / "params" / "ct.yaml"
CACHE = REPO / "benchmarks" / ".cache"
MIRP = "mirp==2.7.0"
SHAPE = (512, 512, 120)                     # x, y, z voxels
SPACING = (0.78125, 0.78125, 2.5)           # mm: 400 mm field of view, 2.5 mm slices
ORIGIN = (-199.6, -214.3, -612.25)
#: ``--smoke``: the same body and lesions on a coarse small grid (256 x 256 x 200 mm field of view), one round, no
#: MIRP: proves the script still runs (the test suite runs it), measures nothing.
SMOKE_GRID = ((160, 160, 40), (1.6, 1.6, 5.0), (-127.2, -141.9, -612.25))
#: label, volume (ml), centre offset from the volume centre (mm), air cavity (re-segmented away)
LESIONS = ((1, 14.0, (-60.0, 20.0, 0.0), True), (2, 4.0, (45.0, 45.0, -40.0), False),
           (3, 1.0, (75.0, -10.0, 60.0), False))
#: A crop margin larger than any image: resample_lesion then keeps the whole IBSI grid.
WHOLE_IMAGE_MM = 1.0e6
RELATIVE_TOLERANCE = 1e-9

#: params/ct.yaml in pyradiomics' own spelling (checked against the file by check_params): what a
#: pyradiomics user would write for the same extraction, minus the IBSI-mode steps it cannot express.
BARE_SETTINGS: dict[str, Any] = {
    "setting": {"label": 1, "binWidth": 25, "resegmentRange": [-1000, 3000], "resegmentShape": True,
                "voxelArrayShift": 0, "force2D": False, "minimumROIDimensions": 2, "minimumROISize": 8,
                "correctMask": False, "additionalInfo": False, "gldm_a": 0, "distances": [1]},
    "imageType": {"Original": {}},
    "featureClass": {name: None for name in ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")},
}
#: pyradiomics' own 1 mm resampling (corner-aligned grid, nearest-neighbour mask): what its users run.
OWN_RESAMPLING = {"resampledPixelSpacing": [1.0, 1.0, 1.0], "interpolator": "sitkLinear"}

#: MIRP settings equivalent to params/ct.yaml (keyword arguments of mirp.extract_features).
MIRP_SETTINGS: dict[str, Any] = {
    "image_modality": "ct", "new_spacing": 1.0, "spline_order": 1, "anti_aliasing": False,
    "roi_spline_order": 1, "roi_interpolation_mask_inclusion_threshold": 0.5,
    "resegmentation_intensity_range": [-1000.0, 3000.0],
    "base_feature_families": ["morphology", "local_intensity", "statistics", "intensity_histogram",
                              "intensity_volume_histogram", "glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm"],
    "base_discretisation_method": "fixed_bin_size", "base_discretisation_bin_width": 25.0,
    "glcm_distance": 1.0, "glcm_spatial_method": "3d_average", "glrlm_spatial_method": "3d_average",
    "glszm_spatial_method": "3d", "gldzm_spatial_method": "3d", "ngtdm_spatial_method": "3d", "ngldm_spatial_method": "3d",
    "ngldm_distance": 1.0, "by_slice": False,
}
#: Features both tools define the same way (IBSI), as pyradiomics name -> MIRP column.
MIRP_EQUIVALENTS = {
    "shape_MeshVolume": "morph_volume", "shape_SurfaceArea": "morph_area_mesh", "shape_Sphericity": "morph_sphericity",
    "firstorder_Mean": "stat_mean", "firstorder_Variance": "stat_var", "firstorder_Skewness": "stat_skew",
    "firstorder_Kurtosis": "stat_kurt", "firstorder_Energy": "stat_energy", "firstorder_Median": "stat_median",
    "firstorder_Entropy": "ih_entropy_fbs_w25.0", "firstorder_Uniformity": "ih_uniformity_fbs_w25.0",
    "glcm_MaximumProbability": "cm_joint_max_d1_3d_avg_fbs_w25.0", "glcm_JointAverage": "cm_joint_avg_d1_3d_avg_fbs_w25.0",
    "glcm_JointEntropy": "cm_joint_entr_d1_3d_avg_fbs_w25.0", "glcm_Contrast": "cm_contrast_d1_3d_avg_fbs_w25.0",
    "glcm_Correlation": "cm_corr_d1_3d_avg_fbs_w25.0", "glrlm_ShortRunEmphasis": "rlm_sre_3d_avg_fbs_w25.0",
    "glrlm_GrayLevelNonUniformity": "rlm_glnu_3d_avg_fbs_w25.0", "glszm_SmallAreaEmphasis": "szm_sze_3d_fbs_w25.0",
    "glszm_ZonePercentage": "szm_z_perc_3d_fbs_w25.0", "ngtdm_Coarseness": "ngt_coarseness_3d_fbs_w25.0",
    "ngtdm_Busyness": "ngt_busyness_3d_fbs_w25.0", "gldm_SmallDependenceEmphasis": "ngl_lde_d1_a0.0_3d_fbs_w25.0",
    "gldm_HighGrayLevelEmphasis": "ngl_hgce_d1_a0.0_3d_fbs_w25.0",
}
MIRP_FAMILIES = ("morph_", "loc_", "stat_", "ih_", "ivh_", "cm_", "rlm_", "szm_", "dzm_", "ngt_", "ngl_")

#: Runs in MIRP's virtual environment: times extract_features per lesion, prints JSON on the last line.
MIRP_WORKER = r"""
import importlib.metadata, json, numbers, sys, time, warnings
warnings.simplefilter("ignore")
from mirp import extract_features
args = json.loads(sys.argv[1])
times = {str(label): [] for label in args["labels"]}
features = {}
for _ in range(args["repeat"]):
    for label in args["labels"]:
        start = time.perf_counter()
        tables = extract_features(image=args["image"], mask=args["mask"], roi_name=str(label), export_features=True,
                                  **args["settings"])
        times[str(label)].append(time.perf_counter() - start)
        row = tables[0].iloc[0]
        features[str(label)] = {k: float(v) for k, v in row.items() if isinstance(v, numbers.Real)}
print(json.dumps({"version": importlib.metadata.version("mirp"), "times": times, "features": features}))
"""


def ct_volume(seed: int = 0, grid: tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]] = (SHAPE, SPACING, ORIGIN)
              ) -> tuple[sitk.Image, sitk.Image]:
    """A synthetic chest CT (int16 HU) and its label map, see :data:`LESIONS`.

    Body 40 HU, two lungs -850 HU, a vertebra 700 HU, air -1024 HU, Gaussian noise (SD 12 HU). Each lesion
    is an irregular ellipsoid of textured HU (smoothed noise, SD ~30 HU, plus 15 HU noise); the largest
    has an air cavity that the [-1000, 3000] HU re-segmentation drops.
    """
    rng = np.random.default_rng(seed)
    shape, spacing, origin = grid
    axes = [np.arange(n) * s + o for n, s, o in zip(shape, spacing, origin)]
    centre = [float(a.mean()) for a in axes]
    x, y = np.meshgrid(axes[0] - centre[0], axes[1] - centre[1], indexing="xy")
    plane = np.full(x.shape, -1024, np.int16)
    plane[(x / 170) ** 2 + (y / 120) ** 2 < 1] = 40
    for side in (-1, 1):
        plane[((x - side * 75) / 55) ** 2 + ((y + 10) / 80) ** 2 < 1] = -850
    plane[(x / 18) ** 2 + ((y - 85) / 18) ** 2 < 1] = 700
    hu = np.broadcast_to(plane, shape[::-1]) + rng.normal(0, 12, shape[::-1]).astype(np.int16)
    labels = np.zeros(shape[::-1], np.uint8)
    for label, volume_ml, offset, cavity in LESIONS:
        radius = (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
        c = [centre[i] + offset[i] for i in range(3)]
        box = tuple(slice(max(0, int((c[i] - 1.6 * radius - origin[i]) / spacing[i])),
                          min(shape[i], int((c[i] + 1.6 * radius - origin[i]) / spacing[i]) + 2)) for i in (2, 1, 0))
        zz, yy, xx = np.meshgrid(axes[2][box[0]] - c[2], axes[1][box[1]] - c[1], axes[0][box[2]] - c[0], indexing="ij")
        texture = ndimage.gaussian_filter(rng.normal(0, 1, zz.shape), (0.8, 2.5, 2.5))
        texture /= texture.std()
        r = np.sqrt(xx ** 2 + (yy / 0.85) ** 2 + (zz / 1.1) ** 2) / (radius / (0.85 * 1.1) ** (1 / 3))
        inside = r < 1 + 0.12 * texture
        sub = hu[box]
        sub[inside] = np.round(35 + 30 * texture[inside] + rng.normal(0, 15, int(inside.sum())))
        if cavity:
            sub[inside & (r < 0.25)] = -1024
        labels[box][inside] = label
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    label_map = sitk.GetImageFromArray(labels)
    label_map.CopyInformation(image)
    return image, label_map


def check_params(params: ExtractionParams) -> None:
    """Fail loudly when params/ct.yaml no longer says what BARE_SETTINGS and MIRP_SETTINGS assume."""
    r, d, s = params.resampling, params.discretisation, params.resegmentation
    expected = ((1.0, 1.0, 1.0), "linear", 0.5, True, 25, (-1000, 3000))
    found = (tuple(r.spacing_mm), r.image_interpolator, r.mask_threshold, r.round_intensities, d.bin_width,
             tuple(s.range))
    if found != expected or d.method != "fixed_bin_size":
        raise SystemExit(f"params/ct.yaml changed: expected {expected}, found {found}; update BARE_SETTINGS/MIRP_SETTINGS")


def bare_extractor(extra: Mapping[str, Any] | None = None) -> Any:
    """A plain pyradiomics extractor with :data:`BARE_SETTINGS` (plus ``extra`` settings)."""
    from radiomics import featureextractor

    settings = {**BARE_SETTINGS, "setting": {**BARE_SETTINGS["setting"], **(extra or {})}}
    return featureextractor.RadiomicsFeatureExtractor(settings)


def ours_by_feature(values: Mapping[str, float]) -> dict[str, float]:
    """Our columns (``glcm_Id_IB1Z_ITBB``) by feature name (``glcm_Id``)."""
    return {feature_column(column).feature if feature_column(column) else column: value
            for column, value in values.items()}


def family_times(image: sitk.Image, mask: sitk.Image, params: ExtractionParams, repeat: int) -> list[tuple[str, ...]]:
    """Rows (class, features, engine, median ms) of each feature class of ``params`` on one resampled lesion crop,
    after the shared set-up (re-segmentation, discretisation: ``classes`` empty), which is its own row."""
    def median_ms(classes: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        run = dataclasses.replace(params, classes=classes)
        values, samples = {}, []
        for _ in range(repeat):
            start = time.perf_counter()
            values = compute_features(image, mask, run)
            samples.append(time.perf_counter() - start)
        return 1000 * statistics.median(samples), values

    setup, _ = median_ms({})
    rows = [("set-up (re-segmentation, discretisation)", "", "", f"{setup:.1f}")]
    total = setup
    for name, features in params.classes.items():
        elapsed, values = median_ms({name: features})
        engines = sorted({computed_by(feature_column(c).feature) for c in values})
        rows.append((name, str(len(values)), " + ".join(engines), f"{elapsed - setup:.1f}"))
        total += elapsed - setup
    everything, values = median_ms(params.classes)
    rows.append(("all classes in one call", str(len(values)), "", f"{everything:.1f}"))
    return rows


def bare_by_feature(raw: Mapping[str, Any]) -> dict[str, float]:
    """pyradiomics' result by feature name, with the IBSI conventions our table applies (excess kurtosis)."""
    table, out = ibsi_table(), {}
    for key, value in raw.items():
        if key.startswith("diagnostics_"):
            continue
        name = key.removeprefix("original_")
        entry = table.get(name)
        out[name] = float(value) - (3.0 if entry and entry.transform == "minus3" else 0.0)
    return out


def compare(ours: Mapping[str, float], other: Mapping[str, float]) -> tuple[int, int, float]:
    """(features in both, of which equal within RELATIVE_TOLERANCE, max relative difference)."""
    shared = [name for name in ours if name in other]
    worst, equal = 0.0, 0
    for name in shared:
        a, b = ours[name], other[name]
        rel = 0.0 if a == b or (np.isnan(a) and np.isnan(b)) else abs(a - b) / max(abs(b), 1e-300)
        equal += rel <= RELATIVE_TOLERANCE
        worst = max(worst, rel)
    return len(shared), equal, worst


def ensure_mirp() -> Path:
    """Create (once) a virtual environment with MIRP under benchmarks/.cache; return its python."""
    env_dir = CACHE / MIRP.replace("==", "-")
    python = env_dir / "bin" / "python"
    marker = env_dir / ".installed"
    if not marker.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", MIRP], check=True)
        marker.write_text(MIRP + "\n")
    return python


def run_mirp(python: Path, image: sitk.Image, label_map: sitk.Image, repeat: int) -> dict[str, Any]:
    """MIRP on NIfTI copies of ``image``/``label_map``, one call per lesion, in its own process."""
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        image_path, mask_path = Path(tmp) / "image.nii", Path(tmp) / "labels.nii"
        sitk.WriteImage(image, str(image_path))
        sitk.WriteImage(label_map, str(mask_path))
        args = {"image": str(image_path), "mask": str(mask_path), "labels": [lesion[0] for lesion in LESIONS],
                "repeat": repeat, "settings": MIRP_SETTINGS}
        done = subprocess.run([str(python), "-c", MIRP_WORKER, json.dumps(args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"MIRP failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds for the in-process tools")
    parser.add_argument("--inner", type=int, default=5,
                        help="runs per round of the fast tasks (those that never touch a whole-volume copy)")
    parser.add_argument("--mirp-repeat", type=int, default=3, help="rounds for MIRP (about 20-50 s per lesion)")
    parser.add_argument("--no-mirp", action="store_true", help="skip the MIRP comparison")
    parser.add_argument("--smoke", action="store_true", help="tiny coarse CT, one round, no MIRP: checks the script runs")
    args = parser.parse_args(argv)
    grid_spec = (SHAPE, SPACING, ORIGIN)
    if args.smoke:
        args.repeat, args.inner, args.no_mirp, grid_spec = 1, 1, True, SMOKE_GRID
    logging.disable(logging.WARNING)  # pyradiomics warns on every lesion (e.g. "GLCM is symmetrical ...")
    mirp_python = None if args.no_mirp else ensure_mirp()

    params = load_params(PARAMS)
    check_params(params)
    no_resampling = dataclasses.replace(params, resampling=None, crop_margin_mm=WHOLE_IMAGE_MM)
    bare, bare_own = bare_extractor(), bare_extractor(OWN_RESAMPLING)
    image, label_map = ct_volume(grid=grid_spec)
    grid = ibsi_grid(image, params.resampling.spacing_mm)
    labels = [lesion[0] for lesion in LESIONS]
    counts = np.bincount(sitk.GetArrayViewFromImage(label_map).ravel(), minlength=len(LESIONS) + 1)
    volumes = {label: counts[label] * float(np.prod(grid_spec[1])) / 1000 for label in labels}

    times: dict[str, dict[int, list[float]]] = {}
    outputs: dict[str, dict[int, dict[str, float]]] = {}

    def timed(task: str, label: int, action: Callable[[], Any], convert: Callable[[Any], Any] | None = None) -> Any:
        start = time.perf_counter()
        result = action()
        times.setdefault(task, {}).setdefault(label, []).append(time.perf_counter() - start)
        if convert is not None:
            outputs.setdefault(task, {})[label] = convert(result)
        return result

    cheap = range(args.inner)
    for round_ in range(args.repeat):
        print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
        for label in labels:
            for _ in cheap:
                timed("ours", label, lambda: extract_lesion(image, label_map, label, params), ours_by_feature)
                timed("bare own resampling", label, lambda: bare_own.execute(image, label_map, label=label),
                      bare_by_feature)
            timed("bare native", label, lambda: bare.execute(image, label_map, label=label), bare_by_feature)
            image_w, mask_w = timed("resample whole", label,
                                    lambda: resample_lesion(image, label_map == label, params.resampling, WHOLE_IMAGE_MM))
            assert image_w.GetSize() == grid.size
            timed("bare whole", label, lambda: bare.execute(image_w, mask_w, label=1), bare_by_feature)
            timed("ours whole", label, lambda: extract_lesion(image_w, mask_w, 1, no_resampling), ours_by_feature)
            del image_w, mask_w
            image_c, mask_c = resample_lesion(image, label_map == label, params.resampling, params.crop_margin_mm)
            for _ in cheap:
                timed("bare cropped", label, lambda: bare.execute(image_c, mask_c, label=1), bare_by_feature)
                timed("ours cropped", label, lambda: extract_lesion(image_c, mask_c, 1, no_resampling), ours_by_feature)

    median = {task: {label: statistics.median(v) for label, v in per.items()} for task, per in times.items()}
    first = labels[0]

    def total(*tasks: str, label: int | None = None) -> float:
        return sum(median[t][lab] for t in tasks for lab in ([label] if label else labels))

    def agreement(task: str, reference: str = "ours") -> tuple[str, str, str]:
        stats = [compare(outputs[reference][lab], outputs[task][lab]) for lab in labels]
        n_ours = len(outputs[reference][first])
        n_other = len(outputs[task][first])
        shared = min(s[0] for s in stats)
        equal = min(s[1] for s in stats)
        return f"{n_ours} / {n_other}", f"{equal} / {shared}", f"{max(s[2] for s in stats):.1e}"

    rows = []

    def speedup(name: str, ours: tuple[str, ...], baseline: tuple[str, ...], features: tuple[str, str, str], aim: str,
                overhead: bool = False) -> None:
        a1, b1 = total(*ours, label=first), total(*baseline, label=first)
        a, b = total(*ours), total(*baseline)
        fmt = (lambda x, y: f"{100 * (x / y - 1):+.0f} %") if overhead else (lambda x, y: f"{y / x:.1f}x")
        rows.append((name, f"{a1:.3f}", f"{b1:.3f}", fmt(a1, b1), fmt(a, b), *features, aim))

    speedup("A0 ours vs ours without crop (resample whole volume, then extract)", ("ours",),
            ("resample whole", "ours whole"), agreement("ours whole"), ">= 20x")
    speedup("A1 ours vs bare pyradiomics, full native volume (no resampling: other voxels)", ("ours",),
            ("bare native",), agreement("bare native"), ">= 20x")
    speedup("A2 ours vs bare pyradiomics on the whole volume resampled by resample.py (resampling not timed)",
            ("ours",), ("bare whole",), agreement("bare whole"), ">= 20x")
    speedup("A3 ours vs resample whole volume + bare pyradiomics", ("ours",), ("resample whole", "bare whole"),
            agreement("bare whole"), ">= 20x")
    speedup("A4 ours vs bare pyradiomics with its own 1 mm resampling (full volume in)", ("ours",),
            ("bare own resampling",), agreement("bare own resampling"), "")
    speedup("B1 IBSI-mode features vs bare pyradiomics, same pre-cropped pre-resampled input", ("ours cropped",),
            ("bare cropped",), agreement("bare cropped", "ours cropped"), "<= +10 %", overhead=True)
    speedup("B2 extract_lesion end to end (crop + resample + features) vs B1's bare pyradiomics", ("ours",),
            ("bare cropped",), agreement("bare cropped"), "<= +10 %", overhead=True)

    image_c, mask_c = resample_lesion(image, label_map == first, params.resampling, params.crop_margin_mm)
    families = family_times(image_c, mask_c, params, max(args.repeat * args.inner, 3))

    mirp_note = ""
    if mirp_python is not None:
        try:
            mirp = run_mirp(mirp_python, image, label_map, args.mirp_repeat)
        except RuntimeError as exc:
            rows.append((f"C {MIRP}", "", "", "", "", "", "", "", str(exc)))
        else:
            m = {int(k): statistics.median(v) for k, v in mirp["times"].items()}
            mirp_features = {int(k): v for k, v in mirp["features"].items()}
            n_mirp = sum(1 for k in mirp_features[first] if k.startswith(MIRP_FAMILIES))
            checks = [compare({k: outputs["ours"][lab][k] for k in MIRP_EQUIVALENTS},
                              {k: mirp_features[lab][v] for k, v in MIRP_EQUIVALENTS.items()}) for lab in labels]
            rows.append((f"C MIRP {mirp['version']} (own venv, subprocess, NIfTI in) vs ours, same lesions and settings",
                         f"{median['ours'][first]:.3f}", f"{m[first]:.3f}", f"{m[first] / median['ours'][first]:.1f}x",
                         f"{sum(m.values()) / total('ours'):.1f}x", f"{len(outputs['ours'][first])} / {n_mirp}",
                         f"{min(c[1] for c in checks)} / {len(MIRP_EQUIVALENTS)} checked",
                         f"{max(c[2] for c in checks):.1e}", ""))
            mirp_note = f", MIRP {args.mirp_repeat} rounds in its own process"

    lesions = ", ".join(f"{volumes[lab]:.1f} ml" for lab in labels)
    big = f"{volumes[first]:.1f} ml lesion"
    print(f"| comparison | ours, {big} (s) | baseline, {big} (s) "
          f"| {big} | all {len(labels)} lesions | features ours / baseline "
          f"| equal within 1e-9 | max rel. diff | aim |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nPer feature class, on the {big}'s resampled crop ({'x'.join(map(str, mask_c.GetSize()))} voxels at 1 mm, "
          f"{int(sitk.GetArrayViewFromImage(mask_c).sum())} in the ROI), median ms:\n")
    print("| feature class | features | engine | ms |")
    print("|---|---:|---|---:|")
    for row in families:
        print("| " + " | ".join(row) + " |")
    import radiomics

    shape, spacing = grid_spec[0], grid_spec[1]
    print(f"\nCT {shape[0]}x{shape[1]}x{shape[2]} ({' x '.join(f'{s:g}' for s in spacing)} mm), lesions {lesions}; "
          f"whole-volume IBSI grid {grid.size[0]}x{grid.size[1]}x{grid.size[2]} at 1 mm. "
          f"python {sys.version.split()[0]}, pyradiomics {radiomics.__version__}, SimpleITK {sitk.Version.VersionString()}, "
          f"{os.cpu_count()} CPUs; medians of {args.repeat} interleaved rounds ({args.inner} runs per round for the "
          f"tasks without a whole-volume copy){mirp_note}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
