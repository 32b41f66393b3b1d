"""Writing the status record every stage writes (``records.StageStatus``), and the guard that turns one patient's
failure into one.

Every stage output declared to Snakemake is a small JSON status (``StageStatus``): ``ok`` with the
paths of its products, or ``failed``/``skipped`` with a reason a person can act on. A stage whose
upstream failed writes ``skipped`` and carries the upstream reason forward, so the failure table
names the first stage that failed. Reasons never contain PHI: they come from the pipeline's own
messages; anything unexpected is reported by type only and logged in full in the PHI-area log.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ..errors import PalmaresError
from ..files import write_json
from ..records import FAILED, SKIPPED, StageStatus

log = logging.getLogger(__name__)


def write_status(path: Path, status: StageStatus) -> StageStatus:
    """Write a status record atomically and return it."""
    write_json(path, asdict(status))
    return status


def skipped(stage: str, upstream: StageStatus, modality: str = "") -> StageStatus:
    """The status of a stage that cannot run because ``upstream`` did not succeed."""
    reason = upstream.reason if upstream.status == SKIPPED else f"{upstream.stage}: {upstream.reason}"
    return StageStatus(stage, upstream.patient, modality or upstream.modality, SKIPPED, reason)


def guarded(stage: str, patient: str, modality: str, status_path: Path, body) -> StageStatus:
    """Run ``body()`` (returning a StageStatus); turn a data failure into a ``failed`` status.

    ``PalmaresError`` messages are written as they are (they are PHI-free by construction); any
    other exception is reported by type only, its traceback going to the job's log (a last resort:
    expected failures are PalmaresError subclasses). An infrastructure failure
    (:func:`~palmares_radiomics.errors.is_infrastructure_failure`: disk full, I/O error, no permission on the
    work area, out of memory) is re-raised and no status is written (an earlier one is removed), so the job
    fails and the same command runs the stage again once the machine is fixed, instead of recording the
    patient as failed for good. The outcome is logged in one line (``image PAL2-… ct: ok``), whoever ran the stage.
    """
    from ..errors import is_infrastructure_failure

    try:
        status = body()
    except Exception as exc:  # noqa: BLE001 - one bad patient must not stop the run (MemoryError is one too)
        if is_infrastructure_failure(exc):
            log.error("stage %s of %s %s stopped by an infrastructure error (%s: %s); no status written: the job "
                      "fails and the same command runs it again once the machine is fixed",
                      stage, patient, modality, type(exc).__name__, getattr(exc, "strerror", None) or exc)
            try:
                Path(status_path).unlink(missing_ok=True)
            except OSError:
                pass
            raise
        if isinstance(exc, PalmaresError):
            status = StageStatus(stage, patient, modality, FAILED, str(exc))
        else:
            log.error("unexpected error in stage %s:\n%s", stage, traceback.format_exc())
            status = StageStatus(stage, patient, modality, FAILED,
                                 f"unexpected {type(exc).__name__} in stage {stage}; see the job log")
    log.info("%s: %s %s", " ".join(part for part in (stage, patient, modality) if part), status.status, status.reason)
    return write_status(status_path, status)


@contextlib.contextmanager
def stage_log(path: Path) -> Iterator[None]:
    """Copy this process's log records to ``path`` while the block runs (a stage's own log file, beside the
    job's whole log on stderr)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
