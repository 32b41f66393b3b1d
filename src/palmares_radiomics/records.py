"""Small typed records that stages pass to each other (frozen: built once, validated on creation), and the status
record every stage writes for the next ones and for the tables (``read_status``; written by
:func:`palmares_radiomics.stages.status.write_status`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODALITIES: tuple[str, ...] = ("ct", "pet")
ORGANS: tuple[str, ...] = ("liver", "bone", "lymph_node", "lung", "breast", "other")
#: Lesion -> patient aggregates (config patient_aggregates; palmares_radiomics.tables computes them). Here, in a
#: module without heavy imports, so the command-line parser can offer them as choices.
AGGREGATES: tuple[str, ...] = ("count", "largest", "volume_weighted_mean", "min", "max")
DEFAULT_AGGREGATES: tuple[str, ...] = ("count", "largest")


@dataclass(frozen=True, slots=True)
class LesionSpec:
    """One lesion as the radiologist declared it in the lesion table.

    ``label`` is the lesion's value in the imported label map and, when the lesion is found by number, the
    structure's number in the mask file: NIfTI/NRRD label value, DICOM-SEG SegmentNumber, RTSTRUCT ROI
    Number (3006,0022; not the ROI's position). ``roi_name`` is the ROI name in an RTSTRUCT or the segment
    label in a DICOM-SEG; a lesion with a roi_name is found by that name, and when several structures share
    it (a SEG repeating 'Neoplasm, Secondary') by the one whose number is ``label``. Structures the table
    does not name (organs at risk, 'Body') are ignored (:func:`palmares_radiomics.masks.import_segmentation`).
    """

    lesion_id: str
    modality: str
    label: int
    organ: str
    roi_name: str = ""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"lesion {self.lesion_id}: modality must be one of {MODALITIES}. Found: {self.modality!r}")
        if self.organ not in ORGANS:
            raise ValueError(f"lesion {self.lesion_id}: organ must be one of {ORGANS}. Found: {self.organ!r}")
        if not 1 <= self.label < 65536:
            raise ValueError(f"lesion {self.lesion_id}: label must be an integer from 1 to 65535. Found: {self.label}")


#: The outcomes of a stage (StageStatus.status) and of a lesion (LesionOutcome.status).
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True, slots=True)
class LesionOutcome:
    """What a stage made of one lesion: ``ok``, or ``failed`` with the reason (a ``PalmaresError``'s message).

    The features stage gives one per lesion; the failure table reads the failed ones (one row per lesion), the
    tables read the rows of the ok ones, so both describe the same lesions."""

    lesion_id: str
    organ: str
    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True, slots=True)
class StageStatus:
    """Outcome of one stage for one patient (and modality): products on success, a reason otherwise, and the outcome
    of each lesion where the stage has one per lesion (``lesions``)."""

    stage: str
    patient: str
    modality: str
    status: str
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    lesions: tuple[LesionOutcome, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def failed_lesions(self) -> tuple[LesionOutcome, ...]:
        """The lesions this stage could not give a result for."""
        return tuple(lesion for lesion in self.lesions if not lesion.ok)


def read_status(path: Path) -> StageStatus:
    """Read a status record written by :func:`palmares_radiomics.stages.status.write_status`."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    lesions = tuple(LesionOutcome(**lesion) for lesion in record.pop("lesions", ()))
    if not lesions and record.get("details", {}).get("lesion_failures"):  # written before the per-lesion records
        lesions = tuple(LesionOutcome(f["lesion_id"], "", FAILED, f["reason"])
                        for f in record["details"]["lesion_failures"])
    return StageStatus(**record, lesions=lesions)
