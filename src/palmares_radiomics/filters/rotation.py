"""Rotation invariance by pooling over right-angle rotations of a separable kernel (IBSI 2, "Rotation invariance").

A directional kernel (a Laws kernel, a separable wavelet) is made rotation invariant by filtering with every
rotation of the kernel that keeps it on the voxel grid and pooling the responses voxel by voxel. In 3-D these are
the 24 rotations of the cube (the right-handed signed permutations of x, y, z); in 2-D, the 4 in-plane rotations by
multiples of 90 degrees. A rotation of a separable kernel moves each axis's 1-D kernel to another axis, reversed when
that axis is reversed.

Two rotations can give the same kernel (a symmetric 1-D kernel is unchanged by reversal); each distinct kernel then
occurs equally often (orbit-stabiliser theorem), so pooling over the distinct kernels gives the same average and
the same maximum as pooling over all rotations, with fewer convolutions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from enum import Enum

import numpy as np


class Pooling(str, Enum):
    """How the responses of the rotated kernels are combined, voxel by voxel (the parameter-file spelling)."""

    NONE = "none"
    AVERAGE = "average"
    MAX = "max"


#: A rotation as (source axis, reversed?) for each destination axis, over the filtered axes in order.
Rotation = tuple[tuple[int, bool], ...]


def right_angle_rotations(ndim: int) -> tuple[Rotation, ...]:
    """The rotations of an ``ndim``-dimensional grid onto itself: 24 in 3-D, 4 in 2-D (identity first).

    >>> len(right_angle_rotations(3)), len(right_angle_rotations(2))
    (24, 4)
    """
    rotations = []
    for permutation in itertools.permutations(range(ndim)):
        for signs in itertools.product((1, -1), repeat=ndim):
            matrix = np.zeros((ndim, ndim))
            for destination, (source, sign) in enumerate(zip(permutation, signs)):
                matrix[destination, source] = sign
            if round(np.linalg.det(matrix)) == 1:  # proper rotations only: no mirror images
                rotations.append(tuple((source, sign < 0) for source, sign in zip(permutation, signs)))
    return tuple(rotations)


def rotate_kernels(kernels: Sequence[np.ndarray], rotation: Rotation) -> tuple[np.ndarray, ...]:
    """The 1-D kernels of a separable kernel (one per filtered axis) after ``rotation``."""
    return tuple(kernels[source][::-1] if reverse else kernels[source] for source, reverse in rotation)


#: A cascade of separable kernels: per stage, one 1-D kernel per filtered axis.
Cascade = tuple[tuple[np.ndarray, ...], ...]


def distinct_rotations(stages: Sequence[Sequence[np.ndarray]], invariant: bool) -> list[Cascade]:
    """Every distinct rotation of a cascade of separable kernels (each stage: one 1-D kernel per filtered axis).

    All stages turn together, as the whole filter is rotated. Without rotation invariance: the cascade as given.
    """
    as_given = tuple(tuple(np.asarray(k, dtype=float) for k in stage) for stage in stages)
    if not invariant:
        return [as_given]
    seen: set[tuple[bytes, ...]] = set()
    distinct = []
    for rotation in right_angle_rotations(len(as_given[0])):
        rotated = tuple(rotate_kernels(stage, rotation) for stage in as_given)
        key = tuple(k.tobytes() for stage in rotated for k in stage)
        if key not in seen:
            seen.add(key)
            distinct.append(rotated)
    return distinct


def pool(responses: Iterable[np.ndarray], pooling: Pooling) -> np.ndarray:
    """Voxel-wise average or maximum of the responses, kept as a running value (one response in memory at a time).

    ``Pooling.NONE`` takes exactly one response.
    """
    result: np.ndarray | None = None
    count = 0
    combine: np.ufunc = np.maximum if pooling is Pooling.MAX else np.add
    for response in responses:
        count += 1
        if pooling is Pooling.NONE and count > 1:
            raise ValueError("pooling 'none' takes a single response")
        result = response.copy() if result is None else combine(result, response, out=result)
    if result is None:
        raise ValueError("nothing to pool")
    return result / count if pooling is Pooling.AVERAGE else result
