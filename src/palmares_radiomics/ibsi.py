"""IBSI-mode behaviour around pyradiomics: re-segmentation, discretisation, texture aggregation, conventions.

pyradiomics documents where it deviates from the IBSI reference manual (arXiv:1612.07003). The
pipeline does not patch pyradiomics (that would silently change it for anyone else in the process);
it does the IBSI steps itself and hands pyradiomics' own feature classes inputs that make them
compute the IBSI definitions:

- re-segmentation (range and/or mean ± kσ outlier filtering, chapter 2.5) builds the *intensity*
  mask; morphology keeps the interpolated *morphological* mask;
- discretisation (chapter 2.7) is resolved once per ROI, so fixed bin size starts at the
  re-segmentation lower bound (pyradiomics: at a multiple of the bin width below the ROI minimum)
  and 2-D slices share the bins of the whole ROI; subclasses of the feature classes use it
  instead of pyradiomics' ``binWidth``/``binCount``;
- texture aggregation (chapter 3.6) is chosen by IBSI code: per-slice (2D), slice-stacked (2.5D)
  or volumetric (3D) matrices, with directional matrices averaged or merged;
- conventions: kurtosis is excess kurtosis, and the PCA axis lengths use the sample covariance.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from .errors import ConfigError, FeatureExtractionError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Aggregation:
    """How texture matrices are built and combined (IBSI reference manual, section 3.6)."""

    code: str
    name: str
    dimensionality: Literal["2D", "2.5D", "3D"]
    merged: bool        # directional matrices merged into one before computing features (GLCM, GLRLM)
    directional: bool   # True for GLCM/GLRLM aggregations, False for GLSZM/NGTDM/NGLDM ones

    def pyradiomics_settings(self) -> dict[str, Any]:
        """The pyradiomics settings that build matrices this way (2D slices are cut by the caller)."""
        return {"force2D": self.dimensionality != "3D", "force2Ddimension": 0,
                "weightingNorm": "no_weighting" if self.merged else None}


AGGREGATIONS: dict[str, Aggregation] = {a.code: a for a in (
    Aggregation("BTW3", "2D, averaged", "2D", False, True),
    Aggregation("SUJT", "2D, slice-merged", "2D", True, True),
    Aggregation("JJUI", "2.5D, direction-merged", "2.5D", False, True),
    Aggregation("ZW7Z", "2.5D, merged", "2.5D", True, True),
    Aggregation("ITBB", "3D, averaged", "3D", False, True),
    Aggregation("IAZD", "3D, merged", "3D", True, True),
    Aggregation("8QNN", "2D", "2D", False, False),
    Aggregation("62GR", "2.5D", "2.5D", False, False),
    Aggregation("KOBO", "3D", "3D", False, False),
)}
#: pyradiomics texture classes whose matrices are directional (one per direction) vs not.
DIRECTIONAL_CLASSES = frozenset({"glcm", "glrlm"})
TEXTURE_CLASSES = DIRECTIONAL_CLASSES | {"glszm", "gldm", "ngtdm", "gldzm"}


def aggregations_for(feature_class: str, codes: Sequence[str]) -> list[Aggregation]:
    """The aggregations in ``codes`` that apply to a pyradiomics texture class (empty for non-texture classes)."""
    if feature_class not in TEXTURE_CLASSES:
        return []
    directional = feature_class in DIRECTIONAL_CLASSES
    return [AGGREGATIONS[c] for c in codes if AGGREGATIONS[c].directional == directional]


@dataclass(frozen=True, slots=True)
class Resegmentation:
    """IBSI re-segmentation: keep ROI voxels inside ``range`` and within mean ± ``outlier_sigma`` SD.

    As in the manual (and MIRP), mean and SD are taken over the morphological ROI, and the
    intensity mask is the ROI restricted to the intersection of both intervals.
    """

    range: tuple[float | None, float | None] | None = None
    outlier_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.range is not None:
            if len(self.range) != 2:
                raise ConfigError(f"resegmentation.range must be [lower, upper] (null for open). Found: {self.range}")
            lo, hi = self.range
            if lo is not None and hi is not None and lo >= hi:
                raise ConfigError(f"resegmentation.range lower bound must be below the upper bound. Found: {self.range}")
        if self.outlier_sigma is not None and not self.outlier_sigma > 0:
            raise ConfigError(f"resegmentation.outlier_sigma must be positive or null. Found: {self.outlier_sigma}")

    @property
    def lower_bound(self) -> float | None:
        """The lower bound of the range, which IBSI uses as the fixed-bin-size origin."""
        return None if self.range is None else self.range[0]

    def intensity_mask(self, image: np.ndarray, roi: np.ndarray) -> np.ndarray:
        """Boolean intensity mask: ``roi`` voxels whose intensity survives re-segmentation."""
        lo, hi = -math.inf, math.inf
        if self.range is not None:
            lo = -math.inf if self.range[0] is None else float(self.range[0])
            hi = math.inf if self.range[1] is None else float(self.range[1])
        if self.outlier_sigma is not None:
            values = image[roi]
            mean, sd = float(values.mean()), float(values.std())
            lo, hi = max(lo, mean - self.outlier_sigma * sd), min(hi, mean + self.outlier_sigma * sd)
        return roi & (image >= lo) & (image <= hi)


@dataclass(frozen=True, slots=True)
class Discretisation:
    """IBSI discretisation for texture and intensity-histogram features (section 2.7).

    Fixed bin size: bin = floor((x - lower_bound) / bin_width) + 1, where the lower bound is the
    re-segmentation range's lower bound (IBSI), or the ROI minimum when there is no range.
    Fixed bin number: bin = floor(N (x - min) / (max - min)) + 1, the maximum going to bin N.
    """

    method: Literal["fixed_bin_size", "fixed_bin_number"]
    bin_width: float | None = None
    bin_number: int | None = None
    lower_bound: float | None = None

    def __post_init__(self) -> None:
        if self.method == "fixed_bin_size":
            if self.bin_width is None or not self.bin_width > 0 or self.bin_number is not None:
                raise ConfigError("discretisation fixed_bin_size needs a positive bin_width and no bin_number")
        elif self.method == "fixed_bin_number":
            if self.bin_number is None or self.bin_number < 1 or self.bin_width is not None or self.lower_bound is not None:
                raise ConfigError("discretisation fixed_bin_number needs bin_number >= 1 and no bin_width or lower_bound")
        else:
            raise ConfigError(f"discretisation.method must be fixed_bin_size or fixed_bin_number. Found: {self.method!r}")

    def resolve(self, roi_values: np.ndarray, resegmentation: Resegmentation) -> Binning:
        """The bins for one ROI (its intensity-mask values), shared by every slice and feature class."""
        low, high = float(roi_values.min()), float(roi_values.max())
        if self.method == "fixed_bin_number":
            return Binning(low, high, self.bin_number, None)
        origin = self.lower_bound if self.lower_bound is not None else resegmentation.lower_bound
        origin = low if origin is None else float(origin)
        if low < origin:
            raise FeatureExtractionError(f"ROI intensity {low:g} is below the fixed-bin-size lower bound {origin:g}; "
                                         "set a re-segmentation range that starts at the lower bound")
        return Binning(origin, high, None, float(self.bin_width))  # type: ignore[arg-type]


#: A value within 1e-9 of a bin edge (in bin widths) is on the edge: interpolation leaves values that are
#: mathematically on an edge 1e-12 either side of it, depending on where the grid origin was computed from.
EDGE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Binning:
    """Discretisation resolved on one ROI: ``indices`` maps intensities to bins 1, 2, …"""

    low: float
    high: float
    bin_number: int | None
    bin_width: float | None

    @property
    def top(self) -> int:
        """The highest bin index in the ROI, i.e. the number of grey levels N_g."""
        return int(self.indices(np.array([self.high]))[0])

    def indices(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each intensity, as integers (IBSI formulas, not numpy.histogram edges)."""
        if self.bin_width is not None:
            return np.floor((values - self.low) / self.bin_width + EDGE_TOLERANCE).astype(np.int64) + 1
        assert self.bin_number is not None
        if self.high == self.low:
            return np.ones(values.shape, dtype=np.int64)
        bins = np.floor(self.bin_number * (values - self.low) / (self.high - self.low) + EDGE_TOLERANCE).astype(np.int64) + 1
        return np.minimum(bins, self.bin_number)


class _IbsiBinning:
    """Mixin for pyradiomics feature classes: discretise with the ROI's resolved IBSI :class:`Binning`."""

    settings: dict[str, Any]
    maskArray: np.ndarray
    coefficients: dict[str, Any]

    def _applyBinning(self, matrix: np.ndarray) -> np.ndarray:  # noqa: N802 (pyradiomics' name)
        binning: Binning = self.settings["ibsi_binning"]
        binned = np.zeros(matrix.shape, dtype=np.int64)
        binned[self.maskArray] = binning.indices(matrix[self.maskArray])
        self.coefficients["grayLevels"] = np.unique(binned[self.maskArray])
        # Ng is the number of grey levels of the whole ROI, also on a 2-D slice (pyradiomics: of the slice).
        self.coefficients["Ng"] = binning.top
        return binned


@lru_cache(maxsize=None)
def feature_class(name: str) -> type:
    """The IBSI-mode feature class ``name``: pyradiomics' class (untouched) subclassed, or one of the pipeline's.

    pyradiomics' classes get the IBSI discretisation and the features of their family that pyradiomics lacks
    (``families.EXTENSIONS``); the families pyradiomics lacks are the pipeline's own (``families.CLASSES``).
    A subclass keeps its base's module name so its log messages stay under that logger.
    """
    from radiomics import getFeatureClasses

    from . import families

    base = families.CLASSES.get(name) or getFeatureClasses()[name]
    extension = families.EXTENSIONS.get(name)
    bases = ((extension,) if extension else ()) + ((base,) if name == "shape" else (_IbsiBinning, base))
    namespace: dict[str, Any] = {"__module__": base.__module__}
    if name == "shape":
        def init(self: Any) -> None:
            """pyradiomics' shape set-up, then axis eigenvalues from the sample covariance (n - 1), as IBSI defines."""
            base._initSegmentBasedCalculation(self)
            n = len(self.labelledVoxelCoordinates[0])
            if n > 1:
                self.eigenValues = self.eigenValues * (n / (n - 1))

        namespace["_initSegmentBasedCalculation"] = init
    return type(f"Ibsi{base.__name__}", bases, namespace)


def computed_by(feature: str) -> str:
    """Which engine computes a feature (``class_Feature``): ``pyradiomics`` or ``palmares`` (``families/``)."""
    name, _, short = feature.partition("_")
    method = getattr(feature_class(name), f"get{short}FeatureValue")
    return "pyradiomics" if method.__module__.startswith("radiomics") else "palmares"


def run_class(name: str, image: sitk.Image, mask: sitk.Image, features: Sequence[str] | None,
              settings: Mapping[str, Any]) -> dict[str, float]:
    """Run one IBSI-mode feature class on ``image``/``mask`` (label 1); ``features`` None enables all.

    Numerical warnings from numpy are silenced so the values never depend on the caller's warning
    filters (pyradiomics turns an exception inside a feature into NaN).
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        instance = feature_class(name)(image, mask, **settings)
        if features:
            for feature in features:
                instance.enableFeatureByName(feature)
        else:
            instance.enableAllFeatures()
        return {f"{name}_{key}": float(value) for key, value in instance.execute().items()}


def run_texture(name: str, image: sitk.Image, mask: sitk.Image, features: Sequence[str] | None,
                settings: Mapping[str, Any], aggregation: Aggregation) -> dict[str, float]:
    """One texture class with one IBSI aggregation; 2-D features are averaged over the ROI's slices."""
    settings = {**settings, **aggregation.pyradiomics_settings()}
    if aggregation.dimensionality != "2D":
        return run_class(name, image, mask, features, settings)
    label = settings.get("label", 1)
    counts = (sitk.GetArrayViewFromImage(mask) == label).reshape(mask.GetSize()[2], -1).sum(axis=1)
    per_slice = [run_class(name, image[:, :, z:z + 1], mask[:, :, z:z + 1], features, settings)
                 for z in np.flatnonzero(counts)]
    undefined = {key: sum(not math.isfinite(values[key]) for values in per_slice) for key in per_slice[0]}
    if any(undefined.values()):
        log.info("%s %s: averaged over the slices where each feature is defined (undefined on some slices: %s of %d)",
                 name, aggregation.code, ", ".join(f"{k} {n}" for k, n in undefined.items() if n), len(per_slice))
    return {key: _mean([values[key] for values in per_slice]) for key in per_slice[0]}


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values (a slice where a feature is undefined does not count), NaN if none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
