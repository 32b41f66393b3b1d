"""One patient, one process: every per-patient stage in turn (the DAG's job per patient), and where they write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .. import volumes
from .deid import run_deid
from .features import run_features
from .image import run_image
from .mask import run_mask
from ..records import StageStatus
from .status import stage_log


#: glibc ``mallopt`` parameters (malloc.h) and the size under which freed memory is kept for reuse.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _KEEP_BYTES = -1, -3, 1 << 30


@cache
def _glibc() -> Any:
    """The C library when it is glibc (``mallopt``, ``malloc_trim``), else None."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 1 GiB for reuse instead of giving them back to the kernel.

    A stage allocates and frees whole-volume arrays (100-400 MB for a clinical CT) again and again; by default glibc
    maps each afresh, and the kernel zero-fills it page by page (535,000 page faults and 1.7 s of system time per
    patient, benchmarks/bench_cohort.py). The per-patient job calls :func:`release_freed_memory` between stages, so
    that what one stage kept does not add to the next one's peak. For the per-patient job's process only. Returns
    False where there is no glibc (nothing changes)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) \
        and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def release_freed_memory() -> None:
    """Give the memory freed so far back to the kernel (glibc ``malloc_trim``; nothing elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: The stages of one series, in the order the per-patient job runs them after de-identification.
SERIES_STAGES = ("image", "mask", "features")


@dataclass(frozen=True, slots=True)
class WorkLayout:
    """Where the per-patient job reads and writes under the study's work folder (``work_dir``): past the PHI
    boundary, and in its ``phi/`` area. ``workflow/rules/patient.smk`` declares the same paths to Snakemake (the
    end-to-end tests fail if the two disagree: Snakemake then misses an output)."""

    work: Path

    @property
    def phi(self) -> Path:
        return self.work / "phi"

    def record(self, patient: str, modality: str = "") -> Path:
        """The intake's record of the patient (``modality`` "") or of one of its series (PHI side)."""
        return self.phi / "intake" / (f"{patient}_{modality}.json" if modality else f"{patient}.json")

    def status(self, stage: str, patient: str, modality: str = "") -> Path:
        return self.work / "status" / stage / (f"{patient}_{modality}.json" if modality else f"{patient}.json")

    def log(self, stage: str, patient: str, modality: str) -> Path:
        """A series stage's own log, past the boundary (image, features)."""
        return self.work / "logs" / stage / f"{patient}_{modality}.log"

    def audit(self, patient: str, modality: str = "") -> Path:
        """De-identification audit (PHI side): of the DICOM series, or of one modality's segmentation."""
        return self.phi / "audit" / (f"{patient}_{modality}_segmentation.json" if modality else f"{patient}.json")

    def deid(self, patient: str) -> Path:
        return self.work / "deid" / patient

    def product(self, stage: str, patient: str, modality: str) -> Path:
        """What a series stage writes: the image volume, the label map, the feature rows."""
        name = {"image": f"images/{patient}/{modality}.nii", "mask": f"masks/{patient}/{modality}.nii.gz",
                "features": f"features/{patient}/{modality}.json"}[stage]
        return self.work / name

    def qc(self, patient: str, modality: str) -> Path:
        return self.work / "qc" / patient / modality


def run_patient(patient: str, layout: WorkLayout, modalities: Sequence[str], key: bytes, params: Mapping[str, Path],
                *, suv_normalisations: Sequence[str] = (), suv_override: str | dict[str, Any] | None = None,
                min_volume_ml: float) -> list[StageStatus]:
    """Every per-patient stage in one process, the DAG's job per patient (``palmares stage patient``):
    de-identification, then for each of ``modalities`` the image, mask and features stages in turn.

    One process per patient instead of seven saves their start-ups (numpy, SimpleITK, scipy, pydicom, radiomics:
    0.6-1.5 CPU-s each, ``benchmarks/bench_cohort.py``) and six sevenths of the DAG's jobs. Each stage still writes
    its own status record, read by the next as when they ran apart: the outcome is that of ``palmares stage deid``,
    ``image``, ``mask`` and ``features`` run in turn (a modality the patient has no series of gets ``skipped``
    records, which the tables leave out). The image and features stages also log to their own files past the PHI
    boundary; de-identification and the mask stage read raw data, so their records go only to the job's stderr,
    which the DAG keeps on the PHI side. ``suv_override``: the patient's audited entry, for the PET image stage.
    """
    deid_status = layout.status("deid", patient)
    statuses = [run_deid(patient, layout.record(patient), key, layout.deid(patient), deid_status,
                         layout.audit(patient))]
    for modality in modalities:
        paths = {stage: layout.status(stage, patient, modality) for stage in SERIES_STAGES}
        release_freed_memory()  # each stage's peak on its own, as if it ran in a process of its own
        with stage_log(layout.log("image", patient, modality)):
            image = run_image(patient, modality, deid_status, layout.product("image", patient, modality),
                              paths["image"], suv_normalisations, suv_override if modality == "pet" else None)
        release_freed_memory()
        mask = run_mask(patient, modality, layout.record(patient, modality), deid_status, paths["image"], key,
                        layout.product("mask", patient, modality), paths["mask"], layout.audit(patient, modality),
                        min_volume_ml=min_volume_ml)
        release_freed_memory()
        with stage_log(layout.log("features", patient, modality)):
            features = run_features(patient, modality, paths["image"], paths["mask"], params[modality],
                                    layout.product("features", patient, modality), paths["features"],
                                    qc_dir=layout.qc(patient, modality))
        statuses += [image, mask, features]
        volumes.forget_volumes()
    return statuses
