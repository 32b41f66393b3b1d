"""Cluster resources of the per-patient jobs: memory and wall time scaled from the image size.

The per-patient stages (deid, image, mask, features, run in turn by the one job per patient, rule ``patient``)
hold whole volumes in memory, so what a job needs grows with the number of voxels of its series. That number
is known from the headers-only index before any pixel is read: the series selection records Rows x Columns x
NumberOfFrames summed over the chosen series' files (``Selection.voxels``; a multi-frame Enhanced CT/PET file
holds the whole volume). Before the selection exists (a dry run of a
new study) a conservative default size is assumed; when the job is scheduled, Snakemake evaluates
the resources again and the real size is used. A retried job (``attempt`` > 1) gets proportionally
more memory and time, so an out-of-memory kill on the cluster is followed by a larger request.

The numbers come from the rules' ``benchmark`` records (max RSS, wall time) on synthetic series of
5 to 79 million voxels, with generous headroom; see ``STAGE_MODELS``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

#: Assumed series sizes (voxels) when the selection does not exist yet: a 512 x 512 x 400 CT and a
#: 256 x 256 x 400 PET (whole-body studies; the largest common clinical matrices).
DEFAULT_VOXELS: dict[str, int] = {"ct": 512 * 512 * 400, "pet": 256 * 256 * 400}


@dataclass(frozen=True, slots=True)
class ResourceModel:
    """Memory (MB) and wall time (minutes) of one stage's job as ``base + slope x megavoxels``.

    ``threads`` is what the stage can use (all stages are single-threaded Python today).
    """

    threads: int
    mem_mb_base: int
    mem_mb_per_megavoxel: float
    runtime_base: int
    runtime_per_megavoxel: float

    def __post_init__(self) -> None:
        for name in ("threads", "mem_mb_base", "runtime_base"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1. Found: {getattr(self, name)}")
        for name in ("mem_mb_per_megavoxel", "runtime_per_megavoxel"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative. Found: {getattr(self, name)}")

    def mem_mb(self, voxels: int, attempt: int = 1) -> int:
        """Memory request in MB for a series of ``voxels`` voxels (``attempt`` times more on a retry).

        >>> ResourceModel(1, 1000, 100.0, 10, 1.0).mem_mb(2_000_000)
        1200
        """
        return math.ceil((self.mem_mb_base + self.mem_mb_per_megavoxel * voxels / 1e6) * max(attempt, 1))

    def runtime(self, voxels: int, attempt: int = 1) -> int:
        """Wall-time limit in minutes for a series of ``voxels`` voxels (``attempt`` times more on a retry).

        >>> ResourceModel(1, 1000, 100.0, 10, 1.0).runtime(2_000_000, attempt=2)
        24
        """
        return math.ceil((self.runtime_base + self.runtime_per_megavoxel * voxels / 1e6) * max(attempt, 1))


#: Per-stage models. Peak RSS and wall time measured on this project's machine (``benchmark`` records of a
#: local run on synthetic patients, CT 512 x 512 x 120 = 31.5 Mvoxel and 512 x 512 x 300 = 78.6 Mvoxel, PET 4.9
#: and 12.3 Mvoxel): image 0.65 -> 1.28 GB and 9 -> 20 s, mask 0.53 -> 1.30 GB, features 0.66 -> 1.90 GB
#: (1 and 3 lesions), deid 0.23 -> 0.39 GB for both modalities; i.e. about 13, 16, 26 and 3 MB per megavoxel
#: over a ~250 MB start-up. The models double those slopes (real scans carry more lesions, and retries
#: double again), start at 1 GB, and allow about ten times the measured time for a slow shared filesystem.
#: A 512 x 512 x 400 CT thus asks for 4.1 GB (image), 4.7 GB (mask) and 6.7 GB (features).
STAGE_MODELS: dict[str, ResourceModel] = {
    "deid": ResourceModel(threads=1, mem_mb_base=1000, mem_mb_per_megavoxel=6.0,
                          runtime_base=10, runtime_per_megavoxel=0.05),
    "image": ResourceModel(threads=1, mem_mb_base=1000, mem_mb_per_megavoxel=30.0,
                           runtime_base=5, runtime_per_megavoxel=0.04),
    "mask": ResourceModel(threads=1, mem_mb_base=1000, mem_mb_per_megavoxel=35.0,
                          runtime_base=5, runtime_per_megavoxel=0.03),
    "features": ResourceModel(threads=1, mem_mb_base=1500, mem_mb_per_megavoxel=50.0,
                              runtime_base=10, runtime_per_megavoxel=0.1),
}


def in_turn(*models: ResourceModel) -> ResourceModel:
    """The model of stages run one after another in one process: the most threads and memory any of them needs
    (each frees its volumes when it ends), the sum of their times.

    >>> in_turn(ResourceModel(1, 1000, 30.0, 5, 0.04), ResourceModel(1, 1500, 20.0, 10, 0.1)).mem_mb(10_000_000)
    1800
    """
    return ResourceModel(threads=max(m.threads for m in models), mem_mb_base=max(m.mem_mb_base for m in models),
                         mem_mb_per_megavoxel=max(m.mem_mb_per_megavoxel for m in models),
                         runtime_base=sum(m.runtime_base for m in models),
                         runtime_per_megavoxel=sum(m.runtime_per_megavoxel for m in models))


#: The DAG's job per patient (rule ``patient``) runs every stage in turn: de-identification, then image, mask and
#: features of each modality (its series' voxels summed: more memory than one series needs, never less).
STAGE_MODELS["patient"] = in_turn(*(STAGE_MODELS[stage] for stage in ("deid", "image", "mask", "features")))


@lru_cache(maxsize=256)
def _selection_voxels(path: str, mtime_ns: int, size: int) -> dict[tuple[str, str], int]:
    """(patient, modality) -> voxels of one selection CSV; cached per file version (path, mtime, size)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "voxels" not in table.columns:
        return {}
    voxels = pd.to_numeric(table["voxels"], errors="coerce").fillna(0).astype("int64")
    return {(p, m): int(v) for p, m, v in zip(table["patient"], table["modality"], voxels) if v > 0}


def series_voxels(selection_csv: Path, patient: str, modality: str) -> int:
    """Voxels of the patient's selected series of ``modality``, or ``DEFAULT_VOXELS`` when not known yet.

    Reads the site's selection CSV once per version of the file (the scheduler asks for thousands of
    jobs). A missing file, a failed selection or a selection without sizes gives the default.
    """
    try:
        stat = os.stat(selection_csv)
    except FileNotFoundError:
        return DEFAULT_VOXELS[modality]
    known = _selection_voxels(str(selection_csv), stat.st_mtime_ns, stat.st_size)
    return known.get((patient, modality), DEFAULT_VOXELS[modality])


def stage_mem_mb(stage: str, voxels: int, attempt: int = 1) -> int:
    """Memory request (MB) of one ``stage`` job over ``voxels`` voxels."""
    return _model(stage).mem_mb(voxels, attempt)


def stage_runtime(stage: str, voxels: int, attempt: int = 1) -> int:
    """Wall-time request (minutes) of one ``stage`` job over ``voxels`` voxels."""
    return _model(stage).runtime(voxels, attempt)


def stage_threads(stage: str) -> int:
    """Threads of one ``stage`` job."""
    return _model(stage).threads


def _model(stage: str) -> ResourceModel:
    """The model of ``stage``; a clear error for a stage without one."""
    try:
        return STAGE_MODELS[stage]
    except KeyError:
        raise ValueError(f"no resource model for stage {stage!r}; known: {sorted(STAGE_MODELS)}") from None
