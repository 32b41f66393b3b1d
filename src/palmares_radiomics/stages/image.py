"""The image stage: the patient's baseline volume, CT in HU, PET in SUVbw (refused, never guessed), and the
scanner's batch variables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .. import volumes
from ..columns import NORMALISATIONS, SCANNER
from ..errors import PalmaresError
from ..files import atomic_path
from ..records import OK, SKIPPED, StageStatus, read_status
from .status import guarded, skipped


def _number(value: Any) -> float | None:
    """A header decimal as a float, or None when absent or malformed (batch variables only; geometry is checked
    where the volume is read)."""
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def scanner_details(series_dir: Path) -> dict[str, Any]:
    """Batch variables of a (de-identified) series: manufacturer, model, kernel, slice thickness, pixel spacing,
    PET reconstruction and EARL status (the latter empty for CT and when the header does not state it)."""
    import pydicom

    from ..index import earl_status

    first = sorted(series_dir.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    out: dict[str, Any] = {}
    for column in SCANNER:  # each as its header states it; the numbers and EARL below
        value = ds.get(column.source) if column.source else None
        out[column.name] = "\\".join(map(str, value)) if isinstance(value, pydicom.multival.MultiValue) else (
            str(value) if value not in (None, "") else "")
    for name in ("pixel_spacing_mm", "slice_thickness_mm"):  # the first value (a header may hold one or two)
        out[name] = _number(out[name].split("\\")[0])  # batch variables, not the geometry (checked with the volume)
    out["earl"] = earl_status(out["reconstruction"], str(ds.get("SeriesDescription", ""))) \
        if ds.get("Modality") == "PT" else ""
    return out


def run_image(patient: str, modality: str, deid_status_path: Path, out_image: Path, status_path: Path,
              suv_normalisations: Sequence[str] = (), suv_override: str | dict[str, Any] | None = None) -> StageStatus:
    """The patient's baseline volume: CT in HU, PET converted to SUVbw (refused, never guessed).

    ``suv_normalisations`` (``sul``, ``suvbsa``): also compute those scale factors on the PET SUV card;
    the image stays SUVbw, the PET metrics report the extra normalisations. ``suv_override``: this patient's
    audited ``suv_overrides`` entry (a mapping, or its JSON text) for the PET SUV card (ignored for CT); an
    invalid entry fails the stage with the reason.
    """
    from ..errors import ConfigError

    def body() -> StageStatus:
        upstream = read_status(deid_status_path)
        if not upstream.ok:
            return skipped("image", upstream, modality)
        info = upstream.details["modalities"].get(modality, {})
        if info.get("status") != OK:
            return StageStatus("image", patient, modality, SKIPPED, info.get("reason", "no de-identified series"))
        series_dir = Path(upstream.outputs["dir"]) / modality / "image"
        from .. import suv

        override = None
        if suv_override and modality == "pet":
            try:
                entry = json.loads(suv_override) if isinstance(suv_override, str) else suv_override
                override = suv.SuvOverride.from_mapping(entry)
            except (ConfigError, ValueError, TypeError) as exc:
                raise ConfigError(f"suv_overrides entry of this patient: {exc}") from None
        # one path with `palmares features`: CT in HU, PET in SUVbw through the SUV card (refused, never guessed)
        image, card = volumes.read_study_image_and_card(series_dir, suv.SuvOptions(
            sul="sul" in suv_normalisations, suvbsa="suvbsa" in suv_normalisations, override=override),
            ct_pixel_type=sitk.sitkFloat32)
        scanner = scanner_details(series_dir)
        if modality == "pet":  # stated in the original header, read on the PHI side before de-identification
            scanner["earl"] = info.get("earl") or scanner["earl"]
        details: dict[str, Any] = {"scanner": scanner, "size": list(image.GetSize()),
                                   "spacing_mm": list(image.GetSpacing())}
        if modality == "pet":
            if card is None:
                raise PalmaresError("the selected PET series is not a PET series (its Modality is not PT)")
            card = suv.with_image_check(card, image)  # whole-image mean SUV plausibility, reported in QC
            details["suv_card"] = card.to_json_dict()
            details["unit"] = "SUVbw (g/ml)"
            details["suv_normalisations"] = [n for n in NORMALISATIONS if n in suv_normalisations]
        else:
            details["unit"] = "HU"
        with atomic_path(out_image) as tmp:
            volumes.write_volume(image, tmp, int16_when_lossless=modality == "ct")
        return StageStatus("image", patient, modality, OK, outputs={"image": str(out_image)}, details=details)

    return guarded("image", patient, modality, status_path, body)
