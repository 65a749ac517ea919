import numpy as np
import pytest

from ctreg.masks import body_mask, lung_mask
from ctreg.pyramid import bounding_box, crop, downsample, level_factors
from ctreg.volume import Volume, affine_from_geometry


def _volume(shape=(20, 30, 40), spacing=(2.0, 0.8, 0.8)):
    rng = np.random.default_rng(0)
    direction = np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]])
    return Volume(
        rng.normal(0, 1, shape).astype(np.float32),
        affine_from_geometry((5, 6, 7), spacing, direction),
    )


def test_level_factors():
    assert level_factors((2.0, 0.8, 0.8), 4.0) == (2, 5, 5)
    assert level_factors((2.0, 0.8, 0.8), 0.5) == (1, 1, 1)


def test_downsample_keeps_voxel_positions():
    vol = _volume()
    lv = downsample(vol, 4.0)
    f = level_factors(vol.spacing, 4.0)
    assert lv.shape == tuple(-(-n // x) for n, x in zip(vol.shape, f))
    idx = np.array(
        [[1, 2, 3], [0, 0, 0], [lv.shape[0] - 1, lv.shape[1] - 1, lv.shape[2] - 1]], float
    )
    assert np.allclose(lv.index_to_world(idx), vol.index_to_world(idx * f))
    # smoothing then subsampling: a constant stays constant
    const = vol.with_array(np.full(vol.shape, 7.0, np.float32))
    assert np.allclose(downsample(const, 4.0).array, 7.0, atol=1e-4)


def test_crop_keeps_world_positions():
    vol = _volume()
    box = (slice(3, 9), slice(0, 30), slice(10, 25))
    c = crop(vol, box)
    assert c.shape == (6, 30, 15)
    assert np.allclose(c.index_to_world([[0, 0, 0]]), vol.index_to_world([[3, 0, 10]]))
    assert np.array_equal(c.array, vol.array[box])


def test_bounding_box_with_margin():
    m = np.zeros((10, 10, 10), bool)
    m[4:6, 2:3, 7:9] = True
    assert bounding_box(m, (1, 1, 1)) == (slice(3, 7), slice(1, 4), slice(6, 10))
    assert bounding_box(np.zeros((3, 3, 3), bool)) is None


def _sitk_volume(path):
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.ReadImage(str(path))
    d = np.array(img.GetDirection()).reshape(3, 3)[:, ::-1]
    return Volume(
        sitk.GetArrayFromImage(img).astype(np.float32),
        affine_from_geometry(img.GetOrigin(), img.GetSpacing()[::-1], d),
    ), sitk


def test_lung_mask_matches_the_expert_label(shared_data):
    vol, sitk = _sitk_volume(shared_data("cip-ct64", "ct-64.nrrd"))
    truth = (
        sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data("cip-ct64", "wholeLung-64.nrrd"))))
        > 0
    )
    body = body_mask(vol)
    lungs = lung_mask(vol, body=body)
    dice = 2 * np.sum(lungs & truth) / (lungs.sum() + truth.sum())
    assert dice > 0.75
    assert np.mean(body[truth]) > 0.99  # the lungs are inside the body


def test_padding_is_never_body(shared_data):
    vol, _ = _sitk_volume(shared_data("cip-ct64", "ct-64.nrrd"))
    valid = np.ones(vol.shape, bool)
    valid[:, :, :20] = False  # pretend the scanner saw nothing there
    padded = Volume(np.where(valid, vol.array, 2000.0).astype(np.float32), vol.affine, valid)
    body = body_mask(padded)
    assert not body[:, :, :20].any()
    assert body[:, :, 30:].sum() > 0.5 * body_mask(vol)[:, :, 30:].sum()


def _tissue_cases():
    """Tissue masks with what body_mask must handle: a ring with a hole (lungs), a hole open at
    the slice edge, a thin wall attached to the body, specks, holes on the first and last
    slices, and the real sample scan."""
    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[:12, :40, :44]
    ring = (y - 20) ** 2 / 15**2 + (x - 22) ** 2 / 18**2 < 1
    lung = ((y - 20) ** 2 / 8**2 + (x - 15) ** 2 / 5**2 < 1) & (z < 10)
    t = ring & ~lung
    t[:, 18:22, 35:] = False  # a channel from a hole to the slice's edge
    t[:, 5, :] = True  # a thin wall across every slice
    t |= rng.random(t.shape) < 0.01  # specks
    yield "phantom", t
    from ctreg import samples

    vol = samples.ct64_volume()
    yield "ct64", vol.array > -500.0
    yield "ct64-noisy", (vol.array + rng.normal(0, 200, vol.shape)) > -500.0


@pytest.mark.parametrize("name", ["phantom", "ct64", "ct64-noisy"])
def test_body_morphology_equals_the_slow_reference(name):
    from ctreg.masks import _fill_holes_in_plane, _largest_component, _reconstruct, _IN_PLANE
    import scipy.ndimage as ndi

    from reference import body_mask_morphology_ref

    tissue = dict(_tissue_cases())[name]
    core = _largest_component(ndi.binary_opening(tissue, structure=_IN_PLANE, iterations=1))
    fast = _fill_holes_in_plane(_reconstruct(core, tissue))
    slow = body_mask_morphology_ref(tissue)
    assert slow.sum() > 0.05 * tissue.size
    assert np.array_equal(fast, slow)
    # and through the public function on a volume at full resolution
    vol = Volume(np.where(tissue, 40.0, -1000.0).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert np.array_equal(body_mask(vol, resolution_mm=None), slow)


def test_lung_cut_by_the_field_of_view_is_inside_the_body():
    """A lung that reaches one side of the slice (a narrow field of view) is inside the body;
    the air around the patient (two or more sides) is not; a real hole is filled."""
    from ctreg.masks import _fill_holes_in_plane

    from reference import fill_holes_one_side_ref

    m = np.ones((2, 40, 40), bool)
    m[:, :3, :] = False  # air above the patient: touches three sides
    m[:, 15:25, 0:12] = False  # lung cut at the left side: touches one side
    m[:, 18:22, 25:30] = False  # a hole
    m[1, :, 35:] = False  # slice 1: air at the right side, joined to the air above
    filled = _fill_holes_in_plane(m)
    assert filled[:, 15:25, 0:12].all() and filled[:, 18:22, 25:30].all()
    assert not filled[:, :3, :].any() and not filled[1, :, 35:].any()
    want = np.stack([fill_holes_one_side_ref(m[k]) for k in range(2)])
    np.testing.assert_array_equal(filled, want)


def test_lung_next_to_padding_is_inside_the_body_and_a_circular_field_of_view_is_not():
    """Invalid voxels end the data like the slice's edge: a lung cut by padding columns is
    filled, the air inside a circular field of view (invalid ring all around) is not; the
    vectorised version equals the slow region-by-region reference, random masks included."""
    from ctreg.masks import _fill_holes_in_plane

    from reference import fill_holes_one_side_ref

    m = np.ones((3, 40, 40), bool)
    valid = np.ones_like(m)
    valid[0, :, :5] = False  # padding columns at the left
    m[0, :, :5] = False
    m[0, 15:25, 5:14] = False  # a lung reaching the padding
    m[0, :3, :] = False  # air above the patient
    yy, xx = np.mgrid[:40, :40]
    circle = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 < 19**2
    valid[1] = circle  # circular field of view
    m[1] = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 < 14**2  # body: air between it and the ring
    m[1, 17:23, 6:12] = False  # a lung cut by the body's edge joins that air
    rng = np.random.default_rng(3)
    m[2] = rng.random((40, 40)) < 0.55
    valid[2] = rng.random((40, 40)) < 0.9
    filled = _fill_holes_in_plane(m, valid)
    assert filled[0, 15:25, 5:14].all() and not filled[0, :3, :].any()
    assert not filled[0][~valid[0]].any()
    assert not filled[1][circle & ~m[1]].any()
    want = np.stack([fill_holes_one_side_ref(m[k], valid[k]) for k in range(3)])
    np.testing.assert_array_equal(filled, want)


@pytest.mark.parametrize(
    "shape", [(9, 31, 27), (3, 5, 7), (1, 1, 4), (2, 1, 1), (4, 2, 2), (2, 3, 1)]
)
def test_in_plane_opening_equals_scipy(shape):
    import scipy.ndimage as ndi

    from ctreg.masks import _IN_PLANE, _open_in_plane

    rng = np.random.default_rng(sum(shape))
    for p in (0.2, 0.5, 0.8, 1.0):
        m = rng.random(shape) < p
        if min(shape) > 2:  # blobs as well as speckle
            m |= ndi.gaussian_filter(rng.random(shape), 1.0) > 0.55
        want = ndi.binary_opening(m, structure=_IN_PLANE, iterations=1)
        np.testing.assert_array_equal(_open_in_plane(m), want)
