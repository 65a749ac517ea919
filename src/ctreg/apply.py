"""Reuse a registration: warp any volume or label map with it, map points both ways.

A registration maps a reference world point ``p`` (x, y, z LPS mm) to ``phi(p) = p + U(p)`` in
the floating scan, where ``U`` is the displacement on the reference grid (it includes the affine
part).  Everything here works from ``U`` and the reference grid's affine alone, so it serves a
fresh :class:`~ctreg.RegistrationResult` and one read back by :func:`ctreg.load_result` alike.

* :func:`warp_array` resamples an image that lies anywhere in the floating scan's world (its own
  grid and affine) onto the reference grid: ``out[q] = image(phi(ref_affine q))``.
* :func:`map_points` evaluates ``phi`` (trilinear ``U``; the border value beyond the grid).
* :func:`invert_points` solves ``phi(p) = q`` by a fixed-point iteration on the displacement and
  reports, per point, the inverse-consistency error ``|phi(p) - q|`` in mm.

Border rule (all interpolations): an output voxel whose sample point lies beyond the outermost
voxel centres of the image (continuous index < 0 or > n - 1) gets ``default``.  (ITK's resampler
also accepts the half voxel beyond the centres; inside, the values agree.)
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import GeometryError

__all__ = ["INTERPOLATIONS", "warp_array", "map_points", "invert_points", "world_jacobian"]

log = logging.getLogger("ctreg")

INTERPOLATIONS = ("linear", "nearest", "bspline")
#: z slices per chunk of the B-spline path (bounds the float64 coordinate arrays to ~100 MB).
_BSPLINE_SLAB_VOXELS = 4_000_000
#: inverse-consistency error (mm) above which invert_points warns.
INVERSE_WARN_MM = 0.01


def _check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(map(repr, INTERPOLATIONS))}, "
            f"got {interpolation!r}"
        )
    return interpolation


def _check_affine(name: str, affine) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or not np.allclose(a[3], [0, 0, 0, 1]):
        raise GeometryError(
            f"{name} must be a finite 4x4 index (k, j, i) -> world (x, y, z) LPS "
            f"affine with last row (0, 0, 0, 1), got {a.tolist() if a.size == 16 else a.shape}"
        )
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise GeometryError(f"{name} is singular (zero spacing or degenerate direction)")
    return a


def _integer_like(dtype: np.dtype) -> bool:
    return dtype.kind in "iub"


# -- warping ------------------------------------------------------------------------------------
def warp_array(
    image: np.ndarray,
    image_affine,
    displacement: np.ndarray,
    grid_affine,
    *,
    interpolation: str = "linear",
    default: float = 0.0,
    image_valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image`` (in the floating scan's world) onto the reference grid through ``U``.

    Parameters
    ----------
    image : (z, y, x) array.  ``"nearest"`` keeps its dtype and values exactly (integer label
        maps included); ``"linear"`` and ``"bspline"`` return float32.
    image_affine : (4, 4) index (k, j, i) -> world (x, y, z) LPS mm of ``image``.
    displacement : (z, y, x, 3) float32 ``U`` on the reference grid (world components, mm).
    grid_affine : (4, 4) affine of the reference grid.
    interpolation : "linear" (trilinear), "nearest" (nearest neighbour; ties round up) or
        "bspline" (cubic B-spline, mirror boundary, as ITK's ``sitkBSpline``).
    default : value where the sample point lies beyond the image's outermost voxel centres
        (or, with ``image_valid``, draws on a voxel without data); must fit ``image``'s dtype
        for ``"nearest"`` on integers.
    image_valid : (z, y, x) bool or None; False where ``image`` has no data.

    Returns
    -------
    (warped, valid): warped on the reference grid (shape ``displacement.shape[:3]``), and a bool
    array, False where ``default`` was used.
    """
    from . import ops

    interpolation = _check_interpolation(interpolation)
    img = np.asarray(image)
    if img.ndim != 3 or min(img.shape) < 1:
        raise GeometryError(f"image must be a non-empty 3-D (z, y, x) array, got shape {img.shape}")
    if img.dtype.kind not in "iubf":
        raise TypeError(f"image must hold numbers, got dtype {img.dtype}")
    if image_valid is not None and np.shape(image_valid) != img.shape:
        raise GeometryError(
            f"image_valid must have the image's shape {img.shape}, got {np.shape(image_valid)}"
        )
    w2i = np.linalg.inv(_check_affine("image affine", image_affine))
    o2w = _check_affine("grid affine", grid_affine)
    u = np.asarray(displacement)
    if u.ndim != 4 or u.shape[3] != 3:
        raise GeometryError(f"displacement must be (z, y, x, 3), got shape {u.shape}")
    u = np.ascontiguousarray(u, dtype=np.float32)
    nan = np.float32(np.nan)

    def native(values: np.ndarray, order: int) -> np.ndarray:
        return ops.resample_displacement(
            np.ascontiguousarray(values, dtype=np.float32),
            u,
            out_to_world=o2w,
            world_to_image=w2i,
            order=order,
            fill=nan,
        )

    if interpolation == "bspline":
        out, inside = _warp_bspline(img, w2i, u, o2w)
        valid = inside
    elif interpolation == "linear":
        source = img.astype(np.float32, copy=image_valid is not None)
        if image_valid is not None:  # a sample touching a voxel without data is invalid
            source[~np.asarray(image_valid, bool)] = nan
        out = native(source, 1)
        valid = ~np.isnan(out)
    else:
        out, valid = _warp_nearest(img, native)
    if image_valid is not None and interpolation != "linear":
        sampled = native(np.asarray(image_valid, np.float32), 0)
        valid &= sampled == 1.0
    if interpolation == "nearest" and _integer_like(img.dtype):
        info = np.iinfo(img.dtype) if img.dtype.kind != "b" else None
        if info is not None and not (
            info.min <= default <= info.max and float(default).is_integer()
        ):
            raise ValueError(f"default {default!r} is not a value of the label dtype {img.dtype}")
        out[~valid] = img.dtype.type(default)
    else:
        out[~valid] = np.float32(default)
    return out, valid


def _warp_nearest(img: np.ndarray, native) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour that returns the input's own values: float32-exact dtypes go through
    the native kernel directly; wider integers through the indices of their distinct values."""
    if img.dtype == np.float32 or (img.dtype.kind in "iub" and img.dtype.itemsize <= 2):
        out = native(img, 0)
        valid = ~np.isnan(out)
        if img.dtype == np.float32:
            return out, valid
        out[~valid] = 0  # exact below: these values are float32
        return out.astype(img.dtype), valid
    values, inverse = np.unique(img, return_inverse=True)
    if values.size >= 1 << 24:
        raise ValueError(
            f"nearest-neighbour warping of {values.size} distinct values is not "
            "supported (at most 16,777,215); cast the image to float32"
        )
    idx = native(inverse.reshape(img.shape).astype(np.float32), 0)
    valid = ~np.isnan(idx)
    res = np.zeros(idx.shape, dtype=img.dtype)
    res[valid] = values[idx[valid].astype(np.int64)]
    return res, valid


def _warp_bspline(img: np.ndarray, w2i: np.ndarray, u: np.ndarray, o2w: np.ndarray):
    """Cubic B-spline: scipy's prefilter (mirror boundary), then evaluation slab by slab."""
    import scipy.ndimage as ndi

    coeffs = ndi.spline_filter(img.astype(np.float64), order=3, mode="mirror")
    shape = u.shape[:3]
    out = np.empty(shape, np.float32)
    inside = np.empty(shape, bool)
    hi = np.array(img.shape, float) - 1.0
    m = w2i @ o2w  # output index -> image index, before the displacement
    slab = max(1, _BSPLINE_SLAB_VOXELS // (shape[1] * shape[2]))
    jj, ii = np.meshgrid(
        np.arange(shape[1], dtype=np.float64), np.arange(shape[2], dtype=np.float64), indexing="ij"
    )
    for k0 in range(0, shape[0], slab):
        k1 = min(shape[0], k0 + slab)
        kk = np.broadcast_to(
            np.arange(k0, k1, dtype=np.float64)[:, None, None], (k1 - k0,) + jj.shape
        )
        q = np.stack([kk, np.broadcast_to(jj, kk.shape), np.broadcast_to(ii, kk.shape)], axis=-1)
        coords = q @ m[:3, :3].T + m[:3, 3] + u[k0:k1].astype(np.float64) @ w2i[:3, :3].T
        ok = np.all((coords >= -1e-6) & (coords <= hi + 1e-6), axis=-1)
        vals = ndi.map_coordinates(
            coeffs, coords.reshape(-1, 3).T, order=3, mode="mirror", prefilter=False
        )
        out[k0:k1] = vals.reshape(ok.shape)
        inside[k0:k1] = ok
    return out, inside


# -- points -------------------------------------------------------------------------------------
def _as_points(points) -> tuple[np.ndarray, bool]:
    pts = np.asarray(points, dtype=np.float64)
    single = pts.shape == (3,)
    if single:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(
            "points must be one point (3,) or an (N, 3) array of (x, y, z) LPS mm, "
            f"got shape {pts.shape}"
        )
    if not np.all(np.isfinite(pts)):
        raise ValueError("points contain NaN or infinity")
    return pts, single


def _displacement_at(
    displacement: np.ndarray, grid_affine: np.ndarray, pts: np.ndarray
) -> np.ndarray:
    import scipy.ndimage as ndi

    inv = np.linalg.inv(grid_affine)
    idx = (pts @ inv[:3, :3].T + inv[:3, 3]).T  # (3, N) k, j, i
    return np.stack(
        [ndi.map_coordinates(displacement[..., c], idx, order=1, mode="nearest") for c in range(3)],
        axis=1,
    ).astype(np.float64)


def map_points(points, displacement: np.ndarray, grid_affine) -> np.ndarray:
    """Reference world points -> floating world points, ``p + U(p)``.

    ``points``: one point (3,) or (N, 3), (x, y, z) LPS mm; the result has the same shape.
    ``U`` is interpolated trilinearly; beyond the grid the border value continues.
    """
    pts, single = _as_points(points)
    out = pts + _displacement_at(displacement, np.asarray(grid_affine, float), pts)
    return out[0] if single else out


def invert_points(
    points,
    displacement: np.ndarray,
    grid_affine,
    affine=None,
    *,
    max_iterations: int = 100,
    tol_mm: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | float]:
    """Floating world points ``q`` -> reference world points ``p`` with ``p + U(p) = q``.

    Fixed-point iteration on the displacement, preconditioned by the affine part ``T(p) = A p +
    b`` (``affine``: its 4x4 homogeneous matrix, reference -> floating; identity when None):
    ``p <- p + A^-1 (q - p - U(p))``, starting from ``p = T^-1(q)``.  The error contracts by
    the deformable part's gradient at each step, so it converges where that part does not fold
    (|grad| < 1); it stops when every point moved by less than ``tol_mm`` or after
    ``max_iterations`` steps.

    Returns
    -------
    (p, error_mm): ``p`` with the shape of ``points``, and the inverse-consistency error
    ``|p + U(p) - q|`` (mm) per point (a float for a single point).  Points whose preimage lies
    beyond the reference grid use the border displacement, as :func:`map_points` does.
    """
    q, single = _as_points(points)
    grid_affine = np.asarray(grid_affine, float)
    h = np.eye(4) if affine is None else np.asarray(affine, float).reshape(4, 4)
    a_inv = np.linalg.inv(h[:3, :3])
    p = (q - h[:3, 3]) @ a_inv.T
    for _ in range(int(max_iterations)):
        r = q - (p + _displacement_at(displacement, grid_affine, p))
        step = r @ a_inv.T
        p = p + step
        if np.max(np.linalg.norm(step, axis=1)) < tol_mm:
            break
    err = np.linalg.norm(p + _displacement_at(displacement, grid_affine, p) - q, axis=1)
    if err.size and float(err.max()) > INVERSE_WARN_MM:
        log.warning(
            "inverse point mapping: %d of %d point(s) with inverse-consistency error above "
            "%.3g mm (largest %.3g mm): folding or points beyond the reference grid",
            int(np.count_nonzero(err > INVERSE_WARN_MM)),
            err.size,
            INVERSE_WARN_MM,
            float(err.max()),
        )
    if single:
        return p[0], float(err[0])
    return p, err


def world_jacobian(displacement: np.ndarray, grid_affine) -> np.ndarray:
    """(z, y, x) float32 ``det(d phi / d p)`` of ``phi(p) = p + U(p)`` on the reference grid
    (the same quantity as the engine's ``jacobian_determinant()``: affine part included)."""
    from . import ops

    a = _check_affine("grid affine", grid_affine)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    d = a[:3, :3] / spacing
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise GeometryError("the grid's direction cosines are not orthonormal")
    u_frame = np.ascontiguousarray(np.asarray(displacement, np.float32) @ d.astype(np.float32))
    return ops.jacobian_determinant(u_frame, tuple(spacing))
