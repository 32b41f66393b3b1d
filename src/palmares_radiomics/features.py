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
from .ibsi import AGGREGATIONS, TEXTURE_CLASSES, Discretisation, Resegmentation, aggregations_for, run_class, run_texture
from .records import LesionSpec
from .resample import ResamplingSettings, bounding_box, resample_lesion

log = logging.getLogger(__name__)

PALMARES_KEYS = {"resampling", "crop_margin_mm", "resegmentation", "discretisation", "texture_aggregations", "display"}
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
SUPPORTED_CLASSES = {"shape", "firstorder", *TEXTURE_CLASSES}
NON_IBSI = "non-IBSI"


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
    """What a feature column holds: the pyradiomics feature and the IBSI aggregation code ('' if none)."""

    feature: str
    aggregation: str

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
    """The feature and aggregation a table column holds, or None when it is not a feature column."""
    return _columns().get(column)


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
    resampling = None
    if block.get("resampling") is not None:
        r = _checked(block["resampling"], RESAMPLING_KEYS, "palmares.resampling", path)
        spacing = r.get("spacing_mm")
        resampling = ResamplingSettings(
            spacing_mm=tuple(spacing) if spacing is not None else None,
            image_interpolator=r.get("image_interpolator", "linear"),
            mask_threshold=float(r.get("mask_threshold", 0.5)),
            round_intensities=bool(r.get("round_intensities", False)),
        )
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
        raise ConfigError(f"parameter file {path}: only imageType Original is supported (found {sorted(image_types)}); "
                          "filtered images have no IBSI 1 reference")
    classes = {name: (tuple(features) if features else None) for name, features in (document.get("featureClass") or {}).items()}
    for name in classes:
        if name not in SUPPORTED_CLASSES:
            raise ConfigError(f"parameter file {path}: feature class '{name}' is not supported; use {sorted(SUPPORTED_CLASSES)}")
        if name in TEXTURE_CLASSES and not aggregations_for(name, aggregations):
            raise ConfigError(f"parameter file {path}: feature class '{name}' needs a texture aggregation in "
                              "palmares.texture_aggregations " + ("(BTW3, SUJT, JJUI, ZW7Z, ITBB or IAZD)"
                                                                  if name in ("glcm", "glrlm") else "(8QNN, 62GR or KOBO)"))
    params = ExtractionParams(str(path), hashlib.sha256(raw).hexdigest(), resampling,
                              float(block.get("crop_margin_mm", 10.0)), resegmentation, discretisation, aggregations,
                              classes, {**setting, "label": 1}, document)
    _validate_pyradiomics(params)
    return params


def _validate_pyradiomics(params: ExtractionParams) -> None:
    """Check the pyradiomics part against pyradiomics' own schema (types and ranges of every setting).

    Validated with pykwalify and pyradiomics' schema files, as ``RadiomicsFeatureExtractor`` does, but without
    building an extractor: its constructor applies settings to process-wide state (SimpleITK's tolerance).
    """
    import copy

    import pykwalify.core
    from radiomics import getParameterValidationFiles

    schema, functions = getParameterValidationFiles()
    try:
        core = pykwalify.core.Core(source_data=copy.deepcopy(dict(params.pyradiomics)), schema_files=[schema],
                                   extensions=[functions])
        core.validate(raise_exception=False)  # the errors are kept in core.validation_errors
    except Exception as exc:  # pykwalify raises its own errors for malformed input
        raise ConfigError(f"parameter file {params.path}: invalid pyradiomics settings: {exc}") from exc
    if core.validation_errors:
        raise ConfigError(f"parameter file {params.path}: invalid pyradiomics settings: "
                          f"{'; '.join(core.validation_errors)} (pyradiomics' parameter schema, paramSchema.yaml)")


def _crop_checked(image: sitk.Image, mask: sitk.Image, kind: str, settings: Mapping[str, Any]) -> tuple[sitk.Image, sitk.Image]:
    """Image and 0/1 mask cropped to the mask's bounding box, after pyradiomics' size checks
    (``minimumROIDimensions``, default 2; ``minimumROISize``, default none)."""
    box = bounding_box(mask)
    if box is None:
        raise FeatureExtractionError(f"the {kind} mask is empty")
    index, size = box
    dimensions = sum(extent > 1 for extent in size)
    if dimensions < int(settings.get("minimumROIDimensions", 2)):
        raise FeatureExtractionError(f"the {kind} mask is {dimensions}-D ({size[0]} x {size[1]} x {size[2]} voxels); "
                                     f"minimumROIDimensions is {settings.get('minimumROIDimensions', 2)}")
    voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    minimum = settings.get("minimumROISize")
    if minimum is not None and voxels < int(minimum):
        raise FeatureExtractionError(f"the {kind} mask has {voxels} voxels; minimumROISize is {minimum}")
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(mask, size, index)


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
    intensity_mask = sitk.GetImageFromArray(intensity.astype(np.uint8))
    intensity_mask.CopyInformation(roi)
    settings = dict(params.settings)
    settings["ibsi_binning"] = params.discretisation.resolve(image_array[intensity], params.resegmentation)
    values: dict[str, float] = {}
    for mask, kind, names in ((roi, "morphological", ["shape"]),
                              (intensity_mask, "intensity", [c for c in params.classes if c != "shape"])):
        names = [n for n in names if n in params.classes]
        if not names:
            continue
        cropped_image, cropped_mask = _crop_checked(image, mask, kind, settings)
        for name in names:
            features = params.classes[name]
            if name in TEXTURE_CLASSES:
                for aggregation in aggregations_for(name, params.texture_aggregations):
                    result = run_texture(name, cropped_image, cropped_mask, features, settings, aggregation)
                    values.update({column_name(k, aggregation.code): _ibsi_convention(k, v) for k, v in result.items()})
            else:
                result = run_class(name, cropped_image, cropped_mask, features, settings)
                values.update({column_name(k): _ibsi_convention(k, v) for k, v in result.items()})
    _refuse_undefined(values)
    return values


def _refuse_undefined(values: Mapping[str, float]) -> None:
    """Raise UndefinedFeatureError when a feature value is NaN or infinite: pyradiomics turns a feature it cannot
    compute into NaN, and a NaN in the tables would be a silent wrong number."""
    undefined = [column for column, value in values.items() if not math.isfinite(value)]
    if undefined:
        shown = ", ".join(f"{column} = {values[column]}" for column in undefined[:5])
        more = f" and {len(undefined) - 5} more" if len(undefined) > 5 else ""
        raise UndefinedFeatureError(f"pyradiomics returned no finite value for {len(undefined)} of {len(values)} "
                                    f"features ({shown}{more}; allowed: 0), so the lesion gets no values rather than "
                                    "NaN; such a feature is undefined on this ROI (e.g. one grey level, or too few "
                                    "voxels): check the lesion, or remove the feature from featureClass in the "
                                    "parameter file")


def _ibsi_convention(feature: str, value: float) -> float:
    """``value`` of a pyradiomics feature in the IBSI convention (``ibsi_codes.csv`` transform: kurtosis - 3)."""
    entry = ibsi_table().get(feature)
    return value - 3.0 if entry and entry.transform == "minus3" else value


def extract_lesion(image: sitk.Image, label_map: sitk.Image, label: int, params: ExtractionParams) -> dict[str, float]:
    """Features of the lesion ``label`` of ``label_map``: crop + IBSI resampling, then :func:`compute_features`."""
    image_r, mask_r = resample_lesion(image, label_map, params.resampling, params.crop_margin_mm, label)
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
            crop = resample_lesion(image, label_map, params.resampling, params.crop_margin_mm, lesion.label)
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
