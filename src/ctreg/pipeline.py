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
from typing import Any

import numpy as np

from . import ops
from ._checks import mask_on_grid
from ._timing import PhaseTimer
from ._version import __version__
from .affine import rotation_search, run_affine_level
from .demons import run_demons_level
from .discrete import run_discrete_stage
from .errors import GeometryError
from .ffd import run_ffd_level
from .fullres import full_resolution
from .lung_focus import focus_and_lungs, focused_level
from .lung_images import (
    MIN_AFFINE_LUNG_DICE,
    affine_lung_dice,
    floating_lungs as find_floating_lungs,
    segment_floating,
    lung_only,
    mask_image,
)
from .lungs import check_mask_grid
from .level import SENTINEL, Level, build_level
from .masks import body_mask
from .options import RegistrationOptions, options_for
from .prep import SourceImage
from .pyramid import bounding_box, crop, level_factors
from .report_planes import PLANES, plane_indices
from .result import RegistrationResult
from .sliding import sliding_stage
from .transforms import N_AFFINE, AffineTransform, ReferenceFrame
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
#: (ops.keep_freed_memory, a process-wide malloc setting that register() itself never makes) when
#: the two scans hold at most this many voxels together.  A registration of that size takes ~0.1-1
#: s, of which page faults on fresh arrays were ~10-30 %; on larger scans they are a negligible
#: share, while the heap's retained holes cost memory (600 x 512 x 512: 9.23 instead of 9.01 GiB
#: peak RSS).
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
    raise TypeError(
        f"{name} must be a ctreg.Volume or a path that read_volume reads, got {type(x).__name__}"
    )


def _centroid_world(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """World position of the mask's centre of mass (the grid centre for an empty mask)."""
    sums = [
        mask.sum(axis=tuple(a for a in range(3) if a != ax)).astype(np.float64) for ax in range(3)
    ]
    total = sums[0].sum()
    if total > 0:
        idx = np.array([np.dot(s, np.arange(len(s))) / total for s in sums])
    else:
        idx = (np.array(mask.shape, float) - 1) / 2
    return volume.index_to_world(idx[None])[0]


def _numba_version() -> str | None:
    """numba's version without importing it (ctreg's kernels are all C++ now)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("numba")
    except PackageNotFoundError:
        return None


def _check_body(volume: Volume, mask: np.ndarray, name: str) -> None:
    ml = float(mask.sum()) * float(np.prod(volume.spacing)) / 1000.0
    if ml < MIN_BODY_ML:
        raise GeometryError(
            f"{name}: found only {ml:.1f} mL of tissue above -500 HU; expected a chest CT in HU "
            f"(at least {MIN_BODY_ML:.0f} mL of body). "
            "Check the rescale slope/intercept of the input."
        )


def _check_mask(mask, volume: Volume, name: str) -> np.ndarray:
    return mask_on_grid(name, mask, volume.shape, mismatch=GeometryError, to_bool=False)


def register(
    reference,
    floating,
    *,
    preset: str = "default",
    options: RegistrationOptions | None = None,
    reference_mask: np.ndarray | None = None,
    floating_mask: np.ndarray | None = None,
    reference_lungs: np.ndarray | None = None,
    floating_lungs: np.ndarray | None = None,
    threads: int | None = None,
    **overrides,
) -> RegistrationResult:
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
    reference_lungs : (z, y, x) bool lung mask on the reference grid, optional: where the
        deformable stages measure similarity (grown by ``lung_focus_mm``; ``ctreg.lung_focus``).
        Default: ``ctreg.lungs.segment_lungs`` when ``lung_focus`` is on (the default); when it
        finds no usable lungs the body is used and ``report["lungs"]`` says why.
    floating_lungs : (z, y, x) bool lung mask on the floating grid, optional: used with
        ``lung_images`` (``ctreg.lung_images``); default ``ctreg.lungs.segment_lungs``.
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
    with ops.serial_blas(), ops.gc_paused(), ops.thread_limit(threads), ops.reuse_freed_arrays():
        return _register(
            reference,
            floating,
            preset=preset,
            options=options,
            reference_mask=reference_mask,
            floating_mask=floating_mask,
            reference_lungs=reference_lungs,
            floating_lungs=floating_lungs,
            **overrides,
        )


def _register(
    reference,
    floating,
    *,
    preset,
    options,
    reference_mask,
    floating_mask,
    reference_lungs,
    floating_lungs,
    **overrides,
) -> RegistrationResult:
    t_start = time.perf_counter()
    timer = PhaseTimer()  # report["seconds"] and report["memory"] per phase (ctreg._timing)
    timings = timer.seconds
    with timer.phase("read"):
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
    levels_report: list = []

    # -- masks, crop, preprocessing ----------------------------------------------------------
    t0 = time.perf_counter()
    # the two scans' masks are found at once (ops.run_concurrently)
    ref_body, flt_body = ops.run_concurrently(
        lambda: (
            body_mask(ref, resolution_mm=opts.mask_resolution_mm)
            if reference_mask is None
            else _check_mask(reference_mask, ref, "reference_mask")
        ),
        lambda: (
            body_mask(flt, resolution_mm=FLOATING_MASK_MM)
            if floating_mask is None
            else _check_mask(floating_mask, flt, "floating_mask")
        ),
    )
    _check_body(ref, ref_body, "reference")
    _check_body(flt, flt_body, "floating")
    margin = np.ceil(opts.crop_margin_mm / ref.spacing).astype(int)
    box = bounding_box(ref_body, margin)
    assert box is not None  # _check_body: the body mask is not empty
    ref_c = crop(ref, box)
    body_c = np.ascontiguousarray(ref_body[box])
    clip = opts.clip_hu
    # the clipped scans as pyramid sources: levels are made from them, they are never stored
    ref_p = SourceImage.preprocessed(ref, box, clip, clip[0])
    flt_p = SourceImage.preprocessed(flt, None, clip, clip[0])
    centre = _centroid_world(ref, ref_body)
    focus = None
    lung_report: dict = {"used": False, "reason": "lung_focus off"}
    lungs_c = None
    want_lungs = reference_lungs is not None or opts.lung_focus or opts.sliding.enabled
    want_flt_lungs = opts.lung_images or opts.lung_shape.enabled
    segmented = None  # the floating scan's automatic lungs, found with the reference's
    if want_lungs:
        if reference_lungs is not None:
            lungs_c = np.ascontiguousarray(
                check_mask_grid(reference_lungs, ref, "reference_lungs")[box]
            )
        calls = [lambda: focus_and_lungs(ref_c, body_c, lungs_c, opts.lung_focus_mm)]
        if want_flt_lungs and floating_lungs is None:
            calls.append(lambda: segment_floating(flt))
        found = ops.run_concurrently(*calls)
        focus, lung_report, lungs_c = found[0]
        segmented = found[1] if len(found) > 1 else None
        del found, calls  # (these would keep the arrays alive that are dropped later)
    flt_lungs = None
    if want_flt_lungs:
        if floating_lungs is not None:
            floating_lungs = check_mask_grid(floating_lungs, flt, "floating_lungs")
        if lungs_c is None:
            lung_report["images"] = {"used": False, "reason": "no reference lungs"}
        else:
            flt_lungs, images_info = find_floating_lungs(flt, floating_lungs, segmented)
            images_info["used"] = flt_lungs is not None
            lung_report["images"] = images_info
    segmented = None
    timer.add("masks", time.perf_counter() - t0)
    log.info("reference %s, floating %s; working box %s voxels", ref.shape, flt.shape, ref_c.shape)

    # Levels are keyed by their subsampling factors: on a coarse scan several requested
    # spacings give the same grid, which is built once and visited once per stage.
    cache: dict[tuple, Level] = {}

    crop_spacing = ref_c.spacing  # (ref_c itself is dropped before the last stages)

    def level(mm: float) -> Level:
        key = level_factors(crop_spacing, mm)
        if key not in cache:
            cache[key] = build_level(len(cache), mm, ref_p, body_c, flt_p, frame, clip)
        return cache[key]

    focused: dict[tuple, Level] = {}
    lung_pair: list = []  # (reference, floating) lung-only images, made after the affine stage
    shaped: dict[tuple, Level] = {}

    def shape_levels(levels_mm) -> list[Level]:
        """The levels of the lung-shape stage: the two lung masks as images, in the lung focus.
        The full-resolution mask images are made once for all levels and freed after."""
        assert lungs_c is not None and flt_lungs is not None
        images = [mask_image(ref_p, lungs_c, clip), mask_image(flt_p, flt_lungs, clip)]
        out = []
        for mm in levels_mm:
            key = level_factors(crop_spacing, mm)
            if key not in shaped:
                base = build_level(
                    len(cache) + len(shaped), mm, images[0], body_c, images[1], frame, clip
                )
                shaped[key] = base if focus is None else focused_level(base, focus, key)
            out.append(shaped[key])
        del images
        return out

    def dlevel(mm: float) -> Level:
        """The level of the deformable stages: its metric mask restricted to the lung focus
        (and its images the lung-only ones with ``lung_images``)."""
        if focus is None:
            return level(mm)
        key = level_factors(crop_spacing, mm)
        if key not in focused:
            if lung_pair:
                base = build_level(
                    len(cache) + len(focused), mm, lung_pair[0], body_c, lung_pair[1], frame, clip
                )
            else:
                base = level(mm)
            focused[key] = focused_level(base, focus, key)
        return focused[key]

    def stage_levels(levels_mm, get=level) -> list[tuple[int, float, Level]]:
        """(index, mm, level) per requested level, without repeats of the same grid."""
        out, seen = [], set()
        for li, mm in enumerate(levels_mm):
            lv = get(mm)
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
    timer.add("affine", time.perf_counter() - t0)
    coarse = level(max(opts.affine.levels_mm) if opts.affine.enabled else 8.0)
    _, valid = coarse.warp(transform)
    overlap = float(np.count_nonzero(coarse.mask & valid)) / max(
        1, int(np.count_nonzero(coarse.mask))
    )
    if overlap < MIN_OVERLAP:
        raise GeometryError(
            f"the scans barely overlap: after alignment only {100 * overlap:.1f} % of the "
            "reference body lies inside the floating scan's data "
            f"(at least {100 * MIN_OVERLAP:.0f} % needed); "
            "check that both series show the same region of the same patient"
        )

    if flt_lungs is not None and lungs_c is not None:  # do the two masks show the same lungs?
        info = lung_report["images"]
        agree = affine_lung_dice(ref_c, lungs_c, flt, flt_lungs, transform.apply)
        info["affine_dice"] = round(agree, 3)
        if agree < MIN_AFFINE_LUNG_DICE:
            if info.get("floating_source") == "user":
                log.warning(
                    "the floating_lungs mask and the reference lungs agree poorly after "
                    "the affine stage (Dice %.2f): check the mask",
                    agree,
                )
            else:
                log.warning(
                    "lung images off: the floating scan's automatic lungs and the "
                    "reference lungs disagree after the affine stage (Dice %.2f < %.2f); "
                    "the deformable stages use the plain images",
                    agree,
                    MIN_AFFINE_LUNG_DICE,
                )
                info.update(used=False, reason="LungMask.Disagree")
                flt_lungs = None
    # the cropped reference (the levels are built from the source ref_p, which reads ``ref``)
    # and the floating body mask are not used again
    ref_c = flt_body = None  # type: ignore[assignment]

    def make_lung_pair() -> None:
        """The lung-only images of both scans (sources, never stored whole), which dlevel()
        builds its levels from; made before the first stage that needs them."""
        if opts.lung_images and flt_lungs is not None and lungs_c is not None and not lung_pair:
            t0 = time.perf_counter()
            lung_pair[:] = [
                lung_only(ref_p, lungs_c, opts.lung_outside_hu),
                lung_only(flt_p, flt_lungs, opts.lung_outside_hu),
            ]
            timer.add("masks", time.perf_counter() - t0)

    # -- discrete large-motion search (MIND-SSC block matching) --------------------------------
    t0 = time.perf_counter()
    u: np.ndarray | None = None
    u_level: Level | None = None
    if opts.discrete.enabled:
        make_lung_pair()
        lv = dlevel(opts.discrete.level_mm)
        log.info(
            "discrete search: level %.1f mm, radius %.0f mm",
            opts.discrete.level_mm,
            opts.discrete.search_radius_mm,
        )
        u, rep = run_discrete_stage(lv, transform, opts.discrete, lv.mask)
        u_level = lv
        levels_report.append(rep)
    timer.add("discrete", time.perf_counter() - t0)

    # -- lung shape: B-spline on the two lung masks -------------------------------------------
    t0 = time.perf_counter()
    if opts.lung_shape.enabled and flt_lungs is not None and lungs_c is not None:
        for li, (mm, lv) in enumerate(
            zip(opts.lung_shape.levels_mm, shape_levels(opts.lung_shape.levels_mm))
        ):
            log.info(
                "lung shape: level %d/%d (%.1f mm)", li + 1, len(opts.lung_shape.levels_mm), mm
            )
            u0 = (
                None
                if u is None or u_level is None
                else ops.resample_field(u, tuple(u_level.spacing), lv.shape, tuple(lv.spacing))
            )
            u, rep = run_ffd_level(lv, transform, u0, opts.lung_shape, li)
            rep.stage = "lung_shape"
            u_level = lv
            levels_report.append(rep)
        shaped.clear()
    timer.add("lung_shape", time.perf_counter() - t0)

    make_lung_pair()  # (its time counts as "masks")

    # -- B-spline ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    # Only pyramid levels are used from here on: the levels of the B-spline, demons and
    # sliding stages are built now (some exist already; their time counts as "bspline"), and
    # the masks on their grids leave memory (the sources ref_p, flt_p and the lung-only ones
    # are never stored at full size).
    ffd_levels = [dlevel(mm) for mm in opts.ffd.levels_mm] if opts.ffd.enabled else []
    demons_levels = stage_levels(opts.demons.levels_mm, dlevel) if opts.demons.enabled else []
    if opts.sliding.enabled and lungs_c is not None:
        for mm in opts.sliding.levels_mm:
            level(mm)
    focused.clear()  # (ffd_levels, demons_levels and u_level keep the ones still used)
    lung_pair.clear()
    ref_p = flt_p = body_c = focus = None  # type: ignore[assignment]  # noqa: F841
    flt_lungs = None
    ops.release_spare_arrays()

    if opts.ffd.enabled:
        # every B-spline level runs, even on a repeated grid: its control spacing differs
        for li, (mm, lv) in enumerate(zip(opts.ffd.levels_mm, ffd_levels)):
            log.info("b-spline: level %d/%d (%.1f mm)", li + 1, len(opts.ffd.levels_mm), mm)
            u0 = (
                None
                if u is None or u_level is None
                else ops.resample_field(u, tuple(u_level.spacing), lv.shape, tuple(lv.spacing))
            )
            u, rep = run_ffd_level(lv, transform, u0, opts.ffd, li)
            u_level = lv
            levels_report.append(rep)
    timer.add("bspline", time.perf_counter() - t0)

    # -- demons ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if opts.demons.enabled:
        v: np.ndarray | None = None
        v_level: Level | None = None
        for li, mm, lv in demons_levels:
            log.info("demons: level %d/%d (%.1f mm)", li + 1, len(opts.demons.levels_mm), mm)
            outer = (
                None
                if u is None or u_level is None
                else ops.resample_field(u, tuple(u_level.spacing), lv.shape, tuple(lv.spacing))
            )
            if v is None or v_level is None:
                v0 = np.zeros(lv.shape + (3,), np.float32)
            else:
                v0 = ops.resample_field(v, tuple(v_level.spacing), lv.shape, tuple(lv.spacing))
            v, u_demons, rep = run_demons_level(lv, transform, outer, v0, opts.demons, li)
            v_level = lv
            levels_report.append(rep)
        if v is not None:  # (id + B-spline field) ∘ exp(v) on the last demons level
            u = u_demons
            u_level = v_level
    timer.add("demons", time.perf_counter() - t0)

    # -- sliding: a separate field outside the lungs (ctreg.sliding) -------------------------
    t0 = time.perf_counter()
    sliding_report = None
    u_inside = u
    if opts.sliding.enabled:
        u, sliding_report, reps = sliding_stage(
            level, transform, u, u_level, lungs_c, crop_spacing, opts
        )
        levels_report += reps
    timer.add("sliding", time.perf_counter() - t0)

    # -- full resolution ---------------------------------------------------------------------
    t0 = time.perf_counter()
    log.info("resampling the floating scan on the reference grid")
    # the pyramid levels and the stages' working fields are no longer needed: only the field
    # on its grid (u, and u_inside for the fallback below) and that grid's spacing
    u_spacing = None if u_level is None else tuple(u_level.spacing)
    cache.clear()
    ffd_levels, demons_levels = [], []
    lungs_c = None  # (level() and the lung stages are not called again)
    lv = u_level = v_level = None  # type: ignore[assignment]
    v = v0 = outer = u_demons = u0 = None  # type: ignore[assignment]  # noqa: F841
    ops.release_spare_arrays()
    # in z slabs (ctreg.fullres): the frame field never exists on the whole grid; beyond the
    # working box the clamped interpolation continues the field's border values.  Of the
    # Jacobian only its statistics and the report's planes are kept (not the map).
    planes = {p: plane_indices(ref, p) for p in PLANES}

    def finish(field):
        return full_resolution(
            ref, flt, frame, transform, field, None if field is None else u_spacing, box,
            sentinel=SENTINEL, invalid_below=INVALID_BELOW_HU, fill_hu=opts.fill_hu,
            body=ref_body, points=planes,
        )  # fmt: skip

    warped, displacement, jac = finish(u)
    if (
        sliding_report is not None
        and sliding_report.get("used")
        and not jac.statistics()[0].get("min", 1.0) > 0
    ):
        # the join folds at full resolution: redo this step with the lung-focused field
        log.warning(
            "sliding: Jacobian <= 0 at full resolution; keeping the lung-focused field "
            "[sliding_folded_full_resolution]"
        )
        sliding_report.update(used=False, reason="sliding_folded_full_resolution")
        warped, displacement, jac = finish(u_inside)
    u_inside = None
    timer.add("resample", time.perf_counter() - t0)

    # -- report ------------------------------------------------------------------------------
    import scipy

    jac_all, jac_body = jac.statistics()
    report: dict[str, Any] = {
        "ctreg_version": __version__,
        "preset": preset if options is None else None,
        "options": opts.to_dict(),
        "levels": [r.to_dict() for r in levels_report],
        "affine": transform.to_dict(),
        "jacobian": jac_all,
        "jacobian_in_body": jac_body,
        "seconds": timings,
        "lungs": lung_report,
        "sliding": sliding_report
        if sliding_report is not None
        else {"used": False, "reason": "sliding off"},
        "memory": timer.memory_report(),
        "seconds_total": time.perf_counter() - t_start,
        "threads": ops.get_num_threads(),
        "reference": {
            "shape": list(ref.shape),
            "spacing_mm": ref.spacing.tolist(),
            "origin_mm": ref.origin.tolist(),
        },
        "floating": {
            "shape": list(flt.shape),
            "spacing_mm": flt.spacing.tolist(),
            "origin_mm": flt.origin.tolist(),
        },
        "versions": {
            "ctreg": __version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "numba": _numba_version(),
            "python": platform.python_version(),
        },
    }
    result = RegistrationResult(
        reference=ref,
        floating=flt,
        warped=warped,
        displacement=displacement,
        affine=transform,
        jacobian=None,  # computed from the displacement when asked
        jacobian_planes=jac.values(),
        report=report,
    )
    log.info(
        "done in %.1f s (Jacobian min %.3f)",
        report["seconds_total"],
        report["jacobian"].get("min", float("nan")),
    )
    return result
