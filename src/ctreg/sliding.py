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
2. **join** on the grid of the inside field, with the signed distance ``d`` to the reference
   lung boundary (negative inside) and ``n`` its gradient (the pleura's normal)::

       u = u_in + w_t(d) P_t (u_out - u_in) + w_n(d) P_n (u_out - u_in)

   ``P_n = n n^T``, ``P_t = I - P_n``; ``w_t`` rises from 0 to 1 across ``band_mm`` centred
   on the boundary (the tangential jump: a shear, whose Jacobian is that of the two sides),
   ``w_n`` from 0 at the boundary to 1 at ``normal_band_mm`` outside (the normal component
   stays continuous: a normal mismatch spread over a narrow band would fold);
3. **fold check**: the Jacobian determinant of the joined map on that grid must stay > 0
   wherever the inside field's does; if not, the bands are doubled (at most
   ``MAX_WIDENINGS`` times), then the inside field is kept and the report names the
   fallback (``report["sliding"]["reason"]``).  ``ctreg.pipeline`` checks the full-resolution
   Jacobian again and falls back the same way (``sliding_folded_full_resolution``).
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import scipy.ndimage as ndi

from . import ops
from .ffd import run_ffd_level
from .level import Level
from .options import FFDOptions, RegistrationOptions
from .pyramid import level_factors
from .transforms import AffineTransform

__all__ = ["SignedDistance", "outside_level", "join_fields", "run_sliding_stage", "sliding_stage",
           "join_checked", "MAX_WIDENINGS", "DISTANCE_GRID_MM"]

log = logging.getLogger("ctreg")

#: The signed distance to the lung boundary is computed on a grid of about this spacing.
DISTANCE_GRID_MM = 1.5

#: How many times a folding join is retried with doubled bands before the fallback.
MAX_WIDENINGS = 2


class SignedDistance:
    """Signed distance (mm, negative inside) to the boundary of a mask on the cropped
    reference grid, computed once on a ~``DISTANCE_GRID_MM`` subsampled grid and sampled
    (trilinearly) on any level grid built by strided subsampling of the same grid."""

    def __init__(self, lungs: np.ndarray, spacing, grid_mm: float = DISTANCE_GRID_MM):
        self.spacing = np.asarray(spacing, float)
        self.factors = np.asarray(level_factors(self.spacing, grid_mm), int)
        sl = tuple(slice(None, None, int(f)) for f in self.factors)
        m = np.ascontiguousarray(lungs[sl], dtype=bool)
        sp = self.spacing * self.factors
        # voxel centres: half a voxel (mean spacing) between the two distance maps' zero sets
        half = 0.5 * float(np.mean(sp))
        if m.all() or not m.any():
            raise ValueError("SignedDistance: the lung mask is empty or fills its box")
        d_out = ndi.distance_transform_edt(~m, sampling=sp)
        d_in = ndi.distance_transform_edt(m, sampling=sp)
        self.grid = np.where(m, half - d_in, d_out - half).astype(np.float32)

    def on_level(self, factors, shape) -> np.ndarray:
        """The distance at the voxels of a level whose grid is the crop grid subsampled by
        ``factors`` (float32, ``shape``)."""
        scale = np.asarray(factors, float) / self.factors
        if np.all(scale == 1.0) and self.grid.shape == tuple(shape):
            return self.grid
        coords = np.meshgrid(*[np.arange(n, dtype=np.float32) * np.float32(s)
                               for n, s in zip(shape, scale)], indexing="ij", sparse=True)
        full = [np.broadcast_to(c, tuple(shape)) for c in coords]
        return ndi.map_coordinates(self.grid, full, order=1, mode="nearest").astype(np.float32)


def outside_level(level: Level, distance: np.ndarray, erode_mm: float) -> Level:
    """The level with its metric mask restricted to the body outside the lungs eroded by
    ``erode_mm`` (``distance``: the signed distance on the level grid)."""
    keep = (distance > -float(erode_mm)).view(np.uint8)
    mask = np.ascontiguousarray(level.mask & keep)
    return dataclasses.replace(level, mask=mask)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def join_fields(u_in: np.ndarray, u_out: np.ndarray, distance: np.ndarray, spacing,
                band_mm: float, normal_band_mm: float) -> np.ndarray:
    """The joined field (module docstring, step 2) on the grid of ``u_in`` (all (z, y, x, 3)
    frame mm; ``distance`` (z, y, x) mm, negative inside the lungs)."""
    d = distance.astype(np.float32)
    w_t = _smoothstep((d + 0.5 * band_mm) / band_mm)[..., None]
    w_n = _smoothstep(d / normal_band_mm)[..., None]
    grad = np.stack(np.gradient(d, *[float(s) for s in spacing]), axis=-1).astype(np.float32)
    norm = np.linalg.norm(grad, axis=-1, keepdims=True)
    n = np.where(norm > 0.5, grad / np.maximum(norm, 1e-6), 0.0).astype(np.float32)
    delta = u_out - u_in
    dn = np.sum(delta * n, axis=-1, keepdims=True) * n
    out = u_in + w_t * (delta - dn) + w_n * dn
    return np.ascontiguousarray(out, dtype=np.float32)


def _folds(u: np.ndarray, spacing, det_a: float) -> tuple[int, float]:
    jac = ops.jacobian_determinant(np.ascontiguousarray(u, np.float32), tuple(spacing))
    jac *= np.float32(det_a)
    return int(np.count_nonzero(jac <= 0)), float(jac.min())


def run_sliding_stage(level_fn, transform: AffineTransform, u_in: np.ndarray, u_level: Level,
                      lungs: np.ndarray, crop_spacing, opts: RegistrationOptions):
    """(field on ``u_level``'s grid, report dict, level reports).

    ``level_fn(mm)``: the body-masked pyramid level; ``lungs``: the reference lung mask on the
    cropped reference grid; ``u_in``: the inside (lung-focused) field on ``u_level``.
    """
    so = opts.sliding
    t0 = time.perf_counter()
    info: dict = {"used": False}
    try:
        sd = SignedDistance(lungs, crop_spacing)
    except ValueError:
        info["reason"] = "sliding_no_lungs"
        return u_in, info, []
    ffd_opts = FFDOptions(levels_mm=so.levels_mm, control_spacing_mm=so.control_spacing_mm,
                          iterations=so.iterations, metric=so.metric, first_level_metric=None,
                          lncc_radius_mm=opts.ffd.lncc_radius_mm,
                          bending_weight=opts.ffd.bending_weight, tolerance=opts.ffd.tolerance)
    reports = []
    u = None
    prev: Level | None = None
    for li, mm in enumerate(so.levels_mm):
        lv = level_fn(mm)
        dist = sd.on_level(level_factors(crop_spacing, mm), lv.shape)
        lv = outside_level(lv, dist, so.erode_mm)
        u0 = None if u is None else ops.resample_field(u, tuple(prev.spacing), lv.shape,
                                                       tuple(lv.spacing))
        u, rep = run_ffd_level(lv, transform, u0, ffd_opts, li)
        rep.stage = "sliding"
        reports.append(rep)
        prev = lv
    sp = tuple(float(s) for s in u_level.spacing)
    u_out = ops.resample_field(u, tuple(prev.spacing), u_level.shape, sp)
    u_factors = np.rint(np.asarray(u_level.spacing) / np.asarray(crop_spacing)).astype(int)
    dist = sd.on_level(u_factors, u_level.shape)
    info["seconds_outside"] = round(time.perf_counter() - t0, 3)
    joined, checked = join_checked(u_in, u_out, dist, sp, float(np.linalg.det(transform.matrix)),
                                   so.band_mm, so.normal_band_mm)
    info.update(checked)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return joined, info, reports


def join_checked(u_in: np.ndarray, u_out: np.ndarray, distance: np.ndarray, spacing,
                 det_a: float, band_mm: float, normal_band_mm: float,
                 max_widenings: int = MAX_WIDENINGS) -> tuple[np.ndarray, dict]:
    """``join_fields`` with the fold check (module docstring, step 3): (field, report entry).

    The join is kept when it has no more voxels with Jacobian <= 0 (``det_a``: the affine's
    determinant, which multiplies the field's) than ``u_in`` alone; else the bands are doubled
    up to ``max_widenings`` times; else ``u_in`` is returned with reason ``sliding_folded``."""
    fold_in, min_in = _folds(u_in, spacing, det_a)
    band, nband = float(band_mm), float(normal_band_mm)
    tried = []
    for attempt in range(max_widenings + 1):
        joined = join_fields(u_in, u_out, distance, spacing, band, nband)
        fold, jmin = _folds(joined, spacing, det_a)
        tried.append({"band_mm": band, "normal_band_mm": nband, "folded_voxels": fold,
                      "jacobian_min": round(jmin, 4)})
        if fold <= fold_in:
            return joined, {"used": True, "reason": "ok" if attempt == 0 else "sliding_widened",
                            "band_mm": band, "normal_band_mm": nband, "attempts": tried,
                            "jacobian_min_inside_only": round(min_in, 4)}
        band, nband = 2.0 * band, 2.0 * nband
    log.warning("sliding: the joined field folds even with %.0f / %.0f mm bands; keeping the "
                "lung-focused field [sliding_folded]", band / 2, nband / 2)
    return u_in, {"used": False, "reason": "sliding_folded", "attempts": tried,
                  "jacobian_min_inside_only": round(min_in, 4)}


def sliding_stage(level_fn, transform: AffineTransform, u_in: np.ndarray | None,
                  u_level: Level | None, lungs: np.ndarray | None, crop_spacing,
                  opts: RegistrationOptions):
    """``run_sliding_stage`` when there is an inside field and a lung mask; otherwise the
    field unchanged and the reason (``sliding_no_lungs``, ``sliding_no_inside_field``)."""
    if lungs is None or not np.any(lungs):
        log.warning("sliding off: no reference lungs [sliding_no_lungs]")
        return u_in, {"used": False, "reason": "sliding_no_lungs"}, []
    if u_in is None or u_level is None:
        return u_in, {"used": False, "reason": "sliding_no_inside_field"}, []
    return run_sliding_stage(level_fn, transform, u_in, u_level, lungs, crop_spacing, opts)
