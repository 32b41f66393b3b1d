"""Per-lesion radiomic features: pipeline resampling around pyradiomics, with IBSI codes.

The parameter file (``params/*.yaml``) is the single source of truth for every setting: its
``palmares`` block drives resampling and cropping (``resample.py``), the rest is a standard
pyradiomics parameter file. Each output feature is named ``<class>_<Feature>`` as in pyradiomics,
suffixed with ``_<IBSI code>`` when the feature has an IBSI definition (``ibsi_codes.csv``).
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

import SimpleITK as sitk
import yaml

from .errors import ConfigError, FeatureExtractionError
from .records import LesionSpec
from .resample import ResamplingSettings, resample_lesion

log = logging.getLogger(__name__)

PALMARES_KEYS = {"resampling", "crop_margin_mm"}
RESAMPLING_KEYS = {"spacing_mm", "image_interpolator", "mask_threshold", "round_intensities"}
NON_IBSI = "non-IBSI"


@dataclass(frozen=True, slots=True)
class IbsiFeature:
    """One row of the reviewed pyradiomics → IBSI mapping (``data/ibsi_codes.csv``)."""

    feature: str
    ibsi_code: str
    ibsi_family: str
    ibsi_name: str
    aggregation_code: str
    unit: str
    transform: str
    note: str


@lru_cache(maxsize=1)
def ibsi_table() -> dict[str, IbsiFeature]:
    """The reviewed mapping from pyradiomics feature names (``class_Feature``) to IBSI identifiers."""
    text = importlib.resources.files(__package__).joinpath("data/ibsi_codes.csv").read_text(encoding="utf-8")
    return {row["feature"]: IbsiFeature(**row) for row in csv.DictReader(text.splitlines())}


def column_name(feature: str) -> str:
    """Table column of a feature: ``glcm_JointEntropy`` → ``glcm_JointEntropy_TU9B``; non-IBSI names unchanged."""
    entry = ibsi_table().get(feature)
    return f"{feature}_{entry.ibsi_code}" if entry and entry.ibsi_code else feature


@lru_cache(maxsize=1)
def _features_by_column() -> dict[str, str]:
    """Table column → pyradiomics feature name, the inverse of :func:`column_name`."""
    return {column_name(name): name for name in ibsi_table()}


def feature_of_column(column: str) -> str:
    """The pyradiomics feature a table column holds (``glcm_Id_IB1Z`` → ``glcm_Id``); unknown names unchanged."""
    return _features_by_column().get(column, column)


def ibsi_code(feature: str) -> str:
    """IBSI code of a feature, or ``non-IBSI`` when it has none (filtered images are never IBSI 1 features)."""
    entry = ibsi_table().get(feature)
    return entry.ibsi_code if entry and entry.ibsi_code else NON_IBSI


@dataclass(frozen=True, slots=True)
class ExtractionParams:
    """A validated parameter file: pipeline resampling settings + the pyradiomics settings."""

    path: str
    sha256: str
    resampling: ResamplingSettings | None
    crop_margin_mm: float
    pyradiomics: Mapping[str, Any] = field(default_factory=dict)


def load_params(path: str | Path) -> ExtractionParams:
    """Read and validate a parameter file; unknown keys in the ``palmares`` block are errors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        document = yaml.safe_load(raw) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"parameter file {path} cannot be read: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"parameter file {path}: expected a mapping at the top level")
    block = document.pop("palmares", None) or {}
    unknown = set(block) - PALMARES_KEYS
    if unknown:
        raise ConfigError(f"parameter file {path}: unknown key(s) {sorted(unknown)} in 'palmares'; allowed {sorted(PALMARES_KEYS)}")
    resampling_block = block.get("resampling")
    resampling = None
    if resampling_block is not None:
        unknown = set(resampling_block) - RESAMPLING_KEYS
        if unknown:
            raise ConfigError(f"parameter file {path}: unknown key(s) {sorted(unknown)} in 'palmares.resampling'; "
                              f"allowed {sorted(RESAMPLING_KEYS)}")
        spacing = resampling_block.get("spacing_mm")
        resampling = ResamplingSettings(
            spacing_mm=tuple(spacing) if spacing is not None else None,
            image_interpolator=resampling_block.get("image_interpolator", "linear"),
            mask_threshold=float(resampling_block.get("mask_threshold", 0.5)),
            round_intensities=bool(resampling_block.get("round_intensities", False)),
        )
    setting = document.get("setting") or {}
    for forbidden in ("resampledPixelSpacing", "preCrop"):
        if forbidden in setting:
            raise ConfigError(f"parameter file {path}: '{forbidden}' would make pyradiomics resample/crop on its own grid; "
                              "use palmares.resampling instead")
    params = ExtractionParams(str(path), hashlib.sha256(raw).hexdigest(), resampling,
                              float(block.get("crop_margin_mm", 10.0)), document)
    _extractor(params)  # validates the pyradiomics part against pyradiomics' own schema now, not per lesion
    return params


def _extractor(params: ExtractionParams) -> Any:
    """A pyradiomics extractor configured from ``params`` (validated by pyradiomics' schema)."""
    from radiomics import featureextractor

    try:
        return featureextractor.RadiomicsFeatureExtractor(dict(params.pyradiomics))
    except Exception as exc:  # pykwalify raises its own SchemaError
        raise ConfigError(f"parameter file {params.path}: invalid pyradiomics settings: {exc}") from exc


def _rename(key: str) -> str | None:
    """pyradiomics result key → feature name, or None for diagnostics (``original_glcm_Id`` → ``glcm_Id``)."""
    if key.startswith("diagnostics_"):
        return None
    image_type, _, rest = key.partition("_")
    return rest if image_type == "original" else f"{image_type}_{rest}"


def extract_lesion(image: sitk.Image, label_map: sitk.Image, label: int, params: ExtractionParams,
                   extractor: Any | None = None) -> dict[str, float]:
    """Features of the lesion ``label`` of ``label_map``: crop + IBSI resampling, then pyradiomics.

    Returns ``{feature name: value}`` with IBSI conventions applied (e.g. excess kurtosis).
    """
    lesion = label_map == label
    if not sitk.GetArrayViewFromImage(lesion).any():
        raise FeatureExtractionError(f"label {label} is empty in the mask")
    image_r, mask_r = resample_lesion(image, lesion, params.resampling, params.crop_margin_mm)
    voxels = int(sitk.GetArrayViewFromImage(mask_r).sum())
    if voxels == 0:
        raise FeatureExtractionError(f"label {label} has no voxel left after resampling (lesion smaller than half a voxel)")
    extractor = extractor or _extractor(params)
    try:
        raw = extractor.execute(image_r, mask_r, label=1)
    except (ValueError, RuntimeError) as exc:
        raise FeatureExtractionError(f"label {label}: pyradiomics refused the lesion ({voxels} voxels): {exc}") from exc
    table = ibsi_table()
    values: dict[str, float] = {}
    for key, value in raw.items():
        name = _rename(key)
        if name is None:
            continue
        number = float(value)
        entry = table.get(name)
        if entry and entry.transform == "minus3":
            number -= 3.0
        values[name] = number
    return values


@dataclass(frozen=True, slots=True)
class LesionFeatures:
    """Features of one lesion, or the reason they could not be computed."""

    lesion: LesionSpec
    values: Mapping[str, float]
    error: str | None = None


def extract_lesions(image: sitk.Image, label_map: sitk.Image, lesions: Sequence[LesionSpec],
                    params: ExtractionParams) -> list[LesionFeatures]:
    """Features for every lesion; one failing lesion is reported, the others still computed."""
    extractor = _extractor(params)
    out = []
    for lesion in lesions:
        try:
            out.append(LesionFeatures(lesion, extract_lesion(image, label_map, lesion.label, params, extractor)))
        except FeatureExtractionError as exc:
            out.append(LesionFeatures(lesion, {}, str(exc)))
    return out


def long_format(values: Mapping[str, float], lesion_id: str = "") -> list[dict[str, object]]:
    """Rows ``lesion_id, feature, ibsi_code, aggregation, value`` for the ``palmares features`` CSV."""
    table = ibsi_table()
    rows = []
    for name, value in values.items():
        entry = table.get(name)
        texture = entry is not None and entry.aggregation_code not in ("", "DHQ4")
        rows.append({"lesion_id": lesion_id, "feature": column_name(name), "ibsi_code": ibsi_code(name),
                     "aggregation": entry.aggregation_code if texture else "",
                     "value": repr(value) if math.isfinite(value) else "nan"})
    return rows
