"""One exception type per failure class.

Every message names the patient by pseudonym (never by a real identifier), the file or series
concerned, what was wrong and what a person can do about it. A stage that raises one of these
for one patient records it in the failure table; the run goes on for the others.
"""

from __future__ import annotations

import errno


class PalmaresError(Exception):
    """Base class of every error the pipeline reports to a person."""


class ConfigError(PalmaresError):
    """The configuration or a parameter file is invalid: fix the named key and rerun."""


class KeyFileError(PalmaresError):
    """The pseudonymisation key is missing or too short: provide the key file or variable named in the config."""


class DicomReadError(PalmaresError):
    """A file is not readable DICOM (truncated, not DICOM, no pixel data): re-export it from PACS."""


class SeriesSelectionError(PalmaresError):
    """No series fits the baseline definition for a patient: check the export or the therapy start date."""


class DeidentificationError(PalmaresError):
    """A DICOM object could not be de-identified safely; it is left out rather than published."""


class QuarantineError(DeidentificationError):
    """A series may carry burned-in identifying text (BurnedInAnnotation YES, secondary capture): it is quarantined."""


class SuvError(PalmaresError):
    """SUV cannot be computed without guessing (missing weight, dose, time, wrong units): fix the PET header."""


class SegmentationError(PalmaresError):
    """A segmentation does not fit its image (grid, extent, labels, references): re-export it on the right series.

    ``code`` is a stable snake_case name of the problem (``grid_shift``, ``overlap``, ... listed in
    :mod:`palmares_radiomics.validate`), ``message`` says what is wrong and ``fix`` what to do, one sentence;
    ``str(exc)`` is the message followed by the fix, the text failure tables and the command line print.
    """

    def __init__(self, message: str, *, code: str = "segmentation", fix: str = "") -> None:
        super().__init__(f"{message} {fix}" if fix else message)
        self.message = message
        self.code = code
        self.fix = fix


class FeatureExtractionError(PalmaresError):
    """Feature extraction failed for a lesion (empty or too small after resampling)."""


class ClinicalDataError(PalmaresError):
    """The clinical export has an invalid value: the message names the row and column to correct."""


class LesionTableError(PalmaresError):
    """The lesion table has a missing column or an invalid value: the message names the row and column to correct."""


class RatingsError(PalmaresError):
    """The visual QC ratings file has a missing column or an invalid value: the message names the row and column to
    correct (download the ratings again from the QC report, or fix the cell)."""


class SliceGeometryError(DicomReadError):
    """A DICOM series has missing, duplicated or unevenly spaced slices, so reading it as one volume would give it a
    wrong slice spacing: re-export the complete series from PACS (or choose a series without gaps)."""


class NonFiniteVoxelError(FeatureExtractionError):
    """A lesion holds NaN or infinite image voxels, which feature extraction would silently skip: check the image
    conversion (rescale, SUV) and that the segmentation lies inside the scanned volume."""


class UndefinedFeatureError(FeatureExtractionError):
    """A feature class returned NaN (an undefined value) for a feature of a lesion: the lesion is reported as failed
    instead of writing NaN; check the lesion (size, grey levels) or disable that feature in the parameter file."""


class ResamplingSizeError(FeatureExtractionError):
    """A resampled lesion neighbourhood would hold more voxels than the memory limit: choose a coarser
    ``palmares.resampling.spacing_mm`` or a smaller ``crop_margin_mm`` in the parameter file."""


#: errno values that say the machine, not the patient's data, failed: a full or read-only disk, a quota, an I/O
#: error, no permission on the work area, a stale network mount, no memory or file handles left.
INFRASTRUCTURE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EIO", "EROFS", "EACCES", "EPERM", "ENOMEM", "EMFILE", "ENFILE", "ESTALE", "EBUSY",
    "ETIMEDOUT", "ENOTCONN", "EHOSTDOWN", "EHOSTUNREACH", "ENETDOWN", "ENETUNREACH", "ENXIO", "ENODEV")
    if hasattr(errno, name))


def is_infrastructure_failure(exc: BaseException) -> bool:
    """True when ``exc`` is the machine failing rather than the patient's data, so the job must fail and be run
    again rather than record a failed patient: a MemoryError, an OSError that carries an errno (ENOSPC, EIO,
    EACCES, a missing file, ...; library format errors such as ``gzip.BadGzipFile`` carry none), or any error
    (a ``PalmaresError`` included) raised from an OSError whose errno is in :data:`INFRASTRUCTURE_ERRNOS`: stage
    code that wraps "cannot read this file" into a data error still meets a full or failing disk as the disk.
    """
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno is not None):
        return True
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, MemoryError) or (isinstance(cause, OSError) and cause.errno in INFRASTRUCTURE_ERRNOS):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
