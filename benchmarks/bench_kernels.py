"""Speed of ctreg's native kernels against scipy.ndimage / numpy and SimpleITK (not a test).

    python benchmarks/bench_kernels.py               # 160x192x192, 2 threads (minutes at most)
    python benchmarks/bench_kernels.py --sizes all   # also 300x512x512 (long: scipy is slow)
    python benchmarks/bench_kernels.py --only smooth --threads 1 --repeat 5

Every case is one row of CASES: ``Case(name, ctreg_fn, scipy_fn, sitk_fn)``.  Each function
takes the shared, lazily built inputs ``d`` (:class:`Data`) and runs the operation once;
``None`` means "no equivalent".  Inputs are built (and cached in ``d``) during an untimed
warm-up call, so put set-up work behind ``d.get(key, factory)``.  To add kernels, append
cases to CASES (and, if they need new inputs, factories next to them).

Reported: Mvox/s = output voxels / best wall time of ``--repeat`` runs, and each competitor's
time divided by ctreg's (x > 1: ctreg is faster).  All libraries use the same thread count
(ctreg.set_num_threads, SimpleITK's global default, numba); scipy.ndimage is single-threaded.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from typing import Any, Callable, NamedTuple

import numpy as np
import scipy.ndimage as ndi

import ctreg
from ctreg import ops

try:  # SimpleITK is optional (extra "bench")
    import SimpleITK as sitk
except ImportError:  # pragma: no cover
    sitk = None

SIZES = {"small": (160, 192, 192), "large": (300, 512, 512)}


class Data:
    """Inputs of one size, built on first use and cached."""

    def __init__(self, shape: tuple[int, int, int], seed: int = 0):
        self.shape = shape
        self.nvox = int(np.prod(shape))
        self.rng = np.random.default_rng(seed)
        self._cache: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[["Data"], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = factory(self)
        return self._cache[key]

    # --- common inputs -----------------------------------------------------------------------
    @property
    def spacing(self) -> np.ndarray:
        """(z, y, x) mm: a thorax-sized field of view (~320 x 320 x 320 mm)."""
        return np.array([320.0 / self.shape[0], 320.0 / self.shape[1], 320.0 / self.shape[2]])

    @property
    def affine(self) -> np.ndarray:
        return self.get(
            "affine",
            lambda d: ctreg.volume.affine_from_geometry((-160.0, -160.0, -160.0), d.spacing),
        )

    @property
    def image(self) -> np.ndarray:
        """CT-like float32 texture in HU (smoothed noise)."""

        def make(d):
            img = d.rng.standard_normal(d.shape, dtype=np.float32)
            img = ops.smooth(img, 2.0, d.spacing)
            img *= 400.0 / max(float(np.abs(img).max()), 1e-6)
            img -= 500.0
            return img

        return self.get("image", make)

    @property
    def displacement(self) -> np.ndarray:
        """Smooth (z, y, x, 3) displacement, world (x, y, z) mm, up to ~8 mm."""

        def make(d):
            coarse = d.rng.standard_normal((8, 8, 8, 3)).astype(np.float32)
            f2o = np.diag(
                [7.0 / (d.shape[0] - 1), 7.0 / (d.shape[1] - 1), 7.0 / (d.shape[2] - 1), 1.0]
            )
            u = np.empty(d.shape + (3,), np.float32)
            for c in range(3):  # trilinear upsampling of a coarse random field
                u[..., c] = ops.resample_affine(
                    np.ascontiguousarray(coarse[..., c]), f2o, d.shape, order=1
                )
            u *= 8.0 / max(float(np.abs(u).max()), 1e-6)
            return u

        return self.get("displacement", make)

    @property
    def world_matrix(self) -> np.ndarray:
        """A small rigid motion in world mm (rotation about z by 3 deg, shift 2.5 mm)."""

        def make(d):
            t = np.deg2rad(3.0)
            m = np.eye(4)
            m[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
            m[:3, 3] = (2.5, -1.5, 1.0)
            return m

        return self.get("world_matrix", make)

    # --- SimpleITK views of the inputs ---------------------------------------------------------
    def sitk_image(self, key: str = "image", array_fn=None):
        def make(d):
            arr = getattr(d, key) if array_fn is None else array_fn(d)
            img = sitk.GetImageFromArray(arr, isVector=arr.ndim == 4)
            img.SetSpacing([float(s) for s in d.spacing[::-1]])
            img.SetOrigin([float(o) for o in d.affine[:3, 3]])
            return img

        return self.get("sitk_" + key, make)


# --- resampling -------------------------------------------------------------------------------
def _affine_index_matrix(d: Data) -> np.ndarray:
    """Output index -> input index of world_matrix on the image grid."""
    return d.get("affine_index", lambda d: np.linalg.inv(d.affine) @ d.world_matrix @ d.affine)


def _sitk_affine(d: Data):
    def make(d):
        t = sitk.AffineTransform(3)
        t.SetMatrix([float(v) for v in d.world_matrix[:3, :3].ravel()])
        t.SetTranslation([float(v) for v in d.world_matrix[:3, 3]])
        return t

    return d.get("sitk_affine", make)


def _sitk_displacement(d: Data):
    def make(d):
        f = sitk.GetImageFromArray(d.displacement.astype(np.float64), isVector=True)
        f.CopyInformation(d.sitk_image())
        return sitk.DisplacementFieldTransform(f)

    return d.get("sitk_disp_transform", make)


def _disp_coords(d: Data) -> np.ndarray:
    """(3, N) input indices for map_coordinates (built untimed: favours scipy)."""

    def make(d):
        w2i = np.linalg.inv(d.affine)
        coords = np.empty((3,) + d.shape, np.float64)
        k, j, i = np.meshgrid(
            *[np.arange(n, dtype=np.float64) for n in d.shape], indexing="ij", sparse=True
        )
        u = d.displacement
        for r in range(3):
            a = w2i @ d.affine  # identity up to round-off; keeps the general form
            coords[r] = (
                a[r, 0] * k
                + a[r, 1] * j
                + a[r, 2] * i
                + a[r, 3]
                + w2i[r, 0] * u[..., 0]
                + w2i[r, 1] * u[..., 1]
                + w2i[r, 2] * u[..., 2]
            )
        return coords

    return d.get("disp_coords", make)


def _ct_resample_affine(d):
    return ops.resample_affine(d.image, _affine_index_matrix(d), d.shape, order=1, fill=-1000.0)


def _sp_resample_affine(d):
    m = _affine_index_matrix(d)
    return ndi.affine_transform(
        d.image, m, output_shape=d.shape, order=1, mode="constant", cval=-1000.0
    )


def _sk_resample_affine(d):
    img = d.sitk_image()
    return sitk.Resample(img, img, _sitk_affine(d), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)


def _ct_resample_displacement(d):
    return ops.resample_displacement(
        d.image,
        d.displacement,
        out_to_world=d.affine,
        world_to_image=np.linalg.inv(d.affine),
        fill=-1000.0,
    )


def _sp_resample_displacement(d):
    return ndi.map_coordinates(d.image, _disp_coords(d), order=1, mode="constant", cval=-1000.0)


def _sk_resample_displacement(d):
    img = d.sitk_image()
    return sitk.Resample(
        img, img, _sitk_displacement(d), sitk.sitkLinear, -1000.0, sitk.sitkFloat32
    )


def _ct_resample_coarse_field(d):
    """Field on a 4x coarser grid, interpolated on the fly (field_from_out)."""

    def make(d):
        fs = tuple((n + 3) // 4 for n in d.shape)
        return np.ascontiguousarray(d.displacement[::4, ::4, ::4])[: fs[0], : fs[1], : fs[2]].copy()

    coarse = d.get("coarse_field", make)
    return ops.resample_displacement(
        d.image,
        coarse,
        out_to_world=d.affine,
        world_to_image=np.linalg.inv(d.affine),
        field_from_out=np.diag([0.25, 0.25, 0.25, 1.0]),
        out_shape=d.shape,
        fill=-1000.0,
    )


def _ct_resample_labels(d):
    labels = d.get("labels", lambda d: np.round(d.image / 300.0).astype(np.float32))
    return ops.resample_displacement(
        labels,
        d.displacement,
        out_to_world=d.affine,
        world_to_image=np.linalg.inv(d.affine),
        order=0,
        fill=0.0,
    )


def _sp_resample_labels(d):
    labels = d.get("labels", lambda d: np.round(d.image / 300.0).astype(np.float32))
    return ndi.map_coordinates(labels, _disp_coords(d), order=0, mode="constant", cval=0.0)


def _sk_resample_labels(d):
    labels = d.sitk_image(
        "labels", lambda d: d.get("labels", lambda d: np.round(d.image / 300.0).astype(np.float32))
    )
    return sitk.Resample(
        labels, labels, _sitk_displacement(d), sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32
    )


# --- gradient and smoothing -------------------------------------------------------------------
SIGMA_MM = 2.0


def _ct_gradient(d):
    return ops.gradient(d.image, d.spacing)


def _np_gradient(d):
    return np.gradient(d.image, *d.spacing)


def _sk_gradient(d):
    return sitk.Gradient(d.sitk_image(), useImageSpacing=True)


def _ct_smooth(d):
    return ops.smooth(d.image, SIGMA_MM, d.spacing)


def _sp_smooth(d):
    return ndi.gaussian_filter(d.image, SIGMA_MM / d.spacing, mode="nearest", truncate=3.0)


def _sk_smooth(d):
    return sitk.SmoothingRecursiveGaussian(d.sitk_image(), SIGMA_MM)


def _ct_smooth_field(d):
    return ops.smooth(d.displacement, SIGMA_MM, d.spacing)


def _sp_smooth_field(d):
    return ndi.gaussian_filter(
        d.displacement, tuple(SIGMA_MM / d.spacing) + (0.0,), mode="nearest", truncate=3.0
    )


def _sk_smooth_field(d):
    return sitk.SmoothingRecursiveGaussian(d.sitk_image("displacement"), SIGMA_MM)


class Case(NamedTuple):
    name: str
    ctreg_fn: Callable[[Data], Any]
    scipy_fn: Callable[[Data], Any] | None
    sitk_fn: Callable[[Data], Any] | None


CASES: list[Case] = [
    Case(
        "resample_affine (trilinear)", _ct_resample_affine, _sp_resample_affine, _sk_resample_affine
    ),
    Case(
        "resample_displacement (trilinear)",
        _ct_resample_displacement,
        _sp_resample_displacement,
        _sk_resample_displacement,
    ),
    Case(
        "resample_displacement (nearest, labels)",
        _ct_resample_labels,
        _sp_resample_labels,
        _sk_resample_labels,
    ),
    Case("resample_displacement (field 4x coarser)", _ct_resample_coarse_field, None, None),
    Case("gradient", _ct_gradient, _np_gradient, _sk_gradient),
    Case("smooth scalar (2 mm)", _ct_smooth, _sp_smooth, _sk_smooth),
    Case("smooth 3-vector field (2 mm)", _ct_smooth_field, _sp_smooth_field, _sk_smooth_field),
]


# --- Numba field kernels (ctreg/_kernels.py) ---------------------------------------------------
# ctreg's fields have (dz, dy, dx) components along the array axes; with the identity direction
# of Data.affine that is the world (x, y, z) displacement reversed.  SimpleITK gets the world
# (x, y, z) field.  The scipy columns use map_coordinates(order=1, mode='nearest') / np.gradient.
def _field_zyx(d):
    return d.get("field_zyx", lambda d: np.ascontiguousarray(d.displacement[..., ::-1]))


def _field_zyx_2(d):
    """A second, different smooth field (the first one shifted by a few voxels)."""
    return d.get(
        "field_zyx_2", lambda d: np.ascontiguousarray(np.roll(_field_zyx(d), (5, -7, 9), (0, 1, 2)))
    )


def _sp_interp_field(field, coords):
    return np.stack(
        [ndi.map_coordinates(field[..., c], coords, order=1, mode="nearest") for c in range(3)], -1
    )


def _ct_compose(d):
    return ops.compose_fields(_field_zyx(d), _field_zyx_2(d), d.spacing)


def _sp_compose(d):
    inner = _field_zyx_2(d)
    coords = np.indices(d.shape, dtype=np.float32) + np.moveaxis(inner, -1, 0) / d.spacing.astype(
        np.float32
    ).reshape(3, 1, 1, 1)
    return inner + _sp_interp_field(_field_zyx(d), coords)


def _sk_compose(d):
    def make(d):  # the transform takes the image over: give it its own copy (untimed)
        f = sitk.GetImageFromArray(
            np.ascontiguousarray(_field_zyx_2(d)[..., ::-1], dtype=np.float64), isVector=True
        )
        f.CopyInformation(d.sitk_image())
        return sitk.DisplacementFieldTransform(f)

    inner_t = d.get("sitk_inner_transform", make)
    outer = d.sitk_image(
        "field_outer_xyz", lambda d: np.ascontiguousarray(_field_zyx(d)[..., ::-1])
    )
    inner = d.sitk_image(
        "field_inner_xyz", lambda d: np.ascontiguousarray(_field_zyx_2(d)[..., ::-1])
    )
    return sitk.Resample(outer, outer, inner_t, sitk.sitkLinear, 0.0) + inner


def _ct_exp(d):
    return ops.exp_field(_field_zyx(d), d.spacing)


def _ct_jacobian(d):
    return ops.jacobian_determinant(_field_zyx(d), d.spacing)


def _np_jacobian(d):
    u = _field_zyx(d)
    jac = np.empty(d.shape + (3, 3), np.float32)
    for a in range(3):
        for b, g in enumerate(np.gradient(u[..., a], *d.spacing)):
            jac[..., a, b] = g + (a == b)
    return np.linalg.det(jac)


def _sk_jacobian(d):
    return sitk.DisplacementFieldJacobianDeterminant(d.sitk_image("displacement"), True)


INVERT_ITERATIONS = 10  # both run exactly this many fixed-point iterations


def _ct_invert(d):
    return ops.invert_field(_field_zyx(d), d.spacing, iterations=INVERT_ITERATIONS, tol_mm=1e-12)


def _sk_invert(d):
    field = d.sitk_image("displacement_f64", lambda d: d.displacement.astype(np.float64))
    return sitk.InvertDisplacementField(field, INVERT_ITERATIONS, 0.0, 0.0, True)


def _coarse_shape_spacing(d):
    return tuple((n + 1) // 2 for n in d.shape), tuple(2.0 * d.spacing)


def _ct_resample_field(d):
    """Upsampling x2 per axis of a field on a half-resolution grid (the pyramid's use)."""
    shape, spacing = _coarse_shape_spacing(d)
    coarse = d.get("coarse_zyx", lambda d: np.ascontiguousarray(_field_zyx(d)[::2, ::2, ::2]))
    return ops.resample_field(coarse, spacing, d.shape, d.spacing)


def _sp_resample_field(d):
    shape, spacing = _coarse_shape_spacing(d)
    coarse = d.get("coarse_zyx", lambda d: np.ascontiguousarray(_field_zyx(d)[::2, ::2, ::2]))
    coords = np.indices(d.shape, dtype=np.float32) * np.float32(0.5)
    return _sp_interp_field(coarse, coords)


def _demons_inputs(d):
    def make(d):
        warped = ops.resample_displacement(
            d.image,
            d.displacement,
            out_to_world=d.affine,
            world_to_image=np.linalg.inv(d.affine),
            fill=-1000.0,
        )
        return (
            d.image,
            warped,
            ops.gradient(d.image, d.spacing),
            ops.gradient(warped, d.spacing),
            d.image > -600.0,
        )

    return d.get("demons_inputs", make)


def _ct_demons(d):
    r, w, gr, gw, mask = _demons_inputs(d)
    return ops.demons_forces(r, w, gr, gw, mask=mask, spacing=d.spacing)


def _np_demons(d):
    r, w, gr, gw, mask = _demons_inputs(d)
    diff = w - r
    j = 0.5 * (gr + gw)
    den = (j * j).sum(-1) + diff * diff / float(np.mean(d.spacing**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        du = np.where((den > 1e-12)[..., None], (-diff / den)[..., None] * j, 0.0)
    length = np.sqrt((du * du).sum(-1))
    du *= np.minimum(1.0, 2.0 / np.maximum(length, 1e-30))[..., None]
    du[~mask] = 0.0
    return du, float(np.mean(diff[mask] ** 2))


CASES += [
    Case("compose_fields", _ct_compose, _sp_compose, _sk_compose),
    Case("exp_field (scaling and squaring)", _ct_exp, None, None),
    Case("jacobian_determinant", _ct_jacobian, _np_jacobian, _sk_jacobian),
    Case(f"invert_field ({INVERT_ITERATIONS} iterations)", _ct_invert, None, _sk_invert),
    Case("resample_field (x2 up)", _ct_resample_field, _sp_resample_field, None),
    Case("demons_forces (symmetric, masked)", _ct_demons, _np_demons, None),
]


# --- B-spline FFD and similarity metrics (cpp/include/ctreg/{bspline,metrics}.hpp) -------------
# Metrics: ctreg computes value + dcost/dW over all voxels.  numpy/scipy columns compute the same
# (vectorised numpy; scipy.ndimage.uniform_filter for local NCC; np.bincount for the MI
# histogram).  SimpleITK columns are ImageRegistrationMethod.MetricEvaluate with an identity
# transform and no sampling (value only, but it also interpolates the moving image).
BSPLINE_T = (5, 5, 5)
MI_BINS, MI_RANGE = 32, (-1000.0, 400.0)


def _metric_images(d):
    return d.get("metric_images", lambda d: _demons_inputs(d)[:2])


def _ct_ssd(d):
    return ops.ssd(*_metric_images(d))


def _np_ssd(d):
    r, w = _metric_images(d)
    diff = w - r
    return float(np.mean(diff.astype(np.float64) ** 2)), (2.0 / diff.size) * diff


def _ct_ncc(d):
    return ops.ncc(*_metric_images(d))


def _np_ncc(d):
    r, w = (a.astype(np.float64) for a in _metric_images(d))
    rc, wc = r - r.mean(), w - w.mean()
    sr, sw = np.sqrt(np.mean(rc * rc)), np.sqrt(np.mean(wc * wc))
    c = float(np.mean(rc * wc) / (sr * sw))
    return -c, ((-rc / (sr * sw) + c * wc / (sw * sw)) / r.size).astype(np.float32)


def _ct_lncc(d):
    return ops.lncc(*_metric_images(d), radius_vox=(2, 2, 2))


def _sp_lncc(d):
    r, w = (a.astype(np.float64) for a in _metric_images(d))
    box = lambda x: ndi.uniform_filter(x, 5, mode="constant") * 125.0  # noqa: E731
    n = box(np.ones_like(r))
    sr, sw = box(r), box(w)
    cross = box(r * w) - sr * sw / n
    vr, vw = box(r * r) - sr * sr / n, box(w * w) - sw * sw / n
    den = vr * vw
    ok = den > 1e-5
    a = np.where(ok, cross / np.where(ok, den, 1), 0)
    b = np.where(ok, a * cross / np.where(ok, vw, 1), 0)
    g = -2.0 / r.size * (r * box(a) - box(a * sr / n) - w * box(b) + box(b * sw / n))
    return -float(np.mean(a * cross)), g.astype(np.float32)


def _ct_mi(d):
    return ops.mattes_mi(
        *_metric_images(d), bins=MI_BINS, ref_range=MI_RANGE, warped_range=MI_RANGE
    )


def _np_mi(d):
    r, w = _metric_images(d)
    nb, (lo, hi) = MI_BINS, MI_RANGE
    a = np.minimum(((np.clip(r, lo, hi) - lo) * (nb / (hi - lo))).astype(np.int64), nb - 1).ravel()
    x = (1.0 + (np.clip(w, lo, hi) - lo) * ((nb - 3) / (hi - lo))).ravel()
    i0 = np.minimum(x.astype(np.int64), nb - 3)
    f = x - i0
    wts = [
        (1 - f) ** 3 / 6,
        (3 * f**3 - 6 * f**2 + 4) / 6,
        (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6,
        f**3 / 6,
    ]
    joint = (
        sum(np.bincount(a * nb + i0 - 1 + l, wts[l], nb * nb) for l in range(4)).reshape(nb, nb)
        / a.size
    )
    pr, pw = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = float(np.nansum(joint * np.log(joint / (pr * pw))))
        dlog = np.where(joint > 0, np.log(joint / pw), 0.0).ravel()
    dw = [-0.5 * (1 - f) ** 2, 1.5 * f**2 - 2 * f, -1.5 * f**2 + f + 0.5, 0.5 * f**2]
    g = sum(dlog[a * nb + i0 - 1 + l] * dw[l] for l in range(4)) * (-(nb - 3) / (hi - lo) / a.size)
    inside = ((w > lo) & (w < hi)).ravel()
    return -mi, np.where(inside, g, 0.0).reshape(r.shape).astype(np.float32)


def _sk_metric(setter):
    def run(d):
        r, w = _metric_images(d)
        fixed = d.sitk_image("metric_ref", lambda d: r)
        moving = d.sitk_image("metric_warped", lambda d: w)
        reg = sitk.ImageRegistrationMethod()
        setter(reg)
        reg.SetMetricSamplingStrategy(reg.NONE)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetInitialTransform(sitk.TranslationTransform(3))
        return reg.MetricEvaluate(fixed, moving)

    return run


def _bspline_coeffs(d):
    def make(d):
        grid = ops.bspline_grid_shape(d.shape, BSPLINE_T)
        return (d.rng.standard_normal(grid + (3,)) * 3.0).astype(np.float32)

    return d.get("bspline_coeffs", make)


def _ct_bspline_dense(d):
    return ops.bspline_to_dense(_bspline_coeffs(d), BSPLINE_T, d.shape)


def _sk_bspline_dense(d):
    def make(d):  # ITK's mesh over the voxel-centre extent: the same number of control points
        c = _bspline_coeffs(d).astype(np.float64)
        img = d.sitk_image()
        tr = sitk.BSplineTransform(3, 3)
        tr.SetTransformDomainOrigin(img.GetOrigin())
        tr.SetTransformDomainDirection(img.GetDirection())
        tr.SetTransformDomainPhysicalDimensions(
            [(n - 1) * s for n, s in zip(img.GetSize(), img.GetSpacing())]
        )
        tr.SetTransformDomainMeshSize([g - 3 for g in c.shape[:3][::-1]])
        tr.SetParameters(tuple(np.concatenate([c[..., comp].ravel() for comp in range(3)])))
        return tr

    tr = d.get("sitk_bspline", make)
    img = d.sitk_image()
    return sitk.TransformToDisplacementField(
        tr,
        sitk.sitkVectorFloat32,
        img.GetSize(),
        img.GetOrigin(),
        img.GetSpacing(),
        img.GetDirection(),
    )


def _ct_bspline_adjoint(d):
    return ops.bspline_adjoint(d.displacement, BSPLINE_T, _bspline_coeffs(d).shape[:3])


CASES += [
    Case("ssd value+gradient", _ct_ssd, _np_ssd, _sk_metric(lambda m: m.SetMetricAsMeanSquares())),
    Case("ncc value+gradient", _ct_ncc, _np_ncc, _sk_metric(lambda m: m.SetMetricAsCorrelation())),
    Case(
        "lncc value+gradient (r=2)",
        _ct_lncc,
        _sp_lncc,
        _sk_metric(lambda m: m.SetMetricAsANTSNeighborhoodCorrelation(2)),
    ),
    Case(
        "mattes_mi value+gradient (32 bins)",
        _ct_mi,
        _np_mi,
        _sk_metric(lambda m: m.SetMetricAsMattesMutualInformation(MI_BINS)),
    ),
    Case("bspline_to_dense (t=5)", _ct_bspline_dense, None, _sk_bspline_dense),
    Case("bspline_adjoint (t=5)", _ct_bspline_adjoint, None, None),
]

# time.perf_counter (wall) by default; --clock cpu uses the process's CPU time, which with
# --threads 1 measures the work itself on a machine shared with other jobs.
_CLOCK = time.perf_counter


def _best_time(fn: Callable[[Data], Any], d: Data, repeat: int) -> float:
    out = fn(d)  # warm-up; builds cached inputs
    del out
    best = np.inf
    for _ in range(repeat):
        gc.collect()
        t0 = _CLOCK()
        out = fn(d)
        best = min(best, _CLOCK() - t0)
        del out
    return best


def run(
    sizes: list[str], threads: int, repeat: int, only: list[str] | None, skip: set[str]
) -> list[dict]:
    ctreg.set_num_threads(threads)
    if sitk is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    rows = []
    for size in sizes:
        d = Data(SIZES[size])
        for case in CASES:
            if only and not any(case.name.startswith(o) for o in only):
                continue
            row = {"size": "x".join(map(str, d.shape)), "case": case.name}
            t_ct = _best_time(case.ctreg_fn, d, repeat)
            row["mvox_s"] = d.nvox / t_ct / 1e6
            row["ctreg_s"] = t_ct
            for lib, fn in (("scipy", case.scipy_fn), ("sitk", case.sitk_fn)):
                if fn is None or lib in skip or (lib == "sitk" and sitk is None):
                    row[lib] = None
                    continue
                row[lib] = _best_time(fn, d, repeat) / t_ct
            rows.append(row)
            print(_fmt(row), flush=True)
        del d
        gc.collect()
    return rows


def _fmt(row: dict) -> str:
    def ratio(v):
        return "-" if v is None else f"{v:.1f}x"

    return (
        f"| {row['size']} | {row['case']} | {row['mvox_s']:.0f} | {row['ctreg_s'] * 1e3:.0f} | "
        f"{ratio(row['scipy'])} | {ratio(row['sitk'])} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        choices=["small", "large", "all"],
        default="small",
        help="small: 160x192x192 (default, <= 3 min on 2 cores); large: 300x512x512; all: both",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="best of N timed runs after a warm-up")
    p.add_argument("--only", nargs="*", help="run the cases whose name starts with any of these")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (use with --threads 1 on a busy machine)",
    )
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["scipy", "sitk"], help="competitors to leave out"
    )
    args = p.parse_args(argv)
    sizes = ["small", "large"] if args.sizes == "all" else [args.sizes]
    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"# ctreg {ctreg.__version__}, {args.threads} threads, best of {args.repeat} "
        f"({args.clock} clock); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load avg {os.getloadavg()[0]:.1f}; "
        f"SimpleITK {sitk.Version.VersionString() if sitk else 'absent'}"
    )
    print("| size (z,y,x) | kernel | ctreg Mvox/s | ctreg ms | scipy/ctreg | SimpleITK/ctreg |")
    print("|---|---|---|---|---|---|")
    run(sizes, args.threads, args.repeat, args.only, set(args.skip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
