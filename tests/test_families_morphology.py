"""The IBSI morphology features pyradiomics lacks (families/morphology.py): each function against an independent
computation or a shape with a known answer, and the digital phantom against the IBSI 1 reference values."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from numpy.polynomial.legendre import legval
from scipy.spatial.distance import pdist, squareform
from skimage.measure import marching_cubes

from conftest import shared_path
from palmares_radiomics.families import morphology
from palmares_radiomics.ibsi import feature_class

#: Feature name (pyradiomics shape class) of each IBSI code this module computes.
FEATURES = {"SKGS": "Compactness1", "BQWJ": "Compactness2", "KRCK": "SphericalDisproportion", "25C7": "Asphericity",
            "KLMA": "CentreOfMassShift", "PBX1": "VolumeDensityAABB", "R59B": "AreaDensityAABB",
            "6BDE": "VolumeDensityAEE", "RDD2": "AreaDensityAEE", "R3ER": "VolumeDensityConvexHull",
            "7T7F": "AreaDensityConvexHull", "99N0": "IntegratedIntensity", "N365": "MoransI", "NPT7": "GearysC"}


def _brute_force_moran_geary(image: np.ndarray, mask: np.ndarray, spacing: np.ndarray) -> tuple[float, float]:
    """Moran's I and Geary's C summed over every voxel pair of ``mask`` explicitly (the definitions, no FFT)."""
    values = image[mask].astype(np.float64)
    x = values - values.mean()
    weights = squareform(1.0 / pdist(np.argwhere(mask) * spacing))  # zero diagonal: k != k'
    total = weights.sum()
    n = values.size
    morans_i = n / total * (x @ weights @ x) / (x @ x)
    gearys_c = (n - 1) / (2.0 * total) * np.sum(weights * (x[:, None] - x[None, :]) ** 2) / (x @ x)
    return float(morans_i), float(gearys_c)


def _random_roi(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A random mask (at least two voxels) and an image with a trend, noise and a large offset."""
    mask = rng.random(shape) < rng.uniform(0.2, 0.9)
    mask.flat[[0, -1]] = True
    image = rng.normal(1000.0, 50.0, shape) + 30.0 * np.arange(shape[0])[:, None, None] * rng.normal()
    return image, mask


# --- Moran's I and Geary's C --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_fft_moran_and_geary_equal_the_all_pairs_sums(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 9)), int(rng.integers(2, 13)), int(rng.integers(2, 15)))
    image, mask = _random_roi(rng, shape)
    padded_image, padded_mask = np.pad(image, 2), np.pad(mask, 2)  # the ROI's box is found inside a larger grid
    spacing = rng.uniform(0.4, 5.0, 3)
    fast = morphology.morans_i_gearys_c(padded_image, padded_mask, spacing)
    exact = _brute_force_moran_geary(image, mask, spacing)
    assert fast == pytest.approx(exact, rel=1e-9, abs=0)


def test_moran_geary_and_centre_of_mass_do_not_depend_on_the_blas_thread_count() -> None:
    """The same ROI gives the same bits with one BLAS thread (a DAG job) and with two (``palmares features`` by hand
    on a multi-core machine): the spectral sums are numpy's, not a multithreaded BLAS dot product's."""
    import subprocess
    import sys

    script = ("import numpy as np; from palmares_radiomics.families import morphology; "
              "rng = np.random.default_rng(3); image = rng.normal(size=(48, 48, 40)); "
              "mask = np.zeros(image.shape, bool); mask[4:44, 4:44, 3:37] = True; "
              "spacing = np.array([0.8, 0.8, 2.0]); "
              "print(*(v.hex() for v in morphology.morans_i_gearys_c(image, mask, spacing)), "
              "morphology.centre_of_mass_shift(mask, mask & (image > -1), image + 5, spacing).hex())")
    outputs = {threads: subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                       env={**os.environ, "OPENBLAS_NUM_THREADS": threads,
                                            "OMP_NUM_THREADS": threads}).stdout
               for threads in ("1", "2")}
    assert outputs["1"] == outputs["2"] and len(outputs["1"].split()) == 3, outputs


@pytest.mark.parametrize(("grid", "spacing"), [((2, 4, 6), (1.0, 2.0, 3.0)), ((10, 16, 12), (2.5, 0.7, 0.7))])
def test_kernel_spectrum_is_the_fft_of_the_periodic_inverse_distance_kernel(grid: tuple[int, ...],
                                                                            spacing: tuple[float, ...]) -> None:
    displacement = [np.fft.fftfreq(n, 1.0 / n) * s for n, s in zip(grid, spacing)]
    distance = np.sqrt(sum(d ** 2 for d in np.meshgrid(*displacement, indexing="ij")))
    kernel = np.divide(1.0, distance, out=np.zeros(grid), where=distance > 0)
    spectrum = np.fft.rfftn(kernel)
    assert np.abs(spectrum.imag).max() < 1e-12 * np.abs(spectrum.real).max()
    parseval = spectrum.real / math.prod(grid)
    parseval[..., 1:(grid[-1] + 1) // 2] *= 2
    assert np.allclose(morphology.kernel_spectrum(grid, spacing), parseval, rtol=0, atol=1e-12 * parseval.max())


def test_moran_and_geary_of_a_smooth_and_of_a_checkerboard_image() -> None:
    z, y, x = np.indices((6, 7, 8))
    mask = np.ones((6, 7, 8), dtype=bool)
    spacing = np.array([3.0, 0.8, 0.8])
    smooth = morphology.morans_i_gearys_c((z + y + x).astype(float), mask, spacing)
    checker = morphology.morans_i_gearys_c(((z + y + x) % 2).astype(float), mask, spacing)
    assert smooth == pytest.approx(_brute_force_moran_geary((z + y + x).astype(float), mask, spacing), rel=1e-9)
    assert checker == pytest.approx(_brute_force_moran_geary(((z + y + x) % 2).astype(float), mask, spacing), rel=1e-9)
    assert smooth[0] > 0 > checker[0] and smooth[1] < 1 < checker[1]


def test_moran_and_geary_are_undefined_for_a_constant_or_single_voxel_roi() -> None:
    """0/0: NaN, so the lesion is refused with the feature named, rather than a plausible 1.0 (MIRP's choice, which
    reads as perfect autocorrelation for Moran's I and none for Geary's C at once)."""
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1, 1:3, 1:4] = True
    assert all(math.isnan(v) for v in morphology.morans_i_gearys_c(np.full(mask.shape, 0.1), mask, np.ones(3)))
    single = np.zeros_like(mask)
    single[2, 2, 2] = True
    assert all(math.isnan(v) for v in morphology.morans_i_gearys_c(np.arange(60.0).reshape(mask.shape), single,
                                                                    np.ones(3)))
    with pytest.raises(ValueError, match="intensity mask is empty"):
        morphology.morans_i_gearys_c(np.zeros(mask.shape), np.zeros_like(mask), np.ones(3))


# --- mesh, bounding box, convex hull ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_mesh_vertices_span_the_marching_cubes_hull_and_box(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((7, 9, 8)) < 0.5
    spacing = rng.uniform(0.5, 3.0, 3)
    ours = morphology.mesh_vertices(mask, spacing)
    reference, _, _, _ = marching_cubes(np.pad(mask, 1).astype(float), 0.5, spacing=tuple(spacing))
    offset = reference.min(axis=0) - ours.min(axis=0)
    # every computed vertex is a marching-cubes vertex (the skimage mesh may add cube centres, inside the hull)
    known = {tuple(v) for v in np.round(reference / spacing, 6)}
    assert all(tuple(v) in known for v in np.round((ours + offset) / spacing, 6))
    assert morphology.aabb_volume_area(ours) == pytest.approx(morphology.aabb_volume_area(reference), rel=1e-12)
    assert morphology.convex_hull_volume_area(ours) == pytest.approx(
        morphology.convex_hull_volume_area(reference), rel=1e-9)


def test_bounding_box_and_hull_of_a_voxelised_box_are_known() -> None:
    n, m, k = 4, 6, 9
    spacing = np.array([2.0, 0.7, 1.3])
    mask = np.zeros((n + 3, m + 2, k + 4), dtype=bool)
    mask[1:n + 1, 2:m + 2, 3:k + 3] = True
    vertices = morphology.mesh_vertices(mask, spacing)
    # bounding box: the vertices reach half a voxel beyond the outer voxel centres
    a, b, c = np.array([n, m, k]) * spacing
    assert morphology.aabb_volume_area(vertices) == pytest.approx((a * b * c, 2 * (a * b + a * c + b * c)), rel=1e-12)
    # hull: the box of voxel centres (sides a, b, c) plus the octahedron of face midpoints (half-diagonals p, q, r)
    (a, b, c), (p, q, r) = (np.array([n, m, k]) - 1) * spacing, spacing / 2
    volume = (a * b * c + 2 * (p * b * c + q * a * c + r * a * b) + 2 * (a * q * r + b * p * r + c * p * q)
              + 4 / 3 * p * q * r)
    area = (2 * (b * c + a * c + a * b) + 4 * (a * math.hypot(q, r) + b * math.hypot(p, r) + c * math.hypot(p, q))
            + 4 * math.sqrt((p * q) ** 2 + (p * r) ** 2 + (q * r) ** 2))
    assert morphology.convex_hull_volume_area(vertices) == pytest.approx((volume, area), rel=1e-12)


# --- volume and area; ellipsoid -----------------------------------------------------------------------------------

def test_volume_area_ratios_of_a_sphere_and_their_relations() -> None:
    radius = 3.7
    volume, area = 4 / 3 * math.pi * radius ** 3, 4 * math.pi * radius ** 2
    assert morphology.compactness1(volume, area) == pytest.approx(1 / (6 * math.pi), rel=1e-14)
    assert morphology.compactness2(volume, area) == pytest.approx(1.0, rel=1e-14)
    assert morphology.spherical_disproportion(volume, area) == pytest.approx(1.0, rel=1e-14)
    assert morphology.asphericity(volume, area) == pytest.approx(0.0, abs=1e-14)
    volume, area = 556.0, 388.0
    sphericity = (36 * math.pi * volume ** 2) ** (1 / 3) / area
    assert morphology.compactness1(volume, area) == pytest.approx(math.sqrt(sphericity ** 3) / (6 * math.pi), rel=1e-14)
    assert morphology.compactness2(volume, area) == pytest.approx(sphericity ** 3, rel=1e-14)
    assert morphology.spherical_disproportion(volume, area) == pytest.approx(1 / sphericity, rel=1e-14)
    assert morphology.asphericity(volume, area) == pytest.approx(1 / sphericity - 1, rel=1e-14)
    assert morphology.volume_density(1.0, 0.0) != morphology.volume_density(1.0, 0.0)  # NaN


@pytest.mark.parametrize(("a", "b", "c"), [(5.0, 4.0, 3.0), (10.0, 5.0, 2.0), (5.7, 4.655, 4.27), (3.0, 2.9, 2.8)])
def test_ellipsoid_area_is_the_manuals_legendre_series(a: float, b: float, c: float) -> None:
    alpha, beta = math.sqrt(1 - b ** 2 / a ** 2), math.sqrt(1 - c ** 2 / a ** 2)
    nu = np.arange(21)
    series = 4 * math.pi * a * b * legval((alpha ** 2 + beta ** 2) / (2 * alpha * beta),
                                          (alpha * beta) ** nu / (1 - 4 * nu ** 2))
    assert morphology.ellipsoid_area(a, b, c) == pytest.approx(series, rel=1e-12)


def test_ellipsoid_area_of_a_sphere_and_the_continuous_limit_at_equal_axes() -> None:
    assert morphology.ellipsoid_area(2.5, 2.5, 2.5) == pytest.approx(4 * math.pi * 2.5 ** 2, rel=1e-14)
    assert morphology.ellipsoid_area(5.0, 5.0, 3.0) == pytest.approx(morphology.ellipsoid_area(5.0, 5.0 - 1e-7, 3.0),
                                                                     rel=1e-6)
    assert morphology.ellipsoid_semi_axes(np.array([4.0, 9.0, 1.0])) == (6.0, 4.0, 2.0)
    assert morphology.ellipsoid_volume(3.0, 2.0, 1.0) == pytest.approx(8 * math.pi, rel=1e-14)


# --- intensity ----------------------------------------------------------------------------------------------------

def test_centre_of_mass_shift_and_integrated_intensity_of_a_known_roi() -> None:
    image = np.zeros((1, 2, 3))
    image[0, 0, :2] = [1.0, 3.0]
    morphological = np.zeros(image.shape, dtype=bool)
    morphological[0, 0, :2] = True
    spacing = np.array([1.0, 1.0, 2.0])
    # geometric centre x = 1 mm, intensity-weighted (0 * 1 + 2 * 3) / 4 = 1.5 mm
    assert morphology.centre_of_mass_shift(morphological, morphological, image, spacing) == pytest.approx(0.5)
    intensity = morphological.copy()
    intensity[0, 0, 0] = False  # re-segmentation removed the first voxel: weighted centre at x = 2 mm
    assert morphology.centre_of_mass_shift(morphological, intensity, image, spacing) == pytest.approx(1.0)
    assert morphology.integrated_intensity(image, morphological, 10.0) == pytest.approx(20.0)
    assert morphology.integrated_intensity(image, intensity, 10.0) == pytest.approx(30.0)


# --- the pyradiomics class ----------------------------------------------------------------------------------------

def test_the_shape_class_enables_every_feature_and_none_is_deprecated() -> None:
    names = feature_class("shape").getFeatureNames()
    assert {name: names.get(name) for name in FEATURES.values()} == dict.fromkeys(FEATURES.values(), False)


def _digital_phantom() -> tuple[sitk.Image, sitk.Image]:
    folder = ("ibsi", "ibsi_1_digital_phantom", "nifti")
    image = sitk.ReadImage(str(shared_path(*folder, "image", "phantom.nii.gz")), sitk.sitkFloat64)
    mask = sitk.ReadImage(str(shared_path(*folder, "mask", "mask.nii.gz")), sitk.sitkUInt8)
    return image, mask


def test_digital_phantom_matches_the_ibsi_reference_values() -> None:
    image, mask = _digital_phantom()
    shape = feature_class("shape")(image, mask, label=1, ibsi_intensity_mask=sitk.GetArrayFromImage(mask) == 1)
    for name in FEATURES.values():
        shape.enableFeatureByName(name)
    values = shape.execute()
    reference = pd.read_csv(shared_path("ibsi", "reference_values", "ibsi1_digital_phantom_reference_values.csv"))
    rows = reference[reference["ibsi_code"].isin(FEATURES)]
    assert len(rows) == len(FEATURES)
    outside = {r.ibsi_code: (float(values[FEATURES[r.ibsi_code]]), r.reference, r.tolerance) for r in rows.itertuples()
               if not abs(float(values[FEATURES[r.ibsi_code]]) - r.reference) <= r.tolerance}
    assert not outside, f"outside the IBSI tolerance (value, reference, tolerance): {outside}"


def test_the_intensity_features_use_the_intensity_mask_and_default_to_the_morphological_one() -> None:
    image, mask = _digital_phantom()
    array, morphological = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask) == 1
    intensity = morphological & (array > 1)
    spacing = np.array(image.GetSpacing()[::-1])
    names = ("MoransI", "GearysC", "IntegratedIntensity", "CentreOfMassShift")

    def run(**settings: object) -> dict[str, float]:
        shape = feature_class("shape")(image, mask, label=1, **settings)
        for name in names:
            shape.enableFeatureByName(name)
        return {k: float(v) for k, v in shape.execute().items()}

    default, resegmented = run(), run(ibsi_intensity_mask=intensity)
    assert default == run(ibsi_intensity_mask=morphological)
    volume = float(feature_class("shape")(image, mask, label=1).getMeshVolumeFeatureValue())
    assert (resegmented["MoransI"], resegmented["GearysC"]) == pytest.approx(
        _brute_force_moran_geary(array, intensity, spacing), rel=1e-9)
    assert resegmented["IntegratedIntensity"] == pytest.approx(volume * array[intensity].mean(), rel=1e-12)
    assert resegmented["CentreOfMassShift"] == pytest.approx(
        morphology.centre_of_mass_shift(morphological, intensity, array, spacing), rel=1e-12)
    assert resegmented["MoransI"] != default["MoransI"]
    wrong = feature_class("shape")(image, mask, label=1, ibsi_intensity_mask=intensity[:, :, :-1])
    with pytest.raises(ValueError, match="ibsi_intensity_mask has shape"):
        wrong.getMoransIFeatureValue()
