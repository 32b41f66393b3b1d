"""Lesion previews: three orthogonal slices through a lesion with its contour drawn over the scan.

Shared by the segmentation upload page (the radiologist sees the lesion over the scan right after upload)
and the QC report. Each PNG (about 900×330 px) shows axial, coronal and sagittal slices through the
lesion's centre, cropped to a field of view around the lesion, with:

* the lesion's contour in red (``LESION_COLOUR``) and the other lesions cut by the same slice thinner in
  yellow (``OTHER_COLOUR``);
* the physical aspect ratio (voxel spacing) and the radiological convention: axial with the patient's right
  on the image's left and anterior at the top, coronal and sagittal with the head at the top (sagittal:
  anterior on the left), with orientation letters at the panel edges;
* a caption stating the grey scale (``CT window −160 to 240 HU`` / ``PET SUV 0 to 10 (fixed)``) and the
  caller's ``title``. Nothing else is written on the image: no identifiers, dates or file names.

``PreviewScan`` prepares one scan for many lesions (the whole-scan work once). ``mip_preview`` draws a PET
patient's maximum-intensity projection (anterior and lateral views) with every lesion marked, for the QC report.

Images with other direction cosines are reoriented to LPS first (``sitk.DICOMOrient``, which permutes and
flips axes: an oblique acquisition is shown on its nearest LPS axes, never resampled). Rendering uses
matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``, so it holds no global state and
is safe in a web server's threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .errors import ConfigError
from .features import display_ranges
from .records import MODALITIES

CT_WINDOW_DEFAULT: tuple[float, float] = (-160.0, 240.0)   # soft tissue W400/L40, HU
PET_SUV_RANGE_DEFAULT: tuple[float, float] = (0.0, 10.0)    # fixed, stated SUV scale
DEFAULT_RANGES: Mapping[str, tuple[float, float]] = {"ct": CT_WINDOW_DEFAULT, "pet": PET_SUV_RANGE_DEFAULT}

LESION_COLOUR = "#ff3b30"
OTHER_COLOUR = "#ffd60a"
LESION_LINE_WIDTH = 1.5    # points
OTHER_LINE_WIDTH = 0.8     # points
MIN_FOV_MM = 60.0          # smallest field of view around a lesion
FOV_EXTENT_FACTOR = 3.0    # field of view: this many times the lesion's largest extent, if more than MIN_FOV_MM
FIGURE_SIZE_IN = (9.0, 3.3)
DPI = 100                  # 900×330 px
BACKGROUND = "black"
TEXT_COLOUR = "#e6e6e6"
#: Relative tolerance (of the spacing) for "the label map is on the image grid".
GRID_TOLERANCE = 1e-3
_LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# Maximum-intensity projection (mip_preview): inverted grey on white, the usual look of a PET MIP.
MIP_PANEL_HEIGHT_IN = 7.0       # height of the projections; widths follow the physical aspect ratio
MIP_MAX_PANELS_WIDTH_IN = 12.0  # both projections together at most this wide (a short axial coverage)
MIP_MIN_WIDTH_IN = 5.0          # room for the caption
MIP_GAP_IN = 0.35               # between and beside the projections
MIP_CAPTION_IN = 0.45
MIP_TITLE_IN = 0.3
MIP_BACKGROUND = "white"
MIP_TEXT_COLOUR = "#1a1a1a"
MIP_CMAP = "gray_r"             # inverted grey: dark = high uptake
MIP_MARKER_SIZE = 14.0          # points, circle diameter
MIP_MARKER_WIDTH = 1.5          # points


def display_range(params_path: Path | None, modality: str) -> tuple[float, float]:
    """Grey-level range for previews from the parameter file's palmares.display section, else the default.

    ``ct`` reads ``palmares.display.window_hu`` (HU), ``pet`` reads ``palmares.display.suv_range`` (SUVbw); the
    block is validated as ``features.load_params`` validates it (two numbers, low < high), a bad one raises
    ``ConfigError``. Without a file or without the key, the default (``CT_WINDOW_DEFAULT``,
    ``PET_SUV_RANGE_DEFAULT``) applies.
    """
    _check_modality(modality)
    if params_path is None:
        return DEFAULT_RANGES[modality]
    path = Path(params_path)
    try:
        document = yaml.safe_load(path.read_bytes()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"parameter file {path} cannot be read: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("palmares") or {}, dict):
        raise ConfigError(f"parameter file {path}: expected a mapping at the top level and in 'palmares'")
    display = (document.get("palmares") or {}).get("display")
    return display_ranges(display, path).get(modality, DEFAULT_RANGES[modality])


def lesion_preview(image: sitk.Image, label_map: sitk.Image, label: int, modality: str, out: Path, *,
                   display: tuple[float, float] | None = None, title: str = "") -> Path:
    """Write a PNG with three orthogonal slices (axial, coronal, sagittal) through the lesion's centre, the
    lesion's contour drawn over the image; returns ``out``.

    ``image`` is CT in HU or PET in SUVbw, ``label_map`` an integer label map on exactly the image grid and
    ``label`` one of its values (ValueError if absent). ``display`` is the (low, high) grey-level range, by default
    that of the modality (``display_range(None, modality)``); ``title`` is the only free text drawn.
    """
    view = _View.of(image, label_map)
    return _render(view, view.lesion(label), modality, _checked_display(display, modality), Path(out), title)


def lesion_previews(image: sitk.Image, label_map: sitk.Image, labels: Sequence[int], modality: str, out_dir: Path, *,
                    display: tuple[float, float] | None = None,
                    names: Mapping[int, str] | None = None) -> dict[int, Path]:
    """One PNG per label (file name lesion_<label>.png), reusing one resampled view of the image.

    The image is reoriented and read once; every label is checked before anything is written (ValueError if
    one is absent). ``names`` gives each label's ``title`` (for example ``"lesion 2: liver"``); ``out_dir`` is
    created if needed.
    """
    window = _checked_display(display, modality)
    view = _View.of(image, label_map)
    lesions = {int(label): view.lesion(int(label)) for label in labels}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = names or {}
    return {label: _render(view, lesion, modality, window, out_dir / f"lesion_{label}.png", names.get(label, ""))
            for label, lesion in lesions.items()}


@dataclass(frozen=True, slots=True)
class PreviewScan:
    """One image and its label map prepared once (grid checked, reoriented to LPS, labelled voxels indexed) for
    several lesion previews: the whole-scan work of :func:`lesion_preview` is done once per scan, not per lesion.

    Unlike :func:`lesion_previews`, each lesion is drawn (or fails, ValueError for an absent label) on its own.
    """

    view: _View

    @classmethod
    def of(cls, image: sitk.Image, label_map: sitk.Image) -> PreviewScan:
        """ValueError unless ``label_map`` is an integer label map on the grid of the 3-D scalar ``image``."""
        return cls(_View.of(image, label_map))

    def lesion_preview(self, label: int, modality: str, out: Path, *, display: tuple[float, float] | None = None,
                       title: str = "") -> Path:
        """:func:`lesion_preview` of ``label`` on this scan; returns ``out``."""
        window = _checked_display(display, modality)
        return _render(self.view, self.view.lesion(int(label)), modality, window, Path(out), title)


def _finish_panel(ax, name: str, w: int, h: int, letters: Sequence[str], colour: str,
                  inset: tuple[float, float], zorder: int) -> None:
    """Limits of a ``w`` × ``h`` panel, its title and the orientation letters (left, right, top, bottom) at its
    edges, ``inset`` (horizontal, vertical; axes fractions) inside them."""
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(name, color=colour, fontsize=8, pad=2)
    style = {"color": colour, "fontsize": 7, "transform": ax.transAxes, "zorder": zorder}
    across, vertical = inset
    left, right, top, bottom = letters
    ax.text(across, 0.5, left, ha="left", va="center", **style)
    ax.text(1 - across, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 1 - vertical, top, ha="center", va="top", **style)
    ax.text(0.5, vertical, bottom, ha="center", va="bottom", **style)


def mip_preview(image: sitk.Image, label_map: sitk.Image, lesions: Mapping[int, str], out: Path, *,
                display: tuple[float, float] | None = None, title: str = "") -> Path:
    """Write a PET maximum-intensity projection with every lesion marked; returns ``out``.

    Two projections side by side, head at the top, at the physical aspect ratio: anterior (coronal, the patient's
    right on the image's left) and left lateral (sagittal, anterior on the left). The grey scale is inverted (dark =
    high uptake) on the fixed SUV range ``display`` (default ``PET_SUV_RANGE_DEFAULT``), both stated in the caption.
    Each lesion (``lesions``: label → text, e.g. ``{1: "L1"}``) is marked at its centroid's projection by a circle
    and its text in ``LESION_COLOUR``; a label absent from ``label_map`` is a ValueError. ``image`` is in SUVbw and
    ``label_map`` on its grid, as for :func:`lesion_preview`. NaN voxels are ignored by the projection.
    """
    window = _checked_display(display, "pet")
    view = _View.of(image, label_map)
    centroids = {}
    for label, text in lesions.items():
        lesion_voxels = view.lesion_index[view.lesion_values == int(label)] if int(label) != 0 else view.lesion_index[:0]
        if lesion_voxels.size == 0:
            raise ValueError(f"label {label} ({text}) is not in the label map; nothing to mark")
        centroids[str(text)] = np.stack(np.unravel_index(lesion_voxels, view.labels.shape), axis=1).mean(axis=0)
    nz, ny, nx = view.pixels.shape
    sz, sy, sx = view.spacing
    # rows z flipped (head at the top); anterior: columns x (patient right on the left), lateral: columns y (anterior left)
    projections = (("anterior", np.fmax.reduce(view.pixels, axis=1)[::-1], nx * sx, 2, ("R", "L", "H", "F")),
                   ("left lateral", np.fmax.reduce(view.pixels, axis=2)[::-1], ny * sy, 1, ("A", "P", "H", "F")))
    height = MIP_PANEL_HEIGHT_IN
    widths = [height * extent / (nz * sz) for _, _, extent, _, _ in projections]
    scale = min(1.0, MIP_MAX_PANELS_WIDTH_IN / sum(widths))
    height, widths = height * scale, [w * scale for w in widths]
    fig_w = max(MIP_MIN_WIDTH_IN, sum(widths) + 3 * MIP_GAP_IN)
    fig_h = height + MIP_CAPTION_IN + MIP_TITLE_IN
    figure = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor=MIP_BACKGROUND)
    FigureCanvasAgg(figure)
    left = (fig_w - sum(widths) - MIP_GAP_IN) / 2
    for (name, pixels, _, column_axis, letters), width in zip(projections, widths):
        ax = figure.add_axes((left / fig_w, MIP_CAPTION_IN / fig_h, width / fig_w, height / fig_h))
        left += width + MIP_GAP_IN
        ax.set_facecolor(MIP_BACKGROUND)
        ax.set_axis_off()
        h, w = pixels.shape
        ax.imshow(pixels, cmap=MIP_CMAP, vmin=window[0], vmax=window[1], interpolation="antialiased", aspect="auto",
                  origin="upper", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        for text, centroid in centroids.items():
            column, row = centroid[column_axis], (nz - 1) - centroid[0]
            ax.plot([column], [row], linestyle="none", marker="o", markersize=MIP_MARKER_SIZE, markerfacecolor="none",
                    markeredgecolor=LESION_COLOUR, markeredgewidth=MIP_MARKER_WIDTH, zorder=3)
            ax.annotate(text, (column, row), xytext=(MIP_MARKER_SIZE / 2 + 2, 0), textcoords="offset points",
                        color=LESION_COLOUR, fontsize=8, fontweight="bold", ha="left", va="center", zorder=4,
                        annotation_clip=False)
        _finish_panel(ax, name, w, h, letters, MIP_TEXT_COLOUR, (0.01, 0.005), 5)
    scale_text = f"maximum-intensity projection, {_scale_text('pet', window)}, inverted grey: dark = high uptake"
    caption = "   \u00b7   ".join(part for part in (scale_text, title) if part)
    figure.text(0.5, MIP_CAPTION_IN / 2 / fig_h, caption, ha="center", va="center", color=MIP_TEXT_COLOUR, fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=DPI, facecolor=MIP_BACKGROUND, metadata={"Software": None})
    return out


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}. Found: {modality!r}")


def _checked_display(display: tuple[float, float] | None, modality: str) -> tuple[float, float]:
    """``display`` as two floats with low < high, or the modality's default."""
    _check_modality(modality)
    if display is None:
        return DEFAULT_RANGES[modality]
    low, high = (float(v) for v in display)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"display range must be two finite numbers, low < high. Found: {display!r}")
    return low, high


@dataclass(frozen=True, slots=True)
class _Lesion:
    """One lesion in the LPS view: its label, centre voxel (z, y, x) and field-of-view crop per axis."""

    label: int
    centre: tuple[int, int, int]
    crop: tuple[slice, slice, slice]


@dataclass(frozen=True, slots=True)
class _View:
    """The image and label map as (z, y, x) arrays in LPS order (x → patient left, y → posterior, z → head)."""

    pixels: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]       # (z, y, x), mm
    lesion_index: np.ndarray                  # flat indices of every labelled voxel
    lesion_values: np.ndarray                 # their labels
    images: tuple[sitk.Image, sitk.Image]     # the (reoriented) images the array views read from, kept alive

    @classmethod
    def of(cls, image: sitk.Image, label_map: sitk.Image) -> _View:
        _check_grid(image, label_map)
        if tuple(image.GetDirection()) != _LPS:
            image, label_map = sitk.DICOMOrient(image, "LPS"), sitk.DICOMOrient(label_map, "LPS")
        pixels = sitk.GetArrayViewFromImage(image)
        labels = sitk.GetArrayViewFromImage(label_map)
        index = np.flatnonzero(labels)
        return cls(pixels, labels, tuple(float(s) for s in reversed(image.GetSpacing())), index,
                   labels.ravel()[index], (image, label_map))

    def lesion(self, label: int) -> _Lesion:
        """Centre and crop of ``label``; ValueError when the label map has no voxel of it."""
        if label == 0:
            raise ValueError("label 0 is the background, not a lesion")
        voxels = self.lesion_index[self.lesion_values == label]
        if voxels.size == 0:
            present = sorted(int(v) for v in np.unique(self.lesion_values))
            raise ValueError(f"label {label} is not in the label map (labels present: {present})")
        zyx = np.stack(np.unravel_index(voxels, self.labels.shape), axis=1)
        spacing = np.asarray(self.spacing)
        centroid = np.rint(zyx.mean(axis=0)).astype(int)
        if self.labels[tuple(centroid)] != label:  # a crescent: the nearest lesion voxel, in mm
            centroid = zyx[np.argmin((((zyx - centroid) * spacing) ** 2).sum(axis=1))]
        extent_mm = float(((zyx.max(axis=0) - zyx.min(axis=0) + 1) * spacing).max())
        half_mm = max(MIN_FOV_MM, FOV_EXTENT_FACTOR * extent_mm) / 2
        crop = tuple(slice(max(0, c - round(half_mm / s)), min(n, c + round(half_mm / s) + 1))
                     for c, s, n in zip(centroid.tolist(), self.spacing, self.labels.shape))
        return _Lesion(label, tuple(centroid.tolist()), crop)


def _check_grid(image: sitk.Image, label_map: sitk.Image) -> None:
    """ValueError unless ``image`` is a 3-D scalar image and ``label_map`` an integer image on its grid."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"image must be a 3-D scalar image. Found: {image.GetDimension()}-D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    if label_map.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkUInt32, sitk.sitkInt8,
                                      sitk.sitkInt16, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64):
        raise ValueError(f"label map must have an integer pixel type. Found: {label_map.GetPixelIDTypeAsString()}")
    spacing = np.asarray(image.GetSpacing())
    same = (label_map.GetDimension() == 3 and label_map.GetSize() == image.GetSize()
            and np.allclose(label_map.GetSpacing(), spacing, rtol=GRID_TOLERANCE, atol=0)
            and np.allclose(label_map.GetOrigin(), image.GetOrigin(), rtol=0, atol=GRID_TOLERANCE * spacing.min())
            and np.allclose(label_map.GetDirection(), image.GetDirection(), rtol=0, atol=GRID_TOLERANCE))
    if not same:
        raise ValueError("label map is not on the image grid (size, spacing, origin or direction differ): "
                         f"image {image.GetSize()} @ {image.GetSpacing()} mm, label map {label_map.GetSize()} @ "
                         f"{label_map.GetSpacing()} mm; resample the segmentation onto the image first")


def _scale_text(modality: str, window: tuple[float, float]) -> str:
    low, high = (f"{v:g}".replace("-", "\u2212") for v in window)
    return f"CT window {low} to {high} HU" if modality == "ct" else f"PET SUV {low} to {high} (fixed)"


#: Panel name, the axis the slice is taken across, and the orientation letters (left, right, top, bottom).
_PANELS = (("axial", 0, ("R", "L", "A", "P")),
           ("coronal", 1, ("R", "L", "H", "F")),
           ("sagittal", 2, ("A", "P", "H", "F")))


def _panel(view: _View, lesion: _Lesion, axis: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(grey values, labels, pixel aspect height/width) of one panel, rows top to bottom, columns left to right.

    Axial (z fixed): rows y (anterior at the top), columns x (patient right on the left). Coronal (y fixed) and
    sagittal (x fixed): rows z flipped so the head is at the top; columns x (right on the left) or y (anterior on
    the left).
    """
    index: list[Any] = list(lesion.crop)
    index[axis] = lesion.centre[axis]
    pixels, labels = view.pixels[tuple(index)], view.labels[tuple(index)]
    rows, cols = (d for d in range(3) if d != axis)
    if axis != 0:
        pixels, labels = pixels[::-1], labels[::-1]
    return pixels, labels, view.spacing[rows] / view.spacing[cols]


def _contour(ax: Any, mask: np.ndarray, colour: str, width: float, zorder: float) -> None:
    """Contour at 0.5 of a binary slice, padded by one voxel so a lesion at the crop's edge gets a closed line."""
    if not mask.any():
        return
    padded = np.pad(mask.astype(np.float32), 1)
    ax.contour(np.arange(-1, mask.shape[1] + 1), np.arange(-1, mask.shape[0] + 1), padded, levels=[0.5],
               colors=[colour], linewidths=[width], zorder=zorder, antialiased=True)


def _render(view: _View, lesion: _Lesion, modality: str, window: tuple[float, float], out: Path, title: str) -> Path:
    """Draw the three panels and the caption for one lesion and write the PNG to ``out``."""
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, facecolor=BACKGROUND)
    FigureCanvasAgg(figure)
    caption_h, title_h, gap = 0.09, 0.07, 0.01
    for i, (name, axis, letters) in enumerate(_PANELS):
        ax = figure.add_axes((i / 3 + gap, caption_h, 1 / 3 - 2 * gap, 1 - caption_h - title_h))
        ax.set_facecolor(BACKGROUND)
        ax.set_axis_off()
        pixels, labels, aspect = _panel(view, lesion, axis)
        h, w = labels.shape
        ax.imshow(pixels, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest", aspect=aspect,
                  origin="upper", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        _contour(ax, (labels != 0) & (labels != lesion.label), OTHER_COLOUR, OTHER_LINE_WIDTH, 2)
        _contour(ax, labels == lesion.label, LESION_COLOUR, LESION_LINE_WIDTH, 3)
        _finish_panel(ax, name, w, h, letters, TEXT_COLOUR, (0.02, 0.02), 4)
    caption = "   \u00b7   ".join(part for part in (_scale_text(modality, window), title) if part)
    figure.text(0.5, caption_h / 2, caption, ha="center", va="center", color=TEXT_COLOUR, fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=DPI, facecolor=BACKGROUND, metadata={"Software": None})
    return out
