"""Select each patient's baseline CT and PET series from the index.

Baseline = the latest image series of the modality acquired within the configured window around
the CDK4/6-inhibitor start date. PET series must be attenuation-corrected (``CorrectedImage``
contains ATTN); localizers and derived screenshots are never candidates. When no series fits,
the reason says why in words without identifying values (no dates, no descriptions).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields

import pandas as pd

#: DICOM image storage SOP classes the pipeline can turn into volumes, per modality.
IMAGE_SOP_CLASSES = {
    "ct": {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"},     # CT, Enhanced CT
    "pet": {"1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130"},  # PET, Enhanced PET
}
DICOM_MODALITY = {"ct": "CT", "pet": "PT"}


@dataclass(frozen=True, slots=True)
class BaselineWindow:
    """Days before and after the therapy start within which a scan counts as baseline."""

    days_before: int
    days_after: int

    def contains(self, scan: dt.date, start: dt.date) -> bool:
        """True when ``scan`` lies in [start - days_before, start + days_after]."""
        return start - dt.timedelta(days=self.days_before) <= scan <= start + dt.timedelta(days=self.days_after)


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen series of one patient and modality, or the reason there is none."""

    site: str
    patient_id: str
    patient: str
    modality: str
    status: str
    reason: str = ""
    series_uid: str = ""
    n_files: int = 0
    #: Rows x Columns x NumberOfFrames summed over the series' files (headers only): sizes the cluster jobs of
    #: later stages. A multi-frame file (Enhanced CT/PET) holds the whole volume, so its frames count.
    voxels: int = 0


def parse_da(value: str) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD) as a date, or None when empty or malformed."""
    try:
        return dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except (ValueError, AttributeError):
        return None


def _file_voxels(rows: pd.DataFrame) -> pd.Series:
    """Rows x Columns x NumberOfFrames of each indexed file.

    0 when the index predates the Rows/Columns columns or a value is missing (the jobs then get the
    default size). A file without NumberOfFrames (or an index that predates it) is one frame.
    """
    if "rows" not in rows or "columns" not in rows:
        return pd.Series(0, index=rows.index, dtype="int64")
    size = [pd.to_numeric(rows[c], errors="coerce").fillna(0).astype("int64") for c in ("rows", "columns")]
    frames = pd.to_numeric(rows.get("number_of_frames", pd.Series("", index=rows.index)), errors="coerce")
    return size[0] * size[1] * frames.fillna(1).clip(lower=1).astype("int64")


def _series_table(index: pd.DataFrame, patient_id: str, modality: str) -> pd.DataFrame:
    """One row per image series of ``modality`` for ``patient_id`` with its date and file count."""
    rows = index[(index["status"] == "ok") & (index["patient_id"] == patient_id)
                 & (index["modality"] == DICOM_MODALITY[modality])
                 & (index["sop_class_uid"].isin(IMAGE_SOP_CLASSES[modality]))]
    if rows.empty:
        return pd.DataFrame(columns=["series_uid", "date", "n_files", "voxels", "corrected_image", "image_type",
                                     "burned"])
    rows = rows.assign(voxels=_file_voxels(rows))
    grouped = rows.groupby("series_uid", sort=True)
    table = grouped.agg(series_date=("series_date", "first"), acquisition_date=("acquisition_date", "first"),
                        study_date=("study_date", "first"), n_files=("path", "size"), voxels=("voxels", "sum"),
                        corrected_image=("corrected_image", "first"), image_type=("image_type", "first"),
                        burned=("burned_in_annotation", "first")).reset_index()
    table["date"] = [parse_da(s) or parse_da(a) or parse_da(t) for s, a, t in
                     zip(table["series_date"], table["acquisition_date"], table["study_date"])]
    return table


def select_series(index: pd.DataFrame, site: str, patient_id: str, patient: str, modality: str,
                  start: dt.date, window: BaselineWindow) -> Selection:
    """Choose the baseline series of one patient and modality (latest in the window, then most slices)."""
    base = dict(site=site, patient_id=patient_id, patient=patient, modality=modality)
    table = _series_table(index, patient_id, modality)
    name = modality.upper()
    if table.empty:
        return Selection(**base, status="failed", reason=f"no {name} image series in the {site} export for this patient")
    reasons = []
    candidates = table
    undated = candidates["date"].isna()
    if undated.any():
        reasons.append(f"{int(undated.sum())} without a series/acquisition/study date")
    candidates = candidates[~undated]
    inside = [window.contains(d, start) for d in candidates["date"]]
    if not all(inside):
        reasons.append(f"{len(inside) - sum(inside)} outside the baseline window "
                       f"({window.days_before} days before to {window.days_after} days after CDK4/6i start)")
    candidates = candidates[inside]
    localizer = candidates["image_type"].str.upper().str.contains("LOCALIZER|SCOUT|SCREEN", regex=True)
    if localizer.any():
        reasons.append(f"{int(localizer.sum())} localizer/screenshot")
    candidates = candidates[~localizer]
    if modality == "pet":
        ac = candidates["corrected_image"].str.upper().str.split("\\").apply(lambda v: "ATTN" in v)
        if (~ac).any():
            reasons.append(f"{int((~ac).sum())} not attenuation-corrected (CorrectedImage without ATTN)")
        candidates = candidates[ac]
    if candidates.empty:
        return Selection(**base, status="failed",
                         reason=f"no baseline {name} series: {len(table)} {name} series found, " + "; ".join(reasons))
    best = candidates.sort_values(["date", "n_files", "series_uid"], ascending=[False, False, True]).iloc[0]
    return Selection(**base, status="ok", series_uid=str(best["series_uid"]), n_files=int(best["n_files"]),
                     voxels=int(best["voxels"]))


def selection_table(selections: list[Selection]) -> pd.DataFrame:
    """Selections as a table (one row per patient x modality)."""
    return pd.DataFrame([asdict(s) for s in selections], columns=[f.name for f in fields(Selection)])
