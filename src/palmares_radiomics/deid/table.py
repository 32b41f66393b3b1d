"""PS3.15 Table E.1-1 compiled under the options we apply: the action of every attribute, by tag and IOD family.

Every standard attribute is handled by the action its row of PS3.15 Table E.1-1 (DICOM 2026d, packaged in
``data/ps3.15-table-e1-1.csv``, a byte copy of ``../shared/data/deid``) gives under the options we apply:

* Retain Longitudinal Temporal Information with Modified Dates (DCM 113107): every DA and DT value, at any
  nesting level and also outside the table, is shifted by one keyed per-patient number of days
  (:func:`pseudonym.date_shift_days`); TM values are kept, so uptake time (SeriesTime minus
  RadiopharmaceuticalStartTime) and every date/time difference survive and SUVbw is unchanged.
* Retain Patient Characteristics (113108): sex, age, weight, size are kept (SUVbw needs the weight).
* Retain Safe Private (113111), restricted to :data:`SAFE_PRIVATE`: numeric or date-time SUV inputs only.
* Clean Descriptors (113105): see :data:`DESCRIPTOR_POLICY` -- free text is never copied; a few descriptors are
  replaced by a controlled vocabulary built from coded attributes, the rest get their Basic Profile action.
* Elements the table does not list (issue 14, :data:`TEXT_VRS`): an even-group tag the data dictionary does not
  register is removed whatever its VR; registered free text (AE, LO, LT, PN, SH, ST, UC, UR, UT) is removed unless
  the reviewed :data:`KEEP_TEXT` list names it; CodeMeaning is kept only under a standard coding scheme.

Combined codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) are resolved with the attribute's Type (PS3.3) in the IOD
(:data:`ATTRIBUTE_TYPES`); when the Type is unknown the rule that keeps the object valid whatever the Type is
used: D for codes containing D, Z for X/Z, U for X/Z/U*.

Speed: the table is compiled once per IOD family into a dict lookup per element (:meth:`ActionTable.plans`). The
actions themselves are applied to a dataset by :mod:`palmares_radiomics.deid.engine`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError

#: Version of this profile implementation; recorded in the audit, the manifest and DeidentificationMethod.
PROFILE_VERSION = "palmares-deid 1.0 (PS3.15 2026d)"
TABLE_FILE = "ps3.15-table-e1-1.csv"
SAFE_PRIVATE_TABLE_FILE = "ps3.15-table-e.3.10-1.csv"

#: Options of Table E.1-1 this module implements (CSV column names), in the order they override each other.
SUPPORTED_OPTIONS: tuple[str, ...] = (
    "retain_safe_private",
    "retain_patient_characteristics",
    "retain_long_modified_dates",
    "clean_descriptors",
)
DEFAULT_OPTIONS: frozenset[str] = frozenset(SUPPORTED_OPTIONS)

#: PS3.16 CID 7050 codes (scheme DCM) written to DeidentificationMethodCodeSequence, per option.
METHOD_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}

#: Type (PS3.3) of the attributes whose Basic Profile code is combined, at the top level of the IODs we handle.
#: Keys: "*" = any IOD; "CT"/"PT"/"MR" = classic image IODs; "SEG"; "ENHANCED" = Enhanced/Legacy-converted
#: CT/MR/PET. Nested attributes and IODs not listed have an unknown Type (conservative rule, module docstring).
ATTRIBUTE_TYPES: dict[str, dict[str, int]] = {
    "InstitutionName": {"*": 3},                 # General Equipment C.7.5.1
    "StationName": {"*": 3},                     # General Equipment C.7.5.1
    "InstitutionCodeSequence": {"*": 3},         # General Equipment C.7.5.1
    "DeviceSerialNumber": {"*": 3, "SEG": 1, "ENHANCED": 1},  # General (3) / Enhanced General Equipment C.7.5.2 (1)
    "OperatorsName": {"*": 3},                   # General Series C.7.3.1
    "OperatorIdentificationSequence": {"*": 3},  # General Series C.7.3.1
    "ReferencedPerformedProcedureStepSequence": {"*": 3},  # General Series C.7.3.1
    "ProtocolName": {"*": 3},                    # General Series C.7.3.1
    "ReferencedStudySequence": {"*": 3},         # General Study C.7.2.1
    "ContentCreatorName": {"*": 2},              # Content Identification Macro C.10.9
    "ContrastBolusAgent": {"*": 2},              # Contrast/Bolus C.7.6.4
    "AcquisitionContextSequence": {"*": 3, "ENHANCED": 2},  # Acquisition Context C.7.6.14 in enhanced IODs
    "SoftwareVersions": {"*": 3, "SEG": 1, "ENHANCED": 1},  # General (3) / Enhanced General Equipment (1)
    "ReferencedImageSequence": {"CT": 3, "PT": 3, "MR": 3},  # General Image C.7.6.1
    "SourceImageSequence": {"CT": 3, "PT": 3, "MR": 3},      # General Image C.7.6.1 (SEG per-frame: U)
}


#: Local additions to Table E.1-1 (tag -> keyword, Basic Profile code, why). PS3.15 keeps Software Versions, but
#: with Retain Device Identity OFF a site's software build string (often carrying a site-specific build or
#: licence id) identifies the scanner among our 24 centres; Manufacturer and model, kept, suffice for harmonisation.
#: Text Value of SR TEXT content items is not in the table (Clean Structured Content handles it, and we do not
#: apply that option): it is free text, so it gets a dummy that keeps the content item valid.
LOCAL_RULES: dict[int, tuple[str, str, str]] = {
    0x00181020: ("SoftwareVersions", "X/Z/D", "device identity: site-specific software build strings"),
    0x0040A160: ("TextValue", "D", "free text in SR TEXT content items"),
    # Segmentation free text that PS3.15 does not list: segmentation tools fill these with the reader's words
    # ("Lesions of Mrs X"); ContentDescription is Type 2 in the Content Identification Macro (emptied),
    # SegmentDescription is Type 3 (removed). SegmentLabel is free text too, but it names the lesion for the
    # lesion table: it is cleaned like ROIName (see DESCRIPTOR_POLICY), kept only when it is a structure name.
    0x00700081: ("ContentDescription", "Z", "free text describing a SEG/presentation state"),
    0x00620006: ("SegmentDescription", "X", "free text describing a segment"),
    0x00620005: ("SegmentLabel", "C", "free text naming a segment: kept if a structure name, else 'Segment <n>'"),
}


@dataclass(frozen=True, slots=True)
class SafePrivate:
    """One retained private attribute: creator, group, element byte (``xx`` block stripped), VR and why.

    A DT value has its date shifted like every other DT; a DS or FL value is kept only if every value is a
    finite number (so no text can ride along); anything else is removed.
    """

    creator: str
    group: int
    element: int
    vr: str
    reason: str

    def __post_init__(self) -> None:
        if self.vr not in ("DS", "FL", "DT"):
            raise ValueError(f"safe private {self.creator} ({self.group:04X},xx{self.element:02X}): VR must be "
                             f"DS, FL or DT. Found: {self.vr}")


#: Retain Safe Private, restricted to SUV inputs (issue 4). Everything else private is removed.
SAFE_PRIVATE: tuple[SafePrivate, ...] = (
    # PS3.15 Table E.3.10-1 lists both (the only PET rows of that table): Philips stores the SUVbw and Bq/ml
    # scale factors here, and for Philips CNTS images they are the only way to get SUV.
    SafePrivate("Philips PET Private Group", 0x7053, 0x00, "DS", "SUV scale factor (E.3.10-1)"),
    SafePrivate("Philips PET Private Group", 0x7053, 0x09, "DS", "activity concentration factor (E.3.10-1)"),
    # GE scan start date-time: the QIBA vendor-neutral SUV pseudo-code (2018) uses it as the decay reference
    # when Series/Acquisition Time were rewritten by post-processing; date shifted, time kept.
    SafePrivate("GEMS_PETD_01", 0x0009, 0x0D, "DT", "GE scan_datetime (QIBA SUV pseudo-code)"),
    # GE PET dose block (GE PET DICOM conformance; pydicom private dictionary): administration date-time,
    # measured activity and its date-time, residual (post-injection) activity and its date-time, half-life.
    # They give the net injected dose when RadionuclideTotalDose is the gross syringe activity.
    SafePrivate("GEMS_PETD_01", 0x0009, 0x3B, "DT", "GE admin_datetime (injection)"),
    SafePrivate("GEMS_PETD_01", 0x0009, 0x38, "FL", "GE tracer_activity (measured dose)"),
    SafePrivate("GEMS_PETD_01", 0x0009, 0x39, "DT", "GE meas_datetime (dose measurement)"),
    SafePrivate("GEMS_PETD_01", 0x0009, 0x3C, "FL", "GE post_inj_activity (residual dose)"),
    SafePrivate("GEMS_PETD_01", 0x0009, 0x3D, "DT", "GE post_inj_datetime (residual measurement)"),
    SafePrivate("GEMS_PETD_01", 0x0009, 0x3F, "FL", "GE half_life"),
    # Siemens Decay Correction DateTime (Biograph TruePoint DICOM conformance statement; QIBA pseudo-code):
    # the time the image is decay-corrected to when it differs from SeriesTime.
    SafePrivate("SIEMENS MED PT", 0x0071, 0x22, "DT", "Siemens decay correction datetime"),
)
_SAFE_PRIVATE_INDEX = {(s.creator, s.group, s.element): s for s in SAFE_PRIVATE}

#: Clean Descriptors policy: which descriptors get a controlled-vocabulary value (never text from the input).
#: Every other "C" descriptor gets its Basic Profile action (X, Z, D or a combined code resolved by Type).
DESCRIPTOR_POLICY: dict[str, str] = {
    "SeriesDescription": "series label from Modality and CorrectedImage: 'CT', 'PET AC', 'PET NAC', 'SEG', ...; "
                         "series selection by description happens before de-identification",
    "ROIName": "kept if it is one of DeidContext.safe_roi_names (the lesion table's roi_name values) or a "
               "recognised structure name (structure_names.is_structure_name: 'Spinal-Cord', 'GTV_Mass'), "
               "otherwise emptied (Type 2)",
    "SegmentLabel": "kept like ROIName; otherwise 'Segment <SegmentNumber>' (Type 1)",
}

#: Elements the table does not list (PS3.15 E.1-1 names what it knows; a vendor, a newer edition of the standard or
#: a hand-edited export may add anything else). Decided element by element from the data dictionary (pydicom's,
#: the standard's PS3.6): an even-group tag the dictionary does not register (an unknown or made-up public tag,
#: whatever its VR, e.g. (0018,9999) or a private-looking block in an even group) is removed; a registered element
#: whose VR is free text (:data:`TEXT_VRS`) is removed unless :data:`KEEP_TEXT` lists it; everything else is kept
#: (numbers, codes, UIDs, binary data; DA/DT shifted, sequences cleaned item by item). CS (Code String) and AS
#: (Age String) are not treated as free text: PS3.5 limits CS to 16 upper-case letters, digits, space and
#: underscore and the standard's CS attributes hold enumerated or defined terms (Modality, ImageType, Units,
#: DecayCorrection, CorrectedImage: SUV and the image stage need them), and AS is a fixed 4-character age.
#: CodeMeaning (0008,0104), Type 1 in every code item, is kept only under a standard coding scheme
#: (:data:`STANDARD_CODING_SCHEMES`); under any other scheme (99xxx local codes, vendor schemes) it is replaced by
#: "de-identified": a local code's meaning is whatever someone typed ("Finding for Mario Rossi").
TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

#: Reviewed keep list: registered free-text (:data:`TEXT_VRS`) elements the table does not list and that the pipeline
#: or the object's validity needs; keyword -> why. Reviewed for issue 14: nothing else of these VRs is copied.
KEEP_TEXT: dict[str, str] = {
    "Manufacturer": "scanner vendor: harmonisation batch variable, vendor SUV branch (suv.py); Type 1 in SEG",
    "ManufacturerModelName": "scanner model: harmonisation batch variable (image stage); Type 1 in SEG",
    "ConvolutionKernel": "CT reconstruction kernel: harmonisation batch variable (image stage)",
    "ReconstructionMethod": "PET reconstruction (OSEM...): batch variable and EARL status (image stage)",
    "Radiopharmaceutical": "PET tracer name (FDG): which radiopharmaceutical the SUV card describes",
    "RescaleType": "unit of the rescaled pixel values (HU, BQML): how the image stage reads the pixels",
    "PositionReferenceIndicator": "Type 2 in the Frame of Reference module: an anatomical landmark (SN, XY)",
    "SegmentAlgorithmName": "segmentation software name: Type 1C in a SEG segment (highdicom refuses the SEG without)",
    "CodeValue": "code of a coded entry (Code Sequence Macro, Type 1C): a code, not free text",
    "CodingSchemeDesignator": "coding scheme of a coded entry (Type 1C): decides whether CodeMeaning is kept",
    "CodingSchemeVersion": "coding scheme version of a coded entry (Type 1C)",
    "LongCodeValue": "code of a coded entry longer than 16 characters (Type 1C)",
    "URNCodeValue": "code of a coded entry given as a URN (Type 1C)",
}
#: Coding schemes whose CodeMeaning is a standard concept name (PS3.16 Table 8-1 designators, retired ones too).
STANDARD_CODING_SCHEMES = frozenset({
    "DCM", "SCT", "SRT", "SNM3", "99SDM", "SDM", "UCUM", "LN", "FMA", "NCIT", "RADLEX", "UMLS", "MSH", "I10",
    "I9C", "I10P", "ICD10", "RXNORM", "PUBCHEM_CID", "ITIS_TSN", "MDC", "NEU", "NDC", "BARI", "IBSI", "UBERON",
    "NCBITAXON", "DCMUID", "ACR", "HGNC", "ISO3166_1", "ISO639_1", "ISO639_2",
})


# ----------------------------------------------------------------------------------------------- action table
@dataclass(frozen=True, slots=True)
class Rule:
    """The effective action of one Table E.1-1 row under the chosen options, and which column produced it."""

    tag: str
    keyword: str
    action: str
    source: str  # "basic_profile" or the option column whose code replaced it
    basic: str
    retired: bool


#: One compiled step of a plan: (operation, keyword, fallback). The operation is a single-letter action (X, Z, D,
#: K, U) with combined codes already resolved, "DATE" (Modified Dates) or "DESC" (Clean Descriptors); the fallback
#: is the resolved Basic Profile action those two use when the element is not a date or not a listed descriptor.
Step = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class LevelPlan:
    """The action table compiled for one IOD family at one nesting level: a dict lookup per element, no parsing."""

    exact: dict[int, Step]
    overlays: dict[int, Step]  # element -> step for (60xx,eeee)
    curves: Step  # (50xx,xxxx)


# Masks of the repeating groups: (gggg & 0xFFE1) == 0x5000 <=> gggg is one of 5000, 5002, ..., 501E (curves);
# the same with 0x6000 for overlays (PS3.5 7.6).
_REPEATING_GROUP_MASK = 0xFFE1
_CURVE_GROUPS = 0x5000
_OVERLAY_GROUPS = 0x6000


@dataclass(frozen=True, slots=True)
class ActionTable:
    """Table E.1-1 resolved for one set of options: exact tags, the 50xx/60xx wildcards and the private row."""

    options: frozenset[str]
    exact: dict[int, Rule]
    curves: Rule  # (50xx,xxxx)
    overlays: dict[int, Rule]  # element -> rule for (60xx,eeee)
    private: Rule
    _plans: dict[str, tuple[LevelPlan, LevelPlan]] = dataclasses.field(default_factory=dict, compare=False,
                                                                        repr=False)

    def lookup(self, tag: int) -> Rule | None:
        """The rule for a standard (even-group) tag, or None when the table does not list it (see :data:`TEXT_VRS`)."""
        rule = self.exact.get(tag)
        if rule is not None:
            return rule
        group = tag >> 16
        if group & _REPEATING_GROUP_MASK == _CURVE_GROUPS:
            return self.curves
        if group & _REPEATING_GROUP_MASK == _OVERLAY_GROUPS:
            return self.overlays.get(tag & 0xFFFF)
        return None

    def plans(self, family: str) -> tuple[LevelPlan, LevelPlan]:
        """The table compiled for ``family`` (see :data:`ATTRIBUTE_TYPES`): (top level, inside sequences).

        Compiled once per family and kept with the table, so de-identifying a file never re-reads a rule.
        """
        plans = self._plans.get(family)
        if plans is None:
            plans = self._plans[family] = tuple(  # type: ignore[assignment]
                LevelPlan({tag: _compile(rule, family, depth) for tag, rule in self.exact.items()},
                          {element: _compile(rule, family, depth) for element, rule in self.overlays.items()},
                          _compile(self.curves, family, depth))
                for depth in (0, 1))
        return plans  # type: ignore[return-value]


def packaged_table_path(name: str = TABLE_FILE) -> Path:
    """Path of a packaged PS3.15 table (identical to ../shared/data/deid, checked by the tests)."""
    return Path(str(resources.files("palmares_radiomics") / "data" / name))


def _parse_tag(text: str) -> int:
    group, element = text.strip("()").split(",")
    return int(group, 16) << 16 | int(element, 16)


@functools.lru_cache(maxsize=8)
def load_action_table(options: frozenset[str] = DEFAULT_OPTIONS, path: Path | None = None) -> ActionTable:
    """Load Table E.1-1 and resolve each row's action under ``options`` (later options override earlier ones)."""
    unknown = set(options) - set(SUPPORTED_OPTIONS)
    if unknown:
        raise ConfigError(f"de-identification options must be among {SUPPORTED_OPTIONS}. Found: {sorted(unknown)}")
    path = path or packaged_table_path()
    exact: dict[int, Rule] = {}
    overlays: dict[int, Rule] = {}
    curves = private = None
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            action, source = row["basic_profile"], "basic_profile"
            for option in SUPPORTED_OPTIONS:
                if option in options and row[option]:
                    action, source = row[option], option
            rule = Rule(row["tag"], row["keyword"], action, source, row["basic_profile"], row["retired"] == "Y")
            tag_text = row["tag"]
            if tag_text.startswith("(gggg"):
                private = rule
            elif tag_text == "(50xx,xxxx)":
                curves = rule
            elif tag_text.startswith("(60xx"):
                overlays[int(tag_text[6:10], 16)] = rule
            else:
                exact[_parse_tag(tag_text)] = rule
    for tag, (keyword, code, _why) in LOCAL_RULES.items():
        if tag not in exact:
            exact[tag] = Rule(f"({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword, code, "local", code, False)
    if curves is None or private is None or not overlays:
        raise ConfigError(f"{path} is not PS3.15 Table E.1-1: the curve, overlay or private-attribute row is missing")
    return ActionTable(frozenset(options), exact, curves, overlays, private)


def _type_of(keyword: str, family: str, depth: int) -> int | None:
    types = ATTRIBUTE_TYPES.get(keyword)
    if not types or depth > 0:
        return None
    return types.get(family, types.get("*"))


def _compile(rule: Rule, family: str, depth: int) -> Step:
    """One rule as a :data:`Step` for ``family`` at ``depth`` (0: top level, 1: inside any sequence)."""
    fallback = _resolve_code(rule.basic, rule.keyword, family, depth)
    if rule.action != "C":
        return _resolve_code(rule.action, rule.keyword, family, depth), rule.keyword, fallback
    if rule.source == "retain_long_modified_dates":
        return "DATE", rule.keyword, fallback
    if rule.source == "retain_safe_private":  # pragma: no cover - only the private row carries it
        return "K", rule.keyword, fallback
    return "DESC", rule.keyword, fallback  # clean descriptors / patient-characteristics free text


def _resolve_code(code: str, keyword: str, family: str, depth: int) -> str:
    if "/" not in code:
        return code
    kind = _type_of(keyword, family, depth)
    choices = code.replace("*", "").split("/")
    if kind == 3 and "X" in choices:
        return "X"
    if kind == 2 and "Z" in choices:
        return "Z"
    if kind == 1:
        return "U" if "U" in choices else "D"
    # Unknown Type (or a Type the code does not cover): the choice that is valid for every Type.
    if "U" in choices:
        return "U"
    return "D" if "D" in choices else "Z"
