"""register(): geometry -> masks -> affine -> B-spline -> demons -> one displacement field.

All optimisation happens on the reference body's bounding box (plus a margin), on pyramid levels
of a few mm; the final field is upsampled once to the full reference grid, where the floating
scan is resampled once, from its original HU.
"""
from __future__ import annotations

import logging
import os
import platform
import time

import numpy as np

from . import ops
from ._version import __version__
from .affine import rotation_search, run_affine_level
from .demons import run_demons_level
from .errors import GeometryError
from .ffd import run_ffd_level
from .level import SENTINEL, Level, build_level, preprocess
from .masks import body_mask
from .options import RegistrationOptions, options_for
from .pyramid import bounding_box, crop, level_factors
from .result import RegistrationResult
from .transforms import (N_AFFINE, AffineTransform, ReferenceFrame, frame_to_image_matrix,
                         world_displacement)
from .volume import Volume

__all__ = ["register"]

log = logging.getLogger("ctreg")

#: Resampled values below this drew ~30 % or more of their weight from outside the floating data.
INVALID_BELOW_HU = -2000.0

#: The least fraction of the reference body that must lie inside the floating scan's data.
MIN_OVERLAP = 0.15

#: The least body tissue a scan must show, in millilitres, for the automatic masks to be trusted.
MIN_BODY_ML = 50.0

#: ``ctreg register`` (the CLI, which owns its process) lets glibc keep freed memory
#: (ops.keep_freed_memory, a process-wide malloc setting that register() itself never makes)
#: when the two scans hold at most this many voxels together.  A registration of that size takes ~0.1-1 s, of which page
#: faults on fresh arrays were ~10-30 %; on larger scans they are a negligible share, while the
#: heap's retained holes cost memory (600 x 512 x 512: 9.23 instead of 9.01 GiB peak RSS).
KEEP_FREED_MEMORY_MAX_VOXELS = 32 * 1024 * 1024

#: Resolution of the floating scan's automatic body mask, whose only uses are its centre (the
#: start of the alignment) and its volume (the check above): a coarse grid gives both, in a
#: fraction of the time of the reference mask's 2 mm (which bounds the work and the metrics).
FLOATING_MASK_MM = 8.0


def _as_volume(x, name: str) -> Volume:
    if isinstance(x, Volume):
        return x
    if isinstance(x, (str, os.PathLike, list, tuple)):
        from .io import read_volume

        return read_volume(x)
    raise TypeError(f"{name} must be a ctreg.Volume or a path that read_volume reads, got {type(x).__name__}")


def _centroid_world(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """World position of the mask's centre of mass (the grid centre for an empty mask)."""
    sums = [mask.sum(axis=tuple(a for a in range(3) if a != ax)).astype(np.float64) for ax in range(3)]
    total = sums[0].sum()
    if total > 0:
        idx = np.array([np.dot(s, np.arange(len(s))) / total for s in sums])
    else:
        idx = (np.array(mask.shape, float) - 1) / 2
    return volume.index_to_world(idx[None])[0]


def _check_body(volume: Volume, mask: np.ndarray, name: str) -> None:
    ml = float(mask.sum()) * float(np.prod(volume.spacing)) / 1000.0
    if ml < MIN_BODY_ML:
        raise GeometryError(
            f"{name}: found only {ml:.1f} mL of tissue above -500 HU; expected a chest CT in HU "
            f"(at least {MIN_BODY_ML:.0f} mL of body). Check the rescale slope/intercept of the input.")


def _check_mask(mask, volume: Volume, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != volume.shape:
        raise GeometryError(f"{name} must have the scan's shape {volume.shape} (z, y, x), got {m.shape}")
    if m.dtype != bool:
        raise TypeError(f"{name} must be a bool array, got {m.dtype}")
    return np.ascontiguousarray(m)


def register(reference, floating, *, preset: str = "default",
             options: RegistrationOptions | None = None, reference_mask: np.ndarray | None = None,
             floating_mask: np.ndarray | None = None, threads: int | None = None,
             **overrides) -> RegistrationResult:
    """Register the ``floating`` scan onto the ``reference`` scan.

    Parameters
    ----------
    reference, floating : Volume, or anything ``ctreg.read_volume`` reads (DICOM folder, archive,
        list of files or URLs, NIfTI file).
    preset : "fast", "default" or "accurate" (see ``ctreg.options.PRESETS``).
    options : RegistrationOptions, optional; replaces the preset.
    reference_mask, floating_mask : (z, y, x) bool arrays on each scan's grid, optional: the
        region whose similarity counts (reference) and whose centre starts the alignment
        (floating).  Default: the automatic body masks (``ctreg.masks.body_mask``).
    threads : threads of this call's native and Numba kernels (``ops.thread_limit``: local to
        the calling thread; other threads and later calls are unaffected).  None: the process
        default (``ctreg.set_num_threads``, ``CTREG_NUM_THREADS``, else every core).
    **overrides : top-level fields of RegistrationOptions (``affine=``, ``ffd=``, ``demons=``,
        ``clip_hu=`` ...); a dict updates only the named fields of a stage,
        e.g. ``demons={"enabled": False}``.

    Returns
    -------
    RegistrationResult with ``warped`` (floating on the reference grid), ``displacement``
    ((z, y, x, 3) world LPS mm; reference p -> p + u(p) in the floating scan),
    ``transform_points``, ``jacobian_determinant()``, ``report`` and ``save()``.
    """
    with ops.serial_blas(), ops.gc_paused(), ops.thread_limit(threads):
        return _register(reference, floating, preset=preset, options=options,
                         reference_mask=reference_mask, floating_mask=floating_mask, **overrides)


def _register(reference, floating, *, preset, options, reference_mask, floating_mask,
              **overrides) -> RegistrationResult:
    t_start = time.perf_counter()
    ref = _as_volume(reference, "reference")
    flt = _as_volume(floating, "floating")
    if options is None:
        opts = options_for(preset, **overrides)
    else:
        if not isinstance(options, RegistrationOptions):
            raise TypeError(f"options must be a RegistrationOptions, got {type(options).__name__}")
        if overrides:
            raise TypeError("pass either options= or keyword overrides, not both")
        opts = options
    frame = ReferenceFrame(ref)
    ReferenceFrame(flt)  # the floating grid must be orthonormal too
    timings: dict[str, float] = {}
    levels_report: list = []

    # -- masks, crop, preprocessing ----------------------------------------------------------
    t0 = time.perf_counter()
    ref_body = (body_mask(ref, resolution_mm=opts.mask_resolution_mm) if reference_mask is None
                else _check_mask(reference_mask, ref, "reference_mask"))
    flt_body = (body_mask(flt, resolution_mm=FLOATING_MASK_MM) if floating_mask is None
                else _check_mask(floating_mask, flt, "floating_mask"))
    _check_body(ref, ref_body, "reference")
    _check_body(flt, flt_body, "floating")
    margin = np.ceil(opts.crop_margin_mm / ref.spacing).astype(int)
    box = bounding_box(ref_body, margin)
    ref_c = crop(ref, box)
    body_c = np.ascontiguousarray(ref_body[box])
    clip = opts.clip_hu
    ref_p = preprocess(ref_c, clip, invalid_value=clip[0])
    flt_p = preprocess(flt, clip, invalid_value=clip[0])
    centre = _centroid_world(ref, ref_body)
    timings["masks"] = time.perf_counter() - t0
    log.info("reference %s, floating %s; working box %s voxels", ref.shape, flt.shape, ref_c.shape)

    # Levels are keyed by their subsampling factors: on a coarse scan several requested
    # spacings give the same grid, which is built once and visited once per stage.
    cache: dict[tuple, Level] = {}

    def level(mm: float) -> Level:
        key = level_factors(ref_c.spacing, mm)
        if key not in cache:
            cache[key] = build_level(len(cache), mm, ref_p, body_c, flt_p, frame, clip)
        return cache[key]

    def stage_levels(levels_mm) -> list[tuple[int, float, Level]]:
        """(index, mm, level) per requested level, without repeats of the same grid."""
        out, seen = [], set()
        for li, mm in enumerate(levels_mm):
            lv = level(mm)
            if id(lv) not in seen:
                seen.add(id(lv))
                out.append((li, mm, lv))
        return out

    # -- affine ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    params = np.zeros(N_AFFINE)
    params[:3] = _centroid_world(flt, flt_body) - centre
    if opts.affine.enabled:
        for li, mm, lv in stage_levels(opts.affine.levels_mm):
            log.info("affine: level %d/%d (%.1f mm)", li + 1, len(opts.affine.levels_mm), mm)
            if li == 0:
                params = rotation_search(lv, centre, params, opts.affine)
            params, reps = run_affine_level(lv, centre, params, opts.affine, li)
            levels_report += reps
    transform = AffineTransform.from_params(params, centre)
    timings["affine"] = time.perf_counter() - t0
    coarse = level(max(opts.affine.levels_mm) if opts.affine.enabled else 8.0)
    _, valid = coarse.warp(transform)
    overlap = float(np.count_nonzero(coarse.mask & valid)) / max(1, int(np.count_nonzero(coarse.mask)))
    if overlap < MIN_OVERLAP:
        raise GeometryError(
            f"the scans barely overlap: after alignment only {100 * overlap:.1f} % of the reference "
            f"body lies inside the floating scan's data (at least {100 * MIN_OVERLAP:.0f} % needed); "
            "check that both series show the same region of the same patient")

    # -- B-spline ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    u: np.ndarray | None = None
    u_level: Level | None = None
    if opts.ffd.enabled:
        # every B-spline level runs, even on a repeated grid: its control spacing differs
        for li, mm in enumerate(opts.ffd.levels_mm):
            lv = level(mm)
            log.info("b-spline: level %d/%d (%.1f mm)", li + 1, len(opts.ffd.levels_mm), mm)
            u0 = None if u is None else ops.resample_field(u, tuple(u_level.spacing), lv.shape,
                                                            tuple(lv.spacing))
            u, rep = run_ffd_level(lv, transform, u0, opts.ffd, li)
            u_level = lv
            levels_report.append(rep)
    timings["bspline"] = time.perf_counter() - t0

    # -- demons ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if opts.demons.enabled:
        v: np.ndarray | None = None
        v_level: Level | None = None
        for li, mm, lv in stage_levels(opts.demons.levels_mm):
            log.info("demons: level %d/%d (%.1f mm)", li + 1, len(opts.demons.levels_mm), mm)
            outer = None if u is None else ops.resample_field(u, tuple(u_level.spacing), lv.shape,
                                                              tuple(lv.spacing))
            if v is None:
                v0 = np.zeros(lv.shape + (3,), np.float32)
            else:
                v0 = ops.resample_field(v, tuple(v_level.spacing), lv.shape, tuple(lv.spacing))
            v, u_demons, rep = run_demons_level(lv, transform, outer, v0, opts.demons, li)
            v_level = lv
            levels_report.append(rep)
        if v is not None:  # (id + B-spline field) ∘ exp(v) on the last demons level
            u = u_demons
            u_level = v_level
    timings["demons"] = time.perf_counter() - t0

    # -- full resolution ---------------------------------------------------------------------
    t0 = time.perf_counter()
    log.info("resampling the floating scan on the reference grid")
    if u is None:
        u_full = np.zeros(ref.shape + (3,), np.float32)
    else:
        # straight onto the whole reference grid: beyond the working box the clamped
        # interpolation continues the field's border values
        start_mm = -np.array([s.start for s in box], float) * ref.spacing
        u_full = ops.resample_field(u, tuple(u_level.spacing), ref.shape, tuple(ref.spacing),
                                    origin_mm=start_mm)
    u_full = np.ascontiguousarray(u_full, dtype=np.float32)
    out_to_frame = np.diag(list(ref.spacing) + [1.0])
    to_index = frame_to_image_matrix(frame, transform, flt)
    # One resampling for values and validity: where the floating scan has no data it holds the
    # SENTINEL, and a sample that draws more than ~30 % of its weight from there is invalid.
    source = flt.array if flt.valid is None else np.where(flt.valid, flt.array, np.float32(SENTINEL))
    warped_arr = ops.resample_displacement(np.ascontiguousarray(source, dtype=np.float32), u_full,
                                           out_to_world=out_to_frame, world_to_image=to_index,
                                           order=1, fill=SENTINEL)
    del source
    valid_w = warped_arr > INVALID_BELOW_HU
    np.copyto(warped_arr, np.float32(opts.fill_hu), where=~valid_w)
    warped = Volume(warped_arr, ref.affine.copy(), valid_w, {
        "source": "ctreg.register", "series_description": "registered by ctreg"})
    displacement = world_displacement(frame, transform, u_full)
    jac = ops.jacobian_determinant(u_full, tuple(ref.spacing))
    jac *= np.float32(np.linalg.det(transform.matrix))
    del u_full
    timings["resample"] = time.perf_counter() - t0

    # -- report ------------------------------------------------------------------------------
    import numba
    import scipy

    report = {
        "ctreg_version": __version__,
        "preset": preset if options is None else None,
        "options": opts.to_dict(),
        "levels": [r.to_dict() for r in levels_report],
        "affine": transform.to_dict(),
        "jacobian": ops.jacobian_statistics(jac),
        "jacobian_in_body": ops.jacobian_statistics(jac, ref_body),
        "seconds": timings,
        "seconds_total": time.perf_counter() - t_start,
        "threads": ops.get_num_threads(),
        "reference": {"shape": list(ref.shape), "spacing_mm": ref.spacing.tolist(),
                      "origin_mm": ref.origin.tolist()},
        "floating": {"shape": list(flt.shape), "spacing_mm": flt.spacing.tolist(),
                     "origin_mm": flt.origin.tolist()},
        "versions": {"ctreg": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "numba": numba.__version__, "python": platform.python_version()},
    }
    result = RegistrationResult(reference=ref, floating=flt, warped=warped, displacement=displacement,
                                affine=transform, jacobian=jac, report=report)
    log.info("done in %.1f s (Jacobian min %.3f)", report["seconds_total"], report["jacobian"].get("min", float("nan")))
    return result
