"""Small typed records that stages pass to each other (frozen: built once, validated on creation)."""

from __future__ import annotations

from dataclasses import dataclass

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
