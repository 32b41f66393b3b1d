"""IBSI 2 convolutional filters: response maps of mean, Laplacian of Gaussian, Laws, Gabor, separable wavelet and
Simoncelli wavelet filters, as the IBSI 2 reference manual (arXiv:2006.05470) defines them.

Public API (for the feature pipeline and ``palmares filter``):

* :func:`parse_filters` / :func:`load_filter_params`: the ``palmares.filters`` block of a parameter file ->
  ``tuple[FilterSpec, ...]`` (validated; :class:`~palmares_radiomics.errors.ConfigError` otherwise);
* :class:`FilterSpec`: ``.name`` (id in feature columns), ``.apron_mm(spacing)`` (crop margin),
  ``.family``, ``.ibsi_code``;
* :func:`apply`: ``(spec, SimpleITK.Image) -> SimpleITK.Image``, the float64 response map on the same grid.

One module per filter family (:mod:`.mean`, :mod:`.log`, :mod:`.laws`, :mod:`.gabor`, :mod:`.wavelets`,
:mod:`.simoncelli`); boundary conditions in :mod:`.boundary`, rotation invariance in :mod:`.rotation`.
"""

from __future__ import annotations

from .boundary import Boundary
from .grid import Dimensions
from .response import apply, filter_array
from .rotation import Pooling
from .spec import FAMILIES, FilterSpec, family_of, load_filter_params, palmares_block, parse_filters

__all__ = ["FAMILIES", "Boundary", "Dimensions", "FilterSpec", "Pooling", "apply", "family_of", "filter_array",
           "load_filter_params", "palmares_block", "parse_filters"]
