"""Cubic B-spline FFD: control grids, evaluation, adjoint, bending energy
(C++: cpp/include/ctreg/bspline.hpp).
"""

from __future__ import annotations

import numpy as np

from .. import _native
from .. import _checks as ck

__all__ = ["bspline_grid_shape", "bspline_to_dense", "bspline_adjoint", "bending_energy"]


def bspline_grid_shape(shape, spacing_vox) -> tuple[int, int, int]:
    """Control-grid shape (cz, cy, cx) of a cubic B-spline FFD over a dense (z, y, x) grid.

    Layout (Rueckert / NiftyReg): control point (a, b, c) sits at dense index
    ((a - 1) tz, (b - 1) ty, (c - 1) tx); dense voxel (k, j, i) uses control points
    (k // tz + l, j // ty + m, i // tx + n), l, m, n = 0..3.  Per axis the grid has
    ``(n - 1) // t + 4`` points, the fewest that hold the 4-point support of the last voxel
    (``ceil((n - 1) / t) + 3``, plus one when t divides n - 1).

    Parameters
    ----------
    shape : (z, y, x) dense voxel counts, positive integers.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels, >= 1.
    """
    shp = ck.ints3("shape", shape, minimum=1)
    t = ck.ints3("spacing_vox", spacing_vox, minimum=1)
    return tuple((n - 1) // s + 4 for n, s in zip(shp, t))  # type: ignore[return-value]


def bspline_to_dense(coeffs, spacing_vox, out_shape) -> np.ndarray:
    """Evaluate a cubic B-spline vector field on the dense grid.

    ``u(k, j, i) = sum_{l,m,n=0..3} B_l(fz) B_m(fy) B_n(fx) C[k//tz + l, j//ty + m, i//tx + n]``
    with ``fz = (k % tz) / tz`` (and likewise for y, x), B_0..B_3 the cubic B-spline basis.

    Parameters
    ----------
    coeffs : (cz, cy, cx, 3) float32, C order; any 3-vector per control point (ctreg stores
        world (x, y, z) mm displacements).  The grid must be at least
        ``bspline_grid_shape(out_shape, spacing_vox)``.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels.
    out_shape : (z, y, x) dense shape.

    Returns
    -------
    (z, y, x, 3) float32 field, in the units of ``coeffs``.
    """
    ck.vector_field("coeffs", coeffs)
    t = ck.ints3("spacing_vox", spacing_vox, minimum=1)
    shp = ck.ints3("out_shape", out_shape, minimum=1)
    need = bspline_grid_shape(shp, t)
    if any(c < g for c, g in zip(coeffs.shape[:3], need)):
        raise ValueError(
            f"coeffs grid {coeffs.shape[:3]} is smaller than "
            f"bspline_grid_shape({shp}, {t}) = {need}"
        )
    return _native.bspline_to_dense(coeffs, list(t), list(shp))


def bspline_adjoint(dense, spacing_vox, grid_shape) -> np.ndarray:
    """The exact adjoint (transpose) of :func:`bspline_to_dense`.

    ``<bspline_to_dense(c), u> == <c, bspline_adjoint(u)>``.  Maps a dense gradient (e.g.
    dcost/du from a metric) to the control points.  Deterministic for any thread count.

    Parameters
    ----------
    dense : (z, y, x, 3) float32, C order.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels.
    grid_shape : (cz, cy, cx), at least ``bspline_grid_shape(dense.shape[:3], spacing_vox)``.

    Returns
    -------
    (cz, cy, cx, 3) float32.
    """
    ck.vector_field("dense", dense)
    t = ck.ints3("spacing_vox", spacing_vox, minimum=1)
    grid = ck.ints3("grid_shape", grid_shape, minimum=1)
    need = bspline_grid_shape(dense.shape[:3], t)
    if any(c < g for c, g in zip(grid, need)):
        raise ValueError(
            f"grid_shape {grid} is smaller than bspline_grid_shape({dense.shape[:3]}, {t}) = {need}"
        )
    return _native.bspline_adjoint(dense, list(t), list(grid))


def bending_energy(coeffs, spacing_vox, voxel_spacing_mm) -> tuple[float, np.ndarray]:
    """Thin-plate bending energy of a B-spline field and its exact gradient.

    NiftyReg's approximation: the second derivatives (mm^-2) are evaluated at the interior
    control points (indices 1..c-2 per axis, where the basis is (1/6, 4/6, 1/6)) and

        E = 1/P sum_points sum_components (u_zz² + u_yy² + u_xx² + 2 u_zy² + 2 u_zx² + 2 u_yx²)

    with P = (cz - 2)(cy - 2)(cx - 2) the number of points used.  Units: (coeff unit / mm²)².

    Parameters
    ----------
    coeffs : (cz, cy, cx, 3) float32, at least 4 points per axis.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels.
    voxel_spacing_mm : (z, y, x) voxel size in mm of the dense grid.

    Returns
    -------
    (E, dE/dcoeffs) with the gradient (cz, cy, cx, 3) float32.
    """
    ck.vector_field("coeffs", coeffs)
    if min(coeffs.shape[:3]) < 4:
        raise ValueError(
            f"coeffs must have at least 4 control points per axis, got {coeffs.shape[:3]}"
        )
    t = ck.ints3("spacing_vox", spacing_vox, minimum=1)
    sp = ck.spacing3("voxel_spacing_mm", voxel_spacing_mm)
    e, g = _native.bending_energy(coeffs, list(t), list(sp))
    return float(e), g
