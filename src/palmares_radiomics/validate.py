"""One validation of a segmentation against its image, with a stable code per problem.

``palmares check-segmentation``, the DAG's mask stage and the upload page all call
:func:`validate_segmentation`, so a segmentation accepted by one is accepted by the others. It runs the
import of :mod:`~palmares_radiomics.masks` (grid, references, structures, overlap: the first refusal
becomes a problem) and then the checks that need the whole label map: the study's minimum lesion volume,
lesions lying in air (outside the patient's body, or inside it once an axis is mirrored: a flipped
axis), and, for an RTSTRUCT, that the rasterised volume agrees with the contours' own volume.

Problem codes (``Problem.code``), errors first:

- ``unreadable_file``, ``not_a_segmentation``, ``inconsistent_file``: the file itself;
- ``wrong_frame_of_reference``, ``wrong_series``: a SEG/RTSTRUCT drawn on other images (by DICOM reference);
- ``grid_size``, ``grid_spacing``, ``grid_shift``, ``grid_rotation``, ``flipped_axis``, ``mask_2d``: a label
  map (or SEG frames) off the image grid; ``flipped_axis`` also for a lesion that lies in air but would lie
  in the body once mirrored along one axis;
- ``non_integer_labels``, ``empty_mask``, ``empty_lesion``, ``lesion_not_found``, ``ambiguous_name``,
  ``lesion_table``, ``overlap``: labels, structures and the lesion table;
- ``outside_image``, ``between_slices``, ``not_parallel``, ``open_contour``: contours or frames that cannot
  be placed on the image's slices (never dropped silently);
- ``below_min_volume``: a lesion smaller than ``min_volume_ml``;
- ``outside_body``: a lesion mostly in air, whichever way it is mirrored;
- ``rasterisation_disagrees``: an RTSTRUCT ROI whose voxels and contours give different volumes.

Warnings (they do not block): ``small_lesion``, ``no_dicom_reference``, ``no_lesion_table``.

Messages never name files, UIDs or dates; ``series_hint`` (given by the page, never by the DAG) may.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import masks
from .errors import SegmentationError
from .records import LesionSpec

#: Smallest lesion volume accepted, in ml (config ``min_lesion_volume_ml``; 0 disables the check). RECIST 1.1's
#: smallest measurable lesion is 10 mm long: a sphere of 10 mm diameter holds 0.52 ml.
DEFAULT_MIN_LESION_VOLUME_ML = 0.5

#: Body region on CT: voxels above this many HU (air is -1000 HU, lung about -850 HU but filled as a hole
#: of its slice, fat -100 HU, so -500 HU separates the patient and the table from the air around them).
BODY_CT_HU = -500.0

#: Body region on PET: voxels above this fraction of the median of the positive voxels. The median is a
#: tissue level whatever the units (Bq/ml or SUV): on the synthetic cohort (air 0, soft tissue SUV 1.0, lung
#: 0.4, liver 2.0; 47 % of the voxels positive) it lies at soft-tissue level, so 0.2 of it (about SUV 0.2)
#: keeps lung and tissue and drops air; noise in the air only lowers the median, hence the threshold.
BODY_PET_FRACTION = 0.2

#: A lesion lies outside the body when more than this fraction of its voxels are in air.
OUTSIDE_BODY_FRACTION = 0.5

#: The body region is computed on every slice, in-plane on every n-th voxel so that a slice has at most
#: this many voxels along a side (a 512×512×300 CT: every 4th voxel, 128×128×300); the lesion's voxels are
#: looked up in it, so the check costs tens of milliseconds and is exact to a few mm at the body outline.
BODY_GRID_MAX = 128

#: RTSTRUCT cross-check: the rasterised volume (voxel count × voxel volume) and the polygon volume (contour
#: areas × slice spacing, a contour lying inside another of the slice counting as a hole) may differ by
#: voxel-centre sampling, at most half the perimeter × the in-plane pixel size × the slice spacing, and by
#: this fraction of the polygon volume besides. More means the rasteriser did not fill what the contours
#: enclose: overlapping contours on one slice (filled even-odd, the overlap becomes a hole) or a
#: self-intersecting (bow-tie) contour.
RASTER_RELATIVE_TOLERANCE = 0.2

_AXIS_WORDS = ("left–right", "anterior–posterior", "head–feet")


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of a segmentation: a stable code, what is wrong and what to do, in a radiologist's words."""

    code: str
    message: str
    fix: str

    def text(self) -> str:
        """The message followed by the fix: what failures.csv and the command line print."""
        return f"{self.message} {self.fix}" if self.fix else self.message


@dataclass(frozen=True, slots=True)
class Validation:
    """Outcome of :func:`validate_segmentation`: ``ok`` when there is no problem (warnings do not block).

    ``kind`` is the mask format (``masks.KIND_*``, "" when unrecognised); ``lesions`` one summary per lesion
    and ``label_map`` the UInt16 label map on the image grid, both only when the import succeeded; ``ignored``
    describes the structures that are not lesions.
    """

    ok: bool
    kind: str
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    lesions: tuple[masks.LabelSummary, ...]
    ignored: tuple[str, ...]
    label_map: sitk.Image | None


def validate_segmentation(mask_path: Path, image: sitk.Image, lesions: Sequence[LesionSpec] | None = None, *,
                          modality: str = "ct", reference: masks.ImageReference | None = None,
                          tolerance_mm: float | None = None,
                          min_volume_ml: float = DEFAULT_MIN_LESION_VOLUME_ML,
                          roi: Sequence[str] | None = None, series_hint: str = "") -> Validation:
    """Validate a segmentation against its image (CT in HU or PET in SUV, ``modality`` "ct"/"pet").

    ``lesions`` (the patient's lesion table for this modality) chooses the lesions, ``roi`` narrows them
    (values 1..n in the given order), ``reference`` (:func:`masks.image_reference`) checks a SEG/RTSTRUCT's
    series, ``tolerance_mm`` replaces the grid tolerance, ``min_volume_ml`` is the smallest lesion accepted
    (0: any). ``series_hint`` names the series to export from in the fixes (no dates in the DAG's logs: it
    passes ""). A tolerance of half a voxel or more is a ConfigError; errors reading the image propagate.
    """
    if modality not in ("ct", "pet"):
        raise ValueError(f"modality must be 'ct' or 'pet', not {modality!r}")
    return _validate(Path(mask_path), image, lesions, modality=modality, noun=modality.upper(),
                     reference=reference, tolerance_mm=tolerance_mm, min_volume_ml=min_volume_ml, roi=roi,
                     series_hint=series_hint)


def _validate(mask_path: Path, image: sitk.Image, lesions: Sequence[LesionSpec] | None, *, modality: str,
              noun: str, reference: masks.ImageReference | None, tolerance_mm: float | None,
              min_volume_ml: float, roi: Sequence[str] | None, series_hint: str) -> Validation:
    """:func:`validate_segmentation`, naming the image ``noun`` ("CT", "PET", or "image" for an unknown volume)."""
    if min_volume_ml < 0:
        raise ValueError(f"min_volume_ml must be 0 or more, not {min_volume_ml}")

    def problem(code: str, message: str, fix: str) -> Problem:
        return _worded(Problem(code, message, fix), noun, series_hint)

    warnings: list[Problem] = []
    if reference is None and masks._mask_kind(mask_path) != masks.KIND_LABEL_MAP:
        warnings.append(problem("no_dicom_reference", "The image is a volume file, not a DICOM series: whether the "
                                "DICOM segmentation was drawn on this series could not be checked (only its geometry "
                                "was).", "Check it against the DICOM series to be sure."))
    if not lesions:
        warnings.append(problem("no_lesion_table", "Checked without a lesion table: every structure of the file was "
                                "taken as a lesion.", "Give the lesion table: the pipeline uses only the lesions it "
                                "lists."))
    try:
        imported = masks.import_segmentation(mask_path, image, lesions, list(roi) if roi is not None else None,
                                             reference=reference, tolerance_mm=tolerance_mm)
    except SegmentationError as exc:
        return Validation(False, masks._mask_kind(mask_path), (problem(exc.code, exc.message, exc.fix),),
                          tuple(warnings), (), (), None)
    for s in imported.lesions:
        if s.voxels < masks.MIN_LESION_VOXELS:
            warnings.append(problem("small_lesion", f"Label {s.label} ({_who(s)}) has only {s.voxels} voxels (< "
                                    f"{masks.MIN_LESION_VOXELS}): its shape and texture features will be "
                                    "unreliable.", "Check that the whole lesion was segmented."))
    problems = [problem(*p) for p in _volume_problems(imported, min_volume_ml)]
    problems += [problem(*p) for p in _body_problems(imported, image, modality, noun)]
    if imported.kind == masks.KIND_RTSTRUCT:
        problems += [problem(*p) for p in _rasterisation_problems(imported, image)]
    ok = not problems
    return Validation(ok, imported.kind, tuple(problems), tuple(warnings), imported.lesions, imported.ignored,
                      imported.label_map if ok else None)


def _worded(p: Problem, noun: str, series_hint: str) -> Problem:
    """``p`` with the image named as the ``noun`` and, given a ``series_hint``, the export hint naming it."""
    def word(text: str) -> str:
        return text.replace("the image", f"the {noun}").replace("this image", f"this {noun}")

    fix = word(p.fix)
    if series_hint:
        fix = fix.replace(masks.EXPORT_HINT, f"Re-export it from {series_hint}.")
    return Problem(p.code, word(p.message), fix)


def _who(s: masks.LabelSummary) -> str:
    return f"lesion {s.lesion_id}" if s.lesion_id else s.structure


def _lesion_words(s: masks.LabelSummary) -> str:
    """'Lesion L1 ('GTV_1' (ROI Number 20))' or, without a lesion table, 'Label 3'."""
    text = f"lesion {s.lesion_id} ({s.structure})" if s.lesion_id else s.structure
    return text[0].upper() + text[1:]


# ----------------------------------------------------------------------------------------------
# Minimum volume
# ----------------------------------------------------------------------------------------------


def _volume_problems(imported: masks.ImportedSegmentation, min_volume_ml: float) -> list[tuple[str, str, str]]:
    """A ``below_min_volume`` problem per lesion smaller than ``min_volume_ml`` (none when it is 0)."""
    out = []
    for s in imported.lesions:
        if min_volume_ml > 0 and s.volume_ml < min_volume_ml:
            out.append(("below_min_volume",
                        f"{_lesion_words(s)} is {s.volume_ml:.2f} ml ({s.voxels} voxels), smaller than the study's "
                        f"minimum lesion volume of {min_volume_ml:g} ml.",
                        "Redraw it to cover the whole lesion, or remove it from the lesion table if it is too small "
                        f"to measure (minimum {min_volume_ml:g} ml, the study's min_lesion_volume_ml)."))
    return out


# ----------------------------------------------------------------------------------------------
# Lesions in air: outside the body, or a flipped axis
# ----------------------------------------------------------------------------------------------


def body_region(image: sitk.Image, modality: str) -> tuple[np.ndarray, int]:
    """The patient's body on a coarse grid, and the in-plane step: a boolean (z, y/step, x/step) array.

    CT: voxels above :data:`BODY_CT_HU`; PET: above :data:`BODY_PET_FRACTION` of the median positive voxel.
    Air enclosed in a slice (lungs, bowel gas) is filled: only air connected to the slice's edge is outside.
    """
    nx, ny, _ = image.GetSize()
    step = max(1, -(-max(nx, ny) // BODY_GRID_MAX))
    coarse = sitk.GetArrayViewFromImage(image)[:, ::step, ::step]
    if modality == "pet":
        positive = coarse[coarse > 0]
        threshold = BODY_PET_FRACTION * float(np.median(positive)) if positive.size else 0.0
        body = coarse > threshold
    else:
        body = coarse > BODY_CT_HU
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    air, n = ndimage.label(~body, structure=in_plane)
    outside = np.zeros(n + 1, dtype=bool)
    edges = (air[:, 0, :], air[:, -1, :], air[:, :, 0], air[:, :, -1])
    outside[np.concatenate([edge.ravel() for edge in edges])] = True
    outside[0] = False
    return ~outside[air], step


def _body_problems(imported: masks.ImportedSegmentation, image: sitk.Image, modality: str,
                   noun: str) -> list[tuple[str, str, str]]:
    """``flipped_axis`` / ``outside_body`` per lesion with more than half its voxels in air.

    A lesion mirrored along one image axis (index i -> n-1-i) that then lies mostly in the body was
    probably saved with that axis flipped; otherwise it lies outside the body. Images without air around
    the body (phantoms, a field of view inside the patient) are never judged.
    """
    if not imported.lesions:
        return []
    body, step = body_region(image, modality)
    if body.all():
        return []
    labels = sitk.GetArrayViewFromImage(imported.label_map)
    boxes = ndimage.find_objects(labels, max_label=max(s.label for s in imported.lesions))
    size_zyx = np.array(labels.shape)[:, None]
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    out = []
    for s in imported.lesions:
        box = boxes[s.label - 1]
        if box is None:
            continue
        where = np.stack(np.nonzero(labels[box] == s.label)) + np.array([b.start for b in box])[:, None]
        outside = _air_fraction(body, step, where)
        if outside <= OUTSIDE_BODY_FRACTION:
            continue
        mirrored = {}
        for axis_zyx in range(3):
            flipped = where.copy()
            flipped[axis_zyx] = size_zyx[axis_zyx, 0] - 1 - flipped[axis_zyx]
            mirrored[axis_zyx] = _air_fraction(body, step, flipped)
        best = min(mirrored, key=mirrored.__getitem__)
        percent = f"{100 * outside:.0f} % of its voxels in air"
        if mirrored[best] <= OUTSIDE_BODY_FRACTION:
            words = _AXIS_WORDS[int(np.argmax(np.abs(direction[:, 2 - best])))]
            why = " (an LPS/RAS confusion in the NIfTI affine)" if imported.kind == masks.KIND_LABEL_MAP else ""
            out.append(("flipped_axis",
                        f"{_lesion_words(s)} lies outside the patient's body ({percent}); mirrored {words} it would "
                        f"lie inside: the mask was probably saved with its {words} axis flipped{why}.",
                        f"Re-export the mask with the image's orientation. {masks.EXPORT_HINT}"))
        else:
            out.append(("outside_body",
                        f"{_lesion_words(s)} lies outside the patient's body ({percent}), and would not lie inside "
                        "if mirrored along any axis: it was drawn on other images of the same size (another "
                        "series or patient), or in the air around the patient.",
                        f"Check the lesion on the image and redraw it. {masks.EXPORT_HINT}"))
    return out


def _air_fraction(body: np.ndarray, step: int, zyx: np.ndarray) -> float:
    """Fraction of the (z, y, x) voxel indices (3×N) that fall in air on the coarse body grid."""
    inside = body[zyx[0], np.minimum(zyx[1] // step, body.shape[1] - 1), np.minimum(zyx[2] // step, body.shape[2] - 1)]
    return 1.0 - float(inside.mean())


# ----------------------------------------------------------------------------------------------
# RTSTRUCT: rasterised volume against polygon volume
# ----------------------------------------------------------------------------------------------


def _shoelace(xy: np.ndarray) -> float:
    """Area (mm²) of a closed polygon given by its vertices (N×2, mm), by the shoelace formula."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _inside_or_on(points: np.ndarray, polygon: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """For each point (M×2), whether it lies inside ``polygon`` (N×2, even-odd rule) or within ``eps`` of an edge."""
    px, py = points[:, :1], points[:, 1:]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crosses = ((y0 > py) != (y1 > py)) & (px < (x1 - x0) * (py - y0) / (y1 - y0) + x0)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        near = np.hypot(px - (x0 + t * dx), py - (y0 + t * dy)) <= eps
    return (crosses.sum(axis=1) % 2 == 1) | near.any(axis=1)


def polygon_volume(polys: Sequence[np.ndarray], image: sitk.Image) -> tuple[float, float]:
    """(volume in mm³, total perimeter in mm) of one ROI's closed planar contours on ``image``'s slices.

    Each contour's area (shoelace, in the slice plane) counts once per slice spacing; a contour whose every
    vertex lies inside (or on) another contour of the same slice is a hole of it and is subtracted
    (nested deeper: added back), the rasteriser's even-odd rule for nested contours.
    """
    spacing = np.array(image.GetSpacing(), dtype=float)
    by_slice: dict[int, list[np.ndarray]] = {}
    for poly in polys:
        idx = masks.physical_to_continuous_index(image, poly)
        by_slice.setdefault(int(round(float(idx[:, 2].mean()))), []).append(idx[:, :2] * spacing[:2])
    area = perimeter = 0.0
    for contours in by_slice.values():
        for i, xy in enumerate(contours):
            depth = sum(bool(_inside_or_on(xy, other).all()) for j, other in enumerate(contours) if j != i)
            area += (-1) ** depth * _shoelace(xy)
            perimeter += float(np.hypot(*(np.roll(xy, -1, axis=0) - xy).T).sum())
    return area * spacing[2], perimeter


def _rasterisation_problems(imported: masks.ImportedSegmentation, image: sitk.Image) -> list[tuple[str, str, str]]:
    """``rasterisation_disagrees`` per lesion ROI whose voxel volume and polygon volume differ beyond sampling
    (the contours the import rasterised: the file is not read again)."""
    spacing = np.array(image.GetSpacing(), dtype=float)
    voxel_mm3 = float(np.prod(spacing))
    out = []
    for s, polys in zip(imported.lesions, imported.polygons, strict=True):
        polygon_mm3, perimeter = polygon_volume(polys, image)
        raster_mm3 = s.voxels * voxel_mm3
        allowed = RASTER_RELATIVE_TOLERANCE * abs(polygon_mm3) + 0.5 * perimeter * spacing[:2].max() * spacing[2]
        if abs(raster_mm3 - polygon_mm3) > allowed:
            out.append(("rasterisation_disagrees",
                        f"{_lesion_words(s)} fills {raster_mm3 / 1000:.2f} ml of voxels but its contours enclose "
                        f"{polygon_mm3 / 1000:.2f} ml: contours on one slice overlap (the overlap is read as a hole) "
                        "or a contour crosses itself.",
                        "Redraw the lesion with one non-self-intersecting contour per part on each slice and "
                        "re-export."))
    return out
