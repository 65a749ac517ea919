import numpy as np
import pytest

from ctreg.errors import GeometryError
from ctreg.transforms import (
    AffineTransform,
    ReferenceFrame,
    affine_from_params,
    rotation_matrix,
    world_displacement,
)
from ctreg.volume import Volume, affine_from_geometry


def test_zero_params_are_identity():
    a, t = affine_from_params(np.zeros(12))
    assert np.allclose(a, np.eye(3)) and np.allclose(t, 0)


def test_rotation_is_proper_and_matches_known_angle():
    r = rotation_matrix(0.1, -0.2, 0.3)
    assert np.allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    rz = rotation_matrix(0, 0, np.pi / 2)
    assert np.allclose(rz @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_affine_inverse_and_homogeneous_agree():
    rng = np.random.default_rng(1)
    t = AffineTransform.from_params(rng.normal(0, 20, 12), centre=rng.normal(0, 50, 3))
    pts = rng.normal(0, 100, (50, 3))
    assert np.allclose(t.inverse().apply(t.apply(pts)), pts, atol=1e-9)
    h = np.c_[pts, np.ones(len(pts))] @ t.homogeneous().T
    assert np.allclose(h[:, :3], t.apply(pts), atol=1e-9)


def test_scaled_params_move_points_by_about_a_millimetre_per_unit():
    # one unit of a rotation parameter moves a point 100 mm from the centre by ~1 mm
    t = AffineTransform.from_params(np.r_[0, 0, 0, 0, 0, 1.0], centre=np.zeros(3))
    moved = t.apply(np.array([[100.0, 0, 0]]))[0]
    assert abs(np.linalg.norm(moved - [100, 0, 0]) - 1.0) < 0.01


def test_world_displacement_matches_pointwise_definition():
    rng = np.random.default_rng(2)
    # a flipped-x, anisotropic grid: frame axes differ from world axes
    direction = np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]])
    vol = Volume(
        np.zeros((4, 5, 6), np.float32),
        affine_from_geometry((10, -20, 30), (2.5, 0.7, 0.9), direction),
    )
    frame = ReferenceFrame(vol)
    u = rng.normal(0, 3, vol.shape + (3,)).astype(np.float32)
    t = AffineTransform.from_params(rng.normal(0, 5, 12), centre=np.array([1.0, 2.0, 3.0]))
    got = world_displacement(frame, t, u)
    idx = np.argwhere(np.ones(vol.shape, bool))
    p = vol.index_to_world(idx)
    frame_vec = u[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float64)
    expected = t.apply(p + frame_vec @ direction.T) - p
    assert np.allclose(got.reshape(-1, 3), expected, atol=1e-3)


def test_frame_round_trip():
    direction = np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]])
    vol = Volume(
        np.zeros((3, 3, 3), np.float32), affine_from_geometry((1, 2, 3), (2, 1, 1), direction)
    )
    frame = ReferenceFrame(vol)
    idx = np.array([[1.0, 2.0, 0.5]])
    r = idx * vol.spacing  # frame point of this index
    p = (np.c_[r, [1.0]] @ frame.frame_to_world_matrix().T)[:, :3]
    assert np.allclose(p, vol.index_to_world(idx))
    assert np.allclose(frame.points_to_frame(p), r)


def test_non_orthonormal_grid_is_refused():
    aff = np.eye(4)
    aff[:3, :3] = [[0, 0.3, 1], [0, 1, 0], [1, 0, 0]]
    with pytest.raises(GeometryError, match="orthonormal"):
        ReferenceFrame(Volume(np.zeros((2, 2, 2), np.float32), aff))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_matrix_derivatives_match_finite_differences(seed):
    from ctreg.transforms import affine_matrix_derivatives

    rng = np.random.default_rng(seed)
    params = np.concatenate([rng.normal(0, 5, 3), rng.normal(0, 30, 9)])  # rotations up to ~0.5 rad
    d = affine_matrix_derivatives(params)
    assert d.shape == (12, 3, 3)
    assert np.all(d[:3] == 0)  # translations do not change the matrix
    eps = 1e-4
    for m in range(12):
        hi, lo = params.copy(), params.copy()
        hi[m] += eps
        lo[m] -= eps
        fd = (affine_from_params(hi)[0] - affine_from_params(lo)[0]) / (2 * eps)
        assert np.allclose(d[m], fd, atol=1e-8), m
    assert np.array_equal(affine_matrix_derivatives(params, 6), d[:6])
