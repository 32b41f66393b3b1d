"""Writing a cohort: ``synthesize_cohort`` plans every site and patient, renders and writes each patient's
series and masks, then the CSV exports and the truth tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ..errors import ConfigError
from ..files import write_text
from .clinical import _clinical_row, _lesion_table_rows, _write_csv
from .dicom import _ct_slices, _pet_slices, _write_dataset, _write_series
from .masks import _label_map, _rtstruct_dataset, _seg_dataset, _write_nifti, segmentation_time
from .plan import (
    CLINICAL_COLUMNS,
    LESION_TABLE_COLUMNS,
    SEGMENTATION_FILES,
    TRUTH_LESION_COLUMNS,
    TRUTH_PATIENT_COLUMNS,
    Patient,
    _MarkerBook,
    _plan_patient,
    _plan_site,
    _validate,
)
from .truth import _nac_factor, _truth_lesion_rows, _truth_patient_row, ct_hu_volume, pet_suv_volume, suvbw_scale


@dataclass(frozen=True, slots=True)
class CohortSummary:
    """What ``synthesize_cohort`` wrote: counts, the PHI markers planted, and where."""

    out_dir: Path
    n_patients: int
    n_lesions: int
    n_files: int
    markers: tuple[str, ...]
    seed: int
    sites: tuple[str, ...]


def _write_patient(root: Path, patient: Patient, seed: int) -> int:
    """Render and write one patient's DICOM series and segmentations; returns the number of files written."""
    n_files = 0
    written: dict[str, list[Dataset]] = {}
    for number, spec in enumerate(patient.series):
        rng = np.random.default_rng([seed, 2, patient.index, number])
        lesions = () if spec.role == "ct_old" else patient.lesions
        if spec.modality == "CT":
            slices = _ct_slices(patient, spec, ct_hu_volume(spec.grid, lesions, rng), seed)
        else:
            activity = pet_suv_volume(spec.grid, lesions, rng) / suvbw_scale(patient, spec.start)
            if spec.role == "pet_nac":
                activity = activity * _nac_factor(spec.grid)
            slices = _pet_slices(patient, spec, activity, seed)
        n_files += len(_write_series(root, patient, spec, slices))
        written[spec.role] = slices
    seg_time = segmentation_time(patient)
    for modality in ("ct", "pet"):
        spec = patient.series_by_role(modality)
        assert spec is not None
        folder = root / "raw" / "segmentations" / patient.site.code / patient.patient_id / modality
        path = folder / SEGMENTATION_FILES[patient.segmentation_format]
        labels = _label_map(spec.grid, patient.lesions)
        if patient.segmentation_format == "nifti":
            _write_nifti(path, spec.grid, labels)
        elif patient.segmentation_format == "seg":
            _write_dataset(path, _seg_dataset(patient, modality, written[modality], labels, seed, seg_time))
        else:
            _write_dataset(path, _rtstruct_dataset(patient, modality, spec, written[modality], seed, seg_time))
        n_files += 1
    return n_files


def synthesize_cohort(out_dir: Path, patients: int = 3, seed: int = 0, shape: tuple[int, int, int] = (64, 64, 40),
                      sites: int = 2) -> CohortSummary:
    """Write a synthetic multicentre cohort under ``out_dir`` (layout in docs/data-layout.md) and its truth.

    ``shape`` is the CT matrix (columns, rows, slices); patients are spread over ``sites`` sites
    (patient i at site i mod sites). Same arguments give byte-identical files. Refuses an ``out_dir``
    that already holds ``raw/`` or ``truth/``, so two cohorts never mix.
    """
    shape = _validate(patients, seed, shape, sites)
    root = Path(out_dir)
    for part in ("raw", "truth"):
        if (root / part).exists():
            raise ConfigError(f"{root / part} already exists; choose an empty output folder or delete it")
    book = _MarkerBook(seed)
    site_plans = [_plan_site(seed, s, book) for s in range(sites)]
    plans = [_plan_patient(seed, i, site_plans[i % sites], shape, book) for i in range(patients)]
    n_files = sum(_write_patient(root, p, seed) for p in plans)
    markers = tuple(entry[0] for entry in book.entries)
    tables = (
        _write_csv(root / "raw" / "lesions.csv", LESION_TABLE_COLUMNS, [r for p in plans for r in _lesion_table_rows(p)]),
        _write_csv(root / "raw" / "clinical.csv", CLINICAL_COLUMNS, [_clinical_row(p) for p in plans]),
        _write_csv(root / "truth" / "patients.csv", TRUTH_PATIENT_COLUMNS, [_truth_patient_row(p) for p in plans]),
        _write_csv(root / "truth" / "lesions.csv", TRUTH_LESION_COLUMNS,
                   [r for p in plans for r in _truth_lesion_rows(p)]),
        write_text(root / "truth" / "markers.txt", "".join(f"{m}\n" for m in markers)),
        _write_csv(root / "truth" / "markers.csv", ("marker", "site", "patient_id", "where"),
                   [dict(zip(("marker", "site", "patient_id", "where"), e)) for e in book.entries]),
    )
    return CohortSummary(out_dir=root, n_patients=patients, n_lesions=sum(len(p.lesions) for p in plans),
                         n_files=n_files + len(tables), markers=markers, seed=seed,
                         sites=tuple(s.code for s in site_plans))
