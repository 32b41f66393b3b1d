"""Tests of validate: one validation with problem codes, for check-segmentation, the mask stage and the page.

Images are SimpleITK volumes (a CT with a body surrounded by air) or CT series written with pydicom; masks
are real NIfTI files and RTSTRUCTs written by the builders of test_masks; the synthetic cohort comes from synth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from palmares_radiomics import masks
from palmares_radiomics.cli import main
from palmares_radiomics.errors import SegmentationError
from palmares_radiomics.records import LesionSpec
from palmares_radiomics.validate import (DEFAULT_MIN_LESION_VOLUME_ML, Problem, Validation, body_region,
                                         validate_segmentation)
from palmares_radiomics.volumes import read_image

from test_masks import (NAMES, _rectangle, clinical_rtstruct, cohort, lesion_table, read_csv,  # noqa: F401
                        rtstruct_for, series_folders, truth_lesions, write_ct_series, write_label_map, write_rtstruct)

#: A body CT: 64 columns (x, patient right -> left) × 48 rows × 10 slices at 2×2×3 mm; soft tissue (40 HU)
#: in columns 4..33 and rows 10..37 of every slice, with air lungs inside; air (-1000 HU) elsewhere.
BODY_X, BODY_Y = slice(4, 34), slice(10, 38)


@pytest.fixture()
def body_ct() -> sitk.Image:
    array = np.full((10, 48, 64), -1000, dtype=np.int16)
    array[:, BODY_Y, BODY_X] = 40
    array[:, 15:25, 8:16] = -850  # a lung: air inside the body counts as body
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-64.0, -48.0, 100.0))
    return image


def lesion_map(image: sitk.Image, *boxes: tuple[slice, slice, slice]) -> np.ndarray:
    """(z, y, x) label map with label n in the n-th box."""
    out = np.zeros(image.GetSize()[::-1], dtype=np.uint16)
    for value, where in enumerate(boxes, start=1):
        out[where] = value
    return out


LESIONS = [LesionSpec("L1", "ct", 1, "liver"), LesionSpec("L2", "ct", 2, "lung")]
INSIDE = (slice(3, 6), slice(20, 26), slice(6, 12))  # 3×6×6 voxels = 1.3 ml, in the body (x 6..11)
INSIDE_2 = (slice(2, 5), slice(28, 33), slice(20, 25))  # 3×5×5 = 0.9 ml


def codes(result: Validation) -> list[str]:
    return [p.code for p in result.problems]


def test_accepted_mask_on_the_body_ct(body_ct: sitk.Image, tmp_path: Path) -> None:
    path = write_label_map(lesion_map(body_ct, INSIDE, INSIDE_2), body_ct, tmp_path / "m.nii.gz")
    result = validate_segmentation(path, body_ct, LESIONS)
    assert result.ok and result.problems == () and result.warnings == ()
    assert result.kind == masks.KIND_LABEL_MAP and [s.lesion_id for s in result.lesions] == ["L1", "L2"]
    assert result.label_map is not None and result.label_map.GetPixelID() == sitk.sitkUInt16
    assert masks.same_grid(result.label_map, body_ct)


def test_body_region_fills_the_lung_and_leaves_air_out(body_ct: sitk.Image) -> None:
    body, step = body_region(body_ct, "ct")
    assert step == 1 and body.shape == (10, 48, 64)
    assert body[:, BODY_Y, BODY_X].all() and body.sum() == 10 * 28 * 30


def test_shift_is_said_in_anatomical_words_and_mm(body_ct: sitk.Image, tmp_path: Path) -> None:
    """50 mm towards the patient's left (+x) and 2 mm posterior (+y), LPS, as 25 and 1 voxels."""
    mask = sitk.GetImageFromArray(lesion_map(body_ct, INSIDE))
    mask.CopyInformation(body_ct)
    mask.SetOrigin(tuple(np.array(body_ct.GetOrigin()) + [50.0, 2.0, 0.0]))
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    result = validate_segmentation(tmp_path / "m.nii.gz", body_ct, LESIONS[:1])
    (problem,) = result.problems
    assert not result.ok and result.label_map is None and problem.code == "grid_shift"
    assert problem.message.startswith("The mask is shifted 50.0 mm to the patient's left and 2.0 mm posterior of "
                                      "the CT (25.00, 1.00, 0.00 voxels")
    assert problem.fix == masks.EXPORT_HINT
    mask.SetOrigin(tuple(np.array(body_ct.GetOrigin()) + [-0.75, 0.0, -4.5]))
    sitk.WriteImage(mask, str(tmp_path / "m2.nii.gz"))
    (problem,) = validate_segmentation(tmp_path / "m2.nii.gz", body_ct, LESIONS[:1], modality="pet").problems
    assert problem.message.startswith("The mask is shifted 0.75 mm to the patient's right and 4.5 mm towards the "
                                      "feet of the PET (-0.38, 0.00, -1.50 voxels")


def test_other_size_and_spacing_keep_their_mm(body_ct: sitk.Image, tmp_path: Path) -> None:
    mask = sitk.Image(64, 48, 12, sitk.sitkUInt16)
    mask.SetSpacing((2.0, 2.0, 2.5))
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    (problem,) = validate_segmentation(tmp_path / "m.nii.gz", body_ct, LESIONS).problems
    assert problem.code == "grid_size"
    assert problem.message.startswith("The mask is 64×48×12 voxels at 2×2×2.5 mm but the CT is 64×48×10 at 2×2×3 mm")
    mask = sitk.Image(64, 48, 10, sitk.sitkUInt16)
    mask.SetSpacing((2.1, 2.0, 3.0))
    sitk.WriteImage(mask, str(tmp_path / "s.nii.gz"))
    assert codes(validate_segmentation(tmp_path / "s.nii.gz", body_ct, LESIONS)) == ["grid_spacing"]


def test_single_slice_and_2d_masks(body_ct: sitk.Image, tmp_path: Path) -> None:
    one = sitk.GetImageFromArray(lesion_map(body_ct, INSIDE)[4:5])
    one.SetSpacing(body_ct.GetSpacing())
    one.SetOrigin(body_ct.TransformIndexToPhysicalPoint((0, 0, 4)))
    sitk.WriteImage(one, str(tmp_path / "one.nii.gz"))
    (problem,) = validate_segmentation(tmp_path / "one.nii.gz", body_ct, LESIONS[:1]).problems
    assert problem.code == "mask_2d"
    assert problem.message.startswith("The mask is a single slice (64×48×1) but the CT has 10 slices: a 3-D label map")
    flat = sitk.GetImageFromArray(lesion_map(body_ct, INSIDE)[4])
    flat.SetSpacing(body_ct.GetSpacing()[:2])
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    (problem,) = validate_segmentation(tmp_path / "flat.nii.gz", body_ct, LESIONS[:1]).problems
    assert problem.code == "mask_2d" and problem.message.startswith("The mask is a single slice (64×48, a 2-D image)")


def test_below_min_volume_names_the_lesion_and_its_volume(body_ct: sitk.Image, tmp_path: Path) -> None:
    small = (slice(3, 5), slice(28, 31), slice(20, 23))  # 2×3×3 voxels × 12 mm³ = 0.216 ml
    path = write_label_map(lesion_map(body_ct, INSIDE, small), body_ct, tmp_path / "m.nii.gz")
    result = validate_segmentation(path, body_ct, LESIONS)
    assert not result.ok and result.label_map is None and codes(result) == ["below_min_volume"]
    problem = result.problems[0]
    assert problem.message == ("Lesion L2 (label 2) is 0.22 ml (18 voxels), smaller than the study's minimum lesion "
                               "volume of 0.5 ml.")
    assert problem.fix == ("Redraw it to cover the whole lesion, or remove it from the lesion table if it is too "
                           "small to measure (minimum 0.5 ml, the study's min_lesion_volume_ml).")
    assert [w.code for w in result.warnings] == ["small_lesion"]
    assert DEFAULT_MIN_LESION_VOLUME_ML == 0.5
    assert validate_segmentation(path, body_ct, LESIONS, min_volume_ml=0).ok
    assert codes(validate_segmentation(path, body_ct, LESIONS, min_volume_ml=1.5)) == ["below_min_volume"] * 2


def test_left_right_mirrored_nifti_on_the_grid_is_a_flipped_axis(body_ct: sitk.Image, tmp_path: Path) -> None:
    """The header says 'on the grid' but the voxels were saved mirrored left-right: the lesions lie in air."""
    truth = lesion_map(body_ct, INSIDE, INSIDE_2)
    path = write_label_map(truth[:, :, ::-1], body_ct, tmp_path / "m.nii.gz")
    result = validate_segmentation(path, body_ct, LESIONS)
    assert codes(result) == ["flipped_axis", "flipped_axis"]
    assert result.problems[0].message == (
        "Lesion L1 (label 1) lies outside the patient's body (100 % of its voxels in air); mirrored left–right it "
        "would lie inside: the mask was probably saved with its left–right axis flipped (an LPS/RAS confusion in "
        "the NIfTI affine).")
    assert result.problems[0].fix.startswith("Re-export the mask with the CT's orientation.")
    head_feet = write_label_map(truth[::-1], body_ct, tmp_path / "z.nii.gz")  # the body fills every slice
    assert validate_segmentation(head_feet, body_ct, LESIONS).ok


def test_lesion_in_air_whichever_way_mirrored_is_outside_body(body_ct: sitk.Image, tmp_path: Path) -> None:
    corner = (slice(3, 6), slice(1, 7), slice(50, 57))  # mirrored in x: x 7..13 but y 1..6 is air too
    result = validate_segmentation(write_label_map(lesion_map(body_ct, INSIDE, corner), body_ct,
                                                   tmp_path / "m.nii.gz"), body_ct, LESIONS)
    (problem,) = result.problems
    assert problem.code == "outside_body"
    assert problem.message.startswith("Lesion L2 (label 2) lies outside the patient's body (100 % of its voxels in "
                                      "air), and would not lie inside if mirrored along any axis")


def test_phantom_without_air_is_never_judged(tmp_path: Path) -> None:
    phantom = sitk.GetImageFromArray(np.full((6, 20, 20), 3, dtype=np.int16))
    path = write_label_map(lesion_map(phantom, (slice(0, 6), slice(0, 20), slice(0, 20))), phantom,
                           tmp_path / "m.nii.gz")
    assert validate_segmentation(path, phantom, [LesionSpec("L1", "ct", 1, "liver")]).ok


def test_rtstruct_overlapping_contours_disagree_with_rasterisation(tmp_path: Path) -> None:
    """Two overlapping contours on one slice: the rasteriser (even-odd) leaves the overlap empty."""
    datasets = write_ct_series(tmp_path / "ct")
    image = read_image(tmp_path / "ct")
    rois = {"GTV": [_rectangle(image, 3, 2, 15, 2, 15), _rectangle(image, 3, 3, 16, 3, 16)],
            "NODE": [_rectangle(image, k, 2, 9, 17, 22) for k in range(2, 6)]}
    rt = write_rtstruct(datasets, rois, tmp_path / "rt.dcm")
    lesions = [LesionSpec("L1", "ct", 10, "liver", "GTV"), LesionSpec("L2", "ct", 11, "lymph_node", "NODE")]
    result = validate_segmentation(rt, image, lesions, reference=masks.image_reference(tmp_path / "ct"),
                                   min_volume_ml=0)
    (problem,) = result.problems
    assert problem.code == "rasterisation_disagrees"
    # 54 voxels (the XOR of two 14×14 squares) × 5.625 mm³ = 0.30 ml; 2 × 196 voxels of polygon = 2.21 ml
    assert problem.message.startswith("Lesion L1 ('GTV' (ROI Number 10)) fills 0.30 ml of voxels but its contours "
                                      "enclose 2.21 ml")


def test_rtstruct_bow_tie_contour_disagrees(tmp_path: Path) -> None:
    datasets = write_ct_series(tmp_path / "ct")
    image = read_image(tmp_path / "ct")
    points = [(1.5, 1.5), (18.5, 14.5), (18.5, 1.5), (1.5, 14.5)]  # (column, row): crosses itself
    bow = [np.array([image.TransformContinuousIndexToPhysicalPoint((c, r, float(k))) for c, r in points])
           for k in range(2, 6)]
    rt = write_rtstruct(datasets, {"GTV": bow}, tmp_path / "rt.dcm")
    result = validate_segmentation(rt, image, [LesionSpec("L1", "ct", 10, "liver", "GTV")])
    assert codes(result) == ["rasterisation_disagrees"]
    assert "its contours enclose 0.00 ml" in result.problems[0].message


def test_exact_rtstruct_with_holes_agrees(tmp_path: Path) -> None:
    """Box contours on voxel edges, a hole and two parts on a slice included: no cross-check problem."""
    datasets = write_ct_series(tmp_path / "ct")
    image = read_image(tmp_path / "ct")
    rt = clinical_rtstruct(datasets, image, truth_lesions(image), tmp_path / "rt.dcm")
    lesions = [LesionSpec(f"L{n}", "ct", n, "liver", f"GTV_{n}") for n in (1, 2, 3)]
    result = validate_segmentation(rt, image, lesions, reference=masks.image_reference(tmp_path / "ct"),
                                   min_volume_ml=0)
    assert result.ok, result.problems
    assert result.ignored[0] == "'Body' (ROI Number 1)"


def test_wrong_series_by_reference_and_the_series_hint(tmp_path: Path) -> None:
    datasets = write_ct_series(tmp_path / "ct")
    image = read_image(tmp_path / "ct")
    rt = rtstruct_for(datasets, image, truth_lesions(image), tmp_path / "rt.dcm", NAMES, series_uid=generate_uid())
    reference = masks.image_reference(tmp_path / "ct")
    result = validate_segmentation(rt, image, lesion_table(NAMES), reference=reference, min_volume_ml=0,
                                   series_hint="the baseline CT (series 3, 2024-01-12)")
    (problem,) = result.problems
    assert problem.code == "wrong_series" and result.kind == masks.KIND_RTSTRUCT
    assert problem.message.startswith("The RTSTRUCT was drawn on a different series than this CT")
    assert problem.fix == "Re-export it from the baseline CT (series 3, 2024-01-12)."
    other_frame = rtstruct_for(datasets, image, truth_lesions(image), tmp_path / "f.dcm", NAMES,
                               frame_uid=generate_uid())
    assert codes(validate_segmentation(other_frame, image, lesion_table(NAMES), reference=reference)) == [
        "wrong_frame_of_reference"]
    assert [w.code for w in validate_segmentation(rt, image, min_volume_ml=0).warnings] == [
        "no_dicom_reference", "no_lesion_table", "small_lesion"]


def test_refusals_of_masks_keep_their_codes(tmp_path: Path) -> None:
    """Overlap, empty lesion, outside the image and the lesion table: codes from masks, text as raised."""
    datasets = write_ct_series(tmp_path / "ct")
    image = read_image(tmp_path / "ct")
    truth = truth_lesions(image)
    both = {"L1": [_rectangle(image, k, 2, 9, 2, 9) for k in range(2, 6)],
            "L2": [_rectangle(image, k, 6, 12, 6, 12) for k in range(2, 6)]}
    overlapping = write_rtstruct(datasets, both, tmp_path / "both.dcm")
    two = [LesionSpec("L1", "ct", 10, "liver", "L1"), LesionSpec("L2", "ct", 11, "liver", "L2")]
    with pytest.raises(SegmentationError) as raised:
        masks.import_segmentation(overlapping, image, two)
    (problem,) = validate_segmentation(overlapping, image, two).problems
    assert problem.code == raised.value.code == "overlap" and problem.text() == str(raised.value)
    path = write_label_map(truth, image, tmp_path / "o.nii.gz")
    assert codes(validate_segmentation(path, image, [LesionSpec("L9", "ct", 9, "liver")])) == ["lesion_not_found"]
    assert codes(validate_segmentation(path, image, lesion_table(NAMES) * 2)) == ["lesion_table"]
    outside = write_rtstruct(datasets, {"L1": [_rectangle(image, 2, 2, 5, 20, 30)]}, tmp_path / "rt.dcm")
    assert codes(validate_segmentation(outside, image, [LesionSpec("L1", "ct", 10, "liver", "L1")])) == [
        "outside_image"]
    empty = write_label_map(np.zeros_like(truth), image, tmp_path / "e.nii.gz")
    assert codes(validate_segmentation(empty, image)) == ["empty_mask"]
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    assert codes(validate_segmentation(tmp_path / "junk.dcm", image)) == ["unreadable_file"]


def test_problem_text_is_the_raised_error_text(body_ct: sitk.Image, tmp_path: Path) -> None:
    """The mask stage raises the first problem: its str() is the problem's text (message, a space, the fix)."""
    path = write_label_map(lesion_map(body_ct, INSIDE)[:, :, ::-1], body_ct, tmp_path / "m.nii.gz")
    (problem,) = validate_segmentation(path, body_ct, LESIONS[:1]).problems
    raised = SegmentationError(problem.message, code=problem.code, fix=problem.fix)
    assert str(raised) == problem.text() == f"{problem.message} {problem.fix}"
    assert (raised.code, raised.message, raised.fix) == (problem.code, problem.message, problem.fix)
    assert str(SegmentationError("plain")) == "plain" and SegmentationError("plain").code == "segmentation"
    with pytest.raises(AttributeError):
        problem.code = "x"  # type: ignore[misc]
    assert Problem("a", "b.", "c.").text() == "b. c."


def test_synthetic_cohort_validates_without_flip_body_or_rasterisation_problems(cohort: Path) -> None:  # noqa: F811
    folders = series_folders(cohort)
    table = read_csv(cohort / "raw" / "lesions.csv")
    kinds = set()
    for patient in read_csv(cohort / "truth" / "patients.csv"):
        for modality in ("ct", "pet"):
            (mask,) = (cohort / "raw" / "segmentations" / patient["site"] / patient["patient_id"] / modality).iterdir()
            lesions = [LesionSpec(r["lesion_id"], modality, int(r["label"]), r["organ"], r["roi_name"]) for r in table
                       if r["patient_id"] == patient["patient_id"] and r["modality"] == modality]
            folder = folders[patient[f"{modality}_series_uid"]]
            result = validate_segmentation(mask, read_image(folder), lesions, modality=modality,
                                           reference=masks.image_reference(folder))
            assert result.ok, [p.text() for p in result.problems]
            assert {w.code for w in result.warnings} <= {"small_lesion"}
            kinds.add(result.kind)
    assert kinds == {masks.KIND_LABEL_MAP, masks.KIND_SEG, masks.KIND_RTSTRUCT}


def test_cli_applies_the_study_minimum_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets = write_ct_series(tmp_path / "ct")
    image = read_image(tmp_path / "ct")
    rt = rtstruct_for(datasets, image, truth_lesions(image), tmp_path / "rt.dcm", NAMES)
    assert main(["check-segmentation", str(tmp_path / "ct"), str(rt), "--roi", "L3"]) == 1
    out = capsys.readouterr().out
    assert "  problem: 'L3' (ROI Number 12) is 0.14 ml (24 voxels), smaller than the study's minimum" in out
    assert main(["check-segmentation", str(tmp_path / "ct"), str(rt), "--roi", "L3", "--min-volume-ml", "0.1"]) == 0
    assert main(["check-segmentation", str(tmp_path / "ct"), str(rt), "--min-volume-ml", "-1"]) == 2
