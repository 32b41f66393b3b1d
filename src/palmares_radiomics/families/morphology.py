r"""IBSI 1 morphology features that pyradiomics lacks or deprecates (reference manual arXiv:1612.07003, chapter 3.1).

The math lives in small module-level functions on numpy arrays; :class:`MorphologyExtras` adapts them to
pyradiomics' shape class. Notation of the manual: :math:`V` the mesh volume and :math:`A` the mesh area
(pyradiomics' ``self.Volume`` and ``self.SurfaceArea``, so every morphology feature uses the same mesh),
:math:`N_v` the voxel count of the ROI intensity mask, :math:`X_{gl,k}` the intensity of its voxel :math:`k`,
:math:`\vec{X}_{c,k}` a voxel position in mm.

The mesh is the marching-cubes mesh of the morphological mask padded with one empty voxel on each side. On a
binary mask at level 0.5 its vertices are the midpoints of the lattice edges that join a voxel inside the mask
to a 6-neighbour outside (:func:`mesh_vertices` computes exactly this set; the tests prove it spans the same
convex hull and bounding box as ``skimage.measure.marching_cubes``). The axis-aligned bounding box and the convex
hull are those of the mesh vertices, as the manual specifies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import fft
from scipy.spatial import ConvexHull

from ..resample import box_slices

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
T = TypeVar("T")

#: Degree of the Legendre series of the approximate enclosing ellipsoid's area (the manual's 20).
LEGENDRE_DEGREE = 20


# --- volume and area ----------------------------------------------------------------------------------------------

def compactness1(volume: float, area: float) -> float:
    r"""Compactness 1 (IBSI SKGS): :math:`F = V / (\pi^{1/2} A^{3/2})`."""
    return volume / (math.sqrt(math.pi) * area ** 1.5)


def compactness2(volume: float, area: float) -> float:
    r"""Compactness 2 (IBSI BQWJ): :math:`F = 36 \pi V^2 / A^3`."""
    return 36.0 * math.pi * volume ** 2 / area ** 3


def spherical_disproportion(volume: float, area: float) -> float:
    r"""Spherical disproportion (IBSI KRCK): :math:`F = A / (36 \pi V^2)^{1/3}`."""
    return area / (36.0 * math.pi * volume ** 2) ** (1.0 / 3.0)


def asphericity(volume: float, area: float) -> float:
    r"""Asphericity (IBSI 25C7): :math:`F = (A^3 / (36 \pi V^2))^{1/3} - 1`."""
    return (area ** 3 / (36.0 * math.pi * volume ** 2)) ** (1.0 / 3.0) - 1.0


# --- mesh, bounding box, convex hull ------------------------------------------------------------------------------

def mesh_vertices(mask: BoolArray, spacing: FloatArray) -> FloatArray:
    """Vertices (n, 3) in mm, axes as ``mask`` (z, y, x), of the marching-cubes mesh of ``mask`` (level 0.5,
    zero-padded): the midpoints of the lattice edges between a voxel in the mask and a 6-neighbour outside it.

    Positions are relative to the first voxel of the mask's bounding box (only their differences are used).
    """
    box = box_slices(np.asarray(mask, dtype=bool))
    if box is None:
        raise ValueError("the morphological mask is empty")
    padded = np.pad(np.asarray(mask[box], dtype=bool), 1)
    parts = []
    for axis in range(3):
        edges = np.diff(padded, axis=axis)  # True where the voxel and its next neighbour along axis differ
        points = np.argwhere(edges).astype(np.float64)
        points[:, axis] += 0.5
        parts.append(points)
    return (np.concatenate(parts) - 1.0) * np.asarray(spacing, dtype=np.float64)


def aabb_volume_area(vertices: FloatArray) -> tuple[float, float]:
    """Volume and area of the axis-aligned bounding box of ``vertices``: extents :math:`a, b, c` give
    :math:`V_{aabb} = abc` and :math:`A_{aabb} = 2(ab + ac + bc)`."""
    a, b, c = np.ptp(vertices, axis=0)
    return float(a * b * c), float(2.0 * (a * b + a * c + b * c))


def convex_hull_volume_area(vertices: FloatArray) -> tuple[float, float]:
    """Volume and area of the convex hull of ``vertices`` (scipy's Qhull)."""
    hull = ConvexHull(vertices)
    return float(hull.volume), float(hull.area)


def volume_density(volume: float, enclosing_volume: float) -> float:
    """A volume density (IBSI PBX1 bounding box, 6BDE ellipsoid, R3ER convex hull): :math:`F = V / V_{enclosing}`."""
    return volume / enclosing_volume if enclosing_volume > 0 else math.nan


def area_density(area: float, enclosing_area: float) -> float:
    """An area density (IBSI R59B bounding box, RDD2 ellipsoid, 7T7F convex hull): :math:`F = A / A_{enclosing}`."""
    return area / enclosing_area if enclosing_area > 0 else math.nan


# --- approximate enclosing ellipsoid ------------------------------------------------------------------------------

def ellipsoid_semi_axes(eigenvalues: FloatArray) -> tuple[float, float, float]:
    r"""Semi-axes :math:`a \ge b \ge c` of the approximate enclosing ellipsoid from the eigenvalues of the
    covariance of the voxel positions: :math:`a = 2\sqrt{\lambda_{major}}`, :math:`b = 2\sqrt{\lambda_{minor}}`,
    :math:`c = 2\sqrt{\lambda_{least}}` (half the PCA axis lengths)."""
    least, minor, major = (2.0 * math.sqrt(max(float(v), 0.0)) for v in np.sort(np.asarray(eigenvalues)))
    return major, minor, least


def ellipsoid_volume(a: float, b: float, c: float) -> float:
    r"""Volume :math:`4\pi abc/3` of the ellipsoid with semi-axes ``a``, ``b``, ``c``."""
    return 4.0 * math.pi * a * b * c / 3.0


def ellipsoid_area(a: float, b: float, c: float, degree: int = LEGENDRE_DEGREE) -> float:
    r"""Area of the ellipsoid with semi-axes :math:`a \ge b \ge c`, by the manual's Legendre series:

    .. math::
        A_{aee} = 4\pi ab \sum_{\nu=0}^{20} \frac{(\alpha\beta)^\nu}{1 - 4\nu^2}
        P_\nu\left(\frac{\alpha^2 + \beta^2}{2\alpha\beta}\right),\quad
        \alpha = \sqrt{1 - b^2/a^2},\ \beta = \sqrt{1 - c^2/a^2}

    with :math:`P_\nu` the Legendre polynomial of degree :math:`\nu`. The terms
    :math:`Q_\nu = (\alpha\beta)^\nu P_\nu(x)` are evaluated by Bonnet's recurrence multiplied through by
    :math:`(\alpha\beta)^{\nu+1}`, :math:`(\nu+1) Q_{\nu+1} = (2\nu+1) s Q_\nu - \nu t^2 Q_{\nu-1}` with
    :math:`t = \alpha\beta`, :math:`s = (\alpha^2+\beta^2)/2`, :math:`Q_0 = 1`, :math:`Q_1 = s`: the same sum,
    and its continuous limit where :math:`\alpha\beta = 0` (:math:`a = b`, spheres).

    The series is the manual's approximation, not the exact area: a sphere is exact, but semi-axes 5, 4, 3 give
    2.1 % more than the exact area and flatter ellipsoids differ more. The IBSI reference values follow the series, so
    it is kept as defined, everywhere (MIRP switches to exact spheroid areas when two semi-axes are equal, so its
    value jumps there).
    """
    if a <= 0:
        return 0.0
    alpha2, beta2 = 1.0 - (b / a) ** 2, 1.0 - (c / a) ** 2
    t2, s = alpha2 * beta2, 0.5 * (alpha2 + beta2)
    previous, current = 1.0, s
    total = previous + current / (1.0 - 4.0)
    for nu in range(1, degree):
        previous, current = current, ((2 * nu + 1) * s * current - nu * t2 * previous) / (nu + 1)
        total += current / (1.0 - 4.0 * (nu + 1) ** 2)
    return 4.0 * math.pi * a * b * total


# --- intensity ----------------------------------------------------------------------------------------------------

def centre_of_mass_shift(morphological_mask: BoolArray, intensity_mask: BoolArray, image: FloatArray,
                         spacing: FloatArray) -> float:
    r"""Centre of mass shift (IBSI KLMA), mm: :math:`F = \lVert \vec{CoM}_{geom} - \vec{CoM}_{gl} \rVert` with
    :math:`\vec{CoM}_{geom} = \frac{1}{N_{v,m}} \sum_k \vec{X}_{c,k}` over the morphological mask and
    :math:`\vec{CoM}_{gl} = \sum_k X_{gl,k} \vec{X}_{c,k} / \sum_k X_{gl,k}` over the intensity mask."""
    spacing = np.asarray(spacing, dtype=np.float64)
    geometric = np.argwhere(morphological_mask).mean(axis=0) * spacing
    positions = np.argwhere(intensity_mask).astype(np.float64)
    weights = np.asarray(image, dtype=np.float64)[intensity_mask]
    total = weights.sum()
    if total == 0:
        return math.nan
    weighted = np.array([_inner(weights, positions[:, axis]) for axis in range(3)]) / total * spacing
    return float(np.linalg.norm(geometric - weighted))


def integrated_intensity(image: FloatArray, intensity_mask: BoolArray, volume: float) -> float:
    r"""Integrated intensity (IBSI 99N0): :math:`F = V \frac{1}{N_v} \sum_k X_{gl,k}` over the intensity mask."""
    return float(volume * np.asarray(image, dtype=np.float64)[intensity_mask].mean())


def inverse_distance_weights(extent: tuple[int, ...], spacing: tuple[float, ...]) -> FloatArray:
    r"""Weights :math:`w(\vec{d}) = 1/\lVert \vec{d} \odot \vec{s} \rVert` (spacing :math:`\vec{s}`, mm) of the
    displacements :math:`0 \le d_i < extent_i` (one octant; :math:`w` is even along every axis),
    :math:`w(\vec{0}) = 0`."""
    squared = np.zeros(extent)
    for axis, (n, step) in enumerate(zip(extent, spacing)):
        view = [1] * len(extent)
        view[axis] = n
        squared = squared + ((np.arange(n) * float(step)) ** 2).reshape(view)
    squared.flat[0] = np.inf
    return 1.0 / np.sqrt(squared)


def kernel_spectrum(grid: tuple[int, ...], spacing: tuple[float, ...]) -> FloatArray:
    r"""The discrete Fourier transform of the weights :math:`w` on the periodic grid ``grid`` (even lengths
    :math:`L_i`; displacement :math:`d` at index :math:`d \bmod L_i`), in ``rfftn``'s layout (last axis halved), as
    Parseval weights: divided by :math:`\prod L_i` and doubled on the last-axis bins whose conjugates ``rfftn``
    leaves out.

    :math:`w` is even along every axis, so its transform is real and is the type-I DCT of the octant
    :math:`0 \le d_i \le L_i/2` (an eighth of the grid), mirrored on the first two axes. Not cached: it costs
    about 2 ms for a 15 ml lesion, and a cache would hold tens of MB per large lesion.
    """
    spectrum = fft.dctn(inverse_distance_weights(tuple(n // 2 + 1 for n in grid), spacing), type=1)
    for axis in range(len(grid) - 1):
        mirrored = np.flip(np.take(spectrum, np.arange(1, grid[axis] // 2), axis=axis), axis=axis)
        spectrum = np.concatenate([spectrum, mirrored], axis=axis)
    spectrum /= math.prod(grid)
    spectrum[..., 1:(grid[-1] + 1) // 2] *= 2.0
    spectrum.setflags(write=False)
    return spectrum


def _rfftn_padded(field: FloatArray, grid: tuple[int, ...]) -> NDArray[np.complex128]:
    """``scipy.fft.rfftn(field, grid)`` of a 3-D field zero-padded to ``grid``, one axis at a time so the rows that
    are all padding are not transformed (about twice as fast as ``rfftn`` on ROI boxes)."""
    spectrum = fft.rfft(field, grid[2], axis=2)
    spectrum = fft.fft(spectrum, grid[1], axis=1)
    return fft.fft(spectrum, grid[0], axis=0)


def morans_i_gearys_c(image: FloatArray, intensity_mask: BoolArray, spacing: FloatArray) -> tuple[float, float]:
    r"""Moran's I index (IBSI N365) and Geary's C measure (IBSI NPT7), exact over all voxel pairs of the intensity
    mask, with weights :math:`w_{kk'} = 1/\lVert \vec{X}_{c,k} - \vec{X}_{c,k'} \rVert` (mm):

    .. math::
        I = \frac{N_v}{\sum_{k \ne k'} w_{kk'}}
            \frac{\sum_{k \ne k'} w_{kk'} (X_{gl,k} - \mu)(X_{gl,k'} - \mu)}{\sum_k (X_{gl,k} - \mu)^2},\qquad
        C = \frac{N_v - 1}{2 \sum_{k \ne k'} w_{kk'}}
            \frac{\sum_{k \ne k'} w_{kk'} (X_{gl,k} - X_{gl,k'})^2}{\sum_k (X_{gl,k} - \mu)^2}

    The weight depends only on the displacement, so each pair sum is a correlation. With :math:`x` the centred
    intensities (0 outside the mask) and :math:`m` the mask on the ROI's bounding box,
    :math:`\sum w_{kk'} = \langle m, w * m \rangle`, :math:`\sum w_{kk'} x_k x_{k'} = \langle x, w * x \rangle`
    and :math:`\sum w_{kk'} (x_k - x_{k'})^2 = 2 (\langle x^2, w * m \rangle - \langle x, w * x \rangle)`.
    Each :math:`\langle a, w * b \rangle` is :math:`\frac{1}{L} \sum_f \overline{\hat a_f} \hat w_f \hat b_f`
    (Parseval) on a periodic grid of even :math:`L_i \ge 2(n_i - 1)` voxels per axis: every displacement within the
    box is distinct there except :math:`\pm(n_i - 1)` when :math:`L_i = 2(n_i - 1)`, which share one weight since
    :math:`w` is even. So three FFTs (:math:`x`, :math:`m`, :math:`x^2`) and the kernel's (:func:`kernel_spectrum`)
    give the exact all-pairs sums.

    An ROI of constant intensity (or of one voxel) has no defined value (0/0): NaN for both, so the lesion is refused
    with the features named (MIRP returns 1.0 for both).
    """
    box = box_slices(np.asarray(intensity_mask, dtype=bool))
    if box is None:
        raise ValueError("the intensity mask is empty")
    mask = np.asarray(intensity_mask[box], dtype=bool)
    values = np.asarray(image, dtype=np.float64)[box][mask]
    count = values.size
    if count < 2 or np.ptp(values) == 0:  # no variance: both statistics are 0/0, undefined (the lesion is refused)
        return math.nan, math.nan
    centred = np.zeros(mask.shape)
    centred[mask] = values - values.mean()
    grid = tuple(2 * fft.next_fast_len(max(n - 1, 1), real=True) for n in mask.shape)
    x_hat, m_hat, x2_hat = (_rfftn_padded(field, grid) for field in (centred, mask.astype(np.float64), centred ** 2))
    kernel = kernel_spectrum(grid, tuple(float(s) for s in spacing))
    weight_sum = _inner(kernel, (m_hat.conj() * m_hat).real)
    cross = _inner(kernel, (x_hat.conj() * x_hat).real)
    squares = _inner(kernel, (x2_hat.conj() * m_hat).real)
    variance_sum = float(np.sum(centred ** 2))
    morans_i = count / weight_sum * cross / variance_sum
    gearys_c = (count - 1) / (2.0 * weight_sum) * 2.0 * (squares - cross) / variance_sum
    return morans_i, gearys_c


def _inner(a: FloatArray, b: FloatArray) -> float:
    """:math:`\\sum a b` summed by numpy (pairwise), not BLAS: the last bits of ``np.vdot`` and ``@`` over many
    voxels depend on how many threads OpenBLAS uses, so ``palmares features`` on a many-core machine and a
    one-thread DAG job would differ."""
    return float(np.sum(a * b))


# --- pyradiomics adapter ------------------------------------------------------------------------------------------

class MorphologyExtras:
    """The IBSI morphology features pyradiomics' ``RadiomicsShape`` lacks or deprecates (mixin, first in the MRO).

    Expects pyradiomics' shape set-up: ``maskArray`` (the morphological mask, padded by one voxel on each side),
    ``imageArray``, ``pixelSpacing`` (z, y, x, mm), ``Volume``, ``SurfaceArea`` and ``eigenValues`` (ascending, sample
    covariance). The intensity mask comes from the setting ``ibsi_intensity_mask`` (bool, shape of ``imageArray``);
    without it the morphological mask is used.
    """

    maskArray: BoolArray
    imageArray: FloatArray
    pixelSpacing: FloatArray
    Volume: float
    SurfaceArea: float
    eigenValues: FloatArray
    settings: dict[str, Any]

    # -- inputs, computed once per instance

    def _ibsi_cached(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per instance under ``key``."""
        cache = self.__dict__.setdefault("_ibsi_morphology_cache", {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def _ibsi_morphological_mask(self) -> BoolArray:
        """The morphological mask on the grid of ``imageArray`` (pyradiomics' padding removed)."""
        pad = [(m - i) // 2 for m, i in zip(self.maskArray.shape, self.imageArray.shape)]
        return self.maskArray[tuple(slice(p, p + n) for p, n in zip(pad, self.imageArray.shape))]

    def _ibsi_intensity_mask(self) -> BoolArray:
        """The re-segmented intensity mask (setting ``ibsi_intensity_mask``), else the morphological mask."""
        mask = self.settings.get("ibsi_intensity_mask")
        if mask is None:
            return self._ibsi_morphological_mask()
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.imageArray.shape:
            raise ValueError(f"ibsi_intensity_mask has shape {mask.shape}, the image {self.imageArray.shape}")
        return mask

    def _ibsi_vertices(self) -> FloatArray:
        """The mesh vertices of the morphological mask (mm)."""
        return self._ibsi_cached("vertices", lambda: mesh_vertices(self.maskArray, self.pixelSpacing))

    def _ibsi_hull(self) -> tuple[float, float]:
        """Volume and area of the convex hull of the mesh vertices."""
        return self._ibsi_cached("hull", lambda: convex_hull_volume_area(self._ibsi_vertices()))

    def _ibsi_ellipsoid(self) -> tuple[float, float, float]:
        """Semi-axes of the approximate enclosing ellipsoid."""
        return ellipsoid_semi_axes(self.eigenValues)

    def _ibsi_spatial(self) -> tuple[float, float]:
        """Moran's I and Geary's C of the intensity mask."""
        return self._ibsi_cached("spatial", lambda: morans_i_gearys_c(self.imageArray, self._ibsi_intensity_mask(),
                                                                       self.pixelSpacing))

    # -- features

    def getCompactness1FeatureValue(self) -> float:
        r"""Compactness 1 (IBSI SKGS): :math:`V / (\pi^{1/2} A^{3/2})`."""
        return compactness1(self.Volume, self.SurfaceArea)

    def getCompactness2FeatureValue(self) -> float:
        r"""Compactness 2 (IBSI BQWJ): :math:`36 \pi V^2 / A^3`."""
        return compactness2(self.Volume, self.SurfaceArea)

    def getSphericalDisproportionFeatureValue(self) -> float:
        r"""Spherical disproportion (IBSI KRCK): :math:`A / (36 \pi V^2)^{1/3}`."""
        return spherical_disproportion(self.Volume, self.SurfaceArea)

    def getAsphericityFeatureValue(self) -> float:
        r"""Asphericity (IBSI 25C7): :math:`(A^3 / (36 \pi V^2))^{1/3} - 1`."""
        return asphericity(self.Volume, self.SurfaceArea)

    def getCentreOfMassShiftFeatureValue(self) -> float:
        r"""Centre of mass shift (IBSI KLMA), mm: :math:`\lVert \vec{CoM}_{geom} - \vec{CoM}_{gl} \rVert`, the
        morphological mask's centroid vs the intensity-weighted centroid of the intensity mask
        (:func:`centre_of_mass_shift`)."""
        return centre_of_mass_shift(self._ibsi_morphological_mask(), self._ibsi_intensity_mask(), self.imageArray,
                                    self.pixelSpacing)

    def getVolumeDensityAABBFeatureValue(self) -> float:
        """Volume density, axis-aligned bounding box (IBSI PBX1): :math:`V / V_{aabb}`, box of the mesh vertices."""
        return volume_density(self.Volume, aabb_volume_area(self._ibsi_vertices())[0])

    def getAreaDensityAABBFeatureValue(self) -> float:
        """Area density, axis-aligned bounding box (IBSI R59B): :math:`A / A_{aabb}`, box of the mesh vertices."""
        return area_density(self.SurfaceArea, aabb_volume_area(self._ibsi_vertices())[1])

    def getVolumeDensityAEEFeatureValue(self) -> float:
        r"""Volume density, approximate enclosing ellipsoid (IBSI 6BDE): :math:`3V / (4\pi abc)`, semi-axes
        :math:`2\sqrt{\lambda}` of the PCA eigenvalues (:func:`ellipsoid_semi_axes`)."""
        return volume_density(self.Volume, ellipsoid_volume(*self._ibsi_ellipsoid()))

    def getAreaDensityAEEFeatureValue(self) -> float:
        """Area density, approximate enclosing ellipsoid (IBSI RDD2): :math:`A / A_{aee}`, with the manual's
        Legendre-series area (:func:`ellipsoid_area`)."""
        a, b, c = self._ibsi_ellipsoid()
        return area_density(self.SurfaceArea, ellipsoid_area(a, b, c) if c > 0 else 0.0)

    def getVolumeDensityConvexHullFeatureValue(self) -> float:
        """Volume density, convex hull (IBSI R3ER): :math:`V / V_{convex}`, hull of the mesh vertices."""
        return volume_density(self.Volume, self._ibsi_hull()[0])

    def getAreaDensityConvexHullFeatureValue(self) -> float:
        """Area density, convex hull (IBSI 7T7F): :math:`A / A_{convex}`, hull of the mesh vertices."""
        return area_density(self.SurfaceArea, self._ibsi_hull()[1])

    def getIntegratedIntensityFeatureValue(self) -> float:
        r"""Integrated intensity (IBSI 99N0): :math:`V \frac{1}{N_v} \sum_k X_{gl,k}` over the intensity mask."""
        return integrated_intensity(self.imageArray, self._ibsi_intensity_mask(), self.Volume)

    def getMoransIFeatureValue(self) -> float:
        r"""Moran's I index (IBSI N365): :math:`\frac{N_v}{\sum w_{kk'}} \frac{\sum w_{kk'} (X_{gl,k} - \mu)
        (X_{gl,k'} - \mu)}{\sum_k (X_{gl,k} - \mu)^2}`, :math:`w_{kk'}` the inverse distance (mm), exact over all voxel
        pairs :math:`k \ne k'` of the intensity mask (:func:`morans_i_gearys_c`)."""
        return self._ibsi_spatial()[0]

    def getGearysCFeatureValue(self) -> float:
        r"""Geary's C measure (IBSI NPT7): :math:`\frac{N_v - 1}{2 \sum w_{kk'}} \frac{\sum w_{kk'} (X_{gl,k} -
        X_{gl,k'})^2}{\sum_k (X_{gl,k} - \mu)^2}`, :math:`w_{kk'}` the inverse distance (mm), exact over all voxel
        pairs :math:`k \ne k'` of the intensity mask (:func:`morans_i_gearys_c`)."""
        return self._ibsi_spatial()[1]
