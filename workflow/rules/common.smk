# Config validation and look-ups only (no stage logic).
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from palmares_radiomics.clinical import ClinicalInputs, clinical_specs
from palmares_radiomics.pseudonym import load_key, pseudonym
from palmares_radiomics.resources import series_voxels, stage_mem_mb, stage_runtime, stage_threads
from palmares_radiomics.runlock import forget_owner, record_owner, release_stale_lock


validate(config, schema="../schemas/config.schema.yaml")

WORK = config["work_dir"]
PHI = f"{WORK}/phi"
RESULTS = config["results_dir"]
MODALITIES = config["modalities"]
KEY_OPTIONS = f"--key-file {config['key_file']}" if config["key_file"] else f"--key-env {config['key_env']}"

# Patients are the clinical export's valid rows, named by pseudonym (the key never leaves this process).
def _schema_path(path: str) -> str:
    """The clinical schema file: relative to the run folder, else to the pipeline's own folder (config/)."""
    here = Path(path)
    return str(here if here.is_absolute() or here.exists() else Path(workflow.basedir) / path)


CLINICAL_SOURCES = clinical_specs(config["clinical"])
CLINICAL_SCHEMA = _schema_path(config["clinical_schema"])
_CLINICAL = ClinicalInputs.from_specs(CLINICAL_SOURCES, CLINICAL_SCHEMA, config["clinical_mapping"])
CLINICAL_FILES = _CLINICAL.paths
CLINICAL_ARGS = (
    f"--clinical {' '.join(shlex.quote(s) for s in CLINICAL_SOURCES)} --schema {shlex.quote(CLINICAL_SCHEMA)}"
    f" --mapping {shlex.quote(json.dumps(config['clinical_mapping'], sort_keys=True))}"
)
_KEY = load_key(config["key_file"] or None, config["key_env"] or None)
# Only rows that pass validation: an invalid row (say site "it01") is no job, only a line of qc/clinical_issues.csv.
_VALID = _CLINICAL.valid_patients()
SITES = sorted({s for s, _ in _VALID})
SITE_OF = {pseudonym(_KEY, s, p): s for s, p in _VALID}
PATIENTS = sorted(SITE_OF)
del _KEY


# Tiny jobs run in the main Snakemake process, also on a cluster (a scheduler round-trip costs more than they do).
localrules:
    clinical,
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


def site_file(pattern):
    """Input function: ``pattern`` filled with the patient's own site, so a patient's jobs wait only for
    that site's index and selection (not every site's) and the DAG stays small (24 sites x 3,500 patients)."""
    return lambda wildcards: pattern.format(site=SITE_OF[wildcards.patient])


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


# --- cluster resources (sizes come from the headers-only series selection; see palmares_radiomics.resources) ---


def _voxels(wildcards) -> int:
    """Voxels of the job's series: its modality's, or all modalities' for a per-patient job."""
    selection = Path(f"{PHI}/selection/{SITE_OF[wildcards.patient]}.csv")
    modalities = [wildcards.modality] if "modality" in wildcards.keys() else MODALITIES
    return sum(series_voxels(selection, wildcards.patient, m) for m in modalities)


def scaled_mem_mb(stage):
    """Resource callable: memory (MB) of a ``stage`` job, scaled by its series size and the attempt."""
    return lambda wildcards, attempt: stage_mem_mb(stage, _voxels(wildcards), attempt)


def scaled_runtime(stage):
    """Resource callable: wall time (minutes) of a ``stage`` job, scaled by its series size and the attempt."""
    return lambda wildcards, attempt: stage_runtime(stage, _voxels(wildcards), attempt)


# --- resuming after a hard kill (see palmares_radiomics.runlock) ---

if release_stale_lock(Path(".snakemake")):
    print("palmares: removed the lock left by a killed run of this directory; resuming", file=sys.stderr)


# Each run records the lock files it has just created (Snakemake keeps their paths in the persistence
# object's `_lockfile`; none with --nolock) and drops its record when it ends by itself.
onstart:
    record_owner(Path(".snakemake"), getattr(workflow.persistence, "_lockfile", {}).values())


onsuccess:
    forget_owner(Path(".snakemake"))


onerror:
    forget_owner(Path(".snakemake"))
