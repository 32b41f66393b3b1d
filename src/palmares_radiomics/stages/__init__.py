"""The DAG's per-patient stages, one module each: every stage reads its inputs, calls the library modules, and
always writes a status record, so that one failing patient is recorded with a reason and never stops the others.

- :mod:`.status`: writes the ``records.StageStatus`` every stage leaves, ``guarded`` (a failure becomes one), logs;
- :mod:`.deid`: ``run_deid``, the PHI boundary (the selected series; the segmentations for the mask stage);
- :mod:`.image`: ``run_image``, the baseline volume (CT in HU, PET in SUVbw) and the scanner's batch variables;
- :mod:`.mask`: ``run_mask``, the segmentation judged against its scan and imported as a label map;
- :mod:`.features`: ``run_features``, IBSI features and PET metrics per lesion (per-lesion outcomes included);
- :mod:`.qc`: the QC pictures the features stage draws;
- :mod:`.patient`: ``run_patient``, every stage of one patient in one process (the DAG's job), and ``WorkLayout``.

Each job is one process, so its imports are part of every patient's cost: libraries one stage alone needs
(pydicom, pandas, nibabel) are imported inside that stage's functions (benchmarks/bench_cohort.py).
"""

from ..records import FAILED, OK, SKIPPED, LesionOutcome, StageStatus, read_status
from .deid import run_deid
from .features import run_features
from .image import run_image
from .mask import run_mask
from .patient import WorkLayout, run_patient
from .status import guarded, skipped, write_status

__all__ = ["FAILED", "OK", "SKIPPED", "LesionOutcome", "StageStatus", "WorkLayout", "guarded", "read_status",
           "run_deid", "run_features", "run_image", "run_mask", "run_patient", "skipped", "write_status"]
