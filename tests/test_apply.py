"""RegistrationResult.warp and the point mappings (ctreg.apply), against slow numpy references,
SimpleITK's resampler (skipped without it) and fields whose inverse is known."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg import RegistrationResult, Volume
from ctreg.transforms import AffineTransform, rotation_matrix

# -- a known map between two oblique, anisotropic grids ----------------------------------------


def _grid_affine(shape, spacing, angles, centre_xyz):
    d = rotation_matrix(*angles)[:, ::-1]  # columns: world directions of the z, y, x axes
    a = np.eye(4)
    a[:3, :3] = d * np.asarray(spacing, float)[None, :]
    half = (np.asarray(shape, float) - 1) / 2
    a[:3, 3] = np.asarray(centre_xyz, float) - a[:3, :3] @ half
    return a


def _world(affine, shape):
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


REF_SHAPE = (14, 20, 22)
FLT_SHAPE = (18, 24, 28)


def make_result(*, amplitude_mm=1.5, seed=0):
    """A RegistrationResult with a known displacement: T(p + w(p)) - p, w smooth."""
    rng = np.random.default_rng(seed)
    ref_aff = _grid_affine(REF_SHAPE, (2.5, 1.2, 1.0), (0.05, -0.03, 0.1), (10.0, -20.0, 30.0))
    flt_aff = _grid_affine(FLT_SHAPE, (2.0, 1.1, 0.9), (-0.04, 0.02, -0.06), (12.0, -19.0, 31.0))
    transform = AffineTransform(
        rotation_matrix(0.03, -0.02, 0.05) * 1.02,
        np.array([1.5, -1.0, 0.8]),
        np.array([10.0, -20.0, 30.0]),
    )
    p = _world(ref_aff, REF_SHAPE)
    w = np.stack([ndi.gaussian_filter(rng.normal(size=REF_SHAPE), 3.0) for _ in range(3)], -1)
    w *= amplitude_mm / np.abs(w).max()
    u = (transform.apply((p + w).reshape(-1, 3)).reshape(p.shape) - p).astype(np.float32)
    image = ndi.gaussian_filter(rng.normal(size=FLT_SHAPE), 2.0)
    image = (1000 * image / np.abs(image).max()).astype(np.float32)
    reference = Volume(np.zeros(REF_SHAPE, np.float32), ref_aff)
    floating = Volume(image, flt_aff)
    return RegistrationResult(
        reference=reference,
        floating=floating,
        warped=None,
        displacement=u,
        affine=transform,
        jacobian=None,
        report={},
    )


@pytest.fixture(scope="module")
def result():
    return make_result()


def _sample_coords(result, image_affine):
    """(z, y, x, 3) continuous image indices of every reference voxel after the map."""
    p = _world(result.grid_affine, result.displacement.shape[:3])
    q = p + result.displacement.astype(np.float64)
    inv = np.linalg.inv(image_affine)
    return q @ inv[:3, :3].T + inv[:3, 3]


def _inside(coords, shape, margin=0.0):
    hi = np.array(shape, float) - 1
    return np.all((coords >= margin - 1e-6) & (coords <= hi - margin + 1e-6), axis=-1)


# -- slow references ---------------------------------------------------------------------------


def trilinear_ref(image, coords, default):
    """Eight neighbours and their weights, written out."""
    img = image.astype(np.float64)
    out = np.full(coords.shape[:-1], float(default))
    ok = _inside(coords, image.shape)
    c = coords[ok]
    base = np.floor(c).astype(int)
    base = np.minimum(base, np.array(image.shape) - 2)  # the last centre: weight 1 on it
    f = c - base
    acc = np.zeros(len(c))
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                wgt = (
                    (f[:, 0] if dz else 1 - f[:, 0])
                    * (f[:, 1] if dy else 1 - f[:, 1])
                    * (f[:, 2] if dx else 1 - f[:, 2])
                )
                acc += wgt * img[base[:, 0] + dz, base[:, 1] + dy, base[:, 2] + dx]
    out[ok] = acc
    return out


def nearest_ref(image, coords, default):
    out = np.full(coords.shape[:-1], default, dtype=image.dtype)
    ok = _inside(coords, image.shape)
    idx = np.floor(coords[ok] + 0.5).astype(int)
    out[ok] = image[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out


def _cubic_bspline(t):
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def bspline_ref(image, coords, default):
    """Cubic B-spline: coefficients from scipy's prefilter, the 4x4x4 sum written out with the
    mirror boundary (index -i -> i, n-1+i -> n-1-i)."""
    coeffs = ndi.spline_filter(image.astype(np.float64), order=3, mode="mirror")
    out = np.full(coords.shape[:-1], float(default))
    ok = _inside(coords, image.shape)
    c = coords[ok]
    first = np.floor(c).astype(int) - 1
    acc = np.zeros(len(c))

    def mirror(i, n):
        period = 2 * (n - 1)
        i = np.abs(i) % period
        return np.where(i > n - 1, period - i, i)

    for a in range(4):
        for b in range(4):
            for e in range(4):
                iz, iy, ix = first[:, 0] + a, first[:, 1] + b, first[:, 2] + e
                wgt = (
                    _cubic_bspline(c[:, 0] - iz)
                    * _cubic_bspline(c[:, 1] - iy)
                    * _cubic_bspline(c[:, 2] - ix)
                )
                acc += (
                    wgt
                    * coeffs[
                        mirror(iz, image.shape[0]),
                        mirror(iy, image.shape[1]),
                        mirror(ix, image.shape[2]),
                    ]
                )
    out[ok] = acc
    return out


# -- warp --------------------------------------------------------------------------------------


def test_linear_warp_matches_slow_reference(result):
    coords = _sample_coords(result, result.floating.affine)
    assert 0.5 < _inside(coords, FLT_SHAPE).mean() < 1.0  # some voxels fall outside: tests both
    out = result.warp(result.floating, default=-1024.0)
    ref = trilinear_ref(result.floating.array, coords, -1024.0)
    assert isinstance(out, Volume) and np.allclose(out.affine, result.grid_affine)
    np.testing.assert_allclose(out.array, ref, atol=2e-3)
    np.testing.assert_array_equal(out.valid, _inside(coords, FLT_SHAPE))


def test_warp_ndarray_defaults_to_the_floating_grid_and_needs_an_affine_elsewhere(result):
    arr = result.floating.array
    np.testing.assert_array_equal(result.warp(arr), result.warp(result.floating).array)
    with pytest.raises(ValueError, match="affine="):
        result.warp(arr[:, :, :-1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint32, np.int64])
def test_nearest_keeps_label_values_and_dtype_exactly(result, dtype):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 7, size=FLT_SHAPE)
    offset = {
        np.uint8: 0,
        np.int16: -300,
        np.int32: 100_000_007,
        np.uint32: 4_000_000_001,
        np.int64: 2**40 + 3,
    }[dtype]
    labels = (base * (1 if np.dtype(dtype).itemsize == 1 else 1001) + offset).astype(dtype)
    coords = _sample_coords(result, result.floating.affine)
    out = result.warp(labels, interpolation="nearest", default=offset)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(out, nearest_ref(labels, coords, labels.dtype.type(offset)))
    assert set(np.unique(out)) <= set(np.unique(labels)) | {labels.dtype.type(offset)}


def test_nearest_on_a_volume_other_grid_and_bad_default(result):
    """A label Volume on its own grid (not the floating one) is placed by its affine."""
    aff = _grid_affine((16, 18, 20), (2.0, 1.5, 1.5), (0.0, 0.0, 0.2), (11.0, -20.0, 30.0))
    labels = np.random.default_rng(2).integers(0, 5, size=(16, 18, 20)).astype(np.float32)
    out = result.warp(Volume(labels, aff), interpolation="nearest")
    np.testing.assert_array_equal(out.array, nearest_ref(labels, _sample_coords(result, aff), 0.0))
    with pytest.raises(ValueError, match="default"):
        result.warp(labels.astype(np.uint8), interpolation="nearest", affine=aff, default=-1)


def test_bspline_matches_slow_reference_and_reproduces_cubics(result):
    coords = _sample_coords(result, result.floating.affine)
    out = result.warp(result.floating, interpolation="bspline", default=-5.0)
    ref = bspline_ref(result.floating.array, coords, -5.0)
    np.testing.assert_allclose(out.array, ref, atol=2e-3)
    # a cubic polynomial is reproduced exactly away from the mirrored borders
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in FLT_SHAPE], indexing="ij")
    poly = (0.01 * k**3 - 0.2 * j**2 + 0.5 * i * j + 3 * k).astype(np.float32)
    got = result.warp(poly, interpolation="bspline")
    inner = _inside(coords, FLT_SHAPE, margin=6.0)
    c = coords[inner]
    truth = 0.01 * c[:, 0] ** 3 - 0.2 * c[:, 1] ** 2 + 0.5 * c[:, 2] * c[:, 1] + 3 * c[:, 0]
    assert inner.sum() > 200
    np.testing.assert_allclose(got[inner], truth, atol=2e-3 * np.abs(truth).max())


def test_valid_mask_of_the_input_gives_default(result):
    valid = np.ones(FLT_SHAPE, bool)
    valid[:, :, : FLT_SHAPE[2] // 2] = False
    vol = Volume(result.floating.array, result.floating.affine, valid)
    coords = _sample_coords(result, vol.affine)
    for interp in ("linear", "nearest", "bspline"):
        out = result.warp(vol, interpolation=interp, default=-1000.0)
        # samples whose nearest voxel has no data are invalid, and hold the default
        near = np.floor(coords + 0.5).astype(int)
        inside = _inside(coords, FLT_SHAPE)
        no_data = np.zeros(inside.shape, bool)
        nz = near[inside]
        no_data[inside] = ~valid[nz[:, 0], nz[:, 1], nz[:, 2]]
        assert not out.valid[no_data].any(), interp
        assert np.all(out.array[~out.valid] == -1000.0)
        assert out.valid.sum() > 0.2 * out.valid.size


def test_unknown_interpolation_is_refused(result):
    with pytest.raises(ValueError, match="bspline"):
        result.warp(result.floating, interpolation="cubic")


def _sitk_image(array, affine):
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(array)
    cols = affine[:3, :3][:, ::-1]
    sp = np.linalg.norm(cols, axis=0)
    img.SetSpacing(tuple(sp))
    img.SetDirection(tuple((cols / sp).reshape(-1)))
    img.SetOrigin(tuple(affine[:3, 3]))
    return img


@pytest.mark.parametrize("interp", ["linear", "nearest", "bspline"])
def test_warp_matches_simpleitk_resampler(result, interp):
    sitk = pytest.importorskip("SimpleITK")
    image = result.floating.array
    if interp == "nearest":
        image = np.random.default_rng(3).integers(0, 9, size=FLT_SHAPE).astype(np.int16)
    field = _sitk_image(result.displacement.astype(np.float64), result.grid_affine)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    ref_img = _sitk_image(np.zeros(REF_SHAPE, np.float32), result.grid_affine)
    kind = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }[interp]
    expected = sitk.GetArrayFromImage(
        sitk.Resample(_sitk_image(image, result.floating.affine), ref_img, tx, kind, -7.0)
    )
    got = result.warp(image, interpolation=interp, default=-7)
    coords = _sample_coords(result, result.floating.affine)
    inner = _inside(coords, FLT_SHAPE, margin=0.51)  # ITK also samples the half voxel beyond
    assert inner.mean() > 0.5
    if interp == "nearest":
        assert got.dtype == np.int16
        # ties (exactly half-way) may break differently; none occur with this field
        np.testing.assert_array_equal(got[inner], expected[inner])
    else:
        np.testing.assert_allclose(got[inner], expected[inner], atol=5e-3 * np.abs(image).max())
    assert np.all(got[~_inside(coords, FLT_SHAPE)] == -7)


# -- points ------------------------------------------------------------------------------------


def test_transform_points_single_point_and_batch(result):
    pts = _world(result.grid_affine, REF_SHAPE)[3:5, 4:6, 5].reshape(-1, 3)
    batch = result.transform_points(pts)
    np.testing.assert_allclose(
        batch, pts + result.displacement[3:5, 4:6, 5].reshape(-1, 3), atol=1e-9
    )
    one = result.transform_points(pts[0])
    assert one.shape == (3,)
    np.testing.assert_allclose(one, batch[0])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        result.transform_points(np.zeros((4, 2)))


def _result_from_field(u, affine_transform=None):
    aff = _grid_affine(REF_SHAPE, (2.0, 1.5, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    transform = affine_transform or AffineTransform.identity()
    ref = Volume(np.zeros(REF_SHAPE, np.float32), aff)
    return RegistrationResult(
        reference=ref,
        floating=ref,
        warped=None,
        displacement=u,
        affine=transform,
        jacobian=None,
        report={},
    ), aff


def test_inverse_of_a_pure_affine_is_exact():
    transform = AffineTransform(
        rotation_matrix(0.1, -0.05, 0.2) * 1.05,
        np.array([4.0, -3.0, 2.0]),
        np.array([1.0, 2.0, 3.0]),
    )
    aff = _grid_affine(REF_SHAPE, (2.0, 1.5, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    p = _world(aff, REF_SHAPE)
    u = (transform.apply(p.reshape(-1, 3)).reshape(p.shape) - p).astype(np.float32)
    res, _ = _result_from_field(u, transform)
    q = transform.apply(p[2:12:3, 3:15:4, 4:18:5].reshape(-1, 3))
    back, err = res.inverse_transform_points(q, return_error=True)
    truth = transform.inverse().apply(q)
    np.testing.assert_allclose(back, truth, atol=1e-4)
    assert err.max() < 1e-4


def test_inverse_of_composed_shears_is_known_exactly():
    """phi(x, y, z) = (x + A(y, z), y, z + B(y)) for any interpolated A, B is one-to-one with
    the inverse y = y', z = z' - B(y'), x = x' - A(y, z): mapping grid points forward and back
    must return them."""
    aff = _grid_affine(REF_SHAPE, (2.0, 1.5, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    p = _world(aff, REF_SHAPE)
    b = 2.0 * np.sin(p[..., 1] / 6.0)
    a = 3.0 * np.cos((p[..., 2] + b) / 5.0)
    u = np.stack([a, np.zeros_like(a), b], -1).astype(np.float32)
    res, _ = _result_from_field(u)
    q = res.transform_points(p[3:11, 4:16, 5:17].reshape(-1, 3))
    back, err = res.inverse_transform_points(q, return_error=True)
    np.testing.assert_allclose(back, p[3:11, 4:16, 5:17].reshape(-1, 3), atol=1e-3)
    assert err.max() < 1e-4
    one, e1 = res.inverse_transform_points(q[7], return_error=True)
    assert one.shape == (3,) and isinstance(e1, float)
    np.testing.assert_allclose(one, back[7], atol=1e-9)


def test_inverse_reports_error_where_the_field_folds(caplog):
    aff = _grid_affine(REF_SHAPE, (2.0, 1.5, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    p = _world(aff, REF_SHAPE)
    u = np.zeros(REF_SHAPE + (3,), np.float32)
    u[..., 2] = 8.0 * np.sin(p[..., 2] / 2.0)  # |du/dz| = 4 > 1: folds
    res, _ = _result_from_field(u)
    q = p[4:10, 5:10, 6:12].reshape(-1, 3)
    with caplog.at_level(logging.WARNING, logger="ctreg"):
        _, err = res.inverse_transform_points(q, return_error=True, max_iterations=30)
    assert err.max() > 0.01
    assert "inverse-consistency" in caplog.text


def test_loaded_style_jacobian_agrees_with_the_engine_formula(result):
    from ctreg.apply import world_jacobian

    # for a pure affine the determinant is det(A) everywhere
    p = _world(result.grid_affine, REF_SHAPE)
    t = result.affine
    u = (t.apply(p.reshape(-1, 3)).reshape(p.shape) - p).astype(np.float32)
    jac = world_jacobian(u, result.grid_affine)
    np.testing.assert_allclose(jac, np.linalg.det(t.matrix), atol=1e-4)
