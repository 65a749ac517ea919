"""ctreg.synthetic: the known breathing-like deformation and its exact landmark pairs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg.errors import CTRegError
from ctreg.masks import lung_mask
from ctreg.synthetic import BreathingMotion, make_breathing_pair
from ctreg.volume import Volume, affine_from_geometry

from conftest import shared_path


def _read_nrrd(path) -> Volume:
    """Independent of ctreg.io: SimpleITK image -> Volume (array (z, y, x), LPS affine)."""
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    direction_xyz_cols = np.array(img.GetDirection()).reshape(3, 3)  # columns: i, j, k axes
    return Volume(
        arr,
        affine_from_geometry(img.GetOrigin(), img.GetSpacing()[::-1], direction_xyz_cols[:, ::-1]),
    )


@pytest.fixture(scope="module")
def ct64() -> Volume:
    return _read_nrrd(shared_path("cip-ct64", "ct-64.nrrd"))


@pytest.fixture(scope="module")
def pair(ct64):
    return make_breathing_pair(ct64, BreathingMotion(), n_landmarks=300)


def _trilinear(volume: Volume, points_xyz: np.ndarray) -> np.ndarray:
    return ndi.map_coordinates(
        volume.array.astype(np.float64),
        volume.world_to_index(points_xyz).T,
        order=1,
        mode="nearest",
    )


# -- landmarks ---------------------------------------------------------------------------------


def test_landmarks_are_many_spread_and_inside_the_lungs(pair):
    p, q = pair.reference_points, pair.floating_points
    assert p.shape == q.shape and p.shape[0] >= 200
    # q are voxel centres of the floating grid, inside its valid data and its lungs
    qi = pair.floating.world_to_index(q)
    assert np.abs(qi - np.rint(qi)).max() < 1e-6
    qi = np.rint(qi).astype(int)
    assert pair.floating.valid[qi[:, 0], qi[:, 1], qi[:, 2]].all()
    assert lung_mask(pair.floating)[qi[:, 0], qi[:, 1], qi[:, 2]].all()
    # p inside the reference lungs
    pi = np.rint(pair.reference.world_to_index(p)).astype(int)
    assert pair.lung_mask[pi[:, 0], pi[:, 1], pi[:, 2]].all()
    # spread out: no two landmarks share a voxel, and they cover most of the lung's extent
    assert len({tuple(r) for r in qi}) == len(qi)
    lung_idx = np.argwhere(pair.lung_mask)
    lung_world = pair.reference.index_to_world(lung_idx[:: max(1, len(lung_idx) // 5000)])
    extent = lung_world.max(axis=0) - lung_world.min(axis=0)
    assert np.all(p.max(axis=0) - p.min(axis=0) > 0.7 * extent)
    # the pool prefers bright structure over parenchyma
    lung_hu = pair.reference.array[pair.lung_mask]
    flo_hu = pair.floating.array[qi[:, 0], qi[:, 1], qi[:, 2]]
    assert np.median(flo_hu) > np.median(lung_hu) + 20


def test_landmark_intensities_match_exactly(pair):
    """F at q_i (a voxel value) equals R interpolated at p_i: the pairs correspond exactly."""
    qi = np.rint(pair.floating.world_to_index(pair.floating_points)).astype(int)
    f_at_q = pair.floating.array[qi[:, 0], qi[:, 1], qi[:, 2]]
    r_at_p = _trilinear(pair.reference, pair.reference_points)
    np.testing.assert_allclose(f_at_q, r_at_p, atol=1e-2)
    # ... and a wrong correspondence (a 3 mm shift) does not match: the check has teeth
    shifted = _trilinear(pair.reference, pair.reference_points + [0.0, 0.0, 3.0])
    assert np.mean(np.abs(f_at_q - shifted)) > 5.0


def test_true_transform_points_inverts_the_map(pair, ct64):
    q = pair.true_transform_points(pair.reference_points)
    assert np.abs(q - pair.floating_points).max() < 1e-3
    # round trip on random points all over the grid (outside the lungs too)
    rng = np.random.default_rng(1)
    lo, hi = ct64.bounds()
    p = rng.uniform(lo, hi, size=(500, 3))
    np.testing.assert_allclose(
        pair.floating_to_reference_points(pair.true_transform_points(p)), p, atol=1e-4
    )
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        pair.true_transform_points(np.zeros(3))


def test_floating_image_is_reference_through_the_map(pair):
    """Fast slab path vs the slow (N, 3) path at random voxels: F(q) = R(phi(q))."""
    rng = np.random.default_rng(2)
    flo = pair.floating
    idx = np.stack([rng.integers(0, n, 400) for n in flo.shape], axis=1)
    q = flo.index_to_world(idx)
    p = pair.floating_to_reference_points(q)
    ridx = pair.reference.world_to_index(p)
    inside = np.all((ridx >= 0) & (ridx <= np.asarray(pair.reference.shape) - 1), axis=1)
    expected = np.where(inside, _trilinear(pair.reference, p), -1000.0)
    got = flo.array[idx[:, 0], idx[:, 1], idx[:, 2]]
    np.testing.assert_allclose(got, expected, atol=1e-2)
    np.testing.assert_array_equal(flo.valid[idx[:, 0], idx[:, 1], idx[:, 2]], inside)
    assert inside.sum() > 200 and (~inside).sum() > 0
    assert np.all(flo.array[~flo.valid] == -1000.0)


def test_map_round_trips_through_a_dict(pair):
    import json

    from ctreg.synthetic import BreathingMap

    params = json.loads(json.dumps(pair.true_map.to_dict()))
    again = BreathingMap.from_dict(params)
    np.testing.assert_array_equal(
        again.inverse(pair.reference_points), pair.true_transform_points(pair.reference_points)
    )
    with pytest.raises(ValueError, match="z_apex"):
        BreathingMap.from_dict({k: v for k, v in params.items() if k != "z_apex"})


def test_true_displacement_field_matches_points(pair):
    u = pair.true_displacement()
    assert u.shape == pair.reference.shape + (3,) and u.dtype == np.float32
    rng = np.random.default_rng(3)
    idx = np.stack([rng.integers(0, n, 50) for n in pair.reference.shape], axis=1)
    p = pair.reference.index_to_world(idx)
    np.testing.assert_allclose(
        p + u[idx[:, 0], idx[:, 1], idx[:, 2]], pair.true_transform_points(p), atol=1e-3
    )


# -- the map: exact values, Jacobian, size -------------------------------------------------------


def test_pure_diaphragm_and_translation_closed_form(ct64):
    motion = BreathingMotion(
        diaphragm_mm=12.0,
        ap_expansion=0.0,
        lateral_expansion=0.0,
        translation_mm=(1.0, -2.0, 3.0),
        rotation_deg=(0, 0, 0),
        perturbation_mm=0.0,
    )
    pr = make_breathing_pair(ct64, motion, n_landmarks=50)
    lungs = np.argwhere(pr.lung_mask)
    z_lung = pr.reference.index_to_world(lungs)[:, 2]
    z_base, z_apex = z_lung.min(), z_lung.max()
    lo, hi = ct64.bounds()
    # below the base: q -> q + t + (0, 0, 12); above the apex (after translation): q -> q + t
    below = np.array([[0.0, -100.0, z_base - 20.0], [30.0, -150.0, z_base - 5.0]])
    above = np.array([[0.0, -100.0, z_apex + 10.0]]) - [0, 0, 3.0]
    np.testing.assert_allclose(
        pr.floating_to_reference_points(below), below + [1, -2, 15], atol=1e-9
    )
    np.testing.assert_allclose(
        pr.floating_to_reference_points(above), above + [1, -2, 3], atol=1e-9
    )
    # in between: monotone cosine profile, largest displacement == diaphragm + translation
    q = np.column_stack([np.zeros(200), np.full(200, -100.0), np.linspace(lo[2], hi[2], 200)])
    dz = pr.floating_to_reference_points(q)[:, 2] - q[:, 2] - 3.0
    assert dz.max() == pytest.approx(12.0, abs=1e-9) and dz.min() == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(dz) <= 1e-12)
    disp = pr.reference_points - pr.floating_points
    assert np.abs(disp[:, :2] - [1, -2]).max() < 1e-9


def test_pure_rotation_about_the_volume_centre(ct64):
    """Rotation about x, then y, then z (extrinsic), about the volume centre: vs scipy's
    Rotation."""
    from scipy.spatial.transform import Rotation

    motion = BreathingMotion(
        diaphragm_mm=0.0,
        ap_expansion=0.0,
        lateral_expansion=0.0,
        translation_mm=(0, 0, 0),
        rotation_deg=(10.0, -15.0, 20.0),
        perturbation_mm=0.0,
    )
    pr = make_breathing_pair(ct64, motion, n_landmarks=20)
    lo, hi = ct64.bounds()
    centre = 0.5 * (lo + hi)
    rot = Rotation.from_euler("xyz", [10.0, -15.0, 20.0], degrees=True).as_matrix()
    q = np.random.default_rng(6).uniform(lo, hi, size=(50, 3))
    np.testing.assert_allclose(
        pr.floating_to_reference_points(q), (q - centre) @ rot.T + centre, atol=1e-9
    )
    np.testing.assert_allclose(
        pr.reference_points, (pr.floating_points - centre) @ rot.T + centre, atol=1e-9
    )


def test_jacobian_positive_and_analytic(pair, ct64):
    rng = np.random.default_rng(4)
    lo, hi = ct64.bounds()
    q = rng.uniform(lo - 20, hi + 20, size=(2000, 3))
    det = pair.true_map.jacobian_det(q)
    # central finite differences of the closed-form map
    h = 1e-3
    jac = np.empty((q.shape[0], 3, 3))
    for c in range(3):
        e = np.zeros(3)
        e[c] = h
        jac[:, :, c] = (
            pair.floating_to_reference_points(q + e) - pair.floating_to_reference_points(q - e)
        ) / (2 * h)
    np.testing.assert_allclose(det, np.linalg.det(jac), rtol=1e-6, atol=1e-6)
    assert det.min() > 0.5 and det.max() < 1.5
    # breathing changes volume (it is not rigid); the reference->floating determinant is 1 / det
    assert det.max() - det.min() > 0.03
    p = pair.floating_to_reference_points(q[:10])
    np.testing.assert_allclose(pair.true_jacobian_determinant(p), 1.0 / det[:10], rtol=1e-6)


def test_strong_breathing_is_fold_free(ct64):
    motion = BreathingMotion(
        diaphragm_mm=40.0,
        ap_expansion=0.2,
        lateral_expansion=-0.1,
        perturbation_mm=5.0,
        perturbation_wavelength_mm=80.0,
        seed=5,
    )
    pr = make_breathing_pair(ct64, motion, n_landmarks=100)
    idx = np.stack(
        np.meshgrid(*[np.arange(0, n, 3) for n in ct64.shape], indexing="ij"), -1
    ).reshape(-1, 3)
    q = ct64.index_to_world(idx)
    assert pr.true_map.jacobian_det(q).min() > 0.1
    disp = np.linalg.norm(pr.floating_to_reference_points(q) - q, axis=1)
    # diaphragm + rigid part dominate: the largest displacement is of that size, not much more
    assert 40.0 < disp.max() < 40.0 + 8.7 + 5.0 * 3 + 0.2 * 300 + 0.1 * 300 + 5
    assert np.abs(pr.true_transform_points(pr.reference_points) - pr.floating_points).max() < 1e-3


def test_default_displacement_size(pair):
    """Defaults: 15 mm diaphragm + |t| = 7.1 mm + 3-4 deg rotation + 4 % AP: 10-35 mm at
    landmarks."""
    d = np.linalg.norm(pair.reference_points - pair.floating_points, axis=1)
    assert 15.0 < d.max() < 35.0
    assert d.min() > 2.0
    dz = (pair.reference_points - pair.floating_points)[:, 2]
    assert dz.max() - dz.min() > 8.0  # the diaphragm moves the base more than the apex


# -- options, grids, errors ----------------------------------------------------------------------


def test_seeded_and_deterministic(ct64, pair):
    again = make_breathing_pair(ct64, BreathingMotion(), n_landmarks=300)
    np.testing.assert_array_equal(again.reference_points, pair.reference_points)
    np.testing.assert_array_equal(again.floating.array, pair.floating.array)
    other = make_breathing_pair(ct64, BreathingMotion(seed=1), n_landmarks=300)
    assert not np.array_equal(other.floating.array, pair.floating.array)


def test_floating_grid_option(ct64):
    sp = ct64.spacing * np.array([1.5, 1.2, 1.2])
    shape = tuple(int(s) for s in (np.asarray(ct64.shape) / [1.5, 1.2, 1.2]).astype(int))
    grid = Volume(
        np.zeros(shape, np.float32),
        affine_from_geometry(ct64.origin + [5.0, -3.0, 10.0], sp, ct64.direction),
    )
    pr = make_breathing_pair(ct64, BreathingMotion(seed=2), n_landmarks=150, floating_grid=grid)
    assert pr.floating.shape == shape and np.allclose(pr.floating.affine, grid.affine)
    assert pr.reference is ct64 and pr.reference_points.shape[0] >= 100
    qi = np.rint(pr.floating.world_to_index(pr.floating_points)).astype(int)
    np.testing.assert_allclose(
        pr.floating.array[qi[:, 0], qi[:, 1], qi[:, 2]],
        _trilinear(ct64, pr.reference_points),
        atol=1e-2,
    )
    assert np.abs(pr.true_transform_points(pr.reference_points) - pr.floating_points).max() < 1e-3


def test_padding_in_the_reference_is_not_data(ct64):
    arr = ct64.array.copy()
    valid = np.ones(arr.shape, bool)
    valid[:, :, :6] = False
    arr[~valid] = -3024.0
    padded = Volume(arr, ct64.affine, valid)
    pr = make_breathing_pair(padded, BreathingMotion(), n_landmarks=100)
    assert pr.floating.array.min() >= -1024.0  # padding never leaks into the floating scan
    assert (~pr.floating.valid).sum() > (
        ~make_breathing_pair(ct64, n_landmarks=10).floating.valid
    ).sum()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"diaphragm_mm": 80.0}, "diaphragm_mm"),
        ({"diaphragm_mm": float("nan")}, "diaphragm_mm"),
        ({"ap_expansion": 0.5}, "ap_expansion"),
        ({"lateral_expansion": "x"}, "lateral_expansion"),
        ({"translation_mm": (1.0, 2.0)}, "translation_mm"),
        ({"rotation_deg": (0.0, 45.0, 0.0)}, "rotation_deg"),
        ({"perturbation_mm": -1.0}, "perturbation_mm"),
        (
            {"perturbation_mm": 10.0, "perturbation_wavelength_mm": 40.0},
            "perturbation_wavelength_mm",
        ),
        ({"seed": -1}, "seed"),
    ],
)
def test_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BreathingMotion(**kwargs)


def test_options_are_frozen_keyword_only():
    m = BreathingMotion(translation_mm=[1, 2, 3])
    assert m.translation_mm == (1.0, 2.0, 3.0)
    with pytest.raises(Exception):
        m.diaphragm_mm = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        BreathingMotion(15.0)  # type: ignore[misc]


def _phantom(air_height_vox: int) -> Volume:
    arr = np.full((40, 40, 40), -1000.0, np.float32)
    arr[2:38, 4:36, 4:36] = 40.0  # body
    z0 = 20 - air_height_vox // 2
    arr[z0 : z0 + air_height_vox, 10:30, 8:18] = -850.0  # one "lung"
    return Volume(arr, affine_from_geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))


def test_errors_name_the_problem():
    with pytest.raises(CTRegError, match="no lungs"):
        make_breathing_pair(Volume(np.zeros((20, 20, 20), np.float32), np.eye(4)))
    with pytest.raises(CTRegError, match="diaphragm_mm"):
        make_breathing_pair(_phantom(10), BreathingMotion(diaphragm_mm=15.0))
    ok = make_breathing_pair(
        _phantom(30),
        BreathingMotion(diaphragm_mm=5.0, rotation_deg=(0, 0, 0), translation_mm=(0, 0, 0)),
        n_landmarks=20,
    )
    assert 0 < ok.reference_points.shape[0] <= 20
    with pytest.raises(ValueError, match="n_landmarks"):
        make_breathing_pair(_phantom(30), n_landmarks=0)
    with pytest.raises(TypeError, match="motion"):
        make_breathing_pair(_phantom(30), {"diaphragm_mm": 3})
