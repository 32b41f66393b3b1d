# Config validation and look-ups only (no stage logic).
from pathlib import Path

from snakemake.utils import validate

from palmares_radiomics.clinical import read_export
from palmares_radiomics.pseudonym import load_key, pseudonym


validate(config, schema="../schemas/config.schema.yaml")

WORK = config["work_dir"]
PHI = f"{WORK}/phi"
RESULTS = config["results_dir"]
MODALITIES = config["modalities"]
KEY_OPTIONS = f"--key-file {config['key_file']}" if config["key_file"] else f"--key-env {config['key_env']}"

# Patients are the clinical export's rows, named by pseudonym (the key never leaves this process).
_EXPORT = read_export(Path(config["clinical"]))
_KEY = load_key(config["key_file"] or None, config["key_env"] or None)
SITES = sorted(set(_EXPORT["site"]) - {""})
PATIENTS = sorted({pseudonym(_KEY, s, p) for s, p in zip(_EXPORT["site"], _EXPORT["patient_id"]) if s and p})
del _KEY


wildcard_constraints:
    patient=r"PAL2-[0-9A-Z]{10}",
    modality="|".join(MODALITIES),
    site=r"[A-Za-z0-9_-]+",


def final_outputs():
    """The published results (DESIGN.md, Outputs)."""
    return [
        f"{RESULTS}/features/lesions.parquet",
        f"{RESULTS}/tables/patients.parquet",
        f"{RESULTS}/tables/dictionary.csv",
        f"{RESULTS}/qc/failures.csv",
        f"{RESULTS}/qc/report.html",
        f"{RESULTS}/provenance.json",
    ]
