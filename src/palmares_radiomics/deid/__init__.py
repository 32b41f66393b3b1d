"""DICOM de-identification: PS3.15 Annex E Basic Profile, table-driven, that keeps SUV and references intact.

Each file's header goes through PS3.15 Table E.1-1 under the options we apply (dates shifted by a keyed per-patient
number of days, patient characteristics and SUV inputs kept, descriptors cleaned); UIDs are remapped and the patient
renamed with the study key, pixel data is never touched, and what may carry burned-in text or a face is quarantined.
One module per concern, each importing only the modules listed before it:

* ``table``: the Table E.1-1 action table compiled under the options, safe private attributes, unlisted elements.
* ``records``: what de-identification reports: audit of one object, result of one file, summary, reason codes.
* ``engine``: the context (key, site, options) and the actions on one dataset: checks, cleaning, E.1.1 attributes.
* ``writer``: one file in, one file out: the pixel-copy path (pixel data copied byte for byte) and the full path.
* ``tree``: a whole folder: walking, duplicates, the key-fingerprint marker, the PHI-free manifest and the audit.

The public names are importable from here (``from palmares_radiomics.deid import DeidContext, deidentify_tree``);
private helpers (leading underscore) only from their module.
"""

from .engine import DeidContext, deidentify_dataset, output_path
from .records import REASONS, DeidAudit, DeidResult, DeidSummary
from .table import (
    ATTRIBUTE_TYPES,
    DEFAULT_OPTIONS,
    DESCRIPTOR_POLICY,
    KEEP_TEXT,
    LOCAL_RULES,
    METHOD_CODES,
    PROFILE_VERSION,
    SAFE_PRIVATE,
    SAFE_PRIVATE_TABLE_FILE,
    STANDARD_CODING_SCHEMES,
    SUPPORTED_OPTIONS,
    TABLE_FILE,
    TEXT_VRS,
    ActionTable,
    LevelPlan,
    Rule,
    SafePrivate,
    Step,
    load_action_table,
    packaged_table_path,
)
from .tree import OUTPUT_MARKER, default_audit_dir, deidentify_tree, key_fingerprint
from .writer import deidentify_file

__all__ = [
    "ATTRIBUTE_TYPES",
    "DEFAULT_OPTIONS",
    "DESCRIPTOR_POLICY",
    "KEEP_TEXT",
    "LOCAL_RULES",
    "METHOD_CODES",
    "OUTPUT_MARKER",
    "PROFILE_VERSION",
    "REASONS",
    "SAFE_PRIVATE",
    "SAFE_PRIVATE_TABLE_FILE",
    "STANDARD_CODING_SCHEMES",
    "SUPPORTED_OPTIONS",
    "TABLE_FILE",
    "TEXT_VRS",
    "ActionTable",
    "DeidAudit",
    "DeidContext",
    "DeidResult",
    "DeidSummary",
    "LevelPlan",
    "Rule",
    "SafePrivate",
    "Step",
    "default_audit_dir",
    "deidentify_dataset",
    "deidentify_file",
    "deidentify_tree",
    "key_fingerprint",
    "load_action_table",
    "output_path",
    "packaged_table_path",
]
