"""Cropping never moves the IBSI grid: per-lesion features equal resample-whole-volume-then-extract.

``extract_lesion`` crops each lesion's neighbourhood (``crop_margin_mm``) and resamples only there, on a
grid that :mod:`palmares_radiomics.resample` defines on the whole image. The reference here resamples the
whole volume on that same whole-image IBSI grid (``resample_lesion`` with a margin larger than the image)
and runs the same extraction on the result with resampling and cropping disabled, so the only difference
between the two arms is the crop. Tolerance: 1e-9 relative for every feature.

The hazard these tests pin: ``sitk.Resample`` computes each output voxel's input continuous index with
floating-point steps that depend on the output region and on the cropped source's origin, so the same grid
point gets values that differ in the last bits (~1e-11 HU) between the cropped and the whole grid. An
integer-HU CT resampled from 0.8 x 0.8 x 3 mm to 1 mm has many values that are mathematically exact
half-HU ties (x, y weights in eighths; z weights 0, 1/3, 2/3) or exact multiples of the 25 HU bin width,
and the last bits decide how such a value rounds or bins. ``resample.round_ties_exactly`` settles the
first case (ct.yaml rounds to whole HU); ``ibsi.EDGE_TOLERANCE`` the second (values on a bin edge).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from palmares_radiomics.features import ExtractionParams, extract_lesion, load_params
from palmares_radiomics.resample import ibsi_grid, resample_lesion

PARAMS = Path(__file__).resolve().parents[1] / "params" / "ct.yaml"
#: A margin larger than any image: crop_grid then keeps the whole IBSI grid (it clips to the grid).
WHOLE_IMAGE_MM = 1.0e6
RELATIVE_TOLERANCE = 1e-9
LESION, EDGE_NODULE = 3, 1

def ct_like_volume(seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """An int16 CT (160 x 160 x 60 voxels of 0.8 x 0.8 x 3 mm, origin off zero) and its label map.

    Body at 40 HU, a lung at -850 HU, air at -1024 HU, Gaussian noise (SD 12 HU). Label 3: a ~14 ml
    irregular lesion of textured HU (smoothed noise, SD ~35 HU) with an air cavity (-1024 HU, dropped by
    the [-1000, 3000] re-segmentation). Label 1: a ~0.4 ml nodule in the corner of the x = 0 face and the
    first slice, so its crop is clipped by the grid edge, and the IBSI grid (1 mm past the first slice
    centre in z) samples outside the image there.
    """
    shape_zyx, spacing, origin = (60, 160, 160), (0.8, 0.8, 3.0), (-61.3, -187.9, -402.25)
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:shape_zyx[0], :shape_zyx[1], :shape_zyx[2]]
    x, y, z = x * spacing[0], y * spacing[1], z * spacing[2]    # mm from the first voxel centre
    hu = np.full(shape_zyx, -1024.0)
    hu[np.broadcast_to((((x - 64) / 60) ** 2 + ((y - 64) / 55) ** 2) < 1, shape_zyx)] = 40.0
    hu[np.broadcast_to((((x - 89) / 22) ** 2 + ((y - 59) / 30) ** 2) < 1, shape_zyx)] = -850.0
    hu += rng.normal(0.0, 12.0, shape_zyx)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape_zyx), (0.7, 2.0, 2.0))
    texture /= texture.std()
    radius = np.sqrt((x - 44) ** 2 + ((y - 74) / 0.85) ** 2 + ((z - 90) / 1.1) ** 2)
    lesion = radius < 15.2 + 1.5 * texture
    hu[lesion] = 35.0 + 35.0 * texture[lesion] + rng.normal(0.0, 15.0, int(lesion.sum()))
    hu[lesion & (radius < 4.5)] = -1024.0
    nodule = np.sqrt((x - 2.0) ** 2 + (y - 64) ** 2 + (z - 3.0) ** 2) < 4.5
    hu[nodule] = 20.0 + 25.0 * texture[nodule]
    labels = np.zeros(shape_zyx, np.uint8)
    labels[lesion] = LESION
    labels[nodule] = EDGE_NODULE
    image = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    label_map = sitk.GetImageFromArray(labels)
    label_map.CopyInformation(image)
    return image, label_map


@pytest.fixture(scope="module")
def volume() -> tuple[sitk.Image, sitk.Image]:
    return ct_like_volume()


@pytest.fixture(scope="module")
def params() -> ExtractionParams:
    return load_params(PARAMS)


def whole_grid(image: sitk.Image, label_map: sitk.Image, label: int,
               params: ExtractionParams) -> tuple[sitk.Image, sitk.Image]:
    """Image and lesion mask resampled on the whole-image IBSI grid (no crop), by resample.py itself."""
    assert params.resampling is not None and params.resampling.spacing_mm is not None
    image_w, mask_w = resample_lesion(image, label_map == label, params.resampling, WHOLE_IMAGE_MM)
    grid = ibsi_grid(image, params.resampling.spacing_mm)
    assert image_w.GetSize() == grid.size
    assert image_w.GetOrigin() == pytest.approx(grid.origin, abs=1e-9)
    return image_w, mask_w


def relative_differences(got: dict[str, float], expected: dict[str, float]) -> dict[str, float]:
    """|got - expected| / |expected| per feature (0 where equal, NaN == NaN counts as equal)."""
    out = {}
    for name, want in expected.items():
        have = got[name]
        if have == want or (np.isnan(have) and np.isnan(want)):
            out[name] = 0.0
        else:
            out[name] = abs(have - want) / abs(want) if want != 0 else float("inf")
    return out


def crop_vs_whole(image: sitk.Image, label_map: sitk.Image, label: int, params: ExtractionParams) -> None:
    """Assert that extract_lesion equals resample-whole-then-extract within RELATIVE_TOLERANCE, feature by feature."""
    cropped = extract_lesion(image, label_map, label, params)
    image_w, mask_w = whole_grid(image, label_map, label, params)
    no_resampling = dataclasses.replace(params, resampling=None, crop_margin_mm=WHOLE_IMAGE_MM)
    whole = extract_lesion(image_w, mask_w, 1, no_resampling)
    assert sorted(cropped) == sorted(whole)
    assert len(whole) > 90
    differences = relative_differences(cropped, whole)
    worst = sorted(differences.items(), key=lambda item: -item[1])[:5]
    assert max(differences.values()) <= RELATIVE_TOLERANCE, f"largest relative differences: {worst}"


@pytest.mark.parametrize("label", [LESION, EDGE_NODULE], ids=["lesion-14ml", "nodule-at-image-edge"])
def test_features_equal_resample_whole_then_extract(volume, params, label: int) -> None:
    crop_vs_whole(*volume, label, params)


def test_unrounded_features_equal_resample_whole_then_extract(volume, params) -> None:
    unrounded = dataclasses.replace(params.resampling, round_intensities=False)
    crop_vs_whole(*volume, LESION, dataclasses.replace(params, resampling=unrounded))


def test_cropped_grid_is_a_window_of_the_whole_grid(volume, params) -> None:
    """Same grid points, same mask; interpolated values equal to 1e-9 relative before rounding."""
    image, label_map = volume
    unrounded = dataclasses.replace(params.resampling, round_intensities=False)
    image_c, mask_c = resample_lesion(image, label_map == LESION, unrounded, params.crop_margin_mm)
    image_w, mask_w = resample_lesion(image, label_map == LESION, unrounded, WHOLE_IMAGE_MM)
    start = image_w.TransformPhysicalPointToContinuousIndex(image_c.GetOrigin())
    assert start == pytest.approx([round(v) for v in start], abs=1e-9)
    start = [int(round(v)) for v in start]
    assert image_c.GetSpacing() == image_w.GetSpacing()
    assert np.prod(image_c.GetSize()) < np.prod(image_w.GetSize()) / 10
    window = sitk.GetArrayFromImage(sitk.RegionOfInterest(image_w, image_c.GetSize(), start))
    values = sitk.GetArrayFromImage(image_c)
    assert np.max(np.abs(values - window) / np.maximum(np.abs(window), 1.0)) < RELATIVE_TOLERANCE
    mask_window = sitk.GetArrayFromImage(sitk.RegionOfInterest(mask_w, mask_c.GetSize(), start))
    assert np.array_equal(sitk.GetArrayFromImage(mask_c), mask_window)
    assert sitk.GetArrayViewFromImage(mask_c).sum() == sitk.GetArrayViewFromImage(mask_w).sum()


def test_half_hu_ties_round_the_same_way_cropped_or_not(volume, params) -> None:
    """ct.yaml's rounded intensities are bit-identical on the window, although it holds many exact x.5 HU ties."""
    image, label_map = volume
    image_c, _ = resample_lesion(image, label_map == LESION, params.resampling, params.crop_margin_mm)
    image_w, _ = resample_lesion(image, label_map == LESION, params.resampling, WHOLE_IMAGE_MM)
    unrounded = dataclasses.replace(params.resampling, round_intensities=False)
    raw_c, _ = resample_lesion(image, label_map == LESION, unrounded, params.crop_margin_mm)
    start = [int(round(v)) for v in image_w.TransformPhysicalPointToContinuousIndex(image_c.GetOrigin())]
    window = sitk.GetArrayFromImage(sitk.RegionOfInterest(image_w, image_c.GetSize(), start))
    raw = sitk.GetArrayViewFromImage(raw_c)
    ties = np.abs(raw - np.floor(raw) - 0.5) < 1e-9
    assert ties.sum() > 100
    assert np.array_equal(sitk.GetArrayViewFromImage(image_c), window)
