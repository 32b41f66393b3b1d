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
flips axes: an oblique acquisition is shown on its nearest LPS axes, never resampled). Pictures are drawn with
Pillow on a pixel canvas: the slices scaled by nearest neighbour (each voxel a sharp block; the contour is the
outline of the lesion's own voxels) and the text in DejaVu Sans (the font matplotlib ships). It holds no global
state, so it is safe in a web server's threads, and one picture costs about 20 ms where matplotlib took 0.2 s
and 0.8 s to import (benchmarks/bench_cohort.py: the features jobs draw every lesion twice).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml
from PIL import Image, ImageColor, ImageDraw, ImageFont

from .errors import ConfigError
from .features import display_ranges
from .records import MODALITIES

CT_WINDOW_DEFAULT: tuple[float, float] = (-160.0, 240.0)   # soft tissue W400/L40, HU
PET_SUV_RANGE_DEFAULT: tuple[float, float] = (0.0, 10.0)    # fixed, stated SUV scale
DEFAULT_RANGES: Mapping[str, tuple[float, float]] = {"ct": CT_WINDOW_DEFAULT, "pet": PET_SUV_RANGE_DEFAULT}

LESION_COLOUR = "#ff3b30"
OTHER_COLOUR = "#ffd60a"
LESION_LINE_WIDTH = 2      # pixels
OTHER_LINE_WIDTH = 1       # pixels
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
MIP_MARKER_SIZE = 20            # pixels, circle diameter
MIP_MARKER_WIDTH = 2            # pixels
TEXT_PX, LETTER_PX = 11, 10     # font sizes: titles and captions, orientation letters


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
    canvas = Image.new("RGB", (round(fig_w * DPI), round((height + MIP_CAPTION_IN + MIP_TITLE_IN) * DPI)),
                       MIP_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    left = (fig_w - sum(widths) - MIP_GAP_IN) / 2
    top, panel_h = round(MIP_TITLE_IN * DPI), max(1, round(height * DPI))
    for (name, pixels, _, column_axis, letters), width in zip(projections, widths):
        box = (round(left * DPI), top, max(1, round(width * DPI)), panel_h)
        left += width + MIP_GAP_IN
        grey = 255 - _grey(pixels, window)  # inverted: dark = high uptake
        canvas.paste(Image.fromarray(grey).resize(box[2:], Image.Resampling.BOX), box[:2])
        h, w = pixels.shape
        for text, centroid in centroids.items():
            x = box[0] + (centroid[column_axis] + 0.5) / w * box[2]
            y = box[1] + ((nz - 1) - centroid[0] + 0.5) / h * box[3]
            r = MIP_MARKER_SIZE / 2
            draw.ellipse((x - r, y - r, x + r, y + r), outline=LESION_COLOUR, width=MIP_MARKER_WIDTH)
            draw.text((x + r + 3, y), text, fill=LESION_COLOUR, font=_font(TEXT_PX, bold=True), anchor="lm")
        _label_panel(draw, box, name, letters, MIP_TEXT_COLOUR)
    scale_text = f"maximum-intensity projection, {_scale_text('pet', window)}, inverted grey: dark = high uptake"
    caption = "   \u00b7   ".join(part for part in (scale_text, title) if part)
    draw.text((canvas.width / 2, canvas.height - MIP_CAPTION_IN * DPI / 2), caption, fill=MIP_TEXT_COLOUR,
              font=_font(TEXT_PX), anchor="mm")
    return _save(canvas, Path(out))


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


def _grey(pixels: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``pixels`` as 8-bit grey on ``window`` (low → 0, high → 255, clipped; NaN → 0)."""
    scaled = (np.asarray(pixels, dtype=np.float64) - window[0]) * (255.0 / (window[1] - window[0]))
    return np.rint(np.nan_to_num(np.clip(scaled, 0.0, 255.0))).astype(np.uint8)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` innermost pixels along the edge of a binary picture (4-connected; the picture's border counts
    as outside, so a lesion cut by the field of view gets a closed line)."""
    inner = mask
    for _ in range(width):
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


@lru_cache(maxsize=8)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib, found without importing it) at ``size`` pixels; Pillow's own font
    when that file is missing."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _label_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], name: str, letters: Sequence[str],
                 colour: str) -> None:
    """The panel's name above ``box`` (left, top, width, height in pixels) and its orientation letters (left,
    right, top, bottom) inside its edges."""
    x, y, w, h = box
    letter = _font(LETTER_PX)
    draw.text((x + w / 2, y - 2), name, fill=colour, font=_font(TEXT_PX), anchor="md")
    left, right, top, bottom = letters
    draw.text((x + 3, y + h / 2), left, fill=colour, font=letter, anchor="lm")
    draw.text((x + w - 3, y + h / 2), right, fill=colour, font=letter, anchor="rm")
    draw.text((x + w / 2, y + 2), top, fill=colour, font=letter, anchor="mt")
    draw.text((x + w / 2, y + h - 2), bottom, fill=colour, font=letter, anchor="mb")


def _save(canvas: Image.Image, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out


def _render(view: _View, lesion: _Lesion, modality: str, window: tuple[float, float], out: Path, title: str) -> Path:
    """Draw the three panels and the caption for one lesion and write the PNG to ``out``.

    Each panel is scaled to fit its third of the picture at the physical aspect ratio, every display pixel
    showing its nearest voxel; the lesion's outline is drawn in ``LESION_COLOUR`` and the other lesions' in
    ``OTHER_COLOUR`` on those same voxels."""
    width, height = round(FIGURE_SIZE_IN[0] * DPI), round(FIGURE_SIZE_IN[1] * DPI)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    caption_h, title_h, gap = round(0.09 * height), round(0.07 * height), round(0.01 * width)
    box_w, box_h = width // 3 - 2 * gap, height - caption_h - title_h
    for i, (name, axis, letters) in enumerate(_PANELS):
        pixels, labels, aspect = _panel(view, lesion, axis)
        h, w = labels.shape
        scale = min(box_w / w, box_h / (h * aspect))
        shown_w, shown_h = max(1, round(w * scale)), max(1, round(h * aspect * scale))
        rows = np.minimum((np.arange(shown_h) + 0.5) * h // shown_h, h - 1).astype(int)
        cols = np.minimum((np.arange(shown_w) + 0.5) * w // shown_w, w - 1).astype(int)
        shown = np.repeat(_grey(pixels, window)[np.ix_(rows, cols)][..., None], 3, axis=2)
        shown_labels = labels[np.ix_(rows, cols)]
        for mask, colour, line in (((shown_labels != 0) & (shown_labels != lesion.label), OTHER_COLOUR, OTHER_LINE_WIDTH),
                                   (shown_labels == lesion.label, LESION_COLOUR, LESION_LINE_WIDTH)):
            shown[_outline(mask, line)] = ImageColor.getrgb(colour)
        box = (i * width // 3 + gap + (box_w - shown_w) // 2, title_h + (box_h - shown_h) // 2, shown_w, shown_h)
        canvas.paste(Image.fromarray(shown), box[:2])
        _label_panel(draw, box, name, letters, TEXT_COLOUR)
    caption = "   \u00b7   ".join(part for part in (_scale_text(modality, window), title) if part)
    draw.text((width / 2, height - caption_h / 2), caption, fill=TEXT_COLOUR, font=_font(TEXT_PX), anchor="mm")
    return _save(canvas, out)
