"""Numba kernels for pointwise operations on dense displacement / velocity fields.

These are private: call them through the checked façades in :mod:`ctreg.ops`, which validate
dtypes, shapes and spacings.  Every kernel here assumes:

* fields are C-contiguous float32 arrays of shape (nz, ny, nx, 3) whose components are
  (dz, dy, dx) in mm **along the array axes** (not world LPS);
* grid point (k, j, i) sits at the mm position (k * sz, j * sy, i * sx);
* images are C-contiguous float32 (nz, ny, nx); scalars are float64;
* outputs are preallocated by the caller and fully overwritten.

Interpolation of a field at a non-grid position is trilinear with the position clamped to the
grid (a point outside the grid takes the value at the nearest border point), i.e. the same as
``scipy.ndimage.map_coordinates(order=1, mode='nearest')``.

Determinism: each output voxel is computed independently (``prange`` over the slowest axis),
and reductions are accumulated per slice and summed serially afterwards, so results do not
depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "affine_field_kernel",
    "invert_step_kernel",
    "jacobian_stats_kernel",
    "scale_field_kernel",
]


@njit(cache=True, inline="always")
def _clamp_axis(f, n):
    """Lower index, upper index and weight of the upper one for a clamped position ``f``."""
    top = n - 1
    if f > top:
        f = float(top)
    if not (f > 0.0):  # also catches NaN
        f = 0.0
    i0 = int(math.floor(f))
    if i0 > top:
        i0 = top
    if i0 < 0:
        i0 = 0
    i1 = i0 + 1
    if i1 > top:
        i1 = top
    return i0, i1, f - i0


@njit(cache=True, inline="always")
def _interp_field(u, fz, fy, fx):
    """Trilinear value of field ``u`` at (fractional, clamped) index position (fz, fy, fx)."""
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    z0, z1, wz = _clamp_axis(fz, nz)
    y0, y1, wy = _clamp_axis(fy, ny)
    x0, x1, wx = _clamp_axis(fx, nx)
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    for cz in range(2):
        zz = z1 if cz else z0
        w_z = wz if cz else 1.0 - wz
        for cy in range(2):
            yy = y1 if cy else y0
            w_zy = w_z * (wy if cy else 1.0 - wy)
            for cx in range(2):
                xx = x1 if cx else x0
                w = w_zy * (wx if cx else 1.0 - wx)
                a0 += w * u[zz, yy, xx, 0]
                a1 += w * u[zz, yy, xx, 1]
                a2 += w * u[zz, yy, xx, 2]
    return a0, a1, a2


@njit(cache=True, parallel=True)
def invert_step_kernel(u, v, sz, sy, sx, out):
    """One fixed-point step of the inverse: out(p) = -u(p + v(p)).

    Returns the largest change |out(p) - v(p)| in mm over the grid.  ``out`` must not alias
    ``u`` or ``v``.
    """
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    slice_max = np.zeros(nz, dtype=np.float64)
    for k in prange(nz):
        m = 0.0
        for j in range(ny):
            for i in range(nx):
                d0 = np.float64(v[k, j, i, 0])
                d1 = np.float64(v[k, j, i, 1])
                d2 = np.float64(v[k, j, i, 2])
                a0, a1, a2 = _interp_field(u, k + d0 / sz, j + d1 / sy, i + d2 / sx)
                n0 = np.float32(-a0)
                n1 = np.float32(-a1)
                n2 = np.float32(-a2)
                out[k, j, i, 0] = n0
                out[k, j, i, 1] = n1
                out[k, j, i, 2] = n2
                e0 = n0 - d0
                e1 = n1 - d1
                e2 = n2 - d2
                e = math.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
                if e > m:
                    m = e
        slice_max[k] = m
    best = 0.0
    for k in range(nz):
        if slice_max[k] > best:
            best = slice_max[k]
    return best


@njit(cache=True, parallel=True)
def scale_field_kernel(v, factor, out):
    """out = factor * v (computed in float64, stored float32)."""
    nz, ny, nx = v.shape[0], v.shape[1], v.shape[2]
    for k in prange(nz):
        for j in range(ny):
            for i in range(nx):
                for c in range(3):
                    out[k, j, i, c] = np.float64(v[k, j, i, c]) * factor


@njit(cache=True, parallel=True)
def affine_field_kernel(u, vec, idx, out):
    """out[k, j, i] = vec @ u[k, j, i] + idx[:, :3] @ (k, j, i) + idx[:, 3], in float64, stored
    float32.  ``vec`` (3, 3) and ``idx`` (3, 4) are float64; ``u`` and ``out`` (z, y, x, 3)."""
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    for kp in prange(nz):
        k = np.float64(kp)
        for j in range(ny):
            fj = np.float64(j)
            b0 = idx[0, 0] * k + idx[0, 1] * fj + idx[0, 3]
            b1 = idx[1, 0] * k + idx[1, 1] * fj + idx[1, 3]
            b2 = idx[2, 0] * k + idx[2, 1] * fj + idx[2, 3]
            for i in range(nx):
                fi = np.float64(i)
                u0 = np.float64(u[kp, j, i, 0])
                u1 = np.float64(u[kp, j, i, 1])
                u2 = np.float64(u[kp, j, i, 2])
                out[kp, j, i, 0] = (
                    vec[0, 0] * u0 + vec[0, 1] * u1 + vec[0, 2] * u2 + (b0 + idx[0, 2] * fi)
                )
                out[kp, j, i, 1] = (
                    vec[1, 0] * u0 + vec[1, 1] * u1 + vec[1, 2] * u2 + (b1 + idx[1, 2] * fi)
                )
                out[kp, j, i, 2] = (
                    vec[2, 0] * u0 + vec[2, 1] * u1 + vec[2, 2] * u2 + (b2 + idx[2, 2] * fi)
                )


@njit(cache=True, parallel=True)
def jacobian_stats_kernel(jac, mask, use_mask):
    """One pass over a Jacobian determinant map (where ``mask`` when ``use_mask``):
    (count, min, max, count <= 0, count > 0, sum log J, sum (log J)^2 over J > 0), float64,
    accumulated per slice and added in slice order (thread-count independent).  A NaN J counts
    in neither the positive nor the non-positive count, and min/max ignore it."""
    nz, ny, nx = jac.shape[0], jac.shape[1], jac.shape[2]
    part = np.zeros((nz, 7), dtype=np.float64)
    for k in prange(nz):
        n = 0.0
        lo = np.inf
        hi = -np.inf
        nonpos = 0.0
        pos = 0.0
        s1 = 0.0
        s2 = 0.0
        for j in range(ny):
            for i in range(nx):
                if use_mask and not mask[k, j, i]:
                    continue
                v = np.float64(jac[k, j, i])
                n += 1.0
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
                if v > 0.0:
                    pos += 1.0
                    lv = math.log(v)
                    s1 += lv
                    s2 += lv * lv
                elif v <= 0.0:
                    nonpos += 1.0
        part[k, 0] = n
        part[k, 1] = lo
        part[k, 2] = hi
        part[k, 3] = nonpos
        part[k, 4] = pos
        part[k, 5] = s1
        part[k, 6] = s2
    out = np.zeros(7, dtype=np.float64)
    out[1] = np.inf
    out[2] = -np.inf
    for k in range(nz):
        out[0] += part[k, 0]
        out[1] = min(out[1], part[k, 1])
        out[2] = max(out[2], part[k, 2])
        out[3] += part[k, 3]
        out[4] += part[k, 4]
        out[5] += part[k, 5]
        out[6] += part[k, 6]
    return out
