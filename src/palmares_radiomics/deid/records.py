"""What de-identification reports: one object's audit, one file's result, one run's summary, and the reason
codes of the files that are not written (:data:`REASONS`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
