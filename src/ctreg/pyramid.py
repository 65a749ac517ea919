"""Resolution pyramids: Gaussian smoothing in mm, integer subsampling, cropping.

A level is a Volume whose affine is the source affine with scaled columns, so that level voxel
(k, j, i) is source voxel (k fz, j fy, i fx): every level shares the source's voxel (0, 0, 0)
and its direction, and the reference frame of a level differs from the source's only by spacing.
"""

from __future__ import annotations

import numpy as np

from . import ops
from .volume import Volume

__all__ = ["level_factors", "lattice", "downsample", "crop", "crop_affine", "bounding_box"]

#: Gaussian sigma before subsampling, as a fraction of the level spacing (anti-aliasing).
ANTIALIAS_SIGMA = 0.4


def level_factors(spacing_mm, target_mm: float) -> tuple[int, int, int]:
    """Integer subsampling factors (z, y, x) that bring ``spacing_mm`` closest to ``target_mm``."""
    return tuple(max(1, int(round(target_mm / s))) for s in np.asarray(spacing_mm, float))  # type: ignore[return-value]


def lattice(spacing_mm, target_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A level's (z, y, x) subsampling factors and its smoothing sigmas in mm (0 on the axes
    kept whole)."""
    f = np.array(level_factors(spacing_mm, target_mm))
    level_spacing = np.asarray(spacing_mm, float) * f
    return f, np.where(f > 1, ANTIALIAS_SIGMA * level_spacing, 0.0)


def downsample(volume: Volume, target_mm: float, *, smooth: bool = True) -> Volume:
    """Smooth (sigma = ANTIALIAS_SIGMA x level spacing on each subsampled axis) and subsample.

    Returns the volume itself when no axis is subsampled and ``smooth`` has nothing to do.
    The validity mask follows by plain subsampling.
    """
    f, sigma = lattice(volume.spacing, target_mm)
    if np.all(f == 1):
        return volume
    sl = tuple(slice(None, None, int(x)) for x in f)
    if smooth and volume.array.ndim == 3:  # smoothed only where kept: the same values
        sub = ops.smooth_subsample(volume.array, tuple(sigma), tuple(volume.spacing), tuple(f))
    else:
        arr = (
            ops.smooth(volume.array, tuple(sigma), tuple(volume.spacing))
            if smooth
            else volume.array
        )
        sub = np.ascontiguousarray(arr[sl])
    valid = None if volume.valid is None else np.ascontiguousarray(volume.valid[sl])
    affine = volume.affine @ np.diag([f[0], f[1], f[2], 1.0])
    return Volume(sub, affine, valid, dict(volume.meta))


def bounding_box(mask: np.ndarray, margin_vox=(0, 0, 0)) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding ``mask`` grown by ``margin_vox``; None if empty."""
    if not mask.any():
        return None
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        lo = max(0, int(hit[0]) - int(margin_vox[ax]))
        hi = min(mask.shape[ax], int(hit[-1]) + 1 + int(margin_vox[ax]))
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def crop(volume: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """The sub-volume ``volume.array[box]`` with its affine shifted accordingly."""
    valid = None if volume.valid is None else volume.valid[box]
    return Volume(volume.array[box], crop_affine(volume.affine, box), valid, dict(volume.meta))


def crop_affine(affine: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """The affine of the sub-volume ``array[box]`` (its voxel (0, 0, 0) is the box's first)."""
    shift = np.eye(4)
    shift[:3, 3] = [s.start or 0 for s in box]
    return np.asarray(affine, float) @ shift
