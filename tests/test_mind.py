"""ctreg.mind: MIND-SSC, block-matching cost and coupled-convex regularisation against slow,
literal numpy references, hand-checkable cases, thread independence and a synthetic
registration with known shifts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg import mind, ops

NB = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
PAIRS = [(p, q) for p in range(6) for q in range(p + 1, 6) if not (q == p + 1 and p % 2 == 0)]


def mind_ref(img, r, d):
    """MIND-SSC exactly as documented in mind.mind_ssc, float64, explicit loops over offsets."""
    img = img.astype(np.float64)
    nz, ny, nx = img.shape
    P = np.pad(img, d, mode="edge")

    def at(o):  # I(clamp(y + o * d)) for every voxel y
        return P[
            d + o[0] * d : d + o[0] * d + nz,
            d + o[1] * d : d + o[1] * d + ny,
            d + o[2] * d : d + o[2] * d + nx,
        ]

    D = []
    for p, q in PAIRS:
        S = (at(NB[p]) - at(NB[q])) ** 2
        Sp = np.pad(S, r, mode="edge")
        acc = np.zeros_like(S)
        for dz, dy, dx in itertools.product(range(2 * r + 1), repeat=3):
            acc += Sp[dz : dz + nz, dy : dy + ny, dx : dx + nx]
        D.append(acc / (2 * r + 1) ** 3)
    D = np.stack(D, axis=-1)
    D -= D.min(axis=-1, keepdims=True)
    V = D.mean(axis=-1)
    m = V.mean()
    V = np.clip(V, 1e-3 * m, 1e3 * m)
    return np.exp(-D / V[..., None])


def _texture(shape, seed=0, sigma=1.0):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.normal(size=shape), sigma).astype(np.float32)


@pytest.fixture
def threads():
    n = ops.get_num_threads()
    yield
    ops.set_num_threads(n)


def test_mind_pairs_definition():
    pairs = mind.mind_pairs()
    assert len(pairs) == 12 and len(set(pairs)) == 12
    for a, b in pairs:
        a, b = np.array(a), np.array(b)
        assert np.abs(a).sum() == 1 and np.abs(b).sum() == 1
        assert np.isclose(np.linalg.norm(a - b), np.sqrt(2))  # neighbours, not opposite
    assert pairs == [(NB[p], NB[q]) for p, q in PAIRS]


@pytest.mark.parametrize(
    "shape,r,d",
    [
        ((9, 10, 11), 1, 2),
        ((7, 12, 6), 2, 1),
        ((5, 6, 9), 0, 3),
        ((3, 4, 5), 1, 2),
        ((1, 8, 9), 1, 1),
    ],
)
def test_mind_ssc_matches_reference(shape, r, d):
    img = (100 * _texture(shape, seed=sum(shape), sigma=0.7)).astype(np.float32)
    got = mind.mind_ssc(img, radius_vox=r, distance_vox=d)
    assert got.shape == shape + (12,) and got.dtype == np.float32
    np.testing.assert_allclose(got, mind_ref(img, r, d), rtol=1e-4, atol=2e-6)
    assert np.all(got.max(axis=-1) == 1.0)


def test_mind_ssc_hand_cases():
    # Constant image: every D_c is 0 -> descriptor 1.
    np.testing.assert_array_equal(mind.mind_ssc(np.full((4, 5, 6), 3.0, np.float32)), 1.0)
    # A step along x only: channels whose pair differs in x-position see it; the pure (z, y)
    # pairs (0, 1, 4, 5) never do, so their D is 0 = the minimum -> exactly 1.
    img = np.zeros((6, 6, 10), np.float32)
    img[..., 5:] = 1.0
    out = mind.mind_ssc(img, radius_vox=0, distance_vox=1)
    zy = [c for c, (a, b) in enumerate(mind.mind_pairs()) if a[2] == 0 and b[2] == 0]
    assert zy == [0, 1, 4, 5]
    np.testing.assert_array_equal(out[..., zy], 1.0)
    # Voxel x = 4: the +x neighbour (x = 5) is 1, all others 0 -> S = 1 for the four pairs
    # holding +x, 0 otherwise; V = 4/12; far from the step every channel is 1.
    plus_x = [c for c, (a, b) in enumerate(mind.mind_pairs()) if (0, 0, 1) in (a, b)]
    V = 4 / 12
    Vs = np.zeros(10)
    Vs[[4, 5]] = V  # x = 4 and 5 see the step, the rest 0
    m = Vs.mean()
    expected = np.exp(-1 / np.clip(V, 1e-3 * m, 1e3 * m))
    np.testing.assert_allclose(out[2, 2, 4, plus_x], expected, rtol=1e-6)
    np.testing.assert_array_equal(out[:, :, :3], 1.0)


def test_mind_ssc_threads_and_out(threads):
    img = _texture((20, 17, 19), seed=3)
    ops.set_num_threads(1)
    a = mind.mind_ssc(img)
    ops.set_num_threads(2)
    buf = np.empty(img.shape + (12,), np.float32)
    b = mind.mind_ssc(img, (1.0, 1.0, 1.0), out=buf)
    ops.set_num_threads(3)
    c = mind.mind_ssc(img)
    assert b is buf
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_mind_ssc_errors():
    with pytest.raises(mind.MindArgumentError) as e:
        mind.mind_ssc(np.zeros((3, 3, 3)))
    assert e.value.code == "Mind.Dtype"
    with pytest.raises(mind.MindArgumentError) as e:
        mind.mind_ssc(np.zeros((3, 3), np.float32))
    assert e.value.code == "Mind.Shape"
    with pytest.raises(mind.MindArgumentError) as e:
        mind.mind_ssc(np.zeros((3, 3, 3), np.float32), distance_vox=0)
    assert e.value.code == "Mind.Parameter"
    with pytest.raises(mind.MindArgumentError) as e:
        mind.mind_ssc(np.zeros((3, 3, 3), np.float32), out=np.zeros((3, 3, 3, 11), np.float32))
    assert e.value.code == "Mind.Shape"


# ---------------------------------------------------------------------------------------------
# block matching


def block_cost_ref(ref, flt, step, B, bstep, R, sstep, mask=None):
    """cost[g, l] as documented in mind.block_match_cost, literal loops."""
    shp = np.array(ref.shape[:3])
    G = -(-shp // step)
    offs = mind.search_offsets(R, sstep)
    ob = np.arange(-B, B + 1, bstep)
    cost = np.zeros(tuple(G) + (len(offs),))
    active = np.ones(tuple(G), bool)
    for g in itertools.product(*[range(n) for n in G]):
        p = np.array(g) * step
        if mask is not None:
            lo, hi = np.maximum(p - B, 0), np.minimum(p + B, shp - 1)
            if not mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].any():
                active[g] = False
                continue
        X = np.array([p + o for o in itertools.product(ob, ob, ob)])
        X = X[np.all((X >= 0) & (X < shp), axis=1)]
        for l, d in enumerate(offs):
            Y = np.clip(X + d, 0, shp - 1)
            diff = np.abs(
                ref[X[:, 0], X[:, 1], X[:, 2]].astype(np.float64) - flt[Y[:, 0], Y[:, 1], Y[:, 2]]
            )
            cost[g + (l,)] = diff.sum(axis=1).mean()
    return cost, offs, active


def _feats(shape, C, seed):
    rng = np.random.default_rng(seed)
    return rng.random(shape + (C,), dtype=np.float32), rng.random(shape + (C,), dtype=np.float32)


def test_search_offsets():
    o = mind.search_offsets(2, 1)
    assert o.shape == (125, 3) and o.dtype == np.int32
    assert tuple(o[0]) == (-2, -2, -2) and tuple(o[1]) == (-2, -2, -1) and tuple(o[62]) == (0, 0, 0)
    o = mind.search_offsets(5, 2)
    assert o.shape == (125, 3) and set(np.unique(o)) == {-4, -2, 0, 2, 4}


@pytest.mark.parametrize(
    "shape,C,step,B,bstep,R,sstep",
    [
        ((11, 12, 13), 3, 4, 2, 2, 2, 1),  # sub-sampled block {-2, 0, 2}
        ((9, 10, 8), 2, 3, 1, 2, 3, 1),  # {-1, 1}; control points near the far border
        ((8, 9, 10), 4, 5, 1, 1, 4, 2),  # full block, strided search
        ((6, 7, 5), 12, 2, 2, 1, 5, 1),  # search reach beyond every border, L = 1331 (> 32 per row)
        ((10, 10, 10), 1, 4, 0, 1, 1, 1),  # single-voxel block
    ],
)
def test_block_match_cost_matches_reference(shape, C, step, B, bstep, R, sstep):
    ref, flt = _feats(shape, C, seed=C + step)
    cost, offs = mind.block_match_cost(
        ref,
        flt,
        grid_step_vox=step,
        block_radius_vox=B,
        search_radius_vox=R,
        search_step_vox=sstep,
        block_step_vox=bstep,
    )
    cref, oref, _ = block_cost_ref(ref, flt, step, B, bstep, R, sstep)
    np.testing.assert_array_equal(offs, oref)
    assert cost.shape == cref.shape and cost.dtype == np.float32
    np.testing.assert_allclose(cost, cref, rtol=2e-6, atol=1e-6)


def test_block_match_cost_mask_and_threads(threads):
    shape = (12, 13, 11)
    ref, flt = _feats(shape, 3, seed=7)
    mask = np.zeros(shape, bool)
    mask[2:6, 3:9, 1:5] = True
    ops.set_num_threads(1)
    cost1, offs, active = mind.block_match_cost(
        ref, flt, grid_step_vox=4, block_radius_vox=2, search_radius_vox=2, mask=mask
    )
    cref, _, aref = block_cost_ref(ref, flt, 4, 2, 2, 2, 1, mask)
    assert active.dtype == np.bool_
    np.testing.assert_array_equal(active, aref)
    assert 0 < active.sum() < active.size
    np.testing.assert_allclose(cost1, cref, rtol=2e-6, atol=1e-6)
    assert np.all(cost1[~active] == 0)
    ops.set_num_threads(2)
    cost2, _, _ = mind.block_match_cost(
        ref,
        flt,
        grid_step_vox=4,
        block_radius_vox=2,
        search_radius_vox=2,
        mask=mask.astype(np.uint8),
    )
    np.testing.assert_array_equal(cost1, cost2)


def test_block_match_cost_finds_integer_shift():
    ref = mind.mind_ssc(_texture((24, 24, 24), seed=11))
    t = (2, -1, 3)
    flt = np.ascontiguousarray(np.roll(ref, t, axis=(0, 1, 2)))  # flt(x + t) = ref(x)
    cost, offs = mind.block_match_cost(
        ref, flt, grid_step_vox=4, block_radius_vox=2, search_radius_vox=4
    )
    best = offs[cost[1:-1, 1:-1, 1:-1].argmin(axis=-1)]
    np.testing.assert_array_equal(best.reshape(-1, 3), np.tile(t, (best.size // 3, 1)))
    assert np.all(cost[1:-1, 1:-1, 1:-1].min(axis=-1) == 0)


def test_block_match_errors():
    ref, flt = _feats((5, 5, 5), 2, 0)
    with pytest.raises(mind.MindArgumentError) as e:
        mind.block_match_cost(
            ref, flt[..., :1].copy(), grid_step_vox=2, block_radius_vox=1, search_radius_vox=1
        )
    assert e.value.code == "Mind.Shape"
    with pytest.raises(mind.MindArgumentError) as e:
        mind.block_match_cost(ref, flt, grid_step_vox=0, block_radius_vox=1, search_radius_vox=1)
    assert e.value.code == "Mind.Parameter"
    with pytest.raises(mind.MindArgumentError) as e:
        mind.block_match_cost(
            ref,
            flt,
            grid_step_vox=2,
            block_radius_vox=1,
            search_radius_vox=1,
            mask=np.ones((5, 5, 5), np.float32),
        )
    assert e.value.code == "Mind.Dtype"


# ---------------------------------------------------------------------------------------------
# coupled-convex regularisation


def test_coupled_argmin_matches_numpy(threads):
    rng = np.random.default_rng(5)
    offs = mind.search_offsets(3)
    disp = (offs * np.float32([1.5, 0.8, 0.8])).astype(np.float32)
    cost = rng.random((4, 5, 6, len(offs)), dtype=np.float32)
    cost[0, 0, 0] = 1.0  # all equal: ties go to the first minimum
    v = rng.normal(scale=2.0, size=(4, 5, 6, 3)).astype(np.float32)
    for theta in (0.0, 0.05, 1.0):
        ops.set_num_threads(1)
        idx, u = mind.coupled_argmin(cost, disp, v, theta)
        ops.set_num_threads(2)
        idx2, _ = mind.coupled_argmin(cost, disp, v, theta)
        np.testing.assert_array_equal(idx, idx2)
        dv = disp[None, None, None] - v[..., None, :]
        e = cost + np.float32(theta) * ((dv[..., 0] ** 2 + dv[..., 1] ** 2) + dv[..., 2] ** 2)
        np.testing.assert_array_equal(idx, e.argmin(axis=-1))
        np.testing.assert_array_equal(u, disp[idx])
    assert idx.dtype == np.int32
    # theta = 0 is the plain argmin; all-equal cost with huge theta picks the nearest offset.
    idx0, _ = mind.coupled_argmin(cost, disp, v, 0.0)
    np.testing.assert_array_equal(idx0, cost.argmin(axis=-1))
    flat = np.zeros((1, len(offs)), np.float32)
    idx, u = mind.coupled_argmin(flat, disp, np.float32([[1.4, -0.9, 0.1]]), 10.0)
    np.testing.assert_array_equal(u, np.float32([[1.5, -0.8, 0.0]]))


def _shift_volume(img, field_vox):
    """flt(x) = img(x - t(x)) for a displacement t (z, y, x voxels) given on the full grid, so
    that flt(x + t) ~ ref(x) where t varies slowly."""
    grid = np.indices(img.shape).astype(np.float64)
    coords = grid - np.moveaxis(field_vox, -1, 0)
    return ndi.map_coordinates(img.astype(np.float64), coords, order=3, mode="nearest").astype(
        np.float32
    )


@pytest.mark.parametrize("kind", ["constant", "smooth"])
def test_regularise_recovers_known_shift(kind):
    shape = (32, 32, 32)
    img = 100 * _texture(shape, seed=21, sigma=1.2)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    if kind == "constant":
        t = np.zeros(shape + (3,))
        t[...] = (2.0, -3.0, 1.0)
        flt = np.ascontiguousarray(np.roll(img, (2, -3, 1), axis=(0, 1, 2)))
    else:
        t = np.stack(
            [
                2.0 * np.sin(2 * np.pi * x / 64),
                2.5 * np.cos(2 * np.pi * z / 64),
                1.5 + 1.5 * np.sin(2 * np.pi * y / 64),
            ],
            axis=-1,
        )
        flt = _shift_volume(img, t)
    vox = np.array([1.2, 1.0, 1.0])
    fr = mind.mind_ssc(img)
    ff = mind.mind_ssc(flt)
    step = 4
    mask = np.zeros(shape, bool)
    mask[:, :, :] = True
    mask[:, :, 26:] = False  # a few inactive control points, filled from their neighbours
    cost, offs, active = mind.block_match_cost(
        fr, ff, grid_step_vox=step, block_radius_vox=2, search_radius_vox=5, mask=mask
    )
    assert not active.all()
    u = mind.regularise_cost(cost, offs, active, grid_spacing_mm=step * vox, voxel_mm=vox)
    assert u.shape == cost.shape[:3] + (3,) and u.dtype == np.float32
    truth = t[::step, ::step, ::step] * vox
    inner = (slice(1, -1),) * 3  # away from the clamped borders
    err_vox = np.abs(u - truth)[inner] / vox
    assert err_vox.max() < 1.0, err_vox.max()
    # the coupling removes the outliers of the plain per-point argmin
    raw = offs[cost.argmin(axis=-1)] * vox
    assert np.mean(np.abs(u - truth) / vox) < 0.8 * np.mean(np.abs(raw - truth) / vox)
    # inactive points interpolate their neighbours
    err_all = np.abs(u - truth) / vox
    assert err_all[1:-1, 1:-1, -1].max() < 1.0


def test_portable_and_simd_paths_agree():
    from ctreg import _native

    img = _texture((11, 13, 17), seed=4)
    ref, flt = _feats((11, 13, 17), 5, seed=9)
    rng = np.random.default_rng(2)
    offs = mind.search_offsets(2)
    disp = offs.astype(np.float32)
    cost = rng.random((50, len(offs)), dtype=np.float32)
    v = rng.normal(size=(50, 3)).astype(np.float32)
    res = []
    try:
        for simd in (True, False):
            _native._set_simd_dispatch(simd)
            res.append(
                (
                    mind.mind_ssc(img, radius_vox=2),
                    mind.block_match_cost(
                        ref, flt, grid_step_vox=3, block_radius_vox=2, search_radius_vox=3
                    )[0],
                    mind.coupled_argmin(cost, disp, v, 0.3)[0],
                )
            )
    finally:
        _native._set_simd_dispatch(True)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)
