"""Lesion previews: real rendering of small synthetic CT and PET volumes, checked by decoding the PNG.

The panels sit in the thirds of the figure (axial, coronal, sagittal). Positions inside a panel are found from
the lesion's red contour: its bounding box gives the lesion centre in pixels and the pixels per mm, so markers
placed at known physical offsets from the lesion can be looked up to check the display convention."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image

from conftest import REPO
from palmares_radiomics.errors import ConfigError
from palmares_radiomics.features import load_params
from palmares_radiomics.preview import (CT_WINDOW_DEFAULT, PET_SUV_RANGE_DEFAULT, display_range, lesion_preview,
                                        lesion_previews)

RED = (0xFF, 0x3B, 0x30)
YELLOW = (0xFF, 0xD6, 0x0A)
TOLERANCE = 40             # per channel, for anti-aliased contour pixels
CT_SPACING = (0.7, 0.7, 2.0)   # x, y, z mm
CT_SIZE = (100, 100, 40)       # x, y, z voxels
RADIUS_MM = 10.0
MARKER_OFFSET_MM = 18.0


def _grid(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Physical (z, y, x) coordinates in mm of every voxel centre, relative to the volume's centre voxel."""
    z, y, x = np.ogrid[0:size[2], 0:size[1], 0:size[0]]
    return ((z - size[2] // 2) * spacing[2], (y - size[1] // 2) * spacing[1], (x - size[0] // 2) * spacing[0])


def _cube(z: np.ndarray, y: np.ndarray, x: np.ndarray, centre: tuple[float, float, float], half: float) -> np.ndarray:
    return (abs(z - centre[0]) <= half) & (abs(y - centre[1]) <= half) & (abs(x - centre[2]) <= half)


def _ct() -> tuple[sitk.Image, sitk.Image]:
    """A 40 HU body ellipse in -1000 HU air; lesion 1 (a 240 HU sphere, the window's top) at the centre voxel;
    lesion 2 on the same axial slice only; dark (-800 HU) markers 18 mm to the patient's right (-x), anterior (-y)
    and head (+z) of lesion 1."""
    z, y, x = _grid(CT_SIZE, CT_SPACING)
    pixels = np.full((CT_SIZE[2], CT_SIZE[1], CT_SIZE[0]), -1000, np.int16)
    pixels[np.broadcast_to((x / 34) ** 2 + (y / 33) ** 2 <= 1, pixels.shape)] = 40
    labels = np.zeros(pixels.shape, np.uint16)
    lesion = z ** 2 + y ** 2 + x ** 2 <= RADIUS_MM ** 2
    pixels[lesion], labels[lesion] = 240, 1
    second = z ** 2 + (y - 18) ** 2 + (x - 18) ** 2 <= 5 ** 2
    pixels[second], labels[second] = 100, 2
    for centre in ((0, 0, -MARKER_OFFSET_MM), (0, -MARKER_OFFSET_MM, 0), (MARKER_OFFSET_MM, 0, 0)):
        pixels[_cube(z, y, x, centre, 3.0)] = -800
    return _image(pixels, CT_SPACING), _image(labels, CT_SPACING)


def _image(array: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-120.0, -80.0, 300.0))
    return image


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB")).astype(int)


def _panels(rgb: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal panels: the figure's thirds, without the caption strip."""
    width = rgb.shape[1] // 3
    return [rgb[: int(rgb.shape[0] * 0.9), i * width:(i + 1) * width] for i in range(3)]


def _near(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return (abs(rgb - np.asarray(colour)) <= TOLERANCE).all(axis=-1)


def _lesion_box(panel: np.ndarray) -> tuple[float, float, float, float]:
    """(row centre, column centre, height, width) in pixels of the red contour's bounding box."""
    rows, cols = np.nonzero(_near(panel, RED))
    assert rows.size, "no lesion contour in this panel"
    return ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2,
            rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)


def _at(panel: np.ndarray, right_mm: float, down_mm: float) -> np.ndarray:
    """The pixel ``right_mm`` to the right of and ``down_mm`` below the lesion centre on the display."""
    row, col, _, width = _lesion_box(panel)
    per_mm = width / (2 * RADIUS_MM)
    return panel[round(row + down_mm * per_mm), round(col + right_mm * per_mm)]


def _dark(pixel: np.ndarray) -> bool:
    return bool((pixel < 40).all())


@pytest.fixture(scope="module")
def ct() -> tuple[sitk.Image, sitk.Image]:
    return _ct()


@pytest.fixture(scope="module")
def ct_png(ct: tuple[sitk.Image, sitk.Image], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ct") / "lesion_1.png"
    assert lesion_preview(*ct, 1, "ct", out, title="lesion 1: liver") == out
    return out


def test_the_png_decodes_with_the_stated_size(ct_png: Path) -> None:
    assert _rgb(ct_png).shape == (330, 900, 3)
    assert ct_png.stat().st_size < 150_000


def test_the_lesion_contour_is_in_every_panel(ct_png: Path) -> None:
    for name, panel in zip(("axial", "coronal", "sagittal"), _panels(_rgb(ct_png))):
        assert _near(panel, RED).sum() > 50, name


def test_other_lesions_are_drawn_only_where_the_slice_cuts_them(ct_png: Path) -> None:
    axial, coronal, sagittal = _panels(_rgb(ct_png))
    assert _near(axial, YELLOW).sum() > 20
    assert not _near(coronal, YELLOW).any() and not _near(sagittal, YELLOW).any()


def test_the_grey_levels_follow_the_window(ct_png: Path) -> None:
    """240 HU (the window's top) renders white; 40 HU, the window's middle, mid-grey."""
    for panel in _panels(_rgb(ct_png)):
        row, col, _, _ = _lesion_box(panel)
        assert (panel[round(row), round(col)] == 255).all()
        assert np.allclose(_at(panel, 0, RADIUS_MM + 4), 128, atol=2)


def test_the_display_follows_the_radiological_convention(ct_png: Path) -> None:
    """Axial: patient's right on the left, anterior at the top; coronal and sagittal: head at the top, sagittal
    anterior on the left. The dark markers lie 18 mm right, anterior and head of the lesion."""
    axial, coronal, sagittal = _panels(_rgb(ct_png))
    d = MARKER_OFFSET_MM
    assert _dark(_at(axial, -d, 0)) and not _dark(_at(axial, d, 0))          # right marker on the left
    assert _dark(_at(axial, 0, -d)) and not _dark(_at(axial, 0, d))          # anterior marker at the top
    assert _dark(_at(coronal, -d, 0)) and not _dark(_at(coronal, d, 0))      # right marker on the left
    assert _dark(_at(coronal, 0, -d)) and not _dark(_at(coronal, 0, d))      # head marker at the top
    assert _dark(_at(sagittal, -d, 0)) and not _dark(_at(sagittal, d, 0))    # anterior marker on the left
    assert _dark(_at(sagittal, 0, -d)) and not _dark(_at(sagittal, 0, d))    # head marker at the top


def test_a_rotated_image_gives_the_same_panels(ct: tuple[sitk.Image, sitk.Image], ct_png: Path, tmp_path: Path) -> None:
    """The same volume stored with index axes anterior, head and right (a non-identity direction) is shown as the
    LPS one: pixel for pixel the same PNG."""
    image, labels = ct

    def rotated(lps: sitk.Image) -> sitk.Image:
        array = sitk.GetArrayFromImage(lps)[:, ::-1, ::-1].transpose(2, 0, 1)  # [x reversed, z, y reversed]
        out = sitk.GetImageFromArray(np.ascontiguousarray(array))
        sx, sy, sz = lps.GetSpacing()
        out.SetSpacing((sy, sz, sx))
        out.SetDirection((0, 0, -1, -1, 0, 0, 0, 1, 0))  # index axes along -y (anterior), +z (head), -x (right)
        out.SetOrigin(lps.TransformIndexToPhysicalPoint((lps.GetSize()[0] - 1, lps.GetSize()[1] - 1, 0)))
        return out

    turned = lesion_preview(rotated(image), rotated(labels), 1, "ct", tmp_path / "turned.png", title="lesion 1: liver")
    assert np.array_equal(_rgb(turned), _rgb(ct_png))


def test_pet_keeps_the_physical_aspect_on_anisotropic_voxels(tmp_path: Path) -> None:
    """A 12 mm sphere on 4×4×2 mm voxels is round in every panel, and SUV 10 (the fixed scale's top) is white."""
    spacing, size = (4.0, 4.0, 2.0), (40, 40, 60)
    z, y, x = _grid(size, spacing)
    suv = np.full((size[2], size[1], size[0]), 1.0, np.float32)
    labels = np.zeros(suv.shape, np.uint16)
    lesion = z ** 2 + y ** 2 + x ** 2 <= 12 ** 2
    suv[lesion], labels[lesion] = 10.0, 1
    out = lesion_preview(_image(suv, spacing), _image(labels, spacing), 1, "pet", tmp_path / "pet.png")
    for name, panel in zip(("axial", "coronal", "sagittal"), _panels(_rgb(out))):
        row, col, height, width = _lesion_box(panel)
        assert 0.85 < height / width < 1.18, name
        assert (panel[round(row), round(col)] == 255).all(), name


def _crescent(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A spherical cap shell open towards +x: every plane through its centroid still cuts it, off-centre."""
    return (z ** 2 + y ** 2 + x ** 2 <= 14 ** 2) & ~(z ** 2 + y ** 2 + (x - 6) ** 2 <= 12 ** 2)


def _two_parts(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A lesion in two parts 30 mm apart in x: the sagittal plane through the centroid (x ≈ -5 mm) misses both."""
    return ((z ** 2 + y ** 2 + (x + 15) ** 2 <= 5 ** 2)
            | ((z - 8) ** 2 + (y - 12) ** 2 + (x - 15) ** 2 <= 4 ** 2))


@pytest.mark.parametrize("shape", [_crescent, _two_parts])
def test_a_lesion_around_its_centroid_is_cut_through_its_voxels(tmp_path: Path, shape) -> None:
    """When the centroid lies outside the lesion, the slices go through the nearest lesion voxel instead."""
    z, y, x = _grid(CT_SIZE, CT_SPACING)
    pixels = np.full((CT_SIZE[2], CT_SIZE[1], CT_SIZE[0]), 40, np.int16)
    labels = np.zeros(pixels.shape, np.uint16)
    lesion = np.broadcast_to(shape(z, y, x), pixels.shape)
    labels[lesion] = 3
    assert not labels[tuple(np.rint(np.mean(np.nonzero(lesion), axis=1)).astype(int))]
    out = lesion_preview(_image(pixels, CT_SPACING), _image(labels, CT_SPACING), 3, "ct", tmp_path / "c.png")
    for name, panel in zip(("axial", "coronal", "sagittal"), _panels(_rgb(out))):
        assert _near(panel, RED).sum() > 20, name


def test_lesion_previews_writes_one_file_per_label(ct: tuple[sitk.Image, sitk.Image], ct_png: Path,
                                                   tmp_path: Path) -> None:
    paths = lesion_previews(*ct, [1, 2], "ct", tmp_path / "previews", names={1: "lesion 1: liver"})
    assert paths == {1: tmp_path / "previews" / "lesion_1.png", 2: tmp_path / "previews" / "lesion_2.png"}
    assert np.array_equal(_rgb(paths[1]), _rgb(ct_png))
    assert all(_near(panel, RED).any() for panel in _panels(_rgb(paths[2])))


def test_previews_render_the_same_in_threads(ct: tuple[sitk.Image, sitk.Image], ct_png: Path, tmp_path: Path) -> None:
    """No pyplot state: figures drawn at the same time in a web server's threads do not mix."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: lesion_preview(*ct, 1, "ct", tmp_path / f"{i}.png", title="lesion 1: liver"),
                             range(4)))
    assert all(np.array_equal(_rgb(out), _rgb(ct_png)) for out in outs)


def test_a_display_range_changes_the_grey_levels(ct: tuple[sitk.Image, sitk.Image], tmp_path: Path) -> None:
    out = lesion_preview(*ct, 1, "ct", tmp_path / "w.png", display=(-1000, 40))
    for panel in _panels(_rgb(out)):
        assert (_at(panel, 0, RADIUS_MM + 4) == 255).all()


def test_an_absent_label_is_refused(ct: tuple[sitk.Image, sitk.Image], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"label 7 is not in the label map \(labels present: \[1, 2\]\)"):
        lesion_preview(*ct, 7, "ct", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"label 7 is not in the label map"):
        lesion_previews(*ct, [1, 7], "ct", tmp_path / "several")
    assert not (tmp_path / "several").exists()  # every label is checked before anything is written


def test_bad_inputs_are_refused(ct: tuple[sitk.Image, sitk.Image], tmp_path: Path) -> None:
    image, labels = ct
    with pytest.raises(ValueError, match=r"modality must be one of \('ct', 'pet'\). Found: 'CT'"):
        lesion_preview(image, labels, 1, "CT", tmp_path / "x.png")
    with pytest.raises(ValueError, match="display range must be two finite numbers, low < high"):
        lesion_preview(image, labels, 1, "ct", tmp_path / "x.png", display=(240, -160))
    shifted = sitk.Image(labels)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="label map is not on the image grid"):
        lesion_preview(image, shifted, 1, "ct", tmp_path / "x.png")
    with pytest.raises(ValueError, match="label map must have an integer pixel type"):
        lesion_preview(image, sitk.Cast(labels, sitk.sitkFloat32), 1, "ct", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- the grey scale in the parameter files -------------------------------------------------------------------------

def test_display_range_reads_the_parameter_files() -> None:
    assert display_range(REPO / "params" / "ct.yaml", "ct") == (-160.0, 240.0) == CT_WINDOW_DEFAULT
    assert display_range(REPO / "params" / "pet.yaml", "pet") == (0.0, 10.0) == PET_SUV_RANGE_DEFAULT
    for name in ("ct.yaml", "pet.yaml"):
        load_params(REPO / "params" / name)  # the extraction loader accepts the display key


def test_display_range_falls_back_to_the_defaults(tmp_path: Path) -> None:
    assert display_range(None, "ct") == CT_WINDOW_DEFAULT
    assert display_range(None, "pet") == PET_SUV_RANGE_DEFAULT
    assert display_range(REPO / "params" / "ibsi_A.yaml", "ct") == CT_WINDOW_DEFAULT  # no display block
    assert display_range(REPO / "params" / "ct.yaml", "pet") == PET_SUV_RANGE_DEFAULT  # no suv_range in ct.yaml
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump({"palmares": {"display": {"window_hu": [-1350, 150]}}}))
    assert display_range(custom, "ct") == (-1350.0, 150.0)


@pytest.mark.parametrize("display, message", [
    ({"window_hu": [240, -160]}, r"'palmares.display.window_hu' lower bound must be below the upper bound. "
                                 r"Found: \[240, -160\]"),
    ({"window_hu": [-160]}, r"'palmares.display.window_hu' must be two numbers \[low, high\]. Found: \[-160\]"),
    ({"suv_range": ["0", 10]}, r"'palmares.display.suv_range' must be two numbers"),
    ({"window": [-160, 240]}, r"unknown key\(s\) \['window'\] in 'palmares.display'"),
])
def test_a_bad_display_block_is_refused_by_both_readers(tmp_path: Path, display: dict, message: str) -> None:
    document = yaml.safe_load((REPO / "params" / "ct.yaml").read_text())
    document["palmares"]["display"] = display
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=message):
        load_params(path)
    with pytest.raises(ConfigError, match=message):
        display_range(path, "ct")
