"""The slab-by-slab full-resolution step (ctreg.fullres) against the whole-grid computation it
replaced, on 1, 2 and 4 threads."""

import numpy as np
import pytest

import ctreg
from ctreg import fullres, ops
from ctreg.level import SENTINEL
from ctreg.transforms import (
    AffineTransform,
    ReferenceFrame,
    frame_to_image_matrix,
    world_displacement,
)
from ctreg.volume import Volume


def _whole_grid(ref, flt, frame, transform, u, u_spacing, box, fill_hu):
    """The former pipeline code: everything on the whole reference grid at once."""
    start_mm = -np.array([s.start for s in box], float) * ref.spacing
    u_full = (
        np.zeros(ref.shape + (3,), np.float32)
        if u is None
        else ops.resample_field(
            u, tuple(u_spacing), ref.shape, tuple(ref.spacing), origin_mm=start_mm
        )
    )
    out_to_frame = np.diag(list(ref.spacing) + [1.0])
    to_index = frame_to_image_matrix(frame, transform, flt)
    source = (
        flt.array if flt.valid is None else np.where(flt.valid, flt.array, np.float32(SENTINEL))
    )
    warped = ops.resample_displacement(
        np.ascontiguousarray(source, dtype=np.float32),
        u_full,
        out_to_world=out_to_frame,
        world_to_image=to_index,
        order=1,
        fill=SENTINEL,
    )
    valid = warped > -2000.0
    np.copyto(warped, np.float32(fill_hu), where=~valid)
    disp = world_displacement(frame, transform, u_full)
    jac = ops.jacobian_determinant(u_full, tuple(ref.spacing)) * np.float32(
        np.linalg.det(transform.matrix)
    )
    return warped, valid, disp, jac


def _case(seed=0, nz=37):
    rng = np.random.default_rng(seed)
    aff = np.array([[0, 0, 0.9, -120.0], [0, 1.1, 0, -100.0], [2.0, 0, 0, -50.0], [0, 0, 0, 1.0]])
    arr = (rng.standard_normal((nz, 20, 22)) * 300).astype(np.float32)
    ref = Volume(arr, aff, None, {})
    valid = np.ones(arr.shape, bool)
    valid[:, :2] = False
    flt = Volume(np.roll(arr, 1, axis=2), aff.copy(), valid, {})
    frame = ReferenceFrame(ref)
    params = np.zeros(12)
    params[:3] = [2.0, -1.0, 3.0]
    params[3:6] = [0.02, -0.01, 0.03]
    transform = AffineTransform.from_params(params, np.array([-110.0, -90.0, -20.0]))
    box = (slice(3, nz - 2), slice(1, 19), slice(0, 22))
    u_spacing = (6.0, 4.0, 4.0)
    u = (rng.standard_normal((14, 6, 6, 3)) * 2.0).astype(np.float32)
    return ref, flt, frame, transform, u, u_spacing, box


@pytest.mark.parametrize("with_field", [True, False])
@pytest.mark.parametrize("slab", [1, 5, 16, 100])
def test_slabs_match_the_whole_grid(with_field, slab):
    ref, flt, frame, transform, u, u_spacing, box = _case()
    if not with_field:
        u = None
    w0, v0, d0, j0 = _whole_grid(ref, flt, frame, transform, u, u_spacing, box, -1024.0)
    warped, disp, jac = fullres.full_resolution(
        ref,
        flt,
        frame,
        transform,
        u,
        u_spacing,
        box,
        sentinel=SENTINEL,
        invalid_below=-2000.0,
        fill_hu=-1024.0,
        slab=slab,
        keep_jacobian=True,
    )
    np.testing.assert_allclose(warped.array, w0, atol=2e-3)  # HU: float rounding of the positions
    assert np.mean(warped.valid != v0) < 1e-3
    np.testing.assert_allclose(disp, d0, atol=2e-5)
    np.testing.assert_allclose(jac.map, j0, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(warped.affine, ref.affine)
    assert warped.array.dtype == disp.dtype == jac.map.dtype == np.float32


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("slab", [1, 5, 16, 100])
def test_kept_jacobian_parts_equal_the_whole_map(native, slab):
    """Without the map: the statistics (over the grid and inside the body) and the values on
    the report's planes equal those of the whole map, bit for bit."""
    from ctreg.report_planes import PLANES, plane_indices

    ref, flt, frame, transform, u, u_spacing, box = _case(seed=2)
    body = np.random.default_rng(3).random(ref.shape) > 0.3
    planes = {p: plane_indices(ref, p) for p in PLANES}
    kw = dict(sentinel=SENTINEL, invalid_below=-2000.0, fill_hu=-1024.0, slab=slab, native=native)
    kw.update(body=body, points=planes)
    args = (ref, flt, frame, transform, u, u_spacing, box)
    w_map, d_map, whole = fullres.full_resolution(*args, keep_jacobian=True, **kw)
    w, d, kept = fullres.full_resolution(*args, **kw)
    assert kept.map is None and whole.map is not None
    np.testing.assert_array_equal(w.array, w_map.array)
    np.testing.assert_array_equal(d, d_map)
    assert kept.statistics() == ops.jacobian_statistics_pair(whole.map, body)
    assert kept.statistics() == whole.statistics()
    assert kept.statistics()[0] == ops.jacobian_statistics(whole.map)
    values = kept.values()
    assert set(values) == set(PLANES)
    for p, idx in planes.items():
        k, j, i = (np.rint(idx[a]).astype(np.intp) for a in range(3))
        np.testing.assert_array_equal(values[p], whole.map[k, j, i])
        assert values[p].shape == idx.shape[1:] and values[p].dtype == np.float32


def test_jacobian_parts_reject_bad_points_and_body():
    with pytest.raises(ValueError, match="outside the grid"):
        fullres.JacobianParts((4, 5, 6), points={"p": np.array([[0, 4], [0, 0], [0, 0]])})
    with pytest.raises(ValueError, match="body has shape"):
        fullres.JacobianParts((4, 5, 6), body=np.ones((4, 5, 7), bool))


def test_slabs_are_the_same_on_1_2_and_4_threads():
    ref, flt, frame, transform, u, u_spacing, box = _case(seed=1)
    n = ctreg.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 4):
            ctreg.set_num_threads(t)
            w, d, j = fullres.full_resolution(
                ref,
                flt,
                frame,
                transform,
                u,
                u_spacing,
                box,
                sentinel=SENTINEL,
                invalid_below=-2000.0,
                fill_hu=-1024.0,
                keep_jacobian=True,
            )
            outs.append((w.array, w.valid, d, j.map))
    finally:
        ctreg.set_num_threads(n)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)
