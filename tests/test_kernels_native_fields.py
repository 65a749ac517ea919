"""The C++ field kernels (cpp/src/fields.cpp) against the Numba kernels they replaced
(ctreg/_kernels.py, kept only as this reference): bit for bit, on 1, 2 and 4 threads."""

from __future__ import annotations

import numpy as np
import pytest

import ctreg
from ctreg import _native

numba = pytest.importorskip("numba")
_kernels = pytest.importorskip("ctreg._kernels")

SP = (2.0, 0.7, 0.8)


def _field(rng, shape=(13, 17, 19), amp=2.0):
    return (rng.standard_normal(tuple(shape) + (3,)) * amp).astype(np.float32)


@pytest.fixture(params=[1, 2, 4])
def threads(request):
    n = ctreg.get_num_threads()
    ctreg.set_num_threads(request.param)
    yield request.param
    ctreg.set_num_threads(n)


@pytest.mark.parametrize("factor", [-1.0, 0.125, 1.0 / 3.0])
def test_scale_field_equals_numba(threads, factor):
    v = _field(np.random.default_rng(1))
    ref = np.empty_like(v)
    _kernels.scale_field_kernel(v, factor, ref)
    np.testing.assert_array_equal(_native.scale_field(v, factor), ref)


def test_affine_field_equals_numba(threads):
    rng = np.random.default_rng(2)
    u = _field(rng)
    vec, idx = rng.normal(0, 1, (3, 3)), rng.normal(0, 5, (3, 4))
    ref = np.empty_like(u)
    _kernels.affine_field_kernel(u, vec, idx, ref)
    out = _native.affine_field(u, vec, idx)
    np.testing.assert_array_equal(out, ref)
    # and against plain numpy (float64): vec @ u + idx @ (k, j, i, 1)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in u.shape[:3]], indexing="ij")
    q = np.stack([k, j, i, np.ones_like(k)], axis=-1)
    expect = u.astype(np.float64) @ vec.T + q @ idx.T
    np.testing.assert_allclose(out, expect, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("amp", [0.3, 6.0])  # 6 mm: positions leave the grid (clamped)
def test_invert_step_equals_numba(threads, amp):
    rng = np.random.default_rng(3)
    u, v = _field(rng, amp=amp), _field(rng, amp=amp)
    v[0, 0, 0, 0] = np.nan  # a NaN position clamps to index 0, as in the Numba kernel
    ref = np.empty_like(u)
    change_ref = _kernels.invert_step_kernel(u, v, *SP, ref)
    out = np.empty_like(u)
    change = _native.invert_step(u, v, SP, out)
    np.testing.assert_array_equal(out, ref)
    assert change == change_ref


@pytest.mark.parametrize("use_mask", [False, True])
def test_jacobian_stats_equals_numba(threads, use_mask):
    rng = np.random.default_rng(4)
    jac = (rng.standard_normal((13, 17, 19)) * 0.5 + 1.0).astype(np.float32)
    jac[1, 2, 3] = np.nan
    mask = rng.random(jac.shape) > 0.3
    ref = _kernels.jacobian_stats_kernel(
        jac, mask if use_mask else np.zeros((1, 1, 1), np.bool_), use_mask
    )
    got = _native.jacobian_stats(jac, mask.view(np.uint8) if use_mask else None)
    assert tuple(ref) == got


def test_kernels_refuse_wrong_arrays():
    f = _field(np.random.default_rng(5))
    with pytest.raises(TypeError):
        _native.scale_field(f.astype(np.float64), 2.0)
    with pytest.raises(TypeError):
        _native.affine_field(f[:, :, ::2], np.eye(3), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        _native.affine_field(f, np.eye(3), np.zeros((4, 4)))
    with pytest.raises(ValueError):
        _native.invert_step(f, f, SP, f)  # out aliases the inputs
    with pytest.raises(ValueError):
        _native.jacobian_stats(f[..., 0].copy(), np.ones((2, 2, 2), np.uint8))


@pytest.mark.parametrize("with_valid", [False, True])
def test_clip_fill_equals_numpy(threads, with_valid):
    rng = np.random.default_rng(6)
    img = (rng.standard_normal((9, 14, 15)) * 800).astype(np.float32)
    img[0, 0, :3] = [np.nan, -0.0, np.inf]
    valid = rng.random(img.shape) > 0.2
    expect = np.clip(img, -1000.0, 400.0)
    if with_valid:
        expect = np.where(valid, expect, np.float32(-1000.0))
    got = _native.clip_fill(
        img, valid.view(np.uint8) if with_valid else None, -1000.0, 400.0, -1000.0
    )
    np.testing.assert_array_equal(got, expect)
    assert got.dtype == np.float32


def test_scale_and_affine_write_into_out():
    f = _field(np.random.default_rng(7))
    expect = _native.scale_field(f, 0.5)
    _native.scale_field(f, 0.5, f)  # in place
    np.testing.assert_array_equal(f, expect)
    vec, idx = np.eye(3) * 2.0, np.ones((3, 4))
    expect = _native.affine_field(f, vec, idx)
    out = np.empty_like(f)
    assert _native.affine_field(f, vec, idx, out) is not None
    np.testing.assert_array_equal(out, expect)
    _native.affine_field(f, vec, idx, f)
    np.testing.assert_array_equal(f, expect)


@pytest.mark.parametrize("knots", [2, 9, 130])
def test_map_piecewise_linear_equals_numpy_interp(threads, knots):
    """The demons histogram matching's map (demons.match_floating_intensities) against the
    NumPy expression it replaced, bit for bit: values between, on, below and above the knots,
    the no-data sentinel, NaN and infinities."""
    from ctreg import ops

    rng = np.random.default_rng(8 + knots)
    img = (rng.standard_normal((11, 13, 17)) * 500 - 300).astype(np.float32)
    xp = np.sort(rng.uniform(-1200, 900, knots))
    xp = np.concatenate([[xp[0] - 1e4], xp[1:-1], [xp[-1] + 1e4]]) if knots > 2 else xp
    fp = np.sort(rng.uniform(-1100, 800, knots))
    flat = img.reshape(-1)
    flat[:knots] = xp.astype(np.float32)  # on (or next to) the knots
    flat[knots : knots + 6] = [np.nan, np.inf, -np.inf, -4096.0, -2048.0, xp[0] - 1]
    flat[knots + 6] = np.float32(xp[-1])
    above = -4096.0 / 2
    expect = np.where(img > above, np.interp(img, xp, fp), img).astype(np.float32)
    got = ops.map_piecewise_linear(img, xp, fp, above=above)
    np.testing.assert_array_equal(got.view(np.uint32), expect.view(np.uint32))
    assert got.shape == img.shape and got.dtype == np.float32


def test_map_piecewise_linear_rejects_bad_knots():
    from ctreg import ops

    img = np.zeros((2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="strictly increasing"):
        ops.map_piecewise_linear(img, [0.0, 0.0, 1.0], [1.0, 2.0, 3.0], above=-1.0)
    with pytest.raises(ValueError, match="same length"):
        ops.map_piecewise_linear(img, [0.0, 1.0], [1.0], above=-1.0)
    with pytest.raises(TypeError):
        ops.map_piecewise_linear(img.astype(np.float64), [0.0, 1.0], [0.0, 1.0], above=-1.0)


def test_jacobian_statistics_pair_equals_the_two_calls():
    from ctreg import ops

    rng = np.random.default_rng(11)
    jac = rng.normal(1.0, 0.4, (9, 17, 23)).astype(np.float32)
    jac[0, 0, :5] = [0.0, -0.5, np.nan, np.inf, 1e-30]
    for mask in (rng.random(jac.shape) > 0.4, np.zeros(jac.shape, bool), np.ones(jac.shape, bool)):
        expect = (ops.jacobian_statistics(jac), ops.jacobian_statistics(jac, mask))
        for threads in (1, 2, 4):
            with ops.thread_limit(threads):
                got = ops.jacobian_statistics_pair(jac, mask)
            assert got == expect  # equal floats, bit for bit
    assert ops.jacobian_statistics_pair(jac, np.zeros(jac.shape, bool))[1] == {}


def test_clip_fill_without_bounds_is_np_where_bit_for_bit():
    """fullres's resampling source: np.where(valid, array, sentinel) by ops.clip_fill."""
    from ctreg import ops

    rng = np.random.default_rng(12)
    a = rng.normal(0, 500, (7, 9, 11)).astype(np.float32)
    a[0, 0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    valid = rng.random(a.shape) > 0.3
    valid[0, 0, :4] = True
    sentinel = float(np.float32(-4096.5))
    expect = np.where(valid, a, np.float32(sentinel))
    for threads in (1, 2, 4):
        with ops.thread_limit(threads):
            got = ops.clip_fill(a, valid, -np.inf, np.inf, sentinel)
        assert got.dtype == np.float32 and got.tobytes() == expect.tobytes()
