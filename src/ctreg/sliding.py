"""Sliding at the pleura: a separate field outside the lungs, joined to the lung field.

Between two breaths the lungs slide along the chest wall: the displacement is continuous in
the direction normal to the pleura (no gap opens, nothing overlaps) but jumps tangentially.
The lung-focused stages (``ctreg.lung_focus``) fit the motion inside the lungs; beyond the
focus their field is only a smooth extension of the lungs' motion, so the chest wall, the
mediastinum and the abdomen of the warped scan are not registered.

With ``RegistrationOptions.sliding`` on (``register(..., sliding=True)``):

1. **outside field**: a coarse B-spline FFD (``ctreg.ffd``, levels ``SlidingOptions.levels_mm``)
   from the affine alone, whose metric counts the reference body minus the reference lungs
   eroded by ``erode_mm`` (the lung border stays in, so the wall's edge is seen);
   ``outside_level``;
2. **join** on the grid of the inside field, with a weight ``w`` (``outside_weight``) 0 inside
   the reference lungs and on their boundary, rising smoothly to 1 across the ``band_mm`` outside
   them (centred on the boundary, the outside field dragged the lung surface of EMPIRE10-01, whose
   lung-only images give it nothing to match there: Dice 0.956 -> 0.890). Blending the two
   displacements folds wherever they disagree in the direction normal to the pleura by more than
   about the band (measured on the popi pair: 5347 folded voxels with a 3 mm band, none only from 12
   mm), so the join is made in the log domain instead: ``r`` solves ``(id + u_in) ∘ (id + r) = id +
   u_out`` (fixed point), ``v = w s`` with ``exp(s) = r`` (fixed point), and the map is ``(id +
   u_in) ∘ exp(v)``: ``u_in`` where ``w = 0``, ``u_out`` where ``w = 1`` (to ~0.01 mm), and in the
   band a tangential jump becomes a shear flow, a normal mismatch a compression
   or expansion, never a fold in the continuum;
   Skipped (``sliding_no_outside_contrast``) where the reference shows no contrast outside
   the lungs (``MIN_OUTSIDE_STD_HU``: lung-only images such as EMPIRE10's);
3. **fold check**: the Jacobian determinant of the joined map on that grid must stay > 0
   wherever the inside field's does (discretisation can still fold a narrow band: popi, 3 mm
   band, 407 voxels; 6 mm none); if not, the band is doubled (at most
   ``MAX_WIDENINGS`` times), then the inside field is kept and the report names the
   fallback (``report["sliding"]["reason"]``).  ``ctreg.pipeline`` checks the full-resolution
   Jacobian again and falls back the same way (``sliding_folded_full_resolution``).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from . import ops
from .ffd import run_ffd_level
from .level import Level
from .options import FFDOptions, RegistrationOptions
from .pyramid import level_factors
from .transforms import AffineTransform

__all__ = [
    "lungs_on_level",
    "outside_level",
    "outside_weight",
    "join_fields",
    "run_sliding_stage",
    "sliding_stage",
    "join_checked",
    "MAX_WIDENINGS",
]

log = logging.getLogger("ctreg")

#: How many times a folding join is retried with a doubled band before the fallback.
MAX_WIDENINGS = 2

#: The outside field needs image content outside the lungs: with fewer body voxels there (on
#: the coarsest level) or a smaller standard deviation of their clipped HU, sliding is skipped
#: (``sliding_no_outside_contrast``).  Lung-only images (EMPIRE10: 0 HU outside the lungs)
#: give the outside fit nothing but the lung rim; there, sliding lowered the lung Dice of
#: EMPIRE10-01 (x2) from 0.956 to 0.933 (the coarse outside field disagrees with the lung
#: surface, and the join compresses that mismatch into the first mm outside the lungs).
MIN_OUTSIDE_VOXELS = 1000
MIN_OUTSIDE_STD_HU = 30.0

#: The narrowest band, in voxels of the grid of the join.
MIN_BAND_VOX = 1.5


def lungs_on_level(lungs: np.ndarray, factors, shape) -> np.ndarray:
    """The lung indicator (float32 0/1) at the voxels of a level whose grid is the cropped
    reference grid subsampled by ``factors`` (as ``build_level`` subsamples the body)."""
    sl = tuple(slice(None, None, int(f)) for f in factors)
    out = np.ascontiguousarray(lungs[sl], dtype=np.float32)
    if out.shape != tuple(shape):
        raise AssertionError(f"lungs {out.shape} and level {tuple(shape)} grids differ")
    return out


def _smoothed(indicator: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(indicator, sigma_mm / spacing, mode="nearest",
    truncate=4)`` by the native kernel (``ops.smooth``)."""
    return ops.smooth(
        np.ascontiguousarray(indicator, dtype=np.float32),
        float(sigma_mm),
        tuple(float(s) for s in spacing),
        truncate=4.0,
    )


#: Phi(1): a lung indicator smoothed by a Gaussian of sigma e is above this value exactly where
#: a planar boundary lies more than e away (the erosion of ``outside_level``).
_PHI_1 = 0.8413447


def outside_level(level: Level, lungs: np.ndarray, erode_mm: float) -> Level:
    """The level with its metric mask restricted to the body outside the lungs eroded by about
    ``erode_mm`` (``lungs``: the indicator on the level grid; the erosion keeps the voxels whose
    indicator smoothed by a Gaussian of sigma ``erode_mm`` is at most Phi(1), i.e. more than
    ``erode_mm`` from a planar boundary)."""
    if erode_mm > 0:
        keep = _smoothed(lungs, level.spacing, erode_mm) <= _PHI_1
    else:
        keep = lungs < 0.5
    mask = np.ascontiguousarray(level.mask & keep.view(np.uint8))
    return dataclasses.replace(level, mask=mask)


def outside_weight(lungs: np.ndarray, spacing, band_mm: float) -> np.ndarray:
    """w: 0 inside the lungs and on their boundary, rising to 1 across the ``band_mm`` outside
    them: one minus the lungs dilated by ``band_mm / 2`` (``_PHI_1`` threshold of the indicator
    smoothed by that sigma) and smoothed by a Gaussian of sigma ``band_mm / 4`` (a planar
    boundary: w = Phi((d - band / 2) / sigma), d the signed distance; w(0) = 0.023; 0 and 1
    exactly 4 sigma away).  The lung surface thus moves with the inside field (which matched
    it), the jump sits just outside the pleura."""
    half = 0.5 * float(band_mm)
    grown = (_smoothed(lungs, spacing, half) >= 1.0 - _PHI_1).astype(np.float32)
    w = 1.0 - _smoothed(grown, spacing, 0.25 * float(band_mm))
    w[w < 1e-4] = 0.0
    w[w > 1.0 - 1e-4] = 1.0
    return w.astype(np.float32)


#: Fixed-point iterations for the outside correction ``r`` and for its velocity (join_fields).
#: On the popi pair (2 mm grid, 6.8 M voxels, 2 threads), beyond the band the joined map
#: differs from ``u_out`` by p99 0.08 mm with 1 / 1 (1.1 s), 0.03 mm with 3 / 2 (2.5 s),
#: 0.38 mm with 1 / 0 (0.5 s).
CORRECTION_ITERATIONS = 1
LOG_ITERATIONS = 1


def join_fields(u_in: np.ndarray, u_out: np.ndarray, weight: np.ndarray, spacing) -> np.ndarray:
    """The joined field (module docstring, step 2) on the grid of ``u_in`` (all (z, y, x, 3)
    frame mm; ``weight`` (z, y, x): 0 where ``u_in`` holds, 1 where ``u_out`` does)."""
    sp = tuple(float(s) for s in spacing)
    w = np.asarray(weight, np.float32)[..., None]
    # r: (id + u_in) ∘ (id + r) = id + u_out, i.e. r = u_out - u_in ∘ (id + r)
    r = np.ascontiguousarray(u_out - u_in, dtype=np.float32)
    for _ in range(CORRECTION_ITERATIONS):
        r = np.ascontiguousarray(u_out - (ops.compose_fields(u_in, r, sp) - r), dtype=np.float32)
    # velocity v = w s, with exp(v) = r where w = 1 (s from r by fixed-point steps)
    s = r.copy()
    e = None
    for it in range(LOG_ITERATIONS + 1):
        v = np.ascontiguousarray(w * s, dtype=np.float32)
        e = ops.exp_field(v, sp)
        if it < LOG_ITERATIONS:
            s += w * (r - e)
    return np.ascontiguousarray(ops.compose_fields(u_in, e, sp), dtype=np.float32)


def _folds(u: np.ndarray, spacing, det_a: float) -> tuple[int, float]:
    jac = ops.jacobian_determinant(np.ascontiguousarray(u, np.float32), tuple(spacing))
    jac *= np.float32(det_a)
    return int(np.count_nonzero(jac <= 0)), float(jac.min())


def run_sliding_stage(
    level_fn,
    transform: AffineTransform,
    u_in: np.ndarray,
    u_level: Level,
    lungs: np.ndarray,
    crop_spacing,
    opts: RegistrationOptions,
):
    """(field on ``u_level``'s grid, report dict, level reports).

    ``level_fn(mm)``: the body-masked pyramid level; ``lungs``: the reference lung mask on the
    cropped reference grid; ``u_in``: the inside (lung-focused) field on ``u_level``.
    """
    so = opts.sliding
    t0 = time.perf_counter()
    info: dict = {"used": False}
    ffd_opts = FFDOptions(
        levels_mm=so.levels_mm,
        control_spacing_mm=so.control_spacing_mm,
        iterations=so.iterations,
        metric=so.metric,
        first_level_metric=None,
        lncc_radius_mm=opts.ffd.lncc_radius_mm,
        bending_weight=opts.ffd.bending_weight,
        tolerance=opts.ffd.tolerance,
    )
    reports = []
    u: np.ndarray | None = None
    prev: Level | None = None
    for li, mm in enumerate(so.levels_mm):
        lv = level_fn(mm)
        ind_l = lungs_on_level(lungs, level_factors(crop_spacing, mm), lv.shape)
        if li == 0:
            vals = lv.reference[(lv.mask > 0) & (ind_l < 0.5)]
            std = float(vals.std()) if vals.size >= MIN_OUTSIDE_VOXELS else 0.0
            info["outside_std_hu"] = round(std, 1)
            if std < MIN_OUTSIDE_STD_HU:
                log.warning(
                    "sliding off: the reference shows no contrast outside the lungs "
                    "(std %.1f HU) [sliding_no_outside_contrast]",
                    std,
                )
                info["reason"] = "sliding_no_outside_contrast"
                return u_in, info, []
        lv = outside_level(lv, ind_l, so.erode_mm)
        u0: np.ndarray | None = None
        if u is not None and prev is not None:
            u0 = ops.resample_field(u, tuple(prev.spacing), lv.shape, tuple(lv.spacing))
        u, rep = run_ffd_level(lv, transform, u0, ffd_opts, li)
        rep.stage = "sliding"
        reports.append(rep)
        prev = lv
    assert u is not None and prev is not None  # SlidingOptions has at least one level
    sp = tuple(float(s) for s in u_level.spacing)
    u_out = ops.resample_field(u, tuple(prev.spacing), u_level.shape, sp)
    u_factors = np.rint(np.asarray(u_level.spacing) / np.asarray(crop_spacing)).astype(int)
    ind = lungs_on_level(lungs, u_factors, u_level.shape)
    info["seconds_outside"] = round(time.perf_counter() - t0, 3)
    joined, checked = join_checked(
        u_in, u_out, ind, sp, float(np.linalg.det(transform.matrix)), so.band_mm
    )
    info.update(checked)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return joined, info, reports


def join_checked(
    u_in: np.ndarray,
    u_out: np.ndarray,
    lungs: np.ndarray,
    spacing,
    det_a: float,
    band_mm: float,
    max_widenings: int = MAX_WIDENINGS,
) -> tuple[np.ndarray, dict]:
    """``join_fields`` with the fold check (module docstring, step 3): (field, report entry).
    ``lungs``: the lung indicator on the grid of the fields (``lungs_on_level``).

    The join is kept when it has no more voxels with Jacobian <= 0 (``det_a``: the affine's
    determinant, which multiplies the field's) than ``u_in`` alone; else the bands are doubled
    up to ``max_widenings`` times; else ``u_in`` is returned with reason ``sliding_folded``.
    The band is at least ``MIN_BAND_VOX`` voxels of the grid."""
    fold_in, min_in = _folds(u_in, spacing, det_a)
    band = max(float(band_mm), MIN_BAND_VOX * float(max(spacing)))
    tried = []
    for attempt in range(max_widenings + 1):
        joined = join_fields(u_in, u_out, outside_weight(lungs, spacing, band), spacing)
        fold, jmin = _folds(joined, spacing, det_a)
        tried.append(
            {"band_mm": round(band, 3), "folded_voxels": fold, "jacobian_min": round(jmin, 4)}
        )
        if fold <= fold_in:
            return joined, {
                "used": True,
                "reason": "ok" if attempt == 0 else "sliding_widened",
                "band_mm": round(band, 3),
                "attempts": tried,
                "jacobian_min_inside_only": round(min_in, 4),
            }
        band *= 2.0
    log.warning(
        "sliding: the joined field folds even with a %.0f mm band; keeping the "
        "lung-focused field [sliding_folded]",
        band / 2,
    )
    return u_in, {
        "used": False,
        "reason": "sliding_folded",
        "attempts": tried,
        "jacobian_min_inside_only": round(min_in, 4),
    }


def sliding_stage(
    level_fn,
    transform: AffineTransform,
    u_in: np.ndarray | None,
    u_level: Level | None,
    lungs: np.ndarray | None,
    crop_spacing,
    opts: RegistrationOptions,
):
    """``run_sliding_stage`` when there is an inside field and a lung mask; otherwise the
    field unchanged and the reason (``sliding_no_lungs``, ``sliding_no_inside_field``)."""
    if lungs is None or not np.any(lungs):
        log.warning("sliding off: no reference lungs [sliding_no_lungs]")
        return u_in, {"used": False, "reason": "sliding_no_lungs"}, []
    if u_in is None or u_level is None:
        return u_in, {"used": False, "reason": "sliding_no_inside_field"}, []
    return run_sliding_stage(level_fn, transform, u_in, u_level, lungs, crop_spacing, opts)
