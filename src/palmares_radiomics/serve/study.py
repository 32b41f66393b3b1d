"""The study the upload page serves: its configuration, its patients and their baseline images (PHI side).

The page knows the same patients as the study command: those the intake checkpoint selected
(``work/phi/intake/patients.csv`` and ``work/intake/modalities.csv``, written by the DAG). A patient's
baseline image is read from the raw series the intake recorded (``work/phi/intake/<patient>.json``),
CT in HU and PET in SUVbw through the SUV card (with the config's audited ``suv_overrides``), exactly
as the image stage reads it, and kept in a small in-memory cache while its files are unchanged.
The lesion table is read afresh for every upload, so an edit made a minute ago counts.
Nothing here leaves the host but what the page shows a centre about its own patients.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import SimpleITK as sitk
import yaml

from ..errors import ConfigError, PalmaresError

#: Cached baseline images (float32: 315 MB for 512×512×300); a centre uploads one patient at a time.
IMAGE_CACHE_SIZE = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One patient and modality with a selected baseline series: what the page lists and accepts uploads for."""

    site: str
    patient_id: str
    patient: str  # pseudonym, never shown to the browser
    modality: str


@dataclass(frozen=True, slots=True)
class BaselineImage:
    """A patient's baseline volume as the image stage reads it, with what validation and the page need."""

    image: sitk.Image
    reference: Any  # masks.ImageReference of the raw series (SEG/RTSTRUCT references are checked against it)
    series_hint: str  # "the baseline CT (series 3, 2024-01-12)": shown only to the patient's own centre
    warning: str  # e.g. the PET's SUV could not be computed: geometry checked on the stored values


class Study:
    """Paths and settings of one study config, resolved against the folder Snakemake runs in (``root``)."""

    def __init__(self, config_path: Path, root: Path | None = None) -> None:
        from ..configcheck import check_config

        self.root = Path(root or Path.cwd())
        config_path = Path(config_path)
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"the configuration {config_path.name} cannot be read ({type(exc).__name__})") from None
        schema = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
        if schema.is_file():  # an installed package without the workflow folder skips the schema check
            check_config(config, schema)
        self.config: Mapping[str, Any] = config
        work = self._path(config["work_dir"])
        self.intake = work / "phi" / "intake"
        self.modalities_table = work / "intake" / "modalities.csv"
        self.uploads = work / "phi" / "uploads"
        self.segmentations = self._path(config["segmentations"])
        self.lesions_csv = self._path(config["lesions"])
        self.modalities: list[str] = list(config.get("modalities", ["ct", "pet"]))
        self.params = {m: self._path(p) for m, p in (config.get("params") or {}).items()}
        self.min_volume_ml = float(config.get("min_lesion_volume_ml", 0.5))
        self.max_upload_bytes = int(float((config.get("serve") or {}).get("max_upload_mb", 200)) * 1024 * 1024)
        self.suv_overrides: Mapping[str, Any] = config.get("suv_overrides") or {}
        self._cache: collections.OrderedDict[tuple, BaselineImage] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._reading: dict[Entry, threading.Lock] = {}
        self._entries_key: tuple | None = None
        self._entries: list[Entry] = []

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.root / path

    # --- patients -----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the study command has run its intake (the page has patients to offer)."""
        return (self.intake / "patients.csv").is_file() and self.modalities_table.is_file()

    def entries(self) -> list[Entry]:
        """Every selected (patient, modality), sorted by site, local id and modality; re-read when the intake changes."""
        files = (self.intake / "patients.csv", self.modalities_table)
        key = tuple(_stamp(f) for f in files)
        if key != self._entries_key:
            self._entries = _read_entries(*files, self.modalities) if all(key) else []
            self._entries_key = key
        return self._entries

    def find(self, site: str, patient_id: str, modality: str) -> Entry | None:
        """The entry for this site, local patient id and modality, or None."""
        for entry in self.entries():
            if (entry.site, entry.patient_id, entry.modality) == (site, patient_id, modality):
                return entry
        return None

    def lesions(self, entry: Entry) -> list:
        """The lesion-table rows of this patient and modality as LesionSpec (LesionTableError when the table is bad)."""
        from ..intake import lesion_rows, lesion_specs, read_lesion_table

        if not self.lesions_csv.is_file():
            return []
        table = read_lesion_table(self.lesions_csv)
        rows = table[(table["site"] == entry.site) & (table["patient_id"] == entry.patient_id)
                     & (table["modality"] == entry.modality)]
        return lesion_specs(lesion_rows(rows), entry.modality)  # as the intake records them for the mask stage

    # --- images -------------------------------------------------------------------------------------

    def baseline(self, entry: Entry) -> BaselineImage:
        """The patient's baseline image of ``entry.modality`` (cached while its files are unchanged)."""
        from ..intake import read_record

        record = read_record(self.intake / f"{entry.patient}.json")
        series = record["series"].get(entry.modality)
        if not series:
            raise PalmaresError(f"no baseline {entry.modality.upper()} series is recorded for this patient")
        files = [self._path(f[0]) for f in series["files"]]  # recorded relative to the run folder
        key = (entry, tuple(_stamp(f) for f in files))
        with self._cache_lock:
            reading = self._reading.setdefault(entry, threading.Lock())
        with reading:  # one read per patient at a time: a read-ahead and an upload share it
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
            baseline = self._read_baseline(entry, files)
            with self._cache_lock:
                self._cache[key] = baseline
                while len(self._cache) > IMAGE_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return baseline

    def _read_baseline(self, entry: Entry, files: list[Path]) -> BaselineImage:
        from .. import masks, suv, volumes
        from ..errors import SuvError

        self.uploads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.uploads, prefix=".series-") as scratch:
            folder = Path(scratch)
            for i, f in enumerate(files):  # the recorded files only (a folder may hold other series)
                os.symlink(f.resolve(), folder / f"{i:06d}.dcm")
            warning = ""
            override = self.suv_overrides.get(entry.patient) if entry.modality == "pet" else None
            options = suv.SuvOptions(override=suv.SuvOverride.from_mapping(override) if override else None)
            try:
                if entry.modality == "ct":  # read as float32 at once: 315 MB, not 630 MB, for 512×512×300
                    image = volumes.read_image(folder, sitk.sitkFloat32)
                else:
                    image, _card = volumes.read_study_image_and_card(folder, options)
            except SuvError as exc:
                image = volumes.read_image(folder)
                warning = (f"The PET's SUV cannot be computed ({exc}); the segmentation's geometry was checked, but "
                           "the study cannot use this PET until the SUV inputs are corrected.")
            reference = masks.image_reference(folder)
            hint = _series_hint(files[0], entry.modality)
        return BaselineImage(sitk.Cast(image, sitk.sitkFloat32), reference, hint, warning)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _read_entries(patients_csv: Path, modalities_csv: Path, modalities: list[str]) -> list[Entry]:
    from ..intake import read_modalities

    people = pd.read_csv(patients_csv, dtype=str, keep_default_na=False)
    local = dict(zip(people["patient"], zip(people["site"], people["patient_id"], strict=True), strict=True))
    entries = [Entry(*local[p], p, m) for p, m in read_modalities(modalities_csv) if m in modalities and p in local]
    return sorted(entries, key=lambda e: (e.site, e.patient_id, e.modality))


def _series_hint(first_file: Path, modality: str) -> str:
    """'the baseline CT (series 3 "Torace 1.25", 2024-01-12)' from the series' own header (PHI side, own centre)."""
    try:
        ds = pydicom.dcmread(first_file, stop_before_pixels=True,
                             specific_tags=["SeriesNumber", "SeriesDescription", "SeriesDate", "StudyDate"])
    except Exception:  # noqa: BLE001 - the hint is a courtesy; the image itself was read
        return f"the baseline {modality.upper()}"
    parts = []
    if str(ds.get("SeriesNumber", "") or "").strip():
        description = str(ds.get("SeriesDescription", "") or "").strip()
        parts.append(f"series {ds.SeriesNumber}" + (f' "{description}"' if description else ""))
    date = str(ds.get("SeriesDate", "") or ds.get("StudyDate", "") or "").strip()
    if len(date) == 8 and date.isdigit():
        parts.append(f"{date[:4]}-{date[4:6]}-{date[6:]}")
    return f"the baseline {modality.upper()}" + (f" ({', '.join(parts)})" if parts else "")
