"""Cubic B-spline free-form deformation, one pyramid level at a time (L-BFGS-B).

On each level the displacement is ``u = u0 + B c``: ``u0`` is everything the coarser levels
found (upsampled, kept fixed) and ``B c`` the cubic B-spline field of this level's control grid.
Cost = metric(reference, floating(T(p + u))) + bending_weight * bending energy(c); its gradient
with respect to c is B^T (dcost/du) plus the bending gradient (exact adjoint, no finite
differences).
"""
from __future__ import annotations

import logging
import time

import numpy as np
from scipy.optimize import minimize

from . import ops
from .level import Level
from .options import FFDOptions
from .result import LevelReport
from .transforms import AffineTransform

__all__ = ["run_ffd_level", "control_spacing_vox"]

log = logging.getLogger("ctreg")


def control_spacing_vox(control_spacing_mm: float, spacing) -> tuple[int, int, int]:
    return tuple(max(1, int(round(control_spacing_mm / s))) for s in np.asarray(spacing, float))  # type: ignore[return-value]


def run_ffd_level(level: Level, transform: AffineTransform, u0: np.ndarray, options: FFDOptions,
                  level_number: int) -> tuple[np.ndarray, LevelReport]:
    """Optimise this level's control grid; returns the new dense displacement and the report."""
    t0 = time.perf_counter()
    spacing = tuple(float(s) for s in level.spacing)
    tvox = control_spacing_vox(options.control_spacing_mm[level_number], spacing)
    grid = ops.bspline_grid_shape(level.shape, tvox)
    n = int(np.prod(grid)) * 3
    lam = float(options.bending_weight)
    metric = options.metric
    evaluations = 0

    def dense(x: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(x.reshape(grid + (3,)), dtype=np.float32)
        return u0 + ops.bspline_to_dense(c, tvox, level.shape), c

    def cost_only(x: np.ndarray) -> float:
        u, c = dense(x)
        warped, valid = level.warp(transform, u)
        mask = level.metric_mask(valid)
        if not mask.any():
            return 1.0
        cost, _ = level.metric(metric, warped, mask, lncc_radius_mm=options.lncc_radius_mm)
        be = ops.bending_energy(c, tvox, spacing)[0] if lam else 0.0
        return float(cost) + lam * float(be)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        u, c = dense(x)
        warped, valid = level.warp(transform, u)
        mask = level.metric_mask(valid)
        if not mask.any():
            return 1.0, np.zeros(n)
        grad_w = ops.gradient(warped, spacing)
        cost, g = level.metric(metric, warped, mask, warped_gradient=grad_w,
                               lncc_radius_mm=options.lncc_radius_mm)
        gc = ops.bspline_adjoint(g, tvox, grid).astype(np.float64).ravel()
        total = float(cost)
        if lam:
            be, gbe = ops.bending_energy(c, tvox, spacing)
            total += lam * float(be)
            gc += lam * gbe.astype(np.float64).ravel()
        return total, gc

    x0 = np.zeros(n)
    before = cost_only(x0)
    res = minimize(objective, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": options.iterations[level_number],
                            "maxfun": 2 * options.iterations[level_number] + 10,
                            "maxcor": 8, "ftol": 1e-10, "gtol": 1e-12})
    after = cost_only(res.x)
    if after > before:  # never make it worse
        res.x[:] = 0.0
        after = before
    u, _ = dense(res.x)
    report = LevelReport(stage="bspline", level=level_number, spacing_mm=list(spacing),
                         iterations=int(res.nit), evaluations=evaluations, metric=metric,
                         metric_before=before, metric_after=after,
                         seconds=time.perf_counter() - t0,
                         extra={"control_spacing_vox": list(tvox), "control_grid": list(grid)})
    log.debug("bspline level %d: %s %.5f -> %.5f (%d iterations)", level_number, metric, before,
              after, res.nit)
    return np.ascontiguousarray(u, dtype=np.float32), report
