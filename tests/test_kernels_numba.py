"""Pointwise field kernels (Numba, and C++ for the demons forces and compositions, through the
ctreg.ops façades) against the slow references in tests/reference.py, plus the properties the
registration engine relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg import ops

from reference import (
    compose_fields_ref,
    demons_forces_ref,
    exp_field_ref,
    grid_index,
    invert_field_ref,
    jacobian_determinant_ref,
    resample_field_ref,
)

SPACING = (2.0, 1.0, 1.5)  # anisotropic (z, y, x) mm
SHAPE = (9, 12, 11)


def smooth_field(shape, amplitude_mm, seed, sigma=2.5):
    """Random smooth (z, y, x, 3) float32 field whose largest component is ``amplitude_mm``."""
    rng = np.random.default_rng(seed)
    f = np.stack(
        [ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="nearest") for _ in range(3)],
        axis=-1,
    )
    f *= amplitude_mm / np.abs(f).max()
    return np.ascontiguousarray(f, dtype=np.float32)


def mm_positions(shape, spacing):
    """(z, y, x, 3) mm position of every grid point."""
    return np.moveaxis(grid_index(shape), 0, -1) * np.asarray(spacing, dtype=np.float64)


def interior(a, margin=2):
    return a[margin:-margin, margin:-margin, margin:-margin]


# --- against the references --------------------------------------------------------------------


def test_compose_matches_reference_including_outside_the_grid():
    outer = smooth_field(SHAPE, 2.0, 1)
    inner = smooth_field(SHAPE, 4.0, 2)  # large enough to leave the grid near the borders
    got = ops.compose_fields(outer, inner, SPACING)
    want = compose_fields_ref(outer, inner, SPACING)
    assert got.dtype == np.float32 and got.shape == inner.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    # the clamp really was exercised: some sample positions lie outside the grid
    pos_vox = grid_index(SHAPE) + np.moveaxis(inner, -1, 0) / np.reshape(SPACING, (3, 1, 1, 1))
    assert (pos_vox < 0).any() and (pos_vox[2] > SHAPE[2] - 1).any()


def test_exp_matches_reference():
    v = smooth_field(SHAPE, 3.0, 3)
    got = ops.exp_field(v, SPACING)
    np.testing.assert_allclose(got, exp_field_ref(v, SPACING), atol=5e-5)
    got_coarse = ops.exp_field(v, SPACING, max_step_vox=2.0)
    np.testing.assert_allclose(got_coarse, exp_field_ref(v, SPACING, 2.0), atol=5e-5)
    assert not np.allclose(got, got_coarse, atol=1e-4)  # max_step_vox matters


def test_jacobian_matches_numpy_gradient():
    u = smooth_field(SHAPE, 2.0, 4)
    got = ops.jacobian_determinant(u, SPACING)
    assert got.dtype == np.float32 and got.shape == SHAPE
    np.testing.assert_allclose(got, jacobian_determinant_ref(u, SPACING), atol=1e-5)
    # a two-point axis is all border
    u2 = smooth_field((2, 5, 4), 1.0, 5, sigma=1.0)
    np.testing.assert_allclose(
        ops.jacobian_determinant(u2, SPACING), jacobian_determinant_ref(u2, SPACING), atol=1e-5
    )


def test_invert_matches_reference():
    u = smooth_field(SHAPE, 2.0, 6)
    for iterations in (1, 3, 20):
        got = ops.invert_field(u, SPACING, iterations=iterations)
        np.testing.assert_allclose(got, invert_field_ref(u, SPACING, iterations), atol=5e-5)


@pytest.mark.parametrize(
    "out_shape, out_spacing",
    [
        ((5, 6, 6), (4.0, 2.0, 3.0)),  # down
        ((17, 23, 21), (1.0, 0.5, 0.75)),  # up
        ((7, 9, 13), (2.7, 1.3, 1.1)),
    ],
)  # odd
def test_resample_matches_reference(out_shape, out_spacing):
    f = smooth_field(SHAPE, 3.0, 7)
    got = ops.resample_field(f, SPACING, out_shape, out_spacing)
    assert got.shape == out_shape + (3,) and got.dtype == np.float32
    np.testing.assert_allclose(
        got, resample_field_ref(f, SPACING, out_shape, out_spacing), atol=1e-5
    )


@pytest.mark.parametrize("kind", ["symmetric", "floating"])
def test_demons_forces_match_reference(kind):
    rng = np.random.default_rng(8)
    reference = (100 * ndi.gaussian_filter(rng.standard_normal(SHAPE), 1.5)).astype(np.float32)
    warped = (reference + 20 * rng.standard_normal(SHAPE)).astype(np.float32)
    warped[0, 0, :3] = reference[0, 0, :3]  # diff = 0
    g_ref = smooth_field(SHAPE, 30.0, 9)
    g_warped = smooth_field(SHAPE, 30.0, 10)
    g_ref[1, 1, :2] = 0.0  # zero gradient and zero diff: denominator 0 -> no force
    g_warped[1, 1, :2] = 0.0
    warped[1, 1, :2] = reference[1, 1, :2]
    mask = rng.random(SHAPE) > 0.3
    for kwargs in (
        {},
        {"mask": mask},
        {"mask": mask.astype(np.uint8), "spacing": SPACING},
        {"max_step_mm": 0.05, "spacing": SPACING},
        {"max_step_mm": math.inf},
    ):
        du, mse = ops.demons_forces(reference, warped, g_ref, g_warped, kind=kind, **kwargs)
        du_ref, mse_ref = demons_forces_ref(reference, warped, g_ref, g_warped, kind=kind, **kwargs)
        assert du.dtype == np.float32 and du.shape == SHAPE + (3,)
        np.testing.assert_allclose(du, du_ref, rtol=1e-5, atol=1e-7)
        assert mse == pytest.approx(mse_ref, rel=1e-9)
        length = np.sqrt((du.astype(np.float64) ** 2).sum(-1))
        assert length.max() <= kwargs.get("max_step_mm", 2.0) * (1 + 1e-6)
        if "mask" in kwargs:
            assert not du[~mask.astype(bool)].any()
    assert not du[1, 1, :2].any()
    # without warped_gradient the kernel takes gradient(warped) row by row: the same bits
    for kwargs in ({"spacing": SPACING}, {"mask": mask, "spacing": SPACING, "max_step_mm": 0.05}):
        want = ops.demons_forces(
            reference, warped, g_ref, ops.gradient(warped, SPACING), kind=kind, **kwargs
        )
        got = ops.demons_forces(reference, warped, g_ref, None, kind=kind, **kwargs)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1]
    with pytest.raises(ValueError, match="spacing"):
        ops.demons_forces(reference, warped, g_ref, None, kind=kind)
    # the normaliser bounds the step by sqrt(K) / 2
    du, _ = ops.demons_forces(
        reference, warped, g_ref, g_warped, kind=kind, spacing=SPACING, max_step_mm=math.inf
    )
    k_mm2 = np.mean(np.square(SPACING))
    assert np.sqrt((du.astype(np.float64) ** 2).sum(-1)).max() <= 0.5 * math.sqrt(k_mm2) * (
        1 + 1e-5
    )


# --- properties --------------------------------------------------------------------------------


def test_compose_with_zero_is_identity():
    u = smooth_field(SHAPE, 3.0, 11)
    zero = np.zeros_like(u)
    np.testing.assert_allclose(ops.compose_fields(u, zero, SPACING), u, atol=1e-6)
    np.testing.assert_allclose(ops.compose_fields(zero, u, SPACING), u, atol=1e-6)


def test_compose_translations_add():
    a = np.broadcast_to(np.float32([0.3, -0.7, 1.2]), SHAPE + (3,)).copy()
    b = np.broadcast_to(np.float32([1.1, 0.4, -0.5]), SHAPE + (3,)).copy()
    np.testing.assert_allclose(ops.compose_fields(a, b, SPACING), a + b, atol=1e-6)


def test_exp_of_zero_is_zero_and_of_small_field_is_a_diffeomorphism():
    zero = np.zeros(SHAPE + (3,), np.float32)
    assert not ops.exp_field(zero, SPACING).any()
    v = smooth_field(SHAPE, 4.0, 12, sigma=2.0)  # Jacobian of v alone goes negative ...
    assert jacobian_determinant_ref(v, SPACING).min() < 0
    u = ops.exp_field(v, SPACING)  # ... its exponential does not fold
    assert ops.jacobian_determinant(u, SPACING).min() > 0
    # a tiny velocity field: exp(v) ~ v
    small = smooth_field(SHAPE, 0.01, 13)
    np.testing.assert_allclose(ops.exp_field(small, SPACING), small, atol=1e-4)


def test_exp_of_v_composed_with_exp_of_minus_v_is_identity():
    shape = (16, 18, 18)
    v = smooth_field(shape, 2.0, 14, sigma=3.0)
    forward = ops.exp_field(v, SPACING)
    backward = ops.exp_field(np.ascontiguousarray(-v), SPACING)
    both = ops.compose_fields(forward, backward, SPACING)
    err = np.sqrt((interior(both, 3).astype(np.float64) ** 2).sum(-1))
    size = np.sqrt((forward.astype(np.float64) ** 2).sum(-1)).max()
    assert size > 1.5
    assert err.max() < 0.05 * size and err.mean() < 0.01 * size


def test_invert_gives_identity_both_ways_inside():
    shape = (16, 18, 18)
    u = smooth_field(shape, 2.0, 15, sigma=3.0)
    assert ops.jacobian_determinant(u, SPACING).min() > 0.2  # invertible
    v = ops.invert_field(u, SPACING, iterations=30, tol_mm=1e-5)

    def error_mm(outer, inner):
        w = interior(ops.compose_fields(outer, inner, SPACING), 3).astype(np.float64)
        return np.sqrt((w**2).sum(-1)).max()

    assert error_mm(u, v) < 1e-4  # the fixed point itself: u(p + v(p)) = -v(p)
    assert error_mm(v, u) < 0.03  # the other way round, up to interpolation error
    # one iteration (v = -u) is clearly worse: the iterations do something
    crude = ops.invert_field(u, SPACING, iterations=1)
    np.testing.assert_array_equal(crude, -u)
    assert error_mm(u, crude) > 0.05


def test_jacobian_of_affine_field_is_det_a():
    a = np.array([[1.10, 0.05, -0.02], [0.03, 0.92, 0.04], [-0.05, 0.02, 1.05]])
    p = mm_positions(SHAPE, SPACING) - np.array([8.0, 6.0, 7.5])
    u = np.ascontiguousarray(p @ (a - np.eye(3)).T, dtype=np.float32)
    det = ops.jacobian_determinant(u, SPACING)
    np.testing.assert_allclose(det, np.linalg.det(a), rtol=2e-5)  # borders too (exact for linear)
    assert np.allclose(ops.jacobian_determinant(np.zeros_like(u), SPACING), 1.0)


def test_resample_down_then_up_reproduces_a_linear_field():
    fine_shape, fine_spacing = (9, 13, 11), (1.5, 1.0, 0.8)
    coarse_shape, coarse_spacing = (5, 7, 6), (3.0, 2.0, 1.6)  # same mm extent
    b = np.array([[0.1, -0.2, 0.05], [0.02, 0.1, -0.1], [-0.03, 0.04, 0.2]])
    f = np.ascontiguousarray(
        mm_positions(fine_shape, fine_spacing) @ b.T + [1.0, -2.0, 0.5], dtype=np.float32
    )
    coarse = ops.resample_field(f, fine_spacing, coarse_shape, coarse_spacing)
    np.testing.assert_allclose(
        coarse, mm_positions(coarse_shape, coarse_spacing) @ b.T + [1.0, -2.0, 0.5], atol=1e-5
    )
    back = ops.resample_field(coarse, coarse_spacing, fine_shape, fine_spacing)
    np.testing.assert_allclose(back, f, atol=1e-5)
    # beyond the input grid the border value is kept (clamp), not extrapolated
    wide = ops.resample_field(coarse, coarse_spacing, (7, 7, 6), coarse_spacing)
    np.testing.assert_array_equal(wide[5], coarse[4])


def _warp(image, displacement, spacing):
    """W(p) = image(p + u(p)), trilinear, border clamp."""
    coords = grid_index(image.shape) + np.moveaxis(
        displacement.astype(np.float64), -1, 0
    ) / np.reshape(spacing, (3, 1, 1, 1))
    return ndi.map_coordinates(image.astype(np.float64), coords, order=1, mode="nearest").astype(
        np.float32
    )


@pytest.mark.parametrize("kind", ["symmetric", "floating"])
def test_demons_update_moves_a_shifted_blob_back(kind):
    shape, spacing = (14, 16, 18), (2.0, 1.0, 1.5)
    p = mm_positions(shape, spacing)
    centre = np.array([13.0, 8.0, 12.5])
    shift = np.array([1.0, -0.8, 1.5])  # mm; F(p + shift) = R(p)
    blob = lambda c: (1000.0 * np.exp(-((p - c) ** 2).sum(-1) / (2 * 3.5**2))).astype(np.float32)
    reference, floating = blob(centre), blob(centre + shift)

    def grad(img):
        return np.ascontiguousarray(
            np.stack(np.gradient(img.astype(np.float64), *spacing), -1), dtype=np.float32
        )

    u = np.zeros(shape + (3,), np.float32)
    ssd = [float(np.mean((floating.astype(np.float64) - reference) ** 2))]
    g_ref = grad(reference)
    for it in range(6):
        warped = _warp(floating, u, spacing)
        du, mse = ops.demons_forces(
            reference, warped, g_ref, grad(warped), kind=kind, spacing=spacing
        )
        assert mse == pytest.approx(np.mean((warped.astype(np.float64) - reference) ** 2), rel=1e-6)
        if it == 0:  # the first update points along the shift where the blob has signal
            strong = np.linalg.norm(g_ref, axis=-1) > 0.2 * np.linalg.norm(g_ref, axis=-1).max()
            mean_du = du[strong].astype(np.float64).mean(0)
            assert mean_du @ shift > 0.5 * np.linalg.norm(mean_du) * np.linalg.norm(shift)
        u = ops.compose_fields(u, du, spacing)  # u <- u ∘ (id + du)
        ssd.append(
            float(np.mean((_warp(floating, u, spacing).astype(np.float64) - reference) ** 2))
        )
    assert ssd[1] < 0.8 * ssd[0]
    assert ssd[-1] < 0.2 * ssd[0]
    assert all(b < a for a, b in zip(ssd, ssd[1:]))
    # where the blob has edges, the component of u along the edge normal n is the shift's (no
    # regulariser here, so the tangential part stays ~0: the mean of u is ~shift / 3)
    n = g_ref[strong] / np.linalg.norm(g_ref[strong], axis=-1, keepdims=True)
    along = (u[strong] * n).sum(-1)
    assert np.median(np.abs(along - n @ shift)) < 0.15 * np.linalg.norm(shift)
    assert np.abs(along - n @ shift).mean() < 0.2 * np.linalg.norm(shift)


# 1 vs 2 threads: tests/test_threads.py (compose, exp, Jacobian, invert, resample, demons).


# --- argument checks ---------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
    u = smooth_field((4, 5, 6), 1.0, 19)
    img = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(TypeError, match="outer must be float32"):
        ops.compose_fields(u.astype(np.float64), u, SPACING)
    with pytest.raises(TypeError, match="inner must be C-contiguous"):
        ops.compose_fields(u, np.asfortranarray(u), SPACING)
    with pytest.raises(TypeError, match="velocity must be a numpy.ndarray"):
        ops.exp_field(u.tolist(), SPACING)
    with pytest.raises(ValueError, match="inner has grid shape"):
        ops.compose_fields(u, np.zeros((4, 5, 7, 3), np.float32), SPACING)
    with pytest.raises(ValueError, match=r"displacement must be a non-empty \(z, y, x, 3\)"):
        ops.jacobian_determinant(np.zeros((4, 5, 6, 2), np.float32), SPACING)
    with pytest.raises(ValueError, match="displacement must have 4 dimensions"):
        ops.jacobian_determinant(img, SPACING)
    with pytest.raises(ValueError, match="spacing must be positive"):
        ops.jacobian_determinant(u, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be three numbers"):
        ops.compose_fields(u, u, (1.0, 1.0))
    with pytest.raises(TypeError, match="spacing must be three numbers"):
        ops.compose_fields(u, u, "abc")
    with pytest.raises(ValueError, match="out_spacing must be positive"):
        ops.resample_field(u, SPACING, (2, 2, 2), (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="out_shape must be three positive ints"):
        ops.resample_field(u, SPACING, (2, 0, 2), SPACING)
    with pytest.raises(ValueError, match="out_shape must be three positive ints"):
        ops.resample_field(u, SPACING, (2.5, 2, 2), SPACING)
    with pytest.raises(ValueError, match="max_step_vox must be a positive finite"):
        ops.exp_field(u, SPACING, max_step_vox=0)
    bad = u.copy()
    bad[1, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="velocity contains NaN"):
        ops.exp_field(bad, SPACING)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        ops.invert_field(u, SPACING, iterations=0)
    with pytest.raises(ValueError, match="tol_mm must be a positive"):
        ops.invert_field(u, SPACING, tol_mm=-1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ops.demons_forces(img, img, u, u, kind="moving")
    with pytest.raises(ValueError, match="warped has grid shape"):
        ops.demons_forces(img, img[:3].copy(), u, u)
    with pytest.raises(ValueError, match="warped_gradient has grid shape"):
        ops.demons_forces(img, img, u, u[:3].copy())
    with pytest.raises(TypeError, match="reference must be float32"):
        ops.demons_forces(img.astype(np.int16), img, u, u)
    with pytest.raises(TypeError, match="mask must be bool or uint8"):
        ops.demons_forces(img, img, u, u, mask=img)
    with pytest.raises(ValueError, match="mask has shape"):
        ops.demons_forces(img, img, u, u, mask=np.ones((4, 5, 5), bool))
    with pytest.raises(ValueError, match="mask selects no voxel"):
        ops.demons_forces(img, img, u, u, mask=np.zeros((4, 5, 6), bool))
    with pytest.raises(ValueError, match="max_step_mm must be a positive number"):
        ops.demons_forces(img, img, u, u, max_step_mm=-1.0)
    with pytest.raises(TypeError, match="max_step_mm must be a positive number"):
        ops.demons_forces(img, img, u, u, max_step_mm="2")


# -- affine_field, jacobian_statistics ---------------------------------------------------------


def test_affine_field_matches_numpy():
    rng = np.random.default_rng(3)
    u = smooth_field(SHAPE, 4.0, seed=3)
    vec = rng.normal(0, 1, (3, 3))
    idx = np.vstack([rng.normal(0, 2, (3, 4)), [0, 0, 0, 1]])
    got = ops.affine_field(u, vec, idx)
    q = grid_index(SHAPE).reshape(3, -1).T  # (k, j, i) per voxel, C order
    expected = u.reshape(-1, 3).astype(np.float64) @ vec.T + q @ idx[:3, :3].T + idx[:3, 3]
    assert got.dtype == np.float32 and got.shape == u.shape
    assert np.allclose(got.reshape(-1, 3), expected, rtol=1e-6, atol=1e-4)
    assert np.array_equal(ops.affine_field(u, vec, idx[:3]), got)  # 3x4 or 4x4
    with pytest.raises(ValueError, match="3x3"):
        ops.affine_field(u, vec[:2], idx)
    with pytest.raises(ValueError, match="finite"):
        ops.affine_field(u, vec * np.nan, idx)


@pytest.mark.parametrize("use_mask", [False, True])
def test_jacobian_statistics_match_numpy(use_mask):
    rng = np.random.default_rng(5)
    jac = rng.normal(1.0, 0.4, SHAPE).astype(np.float32)  # some values <= 0
    jac[0, 0, :3] = 0.0
    mask = rng.random(SHAPE) > 0.3 if use_mask else None
    got = ops.jacobian_statistics(jac, mask)
    sel = jac[mask] if use_mask else jac.ravel()
    pos = sel[sel > 0].astype(np.float64)
    assert got["min"] == float(sel.min()) and got["max"] == float(sel.max())
    assert got["percent_nonpositive"] == pytest.approx(
        100.0 * np.count_nonzero(sel <= 0) / sel.size
    )
    assert 0 < got["percent_nonpositive"] < 50
    assert got["sd_log"] == pytest.approx(float(np.log(pos).std()), rel=1e-9)
    assert ops.jacobian_statistics(jac, np.zeros(SHAPE, bool)) == {}
    no_pos = ops.jacobian_statistics(np.full(SHAPE, -1.0, np.float32))
    assert no_pos["sd_log"] is None and no_pos["percent_nonpositive"] == 100.0
    with pytest.raises(ValueError, match="mask has shape"):
        ops.jacobian_statistics(jac, np.ones((2, 2, 2), bool))


def test_resample_field_with_origin_equals_crop_then_edge_padding():
    """The pipeline's final upsampling: onto a larger grid whose first point lies before the
    field's, equal to upsampling onto the box and padding with the border values."""
    f = smooth_field((6, 7, 8), 3.0, seed=8)
    coarse = (4.0, 2.0, 3.0)
    fine = (2.0, 1.0, 1.5)
    box_shape = (11, 13, 15)  # the field's extent on the fine grid
    start = np.array([3, 2, 5])  # box start in the whole fine grid
    whole = (17, 19, 24)
    on_box = ops.resample_field(f, coarse, box_shape, fine)
    pads = [(int(s), int(n - s - b)) for s, n, b in zip(start, whole, box_shape)] + [(0, 0)]
    expected = np.pad(on_box, pads, mode="edge")
    got = ops.resample_field(f, coarse, whole, fine, origin_mm=-start * np.array(fine))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.array_equal(
        ops.resample_field(f, coarse, box_shape, fine, origin_mm=(0, 0, 0)), on_box
    )
    with pytest.raises(ValueError, match="origin_mm"):
        ops.resample_field(f, coarse, box_shape, fine, origin_mm=(0, 0))


def test_exp_without_copy_returns_the_velocity_only_when_no_squaring_is_needed():
    small = smooth_field(SHAPE, 0.1, 21)  # below half a voxel: N = 0
    same = ops.exp_field(small, SPACING, copy=False)
    assert same is small
    copied = ops.exp_field(small, SPACING)
    assert copied is not small
    np.testing.assert_array_equal(copied, small)
    large = smooth_field(SHAPE, 4.0, 22)
    np.testing.assert_array_equal(
        ops.exp_field(large, SPACING, copy=False), ops.exp_field(large, SPACING)
    )
