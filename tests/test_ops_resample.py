"""resample_affine / resample_displacement against scipy.ndimage.map_coordinates references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ctreg import _native, ops
from ctreg.volume import affine_from_geometry

from reference import resample_affine_ref, resample_displacement_ref

ATOL = 2e-5  # float32 weights vs scipy's float64 on values of order 1


def _image(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _random_affine(rng, out_shape, in_shape):
    """Output index -> input index: small rotation/shear/scale around the centres."""
    lin = np.eye(3) + rng.normal(0, 0.15, (3, 3))
    lin *= (np.array(in_shape) / np.array(out_shape))[:, None]
    m = np.eye(4)
    m[:3, :3] = lin
    c_out = (np.array(out_shape) - 1) / 2
    c_in = (np.array(in_shape) - 1) / 2 + rng.normal(0, 1.5, 3)
    m[:3, 3] = c_in - lin @ c_out
    return m


def _volume_affine(rng, spacing):
    rot = Rotation.from_rotvec(rng.normal(0, 0.2, 3)).as_matrix()  # x, y, z world
    direction = rot @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return affine_from_geometry(rng.normal(0, 5, 3), spacing, direction)


def _smooth_field(rng, shape, amp_mm):
    import scipy.ndimage as ndi

    f = rng.standard_normal(tuple(shape) + (3,))
    f = ndi.gaussian_filter(f, (2, 2, 2, 0), mode="nearest")
    f *= amp_mm / np.abs(f).max()
    return f.astype(np.float32)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize(
    "in_shape,out_shape,seed",
    [
        ((12, 17, 23), (12, 17, 23), 0),
        ((9, 31, 14), (15, 11, 20), 1),
        ((1, 20, 25), (1, 22, 18), 2),
        ((30, 6, 2), (25, 8, 5), 3),
    ],
)
def test_resample_affine_matches_map_coordinates(order, in_shape, out_shape, seed):
    rng = np.random.default_rng(seed)
    img = _image(rng, in_shape)
    m = _random_affine(rng, out_shape, in_shape)
    if in_shape[0] == 1:  # a single slice: keep z on it exactly
        m[0] = [0, 0, 0, 0]
    out = ops.resample_affine(img, m, out_shape, order=order, fill=-7.5)
    ref = resample_affine_ref(img, m, out_shape, order=order, fill=-7.5)
    assert out.shape == tuple(out_shape) and out.dtype == np.float32
    outside = ref == -7.5
    assert 0.02 < outside.mean() < 0.98 or in_shape == out_shape  # both regimes exercised
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL if order else 0)


def test_resample_affine_identity_is_noop_including_borders():
    rng = np.random.default_rng(4)
    img = _image(rng, (7, 9, 11))
    for order in (0, 1):
        out = ops.resample_affine(img, np.eye(4), img.shape, order=order, fill=99.0)
        np.testing.assert_array_equal(out, img)


def test_resample_affine_exact_border_is_inside():
    img = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    # Output x index i samples input x = i - 1 + shift: column 1 -> x = shift, column 5 ->
    # x = 4 + shift (4 = n - 1).  Exactly on a border is inside; 1e-3 beyond it is outside.
    for shift, first_inside, last_inside in [
        (0.0, True, True),
        (1e-3, True, False),
        (-1e-3, False, True),
    ]:
        m = np.eye(4)
        m[2, 3] = -1.0 + shift
        out = ops.resample_affine(img, m, (2, 3, 7), order=1, fill=-1.0)
        ref = resample_affine_ref(img, m, (2, 3, 7), order=1, fill=-1.0)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        assert (out[:, :, 1] != -1).all() == first_inside
        assert (out[:, :, 5] != -1).all() == last_inside
        assert (out[:, :, [0, 6]] == -1).all()
        if shift == 0.0:
            np.testing.assert_array_equal(out[:, :, 1:6], img)
    m = np.eye(4)
    m[2, 3] = -1.0
    out = ops.resample_affine(img, m, (2, 3, 7), order=0, fill=-1.0)
    np.testing.assert_array_equal(out[:, :, 1:6], img)
    assert (out[:, :, [0, 6]] == -1).all()


def test_resample_affine_labels_nearest():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, (10, 12, 14)).astype(np.float32)
    m = _random_affine(rng, (13, 11, 9), labels.shape)
    out = ops.resample_affine(labels, m, (13, 11, 9), order=0, fill=255.0)
    ref = resample_affine_ref(labels, m, (13, 11, 9), order=0, fill=255.0)
    np.testing.assert_array_equal(out, ref)
    assert set(np.unique(out)) <= {0.0, 1.0, 2.0, 3.0, 255.0}
    assert (out == 255).any()


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resample_displacement_on_output_grid(order, seed):
    rng = np.random.default_rng(10 + seed)
    in_shape = tuple(int(v) for v in rng.integers(8, 20, 3))
    out_shape = tuple(int(v) for v in rng.integers(8, 20, 3))
    img = _image(rng, in_shape)
    img_aff = _volume_affine(rng, rng.uniform(0.6, 2.5, 3))
    out_aff = _volume_affine(rng, rng.uniform(0.6, 2.5, 3))
    # Put the output grid's centre near the image's centre so most voxels land inside.
    centre_in = img_aff[:3, :3] @ ((np.array(in_shape) - 1) / 2) + img_aff[:3, 3]
    out_aff[:3, 3] += centre_in - (
        out_aff[:3, :3] @ ((np.array(out_shape) - 1) / 2) + out_aff[:3, 3]
    )
    field = _smooth_field(rng, out_shape, 4.0)
    kw = dict(out_to_world=out_aff, world_to_image=np.linalg.inv(img_aff), order=order, fill=-3.0)
    out = ops.resample_displacement(img, field, **kw)
    ref = resample_displacement_ref(img, field, **kw)
    assert out.shape == out_shape
    assert 0.02 < (ref == -3.0).mean() < 0.9
    if order == 1:
        np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)
    else:
        assert (out == ref).mean() > 0.9999  # round-half ties may differ by float round-off


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("rotated", [False, True])  # row-wise field lines / general path
def test_resample_displacement_coarse_field(order, rotated):
    rng = np.random.default_rng(20)
    in_shape, out_shape, f_shape = (14, 16, 18), (15, 13, 17), (5, 6, 4)
    img = _image(rng, in_shape)
    img_aff = _volume_affine(rng, (2.0, 0.8, 0.9))
    out_aff = img_aff @ np.diag([0.9, 1.1, 1.0, 1.0])
    field = _smooth_field(rng, f_shape, 3.0)
    # Output index -> field index: coarser grid, shifted so that a border band clamps.
    f2o = np.diag([0.3, 0.45, 0.3, 1.0])
    f2o[:3, 3] = [-0.5, -0.7, 0.2]
    if rotated:
        f2o[:3, :3] = f2o[:3, :3] @ Rotation.from_rotvec([0.2, -0.1, 0.3]).as_matrix()
    kw = dict(
        out_to_world=out_aff,
        world_to_image=np.linalg.inv(img_aff),
        field_from_out=f2o,
        out_shape=out_shape,
        order=order,
        fill=0.5,
    )
    out = ops.resample_displacement(img, field, **kw)
    ref = resample_displacement_ref(img, field, **kw)
    if order == 1:
        np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)
    else:
        assert (out == ref).mean() > 0.9999
    # The clamped band matters: a field with its border zeroed gives a different answer.
    field2 = field.copy()
    field2[0] = 0
    assert not np.allclose(ops.resample_displacement(img, field2, **kw), out)


def test_resample_displacement_zero_field_is_noop():
    rng = np.random.default_rng(30)
    img = _image(rng, (6, 9, 8))
    aff = _volume_affine(rng, (2.5, 0.7, 0.7))
    zero = np.zeros(img.shape + (3,), np.float32)
    for order in (0, 1):
        out = ops.resample_displacement(
            img, zero, out_to_world=aff, world_to_image=np.linalg.inv(aff), order=order, fill=1e6
        )
        np.testing.assert_allclose(out, img, atol=1e-5)
        assert not (out == 1e6).any()  # borders survive the round-off of aff @ inv(aff)


def test_resample_displacement_translation_field():
    """A constant field of one voxel along x shifts the image by one column."""
    rng = np.random.default_rng(31)
    img = _image(rng, (4, 5, 6))
    aff = affine_from_geometry((10.0, -3.0, 7.0), (2.0, 0.5, 0.75))
    field = np.zeros(img.shape + (3,), np.float32)
    field[..., 0] = 0.75  # world x = array axis x here
    out = ops.resample_displacement(
        img, field, out_to_world=aff, world_to_image=np.linalg.inv(aff), fill=-100.0
    )
    np.testing.assert_allclose(out[:, :, :-1], img[:, :, 1:], atol=1e-5)
    assert (out[:, :, -1] == -100).all()


def test_resample_errors():
    img = np.zeros((4, 5, 6), np.float32)
    field = np.zeros((4, 5, 6, 3), np.float32)
    eye = np.eye(4)
    with pytest.raises(TypeError, match="image must be float32"):
        ops.resample_affine(img.astype(np.float64), eye, (4, 5, 6))
    with pytest.raises(TypeError, match="C-contiguous"):
        ops.resample_affine(np.zeros((4, 5, 12), np.float32)[:, :, ::2], eye, (4, 5, 6))
    with pytest.raises(ValueError, match="3 dimensions"):
        ops.resample_affine(np.zeros((4, 5), np.float32), eye, (4, 5, 6))
    with pytest.raises(ValueError, match="matrix must be a 4x4"):
        ops.resample_affine(img, np.eye(3), (4, 5, 6))
    with pytest.raises(ValueError, match="out_shape"):
        ops.resample_affine(img, eye, (4, 5))
    with pytest.raises(ValueError, match="order"):
        ops.resample_affine(img, eye, (4, 5, 6), order=3)
    kw = dict(out_to_world=eye, world_to_image=eye)
    with pytest.raises(TypeError, match="displacement must be float32"):
        ops.resample_displacement(img, field.astype(np.float64), **kw)
    with pytest.raises(ValueError, match="vector field"):
        ops.resample_displacement(img, np.zeros((4, 5, 6, 2), np.float32), **kw)
    with pytest.raises(ValueError, match="world_to_image must be a 4x4"):
        ops.resample_displacement(img, field, out_to_world=eye, world_to_image=eye[:3])
    with pytest.raises(ValueError, match="out_shape"):
        ops.resample_displacement(img, field, out_shape=(4, 5, 7), **kw)
    with pytest.raises(ValueError, match="out_shape is required"):
        ops.resample_displacement(img, field, field_from_out=eye, **kw)
    # The binding itself refuses silent conversions (noconvert).
    with pytest.raises(TypeError):
        _native.resample_affine(img.astype(np.float64), eye, [4, 5, 6], 1, 0.0)
    with pytest.raises(TypeError):
        _native.resample_displacement(img, field[:, :, ::2], eye, eye, None, None, 1, 0.0)


def test_portable_and_simd_paths_agree():
    """The AVX2 code paths (chosen at run time: row preparation of the samplers and compositions,
    demons forces) and the portable ones give equal bits."""
    rng = np.random.default_rng(40)
    img = _image(rng, (11, 13, 37))
    aff = _volume_affine(rng, (2.0, 0.7, 0.8))
    field = _smooth_field(rng, (12, 10, 41), 5.0)
    m = _random_affine(rng, (12, 10, 41), img.shape)
    outs = []
    try:
        for simd in (True, False):
            _native._set_simd_dispatch(simd)
            outs.append(
                [ops.resample_affine(img, m, (12, 10, 41), order=o, fill=-2.0) for o in (0, 1)]
                + [
                    ops.resample_displacement(
                        img,
                        field,
                        out_to_world=aff,
                        world_to_image=np.linalg.inv(aff),
                        order=o,
                        fill=-2.0,
                    )
                    for o in (0, 1)
                ]
                + list(
                    ops.demons_forces(
                        img,
                        img[::-1].copy(),
                        ops.gradient(img, (2.0, 0.7, 0.8)),
                        None,
                        spacing=(2.0, 0.7, 0.8),
                        mask=img > 0,
                        max_step_mm=0.1,
                    )[:1]
                )
                + [
                    ops.compose_fields(field, 0.5 * field, (2.0, 0.7, 0.8)),
                    ops.resample_composed(
                        img,
                        0.5 * field,
                        field,
                        (2.0, 0.7, 0.8),
                        out_to_world=aff,
                        world_to_image=np.linalg.inv(aff),
                        fill=-2.0,
                    ),
                ]
            )
    finally:
        _native._set_simd_dispatch(True)
    for a, b in zip(*outs):
        if a.ndim == 3:
            assert (a == -2.0).any() and (a != -2.0).any()
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(12, 10, 41), (1, 9, 13), (7, 1, 5)])
def test_resample_composed_equals_composing_then_resampling_bit_for_bit(shape):
    """One pass through (id + outer) ∘ (id + inner) = compose_fields then resample_displacement,
    exactly, including points that leave the fields' grid (clamped) and the image (fill)."""
    rng = np.random.default_rng(41)
    sp = (2.0, 0.7, 0.8)
    img = _image(rng, (11, 13, 37))
    aff = _volume_affine(rng, (1.8, 0.9, 0.7))
    inner = _smooth_field(rng, shape, 4.0)
    outer = _smooth_field(rng, shape, 6.0)
    frame = np.diag(list(sp) + [1.0])  # field components are mm along the grid's axes
    frame[:3, 3] = rng.normal(0, 2, 3)
    w2i = np.linalg.inv(aff) @ aff @ np.linalg.inv(frame) @ frame  # a non-trivial float matrix
    got = ops.resample_composed(
        img, inner, outer, sp, out_to_world=frame, world_to_image=w2i, fill=-7.0
    )
    want = ops.resample_displacement(
        img, ops.compose_fields(outer, inner, sp), out_to_world=frame, world_to_image=w2i, fill=-7.0
    )
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    pos_vox = np.indices(shape).transpose(1, 2, 3, 0) + inner / np.array(sp)
    assert ((pos_vox < 0) | (pos_vox > np.array(shape) - 1)).any()  # the clamp was exercised


def test_resample_composed_errors():
    rng = np.random.default_rng(42)
    img = _image(rng, (5, 6, 7))
    f = _smooth_field(rng, (4, 5, 6), 1.0)
    eye = np.eye(4)
    with pytest.raises(ValueError, match="outer"):
        ops.resample_composed(img, f, f[:3].copy(), (1, 1, 1), out_to_world=eye, world_to_image=eye)
    with pytest.raises(TypeError, match="inner"):
        ops.resample_composed(
            img, f.astype(np.float64), f, (1, 1, 1), out_to_world=eye, world_to_image=eye
        )
    with pytest.raises(ValueError, match="spacing"):
        ops.resample_composed(img, f, f, (1, 0, 1), out_to_world=eye, world_to_image=eye)


def test_nan_displacement_gives_fill():
    rng = np.random.default_rng(50)
    img = _image(rng, (5, 6, 7))
    field = np.zeros(img.shape + (3,), np.float32)
    field[2, 3, 4, 1] = np.nan
    field[0, 0, 0, 0] = np.inf
    out = ops.resample_displacement(
        img, field, out_to_world=np.eye(4), world_to_image=np.eye(4), fill=-9.0
    )
    assert out[2, 3, 4] == -9.0 and out[0, 0, 0] == -9.0
    mask = np.ones(img.shape, bool)
    mask[2, 3, 4] = mask[0, 0, 0] = False
    np.testing.assert_array_equal(out[mask], img[mask])


# -- warp_with_gradient: resampling fused with the resampled gradient -------------------------


def _wwg_case(rng, with_field):
    in_shape, out_shape = (15, 18, 21), (13, 16, 19)
    img = (rng.standard_normal(in_shape) * 100).astype(np.float32)
    img[:2] = -4096.0  # no data there: samples touching it fall below valid_min
    grads = [(rng.standard_normal(in_shape) * 30).astype(np.float32) for _ in range(3)]
    o2w = _volume_affine(rng, (1.7, 1.1, 1.2))
    w2i = np.linalg.inv(_volume_affine(rng, (1.6, 1.2, 1.1)))
    disp = _smooth_field(rng, out_shape, 3.0) if with_field else None
    return img, grads, disp, o2w, w2i, out_shape


@pytest.mark.parametrize("with_field", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_warp_with_gradient_matches_map_coordinates(with_field, seed):
    rng = np.random.default_rng(seed)
    img, grads, disp, o2w, w2i, shape = _wwg_case(rng, with_field)
    w, valid, g = ops.warp_with_gradient(
        img,
        grads,
        disp,
        out_to_world=o2w,
        world_to_image=w2i,
        out_shape=shape,
        fill=-4096.0,
        valid_min=-1000.5,
        invalid_value=-1000.0,
    )
    assert w.shape == valid.shape == shape and g.shape == shape + (3,)
    assert w.dtype == g.dtype == np.float32 and valid.dtype == np.uint8

    def ref(a, fill):
        if disp is None:
            return resample_affine_ref(a, w2i @ o2w, shape, order=1, fill=fill)
        return resample_displacement_ref(
            a, disp, out_to_world=o2w, world_to_image=w2i, order=1, fill=fill
        )

    rw = ref(img, -4096.0)
    ok = rw >= -1000.5
    assert 0.05 < ok.mean() < 0.95  # both kinds of voxel are present
    # voxels within float round-off of the validity threshold may go either way
    near = np.abs(rw - (-1000.5)) < 1e-2
    assert np.array_equal(valid.astype(bool)[~near], ok[~near])
    assert np.allclose(w[ok & ~near], rw[ok & ~near], atol=1e-3)
    assert np.all(w[~ok & ~near] == -1000.0)
    comps = [ref(c, 0.0) for c in grads]
    lin = w2i[:3, :3]
    expected = np.stack([sum(comps[c] * lin[c, a] for c in range(3)) for a in range(3)], axis=-1)
    assert np.allclose(g, expected, atol=2e-3)


@pytest.mark.parametrize("with_field", [True, False])
def test_warp_with_gradient_equals_four_resamplings_bit_for_bit(with_field):
    """The fused kernel does the same float operations as the resamplings it replaces."""
    rng = np.random.default_rng(7)
    img, grads, disp, o2w, w2i, shape = _wwg_case(rng, with_field)
    w, valid, g = ops.warp_with_gradient(
        img,
        grads,
        disp,
        out_to_world=o2w,
        world_to_image=w2i,
        out_shape=shape,
        fill=-4096.0,
        valid_min=-1000.5,
        invalid_value=-1000.0,
    )

    def one(a, fill):
        if disp is None:
            return _native.resample_affine(a, _native_compose(w2i, o2w), list(shape), 1, fill)
        return ops.resample_displacement(a, disp, out_to_world=o2w, world_to_image=w2i, fill=fill)

    rw = one(img, -4096.0)
    ok = rw >= np.float32(-1000.5)
    assert np.array_equal(valid, ok.astype(np.uint8))
    assert np.array_equal(w, np.where(ok, rw, np.float32(-1000.0)))
    comps = [one(c, 0.0) for c in grads]
    lin = w2i[:3, :3].astype(np.float32)
    expected = np.stack(
        [comps[0] * lin[0, a] + comps[1] * lin[1, a] + comps[2] * lin[2, a] for a in range(3)],
        axis=-1,
    )
    assert np.array_equal(g, expected)


def _native_compose(a, b):
    """a @ b summed in the order of the C++ compose() (the affine path composes in C++)."""
    out = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            s = 0.0
            for t in range(4):
                s += a[i, t] * b[t, j]
            out[i, j] = s
    return out


def test_warp_with_gradient_errors():
    rng = np.random.default_rng(0)
    img, grads, disp, o2w, w2i, shape = _wwg_case(rng, True)
    kw = dict(
        out_to_world=o2w,
        world_to_image=w2i,
        out_shape=shape,
        fill=0.0,
        valid_min=-1.0,
        invalid_value=0.0,
    )
    with pytest.raises(ValueError, match="three"):
        ops.warp_with_gradient(img, grads[:2], disp, **kw)
    with pytest.raises(ValueError, match=r"gradients\[1\] has shape"):
        ops.warp_with_gradient(img, [grads[0], grads[1][:-1].copy(), grads[2]], disp, **kw)
    with pytest.raises(TypeError, match="float32"):
        ops.warp_with_gradient(img, [grads[0].astype(np.float64), grads[1], grads[2]], disp, **kw)
    with pytest.raises(ValueError, match="output grid"):
        ops.warp_with_gradient(img, grads, disp[:-1].copy(), **kw)
    with pytest.raises(TypeError, match="C-contiguous"):
        ops.warp_with_gradient(img[:, ::2], grads, disp, **kw)
