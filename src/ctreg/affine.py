"""Rigid then affine alignment, one pyramid level at a time (L-BFGS-B on analytic gradients).

The transform maps a reference world point p to ``A (p - c) + c + t`` in the floating scan,
c being the centre of the reference body.  Parameters are scaled so that one unit moves points
by about one millimetre (see ``transforms.affine_from_params``), which keeps L-BFGS well
conditioned.  The metric's gradient with respect to the displacement at every voxel is reduced
to the 12 parameters exactly: sums of g and of g (p - c)^T, then the chain rule through A(θ).
"""

from __future__ import annotations

import logging
import time
from typing import cast

import numpy as np
from . import ops
from .ffd import minimize_lbfgsb, stop_when_slow
from .level import Level, interior_level
from .options import AffineOptions
from .result import LevelReport
from .transforms import (
    N_AFFINE,
    N_RIGID,
    PARAM_RADIUS_MM,
    AffineTransform,
    affine_matrix_derivatives,
)

__all__ = ["run_affine_level", "rotation_search"]

log = logging.getLogger("ctreg")


#: L-BFGS-B stops when an iteration lowers the cost by less than this fraction.  The cost of a
#: trilinearly resampled image is smooth only to ~1e-7 relative; a tighter tolerance ends in
#: failed line searches (3-4x the evaluations on the cip-ct64 pair, the same optimum to 1e-10).
FTOL = 1e-6

#: A phase also ends (from its third iteration on) when an iteration lowers the cost by less
#: than this fraction.  Near the optimum the cost is flat to ~1e-7 and L-BFGS-B's line search
#: then fails, restarts and fails again: on cip-ct64 14 of the rigid phase's 24 evaluations
#: came after the last gain.  1e-5 of an NCC near -0.95 is far below any visible change.
TOLERANCE = 1e-5


#: Metrics whose derivative with respect to a warped intensity w is a·r + b·w + c (r the
#: reference intensity): their value and exact affine gradient come from one fused pass over
#: the level (ops.affine_moments) instead of a warped image, a gradient image and reductions.
FUSED_METRICS = ("ssd", "ncc")


def cost_from_moments(metric: str, s: np.ndarray) -> tuple[float, np.ndarray]:
    """(cost, (a, b, c)) with dcost/dw = a·r + b·w + c, from affine_moments' first six sums.
    Same conventions as ops.ssd and ops.ncc (a flat image over the mask gives 0 and no
    gradient)."""
    n, sr, sw, srr, sww, srw = (float(v) for v in s[:6])
    if metric == "ssd":
        return (sww - 2.0 * srw + srr) / n, np.array([-2.0 / n, 2.0 / n, 0.0])
    mr, mw = sr / n, sw / n
    var_r, var_w = srr - n * mr * mr, sww - n * mw * mw
    if var_r <= 1e-12 * srr or var_w <= 1e-12 * sww:
        return 0.0, np.zeros(3)
    cov = srw - n * mr * mw
    d = np.sqrt(var_r * var_w)
    a, b = -1.0 / d, cov / (d * var_w)
    return -cov / d, np.array([a, b, -(a * mr + b * mw)])


class _Objective:
    """cost(θ) and its gradient for one level; θ has 6 (rigid) or 12 entries."""

    def __init__(
        self,
        level: Level,
        centre: np.ndarray,
        metric: str,
        fixed: np.ndarray,
        *,
        fused: bool = True,
    ):
        self.level = level
        self.centre = centre
        self.metric = metric
        # fused=False: the general path (warped image, its gradient, metric, reductions) that
        # the fused one is tested against.
        self.fused = fused and metric in FUSED_METRICS
        self.fixed = fixed  # full 12-vector; the optimised entries overwrite its head
        self.costs: list[float] = []  # of every call (the optimiser's evaluations), in order
        # Σ g ⊗ (p - c) = (Σ g ⊗ idx) (out_to_world linear)^T + (Σ g) ⊗ (p0 - c)
        to_world = level.frame.frame_to_world_matrix() @ level.out_to_frame
        self.idx_to_world_lin = to_world[:3, :3]
        self.p0_minus_c = to_world[:3, 3] - centre
        self.ramps = [np.arange(n, dtype=np.float64) for n in level.shape]

    def full(self, theta: np.ndarray) -> np.ndarray:
        p = self.fixed.copy()
        p[: len(theta)] = theta
        return p

    def transform(self, theta: np.ndarray) -> AffineTransform:
        return AffineTransform.from_params(self.full(theta), self.centre)

    def _fused(self, theta: np.ndarray, want_grad: bool) -> tuple[float, np.ndarray | None]:
        n = len(theta)
        t = self.transform(theta)
        lv = self.level
        to_index = lv.frame_to_floating_index(t)
        s = ops.affine_moments(
            lv.floating.array,
            lv.floating_gradient_components(),
            lv.reference,
            lv.mask,
            to_index @ lv.out_to_frame,
            valid_min=lv.clip_low - 0.5,
        )
        if s[0] == 0:
            return 1.0, np.zeros(n)
        cost, coef = cost_from_moments(self.metric, s)
        if not want_grad:
            return cost, None
        per = s[6:].reshape(3, 12)
        lin = to_index[:3, :3]  # frame mm -> floating index: index gradients to frame ones
        s0 = lin.T @ (coef @ per[:, :3])
        s_idx = lin.T @ (coef @ per[:, 3:]).reshape(3, 3)
        return cost, self._chain(theta, t, s0, s_idx)

    def value(self, theta: np.ndarray) -> float:
        if self.fused:
            return float(self._fused(theta, want_grad=False)[0])
        t = self.transform(theta)
        warped, valid = self.level.warp(t)
        mask = self.level.metric_mask(valid)
        if not mask.any():
            return 1.0
        cost, _ = self.level.metric(self.metric, warped, mask)
        return float(cost)

    def _chain(
        self, theta: np.ndarray, t: AffineTransform, s0: np.ndarray, s_idx: np.ndarray
    ) -> np.ndarray:
        """Parameter gradient from Σ g and Σ g idxᵀ (g: dcost/du in frame components, idx the
        level index)."""
        # grad_r F(T(D r + o)) = (A D)^T grad F  =>  grad F = (A D)^-T grad_r.
        n = len(theta)
        ad = t.matrix @ self.level.frame.direction
        to_world = np.linalg.inv(ad).T
        s0_w = to_world @ s0
        s1_w = to_world @ (s_idx @ self.idx_to_world_lin.T + np.outer(s0, self.p0_minus_c))
        grad = np.empty(n)
        grad[:3] = s0_w
        dA = affine_matrix_derivatives(self.full(theta), n)
        grad[3:] = np.tensordot(dA[3:], s1_w, axes=([1, 2], [0, 1]))  # Σ s1_w ⊙ dA[m]
        return grad

    @property
    def evaluations(self) -> int:
        return len(self.costs)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        cost, grad = self._evaluate(theta)
        self.costs.append(cost)
        return cost, grad

    def _evaluate(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if self.fused:
            cost, grad = self._fused(theta, want_grad=True)
            return float(cost), cast(np.ndarray, grad)  # want_grad: not None
        n = len(theta)
        t = self.transform(theta)
        warped, valid, grad_w = self.level.warp_with_gradient(t)
        mask = self.level.metric_mask(valid)
        if not mask.any():
            # No overlap: a flat, high cost tells the line search to step back.
            return 1.0, np.zeros(n)
        cost, g = self.level.metric(self.metric, warped, mask, warped_gradient=grad_w)
        g64 = g.astype(np.float64)
        s0 = g64.sum(axis=(0, 1, 2))  # Σ g (frame components)
        s_idx = np.empty((3, 3))  # Σ g_a * idx_b
        s_idx[:, 0] = np.tensordot(g64.sum(axis=(1, 2)), self.ramps[0], axes=([0], [0]))
        s_idx[:, 1] = np.tensordot(g64.sum(axis=(0, 2)), self.ramps[1], axes=([0], [0]))
        s_idx[:, 2] = np.tensordot(g64.sum(axis=(0, 1)), self.ramps[2], axes=([0], [0]))
        return float(cost), self._chain(theta, t, s0, s_idx)


def rotation_search(
    level: Level, centre: np.ndarray, params: np.ndarray, options: AffineOptions
) -> np.ndarray:
    """Best rotation about the world z axis on a coarse grid of angles (keeps the rest)."""
    if options.rotation_search_deg <= 0:
        return params
    level = interior_level(level, AffineTransform.from_params(params, centre))
    obj = _Objective(level, centre, options.metric, params)
    half = options.rotation_search_deg
    angles = np.arange(-half, half + 1e-9, options.rotation_search_step_deg)
    best, best_cost = params, obj.value(params[:N_RIGID])
    for deg in angles:
        trial = params.copy()
        trial[5] = params[5] + np.deg2rad(deg) * PARAM_RADIUS_MM
        cost = obj.value(trial[:N_RIGID])
        if cost < best_cost - 1e-6:
            best, best_cost = trial, cost
    return best


def run_affine_level(
    level: Level, centre: np.ndarray, params: np.ndarray, options: AffineOptions, level_number: int
) -> tuple[np.ndarray, list[LevelReport]]:
    """Optimise the transform on one level: rigid first on the coarsest level, then affine.

    Returns the new 12 parameters and the level reports.
    """
    reports = []
    iterations = options.iterations[level_number]
    phases = [("rigid", N_RIGID)]
    if level_number > 0:
        phases = []
    if options.affine:
        phases.append(("affine", N_AFFINE))
    elif level_number > 0:
        phases.append(("rigid", N_RIGID))
    for name, n in phases:
        t0 = time.perf_counter()
        phase_level = interior_level(level, AffineTransform.from_params(params, centre))
        obj = _Objective(phase_level, centre, options.metric, params)
        x_best, after, nit = minimize_lbfgsb(
            obj,
            params[:n],
            options={
                "maxiter": iterations,
                "maxfun": 2 * iterations + 10,
                "maxls": 8,
                "maxcor": 10,
                "ftol": FTOL,
                "gtol": 1e-8,
            },
            callback=stop_when_slow(TOLERANCE),
        )
        # L-BFGS-B evaluates the start first and returns the cost of the point it returns
        before = obj.costs[0]
        new = obj.full(x_best)
        if after <= before:
            params = new
        else:  # never return something worse than the start
            after = before
        reports.append(
            LevelReport(
                stage=name,
                level=level_number,
                spacing_mm=[float(s) for s in level.spacing],
                iterations=nit,
                evaluations=obj.evaluations,
                metric=options.metric,
                metric_before=float(before),
                metric_after=float(after),
                seconds=time.perf_counter() - t0,
            )
        )
        log.debug(
            "%s level %d: %s %.5f -> %.5f in %d iterations",
            name,
            level_number,
            options.metric,
            before,
            after,
            nit,
        )
    return params, reports
