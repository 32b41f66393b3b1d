"""Per-lesion radiomic features: the pipeline's IBSI processing around pyradiomics' feature classes.

The parameter file (``params/*.yaml``) is the single source of truth for every setting. Its
``palmares`` block drives the IBSI steps the pipeline does itself: resampling and cropping
(``resample.py``), re-segmentation, discretisation and texture aggregation (``ibsi.py``). The rest
is a pyradiomics parameter file (``setting``, ``imageType``, ``featureClass``); settings the
pipeline owns (bin width, re-segmentation, 2-D mode, …) are refused there so nothing is set twice.

Each feature is a table column named ``<class>_<Feature>_<IBSI code>`` (``glcm_JointEntropy_TU9B``),
with the aggregation code appended for texture features (``…_TU9B_ITBB``); features without an
IBSI definition keep their pyradiomics name and are marked ``non-IBSI`` (``ibsi_codes.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml

from .errors import ConfigError, FeatureExtractionError, NonFiniteVoxelError, UndefinedFeatureError
from .families.ivh import IvhDiscretisation
from .families.local_intensity import SPHERE_RADIUS_MM
from .filters import Boundary, FilterSpec, palmares_block, parse_filters
from .filters import apply as apply_filter
from .ibsi import (AGGREGATIONS, TEXTURE_CLASSES, Discretisation, Resegmentation, aggregations_for, feature_class, run_class,
                   run_texture)
from .records import LesionSpec
from .resample import (ResamplingSettings, box_slices, ibsi_grid, resample_image, resample_lesion,
                       whole_image_margin_mm)

log = logging.getLogger(__name__)

PALMARES_KEYS = {"resampling", "crop_margin_mm", "resegmentation", "discretisation", "ivh", "texture_aggregations",
                 "filters", "display"}
RESAMPLING_KEYS = {"spacing_mm", "image_interpolator", "mask_threshold", "round_intensities"}
RESEGMENTATION_KEYS = {"range", "outlier_sigma"}
DISCRETISATION_KEYS = {"method", "bin_width", "bin_number", "lower_bound"}
#: ``palmares.display`` key → modality: the grey-level range of lesion previews (``preview.py``), never used for
#: extraction (CT: the HU window; PET: the fixed SUV scale).
DISPLAY_KEYS = {"window_hu": "ct", "suv_range": "pet"}
#: pyradiomics settings the pipeline sets itself (from the ``palmares`` block); refused in ``setting``.
OWNED_SETTINGS = {
    "resampledPixelSpacing": "palmares.resampling", "interpolator": "palmares.resampling",
    "preCrop": "palmares.crop_margin_mm", "padDistance": "palmares.crop_margin_mm",
    "correctMask": "palmares.resampling (the mask is resampled by the pipeline)",
    "resegmentRange": "palmares.resegmentation", "resegmentMode": "palmares.resegmentation",
    "resegmentShape": "palmares.resegmentation (morphology always uses the morphological mask)",
    "binWidth": "palmares.discretisation", "binCount": "palmares.discretisation",
    "force2D": "palmares.texture_aggregations", "force2Ddimension": "palmares.texture_aggregations",
    "weightingNorm": "palmares.texture_aggregations", "voxelBased": "(voxel-based extraction is not supported)",
    "geometryTolerance": "the pipeline's own mask geometry check (masks.GRID_TOLERANCE_VOXELS: geometryTolerance "
                         "would change SimpleITK's tolerance for every image in the process)",
}
#: Feature classes: pyradiomics' (with the IBSI features it lacks added, ``families.EXTENSIONS``) and the pipeline's own
#: (``families.CLASSES``: intensity histogram, intensity-volume histogram, local intensity, GLDZM).
SUPPORTED_CLASSES = {"shape", "firstorder", *TEXTURE_CLASSES, "histogram", "ivh", "localintensity"}
NON_IBSI = "non-IBSI"
#: Separator between a filter's name and the feature in a column of a filtered image (``log_s3__firstorder_…``).
FILTER_SEPARATOR = "__"


@dataclass(frozen=True, slots=True)
class IbsiFeature:
    """One row of the reviewed pyradiomics → IBSI mapping (``data/ibsi_codes.csv``)."""

    feature: str
    ibsi_code: str
    ibsi_family: str
    ibsi_name: str
    unit: str
    transform: str
    note: str


@lru_cache(maxsize=1)
def ibsi_table() -> dict[str, IbsiFeature]:
    """The reviewed mapping from pyradiomics feature names (``class_Feature``) to IBSI identifiers."""
    text = importlib.resources.files(__package__).joinpath("data/ibsi_codes.csv").read_text(encoding="utf-8")
    return {row["feature"]: IbsiFeature(**row) for row in csv.DictReader(text.splitlines())}


def column_name(feature: str, aggregation: str = "") -> str:
    """Table column of a feature: ``glcm_JointEntropy`` + ``ITBB`` → ``glcm_JointEntropy_TU9B_ITBB``."""
    entry = ibsi_table().get(feature)
    name = f"{feature}_{entry.ibsi_code}" if entry and entry.ibsi_code else feature
    return f"{name}_{aggregation}" if aggregation else name


@dataclass(frozen=True, slots=True)
class FeatureColumn:
    """What a feature column holds: the feature (``class_Feature``), the IBSI aggregation code ('' if none) and the
    IBSI 2 filter whose response map it was computed on ('' for the image itself)."""

    feature: str
    aggregation: str
    filter: str = ""

    @property
    def ibsi_code(self) -> str:
        """IBSI code of the feature, or ``non-IBSI``."""
        return ibsi_code(self.feature)


@lru_cache(maxsize=1)
def _columns() -> dict[str, FeatureColumn]:
    """Every possible column name → what it holds, the inverse of :func:`column_name`."""
    out = {}
    for name in ibsi_table():
        feature_class = name.partition("_")[0]
        out[column_name(name)] = FeatureColumn(name, "")
        for aggregation in aggregations_for(feature_class, list(AGGREGATIONS)):
            out[column_name(name, aggregation.code)] = FeatureColumn(name, aggregation.code)
    return out


def feature_column(column: str) -> FeatureColumn | None:
    """The feature, aggregation and filter a table column holds, or None when it is not a feature column."""
    name, separator, rest = column.partition(FILTER_SEPARATOR)
    if not separator:
        return _columns().get(column)
    entry = _columns().get(rest)
    return FeatureColumn(entry.feature, entry.aggregation, name) if entry and name else None


def ibsi_code(feature: str) -> str:
    """IBSI code of a feature, or ``non-IBSI`` when it has none."""
    entry = ibsi_table().get(feature)
    return entry.ibsi_code if entry and entry.ibsi_code else NON_IBSI


@dataclass(frozen=True, slots=True)
class ExtractionParams:
    """A validated parameter file: the pipeline's IBSI steps + the pyradiomics feature settings."""

    path: str
    sha256: str
    resampling: ResamplingSettings | None
    crop_margin_mm: float
    resegmentation: Resegmentation
    discretisation: Discretisation
    texture_aggregations: tuple[str, ...]
    ivh: IvhDiscretisation | None                        # None without feature class ivh
    filters: tuple[FilterSpec, ...]                      # IBSI 2 filters (palmares.filters); () for none
    classes: Mapping[str, tuple[str, ...] | None]       # pyradiomics class → enabled features (None: all)
    settings: Mapping[str, Any] = field(default_factory=dict)  # pyradiomics ``setting`` block
    pyradiomics: Mapping[str, Any] = field(default_factory=dict)  # the whole pyradiomics part, as written


def _checked(block: Any, allowed: set[str], name: str, path: Path) -> dict[str, Any]:
    """``block`` (the ``palmares`` block or one of its sub-blocks, ``name``) if it is a mapping of ``allowed`` keys."""
    block = block or {}
    if not isinstance(block, dict):
        raise ConfigError(f"parameter file {path}: '{name}' must be a mapping")
    unknown = set(block) - allowed
    if unknown:
        raise ConfigError(f"parameter file {path}: unknown key(s) {sorted(unknown)} in '{name}'; allowed {sorted(allowed)}")
    return block


def display_ranges(block: Any, path: Path) -> dict[str, tuple[float, float]]:
    """Modality → (low, high) grey-level range of lesion previews from ``palmares.display`` (``block``).

    Each value is two finite numbers, low < high; the block is validated with the rest of the file by
    :func:`load_params` and read by ``preview.display_range``. Extraction never uses it.
    """
    out = {}
    for key, value in _checked(block, set(DISPLAY_KEYS), "palmares.display", path).items():
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ConfigError(f"parameter file {path}: 'palmares.display.{key}' must be two numbers [low, high]. "
                              f"Found: {value!r}")
        low, high = float(value[0]), float(value[1])
        if not low < high:
            raise ConfigError(f"parameter file {path}: 'palmares.display.{key}' lower bound must be below the upper "
                              f"bound. Found: [{value[0]}, {value[1]}]")
        out[DISPLAY_KEYS[key]] = (low, high)
    return out


def resampling_settings(block: Any, path: str | Path) -> ResamplingSettings | None:
    """The ``palmares.resampling`` block (``block``) of a parameter file, None when absent (no interpolation)."""
    if block is None:
        return None
    r = _checked(block, RESAMPLING_KEYS, "palmares.resampling", Path(path))
    spacing = r.get("spacing_mm")
    return ResamplingSettings(spacing_mm=tuple(spacing) if spacing is not None else None,
                              image_interpolator=r.get("image_interpolator", "linear"),
                              mask_threshold=float(r.get("mask_threshold", 0.5)),
                              round_intensities=bool(r.get("round_intensities", False)))


def filter_response(image_path: str | Path, path: str | Path, name: str | None = None) -> tuple[FilterSpec, sitk.Image]:
    """The response map of one filter of a parameter file (``palmares filter``): ``name``, or the file's only one.

    The image (``image_path``: a DICOM series folder, CT in HU and PET in SUVbw, or a volume file, read after the
    parameter file is validated) is first resampled as the file's ``palmares.resampling`` says (the whole image on the IBSI grid, as
    the features see it), so a filter's size in voxels means what it means for the features."""
    block = palmares_block(path)
    specs = parse_filters(block.get("filters"), path)
    names = ", ".join(spec.name for spec in specs)
    if not specs:
        raise ConfigError(f"parameter file {path} has no palmares.filters block: nothing to filter")
    chosen = [spec for spec in specs if spec.name == name] if name else list(specs)
    if name and not chosen:
        raise ConfigError(f"--filter {name}: parameter file {path} has no such filter; it has {names}")
    if len(chosen) > 1:
        raise ConfigError(f"parameter file {path} has {len(specs)} filters ({names}): choose one with --filter NAME")
    settings = resampling_settings(block.get("resampling"), path)
    from .volumes import read_study_image

    image = read_study_image(image_path)
    if settings is not None and settings.spacing_mm is not None:
        image = resample_image(image, settings)
    return chosen[0], apply_filter(chosen[0], image)


def load_params(path: str | Path) -> ExtractionParams:
    """Read and validate a parameter file; unknown or doubly-set keys are errors that name the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        document = yaml.safe_load(raw) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"parameter file {path} cannot be read: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"parameter file {path}: expected a mapping at the top level")
    block = _checked(document.pop("palmares", None), PALMARES_KEYS, "palmares", path)
    resampling = resampling_settings(block.get("resampling"), path)
    reseg = _checked(block.get("resegmentation"), RESEGMENTATION_KEYS, "palmares.resegmentation", path)
    resegmentation = Resegmentation(tuple(reseg["range"]) if reseg.get("range") is not None else None,
                                    reseg.get("outlier_sigma"))
    disc = _checked(block.get("discretisation"), DISCRETISATION_KEYS, "palmares.discretisation", path)
    if not disc:
        raise ConfigError(f"parameter file {path}: 'palmares.discretisation' is required "
                          "(method fixed_bin_size with bin_width, or fixed_bin_number with bin_number)")
    discretisation = Discretisation(disc.get("method"), disc.get("bin_width"), disc.get("bin_number"),
                                    disc.get("lower_bound"))
    display_ranges(block.get("display"), path)  # validated here, read by preview.display_range; not for extraction
    aggregations = tuple(block.get("texture_aggregations") or ())
    bad = [a for a in aggregations if a not in AGGREGATIONS]
    if bad:
        raise ConfigError(f"parameter file {path}: unknown texture aggregation(s) {bad}; "
                          f"IBSI codes are {', '.join(f'{c} ({a.name})' for c, a in AGGREGATIONS.items())}")
    setting = document.get("setting") or {}
    for key, owner in OWNED_SETTINGS.items():
        if key in setting:
            raise ConfigError(f"parameter file {path}: setting '{key}' is set by the pipeline; use {owner} instead")
    image_types = set(document.get("imageType") or {"Original": {}})
    if image_types != {"Original"}:
        raise ConfigError(f"parameter file {path}: only imageType Original is supported (found {sorted(image_types)}): "
                          "pyradiomics' filters differ from the IBSI 2 definitions (its LoG is a recursive "
                          "approximation with another scale normalisation, its wavelets pad periodically); declare "
                          "filters in the palmares.filters block instead, in IBSI 2 terms (docs/ibsi.md, 'IBSI 2 "
                          "filters'; examples in params/ibsi2/)")
    filters = parse_filters(block.get("filters") or [], path)
    if filters and "firstorder" not in (document.get("featureClass") or {}):
        raise ConfigError(f"parameter file {path}: palmares.filters needs feature class 'firstorder' in featureClass "
                          "(the intensity statistics of each response map are its features)")
    classes = {name: (tuple(features) if features else None) for name, features in (document.get("featureClass") or {}).items()}
    for name, features in classes.items():
        if name not in SUPPORTED_CLASSES:
            raise ConfigError(f"parameter file {path}: feature class '{name}' is not supported; use {sorted(SUPPORTED_CLASSES)}")
        known = feature_class(name).getFeatureNames()
        unknown = sorted(set(features or ()) - set(known))
        if unknown:
            raise ConfigError(f"parameter file {path}: feature class '{name}' has no feature(s) {unknown}; "
                              f"its features are {sorted(known)}")
        unreviewed = sorted(f for f in features or () if f"{name}_{f}" not in ibsi_table())
        if unreviewed:  # pyradiomics' deprecated features: no IBSI definition, no column of the tables
            raise ConfigError(f"parameter file {path}: feature(s) {unreviewed} of class '{name}' are not in the "
                              "reviewed IBSI mapping (data/ibsi_codes.csv; pyradiomics deprecates them); remove them")
        if name in TEXTURE_CLASSES and not aggregations_for(name, aggregations):
            raise ConfigError(f"parameter file {path}: feature class '{name}' needs a texture aggregation in "
                              "palmares.texture_aggregations " + ("(BTW3, SUJT, JJUI, ZW7Z, ITBB or IAZD)"
                                                                  if name in ("glcm", "glrlm") else "(8QNN, 62GR or KOBO)"))
    crop_margin_mm = float(block.get("crop_margin_mm", 10.0))
    if "localintensity" in classes and crop_margin_mm < SPHERE_RADIUS_MM:
        raise ConfigError(f"parameter file {path}: feature class 'localintensity' needs palmares.crop_margin_mm >= "
                          f"{SPHERE_RADIUS_MM:.4f} (the radius of its 1 cm^3 sphere, which reaches outside the lesion). "
                          f"Found: {crop_margin_mm:g}")
    ivh = None
    if "ivh" in classes or block.get("ivh"):  # a block is validated even when the class is off, so typos show
        checked = IvhDiscretisation.from_block(block.get("ivh"), path)
        ivh = checked if "ivh" in classes else None
    params = ExtractionParams(str(path), hashlib.sha256(raw).hexdigest(), resampling, crop_margin_mm, resegmentation,
                              discretisation, aggregations, ivh, filters, classes, {**setting, "label": 1}, document)
    _validate_pyradiomics(params)
    return params


def _validate_pyradiomics(params: ExtractionParams) -> None:
    """Check the pyradiomics part against pyradiomics' own schema (types and ranges of every setting).

    Validated with pykwalify and pyradiomics' schema files, as ``RadiomicsFeatureExtractor`` does, but without
    building an extractor: its constructor applies settings to process-wide state (SimpleITK's tolerance).
    """
    import copy

    import pykwalify.core
    from radiomics import getFeatureClasses, getParameterValidationFiles

    schema, functions = getParameterValidationFiles()
    document = copy.deepcopy(dict(params.pyradiomics))
    if document.get("featureClass"):  # the pipeline's classes and features are checked by _check_feature_names
        document["featureClass"] = {name: [f for f in features if f in getFeatureClasses()[name].getFeatureNames()]
                                    if features else features
                                    for name, features in document["featureClass"].items() if name in getFeatureClasses()}
    try:
        core = pykwalify.core.Core(source_data=document, schema_files=[schema],
                                   extensions=[functions])
        core.validate(raise_exception=False)  # the errors are kept in core.validation_errors
    except Exception as exc:  # pykwalify raises its own errors for malformed input
        raise ConfigError(f"parameter file {params.path}: invalid pyradiomics settings: {exc}") from exc
    if core.validation_errors:
        raise ConfigError(f"parameter file {params.path}: invalid pyradiomics settings: "
                          f"{'; '.join(core.validation_errors)} (pyradiomics' parameter schema, paramSchema.yaml)")


class _ClassInputs:
    """What each feature class is run on: the image and one of the ROI's masks, cropped, with its settings.

    - ``shape``: the morphological mask on its bounding box; the intensity mask in ``ibsi_intensity_mask``
      (morphology's intensity features: integrated intensity, centre of mass shift, Moran's I, Geary's C);
    - ``localintensity``: the whole neighbourhood (the 1 cm³ sphere reaches outside the ROI) and the intensity mask;
    - ``gldzm``: the morphological bounding box, mask coded 1 = intensity mask (the zones), 2 = morphological voxel
      removed by re-segmentation (the distance map is taken on the morphological mask);
    - every other class: the intensity mask on its bounding box.

    Each crop is made once (the first class that needs it), after pyradiomics' ROI size checks.
    """

    def __init__(self, image: sitk.Image, roi: sitk.Image, morphological: np.ndarray, intensity: np.ndarray,
                 settings: Mapping[str, Any]) -> None:
        self.image, self.roi, self.settings = image, roi, settings
        self.morphological, self.intensity = morphological, intensity
        self._crops: dict[str, tuple[sitk.Image, sitk.Image, tuple[slice, ...]]] = {}

    def of(self, name: str) -> tuple[sitk.Image, sitk.Image, dict[str, Any]]:
        """(image, mask, settings) for feature class ``name``."""
        settings = dict(self.settings)
        if name == "localintensity":
            return self.image, self._mask(self.intensity), settings
        if name == "shape":
            image, mask, box = self._crop("morphological")
            settings["ibsi_intensity_mask"] = self.intensity[box]
            return image, mask, settings
        image, mask, _ = self._crop("intensity")  # its size checks hold for every intensity-mask class
        if name == "gldzm":
            image, mask, _ = self._crop("gldzm")
        return image, mask, settings

    def _mask(self, array: np.ndarray) -> sitk.Image:
        """``array`` as a UInt8 image on the ROI's grid."""
        mask = sitk.GetImageFromArray(array.astype(np.uint8))
        mask.CopyInformation(self.roi)
        return mask

    def _crop(self, kind: str) -> tuple[sitk.Image, sitk.Image, tuple[slice, ...]]:
        """Image and mask of ``kind`` (morphological, intensity, gldzm: morphological box, coded mask) cropped to the
        bounding box of their ROI, and that box as numpy slices (z, y, x); checked and made once."""
        if kind not in self._crops:
            hits = self.intensity if kind == "intensity" else self.morphological
            box = self._checked_box(hits, "intensity" if kind == "intensity" else "morphological")
            if kind == "gldzm":
                array = np.where(self.intensity, 1, np.where(self.morphological, 2, 0))
            else:
                array = hits
            index = [int(b.start) for b in reversed(box)]
            size = [int(b.stop - b.start) for b in reversed(box)]
            image = sitk.RegionOfInterest(self.image, size, index)
            if kind == "morphological":
                mask = sitk.RegionOfInterest(self.roi, size, index)
            else:
                mask = sitk.GetImageFromArray(array[box].astype(np.uint8))
                mask.CopyInformation(image)
            self._crops[kind] = (image, mask, box)
        return self._crops[kind]

    def _checked_box(self, hits: np.ndarray, kind: str) -> tuple[slice, ...]:
        """The bounding box (numpy slices, z y x) of ``hits``, after pyradiomics' size checks
        (``minimumROIDimensions``, default 2; ``minimumROISize``, default none)."""
        box = box_slices(hits)
        if box is None:
            raise FeatureExtractionError(f"the {kind} mask is empty")
        size = [b.stop - b.start for b in reversed(box)]  # x, y, z
        dimensions = sum(extent > 1 for extent in size)
        minimum_dimensions = int(self.settings.get("minimumROIDimensions", 2))
        if dimensions < minimum_dimensions:
            raise FeatureExtractionError(f"the {kind} mask is {dimensions}-D ({size[0]} x {size[1]} x {size[2]} "
                                         f"voxels); minimumROIDimensions is {minimum_dimensions}")
        voxels = int(np.count_nonzero(hits))
        minimum = self.settings.get("minimumROISize")
        if minimum is not None and voxels < int(minimum):
            raise FeatureExtractionError(f"the {kind} mask has {voxels} voxels; minimumROISize is {minimum}")
        return box


def compute_features(image: sitk.Image, roi: sitk.Image, params: ExtractionParams) -> dict[str, float]:
    """IBSI-mode features of one ROI on its final grid: re-segment, discretise, run the feature classes.

    ``roi`` (0/1) is the morphological mask; the intensity mask is derived from it by re-segmentation.
    Returns ``{column name: value}`` with IBSI conventions applied (e.g. excess kurtosis).
    """
    image_array = sitk.GetArrayViewFromImage(image)
    morphological = sitk.GetArrayViewFromImage(roi) > 0
    non_finite = int(np.count_nonzero(~np.isfinite(image_array[morphological])))
    if non_finite:
        raise NonFiniteVoxelError(f"{non_finite} of {int(morphological.sum())} voxels inside the lesion are NaN or "
                                  "infinite in the image (allowed: 0; re-segmentation and the features would silently "
                                  "skip them); check the image conversion (rescale slope and intercept, SUV) and that "
                                  "the segmentation lies inside the scanned volume")
    intensity = params.resegmentation.intensity_mask(image_array, morphological)
    if not intensity.any():
        raise FeatureExtractionError(f"no voxel left after re-segmentation ({params.resegmentation}); "
                                     "check that the image is in the expected units (HU or SUV)")
    settings = dict(params.settings)
    settings["ibsi_binning"] = params.discretisation.resolve(image_array[intensity], params.resegmentation)
    if params.ivh is not None:
        settings["ibsi_ivh_binning"] = params.ivh.resolve(image_array[intensity], params.resegmentation)
    inputs = _ClassInputs(image, roi, morphological, intensity, settings)
    values: dict[str, float] = {}
    for name, features in params.classes.items():
        cropped_image, mask, class_settings = inputs.of(name)
        if name in TEXTURE_CLASSES:
            for aggregation in aggregations_for(name, params.texture_aggregations):
                result = run_texture(name, cropped_image, mask, features, class_settings, aggregation)
                values.update({column_name(k, aggregation.code): _ibsi_convention(k, v) for k, v in result.items()})
        else:
            result = run_class(name, cropped_image, mask, features, class_settings)
            values.update({column_name(k): _ibsi_convention(k, v) for k, v in result.items()})
    box = box_slices(intensity)
    for spec in params.filters:
        values.update(filtered_statistics(spec, image, intensity, box, settings, params.classes.get("firstorder")))
    _refuse_undefined(values)
    return values


def filtered_statistics(spec: FilterSpec, image: sitk.Image, intensity: np.ndarray, box: tuple[slice, ...],
                        settings: Mapping[str, Any], chosen: Sequence[str] | None = None) -> dict[str, float]:
    """IBSI intensity statistics of the response map of ``spec`` inside the intensity mask (IBSI 2, phase 2).

    The filter runs on ``image`` (the lesion's neighbourhood, cropped with the filter's apron, before
    re-segmentation), on the ROI's bounding box ``box`` (numpy slices, z y x) plus the kernel's reach unless it needs
    the whole image; the statistics use the voxels of the ROI re-segmented on the original intensities (``settings``:
    the ROI's class settings; the discretisation is the original image's, unused by the statistics; ``chosen``: the
    parameter file's ``firstorder`` feature list, None for all). Columns are
    ``<filter name>__<statistic column>`` (``log_s1p5__firstorder_Mean_Q4LE``).
    """
    index = [b.start for b in reversed(box)]
    size = [b.stop - b.start for b in reversed(box)]
    low = [0, 0, 0]
    if not needs_whole_image(spec):  # the ROI's box + the kernel's reach: the same response inside the ROI, less work
        reach = spec.radius_voxels(image.GetSpacing())
        low = [max(0, i - r) for i, r in zip(index, reach)]
        high = [min(n, i + s + r) for i, s, r, n in zip(index, size, reach, image.GetSize())]
        image = sitk.RegionOfInterest(image, [h - lo for h, lo in zip(high, low)], low)
    response = sitk.RegionOfInterest(apply_filter(spec, image), size, [i - lo for i, lo in zip(index, low)])
    mask = sitk.GetImageFromArray(intensity[box].astype(np.uint8))
    mask.CopyInformation(response)
    table = ibsi_table()
    features = [name for name in (chosen or feature_class("firstorder").getFeatureNames())
                if f"firstorder_{name}" in table and table[f"firstorder_{name}"].ibsi_family == "intensity-based statistics"]
    result = run_class("firstorder", response, mask, features, dict(settings))
    return {f"{spec.name}{FILTER_SEPARATOR}{column_name(k)}": _ibsi_convention(k, v) for k, v in result.items()}


def needs_whole_image(spec: FilterSpec) -> bool:
    """Whether a filter needs the whole image: a periodic boundary wraps it, and the Simoncelli wavelet's transfer
    function is defined on the image's own frequency grid (no crop reproduces it exactly)."""
    return spec.boundary is Boundary.PERIODIC or spec.family == "simoncelli_wavelet"


def lesion_margin_mm(params: ExtractionParams, image: sitk.Image) -> float:
    """Crop margin (mm) of a lesion's neighbourhood: ``crop_margin_mm`` plus the largest apron of the filters on the
    lesion's grid, so filtering the neighbourhood equals filtering the whole image inside it; the whole image for a
    filter that needs it (:func:`needs_whole_image`), where no apron is enough."""
    if not params.filters:
        return params.crop_margin_mm
    if any(needs_whole_image(spec) for spec in params.filters):
        return whole_image_margin_mm(image)
    spacing = ibsi_grid(image, params.resampling.spacing_mm if params.resampling else None).spacing
    return params.crop_margin_mm + max(max(spec.apron_mm(spacing)) for spec in params.filters)


def _refuse_undefined(values: Mapping[str, float]) -> None:
    """Raise UndefinedFeatureError when a feature value is NaN or infinite: pyradiomics turns a feature it cannot
    compute into NaN, and a NaN in the tables would be a silent wrong number."""
    undefined = [column for column, value in values.items() if not math.isfinite(value)]
    if undefined:
        shown = ", ".join(f"{column} = {values[column]}" for column in undefined[:5])
        more = f" and {len(undefined) - 5} more" if len(undefined) > 5 else ""
        raise UndefinedFeatureError(f"no finite value for {len(undefined)} of {len(values)} features ({shown}{more}; "
                                    "allowed: 0), so the lesion gets no values rather than NaN; such a feature is "
                                    "undefined on this ROI (e.g. one grey level or a constant ROI, a lesion one voxel "
                                    "thick for the enclosing-ellipsoid densities, or too few voxels): check the "
                                    "lesion, or remove the feature from featureClass in the parameter file")


def _ibsi_convention(feature: str, value: float) -> float:
    """``value`` of a pyradiomics feature in the IBSI convention (``ibsi_codes.csv`` transform: kurtosis - 3)."""
    entry = ibsi_table().get(feature)
    return value - 3.0 if entry and entry.transform == "minus3" else value


def extract_lesion(image: sitk.Image, label_map: sitk.Image, label: int, params: ExtractionParams) -> dict[str, float]:
    """Features of the lesion ``label`` of ``label_map``: crop + IBSI resampling, then :func:`compute_features`."""
    image_r, mask_r = resample_lesion(image, label_map, params.resampling, lesion_margin_mm(params, image), label)
    return _resampled_features(image_r, mask_r, label, params)


def _resampled_features(image_r: sitk.Image, mask_r: sitk.Image, label: int, params: ExtractionParams) -> dict[str, float]:
    """:func:`compute_features` of a lesion already cropped and resampled, errors naming the label."""
    voxels = int(sitk.GetArrayViewFromImage(mask_r).sum())
    if voxels == 0:
        raise FeatureExtractionError(f"label {label} has no voxel left after resampling (lesion smaller than half a voxel)")
    try:
        return compute_features(image_r, mask_r, params)
    except FeatureExtractionError as exc:  # the same class (NaN voxels, undefined feature, …), with the label
        raise type(exc)(f"label {label} ({voxels} voxels after resampling): {exc}") from exc


@dataclass(frozen=True, slots=True)
class LesionFeatures:
    """Features of one lesion, or the reason they could not be computed.

    ``resampled`` is the (image, 0/1 mask) crop on the IBSI grid the features were computed on, kept only when
    asked for (``extract_lesions(keep_resampled=True)``, for the QC pictures) and None when resampling failed.
    """

    lesion: LesionSpec
    values: Mapping[str, float]
    error: str | None = None
    resampled: tuple[sitk.Image, sitk.Image] | None = field(default=None, compare=False, repr=False)


def extract_lesions(image: sitk.Image, label_map: sitk.Image, lesions: Sequence[LesionSpec],
                    params: ExtractionParams, *, keep_resampled: bool = False) -> list[LesionFeatures]:
    """Features for every lesion; one failing lesion is reported, the others still computed.

    ``keep_resampled``: also return each lesion's resampled crop (also when its features failed after
    resampling), so QC pictures show exactly what the features saw without resampling twice.
    """
    out = []
    for lesion in lesions:
        crop = None
        try:
            crop = resample_lesion(image, label_map, params.resampling, lesion_margin_mm(params, image), lesion.label)
            values = _resampled_features(*crop, lesion.label, params)
            out.append(LesionFeatures(lesion, values, resampled=crop if keep_resampled else None))
        except FeatureExtractionError as exc:
            out.append(LesionFeatures(lesion, {}, str(exc), resampled=crop if keep_resampled else None))
    return out


def long_format(values: Mapping[str, float], lesion_id: str = "") -> list[dict[str, object]]:
    """Rows ``lesion_id, feature, ibsi_code, aggregation, value`` for the ``palmares features`` CSV.

    A NaN or infinite value is refused (UndefinedFeatureError): the long format never holds "nan".
    """
    try:
        _refuse_undefined(values)
    except UndefinedFeatureError as exc:
        raise UndefinedFeatureError(f"lesion {lesion_id}: {exc}") from exc
    rows = []
    for column, value in values.items():
        entry = feature_column(column)
        rows.append({"lesion_id": lesion_id, "feature": column, "ibsi_code": entry.ibsi_code if entry else NON_IBSI,
                     "aggregation": entry.aggregation if entry else "", "value": repr(value)})
    return rows
