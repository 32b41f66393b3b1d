"""Filtering an image: :func:`apply` turns a SimpleITK volume into the response map of one :class:`FilterSpec`."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import ConfigError, FeatureExtractionError
from .grid import Dimensions
from .spec import FilterSpec


def filter_array(spec: FilterSpec, array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """The response map of a (z, y, x) float64 array with voxel spacing ``spacing_zyx`` (mm)."""
    return spec.kernel.response(array, spacing_zyx, spec.dimensions.axes, spec.boundary)


def apply(spec: FilterSpec, image: sitk.Image) -> sitk.Image:
    """The response map of ``image``: same grid (size, spacing, origin, direction), float64.

    Filters run along the image's index axes (x, y, z as stored); physical settings (sigma, lambda in mm) are
    converted with the image spacing. A 2-D image is filtered as a single slice and needs a 2D filter.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ConfigError(f"filter {spec.name}: the image has {image.GetNumberOfComponentsPerPixel()} components per "
                          "voxel; filters take a scalar image")
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    if image.GetDimension() == 2:
        if spec.dimensions is not Dimensions.TWO_D:
            raise ConfigError(f"filter {spec.name} is 3D but the image is 2-D: use dimensions: 2D")
        array = array[np.newaxis]
        spacing = (1.0, *reversed(image.GetSpacing()))
    elif image.GetDimension() == 3:
        spacing = tuple(reversed(image.GetSpacing()))
    else:
        raise ConfigError(f"filter {spec.name}: images of {image.GetDimension()} dimensions cannot be filtered")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise FeatureExtractionError(f"filter {spec.name}: the image holds {bad} non-finite voxels (NaN or infinite), "
                                     "which the filter would spread; check the image conversion")
    response = filter_array(spec, array, spacing)  # type: ignore[arg-type]
    out = sitk.GetImageFromArray(response[0] if image.GetDimension() == 2 else response)
    out.CopyInformation(image)
    return out
