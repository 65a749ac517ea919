"""Cubic B-spline free-form deformation, one pyramid level at a time (L-BFGS-B).

On each level the map is ``(id + u0) ∘ (id + B c)``: ``u0`` is everything the coarser levels
found (upsampled, kept fixed) and ``B c`` the cubic B-spline field of this level's control grid.
Each coefficient is bounded by 0.4 control spacings along its axis, the sufficient condition of
Choi & Lee (2000) for an injective B-spline map, so every level's increment is fold-free and so
is their composition.

Cost = metric(reference, floating(T(p + u))) + bending_weight * L^2 * bending energy(c), L the
mean control spacing in mm (which makes the weight dimensionless).  The gradient with respect to
c is B^T (dcost/du) (exact adjoint; the Jacobian of u0 at the displaced points is neglected)
plus the exact bending gradient.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy.optimize import Bounds

from . import ops
from .lbfgsb import minimize_lbfgsb_scipy
from .level import Level, interior_level
from .options import FFDOptions
from .result import LevelReport
from .transforms import AffineTransform

__all__ = ["run_ffd_level", "control_spacing_vox", "minimize_lbfgsb"]

log = logging.getLogger("ctreg")


#: The finest control grid, in voxels of its level: finer grids fit noise on coarse scans.
MIN_CONTROL_SPACING_VOX = 4


def control_spacing_vox(control_spacing_mm: float, spacing) -> tuple[int, int, int]:
    return tuple(
        max(MIN_CONTROL_SPACING_VOX, int(round(control_spacing_mm / s)))  # type: ignore[return-value]
        for s in np.asarray(spacing, float)
    )


#: Coefficient bound, in control spacings (Choi & Lee's injectivity condition is ~0.40).
MAX_COEFFICIENT = 0.4


#: Iterations an L-BFGS run makes before stop_when_slow may end it (the first steps are short
#: line searches whose decrease says little about convergence).
MIN_ITERATIONS = 3


def stop_when_slow(tolerance: float):
    """An L-BFGS-B callback that ends the run (StopIteration) once an iteration, from the
    MIN_ITERATIONS-th on, lowered the cost by less than ``tolerance`` times its magnitude."""
    costs: list[float] = []

    def callback(intermediate_result):
        costs.append(float(intermediate_result.fun))
        if tolerance > 0 and len(costs) >= MIN_ITERATIONS:
            prev, cur = costs[-2], costs[-1]
            if prev - cur < tolerance * max(abs(prev), 1e-12):
                raise StopIteration

    return callback


#: An L-BFGS-B run also ends once STALL_EVALUATIONS evaluations in a row have not lowered the
#: best cost by STALL_TOLERANCE of its magnitude: a line search that cannot find a decrease (an
#: interpolated image's gradient is not the exact derivative of its cost) otherwise spends the
#: rest of ``maxfun`` on points that do not differ (on the sample's LNCC level: 28 of 33
#: evaluations within 3e-7 of the best, then ABNORMAL_TERMINATION_IN_LNSRCH).
STALL_EVALUATIONS = 6
STALL_TOLERANCE = 1e-6


class _Stalled(Exception):
    pass


def minimize_lbfgsb(fun, x0: np.ndarray, *, options: dict, callback, bounds=None):
    """``scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", ...)`` (computed by
    ``ctreg.lbfgsb`` without minimize's per-variable Python loops) that also stops on a stall
    (see STALL_EVALUATIONS).  Returns ``(x, cost, iterations)``: L-BFGS-B's result, or
    on a stall the best point evaluated and its cost."""
    best: list = [np.inf, None]
    since = [0]  # evaluations since the best cost last dropped by more than the tolerance
    nit = [0]

    def f(x):
        value, grad = fun(x)
        if value < best[0] - STALL_TOLERANCE * abs(best[0]) or best[1] is None:
            since[0] = 0
        else:
            since[0] += 1
        if value < best[0] or best[1] is None:
            best[:] = [value, x.copy()]
        if since[0] >= STALL_EVALUATIONS:
            raise _Stalled
        return value, grad

    def cb(intermediate_result):
        nit[0] += 1
        callback(intermediate_result)

    try:
        x, cost, iterations = minimize_lbfgsb_scipy(
            f, x0, bounds=bounds, options=options, callback=cb
        )
    except _Stalled:
        return best[1], float(best[0]), nit[0]
    return x, float(cost), int(iterations)


def options_metric(options: FFDOptions, level_number: int) -> str:
    """The metric of B-spline level ``level_number`` (``FFDOptions.metric`` and
    ``first_level_metric``)."""
    if not isinstance(options.metric, str):
        return options.metric[level_number]
    if level_number == 0 and options.first_level_metric is not None and len(options.levels_mm) > 1:
        return options.first_level_metric
    return options.metric


def run_ffd_level(
    level: Level,
    transform: AffineTransform,
    u0: np.ndarray | None,
    options: FFDOptions,
    level_number: int,
) -> tuple[np.ndarray, LevelReport]:
    """Optimise this level's control grid; returns the new dense displacement and the report."""
    t0 = time.perf_counter()
    # The metric counts the voxels mapped at least a voxel inside the floating data at the
    # level's start (level.interior_level): otherwise samples crossing into missing data (a
    # rotated or cut field of view) make the cost jump and the line search fail (on a popi pair
    # rotated by 9 degrees: 30 evaluations for 10 iterations, TRE p95 0.29 mm; with it 22 for 20
    # and 0.21 mm).
    level = interior_level(level, transform, u_frame=u0)
    spacing = tuple(float(s) for s in level.spacing)
    tvox = control_spacing_vox(options.control_spacing_mm[level_number], spacing)
    grid = ops.bspline_grid_shape(level.shape, tvox)
    n = int(np.prod(grid)) * 3
    t_mm = np.asarray(tvox, float) * np.asarray(spacing)
    lam = float(options.bending_weight) * float(np.mean(t_mm)) ** 2
    bound = np.broadcast_to(MAX_COEFFICIENT * t_mm, grid + (3,)).ravel()
    # a Bounds object, not (n, 2) pairs, which scipy converts in a Python loop on every call
    bounds = Bounds(-bound, bound)
    metric = options_metric(options, level_number)
    last: list = [None, None]  # the last evaluated x and its dense field

    def dense(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if last[0] is not None and np.array_equal(x, last[0]):
            return last[1]
        c = np.ascontiguousarray(x.reshape(grid + (3,)), dtype=np.float32)
        inc = ops.bspline_to_dense(c, tvox, level.shape)
        out = (inc if u0 is None else ops.compose_fields(u0, inc, spacing)), c
        last[:] = [x.copy(), out]
        return out

    costs: list[float] = []  # of every evaluation, in order

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = evaluate(x)
        costs.append(total)
        return total, grad

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        u, c = dense(x)
        warped, valid, grad_w = level.warp_with_gradient(transform, u)
        mask = level.metric_mask(valid)
        if not mask.any():
            return 1.0, np.zeros(n)
        cost, g = level.metric(
            metric, warped, mask, warped_gradient=grad_w, lncc_radius_mm=options.lncc_radius_mm
        )
        gc = ops.bspline_adjoint(g, tvox, grid).astype(np.float64).ravel()
        total = float(cost)
        if lam:
            be, gbe = ops.bending_energy(c, tvox, spacing)
            total += lam * float(be)
            gc += lam * gbe.astype(np.float64).ravel()
        return total, gc

    # L-BFGS-B evaluates x0 first and returns the cost of the point it returns (res.fun), so
    # the start and end costs need no evaluations of their own.
    x0 = np.zeros(n)
    x_best, after, nit = minimize_lbfgsb(
        objective,
        x0,
        bounds=bounds,
        options={
            "maxiter": options.iterations[level_number],
            "maxfun": 2 * options.iterations[level_number] + 10,
            "maxcor": 8,
            "maxls": 8,
            "ftol": 1e-10,
            "gtol": 1e-12,
        },
        callback=stop_when_slow(options.tolerance),
    )
    before = costs[0]
    if not after <= before:  # never make it worse (nor return a NaN cost)
        x_best = np.zeros(n)
        after = before
    u, _ = dense(x_best)
    report = LevelReport(
        stage="bspline",
        level=level_number,
        spacing_mm=list(spacing),
        iterations=nit,
        evaluations=len(costs),
        metric=metric,
        metric_before=before,
        metric_after=after,
        seconds=time.perf_counter() - t0,
        extra={"control_spacing_vox": list(tvox), "control_grid": list(grid)},
    )
    log.debug(
        "bspline level %d: %s %.5f -> %.5f (%d iterations)",
        level_number,
        metric,
        before,
        after,
        nit,
    )
    return np.ascontiguousarray(u, dtype=np.float32), report
