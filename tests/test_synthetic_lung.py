"""ctreg.synthetic_lung: the truth's geometry, sliding, density, determinism (fast: 64^3 CIP scan
and the phantom of test_lungs)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from conftest import shared_path
from ctreg import read_volume
from ctreg.synthetic_lung import SyntheticLungError, make_lung_pair
from test_lungs import phantom


@pytest.fixture(scope="module")
def cip():
    return read_volume(shared_path("cip-ct64", "ct-64.nrrd"))


def test_truth_geometry_exact(cip):
    pr = make_lung_pair(cip, seed=1, noise_hu=0, density="none", slice_mm=None, crop_mm=8)
    f = pr.floating
    assert pr.info["n_landmarks"] == 100 and pr.info["max_inverse_residual_mm"] <= 0.01
    # landmarks: phi(q) = p, and the reference -> floating map gives q back
    np.testing.assert_allclose(pr.motion.forward(pr.landmarks_flt), pr.landmarks_ref, atol=0.01)
    np.testing.assert_allclose(
        pr.true_transform_points(pr.landmarks_ref), pr.landmarks_flt, atol=0.01
    )
    # the floating image is R(phi(q)) at every floating voxel centre
    k = np.argwhere(np.ones(f.shape, bool))[::37]
    p = pr.motion.forward(f.index_to_world(k.astype(float)))
    ri = cip.world_to_index(p).T
    ok = np.all((ri >= 0) & (ri <= np.array(cip.shape)[:, None] - 1), axis=0)
    np.testing.assert_allclose(
        f.array[tuple(k[ok].T)], ndi.map_coordinates(cip.array, ri[:, ok], order=1), atol=1e-3
    )
    # the landmarks sit on matching image features (smoothed HU agree; an 8 mm error does not)
    fs, rs = ndi.gaussian_filter(f.array, 1.0), ndi.gaussian_filter(cip.array, 1.0)
    rv = ndi.map_coordinates(rs, cip.world_to_index(pr.landmarks_ref).T, order=1)
    fv = ndi.map_coordinates(fs, f.world_to_index(pr.landmarks_flt).T, order=1)
    fw = ndi.map_coordinates(fs, f.world_to_index(pr.landmarks_flt + [0, 0, 8]).T, order=1)
    assert np.median(np.abs(fv - rv)) < 0.5 * np.median(np.abs(fw - rv))
    assert np.corrcoef(fv, rv)[0, 1] > 0.98


def test_sliding_density_fov_slices(cip):
    pr = make_lung_pair(cip, seed=2, diaphragm_mm=30)
    m = pr.motion
    f = pr.floating
    assert f.spacing[0] == pytest.approx(2.5) and f.shape[1] < cip.shape[1]
    q = f.world_coordinates().reshape(-1, 3)
    vx, vy, vz, s = m.components(q[:, 0], q[:, 1], q[:, 2])
    w, _ = m._w(q[:, 2])
    inner, outer = s > 0.999, s < 0.001
    np.testing.assert_allclose(vz[inner], m.d * w[inner], atol=0.05)
    np.testing.assert_allclose(vz[outer], m.d * w[outer] ** 3, atol=0.05)
    mid = (w > 0.3) & (w < 0.7)
    assert (inner & mid).any() and (outer & mid).any()
    jump = m.d * (w - w**3)
    assert jump[mid].min() > 0.2 * m.d  # sliding of >= 6 mm at mid height
    # the pleural transition is ~2 mm: along x through the lateral wall at mid height
    z = 0.5 * (m.z_base + m.z_apex)
    lungs_idx = np.argwhere(pr.reference_lungs)
    centre = cip.index_to_world(lungs_idx.mean(0)[None])[0]
    xs = np.linspace(m.x_c, m.x_c + 250, 2501)
    sl = m.lung_weight(xs, np.full_like(xs, centre[1]), np.full_like(xs, z))
    edge = np.flatnonzero(sl > 0.5)
    last = edge[-1]
    i99 = last - np.argmax(sl[last::-1] > 0.99)
    i01 = last + np.argmax(sl[last:] < 0.01)
    assert 0 < xs[i01] - xs[i99] <= max(3.0, 1.2 * cip.spacing[2])  # ~2 mm, or one coarse voxel
    # density: the inhale lungs are darker (mass preserving), by the Jacobian
    fl = s.reshape(f.shape) > 0.999
    assert f.array[fl].mean() > -1000
    assert f.array[fl].mean() < cip.array[pr.reference_lungs].mean() - 20


def test_deterministic_and_seeded(cip):
    a = make_lung_pair(cip, seed=3, n_landmarks=20)
    b = make_lung_pair(cip, seed=3, n_landmarks=20)
    c = make_lung_pair(cip, seed=4, n_landmarks=20)
    assert np.array_equal(a.floating.array, b.floating.array)
    assert np.array_equal(a.landmarks_ref, b.landmarks_ref)
    assert not np.array_equal(a.floating.array, c.floating.array)


def test_phantom_and_errors():
    vol, lungs, _ = phantom()
    pr = make_lung_pair(vol, seed=0, lungs=lungs, n_landmarks=10)
    assert (
        pr.landmarks_ref.shape == pr.landmarks_flt.shape
        and pr.info["max_inverse_residual_mm"] <= 0.01
    )
    with pytest.raises(SyntheticLungError) as exc:
        make_lung_pair(vol, lungs=np.zeros(vol.shape, bool))
    assert exc.value.code == "SyntheticLung.NoLungs"
    with pytest.raises(ValueError):
        make_lung_pair(vol, density="wrong")
