# Config validation and look-ups only (no stage logic, no key, no PHI read at parse time).
import json
import os
import re
import shlex
import sys
from functools import cache
from pathlib import Path

from snakemake.utils import validate

from palmares_radiomics.clinical import clinical_specs
from palmares_radiomics.configcheck import check_config, check_extras
from palmares_radiomics.intake import read_modalities, read_patients, tree_fingerprint
from palmares_radiomics.resources import series_voxels, stage_mem_mb, stage_runtime, stage_threads
from palmares_radiomics.runlock import forget_owner, record_owner

# first our own check, whose message names the key and the rule but never a value (the config may hold local
# ids or free text); then Snakemake's, which fills in the schema's defaults
check_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
validate(config, schema="../schemas/config.schema.yaml")
check_extras(config)  # a feature turned on whose optional dependency is missing: said now, not hours later

WORK = config["work_dir"]
PHI = f"{WORK}/phi"
RESULTS = config["results_dir"]
MODALITIES = config["modalities"]
KEY_OPTIONS = f"--key-file {config['key_file']}" if config["key_file"] else f"--key-env {config['key_env']}"
# Every job calls `palmares`, the one of the environment running this Snakemake (its Python's bin folder) comes
# first on the jobs' PATH, so that the README's `.venv/bin/snakemake ...` works with no PATH change.
_BIN = Path(sys.executable).parent
if (_BIN / "palmares").is_file():
    shell.prefix(
        f'set -euo pipefail; export PATH={shlex.quote(str(_BIN))}:"$PATH"; '.replace("{", "{{").replace("}", "}}")
    )


def _schema_path(path: str) -> str:
    """The clinical schema file: relative to the run folder, else to the pipeline's own folder (config/)."""
    here = Path(path)
    return str(here if here.is_absolute() or here.exists() else Path(workflow.basedir) / path)


CLINICAL_SOURCES = clinical_specs(config["clinical"])
CLINICAL_SCHEMA = _schema_path(config["clinical_schema"])
CLINICAL_FILES = [spec.split("=", 1)[1] if "=" in spec else spec for spec in CLINICAL_SOURCES]
CLINICAL_ARGS = (
    f"--clinical {' '.join(shlex.quote(s) for s in CLINICAL_SOURCES)} --schema {shlex.quote(CLINICAL_SCHEMA)}"
    f" --mapping {shlex.quote(json.dumps(config['clinical_mapping'], sort_keys=True))}"
)
# Sites: the sub-folders of the raw DICOM folder (one per centre export, named by its site code).
_FOLDERS = sorted(
    entry.name
    for entry in (Path(config["raw_dicom"]).iterdir() if Path(config["raw_dicom"]).is_dir() else [])
    if entry.is_dir()
)
SITES = [name for name in _FOLDERS if re.fullmatch(r"[A-Za-z0-9_-]+", name)]
if len(SITES) < len(_FOLDERS):  # never name them: a misplaced patient folder carries a name
    print(
        f"palmares: ignoring {len(_FOLDERS) - len(SITES)} folder(s) in {config['raw_dicom']} whose names are not "
        "site codes (letters, digits, '-', '_'): put each centre's export in a folder named by its site code",
        file=sys.stderr,
    )
INTAKE = f"{PHI}/intake"
MODALITIES_TABLE = f"{WORK}/intake/modalities.csv"


# Tiny jobs run in the main Snakemake process, also on a cluster (a scheduler round-trip costs more than they do).
localrules:
    clinical,
    intake,
    report,


wildcard_constraints:
    patient=r"PAL2-[0-9A-Z]{10}",
    modality="|".join(MODALITIES),
    site=r"[A-Za-z0-9_-]+",


#: ComBat outputs, only when harmonisation.combat is true (never applied silently).
COMBAT_OUTPUTS = (
    [
        f"{RESULTS}/features/lesions_combat.parquet",
        f"{RESULTS}/tables/patients_combat.parquet",
        f"{RESULTS}/qc/combat.csv",
    ]
    if config["harmonisation"]["combat"]
    else []
)


def final_outputs():
    """The published results (DESIGN.md, Outputs)."""
    return COMBAT_OUTPUTS + [
        f"{RESULTS}/features/lesions.parquet",
        f"{RESULTS}/tables/patients.parquet",
        f"{RESULTS}/tables/dictionary.csv",
        f"{RESULTS}/qc/failures.csv",
        f"{RESULTS}/qc/report.html",
        f"{RESULTS}/provenance.json",
    ]


# --- what the intake found (read after the intake checkpoint has run; see palmares_radiomics.intake) ---


def _stamp(path: str):
    """(mtime, size) of a file, or None: cache keys that change when the intake rewrites the file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_size


@cache
def _read_site_of(stamp) -> dict:
    return read_patients(Path(f"{INTAKE}/patients.csv"))


@cache
def _read_pairs(stamp) -> tuple:
    return tuple(read_modalities(Path(MODALITIES_TABLE)))


def site_of() -> dict:
    """pseudonym -> site, from the intake's PHI-side patient list (empty before the intake has run)."""
    return _read_site_of(_stamp(f"{INTAKE}/patients.csv"))


def patient_modalities() -> tuple:
    """(patient, modality) of every selected baseline series, from the intake's public modality table."""
    return _read_pairs(_stamp(MODALITIES_TABLE))


def intake_done():
    """Defer the caller until the intake checkpoint has run (Snakemake then re-evaluates the DAG)."""
    checkpoints.intake.get()


@cache
def _read_modalities_of(stamp) -> dict:
    """pseudonym -> its baseline modalities, from the intake's modality table (one read per version of it)."""
    modalities = {}
    for patient, modality in _read_pairs(stamp):
        modalities.setdefault(patient, []).append(modality)
    return modalities


def patient_records(wildcards):
    """Input function of the per-patient job: the intake's records of the patient and of each of its series,
    each rewritten only when its content changes."""
    intake_done()
    modalities = _read_modalities_of(_stamp(MODALITIES_TABLE)).get(wildcards.patient, [])
    return [f"{INTAKE}/{wildcards.patient}.json"] + [f"{INTAKE}/{wildcards.patient}_{m}.json" for m in modalities]


def study_statuses(wildcards):
    """Input function of the tables: every status record of every patient (and modality) the intake found."""
    intake_done()
    pairs = patient_modalities()
    return [f"{WORK}/status/deid/{p}.json" for p in sorted({p for p, _ in pairs})] + [
        f"{WORK}/status/{stage}/{p}_{m}.json" for stage in ("image", "mask", "features") for p, m in pairs
    ]


def tree_params(root):
    """Params function: the fingerprint of an input tree (names, sizes, times): a changed tree reruns the job."""
    return lambda wildcards: tree_fingerprint(Path(root.format(**wildcards)))


def work_of_intake_table(wildcards, input):
    """Params function: the work folder, from the rule's ``modalities`` input (work_dir/intake/modalities.csv)."""
    return Path(input.modalities).parents[1]


def results_of_lesion_table(wildcards, output):
    """Params function: the results folder, from the rule's ``lesions`` output (results_dir/features/*.parquet)."""
    return Path(output.lesions).parents[1]


# --- cluster resources (sizes come from the headers-only series selection; see palmares_radiomics.resources) ---


def _voxels(wildcards) -> int:
    """Voxels of the job's series: its modality's, or all modalities' for a per-patient job."""
    site = site_of().get(wildcards.patient)
    if site is None:
        return 0
    selection = Path(f"{PHI}/selection/{site}.csv")
    modalities = [wildcards.modality] if "modality" in wildcards.keys() else MODALITIES
    return sum(series_voxels(selection, wildcards.patient, m) for m in modalities)


def scaled_mem_mb(stage):
    """Resource callable: memory (MB) of a ``stage`` job, scaled by its series size and the attempt."""
    return lambda wildcards, attempt: stage_mem_mb(stage, _voxels(wildcards), attempt)


def scaled_runtime(stage):
    """Resource callable: wall time (minutes) of a ``stage`` job, scaled by its series size and the attempt."""
    return lambda wildcards, attempt: stage_runtime(stage, _voxels(wildcards), attempt)


# --- resuming after a hard kill: `palmares unlock` (palmares_radiomics.runlock) reads these records ---


onstart:
    record_owner(Path(".snakemake"))


onsuccess:
    forget_owner(Path(".snakemake"))


onerror:
    forget_owner(Path(".snakemake"))
