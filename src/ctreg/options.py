"""Registration options: frozen, keyword-only dataclasses validated on construction, and presets.

Lists per level run coarse -> fine.  Spacings are in mm; the level spacing is reached by integer
subsampling of the reference grid, so the actual spacing is the nearest multiple of the scan's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from ._checks import known_fields
from .errors import OptionError, unknown_names
from .metrics import METRICS

__all__ = [
    "AffineOptions",
    "DiscreteOptions",
    "FFDOptions",
    "DemonsOptions",
    "SlidingOptions",
    "RegistrationOptions",
    "PRESETS",
    "options_for",
]


def _fail(cls, name, value, accepted):
    raise OptionError(f"{cls}.{name} must be {accepted}, got {value!r}")


def _positive_tuple(obj, name, *, integer=False, allow_empty=False):
    value = getattr(obj, name)
    cls = type(obj).__name__
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        _fail(cls, name, value, "a sequence of positive numbers")
    kind = int if integer else (int, float)
    if (not value and not allow_empty) or any(
        isinstance(v, bool) or not isinstance(v, kind) or v <= 0 for v in value
    ):
        _fail(
            cls,
            name,
            value,
            "a non-empty sequence of positive " + ("integers" if integer else "numbers"),
        )
    object.__setattr__(obj, name, tuple(float(v) if not integer else int(v) for v in value))
    return value


def _same_length(obj, *names):
    lengths = {n: len(getattr(obj, n)) for n in names}
    if len(set(lengths.values())) != 1:
        raise OptionError(
            f"{type(obj).__name__}: {', '.join(names)} must have one entry per level, "
            f"got lengths {lengths}"
        )


def _positive(obj, name, *, allow_zero=False):
    value = getattr(obj, name)
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        _fail(
            type(obj).__name__,
            name,
            value,
            "a non-negative number" if allow_zero else "a positive number",
        )


def _metric(obj, name):
    value = getattr(obj, name)
    if value not in METRICS:
        _fail(type(obj).__name__, name, value, f"one of {METRICS}")


def _metric_per_level(obj, name, n_levels):
    """A metric name, or one name per level (stored as a tuple of n_levels names)."""
    value = getattr(obj, name)
    names = (value,) * n_levels if isinstance(value, str) else value
    try:
        names = tuple(names)
    except TypeError:
        _fail(type(obj).__name__, name, value, f"one of {METRICS} or one of them per level")
    if len(names) != n_levels or any(v not in METRICS for v in names):
        _fail(
            type(obj).__name__,
            name,
            value,
            f"one of {METRICS} or a sequence of {n_levels} of them (one per level)",
        )
    object.__setattr__(obj, name, value if isinstance(value, str) else names)


@known_fields
@dataclass(frozen=True, kw_only=True)
class AffineOptions:
    """Rigid then affine alignment, multi-resolution.

    rotation_search_deg: before optimising on the coarsest level, try rotations about the
    scanner's z axis in [-rotation_search_deg, +rotation_search_deg] (step
    rotation_search_step_deg) and start from the best (0 disables the search).
    """

    enabled: bool = True
    levels_mm: tuple = (8.0, 4.0)
    iterations: tuple = (60, 40)
    metric: str = "ncc"
    affine: bool = True
    rotation_search_deg: float = 30.0
    rotation_search_step_deg: float = 7.5

    def __post_init__(self):
        _positive_tuple(self, "levels_mm")
        _positive_tuple(self, "iterations", integer=True)
        _same_length(self, "levels_mm", "iterations")
        _metric(self, "metric")
        _positive(self, "rotation_search_deg", allow_zero=True)
        _positive(self, "rotation_search_step_deg")


@known_fields
@dataclass(frozen=True, kw_only=True)
class DiscreteOptions:
    """Discrete large-motion search before the B-spline stage (``ctreg.discrete``): MIND-SSC
    block matching of every displacement within ``search_radius_mm`` at control points every
    ``grid_step_vox`` voxels of a level of ``level_mm``, coupled-convex regularisation
    (``alphas``, ``sigma_grid`` control points), then a smoothed (``smooth_mm``) velocity whose
    exponential is the stage's displacement (invertible).  For the 20-50 mm motion of the
    diaphragm between two breaths, which a smooth pyramid alone does not reach.
    """

    enabled: bool = False
    level_mm: float = 4.0
    grid_step_vox: int = 2
    block_radius_vox: int = 2
    search_radius_mm: float = 24.0
    patch_radius_vox: int = 1
    distance_vox: int = 2
    alphas: tuple = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    sigma_grid: float = 1.0
    smooth_mm: float = 6.0

    def __post_init__(self):
        _positive(self, "level_mm")
        _positive(self, "search_radius_mm")
        _positive(self, "sigma_grid")
        _positive(self, "smooth_mm", allow_zero=True)
        _positive_tuple(self, "alphas")
        for name in ("grid_step_vox", "block_radius_vox", "patch_radius_vox", "distance_vox"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(type(self).__name__, name, value, "a positive integer")


@known_fields
@dataclass(frozen=True, kw_only=True)
class FFDOptions:
    """Cubic B-spline free-form deformation, one control grid per level, L-BFGS.

    metric: one name of ``ctreg.metrics.METRICS`` for every level, or one per level.
    first_level_metric: with two or more levels and one ``metric`` name, the coarsest level uses
    this one instead (default global NCC: it follows the lung outline over large motion and
    ignores a global density change; LNCC then follows vessels and fissures); None: ``metric``
    on every level.
    iterations: the most L-BFGS iterations per level.  tolerance: from the third iteration
    on, a level also ends when an iteration lowers the cost by less than the fraction
    ``tolerance`` of its magnitude (0: every iteration runs).
    """

    enabled: bool = True
    levels_mm: tuple = (6.0, 3.0)
    control_spacing_mm: tuple = (40.0, 20.0)
    iterations: tuple = (20, 15)
    metric: str = "lncc"
    first_level_metric: str | None = "ncc"
    lncc_radius_mm: float = 8.0
    bending_weight: float = 3.0
    tolerance: float = 0.0

    def __post_init__(self):
        _positive_tuple(self, "levels_mm")
        _positive_tuple(self, "control_spacing_mm")
        _positive_tuple(self, "iterations", integer=True)
        _same_length(self, "levels_mm", "control_spacing_mm", "iterations")
        _metric_per_level(self, "metric", len(self.levels_mm))
        if self.first_level_metric is not None:
            _metric(self, "first_level_metric")
        _positive(self, "lncc_radius_mm")
        _positive(self, "bending_weight", allow_zero=True)
        _positive(self, "tolerance", allow_zero=True)


@known_fields
@dataclass(frozen=True, kw_only=True)
class DemonsOptions:
    """Diffeomorphic (log-domain) demons refinement with symmetric forces.

    The stationary velocity field v is updated with smoothed forces and regularised by a
    Gaussian (sigmas in voxels of each level); the displacement is exp(v) by scaling and
    squaring, so it cannot fold.

    match_intensities: map the floating scan's intensities monotonically onto the reference's
    histogram (inside the mask, through the current map) before each level, so that a change
    of lung density between two breaths does not bias the forces.
    iterations: the most iterations per level.  A level also ends once ``patience``
    iterations in a row have not lowered the best mean squared difference by a fraction
    ``tolerance`` (0: never early).
    """

    enabled: bool = True
    levels_mm: tuple = (2.0,)
    iterations: tuple = (15,)
    # 0.5 / 1.0 voxel (1 / 2 mm at 2 mm) since 2026-12-07, formerly 1.0 / 2.5: on EMPIRE10-01
    # lung Dice 0.9736 -> 0.9807, and a lower TRE on 5 of 6 realistic synthetic pairs
    # (docs/lungs.md, "Demons regularisation")
    sigma_fluid_vox: float = 0.5
    sigma_diffusion_vox: float = 1.0
    max_step_vox: float = 0.5
    forces: str = "symmetric"
    match_intensities: bool = True
    tolerance: float = 1e-3
    patience: int = 5

    def __post_init__(self):
        _positive_tuple(self, "levels_mm")
        _positive_tuple(self, "iterations", integer=True)
        _same_length(self, "levels_mm", "iterations")
        _positive(self, "sigma_fluid_vox", allow_zero=True)
        _positive(self, "sigma_diffusion_vox", allow_zero=True)
        _positive(self, "max_step_vox")
        _positive(self, "tolerance", allow_zero=True)
        if (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            _fail(type(self).__name__, "patience", self.patience, "a positive integer")
        if self.forces not in ("symmetric", "floating"):
            _fail(type(self).__name__, "forces", self.forces, "'symmetric' or 'floating'")


@known_fields
@dataclass(frozen=True, kw_only=True)
class SlidingOptions:
    """Sliding at the pleura (``ctreg.sliding``): after the lung-focused stages, a coarse
    B-spline field fitted outside the lungs (``metric`` on the body minus the reference lungs
    eroded by ``erode_mm``, from the affine) replaces the smooth extension there; the two maps
    meet across the reference lung boundary within ``band_mm`` (a log-domain join, fold-free
    by construction up to discretisation).  A join that folds is retried with a doubled band,
    else dropped, and ``report["sliding"]`` says so.  On in the ``default`` and ``accurate``
    presets (outside the lungs it cut the error from ~5-6 mm to 1-1.5 mm on the realistic
    synthetic pairs, for +0.5 s on popi; docs/sliding.md), off in ``fast``;
    ``register(sliding=False)`` turns it off.  It implies the lung focus (the inside field).
    """

    enabled: bool = True
    levels_mm: tuple = (6.0, 4.0)
    control_spacing_mm: tuple = (40.0, 20.0)
    iterations: tuple = (20, 10)
    metric: str = "lncc"
    erode_mm: float = 3.0
    band_mm: float = 6.0

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            _fail(type(self).__name__, "enabled", self.enabled, "True or False")
        _positive_tuple(self, "levels_mm")
        _positive_tuple(self, "control_spacing_mm")
        _positive_tuple(self, "iterations", integer=True)
        _same_length(self, "levels_mm", "control_spacing_mm", "iterations")
        _metric(self, "metric")
        _positive(self, "erode_mm", allow_zero=True)
        _positive(self, "band_mm")


@known_fields
@dataclass(frozen=True, kw_only=True)
class RegistrationOptions:
    """Everything register() does.

    clip_hu: intensities are clipped to this window before any metric (lung to soft tissue).
    fill_hu: value of ``warped`` where the floating scan has no data.
    crop_margin_mm: the work is done on the reference body's bounding box grown by this margin.
    mask_resolution_mm: the automatic reference body mask is computed on the scan subsampled to
    about this spacing (``ctreg.masks.body_mask``); it bounds the work and the metrics.
    lung_focus: the deformable stages measure similarity only in the reference lungs grown by
    ``lung_focus_mm`` (``ctreg.lung_focus``: lungs slide along the chest wall); lungs from
    ``register(reference_lungs=...)`` or found automatically, else the body (reported).
    lung_images: the deformable stages compare lung-only images (``ctreg.lung_images``: HU
    inside each scan's lungs, ``lung_outside_hu`` outside); needs the lung focus and the
    floating lungs (``register(floating_lungs=...)`` or automatic), else plain (reported).
    lung_shape: a B-spline stage before ``ffd`` that aligns the two scans' lung masks (their
    outlines: the diaphragm, the pleura), ``ctreg.lung_images``; needs both lung masks.
    sliding: a separate field outside the lungs (``SlidingOptions``; True / False for its
    defaults on / off).
    """

    affine: AffineOptions = field(default_factory=AffineOptions)
    discrete: DiscreteOptions = field(default_factory=DiscreteOptions)
    ffd: FFDOptions = field(default_factory=FFDOptions)
    demons: DemonsOptions = field(default_factory=DemonsOptions)
    sliding: SlidingOptions = field(default_factory=SlidingOptions)
    clip_hu: tuple = (-1000.0, 400.0)
    fill_hu: float = -1024.0
    crop_margin_mm: float = 10.0
    mask_resolution_mm: float = 2.0
    lung_focus: bool = True
    lung_focus_mm: float = 10.0
    lung_images: bool = True
    lung_outside_hu: float = 0.0
    lung_shape: FFDOptions = field(
        default_factory=lambda: FFDOptions(
            # the finest control grid (6 mm) on the 3 mm images: on EMPIRE10-01 a 2 mm image level
            # cost 5 s for Dice 0.9747 instead of 0.9735 (docs/lungs.md)
            levels_mm=(6.0, 4.0, 3.0, 3.0),
            control_spacing_mm=(24.0, 12.0, 8.0, 6.0),
            iterations=(20, 15, 10, 10),
            metric="ncc",
            first_level_metric=None,
            bending_weight=3.0,
        )
    )

    def __post_init__(self):
        if isinstance(self.sliding, bool):
            object.__setattr__(self, "sliding", SlidingOptions(enabled=self.sliding))
        for name, cls in (
            ("affine", AffineOptions),
            ("discrete", DiscreteOptions),
            ("ffd", FFDOptions),
            ("demons", DemonsOptions),
            ("lung_shape", FFDOptions),
            ("sliding", SlidingOptions),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls(**value))
            elif not isinstance(value, cls):
                _fail(
                    "RegistrationOptions", name, value, f"a {cls.__name__} or a dict of its fields"
                )
        lo_hi = tuple(self.clip_hu)
        if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
            _fail("RegistrationOptions", "clip_hu", self.clip_hu, "(low, high) with low < high")
        object.__setattr__(self, "clip_hu", (float(lo_hi[0]), float(lo_hi[1])))
        _positive(self, "crop_margin_mm", allow_zero=True)
        _positive(self, "mask_resolution_mm")
        _positive(self, "lung_focus_mm", allow_zero=True)
        if not isinstance(self.lung_focus, bool):
            _fail("RegistrationOptions", "lung_focus", self.lung_focus, "True or False")
        if not isinstance(self.lung_images, bool):
            _fail("RegistrationOptions", "lung_images", self.lung_images, "True or False")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, RegistrationOptions] = {
    # fast: one level per stage, each stage ends as soon as it stops gaining (a small motion
    # converges in a few iterations; a large one still gets every iteration), and the body
    # mask is found at 8 mm
    "fast": RegistrationOptions(
        affine=AffineOptions(levels_mm=(8.0,), iterations=(60,)),
        ffd=FFDOptions(
            levels_mm=(6.0,), control_spacing_mm=(36.0,), iterations=(20,), tolerance=2e-3
        ),
        demons=DemonsOptions(levels_mm=(4.0,), iterations=(25,), tolerance=5e-3, patience=2),
        lung_shape=FFDOptions(
            levels_mm=(6.0, 4.0),
            control_spacing_mm=(24.0, 12.0),
            iterations=(20, 10),
            metric="ncc",
            first_level_metric=None,
            bending_weight=3.0,
            tolerance=2e-3,
        ),
        sliding=SlidingOptions(enabled=False),
        mask_resolution_mm=8.0,
    ),
    "default": RegistrationOptions(),
    "accurate": RegistrationOptions(
        affine=AffineOptions(levels_mm=(8.0, 4.0), iterations=(60, 40)),
        ffd=FFDOptions(
            levels_mm=(6.0, 3.0, 2.0),
            control_spacing_mm=(40.0, 20.0, 10.0),
            iterations=(20, 15, 10),
        ),
        demons=DemonsOptions(levels_mm=(2.0, 1.0), iterations=(15, 10)),
    ),
}


def options_for(preset: str = "default", **overrides) -> RegistrationOptions:
    """The preset's options with top-level fields replaced, e.g.
    ``options_for("fast", demons=DemonsOptions(enabled=False))`` or ``ffd={"metric": "ncc"}``
    (a dict updates only the named fields of that stage)."""
    err = unknown_names("preset", [preset], PRESETS) or unknown_names(
        "registration option(s)",
        overrides,
        [f.name for f in dataclasses.fields(RegistrationOptions)],
    )
    if err is not None:
        raise err
    base = PRESETS[preset]
    merged = {}
    for key, value in overrides.items():
        current = getattr(base, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = dataclasses.replace(cast(Any, current), **value)
        merged[key] = value
    return dataclasses.replace(base, **merged)
