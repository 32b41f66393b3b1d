"""How long the upload page takes from upload to verdict for a 512 x 512 x 300 CT and a 200-contour RTSTRUCT.

The issue's target: under 5 s on 2 cores. This builds a study in the state in which a centre's radiologists
upload: a one-patient ``palmares synth`` cohort whose CT is 512 x 512 x 300 (2 x 2 x 2.5 mm; the synthetic
PET follows the CT's field of view on its 4 mm grid, 256 x 256 x 188), the real ``snakemake --until intake``
(index, selection and the intake checkpoint, which records the raw CT series the page reads), and the
cohort's own segmentation moved out of the folder the DAG reads (as ``tests/serve_study.py`` does).

It then writes an RTSTRUCT for that CT with ``--lesions`` spheres (default 10) whose CLOSED_PLANAR contours,
one per slice, add up to ``--contours`` (default 200), with synth's own contour writer
(``skimage.measure.find_contours`` at 0.5 on each slice of the sphere's mask), and rewrites that patient's
CT rows of the lesion table to name them (ROI Number = label, ROIName = roi_name). The spheres lie in the
body on the synthetic anatomy (their HU are the tissue's: validation and previews do not depend on them).

In one process, with the Flask app created once (``create_app``, test client: no network), it times:

- (a) the baseline: ``volumes.read_study_image`` on the raw CT series (the files the intake recorded);
- (b) the first POST ``/api/segmentations`` (cold: the server reads the CT series into its image cache);
- (c) the median of ``--repeat`` further POSTs of the same file (warm: the image comes from the cache);
- for (b) and (c) also the time until the previews are drawn (they are drawn after the verdict is answered;
  the GET of ``preview.png`` waits for them);
- a breakdown on the same inputs: the server's baseline read (``Study.baseline`` on a fresh Study: series
  read, float32 cast, DICOM reference, series hint), ``validate.validate_segmentation`` and
  ``preview.lesion_previews``.

Every answer must be 200 and accepted (problems are printed otherwise; the exit status is 1 then). Times are
printed as wall time and CPU time of this process (all threads; compare CPU time on a shared machine) with
the wall-time ratio to (a); nothing is asserted. The page cache is warm throughout (the series was just
written). The first request also pays one-time costs (the preview font, first use of large allocations),
printed as (b) - (c) - the baseline read; the imports themselves are done before it and printed apart.

``--workdir DIR`` builds the study in DIR (reused as it is if it already holds an intake, e.g. one left by
``--keep``); the folder is removed at the end unless ``--keep`` is given or DIR existed before.

    .venv/bin/python benchmarks/bench_upload.py [--lesions 10] [--contours 200] [--repeat 3] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RTStructureSetStorage

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "src"))

sys.path.insert(0, str(REPO / "tests"))

from serve_study import make_study  # noqa: E402

from palmares_radiomics import synth  # noqa: E402
from palmares_radiomics.synth import dicom as synth_dicom  # noqa: E402
from palmares_radiomics.synth import masks as synth_masks  # noqa: E402

CT_SHAPE = (512, 512, 300)  # synth's shape: (columns, rows, slices)
SMOKE_SHAPE = (128, 128, 60)
SEED = 3


def ct_slices(files: list[Path]) -> tuple[list[Dataset], synth.Grid]:
    """The CT series' headers sorted by slice position, and its grid (axial, as synth writes it)."""
    slices = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in files),
                    key=lambda ds: float(ds.ImagePositionPatient[2]))
    first = slices[0]
    spacing = float(slices[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    grid = synth.Grid(int(first.Columns), int(first.Rows), len(slices), float(first.PixelSpacing[0]), spacing,
                      tuple(float(v) for v in first.ImagePositionPatient))
    return slices, grid


def plan_lesions(grid: synth.Grid, n: int, contours: int) -> list[synth.Lesion]:
    """``n`` spheres, one contour per slice they cross, ``contours`` in all (as evenly as possible).

    Centres lie half-way between two slices, so a sphere of radius r crosses 2 * floor((r + s/2) / s) slices
    (s the slice spacing); they alternate left and right of the midline in the body, stacked head to feet
    with a gap of at least one slice between neighbours (no overlap).
    """
    per = [contours // n + (1 if i < contours % n else 0) for i in range(n)]
    if any(p < 2 or p % 2 for p in per) or sum(per) + n > grid.slices:
        raise SystemExit(f"cannot place {n} lesions with {contours} contours in all on {grid.slices} slices "
                         "(each lesion needs an even number of contours, at least 2)")
    s = grid.slice_mm
    organs = ("liver", "lymph_node")
    lesions, k = [], (grid.slices - sum(per) - n) // 2
    for i, p in enumerate(per):
        radius = (p / 2) * s - 0.3 * s  # 2 * floor((r + s/2) / s) == p
        z = grid.slice_z(k + p // 2 - 1) + s / 2
        x = (-1) ** i * 80.0 + grid.pixel_mm / 2  # off the voxel centres, as real contours are
        lesions.append(synth.Lesion(f"L{i + 1}", synth.RTSTRUCT_FIRST_LESION_NUMBER + i, organs[i % 2],
                                    (x, 20.0, z), radius, 0.0, 0.0, name=f"Lesion {i + 1}"))
        k += p + 1
    return lesions


def write_rtstruct(path: Path, slices: list[Dataset], grid: synth.Grid, lesions: list[synth.Lesion]) -> int:
    """An RTSTRUCT on the CT series with one ROI per lesion (synth's contour writer); returns the contour count."""
    first = slices[0]
    uid = pydicom.uid.generate_uid()
    ds = Dataset()
    synth_masks._copy_identity(ds, first)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.SeriesNumber = 101
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "LESIONI"
    ds.StructureSetDate = "20260101"
    ds.StructureSetTime = "120000"
    spec = SimpleNamespace(series_uid=first.SeriesInstanceUID, frame_uid=first.FrameOfReferenceUID, grid=grid)
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([synth_masks._referenced_frame(spec, slices)])
    ds.StructureSetROISequence = DicomSequence(synth_masks._roi_item(spec, lesion) for lesion in lesions)
    ds.ROIContourSequence = DicomSequence(synth_masks._roi_contour_item(spec, lesion, slices) for lesion in lesions)
    ds.RTROIObservationsSequence = DicomSequence(synth_masks._roi_observation_item(lesion, "BENCH")
                                                 for lesion in lesions)
    ds.ApprovalStatus = "UNAPPROVED"
    ds.file_meta = synth_dicom._file_meta(RTStructureSetStorage, uid)
    synth_dicom._write_dataset(path, ds)
    return sum(len(item.ContourSequence) for item in ds.ROIContourSequence)


def rewrite_lesion_table(csv_path: Path, site: str, patient_id: str, lesions: list[synth.Lesion]) -> None:
    """The patient's CT rows of the lesion table replaced by ``lesions`` (label = ROI Number, roi_name = ROIName)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    keep = ~((table["site"] == site) & (table["patient_id"] == patient_id) & (table["modality"] == "ct"))
    rows = pd.DataFrame([{"site": site, "patient_id": patient_id, "modality": "ct", "lesion_id": les.lesion_id,
                          "label": str(les.label), "roi_name": les.roi_name, "organ": les.organ} for les in lesions])
    pd.concat([table[keep], rows[table.columns]], ignore_index=True).to_csv(csv_path, index=False)


def timed(function, *args, **kwargs):
    """((wall s, CPU s of this process, all threads), result): CPU time is what to compare on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return (time.perf_counter() - start, time.process_time() - cpu), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lesions", type=int, default=10, help="lesions (ROIs) in the RTSTRUCT")
    parser.add_argument("--contours", type=int, default=200, help="contours in all (one per slice a lesion crosses)")
    parser.add_argument("--repeat", type=int, default=3, help="warm POSTs after the cold one (median printed)")
    parser.add_argument("--workdir", type=Path, help="build the study here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the study folder (default: removed, unless --workdir existed before)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a {SMOKE_SHAPE[0]} x {SMOKE_SHAPE[1]} x {SMOKE_SHAPE[2]} CT, 2 lesions, 16 contours, one warm "
                             "POST: checks the script runs")
    args = parser.parse_args(argv)
    args.shape = CT_SHAPE
    if args.smoke:
        args.lesions, args.contours, args.repeat, args.shape = 2, 16, 1, SMOKE_SHAPE

    existed = args.workdir is not None and args.workdir.exists()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-upload-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return run(root, args)
    finally:
        if args.keep or existed:
            print(f"\nstudy kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if not (root / "work/intake/modalities.csv").is_file():  # a kept --workdir is reused as it is
        make_study(root, patients=1, seed=SEED, shape=args.shape, sites=1)  # as the serve tests build theirs
        print(f"synthetic cohort (CT {args.shape[0]} x {args.shape[1]} x {args.shape[2]}) and snakemake --until intake: "
              f"{time.perf_counter() - start:.1f} s", flush=True)

    t0 = time.perf_counter()  # what the server imports by its first verdict: not part of the times below
    from palmares_radiomics import intake, masks, preview, validate, volumes
    from palmares_radiomics.serve.app import create_app
    from palmares_radiomics.serve.study import Study
    import_s = time.perf_counter() - t0

    study = Study(root / "config.yaml", root=root)
    entry = next(e for e in study.entries() if e.modality == "ct")
    record = intake.read_record(study.intake / f"{entry.patient}.json")
    files = [root / f[0] for f in record["series"]["ct"]["files"]]  # recorded relative to the run folder
    slices, grid = ct_slices(files)
    lesions = plan_lesions(grid, args.lesions, args.contours)
    upload = root / "cohort/uploads/bench-rtstruct.dcm"
    n_contours = write_rtstruct(upload, slices, grid, lesions)
    rewrite_lesion_table(study.lesions_csv, entry.site, entry.patient_id, lesions)
    print(f"RTSTRUCT: {len(lesions)} lesion ROIs, {n_contours} CLOSED_PLANAR contours, "
          f"{upload.stat().st_size / 1e6:.1f} MB; lesions {min(les.radius_mm for les in lesions):.2f}-"
          f"{max(les.radius_mm for les in lesions):.2f} mm radius")

    # (a) baseline: the CT series as the image stage reads it (the recorded files only, as the server links them)
    series = root / "work/phi/bench-series"
    shutil.rmtree(series, ignore_errors=True)
    series.mkdir(parents=True)
    for i, f in enumerate(files):
        os.symlink(f.resolve(), series / f"{i:06d}.dcm")
    read_s, image = timed(volumes.read_study_image, series)
    print(f"CT series read: {len(files)} files, size {image.GetSize()}, spacing {image.GetSpacing()}")
    del image  # 630 MB of float64: not kept while the server works

    app = create_app(study)
    client = app.test_client()
    payload = upload.read_bytes()

    def post():
        data = {"site": entry.site, "patient_id": entry.patient_id, "modality": "ct",
                "file": (io.BytesIO(payload), "upload.dcm")}
        (seconds, cpu), response = timed(client.post, "/api/segmentations", data=data, content_type="multipart/form-data")
        body = response.get_json()
        if response.status_code != 200 or not body.get("accepted"):
            print(f"  ! answer {response.status_code}, accepted={body.get('accepted')}: problems "
                  f"{[p['code'] + ': ' + p['message'] for p in body.get('problems') or []]}")
            return (seconds, cpu), response.status_code, body
        # the previews are drawn after the answer; their image route waits until they are there
        (more, more_cpu), image = timed(client.get, body["preview"])
        image.close()
        body["previews_ready"] = (seconds + more, cpu + more_cpu) if image.status_code == 200 else (float("nan"),) * 2
        return (seconds, cpu), response.status_code, body

    cold_s, cold_status, cold_body = post()
    warm = [post() for _ in range(args.repeat)]
    warm_s = tuple(statistics.median(t[i] for t, _, _ in warm) for i in (0, 1))
    answers = [cold_status] + [status for _, status, _ in warm]
    accepted = [cold_body.get("accepted")] + [body.get("accepted") for _, _, body in warm]

    # breakdown on the same inputs
    fresh = Study(root / "config.yaml", root=root)
    baseline_s, baseline = timed(fresh.baseline, entry)
    reference_s, _ = timed(masks.image_reference, series)
    specs = fresh.lesions(entry)
    validate_s, validation = timed(validate.validate_segmentation, upload, baseline.image, specs, modality="ct",
                                   reference=baseline.reference, min_volume_ml=fresh.min_volume_ml,
                                   series_hint=baseline.series_hint)
    scratch = Path(tempfile.mkdtemp(prefix="previews-", dir=root))
    display = preview.display_range(fresh.params.get("ct"), "ct")
    preview_s, made = timed(preview.lesion_previews, baseline.image, validation.label_map,
                            [s.label for s in validation.lesions], "ct", scratch, display=display)
    shutil.rmtree(series, ignore_errors=True)

    print(f"\nimports (app, validate, preview; done before the first upload, not in the times): "
          f"{import_s:.2f} s")
    print(f"answers: {answers}, accepted: {accepted}; lesions in the verdict: {len(cold_body.get('lesions') or [])}, "
          f"versions {cold_body.get('version')}..{warm[-1][2].get('version') if warm else ''}\n")
    first = tuple(cold_s[i] - warm_s[i] - baseline_s[i] for i in (0, 1))
    rest = tuple(warm_s[i] - validate_s[i] for i in (0, 1))
    nan = (float("nan"),) * 2
    warm_ready = tuple(statistics.median(b.get("previews_ready", nan)[i] for _, _, b in warm) for i in (0, 1))
    rows = [("(a) `read_study_image` on the raw CT series (baseline)", read_s),
            ("(b) first POST, cold (the server reads the series): verdict", cold_s),
            ("(b) ... and its previews drawn (preview.png answered)", cold_body.get("previews_ready", nan)),
            (f"(c) POST, warm (image cached), median of {args.repeat}: verdict", warm_s),
            ("(c) ... and its previews drawn (preview.png answered)", warm_ready),
            ("breakdown: the server's baseline read (`Study.baseline`, fresh Study)", baseline_s),
            ("breakdown: of which `masks.image_reference` (the series' headers again)", reference_s),
            (f"breakdown: `validate_segmentation` ({n_contours} contours, {len(specs)} lesions)", validate_s),
            (f"breakdown: `lesion_previews` ({len(made)} PNGs)", preview_s),
            ("breakdown: rest of a warm POST ((c) - validation)", rest),
            ("breakdown: first request's one-time costs ((b) - (c) - baseline read)", first)]
    print("| step | wall time (s) | CPU time (s) | wall vs (a) |")
    print("|---|---:|---:|---:|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / read_s[0]:.2f} |")
    print(f"\nwarm POSTs (wall): {', '.join(f'{t[0]:.2f}' for t, _, _ in warm)} s; validation ok={validation.ok}, "
          f"problems {[p.code for p in validation.problems]}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    return 0 if all(status == 200 for status in answers) and all(accepted) else 1


if __name__ == "__main__":
    raise SystemExit(main())
