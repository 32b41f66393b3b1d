"""IBSI 1 diagnostic features: how the image and the ROI masks change along the pipeline's processing chain.

The IBSI reference manual (chapter 5, "Reference data sets", *Diagnostic features*) defines 60 values per CT
phantom configuration that check each image processing step, independently of any feature:

- *initial image* / *interpolated image*: image dimensions (voxels) and voxel dimensions (mm) along x, y, z, and the
  mean, minimum and maximum intensity of the **entire** image, before and after interpolation (with rounding, when
  the configuration rounds: the interpolated image is what the features read);
- *initial ROI* / *interpolated ROI* / *re-segmented ROI*: the dimensions of the ROI intensity mask (the grid it lies
  on, i.e. the whole image), the bounding-box dimensions of the intensity and the morphological masks, their voxel
  counts, and the mean, minimum and maximum intensity of the image voxels inside the intensity mask.

Before re-segmentation the intensity mask is the morphological mask; re-segmentation only shrinks the intensity mask.
Every value is computed with the pipeline's own code: :func:`resample.resample_lesion` (the centre-aligned IBSI grid,
the image interpolator, rounding, mask interpolation and partial-volume threshold, the extrapolation value) with a
margin that covers the whole image, :func:`resample.bounding_box`, and
:meth:`ibsi.Resegmentation.intensity_mask`, as :func:`features.compute_features` applies it. Dimensions are in
IBSI/SimpleITK order: x the columns, y the rows, z the slices.

This is a diagnostic, not part of the DAG: it resamples the whole image, which feature extraction never does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from .errors import FeatureExtractionError
from .features import ExtractionParams
from .resample import bounding_box, ibsi_grid, resample_lesion, whole_image_margin_mm

#: The IBSI diagnostic families (the ``family`` column of the reference values), one per processing step.
INITIAL_IMAGE = "diagnostics (initial image)"
INTERPOLATED_IMAGE = "diagnostics (interpolated image)"
INITIAL_ROI = "diagnostics (initial ROI)"
INTERPOLATED_ROI = "diagnostics (interpolated ROI)"
RESEGMENTED_ROI = "diagnostics (re-segmented ROI)"
AXES = ("x", "y", "z")

Diagnostics = dict[tuple[str, str], float]


def image_diagnostics(image: sitk.Image, family: str) -> Diagnostics:
    """Image and voxel dimensions (x, y, z) and mean, minimum and maximum intensity of the entire ``image``."""
    values = sitk.GetArrayViewFromImage(image)
    out: Diagnostics = {}
    for axis, size in zip(AXES, image.GetSize()):
        out[(family, f"Image dimension {axis}")] = float(size)
    for axis, spacing in zip(AXES, image.GetSpacing()):
        out[(family, f"Voxel dimension {axis}")] = float(spacing)
    out[(family, "Mean intensity")] = float(np.mean(values, dtype=np.float64))
    out[(family, "Minimum intensity")] = float(np.min(values))
    out[(family, "Maximum intensity")] = float(np.max(values))
    return out


def _box_dimensions(mask: np.ndarray) -> tuple[int, int, int]:
    """Bounding-box dimensions (x, y, z), in voxels, of a boolean (z, y, x) mask; (0, 0, 0) when it is empty."""
    box = bounding_box(sitk.GetImageFromArray(mask.astype(np.uint8)), 1)
    return (0, 0, 0) if box is None else box[1]


def roi_diagnostics(image: np.ndarray, morphological: np.ndarray, intensity: np.ndarray, family: str) -> Diagnostics:
    """Mask, bounding-box and voxel-count dimensions and ROI intensities of one ROI step.

    ``image`` is the (z, y, x) array the masks lie on; ``morphological`` and ``intensity`` are boolean masks of the
    same shape. Intensities are over the image voxels inside the intensity mask (NaN when it is empty).
    """
    out: Diagnostics = {}
    for axis, size in zip(AXES, intensity.shape[::-1]):
        out[(family, f"Int. mask dimension {axis}")] = float(size)
    for kind, mask in (("Int.", intensity), ("Morph.", morphological)):
        for axis, size in zip(AXES, _box_dimensions(mask)):
            out[(family, f"{kind} mask bounding box dimension {axis}")] = float(size)
    out[(family, "Int. mask voxel count")] = float(np.count_nonzero(intensity))
    out[(family, "Morph. mask voxel count")] = float(np.count_nonzero(morphological))
    inside = image[intensity]
    empty = inside.size == 0
    out[(family, "Int. mask mean intensity")] = math.nan if empty else float(np.mean(inside, dtype=np.float64))
    out[(family, "Int. mask minimum intensity")] = math.nan if empty else float(np.min(inside))
    out[(family, "Int. mask maximum intensity")] = math.nan if empty else float(np.max(inside))
    return out


def interpolate_whole(image: sitk.Image, label_map: sitk.Image, label: int,
                      params: ExtractionParams) -> tuple[sitk.Image, sitk.Image]:
    """The whole image and the lesion's 0/1 mask on the whole IBSI grid, by the pipeline's own resampling.

    :func:`resample.resample_lesion` with a margin covering the image, so every voxel is interpolated, rounded and
    thresholded exactly as for the features (which use only the lesion's neighbourhood of the same grid).
    """
    image_r, mask_r = resample_lesion(image, label_map, params.resampling, whole_image_margin_mm(image), label)
    spacing = params.resampling.spacing_mm if params.resampling else None
    expected: Sequence[int] = ibsi_grid(image, spacing).size
    if tuple(image_r.GetSize()) != tuple(expected):  # the margin always covers the image; a guard, not a branch
        raise FeatureExtractionError(f"whole-image resampling gave a {image_r.GetSize()} grid, expected {expected}")
    return image_r, mask_r


def ibsi_diagnostics(image: sitk.Image, label_map: sitk.Image, label: int, params: ExtractionParams) -> Diagnostics:
    """The 60 IBSI diagnostic values of lesion ``label`` of ``label_map`` (on ``image``'s grid) under ``params``.

    Returns ``{(family, feature_name): value}`` with the family and feature names of the IBSI reference values
    (e.g. ``("diagnostics (re-segmented ROI)", "Int. mask voxel count")``). Raises FeatureExtractionError when the
    label is empty in ``label_map``, and ResamplingSizeError when the whole interpolated image would be too large.
    """
    initial_roi = sitk.GetArrayViewFromImage(label_map) == label
    if not initial_roi.any():
        raise FeatureExtractionError(f"label {label} is empty in the mask")
    initial = sitk.Cast(image, sitk.sitkFloat64)
    image_r, mask_r = interpolate_whole(image, label_map, label, params)
    initial_values = sitk.GetArrayViewFromImage(initial)
    values_r = sitk.GetArrayViewFromImage(image_r)
    morphological = sitk.GetArrayViewFromImage(mask_r) > 0
    resegmented = params.resegmentation.intensity_mask(values_r, morphological)
    return {
        **image_diagnostics(initial, INITIAL_IMAGE),
        **image_diagnostics(image_r, INTERPOLATED_IMAGE),
        **roi_diagnostics(initial_values, initial_roi, initial_roi, INITIAL_ROI),
        **roi_diagnostics(values_r, morphological, morphological, INTERPOLATED_ROI),
        **roi_diagnostics(values_r, morphological, resegmented, RESEGMENTED_ROI),
    }
