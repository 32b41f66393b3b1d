"""The provenance record of a run: package versions, parameter and input hashes, configuration."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import sha256_file, write_json

PACKAGES = ("palmares-radiomics", "pyradiomics-bhklab", "SimpleITK", "pydicom", "highdicom", "nibabel", "numpy",
            "pandas", "pyarrow", "snakemake", "scikit-image", "scipy", "pandera", "neuroCombat", "matplotlib",
            "pillow")


def harmonisation_record(combat: Path | None) -> dict[str, Any]:
    """What ComBat did (qc/combat.csv), or that it was off: for the report and the provenance record."""
    if combat is None:
        return {"combat": "off", "detail": "harmonisation.combat is false: no *_combat table was written"}
    table = pd.read_csv(combat, keep_default_na=False)
    return {"combat": "on", "method": "ComBat (neuroCombat, parametric empirical Bayes) by centre",
            "outputs": ["features/lesions_combat.parquet", "tables/patients_combat.parquet"],
            "groups": table.to_dict(orient="records")}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def input_hashes(status_dir: Path, selected: set[tuple[str, str]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Content hash of every input series (SHA-256 over its files' SHA-256, from the de-identification stage)
    and of every segmentation file (from the mask stage), by pseudonym and modality: no path, no local id.
    ``selected``: the (patient, modality) pairs of this run's tables (records left by patients or series no
    longer in the study are not inputs of these results)."""
    from ..records import read_status

    def wanted(patient: str, modality: str) -> bool:
        return selected is None or (patient, modality) in selected

    series, segmentations = [], []
    for path in sorted(Path(status_dir).glob("deid/*.json")):
        status = read_status(path)
        for modality, info in sorted(status.details.get("modalities", {}).items()):
            if info.get("sha256") and wanted(status.patient, modality):
                series.append({"patient": status.patient, "modality": modality, "files": info.get("files"),
                               "sha256": info["sha256"]})
    for path in sorted(Path(status_dir).glob("mask/*.json")):
        status = read_status(path)
        info = status.details.get("segmentation")
        if status.ok and info and wanted(status.patient, status.modality):
            segmentations.append({"patient": status.patient, "modality": status.modality,
                                  "format": status.details.get("format", ""), "sha256": info["sha256"]})
    return {"series": series, "segmentations": segmentations}


def write_provenance(out: Path, config: Mapping[str, Any], params: Mapping[str, Path], inputs: Sequence[Path],
                     counts: Mapping[str, int] | None = None, combat: Path | None = None,
                     status_dir: Path | None = None, selected: set[tuple[str, str]] | None = None) -> Path:
    """Record versions, parameter and input hashes and the configuration (no key, no time stamp:
    the same inputs give the same bytes). Inputs are keyed by their path as given (two centres'
    ``export.csv`` in different folders are two entries, not one); with ``status_dir``, also the content
    hash of every DICOM series and segmentation file that went in (:func:`input_hashes`)."""
    record = {
        "python": platform.python_version(),
        "packages": package_versions(),
        "config": {k: v for k, v in config.items()},
        "params": {name: {"path": str(path), "sha256": sha256_file(Path(path))} for name, path in params.items()},
        "inputs": {str(p): sha256_file(Path(p)) for p in inputs},
        "imaging_inputs": input_hashes(status_dir, selected) if status_dir is not None else {},
        "counts": dict(counts or {}),
        "harmonisation": harmonisation_record(combat),
    }
    return write_json(out, record)
