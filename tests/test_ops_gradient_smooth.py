"""gradient against np.gradient; smooth against scipy.ndimage.gaussian_filter(mode='nearest')."""

from __future__ import annotations

import numpy as np
import pytest

from ctreg import _native, ops

from reference import gradient_ref, smooth_ref


@pytest.mark.parametrize(
    "shape,spacing",
    [
        ((7, 9, 11), (2.0, 0.7, 0.9)),
        ((2, 3, 2), (1.0, 1.0, 1.0)),
        ((1, 8, 6), (5.0, 0.6, 0.6)),
        ((5, 1, 1), (1.5, 2.0, 3.0)),
    ],
)
def test_gradient_matches_np_gradient(shape, spacing):
    rng = np.random.default_rng(0)
    img = (rng.standard_normal(shape) * 300).astype(np.float32)
    g = ops.gradient(img, spacing)
    assert g.shape == shape + (3,) and g.dtype == np.float32
    ref = gradient_ref(img, spacing)
    np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    for ax in range(3):
        if shape[ax] == 1:
            assert (g[..., ax] == 0).all()


def test_gradient_of_linear_ramp_is_constant():
    shape, spacing = (6, 7, 8), (2.5, 0.8, 0.6)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    a, b, c = 3.0, -2.0, 0.5  # value per mm along z, y, x
    img = (a * k * spacing[0] + b * j * spacing[1] + c * i * spacing[2] - 100).astype(np.float32)
    g = ops.gradient(img, spacing)
    for ax, expect in enumerate((a, b, c)):
        np.testing.assert_allclose(g[..., ax], expect, rtol=1e-4)


@pytest.mark.parametrize(
    "shape,sigma_mm,spacing",
    [
        ((12, 15, 17), 2.0, (1.0, 1.0, 1.0)),
        ((9, 20, 16), (3.0, 1.2, 0.8), (2.5, 0.7, 0.9)),
        ((6, 7, 30), (0.0, 2.0, 5.0), (1.0, 0.5, 0.5)),  # no smoothing along z, radius > ny
        ((1, 10, 12), (4.0, 1.0, 1.0), (3.0, 1.0, 1.0)),  # a single slice
        ((8, 8, 8), 0.1, (1.0, 1.0, 1.0)),  # radius 0: a copy
    ],
)
def test_smooth_scalar_matches_gaussian_filter(shape, sigma_mm, spacing):
    rng = np.random.default_rng(1)
    img = (rng.standard_normal(shape) * 500 - 300).astype(np.float32)
    out = ops.smooth(img, sigma_mm, spacing)
    ref = smooth_ref(img, sigma_mm, spacing, truncate=3.0)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("truncate", [3.0, 4.0, 1.5])
def test_smooth_vector_field_matches_gaussian_filter(truncate):
    rng = np.random.default_rng(2)
    field = rng.standard_normal((10, 13, 11, 3)).astype(np.float32)
    field[..., 1] *= 10
    sigma_mm, spacing = (2.0, 1.5, 0.0), (2.0, 0.75, 0.9)
    out = ops.smooth(field, sigma_mm, spacing, truncate=truncate)
    ref = smooth_ref(field, sigma_mm, spacing, truncate=truncate)
    assert out.shape == field.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # Each component on its own equals the scalar kernel.
    for c in range(3):
        np.testing.assert_allclose(
            out[..., c],
            ops.smooth(np.ascontiguousarray(field[..., c]), sigma_mm, spacing, truncate=truncate),
            atol=1e-6 * 10,
        )


def test_smooth_zero_sigma_is_copy_and_constant_is_kept():
    rng = np.random.default_rng(3)
    img = rng.standard_normal((5, 6, 7)).astype(np.float32)
    out = ops.smooth(img, 0.0, (1, 1, 1))
    np.testing.assert_array_equal(out, img)
    assert out is not img
    const = np.full((6, 7, 8), -1000.0, np.float32)
    np.testing.assert_allclose(ops.smooth(const, 3.0, (1, 1, 1)), -1000.0, rtol=1e-6)


def test_gradient_smooth_errors():
    img = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops.gradient(img.astype(np.float64), (1, 1, 1))
    with pytest.raises(TypeError, match="C-contiguous"):
        ops.gradient(np.zeros((4, 5, 6), np.float32).T, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        ops.gradient(img, (1, 0, 1))
    with pytest.raises(ValueError, match="3 dimensions"):
        ops.gradient(np.zeros((4, 5, 6, 3), np.float32), (1, 1, 1))
    with pytest.raises(TypeError, match="float32"):
        ops.smooth(img.astype(np.float64), 1.0, (1, 1, 1))
    with pytest.raises(ValueError, match="vector field"):
        ops.smooth(np.zeros((4, 5, 6, 2), np.float32), 1.0, (1, 1, 1))
    with pytest.raises(ValueError, match="sigma_mm"):
        ops.smooth(img, (1.0, -1.0, 1.0), (1, 1, 1))
    with pytest.raises(ValueError, match="sigma_mm"):
        ops.smooth(img, (1.0, 1.0), (1, 1, 1))
    with pytest.raises(ValueError, match="truncate"):
        ops.smooth(img, 1.0, (1, 1, 1), truncate=0)
    with pytest.raises(TypeError):
        _native.smooth(img[:, ::2], [1.0, 1.0, 1.0], 3.0)
    with pytest.raises(TypeError):
        _native.gradient(img.astype(np.float64), [1.0, 1.0, 1.0])


def test_smooth_portable_and_simd_paths_agree():
    rng = np.random.default_rng(4)
    img = rng.standard_normal((9, 21, 37)).astype(np.float32)
    field = rng.standard_normal((9, 21, 37, 3)).astype(np.float32)
    outs = []
    try:
        for simd in (True, False):
            _native._set_simd_dispatch(simd)
            outs.append(
                (
                    ops.smooth(img, (2.0, 1.0, 1.5), (2.0, 0.7, 0.8)),
                    ops.smooth(field, 1.2, (1, 1, 1)),
                )
            )
    finally:
        _native._set_simd_dispatch(True)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "shape,sigma_mm,with_add",
    [
        ((9, 14, 23, 3), (1.0, 2.0, 1.5), False),  # short z kernel: all passes slice by slice
        ((9, 14, 23, 3), (1.0, 2.0, 1.5), True),
        ((13, 10, 21), (1.0, 0.0, 1.5), True),  # scalar image, no y pass
        ((9, 14, 23, 3), (6.0, 2.0, 1.5), False),  # long z kernel: z pass, then y/x per slice
    ],
)
def test_smooth_sliced_and_separate_passes_agree(shape, sigma_mm, with_add):
    """Enough slices per thread -> passes fused per slice; otherwise whole-volume passes.  The
    results are equal bit for bit."""
    import ctreg

    rng = np.random.default_rng(5)
    field = rng.standard_normal(shape).astype(np.float32)
    add = rng.standard_normal(shape).astype(np.float32) if with_add else None
    sp = (1.0, 0.8, 0.7)
    n = ctreg.get_num_threads()
    try:
        ctreg.set_num_threads(1)  # >= 4 slices per thread: fused
        a = ops.smooth(field, sigma_mm, sp, add=add)
        ctreg.set_num_threads(4)  # < 4 slices per thread: separate passes
        b = ops.smooth(field, sigma_mm, sp, add=add)
    finally:
        ctreg.set_num_threads(n)
    np.testing.assert_array_equal(a, b)
    whole = field if add is None else field + add
    np.testing.assert_allclose(a, smooth_ref(whole, sigma_mm, sp), atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize(
    "shape,sigma_mm",
    [
        ((9, 14, 17, 3), (2.0, 1.0, 1.5)),
        ((9, 14, 17), (2.0, 1.0, 1.5)),
        ((9, 14, 17, 3), (0.0, 1.0, 1.5)),  # no z pass
        ((1, 5, 6, 3), (1.0, 0.0, 0.0)),
    ],
)  # nothing to smooth
def test_smooth_with_addend_equals_smoothing_the_sum(shape, sigma_mm):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    sp = (2.0, 0.7, 0.8)
    np.testing.assert_array_equal(
        ops.smooth(a, sigma_mm, sp, add=b), ops.smooth(a + b, sigma_mm, sp)
    )
    with pytest.raises(ValueError, match="add"):
        ops.smooth(a, sigma_mm, sp, add=np.zeros((shape[0] + 1,) + shape[1:], np.float32))
    with pytest.raises(TypeError, match="add"):
        ops.smooth(a, sigma_mm, sp, add=b.astype(np.float64))
