"""DICOM de-identification: PS3.15 Annex E Basic Profile, table-driven, that keeps SUV and references intact.

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
used: D for codes containing D, Z for X/Z, U for X/Z/U*. UIDs with action U are remapped with
:func:`pseudonym.remap_uid` everywhere (file meta included); well-known DICOM UIDs (``1.2.840.10008.*``: SOP
classes, transfer syntaxes, standard frames of reference) are never changed. Pixel data is never touched.

PatientName and PatientID become the pseudonym, PatientIdentityRemoved YES, DeidentificationMethod and its Code
Sequence (CID 7050) and LongitudinalTemporalInformationModified MODIFIED are set (PS3.15 E.1.1). What may carry
burned-in text or a face is quarantined, never written, with a reason code saying which rule caught it
(:data:`REASONS`): BurnedInAnnotation YES, secondary capture and visible-light SOP classes, an ImageType naming a
screen capture (SCREEN SAVE, SCREENSHOT), encapsulated documents and overlays hidden in pixel bits.

Outputs: ``<out>/<pseudonym>/<StudyUID'>/<Modality>_<SeriesUID'>/<SOPUID'>.dcm`` (names from pseudonyms and new
UIDs only), a PHI-free manifest and a key-fingerprint marker (:data:`OUTPUT_MARKER`: an output folder is never shared
by two keys) in the output folder, and a per-series audit in a PHI work-area folder (default
``<out>_audit`` beside the output, never inside it). The key and the date shift are written nowhere.

Speed: the table is compiled once per IOD family into a dict lookup per element, values are decoded only when an
action changes them, and the keyed HMACs are memoised per context. pydicom reads and writes every file. A file
whose pixel data element comes last takes the pixel-copy path: pydicom reads and writes the header only and the
pixel data element is copied from file to file by the kernel, byte for byte, so a large multi-frame object never
enters memory; every other file takes the full path (see "file paths"). For single-slice CT and PET files the
time goes to pydicom's header reader and writer and to the table, not to the pixels (``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import datetime as dt
import errno
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pydicom
from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.fileutil import read_undefined_length_value
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, SequenceDelimiterTag, Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from .errors import INFRASTRUCTURE_ERRNOS, ConfigError, DeidentificationError, DicomReadError, QuarantineError
from .files import sha256_file, write_json, write_text
from .pseudonym import MIN_KEY_LENGTH, date_shift_days, pseudonym, remap_uid
from .structure_names import is_structure_name

logger = logging.getLogger(__name__)

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

#: Reason codes of files that are not written (stable strings: they appear in the PHI-free manifest).
REASONS = {
    "not_dicom": "not a DICOM file",
    "unreadable": "unreadable or truncated DICOM file",
    "dicomdir": "DICOMDIR (media directory) ignored",
    "no_sop_class": "no SOPClassUID",
    "unknown_sop_class": "unknown or private SOP class: the action table cannot vouch for its content",
    "no_patient_id": "no PatientID: no pseudonym can be derived",
    "no_pixel_data": "image object without pixel data (exported without pixels, or the file ends before them)",
    "truncated_pixel_data": "pixel data shorter than Rows x Columns x frames x samples x bits",
    "burned_in_annotation": "BurnedInAnnotation is YES: the pixels carry burned-in text",
    "secondary_capture": "secondary capture image (a screenshot or scanned document: may carry burned-in text)",
    "screen_capture": "ImageType marks a screen capture (a derived screenshot: may carry burned-in text)",
    "visible_light_image": "visible-light image (photograph, endoscopy, microscopy: may show the patient or text)",
    "encapsulated_document": "encapsulated document (PDF/CDA/STL...) whose content cannot be cleaned",
    "embedded_overlay": "overlay stored in unused pixel bits (cannot be removed without touching pixel data)",
    "duplicate_instance": "an identical copy (same bytes) of another input file: de-identified once, from that file",
    "conflicting_instance": "two or more different input files carry the same SOP Instance UID: none of them is "
                            "written (which one is right cannot be told); re-export them from PACS",
    "dangling_link": "a symbolic link whose target does not exist",
    "not_regular_file": "not a regular file (a device, socket or pipe)",
    "folder_visited": "a link to a folder already read (a loop, or a second link to it): not read twice",
    "output_folder_link": "a link into the output or audit folder: not read",
    "unreadable_folder": "a folder that cannot be listed (permissions)",
    "error": "unexpected error while de-identifying",
}

# Tags read by the checks (by tag: a keyword lookup costs more than the check).
_SOP_CLASS_UID, _SOP_INSTANCE_UID, _MODALITY, _IMAGE_TYPE = 0x00080016, 0x00080018, 0x00080060, 0x00080008
_PATIENT_ID, _STUDY_UID, _SERIES_UID = 0x00100020, 0x0020000D, 0x0020000E
_SAMPLES_PER_PIXEL, _NUMBER_OF_FRAMES, _ROWS, _COLUMNS = 0x00280002, 0x00280008, 0x00280010, 0x00280011
_CORRECTED_IMAGE, _BITS_ALLOCATED, _BURNED_IN_ANNOTATION = 0x00280051, 0x00280100, 0x00280301
_ENCAPSULATED_DOCUMENT, _SEGMENT_NUMBER = 0x00420011, 0x00620004
_METHOD_CODE_SEQUENCE = 0x00120064
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float Pixel Data
_IMPLEMENTATION_VERSION = "PALMARES_DEID_1"

#: SOP classes whose pixels are screenshots or documents: quarantined, never published (issue 4, burned-in text).
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame classes 1.2.840.10008.5.1.4.1.1.7.1 to .7.4
_VISIBLE_LIGHT_PREFIX = "1.2.840.10008.5.1.4.1.1.77.1."
#: An ImageType value containing one of these (spaces and underscores ignored) marks a screen capture: GE
#: "SCREEN SAVE", "SCREENSHOT", "SCREEN CAPTURE". DERIVED\SECONDARY alone is not enough: reformatted and
#: resampled series (DERIVED\SECONDARY\REFORMATTED, AXIAL, MPR, ...) carry it too and have no burned-in text.
_SCREEN_CAPTURE_TERMS = ("SCREEN",)
_ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
_WELL_KNOWN_UID_ROOT = "1.2.840.10008."
_CLASSIC_IMAGE_FAMILIES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
}
_ENCAPSULATED_TS_EXCLUDED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                             "1.2.840.10008.1.2.1.99"}  # native (incl. deflated) transfer syntaxes

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
_CODE_MEANING, _CODING_SCHEME = 0x00080104, 0x00080102
_KEEP_TEXT_TAGS = frozenset(tag for tag in (tag_for_keyword(k) for k in KEEP_TEXT) if tag is not None)


@functools.lru_cache(maxsize=4096)
def _text_tag(tag: int) -> bool:
    """Whether the data dictionary gives this tag a free-text VR (whatever VR a file labels it with)."""
    try:
        return dictionary_VR(tag) in TEXT_VRS
    except KeyError:
        return False


@functools.lru_cache(maxsize=4096)
def _registered(tag: int) -> bool:
    """Whether the data dictionary registers this even-group tag (exactly, or as a repeating group 50xx/60xx...)."""
    if tag in DicomDictionary:
        return True
    try:
        dictionary_VR(tag)
    except KeyError:
        return False
    return True


_DUMMY: dict[str, object] = {
    "AE": "DEID", "AS": "000Y", "CS": "DEID", "DA": "19000101", "DS": "0", "DT": "19000101000000", "IS": "0",
    "LO": "DEIDENTIFIED", "LT": "DEIDENTIFIED", "PN": "DEIDENTIFIED", "SH": "DEIDENTIFIED", "ST": "DEIDENTIFIED",
    "TM": "000000", "UC": "DEIDENTIFIED", "UT": "DEIDENTIFIED", "UR": "urn:deidentified",
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0,
    "OB": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4, "OL": b"\x00" * 4, "OV": b"\x00" * 8,
    "OW": b"\x00\x00", "UN": b"\x00\x00", "AT": 0,
}
_AMBIGUOUS_VR = {"US or SS": "US", "US or OW": "US", "US or SS or OW": "US", "OB or OW": "OW"}


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


# ---------------------------------------------------------------------------------------------------- records
_MEMO_SIZE = 4096  # HMAC results a DeidContext keeps (a series needs a handful; SOP instance UIDs are one-off)
@dataclass(frozen=True, slots=True)
class DeidContext:
    """Everything de-identification needs: the study key, the site code and the profile options.

    ``safe_roi_names``: RTSTRUCT ROI names and SEG segment labels known not to identify anyone (the lesion
    table's ``roi_name``); they are kept so masks can still be selected by name. Names made only of clinical
    words (:func:`~palmares_radiomics.structure_names.is_structure_name`) are kept too; any other ROI name is
    emptied and any other segment label becomes ``Segment <n>`` (both are free text that may carry PHI).
    """

    key: bytes
    site: str
    options: frozenset[str] = DEFAULT_OPTIONS
    safe_roi_names: frozenset[str] = frozenset()
    profile_version: str = PROFILE_VERSION
    #: HMAC results already computed in this process (UID remaps, pseudonyms and date shifts): a series shares its
    #: study, series and frame-of-reference UIDs and its patient, so most files need no new HMAC. Never pickled.
    _memo: dict[tuple[str, str], object] = dataclasses.field(default_factory=dict, init=False, repr=False,
                                                             compare=False)
    #: Top-level elements already cleaned by the pixel-copy path (:class:`_ElementMemo`). Never pickled.
    _elements: _ElementMemo = dataclasses.field(default_factory=lambda: _ElementMemo(), init=False, repr=False,
                                                compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozenset(self.options))
        object.__setattr__(self, "safe_roi_names", frozenset(self.safe_roi_names))
        if not isinstance(self.key, bytes) or len(self.key) < MIN_KEY_LENGTH:
            raise ConfigError(f"the de-identification key must be at least {MIN_KEY_LENGTH} bytes: load it with "
                              "pseudonym.load_key")
        if not re.fullmatch(r"[A-Z0-9]{2,8}", self.site or ""):
            raise ConfigError(f"site must be 2-8 upper-case letters or digits (e.g. IT01). Found: {self.site!r}")
        load_action_table(frozenset(self.options))  # validates the options

    def __repr__(self) -> str:  # never print the key
        return f"DeidContext(site={self.site!r}, options={sorted(self.options)}, key=<hidden>)"

    def __getstate__(self) -> tuple[object, ...]:  # the memo stays in its process
        return self.key, self.site, self.options, self.safe_roi_names, self.profile_version

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(("key", "site", "options", "safe_roi_names", "profile_version"), state, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_memo", {})
        object.__setattr__(self, "_elements", _ElementMemo())

    @property
    def table(self) -> ActionTable:
        """The action table resolved for this context's options."""
        return load_action_table(self.options)

    def _remember(self, kind: str, value: str, compute: Callable[[], object]) -> object:
        memo = self._memo
        found = memo.get((kind, value))
        if found is None:
            if len(memo) >= _MEMO_SIZE:  # a long run sees millions of SOP instance UIDs: stay bounded
                memo.clear()
            found = memo[(kind, value)] = compute()
        return found

    def remap_uid(self, uid: str) -> str:
        """:func:`pseudonym.remap_uid` under this context's key (memoised)."""
        return self._remember("uid", uid, lambda: remap_uid(self.key, uid))  # type: ignore[return-value]

    def patient(self, patient_id: str) -> tuple[str, int]:
        """(pseudonym, date shift in days) of a local patient id at this site (memoised)."""
        def compute() -> tuple[str, int]:
            name = pseudonym(self.key, self.site, patient_id)
            return name, date_shift_days(self.key, name)
        return self._remember("patient", patient_id, compute)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class DeidAudit:
    """What de-identification did to one object (PHI work area: it holds the source UIDs and patient id).

    The date shift is deliberately absent.
    """

    patient: str
    site: str
    source_patient_id: str
    modality: str
    sop_class_uid: str
    source_study_uid: str
    source_series_uid: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    actions: dict[str, int]  # e.g. {"X": 40, "Z": 3, "D": 2, "U": 5, "K": 4, "C:date": 9, "C:descriptor": 1}
    remapped_uids: frozenset[str]  # source UIDs that were replaced (their count is the "UID map count")
    private_removed: int
    private_kept: int
    dates_shifted: int
    warnings: tuple[str, ...]
    profile_version: str


@dataclass(frozen=True, slots=True)
class DeidResult:
    """Outcome for one input file: ``written`` (with ``output``), ``skipped``, ``quarantined`` or ``ignored``."""

    source: Path
    status: str
    output: Path | None = None
    reason_code: str = ""
    reason: str = ""
    audit: DeidAudit | None = None


@dataclass(frozen=True, slots=True)
class DeidSummary:
    """Outcome of :func:`deidentify_tree`: one result per input file and where the manifest and audit went."""

    results: tuple[DeidResult, ...]
    manifest_csv: Path
    manifest_json: Path
    audit_dir: Path

    def count(self, status: str) -> int:
        """Number of files with ``status``."""
        return sum(result.status == status for result in self.results)

    def describe(self) -> str:
        """One PHI-free paragraph for a terminal: counts, reasons, where the manifest and the audit are."""
        reasons = ", ".join(f"{code} {n}" for code, n in self.reasons.items()) or "none"
        return (f"de-identified {self.count('written')} files; skipped {self.count('skipped')}, quarantined "
                f"{self.count('quarantined')}, ignored {self.count('ignored')} (reasons: {reasons}).\n"
                f"manifest: {self.manifest_csv}\naudit (PHI work area, do not publish): {self.audit_dir}")

    @property
    def reasons(self) -> dict[str, int]:
        """Files not written, counted by reason code."""
        return dict(sorted(Counter(r.reason_code for r in self.results if r.status != "written").items()))


# ------------------------------------------------------------------------------------------------- the engine
def _error(cls: type[DeidentificationError] | type[DicomReadError], code: str, detail: str = ""):
    """An exception of ``cls`` whose message starts with the reason code and carries ``reason_code``."""
    message = f"{code}: {REASONS[code]}" + (f" ({detail})" if detail else "")
    exc = cls(message)
    exc.reason_code = code  # type: ignore[attr-defined]
    return exc


class _State:
    """Mutable bookkeeping of one object's de-identification (counts for the audit, UID cache).

    ``memo``: the context's :class:`_ElementMemo` when the pixel-copy path de-identifies a file; ``memo_context``
    then holds what, beside an element's own bytes, decides how it is cleaned (family, date shift, character set).
    """

    __slots__ = ("ctx", "table", "plans", "shift", "family", "actions", "uids", "private_removed", "private_kept",
                 "dates_shifted", "dates", "safe_private", "memo", "memo_context")

    def __init__(self, ctx: DeidContext, shift: int, family: str) -> None:
        self.ctx = ctx
        self.table = ctx.table
        self.plans = self.table.plans(family)
        self.shift = shift
        self.family = family
        self.dates = "retain_long_modified_dates" in ctx.options
        self.safe_private = "retain_safe_private" in ctx.options
        self.actions: Counter[str] = Counter()
        self.uids: dict[str, str] = {}
        self.private_removed = 0
        self.private_kept = 0
        self.dates_shifted = 0
        self.memo: _ElementMemo | None = None
        self.memo_context: tuple[object, ...] = ()

    def uid(self, value: str) -> str:
        value = str(value).strip().rstrip("\x00")
        if not value or value.startswith(_WELL_KNOWN_UID_ROOT):
            return value
        new = self.uids.get(value)
        if new is None:
            new = self.uids[value] = self.ctx.remap_uid(value)
        return new

    def child(self) -> _State:
        """A state with the same context and empty counts: what one element's cleaning does, on its own."""
        child = copy.copy(self)
        child.actions, child.uids = Counter(), {}
        child.private_removed = child.private_kept = child.dates_shifted = 0
        child.memo = None
        return child

    def add(self, child: _State) -> None:
        """Count what a :meth:`child` counted (one element's cleaning, kept by the memo)."""
        self.actions.update(child.actions)
        self.uids.update(child.uids)
        self.private_removed += child.private_removed
        self.private_kept += child.private_kept
        self.dates_shifted += child.dates_shifted


class _Cleaned(NamedTuple):
    """What cleaning one top-level element did (:class:`_ElementMemo`): its outcome and its share of the audit."""

    element: DataElement | None  #: the cleaned element; None when it was removed or kept as it was read
    removed: bool
    counts: _State  #: what the cleaning counted for the audit (a :meth:`_State.child`)
    warnings: tuple[warnings.WarningMessage, ...]  #: raised while cleaning it; raised again at each reuse


#: Top-level elements the memo never reuses: their cleaning reads other elements of the dataset (the series
#: label reads Modality and CorrectedImage; a code meaning its coding scheme; ROI names and segment labels the
#: segment number), or :func:`_finish` sets them afterwards.
_MEMO_EXCLUDED = frozenset({0x0008103E, _CODE_MEANING, 0x30060026, 0x00620005, 0x00100010, _PATIENT_ID,
                            0x00120062, 0x00120063, _METHOD_CODE_SEQUENCE, 0x00280303})
#: Elements and bytes of values the memo holds before it starts afresh (a series repeats a few dozen).
_ELEMENT_MEMO_SIZE, _ELEMENT_MEMO_BYTES = 4096, 32 << 20


class _ElementMemo:
    """Top-level elements already cleaned, by their bytes as read: the files of a series repeat most of their
    header (patient, study, series, equipment, sequences), and each such element is decoded, cleaned and encoded
    once, not once per file.

    An element is cleaned the same whatever the file it is in, given its tag, VR, value bytes and encoding, the
    file's IOD family, character set and the patient's date shift (the key), except those of
    :data:`_MEMO_EXCLUDED` and the repeating groups, never reused. A reuse puts the same cleaned element in the
    dataset, counts the same actions and UIDs for the audit, raises the same warnings, and writes the bytes pydicom
    wrote for it the first time (:meth:`encoded`). Only elements whose cleaning decodes them are remembered
    (changed values, sequences): a removed or kept element costs less than its key. The pixel-copy path only,
    whose datasets are written and dropped: the full path returns its datasets to callers, who may change them.
    ``tests/test_deid.py`` checks that a series de-identified with the memo is byte for byte, audit for audit, the
    series de-identified file by file without it. Held in memory by the :class:`DeidContext`, never written.
    """

    __slots__ = ("_entries", "_set", "_encoded", "_bytes")

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], _Cleaned] = {}
        #: elements set after cleaning (:func:`_set`), by (tag, VR, length encoding, value): (element, warnings)
        self._set: dict[tuple[object, ...], tuple[DataElement, tuple[warnings.WarningMessage, ...]]] = {}
        #: id of a remembered cleaned element -> (the element, its bytes and warnings by (implicit VR, encodings))
        self._encoded: dict[int, tuple[DataElement, dict[tuple[object, ...], tuple[bytes, tuple[Any, ...]]]]] = {}
        self._bytes = 0

    def key(self, ds: Dataset, tag: BaseTag, elem: DataElement | RawDataElement, step: Step | None,
            state: _State) -> tuple[object, ...] | None:
        """The memo key of the top-level element ``elem`` (plan entry ``step``), None if it is not remembered."""
        if not isinstance(elem, RawDataElement) or int(tag) in _MEMO_EXCLUDED \
                or (tag >> 16) & _REPEATING_GROUP_MASK in (_CURVE_GROUPS, _OVERLAY_GROUPS):
            return None
        vr = _element_vr(ds, tag, elem)
        if step is None:
            decoded = vr == "SQ" or (state.dates and vr in ("DA", "DT"))
        else:
            decoded = step[0] != "X" and (step[0] != "K" or vr == "SQ")
        if not decoded:
            return None
        return (int(tag), elem.VR, elem.length, elem.value, elem.is_implicit_VR, elem.is_little_endian,
                *state.memo_context)

    def clean(self, ds: Dataset, tag: BaseTag, elem: RawDataElement, key: tuple[object, ...], state: _State,
              clean: Callable[[_State], None]) -> None:
        """Clean ``ds[tag]`` (``elem`` as read) with ``clean`` the first time its key is met; reuse the outcome."""
        done = self._entries.get(key)
        if done is None:
            child = state.child()
            with _recorded() as caught:
                clean(child)
            now = ds.get_item(tag)
            done = _Cleaned(None if now is elem else now, now is None, child, tuple(caught))
            self._make_room(len(elem.value or b""))
            self._entries[key] = done
            if done.element is not None:
                self._encoded[id(done.element)] = (done.element, {})
        elif done.removed:
            del ds[tag]
        elif done.element is not None:
            ds[tag] = done.element
        state.add(done.counts)
        _warn_again(done.warnings)

    def set(self, ds: Dataset, tag: int, vr: str, value: object) -> bool:
        """:func:`_set` with one element shared by every file given the same value (the pseudonym, the method,
        the series label): it is encoded once. False when the value cannot be compared (the caller sets it)."""
        form = _value_form(value)
        if form is _UNCOMPARABLE:
            return False
        current = ds[tag] if tag in ds.keys() else None  # decoded: its VR and length encoding are kept
        key = (tag, vr if current is None else current.VR, current is not None and current.is_undefined_length, form)
        found = self._set.get(key)
        if found is None:
            with _recorded() as caught:
                if current is None:
                    element = DataElement(tag, vr, value)
                else:
                    current.value = value
                    element = current
            found = (element, tuple(caught))
            self._make_room(0)
            self._set[key] = found
            self._encoded[id(element)] = (element, {})
        if current is not found[0]:
            ds[tag] = found[0]
        _warn_again(found[1])
        return True

    def _make_room(self, size: int) -> None:
        """Start afresh when one more entry of ``size`` value bytes would pass the limits."""
        if len(self._entries) + len(self._set) >= _ELEMENT_MEMO_SIZE or self._bytes + size > _ELEMENT_MEMO_BYTES:
            self._entries.clear()
            self._set.clear()
            self._encoded.clear()
            self._bytes = 0
        self._bytes += size

    def encoded(self, elem: DataElement | RawDataElement, implicit: bool, encodings: str | list[str]) -> bytes | None:
        """The bytes of a remembered cleaned element as ``write_data_element`` writes them (encoded once, then
        reused), None for any other element."""
        entry = self._encoded.get(id(elem))
        if entry is None or entry[0] is not elem:
            return None
        form = (implicit, encodings if isinstance(encodings, str) else tuple(encodings))
        found = entry[1].get(form)
        if found is None:
            fp = DicomBytesIO()
            fp.is_implicit_VR, fp.is_little_endian = implicit, True
            with _recorded() as caught:
                write_data_element(fp, elem, encodings)
            found = entry[1][form] = (fp.getvalue(), tuple(caught))
        _warn_again(found[1])
        return found[0]


_UNCOMPARABLE = object()


def _value_form(value: object) -> object:
    """``value`` (text, numbers, a list of them, a sequence of items of them) as a hashable form equal for equal
    values; :data:`_UNCOMPARABLE` for anything else."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Sequence):
        forms = tuple(tuple((int(t), e.VR, _value_form(e.value)) for t, e in item.items()) for item in value)
        return _UNCOMPARABLE if any(f is _UNCOMPARABLE for item in forms for *_, f in item) else ("SQ", forms)
    if isinstance(value, (list, tuple)):
        forms = tuple(_value_form(v) for v in value)
        return _UNCOMPARABLE if any(f is _UNCOMPARABLE for f in forms) else ("MV", forms)
    return _UNCOMPARABLE


@contextlib.contextmanager
def _recorded() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised in the block (none reaches the caller's filters; see :func:`_warn_again`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught  # type: ignore[misc]


def _warn_again(caught: Iterable[warnings.WarningMessage]) -> None:
    """Raise again warnings recorded earlier (the caller's filters and recorders see them as the first time)."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _family(sop_class_uid: str) -> str:
    if sop_class_uid in _CLASSIC_IMAGE_FAMILIES:
        return _CLASSIC_IMAGE_FAMILIES[sop_class_uid]
    name = UID_dictionary.get(sop_class_uid, ("",))[0]
    if sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4":
        return "SEG"
    if "Enhanced" in name and any(m in name for m in ("CT", "MR", "PET")):
        return "ENHANCED"
    return "OTHER"


def _shift_date(value: str, days: int) -> str | None:
    """Shift a DA value (``YYYYMMDD``; ``YYYY.MM.DD`` of old ACR-NEMA files accepted) by ``days``; None if invalid."""
    text = value.strip().replace(".", "")
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


def _shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping its precision, time, fraction and UTC offset; None if invalid."""
    match = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(\d{0,6}(?:\.\d{1,6})?(?:[+-]\d{4})?)", value.strip())
    if not match:
        return None
    year, month, day, rest = match.groups()
    if rest and day is None:
        return None
    try:
        start = dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    shifted = (start + dt.timedelta(days=days)).strftime("%Y%m%d")
    precision = 4 + (2 if month else 0) + (2 if day else 0)
    return shifted[:precision] + (rest or "")


def _shift_values(value: object, vr: str, days: int) -> tuple[object, bool]:
    """Shift every value of a DA/DT element (multi-valued, DA ranges); ``(new value, ok)``."""
    shift = _shift_date if vr == "DA" else _shift_datetime
    values = [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]
    out = []
    for item in values:
        item = str(item)
        if not item.strip():
            out.append(item)
            continue
        parts = item.split("-") if vr == "DA" and "-" in item else [item]
        shifted = [shift(p, days) if p else "" for p in parts]
        if any(s is None for s in shifted):
            return None, False
        out.append("-".join(s for s in shifted if s is not None))
    return (out[0] if len(out) == 1 else out), True


def _element_vr(ds: Dataset, tag: BaseTag, elem: DataElement | RawDataElement | None = None) -> str:
    """The VR of ``ds[tag]`` (or of ``elem``, its element) without decoding its value: the explicit VR, else the
    data dictionary's."""
    vr = (elem if elem is not None else ds.get_item(tag)).VR
    if vr and vr != "UN":
        return vr
    entry = DicomDictionary.get(int(tag))
    if entry is not None:
        dict_vr = entry[0]
    else:
        try:
            dict_vr = dictionary_VR(tag)  # repeating groups (50xx, 60xx, ...)
        except KeyError:
            return vr or "UN"
    return _AMBIGUOUS_VR.get(dict_vr, dict_vr)


def _type_of(keyword: str, family: str, depth: int) -> int | None:
    types = ATTRIBUTE_TYPES.get(keyword)
    if not types or depth > 0:
        return None
    return types.get(family, types.get("*"))


def _resolve(code: str, keyword: str, state: _State, depth: int) -> str:
    """Resolve a combined code (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) with the attribute's Type; unknown -> conservative."""
    return _resolve_code(code, keyword, state.family, depth)


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


def _dummy(vr: str, state: _State, value: object) -> object:
    if vr == "UI":
        return _map_uids(value, state)
    return _DUMMY.get(vr, "")


def _map_uids(value: object, state: _State) -> object:
    if value is None or value == "":
        return value
    if isinstance(value, str):
        return state.uid(value)
    return [state.uid(v) for v in value]  # type: ignore[union-attr]


def _dummy_code() -> Dataset:
    item = Dataset()
    item.CodeValue = "DEID"
    item.CodingSchemeDesignator = "99PALMARES"
    item.CodeMeaning = "de-identified"
    return item


def _series_label(ds: Dataset) -> str:
    modality = str(_get(ds, _MODALITY, "") or "OT").strip().upper()
    if modality == "PT":
        value = _get(ds, _CORRECTED_IMAGE) or []
        corrected = [str(v).upper() for v in ([value] if isinstance(value, str) else value)]
        return "PET AC" if "ATTN" in corrected else "PET NAC"
    return modality


def _clean_descriptor(ds: Dataset, tag: BaseTag, keyword: str, vr: str, fallback: str, state: _State,
                      depth: int, root: Dataset) -> None:
    """Clean Descriptors: controlled vocabulary for :data:`DESCRIPTOR_POLICY`, Basic Profile action otherwise."""
    if keyword == "SeriesDescription" and depth == 0:
        _set(ds, tag, vr, _series_label(root), state.memo)
        state.actions["C:descriptor"] += 1
        return
    if keyword in ("ROIName", "SegmentLabel"):
        current = str(ds[tag].value or "").strip()
        if current not in state.ctx.safe_roi_names and not is_structure_name(current):
            ds[tag].value = "" if keyword == "ROIName" else f"Segment {_get(ds, _SEGMENT_NUMBER, '')}"
        state.actions["C:descriptor"] += 1
        return
    _apply(ds, tag, keyword, vr, fallback, state, depth, root)


def _apply(ds: Dataset, tag: BaseTag, keyword: str, vr: str, action: str, state: _State, depth: int,
           root: Dataset) -> None:
    """Apply a resolved single-letter action (X, Z, D, K, U) to ``ds[tag]``."""
    state.actions[action] += 1
    if action == "X":
        del ds[tag]
    elif action == "Z":
        ds[tag].value = Sequence() if vr == "SQ" else None
    elif action == "D" and vr == "SQ" and keyword.endswith("CodeSequence"):
        # A code identifying a person or an institution: one dummy code item keeps the Code Sequence Macro valid.
        ds[tag].value = Sequence([_dummy_code()])
    elif action in ("K", "D", "U") and vr == "SQ":
        # K keeps the sequence but cleans its items; D and U (X/Z/U* resolved U) keep the items so their
        # references survive, every attribute inside handled by its own rule.
        for item in ds[tag].value:
            _clean(item, state, depth + 1, root)
    elif action == "D":
        elem = ds[tag]
        elem.value = _dummy(vr, state, elem.value)
    elif action == "U":
        elem = ds[tag]
        elem.value = _map_uids(elem.value, state)
    elif action != "K":
        raise DeidentificationError(f"unknown action {action!r} for {keyword or tag} in the PS3.15 table")


def _clean_date(ds: Dataset, tag: BaseTag, keyword: str, vr: str, fallback: str, state: _State, depth: int,
                root: Dataset) -> None:
    """Modified Dates: shift DA/DT, keep TM and the UTC offset; anything else (binary timestamps) -> Basic."""
    if vr in ("DA", "DT"):
        elem = ds[tag]
        value, ok = _shift_values(elem.value, vr, state.shift) if elem.value not in (None, "") else (elem.value, True)
        if ok:
            elem.value = value
            state.dates_shifted += 1
            state.actions["C:date"] += 1
        else:  # an unparseable date cannot be shifted: it is emptied rather than kept
            elem.value = None
            state.actions["Z"] += 1
    elif vr == "TM" or keyword == "TimezoneOffsetFromUTC":
        state.actions["C:time-kept"] += 1
    else:
        _apply(ds, tag, keyword, vr, fallback, state, depth, root)


def _clean_private(ds: Dataset, tags: list[BaseTag], state: _State) -> None:
    """Remove private attributes except :data:`SAFE_PRIVATE` (and their creators) at this nesting level."""
    retain = state.safe_private
    creators: dict[tuple[int, int], str] = {}
    for tag in tags:
        if 0x0010 <= tag & 0xFFFF <= 0x00FF:
            raw = ds.get_item(tag).value  # creators are matched against ASCII names: no need to decode a charset
            creators[(tag >> 16, tag & 0xFFFF)] = (raw.decode("latin-1") if isinstance(raw, bytes)
                                                   else str(raw or "")).strip(" \x00")
    kept_blocks: set[tuple[int, int]] = set()
    for tag in tags:
        group, element = tag >> 16, tag & 0xFFFF
        if element < 0x1000:
            continue
        block = (group, element >> 8)
        safe = _SAFE_PRIVATE_INDEX.get((creators.get(block, ""), group, element & 0xFF)) if retain else None
        if safe is not None and _keep_safe_private(ds, tag, safe, state):
            kept_blocks.add(block)
            state.private_kept += 1
            state.actions["C:private"] += 1
        else:
            del ds[tag]
            state.private_removed += 1
            state.actions["X"] += 1
    for tag in tags:
        if tag & 0xFFFF < 0x1000 and (tag >> 16, tag & 0xFFFF) not in kept_blocks and tag in ds.keys():
            del ds[tag]  # private creators of removed blocks, private group lengths, invalid (gggg,0001-000F)
            state.private_removed += 1
            state.actions["X"] += 1


def _keep_safe_private(ds: Dataset, tag: BaseTag, safe: SafePrivate, state: _State) -> bool:
    """Validate (and for date-times shift) a safe private value; False means it must be removed."""
    value = ds[tag].value
    if isinstance(value, bytes):  # implicit VR, creator unknown to pydicom: decode with the expected VR
        if safe.vr == "FL":
            if not value or len(value) % 4:
                return False
            numbers: list[object] = list(struct.unpack(f"<{len(value) // 4}f", value))
        else:
            numbers = value.decode("latin-1").strip(" \x00").split("\\")
    else:
        numbers = [value] if isinstance(value, (str, int, float)) else list(value)
    if safe.vr == "DT":
        text = "\\".join(str(v).strip(" \x00") for v in numbers)
        if "retain_long_modified_dates" not in state.ctx.options or not text:
            return False
        shifted, ok = _shift_values(text.split("\\") if "\\" in text else text, "DT", state.shift)
        if not ok:
            return False
        ds[tag] = DataElement(tag, "DT", shifted)
        state.dates_shifted += 1
        return True
    try:
        floats = [float(v) for v in numbers]
    except (TypeError, ValueError):
        return False
    if not floats or not all(math.isfinite(f) for f in floats):
        return False
    ds[tag] = DataElement(tag, safe.vr, floats if safe.vr == "FL" else [str(v).strip() for v in numbers])
    return True


def _clean(ds: Dataset, state: _State, depth: int, root: Dataset) -> None:
    """Apply the action table to every element of ``ds`` (recursively into kept sequences).

    Each element costs one dict lookup in the compiled plan (:meth:`ActionTable.plans`); the repeating 50xx/60xx
    groups are recognised with a mask. Values are decoded only for the elements an action changes, so everything
    kept is written back byte for byte. With ``state.memo`` (the pixel-copy path), a top-level element whose
    action decodes it is cleaned once per distinct value and the outcome reused (:class:`_ElementMemo`).
    """
    plan = state.plans[depth > 0]
    exact = plan.exact
    keys = ds.keys()
    elements = list(ds.items())  # (tag, element) before any change: the element gives the VR, undecoded
    private_tags = [t for t, _elem in elements if t >> 16 & 1]
    if private_tags:
        _clean_private(ds, private_tags, state)
    memo = state.memo if depth == 0 else None
    removed_overlays: set[int] = set()
    for tag, elem in elements:
        group = tag >> 16
        if group & 1 or tag not in keys:
            continue
        if not tag & 0xFFFF:  # group lengths: optional/retired, recomputed by nobody, removed
            del ds[tag]
            continue
        if group in (0x0000, 0x0002):  # command elements, or file meta astray in the dataset: never part of it
            del ds[tag]
            state.actions["X"] += 1
            continue
        step = exact.get(int(tag))  # an int key: a BaseTag would compare through Python-level __eq__
        key = memo.key(ds, tag, elem, step, state) if memo is not None else None
        if key is None:
            _clean_element(ds, tag, elem, step, plan, state, depth, root, removed_overlays)
        else:
            memo.clean(ds, tag, elem, key, state, lambda child: _clean_element(
                ds, tag, elem, step, plan, child, depth, root, removed_overlays))


def _clean_element(ds: Dataset, tag: BaseTag, elem: DataElement | RawDataElement, step: Step | None,
                   plan: LevelPlan, state: _State, depth: int, root: Dataset, removed_overlays: set[int]) -> None:
    """Apply the action table to the one element ``ds[tag]`` (``elem``, as read; ``step``: its plan entry)."""
    group = tag >> 16
    keys = ds.keys()
    if step is None:
        repeating = group & _REPEATING_GROUP_MASK
        if repeating == _OVERLAY_GROUPS:
            if group in removed_overlays:
                del ds[tag]
                return
            step = plan.overlays.get(tag & 0xFFFF)
        elif repeating == _CURVE_GROUPS:
            step = plan.curves
    if step is None:  # not in the table: see TEXT_VRS (unregistered tags and free text removed, codes cleaned)
        if not _registered(int(tag)):
            del ds[tag]
            state.actions["X:unregistered"] += 1
            return
        vr = _element_vr(ds, tag, elem)
        if vr == "SQ":
            for item in ds[tag].value:
                _clean(item, state, depth + 1, root)
        elif (vr in TEXT_VRS or _text_tag(int(tag))) and int(tag) not in _KEEP_TEXT_TAGS:
            if tag == _CODE_MEANING:
                _clean_code_meaning(ds, tag, state)
            else:
                del ds[tag]
                state.actions["X:text"] += 1
        elif state.dates and vr in ("DA", "DT"):  # a date the table does not list is still a date: shift it
            _clean_date(ds, tag, "", vr, "X", state, depth, root)
        return
    op, keyword, fallback = step
    if op == "X":
        if group & _REPEATING_GROUP_MASK == _OVERLAY_GROUPS and tag & 0xFFFF == 0x3000:
            # An overlay plane without its Overlay Data (Type 1) is invalid: the whole 60xx group goes.
            removed_overlays.add(group)
            for other in [t for t in keys if t >> 16 == group]:
                del ds[other]
                state.actions["X"] += 1
            return
        state.actions["X"] += 1
        del ds[tag]
        return
    vr = _element_vr(ds, tag, elem)
    if op == "DATE":
        _clean_date(ds, tag, keyword, vr, fallback, state, depth, root)
    elif op == "DESC":
        _clean_descriptor(ds, tag, keyword, vr, fallback, state, depth, root)
    else:
        _apply(ds, tag, keyword, vr, op, state, depth, root)


def _clean_code_meaning(ds: Dataset, tag: BaseTag, state: _State) -> None:
    """CodeMeaning: kept under a standard coding scheme, otherwise "de-identified" (Type 1: not removed)."""
    scheme = str(_get(ds, _CODING_SCHEME, "") or "").strip().upper()
    if scheme in STANDARD_CODING_SCHEMES:
        state.actions["K:code"] += 1
        return
    ds[tag] = DataElement(tag, "LO", "de-identified")
    state.actions["D"] += 1


def _check(ds: Dataset, pixels: tuple[int, int] | None) -> tuple[str, str]:
    """Refuse what must not be de-identified automatically; returns (SOP class UID, PatientID).

    ``pixels``: (tag, length in bytes) of the pixel data element, None if there is none (see :func:`_pixels`;
    the pixel-copy path reads the header only and measures the element in the file).
    """
    sop_class = str(_get(ds, _SOP_CLASS_UID, "") or "").strip()
    meta_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "").strip()
    if _MEDIA_DIRECTORY in (sop_class, meta_class):
        raise _error(DeidentificationError, "dicomdir")
    if not sop_class:
        raise _error(DeidentificationError, "no_sop_class")
    if sop_class == _MEDIA_DIRECTORY:
        raise _error(DeidentificationError, "dicomdir")
    info = UID_dictionary.get(sop_class)
    if info is None or info[1] != "SOP Class" or "Storage" not in info[0]:
        raise _error(DeidentificationError, "unknown_sop_class", f"SOP class {sop_class}")
    if sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + "."):
        raise _error(QuarantineError, "secondary_capture", info[0])
    if sop_class.startswith(_VISIBLE_LIGHT_PREFIX):
        raise _error(QuarantineError, "visible_light_image", info[0])
    keys = ds.keys()
    if sop_class.startswith(_ENCAPSULATED_DOCUMENT_PREFIX) or _ENCAPSULATED_DOCUMENT in keys:
        raise _error(QuarantineError, "encapsulated_document", info[0])
    if str(_get(ds, _BURNED_IN_ANNOTATION, "") or "").strip().upper() == "YES":
        raise _error(QuarantineError, "burned_in_annotation", info[0])
    image_type = _screen_capture_type(_get(ds, _IMAGE_TYPE))
    if image_type:
        raise _error(QuarantineError, "screen_capture", f"ImageType {image_type}")
    for group in sorted({tag >> 16 for tag in keys if tag >> 16 & _REPEATING_GROUP_MASK == _OVERLAY_GROUPS}):
        if (group << 16 | 0x0010) in keys and (group << 16 | 0x3000) not in keys:
            raise _error(QuarantineError, "embedded_overlay", f"overlay group {group:04X}")
    _check_truncation(ds)
    patient_id = str(_get(ds, _PATIENT_ID, "") or "").strip()
    if not patient_id:
        raise _error(DeidentificationError, "no_patient_id")
    if "Image Storage" in info[0]:
        if pixels is None:
            raise _error(DicomReadError, "no_pixel_data", info[0])
        if _ROWS in keys:
            _check_pixel_length(ds, *pixels)
    return sop_class, patient_id


def _screen_capture_type(value: object) -> str:
    """The ImageType (backslash-joined) if one of its values names a screen capture, else ""."""
    values = [value] if isinstance(value, str) else list(value or [])  # type: ignore[call-overload]
    names = [str(v).upper() for v in values]
    if any(term in name.replace(" ", "").replace("_", "") for name in names for term in _SCREEN_CAPTURE_TERMS):
        return "\\".join(names)
    return ""


def _get(ds: Dataset, tag: int, default: object = None) -> object:
    """``ds.get(keyword, default)`` by tag (no keyword lookup): the decoded value, or ``default`` if absent.

    The decoded element is not stored back: an element that is only read stays the element pydicom read, so the
    pixel-copy path writes it back as the bytes it was read from (see :func:`_encode_spliced`).
    """
    elem = ds.get_item(tag)
    if elem is None:
        return default
    if isinstance(elem, RawDataElement):
        charset = default_encoding if tag == 0x00080005 else (ds.original_character_set or default_encoding)
        elem = convert_raw_data_element(elem, encoding=charset, ds=ds)
    return elem.value


def _pixels(ds: Dataset) -> tuple[int, int] | None:
    """(tag, length in bytes) of the pixel data element of a fully read ``ds``, None if it has none."""
    tag = next((t for t in _PIXEL_TAGS if t in ds.keys()), None)
    if tag is None:
        return None
    value = ds.get_item(tag).value
    return tag, len(value) if value is not None else 0


def _check_truncation(ds: Dataset) -> None:
    """pydicom silently returns a short last value when a file ends early: compare it with its declared length."""
    for tag in reversed(list(ds.keys())):
        elem = ds.get_item(tag)
        if not getattr(elem, "is_raw", False) or elem.value is None or elem.length == 0xFFFFFFFF:
            continue
        if len(elem.value) < elem.length:
            code = "truncated_pixel_data" if tag == 0x7FE00010 else "unreadable"
            raise _error(DicomReadError, code, f"file truncated: element {Tag(tag)} has {len(elem.value)} of "
                                               f"{elem.length} bytes")
        break  # only the last element read can be short


def _check_pixel_length(ds: Dataset, pixel_tag: int, length: int) -> None:
    """A truncated file often still parses: compare native pixel data length with what the header promises."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or ImplicitVRLittleEndian) if meta is not None else ""
    if syntax and syntax not in _ENCAPSULATED_TS_EXCLUDED:
        return  # compressed: fragment parsing already failed on a truncation
    if pixel_tag != 0x7FE00010:
        return
    try:
        rows, cols = int(_get(ds, _ROWS)), int(_get(ds, _COLUMNS))  # type: ignore[arg-type]
        frames = int(_get(ds, _NUMBER_OF_FRAMES, 1) or 1)  # type: ignore[arg-type]
        samples = int(_get(ds, _SAMPLES_PER_PIXEL, 1) or 1)  # type: ignore[arg-type]
        bits = int(_get(ds, _BITS_ALLOCATED))  # type: ignore[arg-type]
    except (AttributeError, TypeError, ValueError):
        return
    pixels = rows * cols * frames * samples
    expected = (pixels + 7) // 8 if bits == 1 else pixels * bits // 8
    if length < expected:
        raise _error(DicomReadError, "truncated_pixel_data", f"{length} of {expected} bytes")


def _method_codes(ctx: DeidContext) -> tuple[list[str], list[tuple[str, str]]]:
    """DeidentificationMethod values and the (code value, meaning) of each CID 7050 code applied."""
    keys = ["basic"] + [o for o in SUPPORTED_OPTIONS if o in ctx.options]
    return ([ctx.profile_version] + [METHOD_CODES[k][1][:64] for k in keys[1:]], [METHOD_CODES[k] for k in keys])


def _method_code_sequence(ctx: DeidContext) -> Sequence:
    items = Sequence()
    for value, meaning in _method_codes(ctx)[1]:
        item = Dataset()
        item.CodeValue, item.CodeMeaning = value, meaning
        item.CodingSchemeDesignator = "DCM"
        items.append(item)
    return items


def _set(ds: Dataset, tag: int, vr: str, value: object, memo: _ElementMemo | None = None) -> None:
    """``ds.<keyword> = value``: an element already present keeps its VR and length encoding. With ``memo`` (the
    pixel-copy path), every file given the same value shares one element (:meth:`_ElementMemo.set`)."""
    if memo is not None and memo.set(ds, tag, vr, value):
        return
    if tag in ds.keys():
        ds[tag].value = value
    else:
        ds[tag] = DataElement(tag, vr, value)


def _finish(ds: Dataset, state: _State, patient: str) -> None:
    """Set the top-level attributes PS3.15 E.1.1 requires after the table has been applied."""
    ctx = state.ctx
    memo = state.memo
    _set(ds, 0x00100010, "PN", patient, memo)  # PatientName
    _set(ds, 0x00100020, "LO", patient, memo)  # PatientID
    _set(ds, 0x00120062, "CS", "YES", memo)  # PatientIdentityRemoved
    _set(ds, 0x00120063, "LO", _method_codes(ctx)[0], memo)  # DeidentificationMethod
    _set(ds, _METHOD_CODE_SEQUENCE, "SQ", _method_code_sequence(ctx), memo)
    if state.dates:
        _set(ds, 0x00280303, "CS", "MODIFIED", memo)  # LongitudinalTemporalInformationModified


def _syntax(ds: Dataset) -> UID:
    """The transfer syntax ``ds`` was read with (file meta, else its original encoding)."""
    old = getattr(ds, "file_meta", None)
    syntax = getattr(old, "TransferSyntaxUID", None) if old is not None else None
    if syntax is None:
        implicit, little = ds.original_encoding
        syntax = (ImplicitVRLittleEndian if implicit else
                  ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian)
    return UID(str(syntax))


def _file_meta(ds: Dataset, sop_class: str) -> None:
    """Rebuild the file meta: only what PS3.10 requires, SOP instance remapped, our implementation identity."""
    syntax = _syntax(ds)
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128  # a TIFF/DICOM dual file can hide data in the preamble


def _deidentify_inplace(ds: Dataset, ctx: DeidContext, pixels: tuple[int, int] | None,
                        memo: _ElementMemo | None = None) -> DeidAudit:
    """Check and de-identify ``ds`` in place (file meta not rebuilt: see :func:`_file_meta`).

    ``pixels``: the pixel data element's (tag, length), see :func:`_check`. ``memo``: reuse top-level elements
    cleaned in earlier files (the pixel-copy path, :class:`_ElementMemo`).
    """
    sop_class, patient_id = _check(ds, pixels)
    patient, shift = ctx.patient(patient_id)
    source = (str(_get(ds, _STUDY_UID, "")), str(_get(ds, _SERIES_UID, "")))
    state = _State(ctx, shift, _family(sop_class))
    if memo is not None:
        charset = ds.original_character_set
        state.memo = memo
        state.memo_context = (state.family, shift, charset if isinstance(charset, str) else tuple(charset))
    if _SOP_INSTANCE_UID not in ds.keys():
        raise _error(DeidentificationError, "error", "no SOPInstanceUID")
    _clean(ds, state, 0, ds)
    _finish(ds, state, patient)
    return DeidAudit(
        patient=patient, site=ctx.site, source_patient_id=patient_id,
        modality=str(_get(ds, _MODALITY, "") or "OT"), sop_class_uid=sop_class,
        source_study_uid=source[0], source_series_uid=source[1],
        study_uid=str(_get(ds, _STUDY_UID, "")), series_uid=str(_get(ds, _SERIES_UID, "")),
        sop_instance_uid=str(_get(ds, _SOP_INSTANCE_UID)), actions=dict(sorted(state.actions.items())),
        remapped_uids=frozenset(state.uids), private_removed=state.private_removed,
        private_kept=state.private_kept, dates_shifted=state.dates_shifted, warnings=(),
        profile_version=ctx.profile_version,
    )


# ------------------------------------------------------------------------------------------------- public API
def deidentify_dataset(ds: Dataset, ctx: DeidContext) -> tuple[Dataset, DeidAudit]:
    """De-identify a copy of ``ds`` in memory (``ds`` is left untouched); returns the copy and its audit.

    Raises :class:`QuarantineError` (burned-in text, secondary capture, documents, embedded overlays),
    :class:`DicomReadError` (truncated pixel data) or :class:`DeidentificationError` (no PatientID, unknown
    SOP class, ...). Each carries ``reason_code``, a key of :data:`REASONS`.
    """
    out = copy.deepcopy(ds)
    audit = _deidentify_inplace(out, ctx, _pixels(out))
    _file_meta(out, audit.sop_class_uid)
    return out, audit


def output_path(out_root: Path, audit: DeidAudit) -> Path:
    """``out_root/<pseudonym>/<StudyUID'>/<Modality>_<SeriesUID'>/<SOPUID'>.dcm``: pseudonyms and new UIDs only."""
    modality = re.sub(r"[^A-Z0-9]", "", audit.modality.upper()) or "OT"
    return (Path(out_root) / audit.patient / (audit.study_uid or "nostudy")
            / f"{modality}_{audit.series_uid or 'noseries'}" / f"{audit.sop_instance_uid}.dcm")


def _read(src: Path) -> Dataset:
    try:
        return pydicom.dcmread(src)
    except InvalidDicomError:
        pass
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a damaged file
        raise _error(DicomReadError, "unreadable", type(exc).__name__) from None
    # No 'DICM' preamble: old exports write a bare dataset. Accept it only if it looks like a composite object.
    try:
        ds = pydicom.dcmread(src, force=True)
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds and re.fullmatch(r"[0-9.]+", str(ds.SOPClassUID)):
            return ds
    except Exception:  # noqa: BLE001
        pass
    raise _error(DicomReadError, "not_dicom")


# -------------------------------------------------------------------------------------------------- file paths
# Two ways from a file to its de-identified copy; pydicom reads and writes DICOM in both:
# * the pixel-copy path, for the usual file (Part 10, little endian, not deflated, pixel data the last element):
#   pydicom reads the header (``stop_before_pixels``), the table is applied to it, pydicom writes it
#   (``save_as``), and the pixel data element is appended as it stands in the source file (copied by the kernel);
# * the full path, for everything else (no pixel data, an element after it, big endian, deflate, no preamble, a
#   truncated or damaged file): pydicom reads the whole file and ``save_as`` writes it.
# Both apply the same checks and table to the same header: ``tests/test_deid.py`` checks that they write the
# same bytes with the same audit on every file at hand.
#: Transfer syntaxes whose dataset pydicom reads where it lies in the file, in the byte order we copy.
_COPY_SYNTAXES = frozenset(uid for uid in pydicom.uid.AllTransferSyntaxes
                           if uid.is_little_endian and not uid.is_deflated)
_PIXEL_VRS = (b"OB", b"OW", b"OF", b"OD", b"UN")
_UNDEFINED_LENGTH = 0xFFFFFFFF


def _pixel_element(handle: BinaryIO, syntax: UID, size: int) -> tuple[int, int, int] | None:
    """(tag, offset, value length) of the pixel data element that starts where ``handle`` stands, if it is one and
    ends exactly at the end of the file; None otherwise (an element after it, a truncated file: the full path)."""
    start = handle.tell()
    head = handle.read(12)
    if len(head) < 12:
        return None
    if syntax.is_implicit_VR:
        group, element, length = struct.unpack_from("<HHL", head)
        value_start = start + 8
    else:
        group, element, vr, length = struct.unpack_from("<HH2s2xL", head)
        if vr not in _PIXEL_VRS:
            return None
        value_start = start + 12
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS or (length == _UNDEFINED_LENGTH) != syntax.is_encapsulated:
        return None
    if length == _UNDEFINED_LENGTH:  # encapsulated: pydicom walks the fragments to the sequence delimiter
        handle.seek(value_start)
        try:
            read_undefined_length_value(handle, True, SequenceDelimiterTag, defer_size=0)
        except EOFError:
            return None
        length = handle.tell() - value_start
    return (tag, start, length) if value_start + length == size else None


class _Header(NamedTuple):
    """A file as the pixel-copy path reads it (see :func:`_read_header`)."""

    ds: Dataset  #: the dataset up to the pixel data, as pydicom read it
    raw: bytes  #: the file's bytes up to the pixel data element
    spans: dict[int, tuple[RawDataElement, int, int]]  #: where its raw elements lie in ``raw`` (:func:`_raw_spans`)
    pixel_tag: int
    pixel_length: int  #: the pixel data value's length in bytes
    size: int  #: the file's size: the pixel data element runs from ``len(raw)`` to here


def _read_header(handle: BinaryIO) -> _Header | None:
    """Read an open file for the pixel-copy path; None when it needs the full path (a file pydicom cannot read
    header-only, another byte order or deflate, pixel data that does not end the file)."""
    try:
        ds = pydicom.dcmread(handle, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the full path reads it again and says what is wrong
        return None
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax not in _COPY_SYNTAXES or ds.original_encoding != (syntax.is_implicit_VR, True):
        return None
    size = os.fstat(handle.fileno()).st_size
    pixels = _pixel_element(handle, syntax, size)
    if pixels is None:
        return None
    tag, start, length = pixels
    handle.seek(0)
    raw = handle.read(start)
    return _Header(ds, raw, _raw_spans(ds, raw, syntax.is_implicit_VR), tag, length, size)


def _deidentify_file_copy(src: Path, out_root: Path, ctx: DeidContext,
                          output: Callable[[Path, DeidAudit], Path]) -> tuple[DeidAudit, Path] | None:
    """The pixel-copy path (see above); None when the file needs the full path."""
    with open(src, "rb") as handle:
        header = _read_header(handle)
        if header is None:
            return None
        ds = header.ds
        audit = _deidentify_inplace(ds, ctx, (header.pixel_tag, header.pixel_length), ctx._elements)
        if max(ds.keys()) >= header.pixel_tag:  # the header held an element that sorts after the pixel data
            return None
        _file_meta(ds, audit.sop_class_uid)
        target = output(out_root, audit)
        start = len(header.raw)
        _write_atomic(target, _encode_spliced(ds, header.raw, header.spans, ctx._elements), handle, start,
                      header.size - start)
    return audit, target


def _raw_spans(ds: Dataset, header: bytes, implicit: bool) -> dict[int, tuple[RawDataElement, int, int]]:
    """Where each top-level element of ``ds``, as pydicom just read it, lies in ``header`` (the file's bytes up to
    the pixel data): tag -> (the raw element, start, end).

    Only raw elements whose bytes in the file are exactly what pydicom's ``write_data_element`` writes for them
    (:func:`_element_header`, then the value) are listed; anything else (a value of undefined length, non-zero
    reserved bytes, a VR pydicom would re-label) is left out, and pydicom encodes it.
    """
    spans: dict[int, tuple[RawDataElement, int, int]] = {}
    for tag, elem in ds.items():
        if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED_LENGTH:
            continue
        value = elem.value if elem.value is not None or elem.length else b""  # pydicom reads an empty value as None
        if value is None:
            continue
        head = _element_header(int(tag), elem.VR, len(value), implicit)
        start, end = elem.value_tell - len(head), elem.value_tell + len(value)
        if head and start >= 0 and header[start:end] == head + value:
            spans[int(tag)] = (elem, start, end)
    return spans


def _element_header(tag: int, vr: str | None, length: int, implicit: bool) -> bytes:
    """Tag, VR and length of an element as pydicom's ``write_data_element`` writes them (little endian); b"" for
    an element it would not write as it stands (no two-letter VR, a short-form VR longer than 64 kB)."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, element, length)
    if vr in EXPLICIT_VR_LENGTH_32:
        return struct.pack("<HH2sHL", group, element, str(vr).encode("ascii"), 0, length)
    if vr is None or len(vr) != 2 or length > 0xFFFF:
        return b""
    return struct.pack("<HH2sH", group, element, vr.encode("ascii"), length)


def _encode_spliced(ds: Dataset, header: bytes, read: dict[int, tuple[RawDataElement, int, int]],
                    memo: _ElementMemo | None = None) -> bytes:
    """What :func:`_encode` returns, built faster: an element that is still the very element pydicom read
    (:func:`_raw_spans`; a raw element cannot be changed in place, so identity proves it is unchanged) is copied
    as the bytes it was read from, which are the bytes pydicom writes for it; a cleaned element the ``memo``
    holds is written as pydicom wrote it the first time (:meth:`_ElementMemo.encoded`); every other element is
    written by pydicom (``write_data_element``, as ``write_dataset`` does). ``tests/test_deid.py`` checks that
    all give the same bytes.
    """
    if ds.original_character_set != ds._character_set:
        return _encode(ds)  # write_dataset then re-encodes every element: so does _encode
    ds.get("SOPClassUID"), ds.get("SOPInstanceUID")  # dcmwrite decodes both to check the file meta: so here
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = ds.file_meta.TransferSyntaxUID.is_implicit_VR, True
    fp.write(ds.preamble + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    encodings = _get(ds, 0x00080005) or default_encoding  # SpecificCharacterSet
    for tag in sorted(ds.keys()):
        if not tag & 0xFFFF and tag >> 16 > 6:  # retired group lengths, as write_dataset
            continue
        elem = ds.get_item(tag)
        span = read.get(tag)
        if span is not None and span[0] is elem:
            fp.write(header[span[1]:span[2]])
        elif memo is not None and (known := memo.encoded(elem, fp.is_implicit_VR, encodings)) is not None:
            fp.write(known)
        else:
            write_data_element(fp, elem, encodings)
    return fp.getvalue()


def _deidentify_file_full(src: Path, out_root: Path, ctx: DeidContext,
                          output: Callable[[Path, DeidAudit], Path]) -> tuple[DeidAudit, Path]:
    """The full path: pydicom reads the whole file and writes it with ``save_as``."""
    ds = _read(src)
    audit = _deidentify_inplace(ds, ctx, _pixels(ds))
    _file_meta(ds, audit.sop_class_uid)
    target = output(out_root, audit)
    _write_atomic(target, _encode(ds))
    return audit, target


def _encode(ds: Dataset) -> bytes:
    """``ds`` as pydicom writes it to a file (preamble, file meta, dataset in its transfer syntax)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_atomic(target: Path, data: bytes, source: BinaryIO | None = None, offset: int = 0,
                  count: int = 0) -> None:
    """Write ``data`` then ``count`` bytes of ``source`` from ``offset`` to ``target`` (a temporary file beside
    it, then a rename, so a killed run never leaves a partial file under the real name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if source is not None:
                _copy_range(source, fd, offset, count)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_range(handle: BinaryIO, fd: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``handle`` from ``offset`` to ``fd`` (in the kernel where the OS allows it)."""
    source = handle.fileno()
    try:
        while count > 0:
            sent = os.sendfile(fd, source, offset, count)
            if sent == 0:
                raise DicomReadError("the input file shrank while it was being de-identified")
            offset, count = offset + sent, count - sent
        return
    except (AttributeError, OSError) as exc:  # no sendfile between these files: copy through memory
        if isinstance(exc, OSError) and exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    handle.seek(offset)
    while count > 0:
        block = handle.read(min(count, 1 << 20))
        if not block:
            raise DicomReadError("the input file shrank while it was being de-identified")
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view):]
        count -= len(block)


def deidentify_file(src: Path, out_root: Path, ctx: DeidContext,
                    output: Callable[[Path, DeidAudit], Path] = output_path) -> DeidResult:
    """De-identify one file into ``out_root`` (atomic write).

    ``output`` names the file written from ``out_root`` and the audit: by default :func:`output_path` (names from
    pseudonyms and new UIDs only); the DAG's de-identification stage uses its own layout. Per-file problems never
    raise: they come back as a ``skipped``/``quarantined``/``ignored`` result with a reason code
    (:data:`REASONS`) and a PHI-free reason. The pixel-copy path is tried first; the full path (pydicom reads
    and writes the whole file) takes whatever it leaves, with the same outcome.
    """
    src = Path(src)
    if src.name.upper() == "DICOMDIR":
        return DeidResult(src, "ignored", reason_code="dicomdir", reason=REASONS["dicomdir"])
    with _recorded() as caught:
        try:
            written = _deidentify_file_copy(src, out_root, ctx, output)
            audit, target = written if written is not None else _deidentify_file_full(src, out_root, ctx, output)
        except (DeidentificationError, DicomReadError) as exc:
            code = getattr(exc, "reason_code", "error")
            status = ("quarantined" if isinstance(exc, QuarantineError)
                      else "ignored" if code == "dicomdir" else "skipped")
            return DeidResult(src, status, reason_code=code, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a hospital export
            own_file = isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename) == src
            if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in INFRASTRUCTURE_ERRNOS
                                                and not own_file):
                raise  # a full or failing disk is the machine, not this file: the job fails and is run again
            logger.debug("de-identification failed", exc_info=True)
            return DeidResult(src, "skipped", reason_code="error", reason=f"error: {type(exc).__name__}")
    notes = tuple(sorted({str(w.message)[:200] for w in caught}))
    if notes:
        audit = dataclasses.replace(audit, warnings=notes)
    return DeidResult(src, "written", output=target, audit=audit)


def _iter_files(in_dir: Path, avoid: tuple[Path, ...] = ()) -> list[tuple[Path, str]]:
    """Every entry under ``in_dir``, sorted: ``(path, "")`` for a file to de-identify (a link to a file included),
    ``(path, reason code)`` for one that is not read (:data:`REASONS`: a dangling link, a device, a loop).

    Links to folders are followed (an export tool or a mounted PACS share often links series folders), each real
    folder read once (its device and inode), so a loop ends; links into ``avoid`` (the output and audit folders)
    are not followed. Paths keep the names under ``in_dir`` (the link's, not its target's).
    """
    entries: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        real = folder.resolve()
        if any(real == a or a in real.parents for a in avoid):
            entries.append((folder, "output_folder_link"))
            return
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                entries.append((folder, "folder_visited"))
                return
            seen.add((info.st_dev, info.st_ino))
            children = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            entries.append((folder, "unreadable_folder"))
            return
        for entry in children:
            path = Path(entry.path)
            try:
                is_dir, is_file, is_link = entry.is_dir(), entry.is_file(), entry.is_symlink()
            except OSError:
                entries.append((path, "unreadable"))
                continue
            if is_dir:
                visit(path)
            elif is_file:
                entries.append((path, ""))
            else:
                entries.append((path, "dangling_link" if is_link and not path.exists() else "not_regular_file"))

    visit(in_dir)
    return sorted(entries)


#: Marker file in a de-identified output folder: which key wrote it, as a fingerprint (never the key).
OUTPUT_MARKER = "deid_output.json"
_FINGERPRINT_MESSAGE = b"palmares-deid output folder key check v1"


def key_fingerprint(key: bytes) -> str:
    """HMAC-SHA256 of a fixed string with the study key: tells two keys apart, gives nothing of the key away."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


def _claim_output(out_dir: Path, ctx: DeidContext) -> None:
    """Refuse an output folder that already holds something else than an earlier run with this key; mark it.

    Two keys' outputs side by side would be linkable (the same scans under two pseudonyms); any other non-empty
    folder is refused too (nothing there can be vouched for). An empty or new folder, or one an earlier run with
    the same key wrote (a rerun), is accepted and marked with :data:`OUTPUT_MARKER`.
    """
    fingerprint = key_fingerprint(ctx.key)
    if out_dir.exists() and not out_dir.is_dir():
        raise DeidentificationError(f"the output {out_dir} is a file, not a folder: choose an empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        marker = out_dir / OUTPUT_MARKER
        try:
            found = json.loads(marker.read_text(encoding="utf-8")).get("key_fingerprint")
        except (OSError, ValueError, AttributeError):
            found = None
        if found is None:
            raise DeidentificationError(
                f"the output folder {out_dir} is not empty and was not written by palmares deid: de-identify into "
                "an empty folder")
        if not hmac.compare_digest(str(found), fingerprint):
            raise DeidentificationError(
                f"the output folder {out_dir} holds files de-identified with another key: the two outputs side by "
                "side would be linkable; de-identify into an empty folder")
    write_json(out_dir / OUTPUT_MARKER, {"written_by": PROFILE_VERSION, "key_fingerprint": fingerprint})


def _settle_duplicates(results: list[DeidResult], out_dir: Path) -> None:
    """Make what is on disk and the audit agree when input files share a SOP Instance UID (in place).

    Identical files (same bytes): the first (in path order) is the one written, the others are ``ignored`` as
    ``duplicate_instance``. Different files: none is kept: every one is ``skipped`` as ``conflicting_instance`` and
    what they wrote is deleted (a last-writer-wins file would not be the one the audit names).
    """
    groups: dict[str, list[int]] = {}
    for index, result in enumerate(results):
        if result.status == "written" and result.audit is not None:
            groups.setdefault(result.audit.sop_instance_uid, []).append(index)
    for indices in groups.values():
        if len(indices) < 2:
            continue
        identical = len({sha256_file(results[i].source) for i in indices}) == 1
        if identical:
            for i in indices[1:]:
                results[i] = DeidResult(results[i].source, "ignored", reason_code="duplicate_instance",
                                        reason=REASONS["duplicate_instance"], audit=results[i].audit)
            continue
        for output in {results[i].output for i in indices if results[i].output is not None}:
            output.unlink(missing_ok=True)
            for parent in output.parents:  # series, study, patient folders left empty
                if parent == out_dir or out_dir not in parent.parents or any(parent.iterdir()):
                    break
                parent.rmdir()
        for i in indices:
            results[i] = DeidResult(results[i].source, "skipped", reason_code="conflicting_instance",
                                    reason=f"conflicting_instance: {REASONS['conflicting_instance']} "
                                           f"({len(indices)} files)", audit=results[i].audit)


def default_audit_dir(out_dir: Path) -> Path:
    """Default PHI audit folder: a sibling of ``out_dir`` named ``<out_dir name>_audit`` (never inside it)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}_audit"


def deidentify_tree(in_dir: Path, out_dir: Path, ctx: DeidContext, audit_dir: Path | None = None,
                    workers: int = 1) -> DeidSummary:
    """De-identify every file under ``in_dir`` into ``out_dir``; one bad file never stops the others.

    Writes ``out_dir/deid_manifest.csv`` and ``deid_manifest.json`` (no PHI: pseudonyms, new UIDs, counts and
    reason codes) and, in ``audit_dir`` (PHI work area, default :func:`default_audit_dir`),
    ``deid_series.json`` (one record per series) and ``deid_files.csv`` (one row per input file).
    ``workers`` > 1 de-identifies files in that many processes (same outputs, in the same order).

    ``out_dir`` must be empty, new, or written by an earlier run with the same key (:func:`_claim_output`:
    :class:`DeidentificationError` otherwise). Links to folders are followed once each; dangling links and other
    entries that are not files get a result with a reason (:func:`_iter_files`). Input files sharing a SOP Instance
    UID: an identical copy is ``ignored``, different files are all ``skipped`` and nothing of them is written
    (:func:`_settle_duplicates`), so the output, the manifest and the audit always agree.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer. Found: {workers!r}")
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    audit_dir = Path(audit_dir).resolve() if audit_dir is not None else default_audit_dir(out_dir)
    if not in_dir.is_dir():
        raise ConfigError(f"input folder {in_dir} does not exist")
    for inner, outer, what in ((out_dir, in_dir, "output"), (in_dir, out_dir, "input"),
                               (audit_dir, out_dir, "audit")):
        if inner == outer or outer in inner.parents:
            raise ConfigError(f"the {what} folder must not be inside the {'input' if what == 'output' else 'output'} "
                              f"folder: choose separate folders ({inner} vs {outer})")
    _claim_output(out_dir, ctx)
    entries = _iter_files(in_dir, (out_dir, audit_dir))
    paths = [path for path, code in entries if not code]
    workers = min(workers, len(paths))  # never more processes than files
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(deidentify_file, paths, repeat(out_dir), repeat(ctx),
                                     chunksize=max(1, min(32, len(paths) // (4 * workers)))))
    else:
        outcomes = [deidentify_file(path, out_dir, ctx) for path in paths]
    done = iter(outcomes)
    results = [next(done) if not code else
               DeidResult(path, "ignored" if code in ("folder_visited", "output_folder_link") else "skipped",
                          reason_code=code, reason=f"{code}: {REASONS[code]}")
               for path, code in entries]
    _settle_duplicates(results, out_dir)
    for result in results:
        logger.debug("%s %s %s", result.audit.patient if result.audit else "-", result.status, result.reason_code)
    summary = DeidSummary(tuple(results), out_dir / "deid_manifest.csv", out_dir / "deid_manifest.json", audit_dir)
    _write_manifest(summary, ctx, out_dir)
    _write_audit(summary, ctx, in_dir, out_dir, audit_dir)
    logger.info("de-identified %d files (%d skipped, %d quarantined, %d ignored); details in the audit folder",
                summary.count("written"), summary.count("skipped"), summary.count("quarantined"),
                summary.count("ignored"))
    return summary


def _csv_text(header: list[str], rows: Iterable[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_manifest(summary: DeidSummary, ctx: DeidContext, out_dir: Path) -> None:
    """PHI-free manifest: what was published (pseudonyms and new UIDs only) and counts of what was not."""
    rows = sorted(
        [r.audit.patient, r.audit.modality, r.audit.study_uid, r.audit.series_uid, r.audit.sop_instance_uid,
         r.audit.sop_class_uid, r.output.relative_to(out_dir).as_posix(), r.output.stat().st_size]
        for r in summary.results if r.status == "written" and r.audit and r.output
    )
    header = ["patient", "modality", "study_uid", "series_uid", "sop_instance_uid", "sop_class_uid", "path", "bytes"]
    write_text(summary.manifest_csv, _csv_text(header, rows))
    write_json(summary.manifest_json, {
        "profile_version": ctx.profile_version,
        "options": sorted(ctx.options),
        "method_codes": [METHOD_CODES["basic"][0]] + [METHOD_CODES[o][0] for o in SUPPORTED_OPTIONS
                                                      if o in ctx.options],
        "files": {s: summary.count(s) for s in ("written", "skipped", "quarantined", "ignored")},
        "not_written_by_reason": summary.reasons,
        "patients": len({row[0] for row in rows}),
        "series": len({row[3] for row in rows}),
    })


def _write_audit(summary: DeidSummary, ctx: DeidContext, in_dir: Path, out_dir: Path, audit_dir: Path) -> None:
    """PHI work area: one record per series (no date shift) and one row per input file with its reason."""
    series: dict[tuple[str, str], dict[str, object]] = {}
    uid_sets: dict[tuple[str, str], set[str]] = {}
    for result in summary.results:
        audit = result.audit
        if audit is None:
            continue
        key = (audit.patient, audit.series_uid)
        record = series.setdefault(key, {
            "patient": audit.patient, "site": audit.site, "source_patient_id": audit.source_patient_id,
            "modality": audit.modality, "source_study_uid": audit.source_study_uid,
            "source_series_uid": audit.source_series_uid, "study_uid": audit.study_uid,
            "series_uid": audit.series_uid, "files": Counter(), "actions": Counter(),
            "private_removed": 0, "private_kept": 0, "dates_shifted": 0,
            "profile_version": audit.profile_version, "warnings": set(),
        })
        record["files"][result.status] += 1  # type: ignore[index]
        if result.status == "written":
            record["actions"].update(audit.actions)  # type: ignore[union-attr]
            record["private_removed"] += audit.private_removed  # type: ignore[operator]
            record["private_kept"] += audit.private_kept  # type: ignore[operator]
            record["dates_shifted"] += audit.dates_shifted  # type: ignore[operator]
            record["warnings"].update(audit.warnings)  # type: ignore[union-attr]
            uid_sets.setdefault(key, set()).update(audit.remapped_uids)
    records = []
    for key, record in sorted(series.items()):
        record["uid_map_count"] = len(uid_sets.get(key, ()))
        record["files"] = dict(sorted(record["files"].items()))  # type: ignore[union-attr]
        record["actions"] = dict(sorted(record["actions"].items()))  # type: ignore[union-attr]
        record["warnings"] = sorted(record["warnings"])  # type: ignore[arg-type]
        records.append(record)
    write_json(audit_dir / "deid_series.json", {"profile_version": ctx.profile_version, "site": ctx.site,
                                                "series": records})
    rows = [[_file_name(r.source.relative_to(in_dir).as_posix() if r.source.is_relative_to(in_dir)
                        else str(r.source)),
             r.status, r.reason_code, r.reason, r.audit.patient if r.audit else "",
             r.output.relative_to(out_dir).as_posix() if r.output else ""] for r in summary.results]
    write_text(audit_dir / "deid_files.csv",
               _csv_text(["source", "status", "reason_code", "reason", "patient", "output"], rows))


def _file_name(name: str) -> str:
    """A file name for the (UTF-8) audit: a name whose bytes are not UTF-8 (``os.fsdecode`` keeps them as lone
    surrogates, which no UTF-8 writer accepts) is written with those bytes escaped (``Rossi_\\xe8.dcm``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
