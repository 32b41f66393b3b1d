"""IBSI 2 convolutional filters (``palmares_radiomics.filters``) and ``palmares filter``.

Every IBSI 2 phase 1 reference response map is reproduced through the command line with its parameter file
(``params/ibsi2/phase1_<ID>.yaml``): each voxel within 1 % of the reference map's range, the IBSI acceptance rule.
Run ``pytest tests/test_filters.py -s -p no:xdist -k pass_table`` to see the pass table. Unit tests cover the
boundary conditions, the LoG kernel, rotation invariance, crop invariance (the ``apron_mm`` margin) and the
parameter-file errors.
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from conftest import REPO, SHARED_DATA, shared_path
from palmares_radiomics import cli
from palmares_radiomics.errors import ConfigError
from palmares_radiomics.filters import Boundary, FilterSpec, apply, load_filter_params, parse_filters
from palmares_radiomics.filters.boundary import PlaneSpectrum, convolve_separable, pad
from palmares_radiomics.filters.log import log_kernel
from palmares_radiomics.filters.rotation import right_angle_rotations

MAPS = ("ibsi", "ibsi_2_reference_response_maps")
PHANTOMS = ("ibsi", "ibsi_2_digital_phantom", "nifti")
#: The 30 configurations with a phase 1 consensus map (9.x Riesz and 10.x have none in ../shared/data).
PHASE1_IDS = ("1A1", "1A2", "1A3", "1A4", "1B1", "2A", "2B", "2C", "3A1", "3A2", "3A3", "3B1", "3B2", "3B3", "3C1",
              "3C2", "3C3", "4A1", "4A2", "4B1", "4B2", "5A1", "5A2", "6A1", "6A2", "7A1", "7A2", "8A1", "8A2", "8A3")
TOLERANCE_PERCENT = 1.0
PHASE1_MAPS = sorted(SHARED_DATA.joinpath(*MAPS).glob("id_*.nii.gz"))


def _config_id(path: Path) -> str:
    """``id_2_impulse_CT_2A_log_s3.0.nii.gz`` -> ``2A``."""
    return path.name.split("_")[4]


def _phantom(path: Path) -> str:
    """``id_2_impulse_CT_2A_log_s3.0.nii.gz`` -> ``impulse``."""
    return path.name.split("_")[2]


_RESULTS: dict[str, float] = {}


def _deviation_percent(reference_map: Path, tmp_path: Path) -> float:
    """Run ``palmares filter`` on the map's phantom with its parameter file; the largest voxel deviation from the
    reference, in % of the reference range."""
    config = _config_id(reference_map)
    if config not in _RESULTS:
        image_dir = shared_path(*PHANTOMS, _phantom(reference_map), "image")
        image = sorted(image_dir.glob("*.nii.gz"))[0]
        out = tmp_path / f"{config}.nii.gz"
        params = REPO / "params" / "ibsi2" / f"phase1_{config}.yaml"
        with contextlib.redirect_stdout(io.StringIO()):  # keep the pass table readable under -s
            assert cli.main(["filter", "--image", str(image), "--params", str(params), "--out", str(out)]) == 0
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_map))).astype(np.float64)
        assert ours.shape == reference.shape and ours.dtype == np.float64
        _RESULTS[config] = float(np.abs(ours - reference).max() / (reference.max() - reference.min()) * 100)
    return _RESULTS[config]


# --- IBSI 2 phase 1: reference response maps ----------------------------------------------------------------------

def test_every_phase1_map_has_a_parameter_file() -> None:
    found = sorted(_config_id(p) for p in shared_path(*MAPS).glob("id_*.nii.gz"))
    assert found == sorted(PHASE1_IDS)
    for config in PHASE1_IDS:
        specs = load_filter_params(REPO / "params" / "ibsi2" / f"phase1_{config}.yaml")
        assert len(specs) == 1, config


def test_phase2_parameter_files_hold_their_filter() -> None:
    """params/ibsi2/phase2_<n><A|B>.yaml: configuration 1 has no filter, the others one (A: 2D, B: 3D)."""
    for n in range(1, 10):
        for variant, dims in (("A", "2D"), ("B", "3D")):
            specs = load_filter_params(REPO / "params" / "ibsi2" / f"phase2_{n}{variant}.yaml")
            assert len(specs) == (0 if n == 1 else 1)
            assert all(spec.dimensions.value == dims for spec in specs)


@pytest.mark.parametrize("reference_map", PHASE1_MAPS, ids=[_config_id(p) for p in PHASE1_MAPS])
def test_phase1_reference_map(reference_map: Path, tmp_path: Path) -> None:
    deviation = _deviation_percent(reference_map, tmp_path)
    assert deviation <= TOLERANCE_PERCENT, f"{_config_id(reference_map)}: {deviation:.4f} % of the reference range"


def test_phase1_pass_table(tmp_path: Path) -> None:
    """ID x passed / largest deviation in % of the reference range (``-s`` prints it)."""
    maps = sorted(shared_path(*MAPS).glob("id_*.nii.gz"), key=lambda p: PHASE1_IDS.index(_config_id(p)))
    lines = [f"{'ID':5} {'filter':45} {'passed':7} max deviation (% of range)"]
    for reference_map in maps:
        config = _config_id(reference_map)
        name = load_filter_params(REPO / "params" / "ibsi2" / f"phase1_{config}.yaml")[0].name
        deviation = _deviation_percent(reference_map, tmp_path)
        lines.append(f"{config:5} {name:45} {'yes' if deviation <= TOLERANCE_PERCENT else 'NO':7} {deviation:.4f}")
    passed = sum(d <= TOLERANCE_PERCENT for d in _RESULTS.values())
    print(f"\nIBSI 2 phase 1: {passed} of {len(maps)} reference response maps within {TOLERANCE_PERCENT:g} % of their "
          "range\n" + "\n".join(lines))
    assert passed == len(PHASE1_IDS)


# --- boundary conditions ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("boundary", "padded", "first_mean"), [
    (Boundary.CONSTANT, [0, 0, 1, 2, 3, 4, 5, 0, 0], 6 / 5),
    (Boundary.NEAREST, [1, 1, 1, 2, 3, 4, 5, 5, 5], 8 / 5),
    (Boundary.PERIODIC, [4, 5, 1, 2, 3, 4, 5, 1, 2], 15 / 5),
    (Boundary.MIRROR, [2, 1, 1, 2, 3, 4, 5, 5, 4], 9 / 5),
])
def test_boundary_conditions_on_a_tiny_array(boundary: Boundary, padded: list[float], first_mean: float) -> None:
    array = np.arange(1.0, 6.0)
    assert pad(array, [2], boundary).tolist() == padded
    mean = convolve_separable(array, [(0, np.full(5, 0.2))], boundary)
    assert mean[0] == pytest.approx(first_mean)
    assert mean.tolist() == pytest.approx(np.convolve(padded, np.full(5, 0.2), mode="valid").tolist())


@pytest.mark.parametrize("boundary", list(Boundary))
def test_fft_convolution_equals_direct_convolution(boundary: Boundary) -> None:
    """The FFT path (Gabor) pads like the direct path (separable filters): same result for a separable kernel."""
    rng = np.random.default_rng(3)
    array = rng.normal(size=(4, 11, 9))
    ky, kx = rng.normal(size=5), rng.normal(size=3)
    direct = convolve_separable(array, [(1, ky), (2, kx)], boundary)
    fft = PlaneSpectrum(array, (1, 2), (3, 3), boundary).convolve(np.outer(ky, kx))
    np.testing.assert_allclose(fft.real, direct, atol=1e-12)


# --- kernels ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("dims", "sigma_voxels"), [(3, 1.5), (3, 3.0), (2, 2.5)])
def test_log_kernel_is_the_ibsi_formula(dims: int, sigma_voxels: float) -> None:
    """IBSI's LoG in voxel units: -1/s^2 (s sqrt(2 pi))^-d (d - |k|^2/s^2) exp(-|k|^2 / 2 s^2) on the cube
    |k_i| <= floor(4 s + 0.5), s = sigma / spacing (the separable sum used for filtering, assembled)."""
    kernel = log_kernel(sigma_voxels * 2.0, 4.0, [2.0] * dims)
    radius = math.floor(4 * sigma_voxels + 0.5)
    assert kernel.shape == (2 * radius + 1,) * dims
    squared = (np.indices(kernel.shape) - radius) ** 2
    norm2 = squared.sum(axis=0)
    s2 = sigma_voxels**2
    formula = -1 / s2 * (2 * math.pi * s2) ** (-dims / 2) * (dims - norm2 / s2) * np.exp(-norm2 / (2 * s2))
    np.testing.assert_allclose(kernel, formula, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("dims", "sigma_voxels"), [(3, 1.5), (3, 3.0), (2, 2.5)])
def test_log_kernel_normalisation(dims: int, sigma_voxels: float) -> None:
    """The Gaussian is normalised to unit volume and nothing else is rescaled: with a long kernel the sum is 0 and
    the second moment sum(|k|^2 g) is 2 d (the Laplacian of a unit-mass Gaussian). IBSI's truncation at 4 sigma
    leaves the kernel's sum at minus the cut tail (no zero-mean correction); the second moment stays within 1 %."""
    for truncation, sum_tolerance, moment_tolerance in ((6.0, 1e-4, 1e-5), (4.0, 0.3, 1e-2)):
        kernel = log_kernel(sigma_voxels * 2.0, truncation, [2.0] * dims)
        radius = kernel.shape[0] // 2
        norm2 = ((np.indices(kernel.shape) - radius) ** 2).sum(axis=0)
        centre = kernel[(radius,) * dims]
        assert abs(kernel.sum()) < sum_tolerance * abs(centre)
        assert (norm2 * kernel).sum() == pytest.approx(2 * dims, rel=moment_tolerance)


def test_log_on_anisotropic_voxels_is_the_isotropic_response_on_the_finer_grid() -> None:
    """A slab that varies along x only: the LoG on a (1, 1, 3) mm grid equals the one on a 1 mm grid. Sigma is well
    above the spacing and the kernel long, so that the sampled second derivative along the constant axes sums to 0
    on both grids (a narrower or truncated kernel leaves a small sum that differs between the grids)."""
    x = np.linspace(-3, 3, 41)
    profile = np.exp(-x**2)
    fine = sitk.GetImageFromArray(np.broadcast_to(profile, (9, 9, 41)).copy())
    coarse = sitk.GetImageFromArray(np.broadcast_to(profile, (3, 9, 41)).copy())
    coarse.SetSpacing((1.0, 1.0, 3.0))
    spec = _spec({"filter": "laplacian_of_gaussian", "sigma_mm": 4.0, "truncation": 8.0, "boundary": "nearest",
                  "dimensions": "3D"})
    on_fine = sitk.GetArrayFromImage(apply(spec, fine))[4, 4]
    on_coarse = sitk.GetArrayFromImage(apply(spec, coarse))[1, 4]
    np.testing.assert_allclose(on_coarse, on_fine, atol=1e-9)


def test_rotation_group_sizes() -> None:
    assert len(right_angle_rotations(3)) == 24 and len(set(right_angle_rotations(3))) == 24
    assert len(right_angle_rotations(2)) == 4


@pytest.mark.parametrize("settings", [
    {"filter": "laws", "kernel": "E5L5S5", "rotation_invariance": True, "pooling": "max", "energy_map": False},
    {"filter": "separable_wavelet", "wavelet": "db2", "subband": "LHL", "level": 2, "rotation_invariance": True,
     "pooling": "average"},
], ids=["laws", "wavelet"])
def test_rotation_invariant_filters_commute_with_right_angle_rotations(settings: dict) -> None:
    rng = np.random.default_rng(5)
    array = rng.normal(size=(12, 12, 12))
    spec = _spec({**settings, "boundary": "periodic", "dimensions": "3D"})
    response = _response(spec, array)
    for axes in ((1, 2), (0, 2), (0, 1)):
        rotated = np.rot90(array, axes=axes).copy()
        np.testing.assert_allclose(_response(spec, rotated), np.rot90(response, axes=axes), atol=1e-12)


# --- crop invariance: the apron_mm margin --------------------------------------------------------------------------

CROP_SPECS = {
    "mean": {"filter": "mean", "support_voxels": 5, "dimensions": "3D"},
    "log": {"filter": "laplacian_of_gaussian", "sigma_mm": 2.0, "truncation": 4.0, "dimensions": "3D"},
    "log_2d": {"filter": "laplacian_of_gaussian", "sigma_mm": 2.0, "truncation": 4.0, "dimensions": "2D"},
    "laws": {"filter": "laws", "kernel": "E5L3S5", "rotation_invariance": True, "pooling": "max", "energy_map": True,
             "energy_delta_voxels": 2, "dimensions": "3D"},
    "gabor_3d": {"filter": "gabor", "sigma_mm": 2.0, "gamma": 0.5, "lambda_mm": 3.0, "theta_deg": 10,
                 "theta_step_deg": 90, "rotation_invariance": True, "pooling": "average", "truncation": 3.0,
                 "response": "modulus", "dimensions": "3D"},
    "gabor_2d": {"filter": "gabor", "sigma_mm": 2.0, "gamma": 2.0, "lambda_mm": 3.0, "theta_deg": 30,
                 "rotation_invariance": False, "pooling": "none", "truncation": 3.0, "response": "modulus",
                 "dimensions": "2D"},
    "wavelet": {"filter": "separable_wavelet", "wavelet": "coif1", "subband": "HLH", "level": 2,
                "rotation_invariance": True, "pooling": "average", "dimensions": "3D"},
}


@pytest.mark.parametrize("boundary", ["constant", "mirror"])
@pytest.mark.parametrize("name", list(CROP_SPECS))
def test_crop_with_apron_equals_whole_image_inside_the_crop(name: str, boundary: str) -> None:
    """Filtering a crop grown by ``apron_mm`` gives the whole image's response in the crop's core, on anisotropic
    voxels (spacing 1.2 x 1.0 x 2.0 mm)."""
    spec = _spec({**CROP_SPECS[name], "boundary": boundary})
    difference, scale = _crop_difference(spec, shape=(28, 40, 36), core=((10, 18), (14, 26), (12, 24)))
    assert difference <= 1e-9 * scale


def test_simoncelli_crop_is_close_to_the_whole_image() -> None:
    """The Simoncelli kernel is not compact (module note): within 1 % of the response range on white noise."""
    spec = _spec({"filter": "simoncelli_wavelet", "level": 1, "boundary": "mirror", "dimensions": "3D"})
    difference, scale = _crop_difference(spec, shape=(56, 56, 56), core=((20, 36), (20, 36), (20, 36)),
                                         spacing=(1.0, 1.0, 1.0))
    assert difference <= 0.01 * scale


def test_apron_mm() -> None:
    log3 = _spec({"filter": "laplacian_of_gaussian", "sigma_mm": 3.0, "truncation": 4.0, "boundary": "mirror",
                  "dimensions": "3D"})
    assert log3.apron_mm((2.0, 2.0, 2.0)) == (12.0, 12.0, 12.0)  # floor(4 * 1.5 + 0.5) = 6 voxels
    assert log3.apron_mm((1.0, 1.0, 3.0)) == (12.0, 12.0, 12.0)  # 12 voxels in-plane; floor(4 + 0.5) = 4 along z
    log2d = _spec({"filter": "laplacian_of_gaussian", "sigma_mm": 3.0, "truncation": 4.0, "boundary": "mirror",
                   "dimensions": "2D"})
    assert log2d.apron_mm((2.0, 2.0, 5.0)) == (12.0, 12.0, 0.0)
    laws = _spec({"filter": "laws", "kernel": "E3W5R5", "rotation_invariance": False, "pooling": "none",
                  "energy_map": True, "energy_delta_voxels": 7, "boundary": "mirror", "dimensions": "3D"})
    assert laws.apron_mm((1.0, 1.0, 1.0)) == (8.0, 9.0, 9.0)  # E3 along x: 1 + 7; W5, R5: 2 + 7
    haar2 = _spec({"filter": "separable_wavelet", "wavelet": "haar", "subband": "HHH", "level": 2,
                   "rotation_invariance": False, "pooling": "none", "boundary": "mirror", "dimensions": "3D"})
    assert haar2.apron_mm((1.0, 1.0, 1.0)) == (3.0, 3.0, 3.0)  # [a, a, 0]: 1 voxel; dilated at level 2: 2 voxels


# --- parameter files ------------------------------------------------------------------------------------------------

def test_filter_names() -> None:
    names = {c: load_filter_params(REPO / "params" / "ibsi2" / f"phase1_{c}.yaml")[0].name
             for c in ("1B1", "2A", "3A3", "4A2", "5A1", "7A1", "8A2")}
    assert names == {"1B1": "mean_m15_2d", "2A": "log_s3", "3A3": "laws_E5L5S5_energy_d7_invar_max",
                     "4A2": "gabor_s10_g0p5_l4_t0_tstep45_invar_avg", "5A1": "wavelet_db2_LHL_l1",
                     "7A1": "wavelet_haar_LLL_l2_invar_avg", "8A2": "simoncelli_l2"}


LOG = {"filter": "laplacian_of_gaussian", "sigma_mm": 3.0, "truncation": 4.0, "boundary": "mirror",
       "dimensions": "3D"}


@pytest.mark.parametrize(("entry", "message"), [
    ({**LOG, "boundary": "reflect"},
     r"palmares.filters\[0\] \(laplacian_of_gaussian\): 'boundary' must be one of constant, nearest, periodic, "
     r"mirror. Found: 'reflect'"),
    ({k: v for k, v in LOG.items() if k != "truncation"}, r"'truncation' is missing; give it explicitly"),
    ({**LOG, "sigma": 3.0}, r"unknown key\(s\) 'sigma'; this filter takes boundary, dimensions, filter, sigma_mm, "
                            r"truncation"),
    ({**LOG, "sigma_mm": -1}, r"'sigma_mm' must be a number \(mm\) > 0. Found: -1"),
    ({**LOG, "filter": "wavelet"}, r"'filter' must be one of mean, laplacian_of_gaussian, laws, gabor, "
                                   r"separable_wavelet, simoncelli_wavelet. Found: 'wavelet'"),
    ({"filter": "laws", "kernel": "E5L5S5", "rotation_invariance": False, "pooling": "none", "energy_map": False,
      "boundary": "mirror", "dimensions": "2D"}, r"'kernel' must be 2 of L3, E3, .* e.g. L5S5. Found: 'E5L5S5'"),
    ({"filter": "laws", "kernel": "E5L5S5", "rotation_invariance": False, "pooling": "max", "energy_map": False,
      "boundary": "mirror", "dimensions": "3D"}, r"'pooling' must be one of none. Found: 'max'"),
    ({"filter": "mean", "support_voxels": 4, "boundary": "mirror", "dimensions": "3D"},
     r"'support_voxels' must be an odd integer \(voxels\) >= 1. Found: 4"),
    ({"filter": "separable_wavelet", "wavelet": "db99", "subband": "LHL", "level": 1, "rotation_invariance": False,
      "pooling": "none", "boundary": "mirror", "dimensions": "3D"}, r"'wavelet' must be a PyWavelets discrete"),
    ({"filter": "gabor", "sigma_mm": 10, "gamma": 0.5, "lambda_mm": 4, "theta_deg": 60, "rotation_invariance": False,
      "pooling": "none", "truncation": 4, "response": "modulus", "boundary": "mirror", "dimensions": "3D"},
     r"a 3D Gabor filter pools the three orthogonal planes, which needs rotation_invariance: true"),
    ({"filter": "gabor", "sigma_mm": 10, "gamma": 0.5, "lambda_mm": 4, "theta_deg": 0, "theta_step_deg": 50,
      "rotation_invariance": True, "pooling": "average", "truncation": 4, "response": "modulus",
      "boundary": "mirror", "dimensions": "2D"}, r"'theta_step_deg' must divide 360 degrees into equal parts"),
])
def test_config_errors_name_the_key_and_the_allowed_values(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^parameter file params.yaml: .*{message}"):
        parse_filters([entry], "params.yaml")


def test_duplicate_names_and_bad_block_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"palmares.filters\[0\] and \[1\] have the same name 'log_s3'"):
        parse_filters([LOG, {**LOG, "boundary": "constant"}], "params.yaml")
    with pytest.raises(ConfigError, match=r"palmares.filters must be a list of filters"):
        parse_filters(LOG, "params.yaml")
    assert parse_filters(None, "params.yaml") == ()


# --- the command line -------------------------------------------------------------------------------------------

def test_filter_command_help_and_one_line_errors(tmp_path: Path) -> None:
    palmares = str(Path(sys.executable).parent / "palmares")
    listed = subprocess.run([palmares, "--help"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "filter" in listed.stdout
    helped = subprocess.run([palmares, "filter", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "usage: palmares filter" in helped.stdout and "--filter NAME" in helped.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("palmares:\n  filters:\n    - filter: mean\n      support_voxels: 15\n      boundary: zero\n"
                   "      dimensions: 3D\n")
    failed = subprocess.run([palmares, "filter", "--image", str(tmp_path / "x.nii.gz"), "--params", str(bad),
                             "--out", str(tmp_path / "out.nii.gz")], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip().splitlines() == [
        f"palmares filter: parameter file {bad}: palmares.filters[0] (mean): 'boundary' must be one of constant, "
        "nearest, periodic, mirror. Found: 'zero'"]


def test_cli_refuses_a_file_of_several_filters_unless_one_is_named(tmp_path: Path, capsys) -> None:
    params = tmp_path / "two.yaml"
    mean = {"filter": "mean", "support_voxels": 3, "boundary": "nearest", "dimensions": "2D"}
    params.write_text(yaml.safe_dump({"palmares": {"filters": [LOG, mean]}, "setting": {"ignored": 1}}))
    image = tmp_path / "image.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)), str(image))
    out = tmp_path / "response.nii.gz"
    assert cli.main(["filter", "--image", str(image), "--params", str(params), "--out", str(out)]) == 1
    assert "has 2 filters (log_s3, mean_m3_2d): choose one with --filter NAME" in capsys.readouterr().err
    assert cli.main(["filter", "--image", str(image), "--params", str(params), "--out", str(out),
                     "--filter", "nope"]) == 1
    assert "has no such filter; it has log_s3, mean_m3_2d" in capsys.readouterr().err
    assert cli.main(["filter", "--image", str(image), "--params", str(params), "--out", str(out),
                     "--filter", "mean_m3_2d"]) == 0
    response = sitk.ReadImage(str(out))
    assert response.GetSize() == (7, 6, 5) and response.GetPixelID() == sitk.sitkFloat64
    np.testing.assert_allclose(sitk.GetArrayFromImage(response)[2, 2:4, 2:5],
                               np.arange(5 * 6 * 7).reshape(5, 6, 7)[2, 2:4, 2:5])  # a linear ramp: its own mean


def test_a_2d_image_takes_2d_filters_only() -> None:
    image = sitk.GetImageFromArray(np.arange(30.0).reshape(5, 6))
    mean = _spec({"filter": "mean", "support_voxels": 3, "boundary": "nearest", "dimensions": "2D"})
    response = apply(mean, image)
    assert response.GetSize() == (6, 5) and sitk.GetArrayFromImage(response)[2, 2] == pytest.approx(14.0)
    with pytest.raises(ConfigError, match="filter mean_m3 is 3D but the image is 2-D: use dimensions: 2D"):
        apply(_spec({"filter": "mean", "support_voxels": 3, "boundary": "nearest", "dimensions": "3D"}), image)


# --- helpers ------------------------------------------------------------------------------------------------------

def _spec(entry: dict) -> FilterSpec:
    (spec,) = parse_filters([entry], "test")
    return spec


def _response(spec: FilterSpec, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return sitk.GetArrayFromImage(apply(spec, image))


def _crop_difference(spec: FilterSpec, shape: tuple[int, int, int], core: tuple[tuple[int, int], ...],
                     spacing: tuple[float, float, float] = (1.2, 1.0, 2.0)) -> tuple[float, float]:
    """Largest difference between the whole image's response and that of a crop (core grown by the apron), inside
    the core; and the whole response's range. ``shape`` and ``core`` are (z, y, x); ``spacing`` is (x, y, z)."""
    rng = np.random.default_rng(11)
    array = rng.normal(size=shape)
    whole = _response(spec, array, spacing)
    margin = [math.ceil(mm / s - 1e-9) for mm, s in zip(reversed(spec.apron_mm(spacing)), reversed(spacing))]
    crop = tuple(slice(lo - m, hi + m) for (lo, hi), m in zip(core, margin))
    assert all(c.start >= 0 and c.stop <= n for c, n in zip(crop, shape)), "the test image is too small"
    cropped = _response(spec, array[crop], spacing)
    inner = tuple(slice(m, m + hi - lo) for (lo, hi), m in zip(core, margin))
    difference = np.abs(cropped[inner] - whole[tuple(slice(lo, hi) for lo, hi in core)]).max()
    return float(difference), float(whole.max() - whole.min())
