"""Diffeomorphic (log-domain) demons with symmetric forces, one pyramid level at a time.

The deformable map is ``(id + u_outer) ∘ exp(v)``: ``u_outer`` is what the B-spline stage found
(fixed), ``v`` a stationary velocity field refined here.  Each iteration computes demons forces
from the reference and the warped floating scan (symmetric: the mean of both gradients), smooths
them (fluid-like regularisation), adds them to v, smooths v (diffusion-like) and recomputes
exp(v) by scaling and squaring — so the result stays invertible.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from . import ops
from .level import SENTINEL, Level
from .options import DemonsOptions
from .result import LevelReport
from .transforms import AffineTransform

__all__ = ["run_demons_level"]

log = logging.getLogger("ctreg")


def _converged(history: list[float], patience: int, tolerance: float) -> bool:
    """True when the last ``patience`` values did not lower the best of the earlier ones by a
    fraction ``tolerance`` (never with tolerance 0)."""
    if tolerance <= 0 or len(history) <= patience:
        return False
    earlier = min(history[:-patience])
    return min(history[-patience:]) > earlier * (1.0 - tolerance)


#: Quantiles matched by ``match_floating_intensities`` (0 .. 100 % in 128 steps); beyond the
#: extremes the map continues with slope 1.
_QUANTILES = np.linspace(0.0, 1.0, 128)


def match_floating_intensities(
    level: Level, transform: AffineTransform, u_outer: np.ndarray | None
) -> Level:
    """The level with its floating scan's intensities mapped monotonically so that, inside the
    metric mask and through the current map, their histogram matches the reference's
    (quantile matching, as ITK's HistogramMatchingImageFilter does before demons).

    Demons forces assume the same tissue has the same value in both scans; between two breaths
    lung density changes (inhale is darker).  A monotone map keeps every edge where it is and
    removes the global part of the density change.  Missing data (the SENTINEL) is left as it
    is.  On by default (``DemonsOptions.match_intensities``): with lung images it halved the
    TRE on the realistic popi pair (docs/lungs.md).
    """
    warped, valid = level.warp(transform) if u_outer is None else level.warp(transform, u_outer)
    mask = level.metric_mask(valid).astype(bool)
    if np.count_nonzero(mask) < 1000:
        return level
    ref_q = np.quantile(level.reference[mask], _QUANTILES)
    flt_q = np.quantile(warped[mask], _QUANTILES)
    keep = np.concatenate([[True], np.diff(flt_q) > 1e-3])  # np.interp needs increasing xp
    flt_q, ref_q = flt_q[keep], ref_q[keep]
    if flt_q.size < 2:
        return level
    flt_q = np.concatenate([[flt_q[0] - 1e4], flt_q, [flt_q[-1] + 1e4]])
    ref_q = np.concatenate([[ref_q[0] - 1e4], ref_q, [ref_q[-1] + 1e4]])
    # np.where(arr > SENTINEL / 2, np.interp(arr, flt_q, ref_q), arr) in one native pass
    mapped = ops.map_piecewise_linear(level.floating.array, flt_q, ref_q, above=SENTINEL / 2)
    return dataclasses.replace(
        level, floating=level.floating.with_array(mapped), _floating_gradient=None
    )


def run_demons_level(
    level: Level,
    transform: AffineTransform,
    u_outer: np.ndarray | None,
    velocity: np.ndarray,
    options: DemonsOptions,
    level_number: int,
) -> tuple[np.ndarray, np.ndarray, LevelReport]:
    """Refine ``velocity`` on this level; returns it, the displacement of
    (id + u_outer) ∘ exp(velocity) and the report (metric: SSD of clipped HU)."""
    t0 = time.perf_counter()
    if options.match_intensities:
        level = match_floating_intensities(level, transform, u_outer)
    spacing = tuple(float(s) for s in level.spacing)
    sp = np.asarray(spacing)
    fluid = tuple(options.sigma_fluid_vox * sp)
    diffusion = tuple(options.sigma_diffusion_vox * sp)
    max_step = float(options.max_step_vox * sp.min())
    grad_r = level.reference_gradient
    history: list[float] = []
    v = np.ascontiguousarray(velocity, dtype=np.float32)
    best_v, best_e, best = v, None, np.inf
    iterations = 0
    last_evaluated = False  # whether the current v has been evaluated
    zero_start = not v.any()  # exp(0) = 0: the first warp needs no composition
    for it in range(options.iterations[level_number]):
        # (id + u_outer) ∘ exp(v), composed inside the resampling (not written)
        e = ops.exp_field(v, spacing, copy=False)
        if it == 0 and zero_start and u_outer is not None:
            warped, valid = level.warp(transform, u_outer)
        else:
            warped, valid = level.warp(transform, e, outer=u_outer)
        mask = level.metric_mask(valid)
        if not mask.any():
            break
        # the warped image's gradient is computed inside the kernel, row by row
        du, mse = ops.demons_forces(
            level.reference,
            warped,
            grad_r,
            None,
            mask=mask,
            kind=options.forces,
            max_step_mm=max_step,
            spacing=spacing,
        )
        history.append(float(mse))
        last_evaluated = True
        if mse < best:
            best, best_v, best_e = float(mse), v, e
        if _converged(history, options.patience, options.tolerance):
            break
        if options.sigma_fluid_vox > 0:
            du = ops.smooth(du, fluid, spacing)
        if options.sigma_diffusion_vox > 0:  # smooth(v + du), the sum formed inside the kernel
            v = ops.smooth(du, diffusion, spacing, add=v)
        else:
            v = v + du
        last_evaluated = False
        iterations = it + 1
    if not last_evaluated:  # evaluate the last iterate too, keep the best
        e = ops.exp_field(v, spacing, copy=False)
        warped, valid = level.warp(transform, e, outer=u_outer)
        mask = level.metric_mask(valid)
        if mask.any():
            final, _ = ops.ssd(level.reference, warped, mask=mask)
            history.append(float(final))
            if final < best:
                best, best_v, best_e = float(final), v, e
    if best_e is None:  # nothing was counted: the start is kept
        best_e = ops.exp_field(best_v, spacing, copy=False)
    if u_outer is not None:
        best_u = ops.compose_fields(u_outer, best_e, spacing)
    else:  # exp(v) may be v itself (no squaring needed): never hand out one array twice
        best_u = best_e.copy() if best_e is best_v else best_e
    report = LevelReport(
        stage="demons",
        level=level_number,
        spacing_mm=list(spacing),
        iterations=iterations,
        evaluations=len(history),
        metric="ssd",
        metric_before=history[0] if history else float("nan"),
        metric_after=best if np.isfinite(best) else float("nan"),
        seconds=time.perf_counter() - t0,
    )
    log.debug(
        "demons level %d: mse %.2f -> %.2f (%d iterations)",
        level_number,
        report.metric_before,
        report.metric_after,
        iterations,
    )
    return best_v, best_u, report
