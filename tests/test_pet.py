"""PET lesion and patient metrics on synthetic lesions of known size, activity and position.

Discretisation error (stated, then asserted): lesions are balls sampled at voxel centres. On a 1 mm
grid, counting lattice points inside a ball of radius >= 17 voxels gives its volume to 0.5 %
(measured: 0.11-0.44 %), and means of a smooth radial profile over such balls to 0.25 %; the
1 cm^3 SUVpeak sphere (radius 6.2 voxels) reproduces its analytic mean to 0.07 %. Tolerances: 1 %
for volumes and TLG, 0.5 % for means, 0.2 % for SUVpeak. Centroids of balls centred on voxel centres
are exact, so Dmax is checked to 1e-9 mm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from palmares_radiomics import pet
from palmares_radiomics.errors import FeatureExtractionError, LesionTableError, SegmentationError, SuvError
from palmares_radiomics.records import LesionSpec

R = 20.0  # lesion radius, mm
PROFILE_MAX, PROFILE_DROP = 10.0, 8.0  # SUV(r) = 10 - 8 (r/R)^2 inside the lesion, background SUV 1


def ball_volume_ml(r_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * r_mm**3 / 1000.0


def profile_mean(rho_mm: float) -> float:
    """Mean of 10 - 8 (r/R)^2 over a ball of radius rho centred on r = 0: 10 - 8 * (3/5) rho^2 / R^2."""
    return PROFILE_MAX - PROFILE_DROP * 0.6 * rho_mm**2 / R**2


def profile_radius(suv: float) -> float:
    """Radius where the profile falls to ``suv``."""
    return R * math.sqrt((PROFILE_MAX - suv) / PROFILE_DROP)


def grid(
    shape_zyx: tuple[int, int, int], spacing_xyz: tuple[float, float, float], origin: tuple[float, float, float]
) -> sitk.Image:
    image = sitk.Image([shape_zyx[2], shape_zyx[1], shape_zyx[0]], sitk.sitkFloat64)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin)
    return image


def physical_coordinates(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z (mm) of every voxel centre as (z, y, x) arrays (identity direction)."""
    nx, ny, nz = image.GetSize()
    (ox, oy, oz), (sx, sy, sz) = image.GetOrigin(), image.GetSpacing()
    z, y, x = np.meshgrid(oz + sz * np.arange(nz), oy + sy * np.arange(ny), ox + sx * np.arange(nx), indexing="ij")
    return x, y, z


def as_image(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


@pytest.fixture(scope="module")
def profiled_lesion() -> tuple[sitk.Image, sitk.Image]:
    """One ball (R = 20 mm) with SUV 10 - 8 (r/R)^2 on a 1 mm grid, centred on a voxel centre, background SUV 1."""
    ref = grid((64, 64, 64), (1.0, 1.0, 1.0), (-32.0, -40.0, 100.0))
    x, y, z = physical_coordinates(ref)
    r2 = (x - 0.0) ** 2 + (y + 8.0) ** 2 + (z - 132.0) ** 2
    inside = r2 <= R**2
    suv = np.where(inside, PROFILE_MAX - PROFILE_DROP * r2 / R**2, 1.0)
    return as_image(suv, ref), as_image(inside.astype(np.uint16), ref)


def test_lesion_metrics_match_analytic_values(profiled_lesion: tuple[sitk.Image, sitk.Image]) -> None:
    suv, labels = profiled_lesion
    (m,) = pet.lesion_metrics(suv, labels, [LesionSpec("L1", "pet", 1, "liver")])
    r41, r25 = profile_radius(0.41 * PROFILE_MAX), profile_radius(2.5)
    assert m.suvmax == PROFILE_MAX
    assert m.threshold_41pct_suv == pytest.approx(4.1)
    assert m.volume_ml == pytest.approx(ball_volume_ml(R), rel=0.01)
    assert m.suvmean == pytest.approx(profile_mean(R), rel=0.005)
    assert m.suvpeak == pytest.approx(profile_mean(pet.PEAK_RADIUS_MM), rel=0.002)
    assert m.mtv_41pct_ml == pytest.approx(ball_volume_ml(r41), rel=0.01)
    assert m.suvmean_41pct == pytest.approx(profile_mean(r41), rel=0.005)
    assert m.tlg_41pct == pytest.approx(ball_volume_ml(r41) * profile_mean(r41), rel=0.01)
    assert m.mtv_suv2p5_ml == pytest.approx(ball_volume_ml(r25), rel=0.01)
    assert m.suvmean_suv2p5 == pytest.approx(profile_mean(r25), rel=0.005)
    assert m.tlg_suv2p5 == pytest.approx(ball_volume_ml(r25) * profile_mean(r25), rel=0.01)
    assert m.tlg_41pct == pytest.approx(m.mtv_41pct_ml * m.suvmean_41pct, rel=1e-12)
    assert m.centroid_mm == pytest.approx((0.0, -8.0, 132.0), abs=1e-9)
    assert set(m.as_row()) >= {
        "suvmax",
        "suvpeak",
        "mtv_suv2p5_ml",
        "mtv_41pct_ml",
        "tlg_suv2p5",
        "tlg_41pct",
        "centroid_mm_x",
    }


def test_peak_radius_is_one_cubic_centimetre() -> None:
    assert ball_volume_ml(pet.PEAK_RADIUS_MM) == pytest.approx(1.0, rel=1e-12)


def test_uniform_sphere_anisotropic_grid() -> None:
    """Uniform SUV 6 ball (R 15 mm) on 2 x 2 x 3 mm voxels: MTVs = the ball, TLG = 6 x volume; peak = 6 inside."""
    ref = grid((40, 48, 48), (2.0, 2.0, 3.0), (-47.0, -47.0, -60.0))
    x, y, z = physical_coordinates(ref)
    inside = (x - 1.0) ** 2 + (y - 1.0) ** 2 + z**2 <= 15.0**2
    suv = as_image(np.where(inside, 6.0, 0.5), ref)
    (m,) = pet.lesion_metrics(suv, as_image(inside.astype(np.uint8) * 3, ref), [LesionSpec("B1", "pet", 3, "bone")])
    # coarse grid (R = 5-7.5 voxels): lattice-point count within 3 % of the analytic volume
    assert m.volume_ml == pytest.approx(ball_volume_ml(15.0), rel=0.03)
    assert m.mtv_suv2p5_ml == m.mtv_41pct_ml == m.volume_ml
    assert (m.suvmax, m.suvmean, m.suvmean_41pct, m.suvpeak) == (6.0, 6.0, 6.0, 6.0)
    assert m.tlg_41pct == pytest.approx(6.0 * m.volume_ml)


def test_cold_lesion_has_zero_absolute_mtv() -> None:
    ref = grid((10, 10, 10), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    values = np.full((10, 10, 10), 1.0)
    values[5, 5, 5] = 2.0
    labels = np.zeros((10, 10, 10), np.uint16)
    labels[4:7, 4:7, 4:7] = 1
    (m,) = pet.lesion_metrics(as_image(values, ref), as_image(labels, ref), [LesionSpec("L1", "pet", 1, "lung")])
    assert (m.mtv_suv2p5_ml, m.tlg_suv2p5, m.suvmean_suv2p5) == (0.0, 0.0, None)
    assert m.mtv_41pct_ml == pytest.approx(27 * 0.008)


def test_tied_maxima_take_the_highest_peak() -> None:
    """Two voxels share SUVmax; the one in the hot neighbourhood gives SUVpeak (IBSI)."""
    ref = grid((20, 20, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    values = np.zeros((20, 20, 40))
    values[8:13, 8:13, 25:32] = 4.0
    values[10, 10, 5] = 5.0
    values[10, 10, 28] = 5.0
    labels = np.zeros_like(values, dtype=np.uint16)
    labels[10, 10, 5] = labels[8:13, 8:13, 25:32] = 1
    (m,) = pet.lesion_metrics(as_image(values, ref), as_image(labels, ref), [LesionSpec("L1", "pet", 1, "other")])
    # independent brute force: mean over all voxel centres within 6.2035 mm of the hot-side maximum
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in values.shape), indexing="ij")
    sphere = (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 28) ** 2 <= pet.PEAK_RADIUS_MM**2
    assert sphere.sum() == 1021  # lattice points in a ball of radius 6.2035 voxels
    assert m.suvpeak == pytest.approx(values[sphere].mean(), rel=1e-12)
    assert m.suvpeak > 100 * 5.0 / 1021  # the isolated maximum at x = 5 would give 5/1021


def two_lesions() -> tuple[sitk.Image, sitk.Image, list[LesionSpec]]:
    """Three balls on a 2 x 2 x 3 mm grid: liver L1 at (-40, 0, 30), node N1 at (40, 30, 30), node N2 at (0, 0, 30)."""
    ref = grid((24, 56, 56), (2.0, 2.0, 3.0), (-55.0, -55.0, 0.0))
    x, y, z = physical_coordinates(ref)
    centres = {1: (-41.0, -1.0, 30.0), 2: (41.0, 29.0, 30.0), 3: (1.0, -1.0, 30.0)}
    labels = np.zeros(x.shape, np.uint16)
    suv = np.full(x.shape, 1.0)
    for label, (cx, cy, cz) in centres.items():
        ball = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= 8.0**2
        labels[ball] = label
        suv[ball] = 3.0 + 2.0 * label
    specs = [
        LesionSpec("L1", "pet", 1, "liver"),
        LesionSpec("N1", "pet", 2, "lymph_node"),
        LesionSpec("N2", "pet", 3, "lymph_node"),
    ]
    return as_image(suv, ref), as_image(labels, ref), specs


def test_patient_metrics_dmax_and_organs() -> None:
    suv, labels, specs = two_lesions()
    lesions = pet.lesion_metrics(suv, labels, specs)
    assert [m.centroid_mm for m in lesions] == [
        pytest.approx((-41.0, -1.0, 30.0), abs=1e-9),
        pytest.approx((41.0, 29.0, 30.0), abs=1e-9),
        pytest.approx((1.0, -1.0, 30.0), abs=1e-9),
    ]
    patient = pet.patient_metrics(lesions, weight_kg=70.0, height_m=1.75)
    dmax = math.hypot(82.0, 30.0)  # L1 to N1
    assert patient.all_lesions.lesion_count == 3
    assert patient.all_lesions.dmax_mm == pytest.approx(dmax, abs=1e-9)
    bsa = 0.007184 * 70.0**0.425 * 175.0**0.725
    assert patient.bsa_m2 == pytest.approx(bsa, rel=1e-12)
    assert patient.sdmax_per_m == pytest.approx(dmax / 1000.0 / bsa, rel=1e-12)
    assert patient.all_lesions.total_mtv_41pct_ml == pytest.approx(sum(m.mtv_41pct_ml for m in lesions))
    assert patient.all_lesions.total_tlg_suv2p5 == pytest.approx(sum(m.tlg_suv2p5 for m in lesions))
    assert (patient.all_lesions.hottest_suvmax, patient.all_lesions.hottest_suvmax_lesion_id) == (9.0, "N2")
    assert patient.all_lesions.hottest_suvpeak_lesion_id == "N2"
    nodes = patient.by_organ["lymph_node"]
    assert nodes.lesion_count == 2
    assert nodes.dmax_mm == pytest.approx(math.hypot(40.0, 30.0), abs=1e-9)  # N1 to N2: 50 mm
    assert patient.by_organ["liver"].dmax_mm == 0.0
    assert set(patient.by_organ) == {"liver", "lymph_node"}
    row = patient.as_row()
    assert row["bone_lesion_count"] == 0 and row["bone_dmax_mm"] is None
    assert row["lymph_node_lesion_count"] == 2


def test_patient_metrics_without_body_size_or_lesions() -> None:
    suv, labels, specs = two_lesions()
    lesions = pet.lesion_metrics(suv, labels, specs)
    assert pet.patient_metrics(lesions, weight_kg=None, height_m=1.75).sdmax_per_m is None
    empty = pet.patient_metrics([], weight_kg=70.0, height_m=1.75)
    assert (empty.all_lesions.lesion_count, empty.all_lesions.dmax_mm, empty.sdmax_per_m) == (0, None, None)
    with pytest.raises(SuvError, match=r"height in metres .*Found: 70.0 kg, 175.0 m; correct .*PatientSize"):
        pet.patient_metrics(lesions, weight_kg=70.0, height_m=175.0)
    with pytest.raises(LesionTableError, match="lesion ids must be unique"):
        pet.patient_metrics([lesions[0], lesions[0]], weight_kg=None, height_m=None)


def test_errors_name_the_lesion_and_the_grid() -> None:
    suv, labels, specs = two_lesions()
    with pytest.raises(FeatureExtractionError, match="lesion X9: label 9 has no voxel"):
        pet.lesion_metrics(suv, labels, [LesionSpec("X9", "pet", 9, "other")])
    with pytest.raises(SegmentationError, match="declared on ct, not pet"):
        pet.lesion_metrics(suv, labels, [LesionSpec("C1", "ct", 1, "other")])
    shifted = sitk.Image(labels)
    shifted.SetOrigin((-54.0, -55.0, 0.0))
    with pytest.raises(SegmentationError, match="origin"):
        pet.lesion_metrics(suv, shifted, specs)
    with pytest.raises(SegmentationError, match="import the mask on the PET grid"):
        pet.lesion_metrics(suv, labels[:, :, :10], specs)
