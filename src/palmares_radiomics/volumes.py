"""Image volumes: read a DICOM series or a NIfTI/NRRD file into a SimpleITK image."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from .errors import DicomReadError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names a single-file volume format (NIfTI, NRRD, MetaImage)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def read_image(path: str | os.PathLike[str], pixel_type: int = sitk.sitkFloat64) -> sitk.Image:
    """Read a DICOM series folder, or a NIfTI/NRRD/MetaImage file, as a 3-D image of ``pixel_type``.

    DICOM slices are ordered by position (GDCM) and each slice's RescaleSlope/Intercept is applied,
    so CT comes out in HU and PET in the stored activity units. A folder with several series is
    refused: the caller must say which one.
    """
    path = Path(path)
    if path.is_dir():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise DicomReadError(f"{path}: no DICOM image series found in this folder")
        if len(series) > 1:
            raise DicomReadError(f"{path}: {len(series)} DICOM series in one folder; put one series per folder")
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.SetOutputPixelType(pixel_type)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise DicomReadError(f"{path}: the DICOM series could not be read ({str(exc).strip().splitlines()[-1]})") from exc
    if not path.is_file():
        raise DicomReadError(f"{path}: no such file or folder")
    try:
        return sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise DicomReadError(f"{path}: not a readable image file ({str(exc).strip().splitlines()[-1]})") from exc
