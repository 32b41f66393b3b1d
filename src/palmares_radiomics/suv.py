"""PET SUV conversion that refuses to guess and shows its working (the "SUV card").

SUVbw [g/ml] = A [Bq/ml] / (D [Bq] / W [g]) where A is the rescaled voxel value
(stored value x RescaleSlope + RescaleIntercept, per slice) and D the injected activity decayed
to the decay-reference time of the image. Every conversion returns a :class:`SuvCard` holding
the header values used, the decision-tree branch taken, the decay factor, the uptake time, the
scale factor(s) and plausibility checks; a series that cannot be converted without guessing
gets a card with ``refused_reason`` instead of a factor (no default weight, dose or time).

References
----------
- QIBA vendor-neutral SUV pseudo-code (as implemented in PixelMed ``SUVTransform``;
  QIBA FDG-PET/CT profile v1.13, Appendix G/H).
- Vacha, Hofheinz, Braune, Loeck, Zwanenburg: "Comprehensive Manual for SUV Computation and
  Digital Reference Objects for its Verification" (IBSI SUV manual, oncoray/suv_computation).
- Janmahasatian et al., Clin Pharmacokinet 2005;44:1051-65 (lean body mass for SUL).
- Du Bois & Du Bois, Arch Intern Med 1916;17:863-71 (body surface area for SUVbsa).
- DICOM PS3.3 C.8.9.4 (PET Image module: Units, Decay Correction, Corrected Image, SUV Type).

Decision tree (branch labels as in ``../shared/data/suv/suv-reference-cases.csv``)
-------------------------------------------------------------------------------
- ``units=BQML``: activity concentration. DecayCorrection
  ``START``: factor = W[g] / (D_adm * exp(-lambda * (t_ref - t_adm))), with t_ref the
  SeriesDate/Time when it is not after the earliest AcquisitionDate/Time (+ tolerance),
  else GE private scan datetime (0009,100D), else the back-computed frame start
  t_acq + T_ave - FrameReferenceTime (T_ave = ln(lambda*T / (1 - exp(-lambda*T))) / lambda,
  T = ActualFrameDuration), else the earliest acquisition time;
  ``ADMIN``: factor = W[g] / D_adm (the image is already decayed to the injection);
  ``NONE``: per image, factor = W[g] / D_adm * lambda*T / (1 - exp(-lambda*T)) * exp(lambda*(t_acq - t_adm)).
  Philips (7053,1000)/(7053,1009) are never applied to BQML, only compared as a check.
- ``units=CNTS``: only Philips: SUV Scale Factor (7053,1000) when present and non-zero
  (it multiplies the rescaled counts), else Activity Concentration Scale Factor (7053,1009)
  x the BQML factor above. Both are found with or without their private creator.
- ``units=GML``: already SUV; SUVType BW (or absent) -> 1, LBM / LBMJAMES128 / LBMJANMA / IBW ->
  W / (that body size). ``units=CM2ML`` (SUVbsa) -> W[g] / BSA[cm2] (Du Bois).
- anything else, a non-attenuation-corrected series (CorrectedImage without ATTN), a
  DecayCorrection that contradicts CorrectedImage's DECY, a missing or zero weight, dose,
  half-life or injection time, or a negative uptake time: refused, with the reason.

Plausibility bounds (issue 14, "no silent wrong number"): a weight, height, injected dose or uptake time
that is present but outside ``WEIGHT_RANGE_KG``, ``HEIGHT_RANGE_M``, ``DOSE_RANGE_BQ`` or
``UPTAKE_RANGE_S`` refuses the series, the reason naming every failed check (``weight_range``,
``height_range``, ``dose_range``, ``uptake_time``): such a value gives SUVs that look plausible but are
wrong by the same factor. An audited per-patient :class:`SuvOverride` (config ``suv_overrides``) replaces a
header value, or confirms an out-of-range one by giving the same value; it is shown on the card. The
RadiopharmaceuticalStartTime midnight wrap is assumed only when the wrapped uptake is not above the
uptake bound (the series started shortly after midnight); otherwise the negative uptake is refused. A
FrameReferenceTime of 0 (impossible for a frame of non-zero duration) is never back-computed: the earliest
acquisition time is used (QIBA), with a ``frame_reference_time`` check saying so. Refusal messages give
uptakes in minutes, never clock times or dates.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from .bodysize import bsa_du_bois_m2, ibw_kg, lbm_james_kg, lbm_janmahasatian_kg
from .errors import ConfigError, DicomReadError, SuvError

__all__ = [
    "SuvCard",
    "SuvCheck",
    "SuvOptions",
    "SuvOverride",
    "suv_card",
    "suv_card_for_series",
    "to_suv",
    "to_suvbw",
    "with_image_check",
]

ENHANCED_PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.130"
PHILIPS_CREATOR = "PHILIPS PET PRIVATE GROUP"
GE_PET_CREATOR = "GEMS_PETD_01"
_SEX_VALUES = ("M", "F")
#: Whole-image check: mean SUVbw of the "body" voxels (SUVbw >= BODY_SUV_THRESHOLD). If all injected
#: activity were in the field of view the mean over the body would be 1 by definition; excretion,
#: a partial field of view and air in the body move it, hence the wide range (TCIA STS_001: 0.81).
BODY_SUV_THRESHOLD = 0.1
BODY_MEAN_SUV_RANGE = (0.3, 3.0)
#: Liver-region check: mean SUVbw of normal liver in FDG PET (EANM/EARL and PERCIST reference region, ~2-3).
LIVER_MEAN_SUV_RANGE = (1.0, 4.0)
#: Plausibility bounds (issue 14): a header value outside them refuses the series (never a plausible-looking
#: wrong SUV); an audited per-patient override (``SuvOverride``, config ``suv_overrides``) lets one through.
#: Adult body weight, kg: PALMARES-2 enrols adults; below 30 kg is a typo (7.44 for 74.4 kg makes every SUV ten
#: times too low), above 250 kg exceeds PET/CT table limits (about 200-250 kg) and is grams, pounds or a typo.
WEIGHT_RANGE_KG = (30.0, 250.0)
#: Adult height, m (DICOM PatientSize is in metres): 1.2-2.2 m; a value of 100-250 is a height in centimetres.
HEIGHT_RANGE_M = (1.2, 2.2)
#: Injected FDG activity, Bq (DICOM RadionuclideTotalDose is in Bq): EANM 2015 adult FDG activities are about
#: 2-7 MBq/kg, i.e. about 100-700 MBq over the weight range above; 20 MBq - 1 GBq leaves room for low-dose
#: protocols and heavy patients while catching MBq or kBq stored as Bq (a "10" read as 10 MBq is refused).
DOSE_RANGE_BQ = (20.0e6, 1.0e9)
#: Uptake time (injection to decay reference), s: EANM/SNMMI FDG protocols scan 60 min after injection
#: (55-75 min recommended, 45-90 accepted in trials); 20-180 min also admits early and delayed (dual time point)
#: imaging. A 23 h "uptake" (injection time after the series time wrapped through midnight) or a 5 min one is
#: a wrong time, and the decay correction from it would be wrong by a large factor.
UPTAKE_RANGE_S = (1200.0, 10800.0)
#: An override value "equals" the header's within these tolerances (then it confirms an out-of-range header
#: value instead of replacing it): relative 1e-6 for weight, height and dose; 0.5 min for the uptake (given in
#: whole minutes, the header's is to the second, which is then used).
_OVERRIDE_REL_TOL = 1e-6
_OVERRIDE_UPTAKE_TOL_S = 30.0


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class SuvOverride:
    """An audited override of one patient's SUV inputs (config ``suv_overrides``; validated on creation).

    Each value given replaces the header's (weight in kg, height in m, injected dose in Bq, uptake time in
    minutes), or, when it equals the header's, confirms an out-of-range header value (the plausibility bound
    is then not applied). A replacement must itself be within the bounds. ``reason`` (required) is shown on
    the SUV card with every overridden input.
    """

    reason: str
    weight_kg: float | None = None
    height_m: float | None = None
    dose_bq: float | None = None
    uptake_min: float | None = None

    #: value key -> (allowed open/closed range, unit) for the sanity check of a given value (not the bounds)
    _LIMITS = MappingProxyType({"weight_kg": ((0.0, 1000.0), "kg"), "height_m": ((0.3, 2.75), "m"),
                                "dose_bq": ((0.0, 1.0e11), "Bq"), "uptake_min": ((0.0, 1440.0), "min")})

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ConfigError("an SUV override needs a reason (who decided, on what source)")
        given = [key for key in self._LIMITS if getattr(self, key) is not None]
        if not given:
            raise ConfigError("an SUV override gives none of weight_kg, height_m, dose_bq, uptake_min")
        for key in given:
            value = getattr(self, key)
            (low, high), unit = self._LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise ConfigError(f"SUV override {key} must be a number in ({low:g}, {high:g}] {unit}. Found: {value!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SuvOverride:
        """From one ``suv_overrides`` entry (``{weight_kg: ..., reason: ...}``); ``ValueError`` naming what is wrong."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"an SUV override must be a mapping. Found: {type(mapping).__name__}")
        unknown = sorted(set(mapping) - {"reason", *cls._LIMITS})
        if unknown:
            raise ConfigError(f"unknown SUV override key(s) {unknown}; allowed: reason, {', '.join(cls._LIMITS)}")
        if "reason" not in mapping:
            raise ConfigError("an SUV override needs a reason (who decided, on what source)")
        return cls(**dict(mapping))

    def to_json_dict(self) -> dict[str, Any]:
        """The values given (absent ones omitted) and the reason."""
        return {key: getattr(self, key) for key in ("reason", *self._LIMITS) if getattr(self, key) is not None}


@dataclass(frozen=True, slots=True)
class SuvOptions:
    """How the SUV stage treats the few things the DICOM standard leaves open (validated on creation).

    - ``sul`` / ``suvbsa``: also compute the SUL (Janmahasatian) and SUVbsa (Du Bois) factors.
    - ``time_tolerance_s``: SeriesDateTime counts as "not after" the earliest acquisition when it
      is at most this much later (scanners write them a second apart); also the tolerance for the
      back-computed times of different images to agree.
    - ``dose_mbq_below``: a stored RadionuclideTotalDose below this value is read as MBq (IBSI SUV
      manual: stored doses cluster at ~4e2 and ~4e8); ``None`` reads every dose as Bq, as the
      standard says.
    - ``sex_other``: PatientSex O (or any value but M/F) where a sex-specific body-size formula is
      needed: ``"mean"`` of the male and female values (IBSI SUV manual) or ``"refuse"``.
    - ``weight_range_kg``, ``height_range_m``, ``dose_range_bq``: plausibility bounds (module constants, with
      their reasons); a header value outside is refused (checks ``weight_range``, ``height_range``,
      ``dose_range``). ``None`` switches a bound off (only for synthetic arithmetic fixtures).
    - ``uptake_range_s``: plausible uptake time; outside it the series is refused where the uptake enters
      the factor (DecayCorrection START and NONE), a ``warn`` check for ADMIN (the factor does not use it);
      also the limit of the RadiopharmaceuticalStartTime midnight wrap. ``None``: check only against nothing.
    - ``vendor_factor_tolerance``: relative agreement asked of the Philips factors (check only).
    - ``override``: this patient's audited :class:`SuvOverride`, or ``None``.
    """

    sul: bool = False
    suvbsa: bool = False
    time_tolerance_s: float = 2.0
    dose_mbq_below: float | None = 1.0e4
    sex_other: Literal["mean", "refuse"] = "mean"
    weight_range_kg: tuple[float, float] | None = WEIGHT_RANGE_KG
    height_range_m: tuple[float, float] | None = HEIGHT_RANGE_M
    dose_range_bq: tuple[float, float] | None = DOSE_RANGE_BQ
    vendor_factor_tolerance: float = 0.01
    uptake_range_s: tuple[float, float] | None = UPTAKE_RANGE_S
    override: SuvOverride | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.time_tolerance_s <= 60:
            raise ConfigError(f"time_tolerance_s must be between 0 and 60 s. Found: {self.time_tolerance_s}")
        if self.dose_mbq_below is not None and not 0 < self.dose_mbq_below <= 1e6:
            raise ConfigError(f"dose_mbq_below must be None or in (0, 1e6]. Found: {self.dose_mbq_below}")
        if self.sex_other not in ("mean", "refuse"):
            raise ConfigError(f"sex_other must be 'mean' or 'refuse'. Found: {self.sex_other!r}")
        if not 0 < self.vendor_factor_tolerance < 1:
            raise ConfigError(f"vendor_factor_tolerance must be in (0, 1). Found: {self.vendor_factor_tolerance}")
        for name in ("weight_range_kg", "height_range_m", "dose_range_bq", "uptake_range_s"):
            bounds = getattr(self, name)
            if bounds is not None and not (len(bounds) == 2 and 0 <= bounds[0] < bounds[1]):
                raise ConfigError(f"{name} must be None or (low, high) with 0 <= low < high. Found: {bounds}")
        if self.override is not None and not isinstance(self.override, SuvOverride):
            raise ConfigError(f"override must be a SuvOverride or None. Found: {type(self.override).__name__}")


@dataclass(frozen=True, slots=True)
class SuvCheck:
    """One plausibility check on a card: ``outcome`` is ``pass``, ``warn`` or ``n/a`` (never blocks), or ``fail``:
    a plausibility bound that refused the series (only on a refused card, named in its ``refused_reason``)."""

    name: str
    outcome: Literal["pass", "warn", "n/a", "fail"]
    detail: str
    value: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"name": self.name, "outcome": self.outcome, "detail": self.detail, "value": self.value}


@dataclass(frozen=True, slots=True)
class SuvCard:
    """What the SUV stage did for one series, in a form QC and a reviewer can read (no PHI).

    ``suvbw_scale_factor`` multiplies the rescaled image (SV x RescaleSlope + RescaleIntercept)
    into SUVbw [g/ml]; ``None`` exactly when ``refused_reason`` is set. When the factor differs
    between images (DecayCorrection NONE with several acquisition times, or per-image Philips
    factors), ``suvbw_scale_factor`` is the factor of the earliest-acquired image and
    ``slice_factors`` holds (slice position along the slice normal in mm, factor) for every image;
    :func:`to_suv` applies them slice by slice. ``decay_factor`` is D_adm / D(t_ref) (>= 1, the
    DICOM DecayFactor convention); ``uptake_s`` is scan reference minus injection in seconds.
    ``sul_scale_factor`` and ``suvbsa_scale_factor`` multiply the same rescaled image into SUL
    [g/ml] and SUVbsa [cm2/ml] (``None`` unless requested and computable; see ``checks``).
    ``overrides``: the patient's audited override (config ``suv_overrides``), ``None`` without one:
    ``reason``, the values ``given``, and ``applied``: per input used (``weight_kg``, ``height_m``,
    ``dose_bq``, ``uptake_min``) the header value, the value used and the ``action`` (``replaced`` the
    header's, or ``confirmed`` it, letting an out-of-range value through); ``inputs`` hold the values used.
    """

    suvbw_scale_factor: float | None
    refused_reason: str | None
    branch: str
    inputs: Mapping[str, Any]
    decay_factor: float | None = None
    uptake_s: float | None = None
    decay_reference: str | None = None
    sul_scale_factor: float | None = None
    suvbsa_scale_factor: float | None = None
    checks: tuple[SuvCheck, ...] = ()
    n_images: int = 0
    slice_normal: tuple[float, float, float] | None = None
    slice_factors: tuple[tuple[float, float], ...] | None = None
    overrides: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.suvbw_scale_factor is None) == (self.refused_reason is None):
            raise ValueError("a SUV card has either a scale factor or a refusal reason, not both or neither")
        if self.suvbw_scale_factor is not None and not (
            math.isfinite(self.suvbw_scale_factor) and self.suvbw_scale_factor > 0
        ):
            raise ValueError(f"the SUVbw scale factor must be finite and positive. Found: {self.suvbw_scale_factor}")

    @property
    def refused(self) -> bool:
        """True when the series must not be converted."""
        return self.refused_reason is not None

    def to_json_dict(self) -> dict[str, Any]:
        """The card as a JSON-able dict (keys sorted by the writer): what ``palmares suv --json`` prints."""
        return {
            "suvbw_scale_factor": self.suvbw_scale_factor,
            "refused_reason": self.refused_reason,
            "branch": self.branch,
            "inputs": _jsonable(dict(self.inputs)),
            "decay_factor": self.decay_factor,
            "uptake_s": self.uptake_s,
            "decay_reference": self.decay_reference,
            "sul_scale_factor": self.sul_scale_factor,
            "suvbsa_scale_factor": self.suvbsa_scale_factor,
            "checks": [c.to_json_dict() for c in self.checks],
            "n_images": self.n_images,
            "factor_varies_by_slice": self.slice_factors is not None,
            "slice_normal": list(self.slice_normal) if self.slice_normal is not None else None,
            "slice_factors": [list(p) for p in self.slice_factors] if self.slice_factors is not None else None,
            "overrides": _jsonable(dict(self.overrides)) if self.overrides is not None else None,
        }

    def to_text(self) -> str:
        """The card as aligned text lines for a person (what ``palmares suv`` prints without ``--json``).

        Verdict, refusal reason, branch, decay reference, every input with its unit (in the order the
        decision tree read them), the factors, and one line per check (outcome, value, what was checked).
        Numbers are rounded to 6 significant digits; ``--json`` gives them in full.
        """
        rows: list[tuple[str, str | None]] = [  # (label, value); value None = a section heading
            ("verdict", "REFUSED: no SUV computed" if self.refused else "converted to SUVbw")]
        if self.refused:
            rows.append(("refusal reason", str(self.refused_reason)))
        rows += [("branch", self.branch or "-"), ("decay reference", self.decay_reference or "-"),
                 ("images", str(self.n_images)), ("inputs", None)]
        applied = dict(self.overrides["applied"]) if self.overrides is not None else {}
        for key, value in self.inputs.items():
            if key != "n_images":  # the "images" line above
                label, unit = _text_label(key)
                note = _override_note(applied.get(_OVERRIDE_INPUTS.get(key, "")), unit)
                rows.append((f"  {label}", _text_value(value, unit) + note))
        if self.overrides is not None:
            given = self.overrides["given"]
            rows += [("override (config suv_overrides)", None), ("  reason", str(self.overrides["reason"])),
                     ("  values given", ", ".join(f"{k} {_text_number(v)}" for k, v in given.items() if k != "reason")),
                     ("  values used", ", ".join(f"{k} ({v['action']})" for k, v in applied.items()) or "none")]
        rows.append((f"factors (multiply the rescaled image, Units {self.inputs.get('units') or 'absent'})", None))
        named = {c.name: c for c in self.checks}
        for name, factor, unit in (("SUVbw", self.suvbw_scale_factor, "g/ml"), ("SUL", self.sul_scale_factor, "g/ml"),
                                   ("SUVbsa", self.suvbsa_scale_factor, "cm2/ml")):
            if factor is not None:
                text = f"{_text_number(factor)} (gives {name} in {unit})"
            elif self.refused:
                text = "none (refused)"
            elif name.lower() in named:
                text = f"not computed: {named[name.lower()].detail}"
            else:
                text = "not requested"
            rows.append((f"  {name} scale factor", text))
        if self.slice_factors is not None:
            values = [f for _, f in self.slice_factors]
            rows.append(("  SUVbw factor varies by slice", f"{len(values)} images, {_text_number(min(values))} to "
                         f"{_text_number(max(values))} (the SUVbw factor above is the earliest image's)"))
        rows.append(("  decay factor (D_adm / D(t_ref))",
                     "not computed" if self.decay_factor is None else _text_number(self.decay_factor)))
        rows.append(("  uptake time", "not computed" if self.uptake_s is None
                     else f"{_text_number(self.uptake_s)} s ({self.uptake_s / 60:.1f} min)"
                     + _override_note(applied.get("uptake_min"), "min")))
        rows.append(("checks" if self.checks else "checks: none", None))
        for check in self.checks:
            value = "" if check.value is None else _text_number(check.value)
            rows.append((f"  {check.name}", f"{check.outcome:<6}{value:<13}{check.detail}".rstrip()))
        width = max(len(label) for label, value in rows if value is not None) + 2
        return "\n".join(label if value is None else f"{label:<{width}}{value}" for label, value in rows)


#: Unit suffixes of the card's input keys, longest first (``half_life_s`` -> "half life", s).
_INPUT_UNITS = (("_days", "days"), ("_cm2", "cm2"), ("_ms", "ms"), ("_kg", "kg"), ("_bq", "Bq"), ("_s", "s"),
                ("_m", "m"))


#: Card input key -> the override key that sets it (the uptake has no input key: the card's ``uptake_s``).
_OVERRIDE_INPUTS = MappingProxyType({"weight_kg": "weight_kg", "height_m": "height_m", "total_dose_bq": "dose_bq"})


def _override_note(entry: Mapping[str, Any] | None, unit: str) -> str:
    """`` [overridden: replaced header 7.44 kg]`` for an input an override set; empty otherwise."""
    if entry is None:
        return ""
    return f" [overridden: {entry['action']} header {_text_value(entry['header'], unit)}; see override below]"


def _text_label(key: str) -> tuple[str, str]:
    for suffix, unit in _INPUT_UNITS:
        if key.endswith(suffix):
            return key[: -len(suffix)].replace("_", " "), unit
    return key.replace("_", " "), ""


def _text_number(value: float) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    number = float(value)
    if number.is_integer() and abs(number) < 1e12:
        return str(int(number))
    return f"{number:.6g}"


def _text_value(value: Any, unit: str) -> str:
    if value is None:
        return "absent"
    if isinstance(value, (list, tuple)):
        if not value:
            return "absent"
        shown = [_text_value(v, "") for v in value[:8]]
        more = f", ... ({len(value)} values)" if len(value) > 8 else ""
        return ", ".join(shown) + more + (f" {unit}" if unit else "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _text_number(value) + (f" {unit}" if unit else "")
    return str(value) + (f" {unit}" if unit else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# --------------------------------------------------------------------------- DICOM value parsing

_TM_RE = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _parse_tm(text: str, what: str) -> float:
    """TM (HH[MM[SS[.F]]], ACR-NEMA colons tolerated) -> seconds since midnight."""
    s = text.strip().replace(":", "")
    m = _TM_RE.match(s)
    if not m:
        raise SuvError(f"{what} {text!r} is not a valid DICOM time (HHMMSS.FFFFFF)")
    hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    frac = float("0" + m.group(4)) if m.group(4) else 0.0
    if hh > 23 or mm > 59 or ss > 60:
        raise SuvError(f"{what} {text!r} is not a valid DICOM time (hour, minute or second out of range)")
    return hh * 3600 + mm * 60 + ss + frac


def _parse_da(text: str, what: str) -> _dt.date:
    s = text.strip().replace(".", "")
    try:
        if len(s) != 8:
            raise ValueError
        return _dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        raise SuvError(f"{what} {text!r} is not a valid DICOM date (YYYYMMDD)") from None


def _combine(date: _dt.date, seconds: float) -> _dt.datetime:
    return _dt.datetime(date.year, date.month, date.day) + _dt.timedelta(seconds=seconds)


def _parse_dt(text: str, what: str) -> tuple[_dt.datetime, str | None]:
    """DT (YYYYMMDDHHMMSS.FFFFFF[&ZZXX]) -> naive datetime and the UTC offset text if any."""
    s = text.strip()
    offset = None
    m = re.match(r"^(\d+(?:\.\d+)?)([+-]\d{4})?$", s)
    if not m:
        raise SuvError(f"{what} {text!r} is not a valid DICOM datetime (YYYYMMDDHHMMSS.FFFFFF)")
    body, offset = m.group(1), m.group(2)
    if len(body.split(".")[0]) < 12:
        raise SuvError(f"{what} {text!r} does not give the time to the minute; it cannot be used for decay correction")
    return _combine(_parse_da(body[:8], what), _parse_tm(body[8:], what)), offset


def _float(value: Any, what: str) -> float | None:
    """A numeric header value (DS/IS/FD, or bytes of an undecoded private DS) -> float; None when absent/empty."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        try:
            value = raw.decode("ascii").strip("\x00 ").split("\\")[0]
        except UnicodeDecodeError:
            if len(raw) == 8:
                return float(np.frombuffer(raw, "<f8")[0])
            if len(raw) == 4:
                return float(np.frombuffer(raw, "<f4")[0])
            raise SuvError(f"{what} cannot be read as a number") from None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if len(value) == 0:
            return None
        value = value[0]
    text = str(value).strip()
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        raise SuvError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(number):
        raise SuvError(f"{what} is {text!r}, not a finite number")
    return number


# --------------------------------------------------------------------------- header access


@dataclass(slots=True)
class _Image:
    """The per-image header values the conversion needs."""

    acquisition: _dt.datetime | None
    frame_reference_ms: float | None
    frame_duration_ms: float | None
    position: float | None
    philips_suv: float | None
    philips_acsf: float | None


def _common(
    datasets: Sequence[pydicom.Dataset], keyword: str, label: str, parse: Callable[[str, str], Any] | None = None
) -> Any:
    """The value of ``keyword`` shared by every image (None if absent everywhere); refuse if images disagree.

    Text values are compared stripped (multi-valued: upper-cased tuples); with ``parse`` (e.g. a number
    or a time parser) the parsed values are compared, so '70' and '70.0' agree; the text is returned.
    """
    values, keys = [], []
    for ds in datasets:
        v = ds.get(keyword)
        if isinstance(v, (pydicom.multival.MultiValue, list, tuple)):
            v = tuple(_text(x).upper() for x in v)
        elif v is not None:
            v = _text(v)
            if v == "":
                v = None
        values.append(v)
        keys.append(parse(v, label) if parse is not None and isinstance(v, str) else v)
    if len(set(keys)) > 1:
        raise SuvError(
            f"{label} differs between the images of the series ({len(set(keys))} values): one series must have one value"
        )
    return values[0]


def _radiopharmaceutical(datasets: Sequence[pydicom.Dataset]) -> pydicom.Dataset:
    items = []
    for ds in datasets:
        seq = ds.get("RadiopharmaceuticalInformationSequence")
        if not seq:
            raise SuvError(
                "RadiopharmaceuticalInformationSequence (0054,0016) is absent: injected dose and time are unknown"
            )
        if len(seq) > 1:
            raise SuvError(
                f"RadiopharmaceuticalInformationSequence has {len(seq)} items: which injection the image shows is ambiguous"
            )
        items.append(seq[0])

    def key(item: pydicom.Dataset) -> tuple[Any, ...]:
        return (
            _float(item.get("RadionuclideTotalDose"), "RadionuclideTotalDose (0018,1074)"),
            _float(item.get("RadionuclideHalfLife"), "RadionuclideHalfLife (0018,1075)"),
            _text(item.get("RadiopharmaceuticalStartDateTime")),
            _text(item.get("RadiopharmaceuticalStartTime")),
        )

    first = key(items[0])
    for item in items[1:]:
        if key(item) != first:
            raise SuvError("the radiopharmaceutical dose, half-life or start time differs between images of the series")
    return items[0]


def _private(ds: pydicom.Dataset, group: int, element_low: int, creator: str) -> tuple[Any, str] | None:
    """Find private (group, xx``element_low``) via its creator, or at block 0x10 when no creator is written.

    Returns (value, how) or None. A block reserved by a different creator is never read as ours.
    """
    blocks_for_us: list[int] = []
    reserved = set()
    for block in range(0x10, 0x100):
        tag = (group << 16) | block
        if tag in ds:
            name = _text(ds[tag].value).upper()
            reserved.add(block)
            if name == creator:
                blocks_for_us.append(block)
    for block in blocks_for_us:
        tag = (group << 16) | (block << 8) | element_low
        if tag in ds:
            return ds[tag].value, f"with private creator {creator!r}"
    if 0x10 not in reserved:
        tag = (group << 16) | 0x1000 | element_low
        if tag in ds:
            return ds[tag].value, "without private creator element"
    return None


def _philips_factors(ds: pydicom.Dataset) -> tuple[float | None, float | None, str | None]:
    suv = _private(ds, 0x7053, 0x00, PHILIPS_CREATOR)
    acsf = _private(ds, 0x7053, 0x09, PHILIPS_CREATOR)
    how = (suv or acsf or (None, None))[1]
    return (
        _float(suv[0], "Philips SUV Scale Factor (7053,1000)") if suv else None,
        _float(acsf[0], "Philips Activity Concentration Scale Factor (7053,1009)") if acsf else None,
        how,
    )


def _acquisition_datetime(ds: pydicom.Dataset, series_date: _dt.date | None) -> _dt.datetime | None:
    date_text, time_text = _text(ds.get("AcquisitionDate")), _text(ds.get("AcquisitionTime"))
    if time_text:
        if date_text:
            date = _parse_da(date_text, "AcquisitionDate")
        elif series_date is not None:
            date = series_date
        else:
            raise SuvError("AcquisitionTime is present but neither AcquisitionDate nor SeriesDate is")
        return _combine(date, _parse_tm(time_text, "AcquisitionTime"))
    dt_text = _text(ds.get("AcquisitionDateTime"))
    if dt_text:
        return _parse_dt(dt_text, "AcquisitionDateTime")[0]
    return None


def _slice_geometry(
    datasets: Sequence[pydicom.Dataset],
) -> tuple[tuple[float, float, float] | None, list[float | None]]:
    iop = datasets[0].get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None, [None] * len(datasets)
    row, col = np.asarray([float(v) for v in iop[:3]]), np.asarray([float(v) for v in iop[3:]])
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm == 0:
        return None, [None] * len(datasets)
    normal /= norm
    positions: list[float | None] = []
    for ds in datasets:
        ipp = ds.get("ImagePositionPatient")
        positions.append(float(np.dot(normal, [float(v) for v in ipp])) if ipp is not None and len(ipp) == 3 else None)
    return (float(normal[0]), float(normal[1]), float(normal[2])), positions


def _clock(t: _dt.datetime) -> str:
    """Time of day only (no date: dates are PHI before de-identification)."""
    return t.strftime("%H:%M:%S.%f").rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- the conversion


@dataclass(slots=True)
class _Work:
    """Mutable scratch state while one card is built (the card itself is frozen)."""

    options: SuvOptions
    inputs: dict[str, Any] = field(default_factory=dict)
    branch: list[str] = field(default_factory=list)
    checks: list[SuvCheck] = field(default_factory=list)
    decay_factor: float | None = None
    uptake_s: float | None = None
    decay_reference: str | None = None
    #: plausibility checks of weight, height and dose (appended after the others when the card is made)
    bounds: list[SuvCheck] = field(default_factory=list)
    #: failed plausibility checks: (check name, what is wrong); the series is refused once all are known
    implausible: list[tuple[str, str]] = field(default_factory=list)
    #: override key -> {header, used, action} for every input an override set
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any] | None:
        override = self.options.override
        if override is None:
            return None
        return {"reason": override.reason, "given": override.to_json_dict(), "applied": dict(self.applied)}

    def implausible_reason(self) -> str:
        """The refusal sentence naming every failed plausibility check (no dates or clock times)."""
        names = ", ".join(dict.fromkeys(name for name, _ in self.implausible))
        problems = "; ".join(problem for _, problem in self.implausible)
        return (f"implausible SUV input, no SUV computed (failed check: {names}): {problems}. Correct the header, or "
                "add an audited suv_overrides entry (with its reason) for this patient in the configuration")


def _refuse_if_implausible(work: _Work) -> None:
    work.checks.extend(work.bounds)
    work.bounds.clear()
    if work.implausible:
        raise SuvError(work.implausible_reason())


def suv_card(datasets: Sequence[pydicom.Dataset], options: SuvOptions | None = None) -> SuvCard:
    """Build the SUV card of one PET series from its image headers (pixel data not needed).

    Never raises for a series that cannot be converted: the card then carries ``refused_reason``
    (a sentence naming the header value and what to fix) and ``suvbw_scale_factor`` is None.
    Formulas and branch order: module docstring (QIBA vendor-neutral pseudo-code, IBSI SUV manual).
    """
    options = options or SuvOptions()
    work = _Work(options)
    try:
        try:
            return _build(list(datasets), work)
        except ValueError as exc:  # a header value pydicom cannot convert (e.g. a DS "1,75"): a refusal, never a crash
            raise SuvError(f"a header value cannot be read as its DICOM type ({exc})") from None
    except SuvError as exc:
        reason = str(exc)
        if work.implausible and not reason.startswith("implausible SUV input"):
            reason = f"{work.implausible_reason()} Also: {reason}"
        work.checks.extend(work.bounds)
        work.branch.append("refuse")
        return SuvCard(
            suvbw_scale_factor=None,
            refused_reason=reason,
            branch=";".join(work.branch),
            inputs=MappingProxyType(dict(work.inputs)),
            decay_factor=work.decay_factor,
            uptake_s=work.uptake_s,
            decay_reference=work.decay_reference,
            checks=tuple(work.checks),
            n_images=len(datasets),
            overrides=work.overrides(),
        )


def suv_card_for_series(series_dir: str | Path, options: SuvOptions | None = None) -> SuvCard:
    """Read the headers (``stop_before_pixels``) of the PET images in one series folder and build its card.

    Files that are not DICOM are skipped; a folder without PET images, or with PET images of
    more than one series, raises :class:`DicomReadError` (that is a filing problem, not an SUV one).
    """
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise DicomReadError(f"{series_dir}: no such folder")
    datasets = []
    for path in sorted(p for p in series_dir.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError):
            continue
        if _text(ds.get("Modality")).upper() == "PT" and "SOPClassUID" in ds:
            datasets.append(ds)
    if not datasets:
        raise DicomReadError(f"{series_dir}: no PET (Modality PT) DICOM images in this folder")
    uids = {_text(ds.get("SeriesInstanceUID")) for ds in datasets}
    if len(uids) > 1:
        raise DicomReadError(f"{series_dir}: PET images of {len(uids)} series in one folder; put one series per folder")
    return suv_card(datasets, options)


def _build(datasets: list[pydicom.Dataset], work: _Work) -> SuvCard:
    if not datasets:
        raise SuvError("no PET images were given")
    work.inputs["n_images"] = len(datasets)
    if any(_text(ds.get("SOPClassUID")) == ENHANCED_PET_SOP_CLASS for ds in datasets):
        raise SuvError(
            "Enhanced PET (multi-frame) images are not supported by the SUV stage yet; export the series as classic PET images"
        )
    modalities = {_text(ds.get("Modality")).upper() for ds in datasets}
    if modalities != {"PT"}:
        raise SuvError(f"Modality is {sorted(modalities)}, not PT: SUV applies to PET images only")
    work.inputs["manufacturer"] = _common(datasets, "Manufacturer", "Manufacturer")

    units = (_common(datasets, "Units", "Units (0054,1001)") or "").upper()
    work.inputs["units"] = units or None
    if not units:
        raise SuvError("Units (0054,1001) is absent: the meaning of the pixel values is unknown")
    work.branch.append(f"units={units}")

    corrected = _common(datasets, "CorrectedImage", "CorrectedImage (0028,0051)")
    if isinstance(corrected, str):
        corrected = (corrected.upper(),)
    work.inputs["corrected_image"] = "\\".join(corrected) if corrected else None
    if not corrected:
        raise SuvError(
            "CorrectedImage (0028,0051) is absent: attenuation correction cannot be confirmed, so SUV is not computed"
        )
    if "ATTN" not in corrected:
        raise SuvError(
            f"the series is not attenuation-corrected (CorrectedImage {'/'.join(corrected)} has no ATTN): "
            "SUV of a non-attenuation-corrected image is meaningless; use the attenuation-corrected series"
        )

    series_date_text = _common(datasets, "SeriesDate", "SeriesDate", _parse_da)
    series_date = _parse_da(series_date_text, "SeriesDate") if series_date_text else None
    images = [
        _Image(
            acquisition=_acquisition_datetime(ds, series_date),
            frame_reference_ms=_float(ds.get("FrameReferenceTime"), "FrameReferenceTime (0054,1300)"),
            frame_duration_ms=_float(ds.get("ActualFrameDuration"), "ActualFrameDuration (0018,1242)"),
            position=None,
            philips_suv=None,
            philips_acsf=None,
        )
        for ds in datasets
    ]
    normal, positions = _slice_geometry(datasets)
    philips_how = None
    for image, ds, pos in zip(images, datasets, positions, strict=True):
        image.position = pos
        image.philips_suv, image.philips_acsf, how = _philips_factors(ds)
        philips_how = philips_how or how

    if units == "BQML":
        factors = _activity_factors(datasets, images, series_date, work)
        _philips_check_bqml(images, factors, philips_how, work)
    elif units == "CNTS":
        factors = _counts_factors(datasets, images, series_date, philips_how, work)
    elif units in ("GML", "CM2ML"):
        factors = [_stored_suv_factor(datasets, units, work)] * len(datasets)
    else:
        raise SuvError(
            f"Units (0054,1001) is {units!r}: only BQML, CNTS (Philips, with its SUV factors), GML and CM2ML can be "
            "converted to SUV; re-export the series in Bq/ml"
        )

    return _finish(datasets, images, factors, normal, work)


def _override_value(work: _Work, key: str) -> float | None:
    override = work.options.override
    value = getattr(override, key) if override is not None else None
    return None if value is None else float(value)


def _plausible(
    work: _Work,
    key: str,
    check: str,
    header: float | None,
    bounds: tuple[float, float] | None,
    what: str,
    problem: Callable[[float, bool], str],
) -> float | None:
    """The value used for one bounded input (override key ``key``): the override's when given, else the header's.

    An override equal to the header value confirms it (the bound is not applied); any other value, the
    header's or a replacement, must lie in ``bounds``, else ``problem(value, replaced)`` is recorded as a failed
    ``check`` (the series is refused once every check is known). The check goes on the card (once per card).
    """
    given = _override_value(work, key)
    used, confirmed = header, False
    if given is not None:
        confirmed = header is not None and math.isclose(given, header, rel_tol=_OVERRIDE_REL_TOL)
        used = header if confirmed else given
        work.applied[key] = {"header": header, "used": used, "action": "confirmed" if confirmed else "replaced"}
    if used is None or any(c.name == check for c in work.bounds):
        return used
    reason = work.options.override.reason if given is not None else ""  # type: ignore[union-attr]
    if bounds is None:
        outcome, detail = "n/a", f"{what}: no plausibility bound (switched off)"
    else:
        low, high = bounds
        detail = f"{what}, plausible range [{low:g}, {high:g}]"
        if confirmed:
            outcome, detail = "warn", f"{detail}; header value confirmed by override, range not applied: {reason}"
        elif low <= used <= high:
            outcome = "warn" if given is not None else "pass"
            if given is not None:
                detail += f"; header value replaced by override: {reason}"
        else:
            outcome = "fail"
            work.implausible.append((check, problem(used, given is not None)))
    work.bounds.append(SuvCheck(check, outcome, detail, used))
    return used


def _weight_kg(datasets: Sequence[pydicom.Dataset], work: _Work) -> float:
    header = _float(
        _common(datasets, "PatientWeight", "PatientWeight (0010,1030)", _float), "PatientWeight (0010,1030)"
    )
    work.inputs["weight_kg"] = header
    if (header is None or header <= 0) and _override_value(work, "weight_kg") is None:
        raise SuvError(
            f"PatientWeight (0010,1030) is {'absent' if header is None else header}: SUV needs the weight in kg, none is assumed"
        )

    def problem(weight: float, replaced: bool) -> str:
        bounds = work.options.weight_range_kg
        assert bounds is not None
        source = "the suv_overrides weight_kg" if replaced else "PatientWeight (0010,1030)"
        if weight < bounds[0]:
            hint = "a typo such as 7.44 for 74.4 kg makes every SUV ten times too low"
        else:
            hint = "probably grams" if weight >= 1000 else "pounds or a typo?"
        return f"{source} is {weight:g} kg, outside the adult range {bounds[0]:g}-{bounds[1]:g} kg ({hint})"

    weight = _plausible(work, "weight_kg", "weight_range", header, work.options.weight_range_kg,
                        "patient weight in kg", problem)
    assert weight is not None
    work.inputs["weight_kg"] = weight
    return weight


def _height_m(datasets: Sequence[pydicom.Dataset], work: _Work, required_for: str | None) -> float | None:
    """PatientSize in m (or the override's); when absent, refuse (``required_for``) or return None.

    A present height outside ``height_range_m`` (e.g. 175: centimetres) is a failed ``height_range`` check: the
    series is refused, never converted with it or without it.
    """
    header = _float(_common(datasets, "PatientSize", "PatientSize (0010,1020)", _float), "PatientSize (0010,1020)")
    work.inputs["height_m"] = header
    if (header is None or header <= 0) and _override_value(work, "height_m") is None:
        if required_for:
            raise SuvError(
                f"PatientSize (0010,1020) is {'absent' if header is None else header}: {required_for} needs the height; "
                "none is assumed"
            )
        return None

    def problem(height: float, replaced: bool) -> str:
        low, high = work.options.height_range_m  # type: ignore[misc]
        source = "the suv_overrides height_m" if replaced else "PatientSize (0010,1020)"
        if 100 <= height <= 250:
            return (f"{source} is {height:g}: that looks like centimetres, but PatientSize is in metres (DICOM); "
                    f"plausible adult range {low:g}-{high:g} m")
        return (f"{source} is {height:g} m, outside the plausible adult range {low:g}-{high:g} m "
                "(PatientSize is in metres)")

    height = _plausible(work, "height_m", "height_range", header, work.options.height_range_m,
                        "patient height in m", problem)
    work.inputs["height_m"] = height
    return height


def _sex(datasets: Sequence[pydicom.Dataset], work: _Work) -> str:
    sex = (_common(datasets, "PatientSex", "PatientSex (0010,0040)") or "").upper()
    work.inputs["sex"] = sex or None
    return sex


def _activity_factors(
    datasets: Sequence[pydicom.Dataset], images: Sequence[_Image], series_date: _dt.date | None, work: _Work
) -> list[float]:
    """Per-image SUVbw factor for Bq/ml values: W[g] / decayed dose, per DecayCorrection (see module docstring)."""
    options = work.options
    dc = (_common(datasets, "DecayCorrection", "DecayCorrection (0054,1102)") or "").upper()
    work.inputs["decay_correction"] = dc or None
    if dc not in ("START", "ADMIN", "NONE"):
        raise SuvError(
            f"DecayCorrection (0054,1102) is {dc or 'absent'!r}: only START, ADMIN and NONE have a defined SUV computation"
        )
    work.branch.append(f"dc={dc}")
    corrected = tuple(work.inputs["corrected_image"].split("\\"))
    if dc in ("START", "ADMIN") and "DECY" not in corrected:
        raise SuvError(
            f"DecayCorrection is {dc} but CorrectedImage has no DECY: whether the image is decay-corrected is ambiguous"
        )
    if dc == "NONE" and "DECY" in corrected:
        raise SuvError(
            "DecayCorrection is NONE but CorrectedImage lists DECY: whether the image is decay-corrected is ambiguous"
        )

    weight = _weight_kg(datasets, work)
    rp = _radiopharmaceutical(datasets)
    dose_stored = _float(rp.get("RadionuclideTotalDose"), "RadionuclideTotalDose (0018,1074)")
    work.inputs["total_dose_as_stored"] = dose_stored
    header_dose: float | None = None
    if dose_stored is None or dose_stored <= 0:
        if _override_value(work, "dose_bq") is None:
            raise SuvError(
                f"RadionuclideTotalDose (0018,1074) is {'absent' if dose_stored is None else dose_stored}: SUV needs the injected activity"
            )
    elif options.dose_mbq_below is not None and dose_stored < options.dose_mbq_below:
        header_dose = dose_stored * 1e6
        work.inputs["dose_read_as"] = f"MBq (stored value below {options.dose_mbq_below:g}; IBSI SUV manual)"
        work.checks.append(
            SuvCheck("dose_units", "warn", "RadionuclideTotalDose read as MBq, not Bq as DICOM says", dose_stored)
        )
    else:
        header_dose = dose_stored
        work.inputs["dose_read_as"] = "Bq"

    def dose_problem(dose: float, replaced: bool) -> str:
        low, high = options.dose_range_bq  # type: ignore[misc]
        if replaced:
            source = f"the suv_overrides dose_bq is {dose:g} Bq ({dose / 1e6:g} MBq)"
        elif work.inputs["dose_read_as"] == "Bq":
            source = f"RadionuclideTotalDose (0018,1074) is {dose_stored:g}, read as {dose:g} Bq ({dose / 1e6:g} MBq)"
        else:
            source = (f"RadionuclideTotalDose (0018,1074) is {dose_stored:g}, read as {dose_stored:g} MBq "
                      f"({dose:g} Bq) because it is below {options.dose_mbq_below:g}")
        return (f"{source}, outside the plausible FDG activity {low / 1e6:g} MBq - {high / 1e9:g} GBq "
                "(DICOM stores the dose in Bq: MBq or kBq stored as Bq?)")

    dose_bq = _plausible(work, "dose_bq", "dose_range", header_dose, options.dose_range_bq,
                         "injected activity in Bq", dose_problem)
    assert dose_bq is not None
    work.inputs["total_dose_bq"] = dose_bq
    half_life = _float(rp.get("RadionuclideHalfLife"), "RadionuclideHalfLife (0018,1075)")
    work.inputs["half_life_s"] = half_life
    if half_life is None or half_life <= 0:
        raise SuvError(
            f"RadionuclideHalfLife (0018,1075) is {'absent' if half_life is None else half_life}: decay cannot be corrected"
        )
    lam = math.log(2.0) / half_life

    series_time_text = _common(datasets, "SeriesTime", "SeriesTime", _parse_tm)
    series_dt = (
        _combine(series_date, _parse_tm(series_time_text, "SeriesTime")) if series_date and series_time_text else None
    )
    t_adm: _dt.datetime | None
    try:
        t_adm = _injection_time(rp, series_date, series_dt, work)
    except SuvError:
        if _override_value(work, "uptake_min") is None:
            raise
        t_adm = None  # the override's uptake time replaces what the header cannot give
    if t_adm is not None:
        work.inputs["radiopharmaceutical_start_time"] = _clock(t_adm)
    if series_dt is not None:
        work.inputs["series_time"] = _clock(series_dt)
        if t_adm is not None:
            work.inputs["series_minus_injection_s"] = (series_dt - t_adm).total_seconds()
            work.inputs["series_date_minus_injection_date_days"] = (series_dt.date() - t_adm.date()).days
    acquisitions = [im.acquisition for im in images if im.acquisition is not None]
    if acquisitions:
        work.inputs["acquisition_time_earliest"] = _clock(min(acquisitions))
        work.inputs["acquisition_time_latest"] = _clock(max(acquisitions))
        if t_adm is not None:
            work.inputs["earliest_acquisition_minus_injection_s"] = (min(acquisitions) - t_adm).total_seconds()
    frts = sorted({im.frame_reference_ms for im in images if im.frame_reference_ms is not None})
    durations = sorted({im.frame_duration_ms for im in images if im.frame_duration_ms is not None})
    work.inputs["frame_reference_time_ms"] = frts
    work.inputs["actual_frame_duration_ms"] = durations

    if dc == "NONE":
        return _none_factors(images, weight, dose_bq, lam, t_adm, work)

    t_ref = _decay_reference(datasets, images, series_dt, lam, work, required=(dc == "START"))
    if t_ref is not None:
        t_adm, _ = _uptake(t_ref, t_adm, work, enters_factor=(dc == "START"))
    elif t_adm is None:
        raise SuvError("no scan time in the header: the overriding uptake time cannot be placed")
    if dc == "ADMIN":
        work.decay_factor = 1.0
        work.decay_reference = (
            "administration (DecayCorrection ADMIN: the image is decay-corrected to the injection time)"
        )
        work.inputs["decay_reference_time"] = _clock(t_adm)
        return [weight * 1000.0 / dose_bq] * len(images)
    assert t_ref is not None
    work.decay_factor = math.exp(lam * work.uptake_s)
    work.inputs["decay_reference_time"] = _clock(t_ref)
    return [weight * 1000.0 * work.decay_factor / dose_bq] * len(images)


def _injection_time(
    rp: pydicom.Dataset, series_date: _dt.date | None, series_dt: _dt.datetime | None, work: _Work
) -> _dt.datetime:
    """RadiopharmaceuticalStartDateTime, else StartTime on SeriesDate (a day earlier when after the series: midnight).

    The midnight wrap is assumed only when the uptake it gives is not above the uptake bound (the series began
    shortly after midnight); a start time later the same day is otherwise a negative uptake, refused.
    """
    dt_text = _text(rp.get("RadiopharmaceuticalStartDateTime"))
    tm_text = _text(rp.get("RadiopharmaceuticalStartTime"))
    if dt_text:
        t_adm, offset = _parse_dt(dt_text, "RadiopharmaceuticalStartDateTime")
        if offset is not None:
            work.inputs["radiopharmaceutical_start_utc_offset"] = offset
            work.checks.append(
                SuvCheck(
                    "timezone",
                    "warn",
                    f"RadiopharmaceuticalStartDateTime carries UTC offset {offset}; it is read as scanner local time",
                )
            )
        work.branch.append("start=RPSDateTime")
        if tm_text:
            clock = _parse_tm(tm_text, "RadiopharmaceuticalStartTime")
            own = t_adm.hour * 3600 + t_adm.minute * 60 + t_adm.second + t_adm.microsecond / 1e6
            diff = abs(own - clock)
            work.checks.append(
                SuvCheck(
                    "injection_time_agreement",
                    "pass" if diff <= work.options.time_tolerance_s else "warn",
                    "RadiopharmaceuticalStartDateTime vs RadiopharmaceuticalStartTime (the DateTime is used)",
                    diff,
                )
            )
        return t_adm
    if tm_text:
        if series_date is None or series_dt is None:
            raise SuvError(
                "only RadiopharmaceuticalStartTime is given and SeriesDate/SeriesTime are absent: the injection day is unknown"
            )
        t_adm = _combine(series_date, _parse_tm(tm_text, "RadiopharmaceuticalStartTime"))
        if t_adm > series_dt:
            wrapped = (series_dt - t_adm).total_seconds() + 86400.0
            bounds = work.options.uptake_range_s
            if bounds is not None and wrapped > bounds[1]:
                raise SuvError(
                    f"RadiopharmaceuticalStartTime is {(t_adm - series_dt).total_seconds() / 60:.1f} min after the "
                    "series start on the series date: negative uptake time. An injection the day before would mean "
                    f"an uptake of {wrapped / 60:.0f} min, above the plausible {bounds[1] / 60:g} min, so no midnight "
                    "wrap is assumed; check RadiopharmaceuticalStartTime and SeriesTime"
                )
            t_adm -= _dt.timedelta(days=1)
            work.branch.append("start=RPSTime+SeriesDate-1day(midnight)")
        else:
            work.branch.append("start=RPSTime+SeriesDate")
        return t_adm
    raise SuvError(
        "the injection time is absent (no RadiopharmaceuticalStartDateTime or StartTime): SUV needs it, none is assumed"
    )


def _back_computed(image: _Image, lam: float) -> _dt.datetime | None:
    """Frame start reconstructed from the average-count time: t_acq + T_ave - FrameReferenceTime (IBSI, PixelMed)."""
    if image.acquisition is None or image.frame_reference_ms is None or not image.frame_duration_ms:
        return None
    duration = image.frame_duration_ms / 1000.0
    t_ave = math.log(lam * duration / (1.0 - math.exp(-lam * duration))) / lam
    return image.acquisition + _dt.timedelta(seconds=t_ave - image.frame_reference_ms / 1000.0)


def _decay_reference(
    datasets: Sequence[pydicom.Dataset],
    images: Sequence[_Image],
    series_dt: _dt.datetime | None,
    lam: float,
    work: _Work,
    required: bool,
) -> _dt.datetime | None:
    """The START decay reference (QIBA/IBSI order); for ADMIN the scan time used only to check the uptake."""
    tol = work.options.time_tolerance_s
    label = "tref" if required else "uptake_ref"  # ADMIN: the scan time only serves the uptake check
    acquisitions = [im.acquisition for im in images if im.acquisition is not None]
    if series_dt is None:
        if required:
            raise SuvError(
                "SeriesDate/SeriesTime are absent: the decay reference time (DecayCorrection START) is unknown"
            )
        return min(acquisitions) if acquisitions else None
    if not acquisitions:
        if required:
            raise SuvError(
                "no AcquisitionDate/Time in the images: SeriesTime cannot be confirmed as the decay reference"
            )
        return series_dt
    earliest = min(acquisitions)
    ge = _ge_scan_datetime(datasets, work)
    if (series_dt - earliest).total_seconds() <= tol:
        work.branch.append(f"{label}=series_time")
        work.decay_reference = "series_time (SeriesDateTime not after the earliest AcquisitionDateTime)"
        if ge is not None:
            diff = abs((ge - series_dt).total_seconds())
            work.checks.append(
                SuvCheck(
                    "ge_private_scan_time",
                    "pass" if diff <= tol else "warn",
                    "GE (0009,100D) vs SeriesDateTime, s",
                    diff,
                )
            )
        return series_dt
    if ge is not None:
        work.branch.append(f"{label}=ge_private")
        work.decay_reference = "ge_private (SeriesDateTime after acquisition; GE PET scan datetime (0009,100D))"
        return ge
    zero_frt = sum(1 for im in images if im.frame_reference_ms == 0 and im.frame_duration_ms)
    if zero_frt:  # the average-count time of a frame of non-zero duration cannot be its start: not a usable value
        work.checks.append(
            SuvCheck(
                "frame_reference_time",
                "warn",
                f"FrameReferenceTime (0054,1300) is 0 in {zero_frt} of {len(images)} images, impossible for a frame of "
                "non-zero duration: not back-computed, earliest acquisition time used (QIBA)",
                float(zero_frt),
            )
        )
        work.branch.append(f"{label}=earliest_acquisition")
        work.decay_reference = (
            "earliest_acquisition (SeriesDateTime after acquisition; FrameReferenceTime 0 is not usable for "
            "back-computation)"
        )
        return earliest
    backs = [_back_computed(im, lam) for im in images]
    if all(b is not None for b in backs):
        spread = (max(backs) - min(backs)).total_seconds()  # type: ignore[type-var]
        if spread <= tol:
            work.branch.append(f"{label}=backcompute")
            work.decay_reference = "backcompute (SeriesDateTime after acquisition: t_acq + T_ave - FrameReferenceTime)"
            return min(backs)  # type: ignore[type-var]
        work.checks.append(
            SuvCheck(
                "backcompute_consistency",
                "warn",
                "back-computed frame starts disagree between images; earliest acquisition used",
                spread,
            )
        )
    work.branch.append(f"{label}=earliest_acquisition")
    work.decay_reference = "earliest_acquisition (SeriesDateTime after acquisition, no usable frame timing)"
    return earliest


def _ge_scan_datetime(datasets: Sequence[pydicom.Dataset], work: _Work) -> _dt.datetime | None:
    """GE PET scan datetime (0009,100D): via creator GEMS_PETD_01, or without creator on GE images only."""
    found = _private(datasets[0], 0x0009, 0x0D, GE_PET_CREATOR)
    if found is None:
        return None
    value, how = found
    if how.startswith("without") and not _text(datasets[0].get("Manufacturer")).upper().startswith("GE"):
        return None
    text = value.decode("ascii", "replace") if isinstance(value, (bytes, bytearray)) else _text(value)
    if not text.strip("\x00 "):
        return None
    ge = _parse_dt(text.strip("\x00 "), "GE private scan datetime (0009,100D)")[0]
    work.inputs["ge_private_scan_time"] = _clock(ge)
    work.inputs["ge_private_scan_datetime_read"] = how
    return ge


def _none_factors(
    images: Sequence[_Image], weight: float, dose_bq: float, lam: float, t_adm: _dt.datetime, work: _Work
) -> list[float]:
    """DecayCorrection NONE: each image holds the mean activity over its own frame, not decay-corrected (IBSI SUV manual)."""
    work.decay_reference = (
        "per-image acquisition time (DecayCorrection NONE: lambda*T/(1-exp(-lambda*T)) * exp(lambda*(t_acq - t_adm)))"
    )
    factors = []
    decay = []
    for image in images:
        if image.acquisition is None:
            raise SuvError(
                "DecayCorrection is NONE but an image has no AcquisitionDate/Time: its decay cannot be corrected"
            )
        if not image.frame_duration_ms or image.frame_duration_ms <= 0:
            raise SuvError(
                "DecayCorrection is NONE but an image has no ActualFrameDuration: its decay cannot be corrected"
            )
    # the earliest image's uptake is the series' (checked, overridable); every other image is acquired later
    t_adm, _ = _uptake(min(im.acquisition for im in images), t_adm, work, enters_factor=True)  # type: ignore[type-var]
    for image in images:
        assert image.acquisition is not None and image.frame_duration_ms
        elapsed = (image.acquisition - t_adm).total_seconds()
        x = lam * image.frame_duration_ms / 1000.0
        d = x / (1.0 - math.exp(-x)) * math.exp(lam * elapsed)
        decay.append((image.acquisition, d, elapsed))
        factors.append(weight * 1000.0 / dose_bq * d)
    first = min(decay, key=lambda t: t[0])
    work.decay_factor = first[1]
    work.inputs["decay_reference_time"] = _clock(first[0])
    return factors


def _uptake(
    t_ref: _dt.datetime, t_adm: _dt.datetime | None, work: _Work, enters_factor: bool
) -> tuple[_dt.datetime, float]:
    """The uptake time (t_ref - t_adm, or the override's) and the injection time it implies; checks it.

    A negative header uptake is refused at once; one outside ``uptake_range_s`` is a failed ``uptake_time``
    check where it enters the factor (``enters_factor``: START, NONE), a warning otherwise (ADMIN). An override
    within 0.5 min of the header's uptake confirms it (the header's value, to the second, is used).
    """
    header = None if t_adm is None else (t_ref - t_adm).total_seconds()
    given = _override_value(work, "uptake_min")
    confirmed = False
    if given is not None:
        confirmed = header is not None and abs(given * 60.0 - header) <= _OVERRIDE_UPTAKE_TOL_S
        uptake = header if confirmed else given * 60.0
        assert uptake is not None
        work.applied["uptake_min"] = {"header": None if header is None else header / 60.0, "used": uptake / 60.0,
                                      "action": "confirmed" if confirmed else "replaced"}
    else:
        assert header is not None
        uptake = header
        if uptake < 0:
            raise SuvError(
                f"the scan reference is {-uptake / 60:.1f} min before the injection: negative uptake (decay) time; "
                "check RadiopharmaceuticalStartDateTime and the series times"
            )
    work.uptake_s = uptake
    bounds = work.options.uptake_range_s
    reason = work.options.override.reason if given is not None else ""  # type: ignore[union-attr]
    outcome: Literal["pass", "warn", "n/a", "fail"]
    if bounds is None:
        outcome, detail = "n/a", "uptake time in s: no plausibility bound (switched off)"
    else:
        low, high = bounds
        detail = f"uptake time in s, plausible range [{low:g}, {high:g}]"
        if confirmed:
            outcome, detail = "warn", f"{detail}; header value confirmed by override, range not applied: {reason}"
        elif low <= uptake <= high:
            outcome = "warn" if given is not None else "pass"
            if given is not None:
                detail += f"; header value replaced by override: {reason}"
        elif not enters_factor:
            outcome, detail = "warn", f"{detail}; DecayCorrection ADMIN: the factor does not use it"
        else:
            outcome = "fail"
            source = "the suv_overrides uptake_min gives" if given is not None else "the uptake time is"
            work.implausible.append(("uptake_time", f"{source} {uptake / 60:.1f} min, outside the plausible "
                                     f"{low / 60:g}-{high / 60:g} min (the decay correction from it would be wrong)"))
    work.checks.append(SuvCheck("uptake_time", outcome, detail, uptake))
    return t_ref - _dt.timedelta(seconds=uptake), uptake


def _philips_check_bqml(images: Sequence[_Image], factors: Sequence[float], how: str | None, work: _Work) -> None:
    """BQML: Philips factors are never applied, but SUV factor / ACSF must equal our Bq/ml factor."""
    image = images[0]
    if image.philips_suv and image.philips_acsf:
        vendor = image.philips_suv / image.philips_acsf
        rel = vendor / factors[0] - 1.0
        work.inputs["philips_factors_read"] = how
        work.checks.append(
            SuvCheck(
                "vendor_factor_agreement",
                "pass" if abs(rel) <= work.options.vendor_factor_tolerance else "warn",
                "Philips (7053,1000)/(7053,1009) vs the computed BQML factor, relative difference",
                rel,
            )
        )
    else:
        work.checks.append(SuvCheck("vendor_factor_agreement", "n/a", "no Philips SUV and activity factors to compare"))


def _counts_factors(
    datasets: Sequence[pydicom.Dataset],
    images: Sequence[_Image],
    series_date: _dt.date | None,
    how: str | None,
    work: _Work,
) -> list[float]:
    """CNTS: Philips SUV Scale Factor (7053,1000) if non-zero, else ACSF (7053,1009) x the BQML factor."""
    work.inputs["philips_factors_read"] = how
    suv = [im.philips_suv for im in images]
    acsf = [im.philips_acsf for im in images]
    work.inputs["philips_suv_scale_factor"] = sorted({v for v in suv if v is not None}) or None
    work.inputs["philips_activity_concentration_scale_factor"] = sorted({v for v in acsf if v is not None}) or None
    if all(v for v in suv):
        work.branch.append("philips=7053,1000")
        work.decay_reference = "n/a (vendor SUV factor)"
        factors = [float(v) for v in suv]  # type: ignore[arg-type]
        if all(v for v in acsf):
            try:
                scratch = _Work(work.options)
                scratch.inputs["corrected_image"] = work.inputs["corrected_image"]
                bq = _activity_factors(datasets, images, series_date, scratch)
                rel = factors[0] / (acsf[0] * bq[0]) - 1.0  # type: ignore[operator]
                outcome: Literal["pass", "warn", "n/a"] = (
                    "pass" if abs(rel) <= work.options.vendor_factor_tolerance else "warn"
                )
                work.checks.append(
                    SuvCheck(
                        "vendor_factor_agreement",
                        outcome,
                        "Philips (7053,1000) vs (7053,1009) x computed BQML factor, relative difference",
                        rel,
                    )
                )
            except SuvError as exc:
                work.checks.append(SuvCheck("vendor_factor_agreement", "n/a", f"BQML factor not computable: {exc}"))
        _weight_if_present(datasets, work)
        return factors
    if all(v for v in acsf):
        work.branch.append("philips=7053,1009")
        bq = _activity_factors(datasets, images, series_date, work)
        return [float(a) * b for a, b in zip(acsf, bq, strict=True)]  # type: ignore[arg-type]
    raise SuvError(
        "Units are CNTS but the Philips SUV Scale Factor (7053,1000) and Activity Concentration Scale Factor (7053,1009) "
        "are absent or zero in at least one image: counts cannot be converted; re-export the series in Bq/ml"
    )


def _weight_if_present(datasets: Sequence[pydicom.Dataset], work: _Work) -> None:
    """Record the weight for SUL/SUVbsa where the factor itself does not need it."""
    try:
        _weight_kg(datasets, work)
    except SuvError:
        pass


def _stored_suv_factor(datasets: Sequence[pydicom.Dataset], units: str, work: _Work) -> float:
    """GML / CM2ML: the scanner already stored an SUV; convert its kind (SUVType) to SUVbw."""
    suv_type = (_common(datasets, "SUVType", "SUVType (0054,1006)") or "").upper()
    work.inputs["suv_type"] = suv_type or None
    work.decay_reference = "n/a (already SUV)"
    sex_other = work.options.sex_other
    if units == "CM2ML":
        if suv_type not in ("", "BSA"):
            raise SuvError(f"Units CM2ML with SUVType {suv_type!r}: cm2/ml is only the unit of SUVbsa")
        work.branch.append("suvtype=BSA" if suv_type else "suvtype=absent(BSA)")
        weight = _weight_kg(datasets, work)
        height = _height_m(datasets, work, "converting SUVbsa to SUVbw")
        assert height is not None
        bsa_cm2 = bsa_du_bois_m2(weight, height) * 1e4
        work.inputs["bsa_du_bois_cm2"] = bsa_cm2
        return weight * 1000.0 / bsa_cm2
    if suv_type in ("", "BW"):
        work.branch.append("suvtype=BW" if suv_type else "suvtype=absent(BW)")
        _weight_if_present(datasets, work)
        return 1.0
    if suv_type in ("LBM", "LBMJAMES128", "LBMJANMA", "IBW"):
        work.branch.append(f"suvtype={suv_type}")
        weight = _weight_kg(datasets, work)
        height = _height_m(datasets, work, f"converting SUVType {suv_type} to SUVbw")
        assert height is not None
        sex = _sex(datasets, work)
        if sex not in _SEX_VALUES:
            work.inputs["sex_rule"] = (
                f"PatientSex {sex or 'absent'}: mean of the male and female formulas (IBSI SUV manual)"
            )
        if suv_type == "IBW":
            size = ibw_kg(height, sex, sex_other)
        elif suv_type == "LBMJANMA":
            size = lbm_janmahasatian_kg(weight, height, sex, sex_other)
        else:
            size = lbm_james_kg(weight, height, sex, 128.0 if suv_type == "LBMJAMES128" else 120.0, sex_other)
        work.inputs["body_size_kg"] = size
        if size <= 0:
            raise SuvError(
                f"the {suv_type} body size from weight {weight:g} kg and height {height:g} m is not positive"
            )
        return weight / size
    raise SuvError(f"Units GML with SUVType {suv_type!r}: that SUV type cannot be converted to SUVbw")


def _finish(
    datasets: Sequence[pydicom.Dataset],
    images: Sequence[_Image],
    factors: Sequence[float],
    normal: tuple[float, float, float] | None,
    work: _Work,
) -> SuvCard:
    options = work.options
    for f in factors:
        if not (math.isfinite(f) and f > 0):
            _refuse_if_implausible(work)
            raise SuvError(
                f"the computed SUV scale factor {f!r} is not a positive finite number; check dose, weight and times"
            )
    order = sorted(range(len(images)), key=lambda i: (images[i].acquisition or _dt.datetime.max, i))
    first = factors[order[0]]
    slice_factors = None
    if max(factors) - min(factors) > 1e-12 * max(factors):
        if normal is None or any(im.position is None for im in images):
            raise SuvError(
                "the SUV factor differs between images but ImagePosition/Orientation is absent: factors cannot be mapped to slices"
            )
        pairs = sorted((float(im.position), float(f)) for im, f in zip(images, factors, strict=True))  # type: ignore[arg-type]
        slice_factors = tuple(pairs)
        work.branch.append("per-image")
    sul = bsa = None
    if options.sul or options.suvbsa:
        weight = work.inputs.get("weight_kg")
        if weight is None or weight <= 0:
            for name, wanted in (("sul", options.sul), ("suvbsa", options.suvbsa)):
                if wanted:
                    work.checks.append(SuvCheck(name, "n/a", "PatientWeight absent"))
        else:
            height = _height_m(datasets, work, None)
            if options.sul:
                sex = _sex(datasets, work)
                if height is None:
                    work.checks.append(SuvCheck("sul", "n/a", "PatientSize absent or not in metres"))
                elif sex not in _SEX_VALUES and options.sex_other == "refuse":
                    work.checks.append(
                        SuvCheck("sul", "n/a", f"PatientSex {sex or 'absent'}: Janmahasatian needs M or F")
                    )
                else:
                    lbm = lbm_janmahasatian_kg(weight, height, sex, options.sex_other)
                    work.inputs["lbm_janmahasatian_kg"] = lbm
                    sul = first * lbm / weight
            if options.suvbsa:
                if height is None:
                    work.checks.append(SuvCheck("suvbsa", "n/a", "PatientSize absent or not in metres"))
                else:
                    bsa_cm2 = bsa_du_bois_m2(weight, height) * 1e4
                    work.inputs["bsa_du_bois_cm2"] = bsa_cm2
                    bsa = first * bsa_cm2 / (weight * 1000.0)
    _refuse_if_implausible(work)
    return SuvCard(
        suvbw_scale_factor=float(first),
        refused_reason=None,
        branch=";".join(work.branch),
        inputs=MappingProxyType(dict(work.inputs)),
        decay_factor=work.decay_factor,
        uptake_s=work.uptake_s,
        decay_reference=work.decay_reference,
        sul_scale_factor=sul,
        suvbsa_scale_factor=bsa,
        checks=tuple(work.checks),
        n_images=len(images),
        slice_normal=normal if slice_factors is not None else None,
        slice_factors=slice_factors,
        overrides=work.overrides(),
    )


# --------------------------------------------------------------------------- applying the card


def to_suv(image: sitk.Image, card: SuvCard, quantity: Literal["suvbw", "sul", "suvbsa"] = "suvbw") -> sitk.Image:
    """Multiply the rescaled PET image by the card's factor(s): SUVbw (g/ml), SUL (g/ml) or SUVbsa (cm2/ml).

    ``image`` must be the series as :func:`palmares_radiomics.volumes.read_image` returns it: every
    slice already rescaled (stored value x RescaleSlope + RescaleIntercept), i.e. Bq/ml for BQML,
    rescaled counts for Philips CNTS (the unit (7053,1000) and (7053,1009) refer to), stored SUV
    for GML/CM2ML. Raises :class:`SuvError` with the card's reason when it was refused, and when
    per-slice factors cannot be matched to the image's slices. Output pixel type: float64.
    """
    if card.refused:
        raise SuvError(card.refused_reason)
    assert card.suvbw_scale_factor is not None
    base = {"suvbw": card.suvbw_scale_factor, "sul": card.sul_scale_factor, "suvbsa": card.suvbsa_scale_factor}[
        quantity
    ]
    if base is None:
        raise SuvError(
            f"{quantity} was not computed for this series (not requested or height/sex missing; see the card's checks)"
        )
    ratio = base / card.suvbw_scale_factor
    out = sitk.Cast(image, sitk.sitkFloat64) if image.GetPixelID() != sitk.sitkFloat64 else sitk.Image(image)
    if card.slice_factors is None:
        return out * float(base)
    if image.GetDimension() != 3 or image.GetSize()[2] != len(card.slice_factors):
        raise SuvError(
            f"the SUV factor varies by slice over {len(card.slice_factors)} images but the image has size {image.GetSize()}: "
            "convert the same, complete series the card was made for"
        )
    assert card.slice_normal is not None
    normal = np.asarray(card.slice_normal)
    positions = np.asarray([p for p, _ in card.slice_factors])
    values = np.asarray([f for _, f in card.slice_factors]) * ratio
    gaps = np.diff(positions)
    tol = 0.25 * float(gaps.min()) if gaps.size and gaps.min() > 0 else 0.01
    array = sitk.GetArrayFromImage(out)  # z, y, x
    for k in range(array.shape[0]):
        pos = float(np.dot(normal, image.TransformIndexToPhysicalPoint((0, 0, k))))
        j = int(np.argmin(np.abs(positions - pos)))
        if abs(positions[j] - pos) > tol:
            raise SuvError(
                f"slice {k} of the image (at {pos:.2f} mm) matches no image of the SUV card: not the same series"
            )
        array[k] *= values[j]
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(out)
    return result


def to_suvbw(image: sitk.Image, card: SuvCard) -> sitk.Image:
    """SUVbw [g/ml] = rescaled image x ``card.suvbw_scale_factor`` (slice by slice where it varies); see :func:`to_suv`.

    Raises :class:`SuvError` (the card's ``refused_reason``) when the series was refused.
    """
    return to_suv(image, card, "suvbw")


def with_image_check(card: SuvCard, suvbw: sitk.Image, liver: sitk.Image | None = None) -> SuvCard:
    """The card plus one image plausibility check (report only, never blocks): liver or whole-image SUVbw.

    With a ``liver`` mask (non-zero = liver region, same grid): mean SUVbw in the region must lie in
    ``LIVER_MEAN_SUV_RANGE`` (normal-liver reference region, EANM/EARL, PERCIST). Without one: the mean
    SUVbw of the body voxels (SUVbw >= ``BODY_SUV_THRESHOLD``) must lie in ``BODY_MEAN_SUV_RANGE``
    (whole-body mean is ~1 by the definition of SUV when all activity is in the field of view).
    """
    if card.refused:
        return card
    values = sitk.GetArrayViewFromImage(suvbw)
    if liver is not None:
        if liver.GetSize() != suvbw.GetSize():
            raise SuvError(
                f"the liver region has size {liver.GetSize()}, the SUV image {suvbw.GetSize()}: resample it first"
            )
        region = values[sitk.GetArrayViewFromImage(liver) != 0]
        name, (low, high), what = "liver_suv", LIVER_MEAN_SUV_RANGE, "mean SUVbw in the liver region"
    else:
        region = values[values >= BODY_SUV_THRESHOLD]
        name, (low, high), what = (
            "whole_image_suv",
            BODY_MEAN_SUV_RANGE,
            f"mean SUVbw of voxels >= {BODY_SUV_THRESHOLD:g}",
        )
    if region.size == 0:
        check = SuvCheck(name, "warn", f"{what}: no voxels")
    else:
        mean = float(region.mean())
        check = SuvCheck(
            name, "pass" if low <= mean <= high else "warn", f"{what}, plausible range [{low:g}, {high:g}]", mean
        )
    return SuvCard(
        suvbw_scale_factor=card.suvbw_scale_factor,
        refused_reason=card.refused_reason,
        branch=card.branch,
        inputs=card.inputs,
        decay_factor=card.decay_factor,
        uptake_s=card.uptake_s,
        decay_reference=card.decay_reference,
        sul_scale_factor=card.sul_scale_factor,
        suvbsa_scale_factor=card.suvbsa_scale_factor,
        checks=(*card.checks, check),
        n_images=card.n_images,
        slice_normal=card.slice_normal,
        slice_factors=card.slice_factors,
        overrides=card.overrides,
    )
