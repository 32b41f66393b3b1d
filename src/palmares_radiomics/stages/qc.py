"""The QC pictures the features stage draws: every lesion before and after IBSI resampling, and the PET MIP."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..files import atomic_path

log = logging.getLogger(__name__)



#: A lesion whose volume changes by more than this percentage (either way) through IBSI resampling is flagged in
#: the QC report: a thin or small lesion on thick slices gains or loses partial-volume voxels at the 0.5 mask
#: threshold, and its shape and texture features then describe the new grid more than the lesion.
VOLUME_CHANGE_FLAG_PCT = 10.0
#: Files a features job writes in its QC folder (and removes there before drawing, so none is left from an
#: earlier run with more lesions); the last pattern is a temporary file left by a killed job.
QC_FILE_PATTERNS = ("lesion_*_original.png", "lesion_*_resampled.png", "mip.png", ".*.png.*.tmp")
QC_MIP = "mip.png"


def clear_qc_pictures(qc_dir: Path) -> None:
    """Remove the QC pictures (``QC_FILE_PATTERNS``) an earlier run of the job left in ``qc_dir``."""
    if not qc_dir.is_dir():
        return
    for pattern in QC_FILE_PATTERNS:
        for path in qc_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def _spacing_text(image: sitk.Image) -> str:
    """Voxel spacing as ``0.98×0.98×2.5 mm`` (x, y, z)."""
    return "\u00d7".join(f"{s:.2f}".rstrip("0").rstrip(".") for s in image.GetSpacing()) + " mm"


def _volume_ml(voxels: int, image: sitk.Image) -> float:
    return voxels * float(np.prod(image.GetSpacing())) / 1000.0


def _label_voxels(label_map: sitk.Image) -> dict[int, int]:
    """Voxel count of every non-zero label of ``label_map``."""
    labels = sitk.GetArrayViewFromImage(label_map)
    values, counts = np.unique(labels[labels != 0], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _draw(what: str, lesion_id: str, draw) -> str:
    """Call ``draw()``; return "" or, when it raised, the QC error text (the traceback goes to the job log).

    A picture that cannot be drawn never fails the stage; an infrastructure failure (disk full, no permission,
    out of memory: :func:`~palmares_radiomics.errors.is_infrastructure_failure`) is re-raised, as ``guarded``
    re-raises it, so the job fails and runs again once the machine is fixed.
    """
    from ..errors import is_infrastructure_failure

    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - a QC picture must not fail the features
        if is_infrastructure_failure(exc):
            raise
        log.error("QC picture %s of lesion %s could not be drawn:\n%s", what, lesion_id, traceback.format_exc())
        return f"preview failed: {type(exc).__name__}"
    return ""


def draw_qc_pictures(image: sitk.Image, label_map: sitk.Image, results: Sequence[Any], modality: str,
                     params_path: Path, settings: Mapping[str, Any], qc_dir: Path) -> dict[str, Any]:
    """Draw the QC pictures of one patient and modality into ``qc_dir`` and return ``details["qc"]``.

    Per lesion (``results``: ``features.LesionFeatures`` with their resampled crops): ``lesion_<label>_original.png``
    (the image stage's volume and the mask) and ``lesion_<label>_resampled.png`` (the crop on the IBSI grid the
    features were computed on, ``""`` when resampling failed); PET: ``mip.png`` with every lesion marked. Each
    lesion's entry gives its volume before and after resampling, the change (``volume_flag`` beyond
    ``VOLUME_CHANGE_FLAG_PCT``), ``small`` (fewer than ``masks.MIN_LESION_VOXELS`` voxels, or below
    ``minimumROISize`` after resampling) and ``error`` (why a picture is missing; "" when none is). ``suvmax`` and
    ``suvpeak`` are None here and filled from the PET metrics by the caller.
    """
    from .. import preview
    from ..masks import MIN_LESION_VOXELS

    display = preview.display_range(params_path, modality)
    counts = _label_voxels(label_map)
    minimum = settings.get("minimumROISize")
    scan: list[Any] = []
    scan_error = _draw("scan", "(all)", lambda: scan.append(preview.PreviewScan.of(image, label_map)))
    original_grid = f"original grid {_spacing_text(image)}"
    entries = []
    for result in results:
        lesion = result.lesion
        name = f"{modality.upper()} lesion {lesion.lesion_id}, {lesion.organ}"
        voxels = counts.get(lesion.label, 0)
        volume = _volume_ml(voxels, image)
        errors = []
        original = f"lesion_{lesion.label}_original.png"

        def draw_original(out: Path = qc_dir / original, label: int = lesion.label, title: str = name) -> None:
            with atomic_path(out, suffix=".tmp") as tmp:
                scan[0].lesion_preview(label, modality, tmp, display=display, title=f"{title}, {original_grid}")

        error = scan_error or _draw("original", lesion.lesion_id, draw_original)
        if error:
            errors.append(f"original: {error}")
            original = ""
        resampled, volume_r, voxels_r = "", None, None
        if result.resampled is None:
            errors.append(f"resampled: {result.error or 'not resampled'}")
        else:
            image_r, mask_r = result.resampled
            voxels_r = int(sitk.GetArrayViewFromImage(mask_r).sum())
            volume_r = _volume_ml(voxels_r, image_r)
            resampled = f"lesion_{lesion.label}_resampled.png"
            grid = f"resampled {_spacing_text(image_r)}" if tuple(image_r.GetSpacing()) != tuple(image.GetSpacing()) \
                else f"cropped, not resampled {_spacing_text(image_r)}"

            def draw_resampled(out: Path = qc_dir / resampled, image_r: sitk.Image = image_r, mask_r: sitk.Image = mask_r,
                               title: str = f"{name}, {grid}") -> None:
                with atomic_path(out, suffix=".tmp") as tmp:
                    preview.lesion_preview(image_r, mask_r, 1, modality, tmp, display=display, title=title)

            error = _draw("resampled", lesion.lesion_id, draw_resampled)
            if error:
                errors.append(f"resampled: {error}")
                resampled = ""
        change = 100.0 * (volume_r - volume) / volume if volume_r is not None and volume > 0 else None
        entries.append({
            "lesion_id": lesion.lesion_id, "label": lesion.label, "organ": lesion.organ, "voxels": voxels,
            "volume_ml": round(volume, 6),
            "volume_ml_resampled": round(volume_r, 6) if volume_r is not None else None,
            "volume_change_pct": round(change, 2) if change is not None else None,
            "volume_flag": change is not None and abs(change) > VOLUME_CHANGE_FLAG_PCT,
            "small": voxels < MIN_LESION_VOXELS or (voxels_r is not None and minimum is not None
                                                     and voxels_r < int(minimum)),
            "suvmax": None, "suvpeak": None,
            "original": original, "resampled": resampled, "error": "; ".join(errors)})
    mip = ""
    if modality == "pet":
        marked = {r.lesion.label: r.lesion.lesion_id for r in results if counts.get(r.lesion.label, 0)}

        def draw_mip() -> None:
            with atomic_path(qc_dir / QC_MIP, suffix=".tmp") as tmp:
                preview.mip_preview(image, label_map, marked, tmp, display=display,
                                    title=f"PET, {len(marked)} lesion{'s' if len(marked) != 1 else ''} marked")

        if not _draw("mip", "(all)", draw_mip):
            mip = QC_MIP
    return {"dir": str(qc_dir), "mip": mip, "lesions": entries}
