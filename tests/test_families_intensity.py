"""The pipeline's intensity families (issue 16): the three intensity-based statistics pyradiomics lacks, the intensity
histogram, the intensity-volume histogram (with its own discretisation, ``palmares.ivh``) and local intensity.

Formulas on hand-computable cases, the IBSI 1 digital phantom against its reference values, the local intensity
peaks against a brute-force sphere mean, and the validation of ``palmares.ivh``. The CT phantom configurations A-E
are compared end to end in test_features.py."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from scipy import stats

from conftest import shared_path
from palmares_radiomics import ibsi
from palmares_radiomics.errors import ConfigError, FeatureExtractionError
from palmares_radiomics.families import histogram as ih
from palmares_radiomics.families import statistics as stat
from palmares_radiomics.families.ivh import (IvhDiscretisation, VolumeHistogram, intensity_at_volume_fraction,
                                             volume_fraction_at_intensity)
from palmares_radiomics.families.local_intensity import (SPHERE_RADIUS_MM, Neighbourhood, global_intensity_peak,
                                                         local_intensity_peak, sphere_offsets)
from palmares_radiomics.features import load_params

# --- intensity-based statistics -----------------------------------------------------------------------------------


def test_statistics_extras_on_a_hand_computed_sample() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])  # mean 4, population variance 10, median 3, P25 2, P75 4
    assert stat.median_absolute_deviation(values) == pytest.approx((2 + 1 + 0 + 1 + 7) / 5, abs=1e-15)
    assert stat.coefficient_of_variation(values) == pytest.approx(math.sqrt(10) / 4, rel=1e-15)
    assert stat.quartile_coefficient_of_dispersion(values) == pytest.approx((4 - 2) / (4 + 2), rel=1e-15)
    assert math.isnan(stat.coefficient_of_variation(np.array([-1.0, 1.0])))  # mean 0: undefined
    assert math.isnan(stat.quartile_coefficient_of_dispersion(np.array([-2.0, -1.0, 1.0, 2.0])))


# --- intensity histogram --------------------------------------------------------------------------------------------


def test_histogram_features_on_a_hand_computed_histogram() -> None:
    values = np.array([1, 1, 2, 4, 4, 4])  # counts n = [2, 1, 0, 3]: bin 3 empty but part of the histogram
    h = ih.DiscretisedIntensities.of(values)
    assert h.counts.tolist() == [2, 1, 0, 3]
    assert ih.mean(h) == 16 / 6
    assert ih.variance(h) == pytest.approx(17 / 9, rel=1e-15)  # sum (x - 8/3)^2 / 6 = (50 + 4 + 48) / 54
    assert ih.skewness(h) == pytest.approx(stats.skew(values), rel=1e-12)
    assert ih.kurtosis(h) == pytest.approx(stats.kurtosis(values, fisher=True), rel=1e-12)
    # numpy's linear percentiles, position (N - 1) q: P10 at 0.5 -> 1, P25 at 1.25 -> 1.25, P50 3, P75 4, P90 4
    assert (ih.percentile10(h), ih.median(h), ih.percentile90(h)) == (1.0, 3.0, 4.0)
    assert ih.interquartile_range(h) == 4 - 1.25
    assert ih.quartile_coefficient_of_dispersion(h) == pytest.approx(2.75 / 5.25, rel=1e-15)
    assert (ih.minimum(h), ih.maximum(h), ih.intensity_range(h), ih.mode(h)) == (1.0, 4.0, 3.0, 4.0)
    assert ih.mean_absolute_deviation(h) == pytest.approx(4 / 3, rel=1e-15)  # (2 * 5/3 + 2/3 + 3 * 4/3) / 6
    assert ih.robust_mean_absolute_deviation(h) == pytest.approx(4 / 3, rel=1e-15)  # P10..P90 keeps every voxel
    assert ih.median_absolute_deviation(h) == pytest.approx(8 / 6, rel=1e-15)  # |x - 3| = 2, 2, 1, 1, 1, 1
    assert ih.coefficient_of_variation(h) == pytest.approx(math.sqrt(17 / 9) / (8 / 3), rel=1e-15)
    # H' = [1 - 2, (0 - 2) / 2, (3 - 1) / 2, 3 - 0] = [-1, -1, 1, 3]: minimum first reached at bin 1
    assert ih.histogram_gradient(h).tolist() == [-1.0, -1.0, 1.0, 3.0]
    assert (ih.maximum_histogram_gradient(h), ih.maximum_histogram_gradient_intensity(h)) == (3.0, 4.0)
    assert (ih.minimum_histogram_gradient(h), ih.minimum_histogram_gradient_intensity(h)) == (-1.0, 1.0)


def test_robust_mean_absolute_deviation_keeps_only_the_10_to_90_percentile_voxels() -> None:
    values = np.array([1] + [5] * 8 + [9])  # P10 = 4.6 and P90 = 5.4 leave the eight 5s
    h = ih.DiscretisedIntensities.of(values)
    assert ih.robust_mean_absolute_deviation(h) == 0.0
    assert ih.mean_absolute_deviation(h) == pytest.approx(0.8, rel=1e-15)


def test_histogram_is_not_sparse_from_bin_1_and_constant_rois_get_zero_moments() -> None:
    h = ih.DiscretisedIntensities.of(np.array([3, 3, 5]))  # fixed bin size from a lower bound below the ROI
    assert h.counts.tolist() == [0, 0, 2, 0, 1]
    assert ih.histogram_gradient(h).tolist() == [0.0, 1.0, 0.0, -0.5, 1.0]
    assert (ih.maximum_histogram_gradient_intensity(h), ih.minimum_histogram_gradient_intensity(h)) == (2.0, 4.0)
    assert (ih.minimum(h), ih.intensity_range(h)) == (3.0, 2.0)
    flat = ih.DiscretisedIntensities.of(np.array([2, 2, 2]))
    assert (ih.skewness(flat), ih.kurtosis(flat), ih.coefficient_of_variation(flat)) == (0.0, 0.0, 0.0)
    assert ih.histogram_gradient(ih.DiscretisedIntensities.of(np.array([1, 1]))).tolist() == [0.0]


@pytest.mark.parametrize(("values", "expected"), [
    ([1, 1, 3, 3], 1.0),            # bins 1 and 3 equally frequent, mean 2 halfway: the bin left of the mean
    ([1, 1, 2, 2, 5], 2.0),         # bins 1 and 2 equally frequent, mean 2.2: the closer one
    ([1, 2, 2, 3, 3, 3, 6, 6, 6], 3.0),  # mean 3.55: bin 3 (0.55 away) before bin 6
])
def test_histogram_mode_ties_go_to_the_bin_closest_to_the_mean_then_to_the_left(values: list[int],
                                                                                 expected: float) -> None:
    assert ih.mode(ih.DiscretisedIntensities.of(np.array(values))) == expected


# --- intensity-volume histogram -----------------------------------------------------------------------------------


def test_ivh_of_the_digital_phantom_is_the_manual_s_table() -> None:
    """Manual, table "Example intensity-volume histogram": G = [1, 6], w = 1, nu = 1, .324, .324, .311, .095, .095."""
    values = np.repeat([1.0, 3.0, 4.0, 6.0], [50, 1, 16, 7])  # the phantom's 74 ROI voxels
    binning = IvhDiscretisation("none").resolve(values, ibsi.Resegmentation())
    h = VolumeHistogram.of(values, binning)
    assert (binning.origin, binning.top, binning.interval) == (1.0, 6.0, 1.0)
    assert np.round(h.at_least[:6] / h.voxels, 3).tolist() == [1.0, 0.324, 0.324, 0.311, 0.095, 0.095]
    assert intensity_at_volume_fraction(h, 0.1) == 5.0 and intensity_at_volume_fraction(h, 0.9) == 2.0
    assert volume_fraction_at_intensity(h, 0.1) == 24 / 74 and volume_fraction_at_intensity(h, 0.9) == 7 / 74


def test_ivh_discrete_case_takes_the_resegmentation_range_and_closes_an_open_end_at_the_roi() -> None:
    values = np.array([-50.0, 0.0, 50.0])
    h = VolumeHistogram.of(values, IvhDiscretisation("none").resolve(values, ibsi.Resegmentation(range=(-100, None))))
    assert (h.binning.origin, h.binning.top) == (-100.0, 50.0)  # G = [-100, max X_gl]
    assert volume_fraction_at_intensity(h, 0.1) == 1.0      # gamma >= 0.1 from i = -85: all three voxels
    assert volume_fraction_at_intensity(h, 0.9) == 1 / 3    # from i = 35: the voxel at 50
    assert intensity_at_volume_fraction(h, 0.9) == -49.0    # nu <= 0.9 first above -50
    assert intensity_at_volume_fraction(h, 0.1) == 51.0     # nu = 0 above the ROI maximum
    own = IvhDiscretisation("none", range=(-60.0, 60.0)).resolve(values, ibsi.Resegmentation(range=(-100, None)))
    assert (own.origin, own.top) == (-60.0, 60.0)           # palmares.ivh.range replaces the re-segmentation range
    with pytest.raises(FeatureExtractionError, match="below the intensity-volume histogram's lower bound -40"):
        IvhDiscretisation("none", range=(-40.0, None)).resolve(values, ibsi.Resegmentation())


def test_ivh_fixed_bin_size_uses_bin_centres_and_the_manual_s_total_range() -> None:
    values = np.array([0.0, 0.05, 0.1, 0.25, 0.31])  # w_b 0.1 from 0: steps 0, 0, 1, 2, 3 (0.1 on an edge: bin above)
    binning = IvhDiscretisation("fixed_bin_size", bin_width=0.1).resolve(values, ibsi.Resegmentation(range=(0, 1)))
    assert binning.steps(values).tolist() == [0, 0, 1, 2, 3]
    assert (binning.origin, binning.top, binning.interval) == (0.05, 0.95, 0.1)  # G = [min + w/2, max - w/2]
    h = VolumeHistogram.of(values, binning)
    assert h.at_least.tolist() == [5, 3, 2, 1, 0]
    assert volume_fraction_at_intensity(h, 0.1) == 3 / 5    # gamma >= 0.1 from step ceil(0.9) = 1
    assert volume_fraction_at_intensity(h, 0.9) == 0.0      # from step ceil(8.1) = 9, above every voxel
    assert intensity_at_volume_fraction(h, 0.1) == pytest.approx(0.45, abs=1e-15)  # centre of the first empty bin
    assert intensity_at_volume_fraction(h, 0.9) == pytest.approx(0.15, abs=1e-15)


def test_ivh_fixed_bin_number_works_in_bins() -> None:
    values = np.array([0.0, 10.0, 20.0, 100.0])
    binning = IvhDiscretisation("fixed_bin_number", bin_number=10).resolve(values, ibsi.Resegmentation(range=(-5, 200)))
    assert binning.steps(values).tolist() == [0, 1, 2, 9]  # floor(10 x / 100), the maximum in bin 10
    assert (binning.origin, binning.top) == (1.0, 10.0)    # G = [1, N_g], whatever the re-segmentation range
    h = VolumeHistogram.of(values, binning)
    assert volume_fraction_at_intensity(h, 0.1) == 0.75 and volume_fraction_at_intensity(h, 0.9) == 0.25
    assert intensity_at_volume_fraction(h, 0.9) == 2.0 and intensity_at_volume_fraction(h, 0.1) == 11.0
    flat = IvhDiscretisation("fixed_bin_number", bin_number=10).resolve(np.array([7.0, 7.0]), ibsi.Resegmentation())
    assert flat.steps(np.array([7.0, 7.0])).tolist() == [0, 0]


def test_ivh_volume_fraction_is_undefined_when_the_total_range_is_empty() -> None:
    values = np.array([5.0, 5.0])
    h = VolumeHistogram.of(values, IvhDiscretisation("none").resolve(values, ibsi.Resegmentation()))
    assert math.isnan(volume_fraction_at_intensity(h, 0.1))
    assert intensity_at_volume_fraction(h, 0.1) == 6.0


@pytest.mark.parametrize(("block", "message"), [
    (None, r"feature class 'ivh' needs 'palmares.ivh'"),
    ("none", r"'palmares.ivh' must be a mapping"),
    ({"method": "none", "bins": 3}, r"unknown key\(s\) \['bins'\] in 'palmares.ivh'"),
    ({"bin_width": 1}, r"'palmares.ivh.method' must be none, fixed_bin_size or fixed_bin_number. Found: None"),
    ({"method": "fbs"}, r"'palmares.ivh.method' must be .* Found: 'fbs'"),
    ({"method": "fixed_bin_size"}, r"'palmares.ivh.bin_width' must be a positive number for fixed_bin_size"),
    ({"method": "fixed_bin_size", "bin_width": -2.5}, r"'palmares.ivh.bin_width' must be a positive number"),
    ({"method": "fixed_bin_size", "bin_width": True}, r"'palmares.ivh.bin_width' must be a positive number"),
    ({"method": "none", "bin_width": 1}, r"'palmares.ivh.bin_width' is for fixed_bin_size only"),
    ({"method": "fixed_bin_size", "bin_width": 0.1, "bin_number": 10}, r"'palmares.ivh.bin_number' is for "
     r"fixed_bin_number only"),
    ({"method": "fixed_bin_number", "bin_number": 1}, r"'palmares.ivh.bin_number' must be an integer >= 2"),
    ({"method": "fixed_bin_number", "bin_number": 10.5}, r"'palmares.ivh.bin_number' must be an integer >= 2"),
    ({"method": "fixed_bin_number", "bin_number": 1000, "range": [0, 1]}, r"'palmares.ivh.range' is not used with "
     r"fixed_bin_number"),
    ({"method": "none", "range": [0]}, r"'palmares.ivh.range' must be \[low, high\]"),
    ({"method": "none", "range": [0, "max"]}, r"'palmares.ivh.range' must be \[low, high\]"),
    ({"method": "none", "range": "0-100"}, r"'palmares.ivh.range' must be \[low, high\] or null"),
    ({"method": "fixed_bin_size", "bin_width": 0.1, "range": [10, 0]}, r"'palmares.ivh.range' lower bound must be "
     r"below the upper bound"),
])
def test_ivh_block_is_validated_with_a_message_naming_the_file_and_key(block: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"parameter file p\.yaml: " + message):
        IvhDiscretisation.from_block(block, "p.yaml")  # type: ignore[arg-type]


def test_ivh_block_is_read_from_the_parameter_file(tmp_path: Path) -> None:
    assert IvhDiscretisation.from_block({"method": "fixed_bin_size", "bin_width": 2.5, "bin_number": None,
                                         "range": [None, 400]}, "p.yaml") == \
        IvhDiscretisation("fixed_bin_size", 2.5, None, (None, 400))
    document = {"palmares": {"discretisation": {"method": "fixed_bin_size", "bin_width": 25}},
                "featureClass": {"ivh": None}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match="feature class 'ivh' needs 'palmares.ivh'"):
        load_params(path)
    document["palmares"]["ivh"] = {"method": "fixed_bin_number", "bin_number": 1000}
    path.write_text(yaml.safe_dump(document))
    assert load_params(path).ivh == IvhDiscretisation("fixed_bin_number", bin_number=1000)


def test_ivh_class_without_its_discretisation_says_what_to_add() -> None:
    image = sitk.GetImageFromArray(np.arange(27, dtype=np.float64).reshape(3, 3, 3))
    mask = sitk.GetImageFromArray(np.ones((3, 3, 3), np.uint8))
    binning = ibsi.Discretisation("fixed_bin_size", 1).resolve(np.arange(27.0), ibsi.Resegmentation())
    settings = {"ibsi_binning": binning}
    with pytest.raises(ConfigError, match="add a 'palmares.ivh' block"):
        ibsi.run_class("ivh", image, mask, None, settings)


# --- local intensity ----------------------------------------------------------------------------------------------


def _brute_force_means(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Mean of the finite image voxels whose centres lie within the 1 cm^3 sphere radius of each ROI voxel (C order)."""
    grid = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(image.shape, spacing)), indexing="ij"), axis=-1)
    means = []
    for centre in np.argwhere(mask):
        inside = np.linalg.norm(grid - grid[tuple(centre)], axis=-1) <= SPHERE_RADIUS_MM
        means.append(np.nanmean(np.where(inside, image, np.nan)))
    return np.array(means)


def test_sphere_holds_the_voxel_centres_within_the_1_cm3_radius() -> None:
    assert SPHERE_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)
    count = sum(dz * dz + dy * dy + dx * dx <= SPHERE_RADIUS_MM ** 2 for dz, dy, dx in itertools.product(range(-7, 8),
                                                                                                         repeat=3))
    assert len(sphere_offsets((1.0, 1.0, 1.0))) == count == 1021
    offsets = sphere_offsets((3.0, 0.8, 0.8))
    assert np.abs(offsets).max(axis=0).tolist() == [2, 7, 7]  # floor(6.2 / 3), floor(6.2 / 0.8)
    assert np.all(np.linalg.norm(offsets * np.array([3.0, 0.8, 0.8]), axis=1) <= SPHERE_RADIUS_MM)


@pytest.mark.parametrize("spacing", [(2.0, 0.9, 0.8), (1.0, 1.0, 1.0)])
def test_local_and_global_intensity_peak_equal_a_brute_force_sphere_mean(spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(-100, 200, (14, 26, 27)).astype(np.float64)
    mask = np.zeros(image.shape, bool)
    mask[2:9, 1:12, 3:10] = rng.random((7, 11, 7)) < 0.6  # touches the image edge: spheres cut by it
    image[4, 5, 6] = image[6, 8, 4] = 500.0                # two voxels share the maximum intensity
    mask[4, 5, 6] = mask[6, 8, 4] = True
    image[0, 0, 0] = np.nan                                # a non-finite voxel outside the ROI does not count
    means = _brute_force_means(image, mask, spacing)
    brightest = (np.argwhere(mask) == [4, 5, 6]).all(axis=1) | (np.argwhere(mask) == [6, 8, 4]).all(axis=1)
    n = Neighbourhood.around(image, mask, spacing)
    assert global_intensity_peak(n) == pytest.approx(means.max(), rel=1e-13)
    assert local_intensity_peak(n) == pytest.approx(means[brightest].max(), rel=1e-13)
    assert n.fft_means() == pytest.approx(means, rel=1e-10, abs=1e-10)


def test_local_intensity_draws_on_voxels_outside_the_roi() -> None:
    image = np.zeros((15, 15, 15))
    image[7, 7, 7] = 100.0
    mask = np.zeros(image.shape, bool)
    mask[7, 7, 7] = True
    inside = Neighbourhood.around(image, mask, (1.0, 1.0, 1.0))
    assert local_intensity_peak(inside) == global_intensity_peak(inside) == pytest.approx(100.0 / 1021, rel=1e-15)
    image[7, 7, 9] = 1021.0  # outside the ROI, 2 mm away: in the sphere
    brighter = Neighbourhood.around(image, mask, (1.0, 1.0, 1.0))
    assert local_intensity_peak(brighter) == pytest.approx(1121.0 / 1021, rel=1e-15)


def test_local_intensity_class_runs_on_the_sitk_spacing() -> None:
    array = np.random.default_rng(2).normal(0.0, 1.0, (9, 12, 13))
    mask = np.zeros(array.shape, np.uint8)
    mask[3:6, 4:8, 4:9] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))  # x, y, z
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(image)
    values = ibsi.run_class("localintensity", image, mask_image, None, {})
    means = _brute_force_means(array, mask.astype(bool), (2.5, 0.8, 0.7))
    assert values["localintensity_GlobalIntensityPeak"] == pytest.approx(means.max(), rel=1e-13)
    brightest = np.argmax(array[mask.astype(bool)])
    assert values["localintensity_LocalIntensityPeak"] == pytest.approx(means[brightest], rel=1e-13)


# --- the IBSI 1 digital phantom -----------------------------------------------------------------------------------

#: Reference tags of the digital phantom → the feature of ours that holds them.
DIGITAL_PHANTOM_FEATURES = {
    "stat_medad": "firstorder_MedianAbsoluteDeviation", "stat_cov": "firstorder_CoefficientOfVariation",
    "stat_qcod": "firstorder_QuartileCoefficientOfDispersion",
    "ih_mean": "histogram_Mean", "ih_var": "histogram_Variance", "ih_skew": "histogram_Skewness",
    "ih_kurt": "histogram_Kurtosis", "ih_median": "histogram_Median", "ih_min": "histogram_Minimum",
    "ih_p10": "histogram_10Percentile", "ih_p90": "histogram_90Percentile", "ih_max": "histogram_Maximum",
    "ih_mode": "histogram_Mode", "ih_iqr": "histogram_InterquartileRange", "ih_range": "histogram_Range",
    "ih_mad": "histogram_MeanAbsoluteDeviation", "ih_rmad": "histogram_RobustMeanAbsoluteDeviation",
    "ih_medad": "histogram_MedianAbsoluteDeviation", "ih_cov": "histogram_CoefficientOfVariation",
    "ih_qcod": "histogram_QuartileCoefficientOfDispersion", "ih_max_grad": "histogram_MaximumHistogramGradient",
    "ih_max_grad_g": "histogram_MaximumHistogramGradientIntensity",
    "ih_min_grad": "histogram_MinimumHistogramGradient", "ih_min_grad_g": "histogram_MinimumHistogramGradientIntensity",
    "ivh_v10": "ivh_VolumeFractionAt10PercentIntensity", "ivh_v90": "ivh_VolumeFractionAt90PercentIntensity",
    "ivh_i10": "ivh_IntensityAt10PercentVolume", "ivh_i90": "ivh_IntensityAt90PercentVolume",
    "ivh_diff_v10_v90": "ivh_VolumeFractionDifference", "ivh_diff_i10_i90": "ivh_IntensityDifference",
    "loc_peak_loc": "localintensity_LocalIntensityPeak", "loc_peak_glob": "localintensity_GlobalIntensityPeak",
}


@pytest.fixture(scope="module")
def digital_phantom() -> dict[str, float]:
    """Our classes on the digital phantom as IBSI processes it: no re-segmentation, discretisation FBS width 1 from
    the ROI minimum (the phantom unchanged), IVH discrete case (G = [1, 6]); local intensity on the whole image."""
    folder = shared_path("ibsi", "ibsi_1_digital_phantom", "nifti")
    image = sitk.ReadImage(str(folder / "image" / "phantom.nii.gz"), sitk.sitkFloat64)
    mask = sitk.ReadImage(str(folder / "mask" / "mask.nii.gz"), sitk.sitkUInt8)
    values = sitk.GetArrayFromImage(image)[sitk.GetArrayFromImage(mask) > 0]
    settings = {"ibsi_binning": ibsi.Discretisation("fixed_bin_size", 1).resolve(values, ibsi.Resegmentation()),
                "ibsi_ivh_binning": IvhDiscretisation("none").resolve(values, ibsi.Resegmentation())}
    out: dict[str, float] = {}
    for name in ("firstorder", "histogram", "ivh", "localintensity"):
        out.update(ibsi.run_class(name, image, mask, None, settings))
    return out


def _reference_rows() -> list[dict[str, str]]:
    path = shared_path("ibsi", "reference_values", "ibsi1_digital_phantom_reference_values.csv")
    return [r for r in csv.DictReader(path.read_text(encoding="utf-8").splitlines())
            if r["tag"] in DIGITAL_PHANTOM_FEATURES]


def test_every_digital_phantom_reference_of_these_families_is_checked() -> None:
    assert len(_reference_rows()) == len(DIGITAL_PHANTOM_FEATURES) == 32


@pytest.mark.parametrize("tag", sorted(DIGITAL_PHANTOM_FEATURES))
def test_digital_phantom_matches_the_ibsi_reference(tag: str, digital_phantom: dict[str, float]) -> None:
    """Exact references (tolerance 0), printed to 3 significant digits: the value rounded to 3 digits must equal it."""
    row = next(r for r in _reference_rows() if r["tag"] == tag)
    value = digital_phantom[DIGITAL_PHANTOM_FEATURES[tag]]
    assert float(row["tolerance"]) == 0
    assert float(f"{value:.3g}") == float(row["reference"]), f"{tag}: {value!r}, reference {row['reference']}"
