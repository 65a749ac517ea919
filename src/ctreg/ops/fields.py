"""Dense displacement / velocity field kernels: composition, exponential, Jacobian, inversion.

Frame: a displacement / velocity field is a (nz, ny, nx, 3) float32 array on a regular grid
with spacing (sz, sy, sx) mm; its components are (dz, dy, dx) in mm ALONG THE ARRAY AXES (the
engine works in the reference grid's own axis frame and converts to world LPS at the end).
Grid point (k, j, i) sits at mm position (k*sz, j*sy, i*sx); the map of a field u is
phi(p) = p + u(p).  A field is evaluated between grid points by trilinear interpolation with
the position clamped to the grid (outside the grid it takes the value of the nearest border
point), as scipy.ndimage.map_coordinates(order=1, mode='nearest').
"""

from __future__ import annotations

import numpy as np

from .. import _native
from .. import _checks as ck

__all__ = [
    "compose_fields",
    "exp_field",
    "invert_field",
    "jacobian_determinant",
    "jacobian_statistics",
    "jacobian_statistics_pair",
    "JacobianStatistics",
    "affine_field",
]


def compose_fields(outer, inner, spacing) -> np.ndarray:
    """Displacement of ``phi_outer ∘ phi_inner``: ``w(p) = inner(p) + outer(p + inner(p))``.

    Parameters
    ----------
    outer, inner : (z, y, x, 3) float32 displacement fields on the same grid, mm.
    spacing : (z, y, x) grid spacing, mm.

    Returns
    -------
    (z, y, x, 3) float32, mm.  ``outer`` is read at ``p + inner(p)`` by trilinear interpolation
    with the position clamped to the grid (C++: ctreg/warp.hpp).
    """
    ck.vector_field("outer", outer)
    ck.vector_field("inner", inner)
    ck.same_grid("inner", inner, "outer", outer.shape)
    sp = ck.spacing3("spacing", spacing)
    return _native.compose_fields(outer, inner, sp)


def exp_field(velocity, spacing, *, max_step_vox: float = 0.5, copy: bool = True) -> np.ndarray:
    """Exponential of a stationary velocity field by scaling and squaring.

    Choose the smallest ``N >= 0`` with ``max|v| / 2^N <= max_step_vox`` (|v| measured in voxels:
    ``sqrt((vz/sz)^2 + (vy/sy)^2 + (vx/sx)^2)``), set ``u = v / 2^N`` and then ``N`` times
    ``u <- compose_fields(u, u)``.  ``exp(0) = 0``; for a smooth ``v`` the result is a
    diffeomorphism (positive Jacobian).

    Parameters
    ----------
    velocity : (z, y, x, 3) float32, mm.
    spacing : (z, y, x) mm.
    max_step_vox : positive number, the largest step in voxels before squaring.
    copy : False returns ``velocity`` itself when no squaring is needed (N = 0), instead of a
        copy; the caller must then not modify one while using the other.

    Returns
    -------
    (z, y, x, 3) float32 displacement, mm (a new array, unless ``copy=False`` and N = 0).
    """
    ck.vector_field("velocity", velocity)
    sz, sy, sx = ck.spacing3("spacing", spacing)
    step = ck.positive("max_step_vox", max_step_vox)
    vmax = float(_native.max_norm_vox(velocity, (sz, sy, sx)))
    if not np.isfinite(vmax):
        raise ValueError("velocity contains NaN or infinity")
    n = 0 if vmax <= step else int(np.ceil(np.log2(vmax / step)))
    while vmax / 2.0**n > step:  # guard the rounding of log2
        n += 1
    if n == 0 and not copy:
        return velocity
    u = np.empty_like(velocity)
    _native.scale_field(velocity, 1.0 / 2.0**n, u)
    if n == 0:
        return u
    for _ in range(n):
        u = _native.compose_fields(u, u, (sz, sy, sx))
    return u


def jacobian_determinant(displacement, spacing) -> np.ndarray:
    """``det(I + grad u)`` on the grid of ``displacement``.

    ``grad u[a, b] = d u_a / d x_b`` with a, b over (z, y, x) in mm: central differences inside,
    first-order one-sided differences at the borders (``numpy.gradient`` with ``edge_order=1``),
    zero along an axis with a single point.  Values <= 0 mark folding.

    Parameters
    ----------
    displacement : (z, y, x, 3) float32, mm.
    spacing : (z, y, x) mm.

    Returns
    -------
    (z, y, x) float32.
    """
    ck.vector_field("displacement", displacement)
    sp = ck.spacing3("spacing", spacing)
    return _native.jacobian_determinant(displacement, sp)


def jacobian_statistics(jacobian, mask=None) -> dict:
    """Summary of a Jacobian determinant map, in one pass: ``{"min", "max",
    "percent_nonpositive", "sd_log"}`` over the voxels where ``mask`` (all when None);
    ``sd_log`` is the standard deviation of log J over J > 0 (None when there is none).
    An empty selection gives ``{}``.

    Parameters
    ----------
    jacobian : (z, y, x) float32.
    mask : (z, y, x) bool or uint8, or None.
    """
    jacobian = ck.f32("jacobian", jacobian, 3)
    if mask is None:
        m, use = np.zeros((1, 1, 1), np.bool_), False
    else:
        m = ck.mask_u8("mask", np.asarray(mask), jacobian.shape, copy=True, ref_name="jacobian")
        m, use = m.view(np.bool_), True
    return _stats_dict(*_native.jacobian_stats(jacobian, m.view(np.uint8) if use else None))


def jacobian_statistics_pair(jacobian, mask) -> tuple[dict, dict]:
    """``(jacobian_statistics(jacobian), jacobian_statistics(jacobian, mask))``, the same
    values, in one pass over the map (each log J taken once)."""
    jacobian = ck.f32("jacobian", jacobian, 3)
    m = ck.mask_u8("mask", np.asarray(mask), jacobian.shape, copy=True, ref_name="jacobian")
    r = _native.jacobian_stats_pair(jacobian, m)
    return _stats_dict(*r[:7]), _stats_dict(*r[7:])


class JacobianStatistics:
    """:func:`jacobian_statistics_pair` of a map given slab by slab: :meth:`add` each slab of z
    slices and its mask in z order, then :meth:`result` equals the whole map's statistics bit for
    bit (the slices' sums are added in the same order).  The map itself is never held whole."""

    def __init__(self) -> None:
        inf = np.inf
        self._acc = np.array([0.0, inf, -inf, 0.0, 0.0, 0.0, 0.0] * 2, np.float64)

    def add(self, jacobian, mask) -> None:
        """Add the next slab: ``jacobian`` (z, y, x) float32, ``mask`` (bool or uint8) like it."""
        jacobian = ck.f32("jacobian", jacobian, 3)
        m = ck.mask_u8("mask", np.asarray(mask), jacobian.shape, copy=True, ref_name="jacobian")
        _native.jacobian_stats_pair(jacobian, m, self._acc)

    def result(self) -> tuple[dict, dict]:
        """``(statistics over every voxel, statistics inside the mask)``, as
        :func:`jacobian_statistics_pair`."""
        r = self._acc.tolist()
        return _stats_dict(*r[:7]), _stats_dict(*r[7:])


def _stats_dict(n, lo, hi, nonpos, pos, s1, s2) -> dict:
    if n == 0:
        return {}
    sd = None
    if pos > 0:
        mean = s1 / pos
        sd = float(np.sqrt(max(0.0, s2 / pos - mean * mean)))
    return {
        "min": float(lo),
        "max": float(hi),
        "percent_nonpositive": float(100.0 * nonpos / n),
        "sd_log": sd,
    }


def affine_field(field, vectors, index_affine) -> np.ndarray:
    """``out(q) = vectors @ field(q) + index_affine @ (q, 1)`` at every grid index q = (k, j, i),
    computed in float64: e.g. a frame displacement turned into world coordinates.

    Parameters
    ----------
    field : (z, y, x, 3) float32.
    vectors : (3, 3) matrix applied to each vector.
    index_affine : (3, 4) or (4, 4) matrix applied to the grid index (k, j, i, 1).

    Returns
    -------
    (z, y, x, 3) float32 (a new array).
    """
    ck.vector_field("field", field)
    vec = np.ascontiguousarray(vectors, dtype=np.float64)
    idx = np.ascontiguousarray(np.asarray(index_affine, dtype=np.float64)[:3])
    if (
        vec.shape != (3, 3)
        or idx.shape != (3, 4)
        or not (np.isfinite(vec).all() and np.isfinite(idx).all())
    ):
        raise ValueError(
            f"vectors must be a finite 3x3 and index_affine a finite 3x4 or 4x4 matrix, "
            f"got {np.shape(vectors)} and {np.shape(index_affine)}"
        )
    out = np.empty_like(field)
    _native.affine_field(field, vec, idx, out)
    return out


def invert_field(
    displacement, spacing, *, iterations: int = 20, tol_mm: float = 1e-3
) -> np.ndarray:
    """Inverse displacement ``v`` with ``phi_v ∘ phi_u ≈ id`` (and ``phi_u ∘ phi_v ≈ id``).

    Fixed-point iteration ``v(p) <- -u(p + v(p))`` starting from ``v = -u`` (the first of the
    ``iterations`` steps), stopping early when no voxel moves by more than ``tol_mm``.  Converges
    where ``u`` is a contraction (|grad u| < 1, no folding); near the grid border ``u`` is clamped,
    so the inverse is only accurate where ``p + v(p)`` stays inside the grid.

    Parameters
    ----------
    displacement : (z, y, x, 3) float32, mm.
    spacing : (z, y, x) mm.
    iterations : positive int, maximum number of fixed-point steps.
    tol_mm : positive number, stopping tolerance on the largest change, mm.

    Returns
    -------
    (z, y, x, 3) float32, mm.
    """
    import logging

    ck.vector_field("displacement", displacement)
    sz, sy, sx = ck.spacing3("spacing", spacing)
    iterations = ck.positive_int("iterations", iterations)
    tol = ck.positive("tol_mm", tol_mm)
    v = np.empty_like(displacement)
    _native.scale_field(displacement, -1.0, v)
    tmp = np.empty_like(displacement)
    change = np.inf
    for _ in range(int(iterations) - 1):
        change = _native.invert_step(displacement, v, (sz, sy, sx), tmp)
        v, tmp = tmp, v
        if change <= tol:
            break
    else:
        if iterations > 1:
            logging.getLogger("ctreg").debug(
                "invert_field: %d iterations, last change %.3g mm > tol_mm %.3g",
                iterations,
                change,
                tol,
            )
    return v
