"""Synthetic multicentre cohort: hospital-like DICOM exports, radiologists' masks, a clinical export and the truth.

``synthesize_cohort`` writes, from a seed alone, what the study receives from its sites (see
``docs/data-layout.md``) plus the answers a test needs: every PHI marker planted, the baseline series
UIDs, lesion positions, HU and SUVbw, and the survival outcomes.

The truth stays meaningful because every design choice is fixed in this package; each module's docstring
states the choices it implements:

- :mod:`.plan`: constants, the frozen plan records and the seeded draws (sites, patients, sessions, lesions, PHI).
- :mod:`.truth`: CT (HU) and PET (SUVbw) volumes, the SUVbw scale and decayed dose, and the truth tables.
- :mod:`.dicom`: CT and PET image series (headers, private block, pixels) in hospital-like export folders.
- :mod:`.masks`: label maps and the NIfTI, DICOM-SEG and RTSTRUCT segmentation writers.
- :mod:`.clinical`: the clinical export and lesion table (CSV) and the CSV writer.
- :mod:`.cohort`: ``synthesize_cohort``, which writes a whole cohort and its truth.

- **Determinism.** All randomness comes from ``numpy.random.default_rng([seed, ...])`` streams and all
  UIDs are ``2.25.<int>`` derived from SHA-256 of the seed and the object's role; no wall-clock time is
  read, so the same arguments give byte-identical files.
"""

from __future__ import annotations

from .cohort import CohortSummary, synthesize_cohort
from .masks import segmentation_time
from .plan import (
    CLINICAL_COLUMNS,
    RTSTRUCT_FIRST_LESION_NUMBER,
    RTSTRUCT_OTHER_ROIS,
    SEGMENTATION_FILES,
    Anatomy,
    Clinical,
    Grid,
    Identity,
    Lesion,
    Patient,
    SeriesSpec,
    Session,
    Site,
    StudySpec,
    Vendor,
    make_uid,
)
from .truth import ct_hu_volume, decayed_dose_bq, outcomes, pet_suv_volume, suvbw_scale

__all__ = [
    "CLINICAL_COLUMNS",
    "RTSTRUCT_FIRST_LESION_NUMBER",
    "RTSTRUCT_OTHER_ROIS",
    "SEGMENTATION_FILES",
    "Anatomy",
    "Clinical",
    "CohortSummary",
    "Grid",
    "Identity",
    "Lesion",
    "Patient",
    "SeriesSpec",
    "Session",
    "Site",
    "StudySpec",
    "Vendor",
    "ct_hu_volume",
    "decayed_dose_bq",
    "make_uid",
    "outcomes",
    "pet_suv_volume",
    "segmentation_time",
    "suvbw_scale",
    "synthesize_cohort",
]
