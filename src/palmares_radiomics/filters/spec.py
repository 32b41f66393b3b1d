"""The ``palmares.filters`` block of a parameter file: one :class:`FilterSpec` per filter, validated on reading.

Each entry is a mapping in IBSI 2 terms with every setting explicit (no defaults), for example::

    palmares:
      filters:
        - filter: laplacian_of_gaussian
          sigma_mm: 3.0
          truncation: 4.0
          boundary: mirror
          dimensions: 3D

Keys every filter takes: ``filter`` (the family), ``boundary`` (constant, nearest, periodic, mirror) and
``dimensions`` (2D: each axial slice on its own; 3D: the volume). The family's own keys are listed in its module
(:mod:`.mean`, :mod:`.log`, :mod:`.laws`, :mod:`.gabor`, :mod:`.wavelets`, :mod:`.simoncelli`). Unknown keys,
missing keys and values out of range raise :class:`ConfigError` naming the file, the filter, the key, the value
found and the values allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Union

import yaml

from ..errors import ConfigError
from .boundary import Boundary
from .gabor import GaborFilter
from .grid import Dimensions
from .laws import LawsFilter
from .log import LaplacianOfGaussianFilter
from .mean import MeanFilter
from .reader import BlockReader
from .simoncelli import SimoncelliFilter
from .wavelets import SeparableWaveletFilter

FilterKernel = Union[MeanFilter, LaplacianOfGaussianFilter, LawsFilter, GaborFilter, SeparableWaveletFilter,
                     SimoncelliFilter]

#: ``filter:`` value -> settings class.
FAMILIES: dict[str, type[FilterKernel]] = {cls.FILTER: cls for cls in (
    MeanFilter, LaplacianOfGaussianFilter, LawsFilter, GaborFilter, SeparableWaveletFilter, SimoncelliFilter)}
COMMON_KEYS = ("filter", "boundary", "dimensions")
#: First word of a filter's name (:attr:`FilterSpec.name`) -> its family (the ``filter:`` value).
NAME_PREFIXES = {"mean": "mean", "log": "laplacian_of_gaussian", "laws": "laws", "gabor": "gabor",
                 "wavelet": "separable_wavelet", "simoncelli": "simoncelli_wavelet"}


def family_of(name: str) -> type[FilterKernel] | None:
    """The filter family (kernel class: ``FILTER``, ``IBSI_CODE``) a filter name belongs to, None if none."""
    family = NAME_PREFIXES.get(name.partition("_")[0])
    return FAMILIES[family] if family else None


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One validated filter: the family's settings (``kernel``), the boundary condition and the dimensionality.

    ``name`` is the filter's id in feature column names: the family's label (``log_s3``,
    ``laws_E5L5S5_energy_d7_invar_max``, ``wavelet_db2_LHL_l1``, ...) with ``_2d`` appended for 2D filters. The
    boundary condition is not part of it (two filters of one file that differ only there are refused).
    """

    kernel: FilterKernel
    boundary: Boundary
    dimensions: Dimensions

    @property
    def family(self) -> str:
        """The ``filter:`` value (``laplacian_of_gaussian``, ...)."""
        return self.kernel.FILTER

    @property
    def ibsi_code(self) -> str:
        """The IBSI 2 code of the filter family."""
        return self.kernel.IBSI_CODE

    @property
    def name(self) -> str:
        """Short id used in feature column names."""
        return self.kernel.label() + ("_2d" if self.dimensions is Dimensions.TWO_D else "")

    def describe(self) -> str:
        """The filter in IBSI 2 terms, every setting: ``laplacian_of_gaussian (IBSI 2 L6PA): sigma_mm 1.5,
        truncation 4.0; boundary mirror; 3D`` (the data dictionary's description of its feature columns)."""
        settings = ", ".join(f"{f.name} {_setting(getattr(self.kernel, f.name))}" for f in fields(self.kernel))
        return (f"{self.family} (IBSI 2 {self.ibsi_code}): {settings}; boundary {self.boundary.value}; "
                f"{self.dimensions.value}")

    def radius_voxels(self, spacing_xyz: Sequence[float]) -> tuple[int, int, int]:
        """Kernel half-width in voxels along x, y, z on a grid of ``spacing_xyz`` mm (0 along an unfiltered axis)."""
        spacing_zyx = tuple(float(s) for s in reversed(tuple(spacing_xyz)))
        axes = self.dimensions.axes
        radius_zyx = [0, 0, 0]
        for axis, r in zip(axes, self.kernel.radius(spacing_zyx, axes)):
            radius_zyx[axis] = r
        return radius_zyx[2], radius_zyx[1], radius_zyx[0]

    def apron_mm(self, spacing: Sequence[float]) -> tuple[float, float, float]:
        """Margin (mm along x, y, z) a crop needs around the region of interest so that filtering the crop gives
        the response of the whole image inside that region: the kernel's reach, all stages and energy windows
        included. ``spacing`` is the image spacing in mm along x, y, z (SimpleITK order). Exact for every filter
        but the Simoncelli wavelet, whose kernel is not compact (see :mod:`.simoncelli`)."""
        if len(spacing) != 3 or any(s <= 0 for s in spacing):
            raise ValueError(f"spacing must be three positive numbers (mm along x, y, z). Found: {tuple(spacing)}")
        radius = self.radius_voxels(spacing)
        return tuple(float(r * s) for r, s in zip(radius, spacing))  # type: ignore[return-value]


def _setting(value: Any) -> str:
    """A kernel setting as written in the parameter file (enums by value)."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def parse_filter(mapping: Any, path: str | Path, index: int) -> FilterSpec:
    """One entry of ``palmares.filters``."""
    where = f"parameter file {path}: palmares.filters[{index}]"
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping with a 'filter' key. Found: {mapping!r}")
    family = mapping.get("filter")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ConfigError(f"{where}: 'filter' must be one of {', '.join(FAMILIES)}. Found: {family!r}")
    cls = FAMILIES[family]
    block = BlockReader(mapping, path, index, COMMON_KEYS + cls.KEYS)
    boundary = block.choice("boundary", Boundary)
    dimensions = block.choice("dimensions", Dimensions)
    kernel = cls.read(block, dimensions.axes)
    block.finish()
    return FilterSpec(kernel, boundary, dimensions)


def parse_filters(block: Any, path: str | Path) -> tuple[FilterSpec, ...]:
    """Validate a parameter file's ``palmares.filters`` block (a list of mappings; absent: no filter).

    Raises :class:`ConfigError` naming the bad key and the allowed values, or two filters with one name.
    """
    if block is None:
        return ()
    if not isinstance(block, list):
        raise ConfigError(f"parameter file {path}: palmares.filters must be a list of filters (one mapping each, "
                          f"'- filter: ...'). Found: {type(block).__name__}")
    specs = tuple(parse_filter(entry, path, i) for i, entry in enumerate(block))
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise ConfigError(f"parameter file {path}: palmares.filters[{seen[spec.name]}] and [{i}] have the same "
                              f"name {spec.name!r} (filters whose settings differ only in their boundary condition "
                              "cannot be told apart in feature names): keep one")
        seen[spec.name] = i
    return specs


def palmares_block(path: str | Path) -> dict[str, Any]:
    """The ``palmares`` block of a YAML parameter file ({} when absent); nothing in it is validated here."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_bytes()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"parameter file {path} cannot be read: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"parameter file {path}: expected a mapping at the top level")
    palmares = document.get("palmares") or {}
    if not isinstance(palmares, dict):
        raise ConfigError(f"parameter file {path}: 'palmares' must be a mapping")
    return palmares


def load_filter_params(path: str | Path) -> tuple[FilterSpec, ...]:
    """The filters of a YAML parameter file's ``palmares.filters`` block; other keys are not looked at here."""
    return parse_filters(palmares_block(path).get("filters"), path)
