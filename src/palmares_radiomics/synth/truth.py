"""The truth: CT (HU) and PET (SUVbw) volumes rendered from the plan, the SUVbw scale, and the truth tables.

- **Values.** Tissues: air -1000 HU / SUV 0, soft tissue 40 HU / SUV 1.0, lung -850 HU / SUV 0.4,
  liver 60 HU / SUV 2.0, spine 700 HU / SUV 1.5. Lesions are spheres (hard edges, no partial volume)
  with the HU of ``LESION_CT_HU`` and a seeded SUVbw in ``LESION_SUV_RANGE``. Noise: additive Gaussian,
  SD ``CT_NOISE_SD_HU`` = 8 HU on CT, multiplicative Gaussian, SD ``PET_NOISE_REL_SD`` = 5 % of the
  local SUV on PET, so a lesion's mean stays at its truth value.
- **PET units.** Bq/ml decay-corrected to series start (DecayCorrection START):
  activity = SUVbw x dose x 2^(-(series time - injection time) / T1/2) / weight_g, stored as uint16
  with a per-slice RescaleSlope (the DS string written is the one used, so stored x slope is exact).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import numpy as np

from .clinical import _iso
from .masks import _lesion_mask, segmentation_time
from .plan import (
    CT_NOISE_SD_HU,
    F18_HALF_LIFE_S,
    PET_NOISE_REL_SD,
    TISSUES,
    Anatomy,
    Clinical,
    Grid,
    Lesion,
    Patient,
    _anatomy,
    _ellipse,
)


# ----------------------------------------------------------------------------------------------- SUV and images


def decayed_dose_bq(patient: Patient, series_start: dt.datetime) -> float:
    """Injected F-18 dose decayed from injection to ``series_start``: D x 2^(-t / 6586.2 s)."""
    elapsed = (series_start - patient.injection).total_seconds()
    return patient.dose_bq * 2.0 ** (-elapsed / F18_HALF_LIFE_S)


def suvbw_scale(patient: Patient, series_start: dt.datetime) -> float:
    """SUVbw per Bq/ml (g/ml): weight_g / decayed dose, for an image decay-corrected to series start."""
    return patient.weight_kg * 1000.0 / decayed_dose_bq(patient, series_start)


def _tissue_map(grid: Grid, anatomy: Anatomy) -> np.ndarray:
    """Tissue class per voxel (index into TISSUES, shape (S, R, C)): body, lungs, liver and spine."""
    z, y, x = grid.mesh()
    names = list(TISSUES)
    out = np.zeros(grid.shape_zyx, dtype=np.uint8)
    a = anatomy
    body = np.broadcast_to(_ellipse(x, y, a.cx, a.cy, a.body_ax, a.body_ay), grid.shape_zyx)
    out[body] = names.index("soft")
    thorax = z >= a.z_mid
    lungs = (_ellipse(x, y, a.cx - a.lung_dx, a.lung_cy, a.lung_ax, a.lung_ay)
             | _ellipse(x, y, a.cx + a.lung_dx, a.lung_cy, a.lung_ax, a.lung_ay)) & thorax
    out[np.broadcast_to(lungs, grid.shape_zyx)] = names.index("lung")
    liver = _ellipse(x, y, a.liver_cx, a.liver_cy, a.liver_a, a.liver_a) & ~thorax
    out[np.broadcast_to(liver, grid.shape_zyx)] = names.index("liver")
    spine = _ellipse(x, y, a.cx, a.spine_cy, a.spine_r, a.spine_r) & np.ones_like(z, dtype=bool)
    out[np.broadcast_to(spine, grid.shape_zyx)] = names.index("bone")
    return out


def _truth_volume(grid: Grid, lesions: Iterable[Lesion], column: int, lesion_value: str) -> np.ndarray:
    """Noise-free tissue values (column 0 = HU, 1 = SUV) with lesions painted over (``lesion_value`` attribute)."""
    values = np.array([v[column] for v in TISSUES.values()])
    volume = values[_tissue_map(grid, _anatomy(grid))]
    for lesion in lesions:
        volume[_lesion_mask(grid, lesion)] = getattr(lesion, lesion_value)
    return volume


def ct_hu_volume(grid: Grid, lesions: Sequence[Lesion], rng: np.random.Generator) -> np.ndarray:
    """CT in HU with additive Gaussian noise (SD CT_NOISE_SD_HU), shape (S, R, C)."""
    return _truth_volume(grid, lesions, 0, "ct_hu") + rng.normal(0.0, CT_NOISE_SD_HU, grid.shape_zyx)


def pet_suv_volume(grid: Grid, lesions: Sequence[Lesion], rng: np.random.Generator) -> np.ndarray:
    """PET in SUVbw with multiplicative Gaussian noise (SD PET_NOISE_REL_SD of the local SUV), never negative."""
    suv = _truth_volume(grid, lesions, 1, "suvbw")
    return np.clip(suv * (1.0 + rng.normal(0.0, PET_NOISE_REL_SD, grid.shape_zyx)), 0.0, None)


def _nac_factor(grid: Grid) -> np.ndarray:
    """Smooth in-plane factor mimicking missing attenuation correction (deep tissue darker), shape (1, R, C)."""
    _, y, x = grid.mesh()
    half = max(grid.cols, grid.rows) * grid.pixel_mm / 2.0
    return 0.3 + 0.5 * np.clip((x ** 2 + y ** 2) / half ** 2, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- truth tables


def outcomes(clinical: Clinical) -> dict[str, int]:
    """OS and PFS from the clinical dates (days from CDK4/6i start; event 1 = death, or progression/death)."""
    os_end = clinical.death_date or clinical.last_followup_date
    events = [d for d in (clinical.progression_date, clinical.death_date) if d is not None]
    pfs_end = min(events) if events else clinical.last_followup_date
    return {"os_days": (os_end - clinical.start_date).days, "os_event": int(clinical.death_date is not None),
            "pfs_days": (pfs_end - clinical.start_date).days, "pfs_event": int(bool(events))}


def _truth_patient_row(patient: Patient) -> dict[str, object]:
    """One row of truth/patients.csv: baseline UIDs, dates, SUV inputs and scale, outcomes."""
    ct, pet = patient.series_by_role("ct"), patient.series_by_role("pet")
    nac, old = patient.series_by_role("pet_nac"), patient.series_by_role("ct_old")
    assert ct is not None and pet is not None
    session = patient.studies["session"]
    old_study = patient.studies.get("old")
    return {"site": patient.site.code, "patient_id": patient.patient_id, "patient_name": patient.patient_name,
            "birth_date": _iso(patient.birth_date), "cdk46i_start_date": _iso(patient.clinical.start_date),
            "segmentation_format": patient.segmentation_format,
            "segmentation_date": _iso(segmentation_time(patient).date()), "study_uid": session.study_uid,
            "frame_of_reference_uid": ct.frame_uid, "study_date": _iso(session.start.date()),
            "ct_series_uid": ct.series_uid, "ct_series_time": ct.start.isoformat(),
            "pet_series_uid": pet.series_uid, "pet_series_time": pet.start.isoformat(),
            "pet_nac_series_uid": nac.series_uid if nac else "",
            "old_ct_study_uid": old_study.study_uid if old_study else "",
            "old_ct_series_uid": old.series_uid if old else "",
            "old_ct_study_date": _iso(old_study.start.date()) if old_study else "",
            "weight_kg": patient.weight_kg, "height_m": patient.height_m, "dose_bq": int(patient.dose_bq),
            "injection_datetime": patient.injection.isoformat(),
            "uptake_s": int((pet.start - patient.injection).total_seconds()),
            "suvbw_scale_g_per_ml": f"{suvbw_scale(patient, pet.start):.9g}",
            "n_lesions": len(patient.lesions), **outcomes(patient.clinical)}


def _truth_lesion_rows(patient: Patient) -> list[dict[str, object]]:
    """Rows of truth/lesions.csv: one per lesion per modality; volume_ml is the voxelised volume on that grid."""
    rows = []
    for modality, role in (("ct", "ct"), ("pet", "pet")):
        spec = patient.series_by_role(role)
        assert spec is not None
        for lesion in patient.lesions:
            n = int(_lesion_mask(spec.grid, lesion).sum())
            rows.append({"site": patient.site.code, "patient_id": patient.patient_id, "modality": modality,
                         "lesion_id": lesion.lesion_id, "organ": lesion.organ, "label": lesion.label,
                         "roi_name": lesion.roi_name, "volume_ml": f"{n * spec.grid.voxel_ml:.4f}", "n_voxels": n,
                         "ct_hu": lesion.ct_hu, "suvbw": lesion.suvbw, "center_mm_x": lesion.center_mm[0],
                         "center_mm_y": lesion.center_mm[1], "center_mm_z": lesion.center_mm[2],
                         "radius_mm": lesion.radius_mm})
    return rows
