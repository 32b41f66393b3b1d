"""PET lesion and patient metrics oncologists use: SUVmax/mean/peak, MTV, TLG, lesion count, Dmax.

Input is an SUVbw image (:func:`palmares_radiomics.suv.to_suvbw`) and a label map on the same
grid (one label per lesion, :class:`~palmares_radiomics.records.LesionSpec`). Values are computed
on the grid given (the caller decides whether that is the original or the resampled IBSI grid).

Definitions (per lesion, over the voxels of its label)
- SUVmax: maximum SUVbw. SUVmean: mean SUVbw over the whole lesion mask.
- SUVpeak: IBSI "local intensity peak" (IBSI 1, feature VJGA): the mean SUVbw of all image voxels
  whose centres lie within a sphere of 1 cm^3 (radius r = (3 / (4 pi))^(1/3) cm = 6.2035 mm) centred
  on the maximum-SUV voxel of the lesion; the sphere is not restricted to the lesion. When several
  voxels share the maximum, the highest of their peaks is reported (IBSI).
- MTV: metabolic tumour volume in ml, two definitions reported and labelled: voxels of the lesion
  with SUVbw >= 2.5 (``_suv2p5``), and with SUVbw >= 41 % of the lesion's SUVmax (``_41pct``;
  EANM procedure guidelines for tumour PET imaging v2.0, Boellaard et al. 2015).
- TLG: total lesion glycolysis = MTV [ml] x SUVmean of the MTV region [g/ml], per MTV definition
  (Larson et al. 1999).
- Centroid: mean physical position (mm) of the lesion's voxel centres.

Per patient (and per organ site): lesion count, total MTV and TLG (sum over lesions, both
definitions), hottest lesion SUVmax and SUVpeak (the largest over lesions, with the lesion id),
Dmax = the largest distance between two lesion centroids in mm (0 for a single lesion; Cottereau et
al., J Nucl Med 2020;61:40-45) and, where weight and height exist, SDmax = Dmax [m] / BSA [m^2]
(m^-1; Cottereau et al., Clin Cancer Res 2021;27:1279-86), with BSA after Du Bois.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import SimpleITK as sitk

from .families.local_intensity import SPHERE_RADIUS_MM
from .errors import FeatureExtractionError, LesionTableError, SegmentationError, SuvError
from .records import ORGANS, LesionSpec
from .bodysize import bsa_du_bois_m2

__all__ = [
    "MTV_ABSOLUTE_SUV",
    "MTV_RELATIVE_FRACTION",
    "PEAK_RADIUS_MM",
    "LesionPetMetrics",
    "OrganPetMetrics",
    "PatientPetMetrics",
    "lesion_metrics",
    "patient_metrics",
]

#: Radius of the 1 cm^3 sphere of the IBSI local intensity peak, in mm: (3 / (4 pi))^(1/3) x 10.
PEAK_RADIUS_MM = SPHERE_RADIUS_MM  # the 1 cm^3 sphere of IBSI's local intensity family (families/local_intensity.py)
#: Absolute MTV threshold (SUVbw, g/ml).
MTV_ABSOLUTE_SUV = 2.5
#: Relative MTV threshold, fraction of the lesion SUVmax (EANM v2.0: 41 %).
MTV_RELATIVE_FRACTION = 0.41
#: Geometry agreement asked of the label map and the SUV image: relative spacing and direction cosines ...
_GRID_TOLERANCE = 1e-3
#: ... and origin, in voxels (the mask module's tolerance; a half-voxel shift is a different grid).
_ORIGIN_TOLERANCE_VOXELS = 0.1


@dataclass(frozen=True, slots=True)
class LesionPetMetrics:
    """PET metrics of one lesion (SUV in g/ml, volumes in ml, TLG in g, centroid in mm, LPS)."""

    lesion_id: str
    organ: str
    label: int
    n_voxels: int
    volume_ml: float
    suvmax: float
    suvmean: float
    suvpeak: float
    mtv_suv2p5_ml: float
    suvmean_suv2p5: float | None
    tlg_suv2p5: float
    mtv_41pct_ml: float
    suvmean_41pct: float
    tlg_41pct: float
    threshold_41pct_suv: float
    centroid_mm: tuple[float, float, float]

    def as_row(self) -> dict[str, Any]:
        """Flat dict for the lesion table (centroid split into x/y/z columns)."""
        row = asdict(self)
        x, y, z = row.pop("centroid_mm")
        row.update(centroid_mm_x=x, centroid_mm_y=y, centroid_mm_z=z)
        return row


@dataclass(frozen=True, slots=True)
class OrganPetMetrics:
    """Aggregate over the lesions of one group (one organ site, or all lesions of a patient)."""

    lesion_count: int
    total_mtv_suv2p5_ml: float
    total_tlg_suv2p5: float
    total_mtv_41pct_ml: float
    total_tlg_41pct: float
    hottest_suvmax: float | None
    hottest_suvmax_lesion_id: str | None
    hottest_suvpeak: float | None
    hottest_suvpeak_lesion_id: str | None
    dmax_mm: float | None

    def as_row(self, prefix: str = "") -> dict[str, Any]:
        """Flat dict, keys prefixed (e.g. ``liver_``) for the wide patient table."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class PatientPetMetrics:
    """Per-patient PET metrics: all lesions, plus ``by_organ`` (only organs with lesions)."""

    all_lesions: OrganPetMetrics
    bsa_m2: float | None
    sdmax_per_m: float | None
    by_organ: Mapping[str, OrganPetMetrics]

    def as_row(self) -> dict[str, Any]:
        """Flat dict for the patient table: all-lesion columns, BSA/SDmax, then ``<organ>_*`` columns for every organ."""
        row = self.all_lesions.as_row()
        row.update(bsa_m2=self.bsa_m2, sdmax_per_m=self.sdmax_per_m)
        for organ in ORGANS:
            group = self.by_organ.get(organ) or _aggregate([])
            row.update(group.as_row(f"{organ}_"))
        return row


# --------------------------------------------------------------------------- lesions


def _check_grid(suv: sitk.Image, labels: sitk.Image) -> None:
    if suv.GetDimension() != 3 or labels.GetDimension() != 3:
        raise SegmentationError("PET metrics need a 3-D SUV image and a 3-D label map")
    if suv.GetSize() != labels.GetSize():
        raise SegmentationError(
            f"the label map has size {labels.GetSize()}, the SUV image {suv.GetSize()}: import the mask on the PET grid"
        )
    spacing = np.asarray(suv.GetSpacing())
    if not np.allclose(spacing, labels.GetSpacing(), rtol=_GRID_TOLERANCE, atol=0):
        raise SegmentationError(
            f"the label map spacing {labels.GetSpacing()} differs from the SUV image spacing {suv.GetSpacing()}"
        )
    if not np.allclose(suv.GetDirection(), labels.GetDirection(), atol=_GRID_TOLERANCE):
        raise SegmentationError("the label map and the SUV image have different orientations")
    shift = np.abs(np.asarray(suv.GetOrigin()) - labels.GetOrigin())
    if np.any(shift > _ORIGIN_TOLERANCE_VOXELS * spacing.min()):
        raise SegmentationError(
            f"the label map origin {labels.GetOrigin()} differs from the SUV image origin {suv.GetOrigin()}"
        )


def _sphere_offsets(spacing_xyz: Sequence[float], direction: Sequence[float], radius_mm: float) -> np.ndarray:
    """Index offsets (z, y, x) of the voxel centres within ``radius_mm`` of a voxel centre (any orientation)."""
    sx, sy, sz = spacing_xyz
    reach = [int(math.floor(radius_mm / s)) for s in (sz, sy, sx)]
    dz, dy, dx = np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")
    offsets = np.stack([dz.ravel(), dy.ravel(), dx.ravel()], axis=1)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    steps = offsets[:, ::-1] * np.asarray([sx, sy, sz])  # (x, y, z) steps in mm along the image axes
    physical = steps @ d.T
    inside = np.einsum("ij,ij->i", physical, physical) <= radius_mm**2 * (1 + 1e-12)
    return offsets[inside]


def _peak(values: np.ndarray, centre: np.ndarray, offsets: np.ndarray) -> float:
    """Mean of the image voxels at ``centre + offsets`` that fall inside the image."""
    points = offsets + centre
    ok = np.all((points >= 0) & (points < np.asarray(values.shape)), axis=1)
    p = points[ok]
    return float(values[p[:, 0], p[:, 1], p[:, 2]].mean())


def lesion_metrics(suv: sitk.Image, labels: sitk.Image, lesions: Sequence[LesionSpec]) -> list[LesionPetMetrics]:
    """SUVmax, SUVmean, SUVpeak (IBSI VJGA), MTV (>= 2.5 and >= 41 % SUVmax), TLG and centroid per lesion.

    ``suv`` is SUVbw (g/ml); ``labels`` an integer label map on exactly the same grid. Formulas and
    references: module docstring. Raises :class:`SegmentationError` for a grid mismatch or a
    non-PET lesion, :class:`FeatureExtractionError` for a lesion whose label has no voxel.
    """
    _check_grid(suv, labels)
    values = sitk.GetArrayFromImage(suv).astype(np.float64, copy=False)
    label_array = sitk.GetArrayViewFromImage(labels)
    spacing = suv.GetSpacing()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    offsets = _sphere_offsets(spacing, suv.GetDirection(), PEAK_RADIUS_MM)
    out = []
    for lesion in lesions:
        if lesion.modality != "pet":
            raise SegmentationError(
                f"lesion {lesion.lesion_id} is declared on {lesion.modality}, not pet: PET metrics need the PET mask"
            )
        where = np.argwhere(label_array == lesion.label)
        if where.size == 0:
            raise FeatureExtractionError(
                f"lesion {lesion.lesion_id}: label {lesion.label} has no voxel in the PET label map"
            )
        v = values[where[:, 0], where[:, 1], where[:, 2]]
        suvmax = float(v.max())
        peak = max(_peak(values, centre, offsets) for centre in where[v == suvmax])
        abs_region = v >= MTV_ABSOLUTE_SUV
        threshold = MTV_RELATIVE_FRACTION * suvmax
        rel_region = v >= threshold
        mtv_abs = float(abs_region.sum()) * voxel_ml
        mtv_rel = float(rel_region.sum()) * voxel_ml
        mean_abs = float(v[abs_region].mean()) if abs_region.any() else None
        mean_rel = float(v[rel_region].mean())
        centre_index = where.mean(axis=0)[::-1]  # (x, y, z) continuous index
        centroid = suv.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre_index])
        out.append(
            LesionPetMetrics(
                lesion_id=lesion.lesion_id,
                organ=lesion.organ,
                label=lesion.label,
                n_voxels=int(v.size),
                volume_ml=float(v.size) * voxel_ml,
                suvmax=suvmax,
                suvmean=float(v.mean()),
                suvpeak=peak,
                mtv_suv2p5_ml=mtv_abs,
                suvmean_suv2p5=mean_abs,
                tlg_suv2p5=mtv_abs * mean_abs if mean_abs is not None else 0.0,
                mtv_41pct_ml=mtv_rel,
                suvmean_41pct=mean_rel,
                tlg_41pct=mtv_rel * mean_rel,
                threshold_41pct_suv=threshold,
                centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
            )
        )
    return out


# --------------------------------------------------------------------------- patients


def _dmax(metrics: Sequence[LesionPetMetrics]) -> float | None:
    """Largest distance between two lesion centroids (mm); 0 for one lesion, None for none."""
    if not metrics:
        return None
    points = np.asarray([m.centroid_mm for m in metrics])
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(axis=-1)).max())


def _aggregate(metrics: Sequence[LesionPetMetrics]) -> OrganPetMetrics:
    hottest = max(metrics, key=lambda m: m.suvmax, default=None)
    peakiest = max(metrics, key=lambda m: m.suvpeak, default=None)
    return OrganPetMetrics(
        lesion_count=len(metrics),
        total_mtv_suv2p5_ml=float(sum(m.mtv_suv2p5_ml for m in metrics)),
        total_tlg_suv2p5=float(sum(m.tlg_suv2p5 for m in metrics)),
        total_mtv_41pct_ml=float(sum(m.mtv_41pct_ml for m in metrics)),
        total_tlg_41pct=float(sum(m.tlg_41pct for m in metrics)),
        hottest_suvmax=hottest.suvmax if hottest else None,
        hottest_suvmax_lesion_id=hottest.lesion_id if hottest else None,
        hottest_suvpeak=peakiest.suvpeak if peakiest else None,
        hottest_suvpeak_lesion_id=peakiest.lesion_id if peakiest else None,
        dmax_mm=_dmax(metrics),
    )


def patient_metrics(
    metrics: Sequence[LesionPetMetrics], weight_kg: float | None, height_m: float | None
) -> PatientPetMetrics:
    """Aggregate lesion metrics per patient and per organ site; SDmax = Dmax[m] / BSA[m^2] when weight and height exist.

    BSA after Du Bois (0.007184 W^0.425 Hcm^0.725). Raises :class:`LesionTableError` for a lesion id given
    twice, and :class:`SuvError` for a non-positive weight or height, or a height that is not in metres (both
    come from the PET header: PatientWeight, PatientSize).
    """
    ids = [m.lesion_id for m in metrics]
    if len(set(ids)) != len(ids):
        raise LesionTableError(f"lesion ids must be unique within a patient. Found: {sorted(ids)}; correct the "
                               "lesion table")
    bsa = None
    if weight_kg is not None and height_m is not None:
        if not weight_kg > 0 or not 0.3 <= height_m <= 2.75:
            raise SuvError(
                f"weight must be > 0 kg and height in metres (0.3-2.75) for Dmax/BSA (SDmax). Found: {weight_kg} kg, "
                f"{height_m} m; correct PatientWeight (0010,1030) / PatientSize (0010,1020) in the PET header"
            )
        bsa = bsa_du_bois_m2(weight_kg, height_m)
    overall = _aggregate(metrics)
    by_organ = {
        organ: _aggregate([m for m in metrics if m.organ == organ])
        for organ in ORGANS
        if any(m.organ == organ for m in metrics)
    }
    sdmax = overall.dmax_mm / 1000.0 / bsa if bsa is not None and overall.dmax_mm is not None else None
    return PatientPetMetrics(all_lesions=overall, bsa_m2=bsa, sdmax_per_m=sdmax, by_organ=MappingProxyType(by_organ))
