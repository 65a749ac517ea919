"""Similarity metrics (ctreg.ops.ssd/ncc/lncc/mattes_mi): values against numpy/scipy references,
gradients against central finite differences, masks, errors and thread independence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg import ops
from reference import lncc_ref, mattes_mi_ref, ncc_ref, ssd_ref

SHAPE = (9, 12, 11)


def _images(seed=0, shape=SHAPE):
    """A smooth CT-like pair (HU) with structure at several scales and a nonlinear relation."""
    rng = np.random.default_rng(seed)
    base = ndi.gaussian_filter(rng.normal(size=shape), 1.5)
    base = base / base.std()
    ref = -600 + 250 * base + 20 * rng.normal(size=shape)
    warped = -550 + 200 * base + 60 * np.tanh(base) + 30 * rng.normal(size=shape)
    return ref.astype(np.float32), warped.astype(np.float32)


def _mask(shape=SHAPE, seed=1):
    m = np.zeros(shape, np.uint8)
    m[1:-2, 2:-1, 1:-3] = 1
    m[np.random.default_rng(seed).random(shape) < 0.1] = 0
    return m


METRICS = {
    "ssd": (lambda r, w, **kw: ops.ssd(r, w, **kw), lambda r, w, m: ssd_ref(r, w, m)),
    "ncc": (lambda r, w, **kw: ops.ncc(r, w, **kw), lambda r, w, m: ncc_ref(r, w, m)),
    "lncc": (
        lambda r, w, **kw: ops.lncc(r, w, radius_vox=(1, 2, 2), **kw),
        lambda r, w, m: lncc_ref(r, w, (1, 2, 2), m),
    ),
    "mi": (
        lambda r, w, **kw: ops.mattes_mi(
            r, w, bins=16, ref_range=(-1100, 0), warped_range=(-1000, -100), **kw
        ),
        lambda r, w, m: mattes_mi_ref(r, w, 16, (-1100, 0), (-1000, -100), m),
    ),
}


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("masked", [False, True])
def test_value_matches_reference(name, masked):
    fn, ref = METRICS[name]
    r, w = _images()
    m = _mask() if masked else None
    v, g = fn(r, w, mask=m)
    assert g.shape == SHAPE and g.dtype == np.float32
    assert v == pytest.approx(ref(r, w, m), rel=1e-5, abs=1e-7)
    if masked:
        assert np.all(g[m == 0] == 0)
        # voxels outside the mask do not count: changing them changes nothing
        w2 = w.copy()
        w2[m == 0] += 500
        r2 = r.copy()
        r2[m == 0] -= 300
        v2, g2 = fn(r2, w2, mask=m)
        assert v2 == pytest.approx(v, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose(g2, g, rtol=1e-4, atol=1e-6 * np.abs(g).max())


def test_known_values():
    r, w = _images()
    assert ops.ssd(r, r)[0] == 0.0
    assert ops.ncc(r, 3 * r - 100)[0] == pytest.approx(-1.0, abs=1e-6)
    assert ops.ncc(r, -r)[0] == pytest.approx(1.0, abs=1e-6)
    assert ops.lncc(r, 2 * r + 5)[0] == pytest.approx(-1.0, abs=1e-5)
    # MI of an image with itself is the entropy-like maximum; MI with noise is near 0
    mi_self = -ops.mattes_mi(r, r, bins=16, ref_range=(-1100, 0), warped_range=(-1100, 0))[0]
    noise = np.random.default_rng(9).permutation(r.ravel()).reshape(r.shape)
    mi_noise = -ops.mattes_mi(r, noise, bins=16, ref_range=(-1100, 0), warped_range=(-1100, 0))[0]
    assert mi_self > 1.0 and mi_noise < 0.3 * mi_self


def _fd_check(fn, r, w, mask, n_vox=10, h=0.5, seed=3):
    """dcost/dW of the kernel vs central differences (costs re-evaluated in the kernel, float64
    sums over float32 inputs) at random counted voxels."""
    _, g = fn(r, w, mask=mask)
    rng = np.random.default_rng(seed)
    cand = np.argwhere(mask != 0) if mask is not None else np.argwhere(np.ones(r.shape, bool))
    scale = np.abs(g).max()
    checked = 0
    for idx in cand[rng.permutation(len(cand))[:n_vox]]:
        idx = tuple(idx)
        wp, wm = w.copy(), w.copy()
        wp[idx] += h
        wm[idx] -= h
        fd = (fn(r, wp, mask=mask)[0] - fn(r, wm, mask=mask)[0]) / (2 * h)
        if abs(fd) < 0.05 * scale:  # ill-conditioned entry (tiny derivative): check absolutely
            assert abs(g[idx] - fd) < 2e-3 * scale
        else:
            assert g[idx] == pytest.approx(fd, rel=1e-2)
            checked += 1
    assert checked >= n_vox // 3


@pytest.mark.parametrize("name", ["ssd", "ncc", "lncc"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_finite_differences(name, masked):
    r, w = _images(4)
    _fd_check(METRICS[name][0], r, w, _mask() if masked else None)


@pytest.mark.parametrize("masked", [False, True])
def test_mi_gradient_finite_differences(masked):
    # MI is piecewise smooth in W (the reference bins are box windows, but they do not move):
    # use a step well inside one cubic piece (bin width here = 900 / 13 HU).
    r, w = _images(5)
    fn = METRICS["mi"][0]
    _fd_check(fn, r, w, _mask() if masked else None, h=0.05)


@pytest.mark.parametrize("name", METRICS)
def test_fused_gradient_is_product(name):
    fn, _ = METRICS[name]
    r, w = _images(6)
    m = _mask()
    wg = np.random.default_rng(7).normal(size=SHAPE + (3,)).astype(np.float32)
    v, g = fn(r, w, mask=m)
    v3, g3 = fn(r, w, mask=m, warped_gradient=wg)
    assert v3 == v and g3.shape == SHAPE + (3,) and g3.dtype == np.float32
    np.testing.assert_allclose(g3, g[..., None] * wg, rtol=1e-6, atol=1e-12)


def test_bool_mask_equals_uint8_mask():
    r, w = _images()
    m = _mask()
    for fn, _ in METRICS.values():
        a, b = fn(r, w, mask=m), fn(r, w, mask=m.astype(bool))
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])


def test_lncc_flat_windows_count_zero():
    r, w = _images()
    flat = np.full(SHAPE, -700, np.float32)
    v, g = ops.lncc(r, flat)
    assert v == 0.0 and np.all(g == 0)
    v, g = ops.ncc(r, flat)
    assert v == 0.0 and np.all(g == 0)


@pytest.mark.parametrize("name", METRICS)
def test_errors(name):
    fn, _ = METRICS[name]
    r, w = _images()
    with pytest.raises(ValueError, match="mask"):
        fn(r, w, mask=np.zeros(SHAPE, np.uint8))
    with pytest.raises(TypeError, match="float32"):
        fn(r, w.astype(np.float64))
    with pytest.raises(TypeError, match="C-contiguous"):
        fn(r, np.asfortranarray(w))
    with pytest.raises(TypeError, match="uint8"):
        fn(r, w, mask=np.ones(SHAPE, np.int32))
    with pytest.raises(ValueError, match="shape"):
        fn(r, w[:-1].copy())
    with pytest.raises(ValueError, match="warped_gradient"):
        fn(r, w, warped_gradient=np.zeros(SHAPE + (2,), np.float32))


def test_native_layer_refuses_conversions():
    r, w = _images()
    with pytest.raises(TypeError):
        ops._native.metric_ssd(r, w.astype(np.float64), None, None)
    with pytest.raises(TypeError):
        ops._native.metric_ncc(r, w[:, ::2], None, None)
    with pytest.raises(ValueError, match="no nonzero"):
        ops._native.metric_ssd(r, w, np.zeros(SHAPE, np.uint8), None)


def test_option_errors():
    r, w = _images()
    with pytest.raises(ValueError, match="bins"):
        ops.mattes_mi(r, w, bins=3)
    with pytest.raises(ValueError, match="ref_range"):
        ops.mattes_mi(r, w, ref_range=(10, 10))
    with pytest.raises(ValueError, match="radius_vox"):
        ops.lncc(r, w, radius_vox=(1, -1, 1))


def test_threads_bitwise_identical():
    shape = (37, 24, 21)  # several fixed z-chunks for LNCC
    r, w = _images(8, shape)
    m = _mask(shape)
    wg = np.random.default_rng(2).normal(size=shape + (3,)).astype(np.float32)
    before = ops.get_num_threads()
    try:
        res = []
        for n in (1, 2, 3):
            ops.set_num_threads(n)
            res.append(
                [fn(r, w, mask=m, warped_gradient=wg) for fn, _ in METRICS.values()]
                + [fn(r, w) for fn, _ in METRICS.values()]
            )
    finally:
        ops.set_num_threads(before)
    for other in res[1:]:
        for (v0, g0), (v1, g1) in zip(res[0], other):
            assert v0 == v1
            np.testing.assert_array_equal(g0, g1)


@pytest.mark.parametrize("shape", [(21, 40, 400), (41, 33, 18)])
def test_lncc_many_tiles_matches_reference_and_finite_differences(shape):
    # wide rows force several row bands per plane, and nz > 16 several z-tiles in the kernel
    # (41 slices: 3 tiles of 16 become 4 of 11, an even count)
    r, w = _images(11, shape)
    m = np.ones(shape, np.uint8)
    m[:, :, :7] = 0
    fn = METRICS["lncc"][0]
    v, g = fn(r, w, mask=m)
    assert v == pytest.approx(lncc_ref(r, w, (1, 2, 2), m), rel=1e-6)
    h = 0.5
    for idx in [
        (15, 15, 10),
        (16, 16, 7),
        (17, 17, shape[2] - 1),
        (0, 31, 12),
        (20, 32, 17),
        (shape[0] - 1, 5, 9),
        (11, 3, 3),
    ]:
        wp, wm = w.copy(), w.copy()
        wp[idx] += h
        wm[idx] -= h
        fd = (fn(r, wp, mask=m)[0] - fn(r, wm, mask=m)[0]) / (2 * h)
        assert g[idx] == pytest.approx(fd, rel=1e-2, abs=1e-3 * float(np.abs(g).max()))


def test_real_ct_metrics_minimal_at_alignment(shared_data):
    """On real chest CT (cip-ct64), every metric is smallest when the images are aligned, and
    the fused gradient (dcost/dW * dW/dx) points back towards alignment after a shift."""
    sitk = pytest.importorskip("SimpleITK")
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data("cip-ct64", "ct-64.nrrd")))).astype(
        np.float32
    )
    nx = ct.shape[2]
    ref = np.ascontiguousarray(ct[:, :, 3 : nx - 3])
    mask = (ref > -950).astype(np.uint8)
    for name, (fn, _) in METRICS.items():
        if name == "mi":
            fn = lambda r, w, **kw: ops.mattes_mi(r, w, **kw)  # noqa: E731  default HU ranges
        costs = {}
        for s in (-2, -1, 0, 1, 2):
            w = np.ascontiguousarray(ct[:, :, 3 + s : nx - 3 + s])
            costs[s] = fn(ref, w, mask=mask)[0]
            if s in (-1, 1):
                gx = np.zeros(w.shape + (3,), np.float32)
                gx[..., 2] = np.gradient(w, axis=2)
                # moving the sample point by +d along x changes W by d * dW/dx: the derivative
                # of the cost along +x must have the sign of s (going further away costs more)
                deriv = float(fn(ref, w, mask=mask, warped_gradient=gx)[1].sum(dtype=np.float64))
                assert np.sign(deriv) == np.sign(s), (name, s, deriv)
        assert min(costs, key=costs.get) == 0, (name, costs)
        assert costs[-2] > costs[-1] > costs[0] < costs[1] < costs[2], (name, costs)
