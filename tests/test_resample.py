"""IBSI grid alignment, mask partial-volume rule, and crop invariance of the resampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from palmares_radiomics.errors import ConfigError
from palmares_radiomics.resample import ResamplingSettings, crop_grid, ibsi_grid, resample_lesion


def _image(shape=(60, 40, 20), spacing=(0.8, 0.8, 3.0), origin=(-12.0, 5.0, 100.0), seed=0):
    array = np.random.default_rng(seed).normal(50, 30, shape[::-1])
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    z, y, x = np.indices(shape[::-1])
    sphere = (((x - 14) * spacing[0]) ** 2 + ((y - 22) * spacing[1]) ** 2 + ((z - 9) * spacing[2]) ** 2) < 7.0 ** 2
    mask = sitk.GetImageFromArray(sphere.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def test_ibsi_grid_is_centre_aligned() -> None:
    image = sitk.Image([5, 4, 3], sitk.sitkFloat64)
    image.SetSpacing((3.0, 1.0, 2.0))
    grid = ibsi_grid(image, (2.0, 2.0, None))
    # n_b = ceil(n_a s_a / s_b): 5*3/2 -> 8, 4*1/2 -> 2; z kept. First voxel at (s_a(n_a-1) - s_b(n_b-1))/2.
    assert grid.size == (8, 2, 3)
    assert grid.spacing == (2.0, 2.0, 2.0)
    assert grid.origin == pytest.approx(((3 * 4 - 2 * 7) / 2, (1 * 3 - 2 * 1) / 2, 0.0))
    centre_before = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    ref = grid.reference()
    centre_after = np.array(ref.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in grid.size]))
    assert centre_after == pytest.approx(centre_before)


def test_cropping_never_moves_the_grid() -> None:
    image, mask = _image()
    settings = ResamplingSettings((1.0, 1.0, 1.0), "linear", 0.5, False)
    cropped_image, cropped_mask = resample_lesion(image, mask, settings, margin_mm=5.0)
    whole = ibsi_grid(image, settings.spacing_mm)
    full = sitk.Resample(image, whole.reference(), sitk.Transform(), sitk.sitkLinear, float(np.min(
        sitk.GetArrayViewFromImage(image))), sitk.sitkFloat64)
    index = [int(round(v)) for v in full.TransformPhysicalPointToContinuousIndex(cropped_image.GetOrigin())]
    expected = sitk.GetArrayFromImage(sitk.RegionOfInterest(full, cropped_image.GetSize(), index))
    got = sitk.GetArrayFromImage(cropped_image)
    assert np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-12)) < 1e-9
    assert cropped_image.GetSize()[0] < whole.size[0]


def test_mask_interpolation_keeps_the_volume() -> None:
    image, mask = _image()
    before = sitk.GetArrayViewFromImage(mask).sum() * np.prod(mask.GetSpacing())
    _, resampled = resample_lesion(image, mask, ResamplingSettings((1.0, 1.0, 1.0)), margin_mm=3.0)
    after = sitk.GetArrayViewFromImage(resampled).sum() * np.prod(resampled.GetSpacing())
    assert after == pytest.approx(before, rel=0.05)
    assert set(np.unique(sitk.GetArrayViewFromImage(resampled))) == {0, 1}


def test_without_spacing_the_original_voxels_are_cropped_not_interpolated() -> None:
    image, mask = _image()
    cropped, cropped_mask = resample_lesion(image, mask, None, margin_mm=2.0)
    index = [int(round(v)) for v in image.TransformPhysicalPointToContinuousIndex(cropped.GetOrigin())]
    original = sitk.RegionOfInterest(image, cropped.GetSize(), index)
    assert np.array_equal(sitk.GetArrayViewFromImage(cropped), sitk.GetArrayViewFromImage(original))
    assert sitk.GetArrayViewFromImage(cropped_mask).sum() == sitk.GetArrayViewFromImage(mask).sum()


def test_rounding_gives_whole_numbers() -> None:
    image, mask = _image()
    out, _ = resample_lesion(image, mask, ResamplingSettings((1.0, 1.0, 1.0), round_intensities=True), 2.0)
    values = sitk.GetArrayViewFromImage(out)
    assert np.array_equal(values, np.round(values))


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="mask_threshold must be in"):
        ResamplingSettings((1.0, 1.0, 1.0), mask_threshold=1.5)
    with pytest.raises(ConfigError, match="spacing_mm must have 3 values"):
        ResamplingSettings((1.0, 1.0))
    with pytest.raises(ConfigError, match="positive or null"):
        ResamplingSettings((1.0, -1.0, 1.0))
    image, mask = _image()
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    from palmares_radiomics.errors import FeatureExtractionError

    with pytest.raises(FeatureExtractionError, match="label 1 is empty in the mask"):
        crop_grid(ibsi_grid(image, None), empty, 1.0)


def test_a_resampling_too_large_for_memory_is_refused_before_allocating() -> None:
    """0.1 mm on a CT lesion neighbourhood would need ~3e8 voxels (several GB per copy): refused, naming the size."""
    import time

    from palmares_radiomics.errors import FeatureExtractionError, ResamplingSizeError
    from palmares_radiomics.resample import MAX_RESAMPLED_VOXELS

    image = sitk.Image([100, 100, 40], sitk.sitkInt16)
    image.SetSpacing((0.8, 0.8, 3.0))
    mask = sitk.Image([100, 100, 40], sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[20:70, 20:70, 5:30] = 1  # a 40 x 40 x 75 mm lesion
    settings = ResamplingSettings((0.1, 0.1, 0.1))
    grid = crop_grid(ibsi_grid(image, settings.spacing_mm), mask, 10.0)
    voxels = int(np.prod(grid.size))
    assert voxels > MAX_RESAMPLED_VOXELS == 2**28
    shape = " x ".join(str(n) for n in grid.size)
    start = time.perf_counter()
    with pytest.raises(ResamplingSizeError, match=rf"resampling label 1 to 0\.1 x 0\.1 x 0\.1 mm would allocate "
                                                  rf"{voxels:,} voxels \(a grid of {shape} voxels, x y z, for the lesion "
                                                  rf"and its 10 mm margin\); the limit is 268,435,456 voxels .*use a "
                                                  rf"coarser palmares\.resampling\.spacing_mm") as refused:
        resample_lesion(image, mask, settings, margin_mm=10.0)
    assert time.perf_counter() - start < 1.0 and isinstance(refused.value, FeatureExtractionError)
    # at 1 mm the same lesion resamples (~1e5 voxels)
    out, _ = resample_lesion(image, mask, ResamplingSettings((1.0, 1.0, 1.0)), margin_mm=10.0)
    assert np.prod(out.GetSize()) < MAX_RESAMPLED_VOXELS


def test_rounding_keeps_nan_and_infinite_voxels() -> None:
    """sitk.Round alone turns NaN into a number: a NaN voxel must stay NaN so feature extraction can refuse it."""
    from palmares_radiomics.resample import round_ties_exactly

    image = sitk.GetImageFromArray(np.array([[[0.5, 1.4999999999, np.nan, np.inf, -np.inf, -2.5]]]))
    image.SetSpacing((0.7, 0.8, 0.9))
    out = round_ties_exactly(image)
    assert np.array_equal(sitk.GetArrayViewFromImage(out), np.array([[[1.0, 2.0, np.nan, np.inf, -np.inf, -2.0]]]),
                          equal_nan=True)
    assert out.GetSpacing() == image.GetSpacing()
