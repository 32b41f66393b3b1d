"""The de-identification of one dataset: checks, the action table applied element by element, PS3.15 E.1.1.

The actions are those of the table compiled by :mod:`palmares_radiomics.deid.table`. UIDs with action U are
remapped with :func:`pseudonym.remap_uid` everywhere (file meta included); well-known DICOM UIDs
(``1.2.840.10008.*``: SOP classes, transfer syntaxes, standard frames of reference) are never changed. Pixel data
is never touched.

PatientName and PatientID become the pseudonym, PatientIdentityRemoved YES, DeidentificationMethod and its Code
Sequence (CID 7050) and LongitudinalTemporalInformationModified MODIFIED are set (PS3.15 E.1.1). What may carry
burned-in text or a face is quarantined, never written, with a reason code saying which rule caught it
(:data:`REASONS`): BurnedInAnnotation YES, secondary capture and visible-light SOP classes, an ImageType naming a
screen capture (SCREEN SAVE, SCREENSHOT), encapsulated documents and overlays hidden in pixel bits.

Speed: values are decoded only when an action changes them, and the keyed HMACs are memoised per context
(:class:`DeidContext`); the pixel-copy path (:mod:`palmares_radiomics.deid.writer`) also reuses the top-level
elements a series repeats (:class:`_ElementMemo`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import math
import re
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from ..errors import ConfigError, DeidentificationError, DicomReadError, QuarantineError
from ..pseudonym import MIN_KEY_LENGTH, date_shift_days, pseudonym, remap_uid
from ..structure_names import is_structure_name
from .records import REASONS, DeidAudit
from .table import (
    _CURVE_GROUPS,
    _OVERLAY_GROUPS,
    _REPEATING_GROUP_MASK,
    _SAFE_PRIVATE_INDEX,
    DEFAULT_OPTIONS,
    KEEP_TEXT,
    METHOD_CODES,
    PROFILE_VERSION,
    STANDARD_CODING_SCHEMES,
    SUPPORTED_OPTIONS,
    TEXT_VRS,
    ActionTable,
    LevelPlan,
    SafePrivate,
    Step,
    _resolve_code,
    load_action_table,
)

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

# Elements the table does not list (table.TEXT_VRS, table.KEEP_TEXT) and dummy values (action D).
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


# ---------------------------------------------------------------------------------------------------- context
# DeidContext lives with the engine, not with the records (records.py): it holds the engine's memos (the HMAC
# results and the pixel-copy path's _ElementMemo), so records.py would otherwise have to import the engine.
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


def _resolve(code: str, keyword: str, state: _State, depth: int) -> str:
    """Resolve a combined code (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) with the attribute's Type; unknown -> conservative."""
    return _resolve_code(code, keyword, state.family, depth)


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
