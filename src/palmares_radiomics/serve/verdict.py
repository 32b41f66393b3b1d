"""Judge one uploaded segmentation against the patient's baseline image: the verdict the page shows.

The judgement is the study's one validation (:func:`palmares_radiomics.validate.validate_segmentation`,
the same as ``palmares check-segmentation`` and the DAG's mask stage), run on the PHI side against the
baseline series the intake selected, with the lesion table's rows of that patient and modality; then,
for an accepted segmentation, one preview per lesion (:mod:`palmares_radiomics.preview`) and a stack of
them all, drawn after the verdict has been answered. Fixes name the series to export from ("the baseline CT
(series 3, 2024-01-12)"): the page shows them only to the patient's own centre.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from ..errors import LesionTableError
from .study import Entry, Study


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one upload: what the API answers (without version and URLs) and, when accepted, what the
    previews are drawn from (:func:`render_previews`, run after the answer has gone out)."""

    accepted: bool
    kind: str
    problems: list[dict[str, str]]
    warnings: list[dict[str, str]]
    lesions: list[dict[str, Any]]
    ignored: list[str]
    image: sitk.Image | None = None
    label_map: sitk.Image | None = None

    @property
    def preview_names(self) -> list[str]:
        """The PNG files :func:`render_previews` writes: one per lesion and their stack, ``preview.png``."""
        if self.label_map is None or not self.lesions:
            return []
        return [f"lesion_{row['label']}.png" for row in self.lesions] + ["preview.png"]

    def history_entry(self, upload_id: str, sha256: str, size: int) -> dict[str, Any]:
        """What the version history keeps of this attempt (no client file name, no image data)."""
        return {"upload_id": upload_id, "uploaded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "kind": self.kind, "sha256": sha256, "size": size, "problems": self.problems,
                "warnings": self.warnings, "lesions": self.lesions, "ignored": self.ignored,
                "previews": self.preview_names}


def _problem(code: str, message: str, fix: str) -> dict[str, str]:
    """A problem as the page shows it: message and fix each a sentence of its own (a few validation messages
    lead into their fix with ':' or ';', which reads well on one line but not on two)."""
    message = message.rstrip(" :;,")
    if message and message[-1] not in ".!?)":
        message += "."
    return {"code": code, "message": message, "fix": fix[:1].upper() + fix[1:]}


def judge(study: Study, entry: Entry, upload: Path) -> Judgement:
    """Validate ``upload`` for ``entry`` against the patient's baseline image and the lesion table."""
    from ..validate import validate_segmentation

    try:
        lesions = study.lesions(entry)
    except LesionTableError as exc:
        return Judgement(False, "", [_problem("lesion_table", f"The lesion table cannot be used: {exc}.",
                                              "Ask the study team to correct the lesion table, then upload again.")],
                         [], [], [])
    baseline = study.baseline(entry)
    validation = validate_segmentation(upload, baseline.image, lesions or None, modality=entry.modality,
                                       reference=baseline.reference, min_volume_ml=study.min_volume_ml,
                                       series_hint=baseline.series_hint)
    problems = [_problem(p.code, p.message, p.fix) for p in validation.problems]
    warnings = [_problem(p.code, p.message, p.fix) for p in validation.warnings]
    if baseline.warning:
        warnings.append(_problem("suv_unavailable", baseline.warning,
                                 "Tell the study team; the segmentation itself needs no change."))
    rows = [{"lesion_id": s.lesion_id, "roi": s.structure, "label": s.label, "voxels": s.voxels,
             "volume_ml": round(s.volume_ml, 3)} for s in validation.lesions]
    drawable = validation.ok and not baseline.warning  # no SUV, no honest PET picture
    return Judgement(validation.ok, validation.kind, problems, warnings, rows, list(validation.ignored),
                     baseline.image if drawable else None, validation.label_map if drawable else None)


def render_previews(study: Study, entry: Entry, judgement: Judgement, folder: Path) -> list[Path]:
    """Draw one preview per lesion (three orthogonal slices through its centre, contour over the CT window or
    the fixed PET SUV scale) and their stack ``preview.png`` into ``folder``; the same renderer as the QC report."""
    from ..preview import display_range, lesion_previews

    if judgement.label_map is None or judgement.image is None or not judgement.lesions:
        return []
    modality = entry.modality.upper()
    labels = [row["label"] for row in judgement.lesions]
    names = {row["label"]: f"{modality} lesion {row['lesion_id'] or row['label']} · {row['roi']}"
             for row in judgement.lesions}
    made = lesion_previews(judgement.image, judgement.label_map, labels, entry.modality, folder,
                           display=display_range(study.params.get(entry.modality), entry.modality), names=names)
    pngs = [made[label] for label in labels]
    return pngs + [_stack(pngs, folder / "preview.png")]


def _stack(pngs: list[Path], out: Path) -> Path:
    """One PNG with the lesion previews one under the other (the API's single ``preview``), white where one is
    narrower than the widest."""
    from PIL import Image

    images = []
    for path in pngs:
        with Image.open(path) as png:
            images.append(png.convert("RGB"))
    canvas = Image.new("RGB", (max(img.width for img in images), sum(img.height for img in images)), "white")
    top = 0
    for img in images:
        canvas.paste(img, (0, top))
        top += img.height
    canvas.save(out, format="PNG")
    return out
