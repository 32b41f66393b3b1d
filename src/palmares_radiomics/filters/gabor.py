"""IBSI 2 Gabor filter (IBSI code Q88H): a 2-D complex kernel applied in image planes; the response is its modulus.

Kernel in a plane with coordinates (u, v) in mm (u = x, v = y in the axial plane), rotated by theta from u
towards v (reference manual, "Gabor kernels")::

    u' = u cos(theta) + v sin(theta),  v' = -u sin(theta) + v cos(theta)
    g(u, v) = exp(-(u'**2 + gamma**2 v'**2) / (2 sigma**2)) * exp(2 pi i u' / lambda)

not normalised (peak 1), as in the IBSI reference maps. It is sampled out to ``truncation`` times the largest
standard deviation of its Gaussian envelope (``sigma`` along u', ``sigma / gamma`` along v').

* ``dimensions: 2D``: each axial slice is filtered on its own.
* ``dimensions: 3D``: the kernel is applied in the three orthogonal planes (axial, coronal, sagittal) and the
  responses are pooled with those of every orientation; this needs rotation invariance (IBSI 4.A2, 4.B2).
* Rotation invariance: orientations ``theta_deg + k * theta_step_deg`` over the full circle, pooled voxel by voxel.
  The modulus is the same for theta and theta + 180 degrees, so only half the circle is computed when the step
  divides 180 (same average, same maximum).

Convolution is by FFT, the image padded once per plane by the kernel's half-width with the boundary condition.
Phase 1 configurations 4.A1-4.B2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import numpy as np

from .boundary import Boundary, PlaneSpectrum
from .grid import Y, Z, X, half_width, number_label
from .laws import read_rotation, rotation_label
from .reader import BlockReader
from .rotation import Pooling, pool


class GaborResponse(str, Enum):
    """The part of the complex response kept (IBSI uses the modulus)."""

    MODULUS = "modulus"


#: The planes of the 3-D mode as (v axis, u axis) of a (z, y, x) array: axial (y, x), coronal (z, x), sagittal (z, y).
PLANES_3D: tuple[tuple[int, int], ...] = ((Y, X), (Z, X), (Z, Y))


def gabor_kernel(sigma_mm: float, gamma: float, lambda_mm: float, theta: float, spacing_vu: Sequence[float],
                 radius_vu: Sequence[int]) -> np.ndarray:
    """The complex Gabor kernel sampled on a (v, u) voxel grid of ``spacing_vu`` mm, ``2 radius + 1`` voxels a side."""
    v = np.arange(-radius_vu[0], radius_vu[0] + 1)[:, None] * spacing_vu[0]
    u = np.arange(-radius_vu[1], radius_vu[1] + 1)[None, :] * spacing_vu[1]
    u_rot = u * math.cos(theta) + v * math.sin(theta)
    v_rot = -u * math.sin(theta) + v * math.cos(theta)
    envelope = np.exp(-(u_rot**2 + gamma**2 * v_rot**2) / (2 * sigma_mm**2))
    return envelope * np.exp(2j * math.pi * u_rot / lambda_mm)


@dataclass(frozen=True, slots=True)
class GaborFilter:
    """Gabor settings: sigma, gamma, lambda (mm), theta and its step (degrees), rotation invariance and pooling,
    truncation (in units of the envelope's largest standard deviation), response."""

    FILTER: ClassVar[str] = "gabor"
    IBSI_CODE: ClassVar[str] = "Q88H"
    KEYS: ClassVar[tuple[str, ...]] = ("sigma_mm", "gamma", "lambda_mm", "theta_deg", "theta_step_deg",
                                       "rotation_invariance", "pooling", "truncation", "response")

    sigma_mm: float
    gamma: float
    lambda_mm: float
    theta_deg: float
    theta_step_deg: float | None
    rotation_invariance: bool
    pooling: Pooling
    truncation: float
    response_type: GaborResponse

    @classmethod
    def read(cls, block: BlockReader, axes: Sequence[int]) -> GaborFilter:
        """Settings from a validated parameter-file mapping."""
        sigma = block.number("sigma_mm", minimum=0, unit="(mm)")
        gamma = block.number("gamma", minimum=0, unit="(spatial aspect ratio)")
        lam = block.number("lambda_mm", minimum=0, unit="(wavelength, mm)")
        theta = block.number("theta_deg", unit="(degrees)")
        invariant, pooling = read_rotation(block)
        step = None
        if invariant:
            step = block.number("theta_step_deg", minimum=0, unit="(degrees, dividing 360)")
            if abs(360 / step - round(360 / step)) > 1e-9:
                raise block.error(f"'theta_step_deg' must divide 360 degrees into equal parts. Found: {step:g}")
        else:
            block.absent_or("theta_step_deg", None)
        if len(axes) == 3 and not invariant:
            raise block.error("a 3D Gabor filter pools the three orthogonal planes, which needs "
                              "rotation_invariance: true; use dimensions: 2D for one orientation in axial slices")
        truncation = block.number("truncation", minimum=0, unit="(in units of the envelope's largest sigma)")
        response = block.choice("response", GaborResponse)
        return cls(sigma, gamma, lam, theta, step, invariant, pooling, truncation, response)

    def label(self) -> str:
        """Name part: ``gabor_s10_g0p5_l4_t60``, ``gabor_s10_g0p5_l4_t0_tstep45_invar_avg``."""
        step = f"_tstep{number_label(self.theta_step_deg)}" if self.theta_step_deg is not None else ""
        return (f"gabor_s{number_label(self.sigma_mm)}_g{number_label(self.gamma)}_l{number_label(self.lambda_mm)}"
                f"_t{number_label(self.theta_deg)}{step}{rotation_label(self.rotation_invariance, self.pooling)}")

    def envelope_mm(self) -> float:
        """Half-width of the kernel in mm: truncation times the largest envelope standard deviation."""
        return self.truncation * self.sigma_mm * max(1.0, 1.0 / self.gamma)

    def radius(self, spacing: Sequence[float], axes: Sequence[int]) -> tuple[int, ...]:
        """Kernel half-width in voxels along each filtered axis."""
        return tuple(half_width(self.envelope_mm(), spacing[a]) for a in axes)

    def thetas(self) -> list[float]:
        """The orientations (radians) whose responses are pooled."""
        if self.theta_step_deg is None:
            return [math.radians(self.theta_deg)]
        half = 180 / self.theta_step_deg
        count = round(half) if abs(half - round(half)) < 1e-9 else round(360 / self.theta_step_deg)
        return [math.radians(self.theta_deg + k * self.theta_step_deg) for k in range(count)]

    def response(self, array: np.ndarray, spacing: Sequence[float], axes: Sequence[int],
                 boundary: Boundary) -> np.ndarray:
        """The Gabor modulus response, pooled over orientations (and planes in 3D)."""

        planes = PLANES_3D if len(axes) == 3 else PLANES_3D[:1]

        def responses() -> Iterator[np.ndarray]:
            for plane in planes:
                radius = [half_width(self.envelope_mm(), spacing[a]) for a in plane]
                spectrum = PlaneSpectrum(array, plane, radius, boundary)
                for theta in self.thetas():
                    kernel = gabor_kernel(self.sigma_mm, self.gamma, self.lambda_mm, theta,
                                          [spacing[a] for a in plane], radius)
                    yield np.abs(spectrum.convolve(kernel))

        return pool(responses(), self.pooling)
