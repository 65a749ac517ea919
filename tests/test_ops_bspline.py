"""Cubic B-spline FFD kernels (ctreg.ops.bspline_*) against slow references and properties."""

from __future__ import annotations

import numpy as np
import pytest

from ctreg import ops
from reference import bending_energy_ref, bspline_to_dense_ref

CASES = [((9, 10, 11), (3, 4, 5)), ((7, 13, 6), (2, 3, 1)), ((10, 9, 13), (3, 4, 4))]


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape,t", CASES)
def test_grid_shape_covers_support_minimally(shape, t):
    grid = ops.bspline_grid_shape(shape, t)
    for n, s, c in zip(shape, t, grid):
        assert (n - 1) // s + 3 == c - 1  # the last voxel reads index (n-1)//t + 3 < c
        assert c == int(np.ceil((n - 1) / s)) + 3 + (1 if (n - 1) % s == 0 else 0)


@pytest.mark.parametrize("shape,t", CASES)
def test_to_dense_matches_loop_reference(shape, t):
    grid = ops.bspline_grid_shape(shape, t)
    c = _rng(1).normal(size=grid + (3,)).astype(np.float32)
    got = ops.bspline_to_dense(c, t, shape)
    assert got.shape == shape + (3,) and got.dtype == np.float32
    np.testing.assert_allclose(got, bspline_to_dense_ref(c, t, shape), rtol=1e-5, atol=1e-5)


def test_constant_grid_gives_constant_field():
    shape, t = (8, 9, 10), (3, 2, 4)
    c = np.empty(ops.bspline_grid_shape(shape, t) + (3,), np.float32)
    c[...] = [1.5, -2.0, 7.25]
    got = ops.bspline_to_dense(c, t, shape)
    np.testing.assert_allclose(got, np.broadcast_to([1.5, -2.0, 7.25], got.shape), atol=1e-5)


def test_linear_grid_reproduces_linear_field():
    shape, t = (9, 11, 10), (4, 3, 2)
    grid = ops.bspline_grid_shape(shape, t)
    a, b, cc = np.meshgrid(*[np.arange(n) for n in grid], indexing="ij")
    # control point (a, b, c) sits at dense index ((a-1) tz, (b-1) ty, (c-1) tx)
    pz, py, px = (a - 1) * t[0], (b - 1) * t[1], (cc - 1) * t[2]
    A = np.array([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3], [0.0, 1.5, 1.0]])
    coeffs = np.stack(
        [A[r, 0] * pz + A[r, 1] * py + A[r, 2] * px + r for r in range(3)], -1
    ).astype(np.float32)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    want = np.stack([A[r, 0] * k + A[r, 1] * j + A[r, 2] * i + r for r in range(3)], -1)
    np.testing.assert_allclose(ops.bspline_to_dense(coeffs, t, shape), want, atol=1e-4)


@pytest.mark.parametrize("shape,t", CASES)
def test_adjoint_is_transpose(shape, t):
    grid = ops.bspline_grid_shape(shape, t)
    rng = _rng(2)
    c = rng.normal(size=grid + (3,)).astype(np.float32)
    u = rng.normal(size=shape + (3,)).astype(np.float32)
    lhs = np.sum(ops.bspline_to_dense(c, t, shape).astype(np.float64) * u)
    bt = ops.bspline_adjoint(u, t, grid)
    assert bt.shape == grid + (3,) and bt.dtype == np.float32
    rhs = np.sum(c.astype(np.float64) * bt)
    assert abs(lhs - rhs) <= 1e-5 * (np.abs(c).sum() * np.abs(u).max() + 1)
    # and column by column against the dense matrix of the reference for one component
    e = np.zeros(grid + (3,), np.float32)
    idx = tuple(g // 2 for g in grid) + (1,)
    e[idx] = 1.0
    col = bspline_to_dense_ref(e, t, shape)
    assert abs(bt[idx] - np.sum(col * u)) < 1e-4


def test_adjoint_larger_grid_has_zero_extra_planes():
    shape, t = (6, 7, 8), (2, 2, 3)
    grid = ops.bspline_grid_shape(shape, t)
    big = (grid[0] + 2, grid[1] + 1, grid[2])
    u = _rng(3).normal(size=shape + (3,)).astype(np.float32)
    bt = ops.bspline_adjoint(u, t, big)
    np.testing.assert_array_equal(bt[grid[0] :], 0)
    np.testing.assert_allclose(
        bt[: grid[0], : grid[1]], ops.bspline_adjoint(u, t, grid), rtol=1e-6, atol=1e-6
    )


def test_bending_energy_matches_reference_and_is_zero_for_affine():
    t, sp = (3, 2, 4), (2.0, 0.8, 0.7)
    c = _rng(4).normal(size=(6, 7, 5, 3)).astype(np.float32)
    e, g = ops.bending_energy(c, t, sp)
    assert g.shape == c.shape and g.dtype == np.float32
    assert e == pytest.approx(bending_energy_ref(c, t, sp), rel=1e-6)
    a, b, cc = np.meshgrid(*[np.arange(n) for n in c.shape[:3]], indexing="ij")
    lin = np.stack([0.3 * a - 2 * b + cc, a + 5.0, -b + 0.5 * cc], -1).astype(np.float32)
    e0, g0 = ops.bending_energy(lin, t, sp)
    assert abs(e0) < 1e-9 and np.abs(g0).max() < 1e-6


def test_bending_energy_gradient_finite_differences():
    t, sp = (2, 3, 2), (1.5, 1.0, 0.9)
    c = _rng(5).normal(size=(5, 6, 7, 3)).astype(np.float32)
    _, g = ops.bending_energy(c, t, sp)
    rng = _rng(6)
    # E is quadratic in c: central differences are exact up to rounding (reference in float64)
    for _ in range(8):
        idx = tuple(int(rng.integers(0, n)) for n in c.shape)
        h = 1e-2
        cp, cm = c.astype(np.float64), c.astype(np.float64)
        cp[idx] += h
        cm[idx] -= h
        fd = (bending_energy_ref(cp, t, sp) - bending_energy_ref(cm, t, sp)) / (2 * h)
        assert g[idx] == pytest.approx(fd, rel=1e-3, abs=1e-6)


def test_threads_bitwise_identical():
    shape, t = (23, 20, 18), (3, 4, 5)
    grid = ops.bspline_grid_shape(shape, t)
    rng = _rng(7)
    c = rng.normal(size=grid + (3,)).astype(np.float32)
    u = rng.normal(size=shape + (3,)).astype(np.float32)
    before = ops.get_num_threads()
    try:
        res = []
        for n in (1, 2, 3):
            ops.set_num_threads(n)
            res.append(
                (
                    ops.bspline_to_dense(c, t, shape),
                    ops.bspline_adjoint(u, t, grid),
                    *ops.bending_energy(c, t, (1.0, 2.0, 1.0)),
                )
            )
    finally:
        ops.set_num_threads(before)
    for r in res[1:]:
        for x, y in zip(res[0], r):
            np.testing.assert_array_equal(x, y)


def test_argument_errors():
    shape, t = (6, 6, 6), (2, 2, 2)
    grid = ops.bspline_grid_shape(shape, t)
    c = np.zeros(grid + (3,), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops.bspline_to_dense(c.astype(np.float64), t, shape)
    with pytest.raises(TypeError, match="C-contiguous"):
        ops.bspline_to_dense(np.asfortranarray(c), t, shape)
    with pytest.raises(ValueError, match="smaller"):
        ops.bspline_to_dense(c[:-1], t, shape)
    with pytest.raises(ValueError, match="spacing_vox"):
        ops.bspline_to_dense(c, (0, 2, 2), shape)
    with pytest.raises(ValueError, match=r"\(z, y, x, 3\)"):
        ops.bspline_adjoint(np.zeros(shape + (2,), np.float32), t, grid)
    with pytest.raises(ValueError, match="voxel_spacing_mm"):
        ops.bending_energy(c, t, (1.0, -1.0, 1.0))
    # the native layer refuses conversions by itself, too
    with pytest.raises(TypeError):
        ops._native.bspline_to_dense(c.astype(np.float64), list(t), list(shape))


def test_to_dense_equals_simpleitk_bspline_transform():
    """Same layout as ITK's BSplineTransform whose mesh spans the voxel-centre extent with
    t | n - 1 (ITK's grid is ours without the last, zero-weight plane per axis)."""
    sitk = pytest.importorskip("SimpleITK")
    shape, t = (11, 13, 16), (5, 4, 3)
    grid = ops.bspline_grid_shape(shape, t)
    c = _rng(8).normal(size=grid + (3,)).astype(np.float32)
    c[-1], c[:, -1], c[:, :, -1] = 0, 0, 0
    tr = sitk.BSplineTransform(3, 3)
    tr.SetTransformDomainOrigin((0.0, 0.0, 0.0))
    tr.SetTransformDomainDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    tr.SetTransformDomainPhysicalDimensions([float(n - 1) for n in shape[::-1]])
    tr.SetTransformDomainMeshSize([(n - 1) // s for n, s in zip(shape[::-1], t[::-1])])
    cc = c[:-1, :-1, :-1].astype(np.float64)
    tr.SetParameters(tuple(np.concatenate([cc[..., k].ravel() for k in range(3)])))
    field = sitk.TransformToDisplacementField(
        tr,
        sitk.sitkVectorFloat32,
        shape[::-1],
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        (1, 0, 0, 0, 1, 0, 0, 0, 1),
    )
    np.testing.assert_allclose(
        ops.bspline_to_dense(c, t, shape), sitk.GetArrayFromImage(field), atol=1e-5
    )
