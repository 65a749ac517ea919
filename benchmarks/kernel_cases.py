"""The cases of bench_kernels.py, part 1: the shared inputs (:class:`Data`), :class:`Case`, and the
resampling, gradient, smoothing and field-kernel cases (the metrics and B-spline cases are in
kernel_cases_metrics.py).

Every case is one row of CASES: ``Case(name, ctreg_fn, scipy_fn, sitk_fn)``.  Each function
takes the shared, lazily built inputs ``d`` (:class:`Data`) and runs the operation once;
``None`` means "no equivalent".  Inputs are built (and cached in ``d``) during an untimed
warm-up call, so put set-up work behind ``d.get(key, factory)``.
"""

from __future__ import annotations

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


class Case(NamedTuple):
    name: str
    ctreg_fn: Callable[[Data], Any]
    scipy_fn: Callable[[Data], Any] | None
    sitk_fn: Callable[[Data], Any] | None


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


def demons_inputs(d):
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
    r, w, gr, gw, mask = demons_inputs(d)
    return ops.demons_forces(r, w, gr, gw, mask=mask, spacing=d.spacing)


def _np_demons(d):
    r, w, gr, gw, mask = demons_inputs(d)
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


# --- masks (the lung focus of register()) ---------------------------------------------------
def _lung_like(d):
    return d.get("lung_like", lambda d: np.ascontiguousarray(d.image < -500.0))


def _ct_dilate(d):
    return ops.dilate_ball(_lung_like(d), d.spacing, 10.0)


def _sp_dilate(d):
    return ndi.distance_transform_edt(~_lung_like(d), sampling=d.spacing) <= 10.0


CASES += [
    Case("dilate_ball (10 mm; scipy: EDT <= r)", _ct_dilate, _sp_dilate, None),
]
