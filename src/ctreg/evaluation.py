"""Figures that judge a registration against masks: Dice and surface distances.

* :func:`dice` -- ``2 |A & B| / (|A| + |B|)``.
* :func:`surface_distances` -- symmetric surface distances in mm on one grid: the surface of a
  mask is its voxels with a 6-neighbour outside it; every surface voxel of A gets its distance to
  the nearest surface voxel of B and vice versa (Euclidean distance transforms with the grid's
  real spacing).  ``hd95`` is the 95th percentile and ``msd`` the mean of all those distances
  together (both directions pooled, as medpy's ``hd95`` / ``assd``); ``hd`` the maximum.

The work is cropped to the two masks' joint bounding box (plus one voxel), so lung masks of
big scans cost seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from .errors import CTRegError

__all__ = [
    "EvaluationError",
    "SurfaceDistances",
    "dice",
    "surface",
    "surface_distances",
    "folding_count",
]


class EvaluationError(CTRegError, ValueError):
    """Masks that cannot be compared; ``code``: ``Evaluation.EmptyMask`` or
    ``Evaluation.MaskShape``."""

    code = "Evaluation.EmptyMask"
    codes = ("Evaluation.EmptyMask", "Evaluation.MaskShape")

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if a.shape != b.shape:
        raise EvaluationError(
            f"masks must have one shape, got {a.shape} and {b.shape}", "Evaluation.MaskShape"
        )
    return a, b


def dice(a, b) -> float:
    """Dice overlap of two bool masks of one shape (1.0 when both are empty)."""
    a, b = _pair(a, b)
    na, nb = np.count_nonzero(a), np.count_nonzero(b)
    if na + nb == 0:
        return 1.0
    return 2.0 * np.count_nonzero(a & b) / (na + nb)


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one 6-neighbour outside it (outside the array counts as
    outside)."""
    m = np.asarray(mask, bool)
    return m & ~ndi.binary_erosion(m, border_value=0)


@dataclass(frozen=True)
class SurfaceDistances:
    """Symmetric surface distances in mm (see the module docstring)."""

    hd95: float
    msd: float
    hd: float
    a_to_b: np.ndarray
    b_to_a: np.ndarray

    def as_dict(self) -> dict:
        return {"hd95_mm": self.hd95, "msd_mm": self.msd, "hd_mm": self.hd}


def surface_distances(a, b, spacing_zyx) -> SurfaceDistances:
    """Surface distances between bool masks ``a`` and ``b`` on one grid of ``spacing_zyx`` mm."""
    a, b = _pair(a, b)
    if not a.any() or not b.any():
        raise EvaluationError("surface distances need two non-empty masks", "Evaluation.EmptyMask")
    spacing = np.asarray(spacing_zyx, float).reshape(3)
    both = a | b
    lo = [
        max(0, int(np.flatnonzero(both.any(axis=tuple(x for x in range(3) if x != ax)))[0]) - 1)
        for ax in range(3)
    ]
    hi = [
        min(
            both.shape[ax],
            int(np.flatnonzero(both.any(axis=tuple(x for x in range(3) if x != ax)))[-1]) + 2,
        )
        for ax in range(3)
    ]
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    sa, sb = surface(a[box]), surface(b[box])
    # distance of every voxel to the nearest surface voxel of the other mask
    da = ndi.distance_transform_edt(~sb, sampling=spacing)[sa]
    db = ndi.distance_transform_edt(~sa, sampling=spacing)[sb]
    pooled = np.concatenate([da, db])
    return SurfaceDistances(
        float(np.percentile(pooled, 95)), float(pooled.mean()), float(pooled.max()), da, db
    )


def folding_count(jacobian: np.ndarray, mask: np.ndarray | None = None) -> int:
    """Number of voxels (inside ``mask`` when given) whose Jacobian determinant is <= 0."""
    j = np.asarray(jacobian)
    bad = ~(j > 0)  # NaN counts as folded
    if mask is not None:
        bad &= np.asarray(mask, bool)
    return int(np.count_nonzero(bad))
