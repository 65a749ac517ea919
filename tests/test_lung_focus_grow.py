"""lung_focus._grow (the lung focus dilation) against the obvious implementation it replaced:
pad, max-pool by reshaping, Euclidean distance on the coarse grid, np.repeat back."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg.lung_focus import _grow, _max_pool
from ctreg.pyramid import level_factors


def _grow_reference(mask, spacing, grow_mm):
    f = level_factors(spacing, 2.0)
    pads = [(-n) % x for n, x in zip(mask.shape, f)]
    m = np.pad(mask, [(0, p) for p in pads])
    small = m.reshape(
        m.shape[0] // f[0], f[0], m.shape[1] // f[1], f[1], m.shape[2] // f[2], f[2]
    ).any(axis=(1, 3, 5))
    dist = ndi.distance_transform_edt(~small, sampling=np.asarray(spacing) * np.asarray(f))
    out = dist <= grow_mm
    for ax, x in enumerate(f):
        out = np.repeat(out, x, axis=ax)
    return np.ascontiguousarray(out[: mask.shape[0], : mask.shape[1], : mask.shape[2]]) | mask


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((23, 31, 29), (0.7, 0.68, 0.68)),  # factors (3, 3, 3), ragged edges
        ((20, 24, 24), (2.5, 0.8, 0.8)),  # (1, 2, 2)
        ((17, 19, 21), (2.0, 2.0, 2.0)),  # (1, 1, 1): no pooling
        ((16, 30, 33), (1.25, 0.5, 0.45)),  # (2, 4, 4)
    ],
)
def test_grow_equals_reference(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.97
    for grow_mm in (0.0, 3.0, 7.5):
        got = _grow(mask, spacing, grow_mm)
        expect = _grow_reference(mask, spacing, grow_mm)
        assert got.dtype == np.bool_ and got.shape == mask.shape
        np.testing.assert_array_equal(got, expect)


def test_max_pool_sets_a_cell_when_any_voxel_is_set():
    mask = np.zeros((5, 7, 8), bool)
    mask[4, 6, 7] = True  # in the ragged last cell of every axis
    pooled = _max_pool(mask, (2, 3, 3))
    assert pooled.shape == (3, 3, 3)
    assert pooled.sum() == 1 and pooled[2, 2, 2]


# -- ops.dilate_ball: the distance map's threshold without the distance map ----------------


@pytest.mark.parametrize("seed", range(12))
def test_dilate_ball_equals_scipy_distance_threshold(seed):
    from ctreg import ops

    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(n) for n in rng.integers(4, 36, 3))
    # exact binary spacings (ties at the radius are exact) and inexact ones
    choices = [0.5, 0.7, 0.936, 0.9765625, 1.0, 1.25, 1.953125, 2.0, 2.5, 3.0]
    spacing = tuple(float(v) for v in rng.choice(choices, 3))
    mask = rng.random(shape) < float(rng.choice([0.002, 0.02, 0.2, 0.6]))
    mask.flat[int(rng.integers(mask.size))] = True
    for radius in (0.0, 1.0, 2.0, 2.5, 4.0, 6.25, 10.0):
        expect = ndi.distance_transform_edt(~mask, sampling=spacing) <= radius
        got = ops.dilate_ball(mask, spacing, radius)
        assert got.dtype == np.bool_ and got.shape == shape
        np.testing.assert_array_equal(got, expect, err_msg=f"{spacing} r={radius}")


def test_dilate_ball_on_thread_counts_and_edges():
    from ctreg import ops

    mask = np.zeros((30, 40, 50), bool)
    mask[0, 0, 0] = mask[29, 39, 49] = mask[15, 20, 25] = True  # corners: the ball is cut
    mask[5:9, 30:38, 3:45] = True
    spacing = (1.872, 1.953125, 1.953125)
    expect = ndi.distance_transform_edt(~mask, sampling=spacing) <= 10.0
    for threads in (1, 2, 4):
        with ops.thread_limit(threads):
            np.testing.assert_array_equal(ops.dilate_ball(mask, spacing, 10.0), expect)


def test_ball_reach_is_the_ball():
    from ctreg import ops

    reach = ops.ball_reach((2.0, 1.0, 1.0), 2.0)
    assert reach.shape == (3, 5) and reach.dtype == np.int32
    # dz = 0: |dy| 0, 1, 2 -> |dx| <= 2, 1 (sqrt(3) < 2), 0; dz = +-1 (2 mm): only (dy, dx) = 0
    assert reach.tolist() == [[-1, -1, 0, -1, -1], [0, 1, 2, 1, 0], [-1, -1, 0, -1, -1]]


def test_dilate_ball_empty_mask_large_ball_and_bad_input():
    from ctreg import ops

    empty = np.zeros((4, 5, 6), bool)  # no voxel set: scipy's own answer
    np.testing.assert_array_equal(
        ops.dilate_ball(empty, (1, 1, 1), 2.0),
        ndi.distance_transform_edt(~empty, sampling=(1, 1, 1)) <= 2.0,
    )
    mask = np.zeros((3, 4, 300), bool)
    mask[1, 2, 0] = True  # a ball 300 voxels wide along x: the scipy path
    np.testing.assert_array_equal(
        ops.dilate_ball(mask, (1.0, 1.0, 0.5), 200.0),
        ndi.distance_transform_edt(~mask, sampling=(1.0, 1.0, 0.5)) <= 200.0,
    )
    with pytest.raises(ValueError):
        ops.dilate_ball(mask.astype(np.uint8), (1, 1, 1), 1.0)
    with pytest.raises(ValueError):
        ops.dilate_ball(mask, (1, 1, 1), -1.0)


def test_expand_equals_repeat_and_crop():
    from ctreg.lungs import _expand as lungs_expand
    from ctreg.masks import _expand

    rng = np.random.default_rng(9)
    for _ in range(60):
        small_shape = tuple(int(n) for n in rng.integers(1, 9, 3))
        f = tuple(int(x) for x in rng.integers(1, 5, 3))
        shape = tuple(
            int(rng.integers(max(1, (n - 1) * x + 1), n * x + 1)) for n, x in zip(small_shape, f)
        )
        small = rng.random(small_shape) > 0.5
        expect = small
        for ax in range(3):
            expect = np.repeat(expect, f[ax], axis=ax)
        expect = expect[: shape[0], : shape[1], : shape[2]]
        got = _expand(small, f, shape)
        assert got.dtype == np.bool_ and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expect)
    assert lungs_expand is _expand  # one upsampling helper, used by masks, lungs, lung_focus
