"""Discrete large-motion search: MIND-SSC block matching with coupled-convex regularisation.

The continuous stages (B-spline, demons) follow the gradient of a metric, so they find the
motion a smooth pyramid can reach; a diaphragm that moves 20-50 mm between breaths is beyond
that.  This stage searches it instead, as deeds and corrField do (Heinrich et al.):

1. the floating scan, aligned by the affine transform, is resampled on one coarse level;
2. MIND-SSC descriptors of both images (``ctreg.mind.mind_ssc``): local self-similarity,
   unchanged by a change of lung density between two breaths (a contrast measure, not HU);
3. for control points every ``grid_step_vox`` voxels, the cost of every integer displacement
   within ``search_radius_mm`` (``ctreg.mind.block_match_cost``), counted only where the metric
   mask (the reference lungs and their border when known, the body otherwise) has voxels;
4. coupled-convex regularisation (``ctreg.mind.regularise_cost``): alternating exact argmin and
   Gaussian smoothing with an increasing coupling weight;
5. the control-point field is interpolated on the level grid, smoothed, and used as a
   stationary velocity: the displacement is ``exp(v)`` (scaling and squaring), invertible by
   construction, so the stage cannot fold the map.

The result is a displacement on the level grid, in reference-frame components (z, y, x mm),
which the B-spline stage refines (``u0``).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from . import mind, ops
from .level import Level
from .options import DiscreteOptions
from .result import LevelReport
from .transforms import AffineTransform

__all__ = ["run_discrete_stage"]

log = logging.getLogger("ctreg")


def _mean_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the mask of the channel-summed absolute descriptor difference."""
    m = mask.astype(bool)
    if not m.any():
        return float("nan")
    return float(np.abs(a[m] - b[m]).sum(axis=-1).mean())


def run_discrete_stage(
    level: Level, transform: AffineTransform, options: DiscreteOptions, metric_mask: np.ndarray
) -> tuple[np.ndarray, LevelReport]:
    """Search the displacement on ``level`` (after ``transform``); returns the displacement
    (level shape + (3,), float32, frame mm) and the stage's report (metric: mean absolute MIND
    difference in the mask, before and after)."""
    t0 = time.perf_counter()
    spacing = np.asarray(level.spacing, float)
    h = float(spacing.mean())
    warped, valid = level.warp(transform)
    mask = np.ascontiguousarray((metric_mask.astype(bool) & valid.astype(bool)))
    f_ref = mind.mind_ssc(
        np.ascontiguousarray(level.reference, dtype=np.float32),
        radius_vox=options.patch_radius_vox,
        distance_vox=options.distance_vox,
    )
    f_flt = mind.mind_ssc(
        np.ascontiguousarray(warped, dtype=np.float32),
        radius_vox=options.patch_radius_vox,
        distance_vox=options.distance_vox,
    )
    before = _mean_abs(f_ref, f_flt, mask)
    step = int(options.grid_step_vox)
    radius = max(1, int(round(options.search_radius_mm / h)))
    cost, offsets, active = mind.block_match_cost(
        f_ref,
        f_flt,
        grid_step_vox=step,
        block_radius_vox=int(options.block_radius_vox),
        search_radius_vox=radius,
        mask=mask,
    )
    del f_flt
    if not active.any():
        raise ValueError("discrete stage: no control point has a voxel of the metric mask")
    grid_mm = spacing * step
    u_grid = mind.regularise_cost(
        cost,
        offsets,
        active,
        grid_spacing_mm=tuple(grid_mm),
        voxel_mm=tuple(spacing),
        alphas=tuple(options.alphas),
        sigma_grid=float(options.sigma_grid),
    )
    del cost
    # control point g sits at voxel g * step: a grid of spacing step * level spacing, origin 0
    dense = ops.resample_field(
        np.ascontiguousarray(u_grid, dtype=np.float32), tuple(grid_mm), level.shape, tuple(spacing)
    )
    sigma = tuple(float(options.smooth_mm) for _ in range(3))
    v = ops.smooth(np.ascontiguousarray(dense, dtype=np.float32), sigma, tuple(spacing))
    u = ops.exp_field(v, tuple(spacing), copy=True)
    u = np.ascontiguousarray(u, dtype=np.float32)
    warped2, valid2 = level.warp(transform, u)
    f_flt2 = mind.mind_ssc(
        np.ascontiguousarray(warped2, dtype=np.float32),
        radius_vox=options.patch_radius_vox,
        distance_vox=options.distance_vox,
    )
    after = _mean_abs(f_ref, f_flt2, mask & valid2.astype(bool))
    magnitude = np.linalg.norm(u.reshape(-1, 3), axis=1)
    report = LevelReport(
        stage="discrete",
        level=0,
        spacing_mm=[float(s) for s in spacing],
        iterations=len(options.alphas),
        evaluations=int(offsets.shape[0]),
        metric="mind_sad",
        metric_before=before,
        metric_after=after,
        seconds=time.perf_counter() - t0,
    )
    log.info(
        "discrete: %d control points, %d offsets (radius %d voxels of %.1f mm); MIND %.4f -> "
        "%.4f; displacement up to %.1f mm",
        int(active.sum()),
        offsets.shape[0],
        radius,
        h,
        before,
        after,
        float(magnitude.max()) if magnitude.size else 0.0,
    )
    if not after <= before:  # the search made the match worse: keep the affine start
        log.warning(
            "discrete stage did not improve the MIND match (%.4f -> %.4f): not used", before, after
        )
        return np.zeros(level.shape + (3,), np.float32), report
    return u, report
