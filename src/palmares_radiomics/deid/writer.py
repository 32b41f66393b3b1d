"""One file in, one de-identified file out (:func:`deidentify_file`): the pixel-copy path and the full path.

pydicom reads and writes every file. A file whose pixel data element comes last takes the pixel-copy path: pydicom
reads and writes the header only and the pixel data element is copied from file to file by the kernel, byte for
byte, so a large multi-frame object never enters memory; every other file takes the full path (see "file paths"
below). For single-slice CT and PET files the time goes to pydicom's header reader and writer and to the table,
not to the pixels (``benchmarks/README.md``).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.fileutil import read_undefined_length_value
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.tag import SequenceDelimiterTag
from pydicom.uid import UID

from ..errors import INFRASTRUCTURE_ERRNOS, DeidentificationError, DicomReadError, QuarantineError
from .engine import (
    _PIXEL_TAGS,
    DeidContext,
    _deidentify_inplace,
    _ElementMemo,
    _file_meta,
    _get,
    _pixels,
    _read,
    _recorded,
    output_path,
)
from .records import REASONS, DeidAudit, DeidResult

# The package's logger, as before the module was split: log lines still name palmares_radiomics.deid.
logger = logging.getLogger(__package__)


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
