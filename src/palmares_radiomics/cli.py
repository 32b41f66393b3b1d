"""The ``palmares`` command: thin wrappers over the package, one sub-command per stage.

User-facing commands (a contract, see DESIGN.md): synth, deid, suv, features, filter, check-segmentation, serve; and
locate (the local patient behind a pseudonym, for a centre holding the key), unlock (after a hard kill).
``palmares stage <name>`` runs one DAG stage and is what the Snakemake rules call.
Exit status 0 on success; otherwise one clear line on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .columns import NORMALISATIONS
from .errors import ConfigError, PalmaresError
from .records import AGGREGATES, DEFAULT_AGGREGATES

log = logging.getLogger("palmares")


def _add_suv_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suv-normalisations", nargs="*", default=[], choices=list(NORMALISATIONS),
                        help="PET: also compute SUL and/or SUVbsa factors (the image stays SUVbw)")
    parser.add_argument("--suv-override", default=None, metavar="JSON",
                        help="PET: this patient's audited suv_overrides entry as JSON, e.g. "
                             "'{\"weight_kg\": 74.4, \"reason\": \"...\"}' (shown on the SUV card)")


def _add_min_volume_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-volume-ml", type=float, default=None, metavar="ML",
                        help="smallest lesion accepted, in ml (config min_lesion_volume_ml; 0: no minimum; default 0.5)")


def _key(args: argparse.Namespace) -> bytes:
    """The study key from --key-file or --key-env (never echoed)."""
    from .pseudonym import load_key

    return load_key(args.key_file or None, args.key_env or None)


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pseudonymisation key (one of)")
    group.add_argument("--key-file", default="", help="file holding the study key (at least 32 characters)")
    group.add_argument("--key-env", default="", help="environment variable holding the study key")


# --- user-facing commands -------------------------------------------------------------------------

def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import synthesize_cohort

    summary = synthesize_cohort(Path(args.out_dir), patients=args.patients, seed=args.seed,
                                shape=tuple(args.shape), sites=args.sites)
    print(f"synthetic cohort: {summary.n_patients} patients, {summary.n_lesions} lesions, {summary.n_files} files "
          f"in {summary.out_dir}")
    return 0


def _available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity (a cpuset), and ``SLURM_CPUS_PER_TASK`` when SLURM sets it.
    A container's CPU quota is not seen: ``--workers`` then says how many."""
    try:
        cpus = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus


def cmd_deid(args: argparse.Namespace) -> int:
    from .deid import DeidContext, deidentify_tree

    summary = deidentify_tree(Path(args.in_dir), Path(args.out_dir), DeidContext(key=_key(args), site=args.site),
                              workers=args.workers)
    print(summary.describe())
    if not summary.results:  # an empty folder (or a typo'd path that holds nothing): nothing was published
        raise PalmaresError("no file found in the input folder: nothing was de-identified")
    if not summary.count("written"):  # not a success: the reasons are above and, per file, in the audit folder
        raise PalmaresError(f"none of the {len(summary.results)} input files could be de-identified; the reason for "
                            "each is in deid_files.csv in the audit folder")
    return 0


def cmd_suv(args: argparse.Namespace) -> int:
    from .suv import suv_card_for_series

    card = suv_card_for_series(Path(args.series_dir))
    if args.json:
        print(json.dumps(card.to_json_dict(), indent=2, sort_keys=True, default=str))
    else:
        print(card.to_text())
    if card.refused_reason:
        print(f"SUV refused: {card.refused_reason}", file=sys.stderr)
        return 1
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from .features import extract_lesion, load_params, long_format
    from .files import atomic_path
    from .masks import image_reference, load_label_map
    from .volumes import read_study_image

    params = load_params(args.params)
    image = read_study_image(args.image)  # CT in HU, PET in SUVbw via its SUV card (SuvError when refused), as the DAG
    reference = image_reference(Path(args.image)) if Path(args.image).is_dir() else None
    label_map = load_label_map(Path(args.mask), image, roi=args.roi, label=args.label, reference=reference)
    labels = sorted(int(v) for v in set(sitk.GetArrayViewFromImage(label_map).ravel().tolist()) - {0})
    if not labels:
        raise PalmaresError(f"{args.mask}: the mask is empty on this image")
    rows = []
    for label in labels:
        lesion_id = args.roi or str(args.label or label)
        rows.extend(long_format(extract_lesion(image, label_map, label, params), lesion_id))
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["lesion_id", "feature", "ibsi_code", "aggregation", "value"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} feature values for {len(labels)} lesion(s) written to {args.out}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    """Write the IBSI 2 response map of one filter of a parameter file (``palmares.filters``)."""
    import SimpleITK as sitk

    from .features import filter_response
    from .files import atomic_path

    spec, response = filter_response(args.image, args.params, args.filter)
    with atomic_path(args.out) as tmp:
        try:
            sitk.WriteImage(response, str(tmp), True)
        except RuntimeError as exc:
            raise PalmaresError(f"cannot write {args.out} ({str(exc).strip().splitlines()[-1]}); give a .nii.gz, "
                                ".nii, .nrrd or .mha file") from exc
    print(f"{spec.name} response map written to {args.out}")
    return 0


def cmd_check_segmentation(args: argparse.Namespace) -> int:
    """Verdict on one segmentation: 0 OK, 1 refused, 2 usage error (one line on stderr).

    With --lesions, the rows of --site/--patient and the modality (--modality, else from the image: CT -> ct,
    PT -> pet) are the lesions; structures the table does not name are listed as ignored. --roi (repeatable)
    judges only the named structures.
    """
    from .masks import _image_description, check_segmentation

    def usage(message: str) -> int:
        print(f"palmares check-segmentation: {message}", file=sys.stderr)
        return 2

    lesions = None
    if args.lesions is None:
        if args.site or args.patient or args.modality:
            return usage("--site, --patient and --modality select rows of a lesion table: give --lesions too")
    else:
        if not args.site or not args.patient:
            return usage("--lesions needs --site and --patient (the patient's rows are the lesions)")
        image_path = Path(args.image)
        modality = args.modality
        if modality is None:
            described = _image_description(image_path) if image_path.is_dir() else "image"
            modality = {"CT": "ct", "PET": "pet"}.get(described)
            if modality is None:
                return usage("give --modality ct or pet: it cannot be read from "
                             + ("a volume file" if not image_path.is_dir() else f"an image of modality {described}"))
        from .intake import lesion_specs, read_lesion_table

        try:  # the DAG's reader and checks: one lesion table, read and judged one way
            table = read_lesion_table(Path(args.lesions))
        except OSError as exc:
            return usage(f"cannot read the lesion table {args.lesions}: {exc.strerror or exc}")
        except PalmaresError as exc:
            return usage(str(exc))
        rows = table[(table["site"] == args.site.strip().upper()) & (table["patient_id"] == args.patient.strip())]
        if rows.empty:
            return usage(f"the patient given by --patient is not in the lesion table for site {args.site}")
        try:
            lesions = lesion_specs(rows.drop(columns=["site", "patient_id"]).to_dict("records"), modality)
        except PalmaresError as exc:
            return usage(str(exc))
        if not lesions:
            return usage(f"the lesion table has no {modality.upper()} lesion for this patient of site {args.site}")
    if args.min_volume_ml is not None and args.min_volume_ml < 0:
        return usage(f"--min-volume-ml must be 0 or more (0: no minimum). Found: {args.min_volume_ml}")
    verdict = check_segmentation(Path(args.image), Path(args.segmentation), lesions, roi=args.roi,
                                 min_volume_ml=args.min_volume_ml)  # None: validate.DEFAULT_MIN_LESION_VOLUME_ML
    print(verdict.summary())
    return 0 if verdict.ok else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(Path(args.configfile), host=args.host, port=args.port,
          token_file=Path(args.token_file) if args.token_file else None)
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Release the lock a killed Snakemake run left in a run directory (never a live run's)."""
    from .runlock import LockInUse, unlock

    try:
        done = unlock(Path(args.directory), force=args.force)
    except LockInUse as error:
        print(f"palmares unlock: not unlocked: {error}", file=sys.stderr)
        return 1
    if done.removed:
        print(f"Unlocked {Path(args.directory).resolve()}: removed {len(done.removed)} lock file(s) left by a run "
              "that ended without unlocking. Run the same snakemake command again to resume.")
    else:
        print(f"{Path(args.directory).resolve()} is not locked: nothing to do.")
    return 0


def cmd_locate(args: argparse.Namespace) -> int:
    """Print the local patient id behind pseudonyms (or behind every failure of a site): PHI, for the centre only."""
    import pandas as pd

    from .pseudonym import pseudonym

    import io

    from .clinical import decode_export

    text, _encoding = decode_export(Path(args.ids_from).read_bytes())  # as the DAG reads exports: UTF-8 or cp1252
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    if "patient_id" not in table.columns:
        raise PalmaresError(f"{args.ids_from} has no patient_id column; give the clinical export, the lesion table "
                            "or work/phi/intake/patients.csv")
    if "site" in table.columns:
        table = table[table["site"].str.strip() == args.site]
    ids = sorted(set(table["patient_id"].str.strip()) - {""})
    if "patient" in table.columns:  # work/phi/intake/patients.csv: pseudonyms already there, no key needed
        local = dict(zip(table["patient"], table["patient_id"]))
    else:
        key = _key(args)
        local = {pseudonym(key, args.site, patient_id): patient_id for patient_id in ids}
    wanted = list(args.pseudonyms)
    reasons: dict[str, list[str]] = {}
    if args.failures:
        failures = pd.read_csv(args.failures, dtype=str, keep_default_na=False)
        failures = failures[failures["site"] == args.site]
        for row in failures.itertuples():
            lesion = f" lesion {row.lesion_id}" if getattr(row, "lesion_id", "") else ""
            reasons.setdefault(row.patient, []).append(f"{row.modality}{lesion} {row.stage}: {row.reason}")
        wanted += [p for p in reasons if p not in wanted]
    if not wanted:
        raise PalmaresError("give one or more pseudonyms, or --failures results/qc/failures.csv")
    missing = 0
    for name in wanted:
        patient_id = local.get(name)
        if patient_id is None:
            missing += 1
            print(f"{name}\t{args.site}\tnot a patient of {args.site} in {Path(args.ids_from).name}")
            continue
        for reason in reasons.get(name, [""]):
            print(f"{name}\t{args.site}\t{patient_id}" + (f"\t{reason}" if reason else ""))
    return 1 if missing == len(wanted) else 0


# --- DAG stages -------------------------------------------------------------------------------------

def stage_index(args: argparse.Namespace) -> int:
    from .index import index_tree, write_index

    table = index_tree(Path(args.raw_dir), args.site)
    write_index(table, Path(args.out))
    log.info("indexed %d files (%d usable) for site %s", len(table), int((table["status"] == "ok").sum()), args.site)
    return 0


def _clinical_inputs(args: argparse.Namespace):
    """The clinical export(s), schema and per-centre mapping named on the command line."""
    from .clinical import ClinicalInputs

    return ClinicalInputs.from_specs(args.clinical, args.schema, json.loads(args.mapping or "{}"))


def _add_clinical_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clinical", nargs="+", required=True, metavar="PATH|SITE=PATH",
                        help="the clinical export (one CSV), or one SITE=PATH per centre")
    parser.add_argument("--schema", required=True, help="declared clinical schema (config/clinical_schema.yaml)")
    parser.add_argument("--mapping", default="{}", help="per-centre export formats as JSON (config clinical_mapping)")


def stage_select(args: argparse.Namespace) -> int:
    from .clinical import therapy_starts
    from .index import read_index
    from .pseudonym import pseudonym
    from .select import BaselineWindow, Selection, select_series, selection_table

    key = _key(args)
    index = read_index(Path(args.index))
    inputs = _clinical_inputs(args)
    clinical = inputs.read()
    clinical = clinical[clinical["site"] == args.site]
    starts = therapy_starts(clinical)
    window = BaselineWindow(args.days_before, args.days_after)
    selections = []
    # only rows that pass validation are patients (an invalid row is a line of qc/clinical_issues.csv, no job)
    valid = sorted(patient_id for site, patient_id in inputs.valid_patients() if site == args.site)
    for patient_id in valid:
        patient = pseudonym(key, args.site, patient_id)
        for modality in args.modalities:
            start = starts.get((args.site, patient_id))
            if start is None:
                selections.append(Selection(args.site, patient_id, patient, modality, "failed",
                                            "no valid CDK4/6i start date in the clinical export"))
                continue
            selections.append(select_series(index, args.site, patient_id, patient, modality, start, window))
    from .files import atomic_path

    with atomic_path(args.out) as tmp:
        selection_table(selections).to_csv(tmp, index=False)
    return 0


def stage_intake(args: argparse.Namespace) -> int:
    from .intake import run_intake

    summary = run_intake([Path(p) for p in args.selection], [Path(p) for p in args.index], Path(args.segmentations),
                         Path(args.lesions), args.modalities, Path(args.records), Path(args.modalities_out))
    log.info("intake: %d patients, %d series, %d records changed, %d removed", summary.patients, summary.series,
             summary.changed, summary.removed)
    return 0


def stage_deid(args: argparse.Namespace) -> int:
    from .stages import run_deid

    run_deid(args.patient, Path(args.record), _key(args), Path(args.out_dir), Path(args.status), Path(args.audit))
    return 0


def stage_image(args: argparse.Namespace) -> int:
    from .stages import run_image

    run_image(args.patient, args.modality, Path(args.deid_status), Path(args.out), Path(args.status),
              args.suv_normalisations, args.suv_override)
    return 0


def stage_mask(args: argparse.Namespace) -> int:
    from .stages import run_mask
    from .validate import DEFAULT_MIN_LESION_VOLUME_ML

    run_mask(args.patient, args.modality, Path(args.record), Path(args.deid_status), Path(args.image_status),
             _key(args), Path(args.out), Path(args.status), Path(args.audit),
             min_volume_ml=DEFAULT_MIN_LESION_VOLUME_ML if args.min_volume_ml is None else args.min_volume_ml)
    return 0


def stage_features(args: argparse.Namespace) -> int:
    from .stages import run_features

    run_features(args.patient, args.modality, Path(args.image_status), Path(args.mask_status), Path(args.params),
                 Path(args.out), Path(args.status), qc_dir=Path(args.qc_dir) if args.qc_dir else None)
    return 0


def stage_patient(args: argparse.Namespace) -> int:
    from .stages.patient import WorkLayout, keep_freed_memory, run_patient
    from .validate import DEFAULT_MIN_LESION_VOLUME_ML

    keep_freed_memory()  # this process allocates and frees whole volumes, stage after stage
    params = dict(_pairs(args.params, "--params"))
    missing = [m for m in args.modalities if m not in params]
    if missing:
        raise ConfigError(f"--params names no parameter file for {', '.join(missing)}: give MODALITY=FILE for each")
    run_patient(args.patient, WorkLayout(Path(args.work_dir)), args.modalities, _key(args),
                {m: Path(path) for m, path in params.items()}, suv_normalisations=args.suv_normalisations,
                suv_override=args.suv_override,
                min_volume_ml=DEFAULT_MIN_LESION_VOLUME_ML if args.min_volume_ml is None else args.min_volume_ml)
    return 0


def _pairs(values: Sequence[str], option: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` arguments as pairs; anything else is a ConfigError naming ``option``."""
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(f"{option} takes NAME=VALUE arguments, e.g. ct=params/ct.yaml. Found: {value!r}")
        pairs.append((name, rest))
    return pairs


def stage_clinical(args: argparse.Namespace) -> int:
    from .clinical import Eligibility, prepare_clinical
    from .files import atomic_path

    inputs = _clinical_inputs(args)
    result = prepare_clinical(inputs.read(), _key(args), dt.date.fromisoformat(args.cutoff), inputs.schema,
                              Eligibility.from_config(json.loads(args.eligibility or "{}")))
    with atomic_path(args.out) as tmp:
        result.table.to_parquet(tmp, index=False)
    for frame, target in ((result.issues, args.issues), (result.flow, args.flow), (result.columns, args.columns)):
        with atomic_path(target) as tmp:
            frame.to_csv(tmp, index=False)
    log.info("clinical: %d rows, %d eligible patients, %d issues", len(result.flow), len(result.table),
             len(result.issues))
    return 0


def stage_tables(args: argparse.Namespace) -> int:
    from .tables import run_tables

    counts = run_tables(Path(args.status_dir), Path(args.clinical_dir), args.modalities, Path(args.results),
                        args.aggregates, Path(args.modalities_table) if args.modalities_table else None,
                        Path(args.qc_ratings) if args.qc_ratings else None)
    log.info("tables: %s", counts)
    return 0


def stage_harmonise(args: argparse.Namespace) -> int:
    from .harmonise import CombatSettings, run_harmonise

    record = run_harmonise(Path(args.results), args.modalities,
                           CombatSettings(tuple(args.covariates), tuple(args.lesion_covariates)))
    for row in record.itertuples():
        log.info("ComBat %s %s: %s, %d features (%s)", row.table, row.group, row.status, row.features_harmonised,
                 row.reason or "no row or feature left out")
    return 0


def stage_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from .report import render_report, write_provenance

    results = Path(args.results)
    combat = Path(args.combat) if args.combat else None
    render_report(results, combat, Path(args.status_dir) if args.status_dir else None,
                  Path(args.modalities_table) if args.modalities_table else None)
    config = json.loads(args.config_json) if args.config_json else {}
    counts = {"lesions": len(pd.read_parquet(results / "features" / "lesions.parquet")),
              "patients": len(pd.read_parquet(results / "tables" / "patients.parquet"))}
    params = dict(_pairs(args.params, "--params"))
    selected = None
    if args.modalities_table:  # the series behind this run's tables: selected, of patients still in the export
        table = pd.read_csv(args.modalities_table, dtype=str, keep_default_na=False)
        flow = pd.read_csv(results / "qc" / "patient_flow.csv", dtype=str, keep_default_na=False)
        current = set(flow.loc[~flow["status"].isin(["invalid", "no clinical row"]), "patient"])
        table = table[(table["status"] == "selected") & table["patient"].isin(current)]
        selected = set(zip(table["patient"], table["modality"]))
    write_provenance(results / "provenance.json", config, {k: Path(v) for k, v in params.items()},
                     [Path(p) for p in args.inputs], counts, combat,
                     Path(args.status_dir) if args.status_dir else None, selected)
    return 0


# --- parser -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="palmares", description="PALMARES-2 imaging pipeline: de-identification, "
                                     "SUV, segmentation import and IBSI-coded radiomic features.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic cohort (DICOM, segmentations, clinical CSV)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--patients", type=int, default=3, help="number of patients (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 64, 40], metavar=("X", "Y", "Z"),
                   help="CT matrix size (default 64 64 40)")
    p.add_argument("--sites", type=int, default=2, help="number of sites (default 2)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("deid", help="de-identify a DICOM tree (PS3.15 basic profile, keyed pseudonyms)")
    p.add_argument("in_dir", metavar="IN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--site", required=True, help="centre code, e.g. IT01")
    cpus = _available_cpus()
    p.add_argument("--workers", type=int, default=cpus, metavar="N",
                   help=f"processes de-identifying files at once (default: the CPUs available, here {cpus}); "
                        "the outputs are the same for any N")
    _add_key_options(p)
    p.set_defaults(func=cmd_deid)

    p = sub.add_parser("suv", help="SUV card of one PET series: inputs, branch, scale factor or refusal")
    p.add_argument("series_dir", metavar="PET_SERIES_DIR")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=cmd_suv)

    p = sub.add_parser("features", help="IBSI-coded features of one image and mask (long format CSV)")
    p.add_argument("--image", required=True, help="DICOM series folder or NIfTI/NRRD file")
    p.add_argument("--mask", required=True, help="NIfTI/NRRD label map, DICOM-SEG or RTSTRUCT")
    p.add_argument("--params", required=True, help="parameter file (params/*.yaml)")
    p.add_argument("--out", required=True, help="output CSV: lesion_id, feature, ibsi_code, aggregation, value")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--label", type=int, help="the structure's number in the file: NIfTI label value, SEG "
                                                 "segment number, RTSTRUCT ROI Number")
    which.add_argument("--roi", help="ROI name (RTSTRUCT) or segment label (SEG)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("filter", help="IBSI 2 filter response map of one image (NIfTI/NRRD out)",
                       description="Filter an image with one filter of a parameter file's palmares.filters block "
                                   "(IBSI 2: mean, laplacian_of_gaussian, laws, gabor, separable_wavelet, "
                                   "simoncelli_wavelet) and write the response map on the image's grid (float64).")
    p.add_argument("--image", required=True, help="DICOM series folder or NIfTI/NRRD file")
    p.add_argument("--params", required=True, help="parameter file with a palmares.filters block "
                                                   "(e.g. params/ibsi2/phase1_2A.yaml)")
    p.add_argument("--out", required=True, help="response map to write (.nii.gz, .nii, .nrrd or .mha)")
    p.add_argument("--filter", default="", metavar="NAME",
                   help="the filter's name (e.g. log_s3) when the file has several; required then")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("check-segmentation", help="does a segmentation fit its image? (non-zero exit when not)",
                       description="Validate a segmentation against its image. Exit 0 when it can be used, 1 when "
                                   "it is refused, 2 on a usage error. Structures that are not lesions (not in "
                                   "the lesion table, or not given by --roi) are listed as ignored.")
    p.add_argument("image", metavar="IMG", help="DICOM series folder or NIfTI file")
    p.add_argument("segmentation", metavar="SEG", help="NIfTI label map, DICOM-SEG or RTSTRUCT")
    p.add_argument("--roi", action="append", metavar="NAME",
                   help="judge only this ROI name / segment label (or lesion id with --lesions); repeat for "
                        "several, valued 1..n in the order given")
    p.add_argument("--lesions", metavar="LESIONS_CSV",
                   help="lesion table (site, patient_id, modality, lesion_id, label, roi_name, organ): the "
                        "patient's rows of this modality are the lesions")
    p.add_argument("--site", help="centre code of the patient in the lesion table (with --lesions)")
    p.add_argument("--patient", help="patient_id in the lesion table (with --lesions)")
    p.add_argument("--modality", choices=["ct", "pet"],
                   help="lesion table modality (default: from the image, CT -> ct, PT -> pet; required for a "
                        "volume file)")
    p.add_argument("--min-volume-ml", type=float, default=None, metavar="ML",
                   help="smallest lesion accepted, in ml (the config's min_lesion_volume_ml; 0: no minimum; "
                        "default 0.5, validate.DEFAULT_MIN_LESION_VOLUME_ML: a sphere of RECIST's 10 mm)")
    p.set_defaults(func=cmd_check_segmentation)

    p = sub.add_parser("locate", help="the local patient id behind a pseudonym (run at the centre: PHI)",
                       description="Print the site-local patient id behind pseudonyms, or behind every row of a "
                                   "failure table for one site. The output is PHI: run it at the centre that "
                                   "holds the key, never publish it.")
    p.add_argument("pseudonyms", nargs="*", metavar="PSEUDONYM", help="e.g. PAL2-7K3M9Q2X4B")
    p.add_argument("--site", required=True, help="the centre's site code, e.g. IT01")
    p.add_argument("--ids-from", required=True, metavar="CSV",
                   help="a CSV with the centre's patient_id column: the clinical export, the lesion table, or "
                        "work/phi/intake/patients.csv (which needs no key)")
    p.add_argument("--failures", default="", metavar="CSV", help="results/qc/failures.csv: every failure of the site")
    _add_key_options(p)
    p.set_defaults(func=cmd_locate)

    p = sub.add_parser("serve", help="segmentation upload page for radiologists (validation and preview at upload)",
                       description="Serve the upload page and its HTTP API for the study of a config file (the one "
                                   "Snakemake uses), from the folder Snakemake runs in. Bound to 127.0.0.1 unless "
                                   "--host says otherwise, which then needs --token-file.")
    p.add_argument("--configfile", default="config/config.yaml", help="the study config (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    p.add_argument("--token-file", default="", metavar="FILE",
                   help="one 'SITE TOKEN' line per radiologist or centre ('*' as SITE: every site); required for "
                        "any --host but 127.0.0.1")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("unlock", help="release the lock a killed Snakemake run left (never a live run's)",
                       description="After a hard kill of Snakemake (kill -9, out of memory, a closed login session) "
                                   "its lock stays and the next run refuses to start. This removes it when no run of "
                                   "the directory is still going: no Snakemake or job process working there on this "
                                   "host, and no run recorded on another host (--force once you checked that one "
                                   "has ended). Then the same snakemake command resumes.")
    p.add_argument("directory", nargs="?", default=".", help="the folder Snakemake runs in (default: this one)")
    p.add_argument("--force", action="store_true",
                   help="also when a run was recorded on another host (a login node): only after checking it ended")
    p.set_defaults(func=cmd_unlock)

    stage = sub.add_parser("stage", help="run one stage of the Snakemake DAG (used by workflow/rules)")
    stages = stage.add_subparsers(dest="stage", required=True, metavar="STAGE")

    s = stages.add_parser("index", help="index one site's raw DICOM export (headers only)")
    s.add_argument("--site", required=True)
    s.add_argument("--raw-dir", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=stage_index)

    s = stages.add_parser("select", help="choose baseline CT/PET series per patient of one site")
    s.add_argument("--site", required=True)
    s.add_argument("--index", required=True)
    _add_clinical_options(s)
    s.add_argument("--days-before", type=int, required=True)
    s.add_argument("--days-after", type=int, required=True)
    s.add_argument("--modalities", nargs="+", required=True)
    s.add_argument("--out", required=True)
    _add_key_options(s)
    s.set_defaults(func=stage_select)

    s = stages.add_parser("intake", help="per-patient intake records: selected series, segmentation files, lesions")
    s.add_argument("--selection", nargs="*", default=[], help="every site's series selection")
    s.add_argument("--index", nargs="*", default=[], help="every site's index")
    s.add_argument("--segmentations", required=True, help="root of the segmentation folders")
    s.add_argument("--lesions", required=True, help="the lesion table")
    s.add_argument("--modalities", nargs="+", required=True)
    s.add_argument("--records", required=True, help="folder of the records (PHI side) and patients.csv")
    s.add_argument("--modalities-out", required=True, help="public table of each patient's baseline modalities")
    s.set_defaults(func=stage_intake)

    s = stages.add_parser("deid", help="de-identify one patient's selected baseline series")
    s.add_argument("--patient", required=True)
    s.add_argument("--record", required=True, help="the patient's intake record")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--status", required=True)
    s.add_argument("--audit", required=True)
    _add_key_options(s)
    s.set_defaults(func=stage_deid)

    for name, func, extra in (("image", stage_image, ["--deid-status"]),
                              ("mask", stage_mask, ["--record", "--deid-status", "--image-status", "--audit"]),
                              ("features", stage_features, ["--image-status", "--mask-status", "--params"])):
        s = stages.add_parser(name, help=f"{name} stage for one patient and modality")
        s.add_argument("--patient", required=True)
        s.add_argument("--modality", required=True, choices=["ct", "pet"])
        for option in extra:
            s.add_argument(option, required=True)
        if name == "image":
            _add_suv_options(s)
        if name == "mask":
            _add_key_options(s)
            _add_min_volume_option(s)
        if name == "features":
            s.add_argument("--qc-dir", default=None, metavar="DIR",
                           help="folder for the QC report's pictures: every lesion before and after resampling, "
                                "the PET MIP (earlier pictures there are replaced); without it none are drawn")
        s.add_argument("--out", required=True)
        s.add_argument("--status", required=True)
        s.set_defaults(func=func)

    s = stages.add_parser("patient", help="every per-patient stage in one process (the DAG's job): de-identification, "
                                          "then image, mask and features of each modality; same outcome as the "
                                          "stages run in turn")
    s.add_argument("--patient", required=True)
    s.add_argument("--work-dir", required=True, help="the study's work folder (config work_dir)")
    s.add_argument("--modalities", nargs="+", required=True, choices=["ct", "pet"])
    s.add_argument("--params", nargs="+", required=True, metavar="MODALITY=FILE",
                   help="the parameter file of each modality, e.g. ct=params/ct.yaml pet=params/pet.yaml")
    _add_key_options(s)
    _add_suv_options(s)
    _add_min_volume_option(s)
    s.set_defaults(func=stage_patient)

    s = stages.add_parser("clinical", help="validate the clinical export, apply eligibility, derive outcomes")
    _add_clinical_options(s)
    s.add_argument("--eligibility", default="{}", help="eligibility rules as JSON (config eligibility)")
    s.add_argument("--cutoff", required=True)
    s.add_argument("--out", required=True, help="eligible patients with outcomes (Parquet, no dates)")
    s.add_argument("--issues", required=True, help="one row per problem of an excluded row (CSV)")
    s.add_argument("--flow", required=True, help="every export row: invalid, ineligible or eligible, and why (CSV)")
    s.add_argument("--columns", required=True, help="description and time basis of the published columns (CSV)")
    _add_key_options(s)
    s.set_defaults(func=stage_clinical)

    s = stages.add_parser("tables", help="build the lesion, patient, dictionary and failure tables")
    s.add_argument("--status-dir", required=True)
    s.add_argument("--clinical-dir", required=True,
                   help="the clinical stage's folder: clinical.parquet, issues.csv, flow.csv, columns.csv")
    s.add_argument("--modalities-table", default="", help="the intake's table of each patient's baseline modalities")
    s.add_argument("--modalities", nargs="+", required=True)
    s.add_argument("--aggregates", nargs="+", default=list(DEFAULT_AGGREGATES), choices=AGGREGATES,
                   help="per-modality lesion -> patient aggregates (config patient_aggregates)")
    s.add_argument("--results", required=True)
    s.add_argument("--qc-ratings", default="",
                   help="visual QC ratings (qc_ratings.csv from the QC report, config qc_ratings): rejected lesions "
                        "are left out of the tables and listed in qc/failures.csv")
    s.set_defaults(func=stage_tables)

    s = stages.add_parser("harmonise", help="ComBat by centre into lesions_combat / patients_combat (when enabled)")
    s.add_argument("--results", required=True)
    s.add_argument("--modalities", nargs="+", required=True)
    s.add_argument("--covariates", nargs="*", default=[], help="clinical covariates whose effects are preserved")
    s.add_argument("--lesion-covariates", nargs="*", default=["organ"], help="lesion covariates preserved")
    s.set_defaults(func=stage_harmonise)

    s = stages.add_parser("report", help="QC report and provenance")
    s.add_argument("--results", required=True)
    s.add_argument("--config-json", default="", help="the run's validated configuration as JSON")
    s.add_argument("--status-dir", default="", help="the stage status records (per-series and segmentation hashes)")
    s.add_argument("--modalities-table", default="", help="the intake's modality table (which series are inputs)")
    s.add_argument("--params", nargs="*", default=[], help="NAME=PATH of each parameter file")
    s.add_argument("--inputs", nargs="*", default=[], help="input files to hash")
    s.add_argument("--combat", default="", help="qc/combat.csv when ComBat ran (recorded in report and provenance)")
    s.set_defaults(func=stage_report)
    return parser


#: Set to a folder, every ``palmares`` command (a DAG job's too) runs under cProfile and writes its statistics there
#: as ``<command>[_<stage>][_<patient>][_<modality>].prof`` (benchmarks/bench_cohort.py --profile reads them).
PROFILE_ENV = "PALMARES_PROFILE_DIR"


def _profiled(args: argparse.Namespace, folder: Path) -> int:
    """Run the command under cProfile and dump its statistics into ``folder`` (named by pseudonyms, never PHI)."""
    import cProfile

    parts = [args.command, *(str(getattr(args, key)) for key in ("stage", "patient", "modality")
                             if getattr(args, key, None))]
    folder.mkdir(parents=True, exist_ok=True)
    with cProfile.Profile() as profile:
        try:
            return int(args.func(args) or 0)
        finally:
            profile.dump_stats(folder / ("_".join(parts) + ".prof"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``palmares`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # pyradiomics' GLCM logs a warning per lesion (a note that the matrix is symmetrical); importing pyradiomics
    # resets its package logger's level, not its glcm module's
    logging.getLogger("radiomics.glcm").setLevel(logging.ERROR)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module
    try:
        profile_dir = os.environ.get(PROFILE_ENV)
        if profile_dir:
            return _profiled(args, Path(profile_dir))
        return int(args.func(args) or 0)
    except PalmaresError as exc:
        print(f"palmares {args.command}: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, NotADirectoryError) as exc:
        print(f"palmares {args.command}: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
