"""The report's cohort figures (matplotlib, Agg, no pyplot state): the patient flow and feature distributions
by centre, before and after ComBat, to show batch effects."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Features whose distributions by centre the report shows (the first column starting with each stem):
#: size, intensity, heterogeneity and texture, the usual carriers of a centre effect.
DISTRIBUTION_STEMS = {
    "ct": ("shape_VoxelVolume", "firstorder_Mean", "firstorder_Entropy", "glcm_JointEntropy"),
    "pet": ("pet_suvmax", "pet_mtv_41pct_ml", "firstorder_Entropy", "glcm_JointEntropy"),
}


def _save(figure: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out, dpi=90)
    return out


def flow_figure(steps: Sequence[dict[str, Any]], out: Path) -> Path:
    """Horizontal bars: patients remaining at each step of the cohort flow."""
    figure = Figure(figsize=(8, 0.45 * max(len(steps), 2) + 0.8))
    ax = figure.add_subplot()
    if steps:
        names = [s["step"] for s in steps][::-1]
        counts = [s["patients"] for s in steps][::-1]
        ax.barh(names, counts, color="#4c78a8")
        for y, n in enumerate(counts):
            ax.text(n, y, f" {n}", va="center", fontsize=9)
        ax.set_xlim(0, max(counts + [1]) * 1.15)
    else:
        ax.text(0.5, 0.5, "no clinical export row", ha="center", va="center")
    ax.set_xlabel("patients")
    ax.set_title("Patient flow: clinical export to the modelling table", fontsize=10)
    figure.tight_layout()
    return _save(figure, out)


def feature_column(table: pd.DataFrame, stem: str) -> str | None:
    """The first column named ``stem`` or ``stem_<IBSI codes>`` (``firstorder_Mean`` -> ``firstorder_Mean_Q4LE``)."""
    return next((c for c in table.columns if c == stem or c.startswith(stem + "_")), None)


def chosen_columns(lesions: pd.DataFrame) -> dict[str, list[str]]:
    """Per modality, the feature columns of :data:`DISTRIBUTION_STEMS` present in ``lesions``."""
    out: dict[str, list[str]] = {}
    for modality, stems in DISTRIBUTION_STEMS.items():
        part = lesions[lesions["modality"] == modality] if "modality" in lesions else lesions.iloc[:0]
        columns = []
        for stem in stems:
            column = feature_column(part, stem)
            if column is not None and pd.to_numeric(part[column], errors="coerce").notna().any():
                columns.append(column)
        if columns:
            out[modality] = columns
    return out


def distribution_figure(lesions: pd.DataFrame, out: Path, label: str,
                        columns: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Box plots of a handful of features by centre, one row per modality; returns the columns drawn (so the
    ComBat figure draws the same ones)."""
    columns = columns if columns is not None else chosen_columns(lesions)
    rows = max(len(columns), 1)
    width = max((len(c) for c in columns.values()), default=1)
    figure = Figure(figsize=(3.2 * width, 2.8 * rows))
    if not columns:
        ax = figure.add_subplot()
        ax.text(0.5, 0.5, "no lesion features yet", ha="center", va="center")
        ax.set_axis_off()
    for r, (modality, cols) in enumerate(sorted(columns.items())):
        part = lesions[lesions["modality"] == modality]
        sites = sorted(part["site"].unique())
        for c, column in enumerate(cols):
            ax = figure.add_subplot(rows, width, r * width + c + 1)
            data = [pd.to_numeric(part.loc[part["site"] == s, column], errors="coerce").dropna().to_numpy()
                    for s in sites]
            data = [d if d.size else np.array([np.nan]) for d in data]
            ax.boxplot(data, tick_labels=sites, showfliers=True)
            ax.set_title(f"{modality.upper()} {column}", fontsize=8)
            ax.tick_params(labelsize=7)
    figure.suptitle(f"Lesion features by centre ({label})", fontsize=10)
    figure.tight_layout()
    _save(figure, out)
    return columns
