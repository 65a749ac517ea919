"""The affine stage's fused value-and-gradient pass (ops.affine_moments) against slow references."""

import dataclasses

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg import ops, samples
from ctreg.affine import FUSED_METRICS, _Objective, cost_from_moments
from ctreg.level import build_level, preprocess
from ctreg.masks import body_mask
from ctreg.pyramid import bounding_box, crop
from ctreg.transforms import N_AFFINE, ReferenceFrame

from reference import affine_moments_ref


def _random_matrix(rng, shape_in, shape_out):
    """An output-index -> input-index map with rotation, scaling and a shift that sends part of
    the output grid outside the input."""
    a = np.eye(4)
    a[:3, :3] = np.diag(np.asarray(shape_in, float) / np.asarray(shape_out, float)) @ (
        np.eye(3) + rng.normal(0, 0.08, (3, 3))
    )
    a[:3, 3] = rng.uniform(-3, 3, 3)
    return a


@pytest.mark.parametrize("with_mask", [True, False])
def test_affine_moments_match_map_coordinates_sums(with_mask):
    rng = np.random.default_rng(5)
    image = rng.normal(0, 100, (13, 17, 19)).astype(np.float32)
    image[:2] = -4096.0  # missing data: samples that touch it are invalid
    grads = [rng.normal(0, 10, image.shape).astype(np.float32) for _ in range(3)]
    reference = rng.normal(0, 100, (11, 12, 14)).astype(np.float32)
    mask = (rng.random(reference.shape) > 0.3).astype(np.uint8) if with_mask else None
    m = _random_matrix(rng, image.shape, reference.shape)
    got = ops.affine_moments(image, grads, reference, mask, m, valid_min=-1000.0)
    want = affine_moments_ref(image, grads, reference, mask, m, -1000.0)
    assert got.shape == (ops.AFFINE_MOMENTS,)
    assert 50 < want[0] < reference.size  # some voxels fall outside or on missing data
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-3 * np.abs(want).max() * 1e-3)


def test_affine_moments_rejects_bad_input():
    a = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="three"):
        ops.affine_moments(a, [a, a], a, None, np.eye(4), valid_min=0.0)
    with pytest.raises(TypeError, match="float32"):
        ops.affine_moments(a.astype(np.float64), [a, a, a], a, None, np.eye(4), valid_min=0.0)
    with pytest.raises(TypeError, match="uint8"):
        ops.affine_moments(a, [a, a, a], a, a, np.eye(4), valid_min=0.0)


@pytest.mark.parametrize("metric", FUSED_METRICS)
def test_cost_from_moments_matches_the_metric_kernels(metric):
    rng = np.random.default_rng(1)
    r = rng.normal(0, 1, 500)
    w = 0.7 * r + rng.normal(0, 0.5, 500) + 3.0
    s = np.array([r.size, r.sum(), w.sum(), r @ r, w @ w, r @ w])
    cost, (a, b, c) = cost_from_moments(metric, s)
    kernel = ops.ssd if metric == "ssd" else ops.ncc  # tested against slow references elsewhere
    want, grad = kernel(r.astype(np.float32)[None, None], w.astype(np.float32)[None, None])
    assert cost == pytest.approx(float(want), rel=1e-5)
    np.testing.assert_allclose(
        a * r + b * w + c, np.ravel(grad), rtol=1e-4, atol=1e-6 * np.abs(np.ravel(grad)).max()
    )


@pytest.fixture(scope="module")
def level_and_centre():
    # smoothed, so that the trilinear cost is close to differentiable at the 8 mm level and
    # finite differences can check the analytic gradient
    ct = samples.ct64_volume()
    vol = ct.with_array(ndi.gaussian_filter(ct.array, 1.5).astype(np.float32))
    clip = (-1000.0, 400.0)
    body = body_mask(vol)
    box = bounding_box(body, np.array([2, 2, 2]))
    ref = preprocess(crop(vol, box), clip, invalid_value=clip[0])
    flt = preprocess(vol, clip, invalid_value=clip[0])
    lv = build_level(0, 8.0, ref, np.ascontiguousarray(body[box]), flt, ReferenceFrame(vol), clip)
    centre = vol.index_to_world((np.array(vol.shape, float) - 1)[None] / 2)[0]
    return lv, centre


@pytest.mark.parametrize("metric", FUSED_METRICS)
def test_fused_objective_equals_the_general_path_and_finite_differences(level_and_centre, metric):
    lv, centre = level_and_centre
    rng = np.random.default_rng(2)
    theta = np.concatenate([rng.normal(0, 4, 3), rng.normal(0, 3, N_AFFINE - 3)])
    fused = _Objective(lv, centre, metric, theta, fused=True)
    general = _Objective(lv, centre, metric, theta, fused=False)
    assert fused.fused and not general.fused
    c1, g1 = fused(theta)
    c2, g2 = general(theta)
    assert c1 == pytest.approx(c2, rel=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5 * np.abs(g2).max())
    # and the gradient is the derivative of the value (central differences, 0.05 mm steps)
    for m in (0, 4, 9):
        step = np.zeros_like(theta)
        step[m] = 0.05
        fd = (fused.value(theta + step) - fused.value(theta - step)) / 0.1
        assert fd == pytest.approx(g1[m], rel=0.1, abs=0.02 * np.abs(g1).max())


def test_level_reports_hold_the_costs_of_the_start_and_of_the_returned_result(level_and_centre):
    """The affine and B-spline stages take the start and end costs from the optimiser's own
    evaluations (no extra ones): they must equal the costs recomputed independently."""
    from ctreg.affine import run_affine_level
    from ctreg.ffd import run_ffd_level
    from ctreg.options import AffineOptions, FFDOptions
    from ctreg.transforms import AffineTransform

    lv, centre = level_and_centre
    start = np.zeros(N_AFFINE)
    start[:3] = [3.0, -2.0, 4.0]
    from ctreg.level import interior_level

    opts = AffineOptions(levels_mm=(8.0,), iterations=(15,), affine=False)
    params, reports = run_affine_level(lv, centre, start, opts, 0)
    assert [r.stage for r in reports] == ["rigid"]
    # the phase's metric counts the voxels mapped inside the floating data at its start
    phase_level = interior_level(lv, AffineTransform.from_params(start, centre))
    check = _Objective(phase_level, centre, opts.metric, start)
    assert reports[0].metric_before == pytest.approx(check.value(start[:6]), rel=1e-12)
    assert reports[0].metric_after == pytest.approx(check.value(params[:6]), rel=1e-12)
    assert reports[0].metric_after < reports[0].metric_before

    transform = AffineTransform.from_params(params, centre)
    fopts = FFDOptions(
        levels_mm=(8.0,), control_spacing_mm=(40.0,), iterations=(6,), bending_weight=0.0
    )
    u, rep = run_ffd_level(lv, transform, None, fopts, 0)

    flv = interior_level(lv, transform)  # the level's metric region (from its start)

    def lncc_cost(field):
        warped, valid = flv.warp(transform, field)
        return float(
            flv.metric("lncc", warped, flv.metric_mask(valid), lncc_radius_mm=fopts.lncc_radius_mm)[
                0
            ]
        )

    assert rep.metric_before == pytest.approx(lncc_cost(np.zeros_like(u)), rel=1e-6)
    assert rep.metric_after == pytest.approx(lncc_cost(u), rel=1e-6)
    assert rep.metric_after < rep.metric_before
    assert rep.evaluations >= rep.iterations


def test_level_warp_composes_outer_on_the_fly(level_and_centre):
    """Level.warp(transform, e, outer=o) resamples through (id + o) ∘ (id + e) exactly as
    warping with the composed field; ``outer`` alone is refused."""
    from ctreg.transforms import AffineTransform

    lv, centre = level_and_centre
    t = AffineTransform.from_params(np.r_[2.0, -1.0, 0.5, np.zeros(N_AFFINE - 3)], centre)
    rng = np.random.default_rng(3)
    e = (rng.standard_normal(lv.shape + (3,)) * 2).astype(np.float32)
    o = (rng.standard_normal(lv.shape + (3,)) * 3).astype(np.float32)
    sp = tuple(float(s) for s in lv.spacing)
    w1, v1 = lv.warp(t, e, outer=o)
    w2, v2 = lv.warp(t, ops.compose_fields(o, e, sp))
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(v1, v2)
    with pytest.raises(ValueError, match="outer"):
        lv.warp(t, outer=o)


def test_interior_level_makes_the_affine_cost_smooth_for_scans_of_one_field_of_view():
    """Two scans on the same grid: at the start every border slice of the reference maps onto
    the floating scan's edge, and any step drops whole slices from the metric (a jump that
    made L-BFGS's first line search fail on the popi pair).  affine.interior_level leaves out
    the voxels within a voxel of the edge: the cost is then smooth around the start."""
    from ctreg.level import interior_level
    from ctreg.transforms import AffineTransform
    from ctreg.volume import Volume, affine_from_geometry

    rng = np.random.default_rng(0)
    shape = (24, 20, 22)
    arr = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
    arr = (arr / np.abs(arr).max() * 500 - 300).astype(np.float32)
    moved = ndi.shift(arr, (0.7, -0.5, 0.6), mode="nearest").astype(np.float32)
    geometry = affine_from_geometry(np.zeros(3), (4.0, 4.0, 4.0), np.eye(3)[::-1].copy())
    clip = (-1000.0, 400.0)
    ref = preprocess(Volume(arr, geometry), clip, invalid_value=clip[0])
    flt = preprocess(Volume(moved, geometry), clip, invalid_value=clip[0])
    lv = build_level(0, 8.0, ref, np.ones(shape, bool), flt, ReferenceFrame(ref), clip)
    centre = ref.index_to_world((np.array(shape) - 1)[None] / 2.0)[0]
    start = AffineTransform.from_params(np.zeros(N_AFFINE), centre)
    inner = interior_level(lv, start)
    assert 0 < inner.mask.sum() < lv.mask.sum()
    assert not inner.mask[[0, -1]].any() and not inner.mask[:, [0, -1]].any()

    def second_differences(level):
        obj = _Objective(level, centre, "ncc", np.zeros(N_AFFINE))
        out = []
        for ax in range(3):
            v = [obj.value(np.eye(6)[ax] * t) for t in (0.0, 0.01, 0.02)]
            out.append(abs(v[2] - 2 * v[1] + v[0]))
        return np.array(out)

    assert second_differences(lv).max() > 5e-4  # the jump this guards against
    assert second_differences(inner).max() < 1e-5


def test_interior_level_keeps_away_from_missing_floating_data(level_and_centre):
    """Reference voxels that map next to the floating scan's missing data (SENTINEL) are left
    out as well as those next to its array border."""
    from ctreg.level import interior_level
    from ctreg.level import SENTINEL
    from ctreg.transforms import AffineTransform

    lv, centre = level_and_centre
    arr = lv.floating.array.copy()
    k = arr.shape[0] // 2
    arr[k] = SENTINEL  # one slice without data in the middle of the floating scan
    holed = dataclasses.replace(lv, floating=lv.floating.with_array(arr))
    identity = AffineTransform.from_params(np.zeros(N_AFFINE), centre)
    plain = interior_level(lv, identity)
    inner = interior_level(holed, identity)
    assert inner.mask.sum() < plain.mask.sum()
    assert not (inner.mask & ~plain.mask).any()
    # exactly the voxels that sample within a voxel of the hole are left out
    m = holed.frame_to_floating_index(identity) @ holed.out_to_frame
    idx = np.argwhere(plain.mask.astype(bool))
    fz = (np.c_[idx, np.ones(len(idx))] @ m.T)[:, 0]
    near = np.abs(fz - k) < 2.0  # the nearest-neighbour test of the eroded data, in z
    kept = inner.mask[tuple(idx.T)].astype(bool)
    assert not kept[np.abs(fz - k) < 1.5].any()
    assert kept[~near].all()


def test_interior_level_through_a_displacement_equals_the_same_translation(level_and_centre):
    """interior_level(level, T, u_frame=u) maps through T ∘ (id + u): a constant u is the
    translation by the world vector D u (D: the reference grid's directions)."""
    from ctreg.level import interior_level
    from ctreg.transforms import AffineTransform

    lv, centre = level_and_centre
    c = np.array([8.0, -9.0, 7.5])  # frame (z, y, x) mm: about a level voxel on each axis
    u = np.ascontiguousarray(np.broadcast_to(c.astype(np.float32), lv.shape + (3,)))
    identity = AffineTransform.from_params(np.zeros(N_AFFINE), centre)
    params = np.zeros(N_AFFINE)
    params[:3] = lv.frame.direction @ c  # world translation (x, y, z)
    moved = interior_level(lv, AffineTransform.from_params(params, centre))
    through_u = interior_level(lv, identity, u_frame=u)
    np.testing.assert_array_equal(through_u.mask, moved.mask)
    assert through_u.mask.sum() != interior_level(lv, identity).mask.sum()
