"""ctreg.lungs.segment_lungs: a synthetic phantom (always), CIP ct-64 and EMPIRE10-01 (when
present)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from ctreg import Volume, read_volume
from ctreg.errors import CTRegError
from ctreg.lungs import LungMaskError, check_mask_grid, segment_lungs
from ctreg.volume import affine_from_geometry


def dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def phantom(shape=(90, 120, 140), spacing=(2.0, 1.5, 1.5), seed=0):
    """A chest-like phantom: tissue body in air, two ellipsoid lungs with vessels, a trachea from
    the top slice down to the lungs.  Index 0 is superior (as DICOM axial series often are).
    Returns (volume, true lungs with vessels, trachea)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    cz, cy, cx = [(n - 1) * s / 2 for n, s in zip(shape, spacing)]
    body = ((y - cy) / 80) ** 2 + ((x - cx) / 100) ** 2 <= 1
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= (
            ((z - cz - 15) / 70) ** 2 + ((y - cy) / 55) ** 2 + ((x - cx - side * 45) / 35) ** 2
        ) <= 1
    trachea = (((y - cy) / 8) ** 2 + ((x - cx) / 8) ** 2 <= 1) & (z < cz - 36) & ~lungs
    bronchi = (np.abs(y - cy) < 5) & (np.abs(z - cz + 33) < 3) & (np.abs(x - cx) < 50) & ~lungs
    img = np.full(shape, -1000.0, np.float32)
    img[body] = 40.0
    img[lungs] = -850.0
    img[trachea | bronchi] = -1000.0
    # vessels: bright tubes along z inside the lungs
    for _ in range(12):
        vy, vx = rng.uniform(-30, 30) + cy, rng.choice([-1, 1]) * rng.uniform(35, 55) + cx
        img[lungs & (((y - vy) ** 2 + (x - vx) ** 2) <= 2.5**2)] = 30.0
    img += rng.normal(0, 15, shape).astype(np.float32)
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    direction[2, 0] = -1.0  # index 0 superior
    aff = affine_from_geometry((-cx, -cy, 200.0), spacing, direction)
    return Volume(img, aff), lungs, trachea


def test_phantom_lungs_vessels_inside_trachea_removed():
    vol, lungs, trachea = phantom()
    res = segment_lungs(vol)
    assert res.mask.shape == vol.shape and res.mask.dtype == bool
    assert dice(res.mask, lungs) >= 0.97
    # vessels are inside the mask
    vessels = lungs & (vol.array > -400)
    assert np.count_nonzero(res.mask & vessels) >= 0.8 * vessels.sum()
    # the trachea is removed (at most a sliver where it meets the lungs)
    assert np.count_nonzero(res.mask & trachea) <= 0.1 * trachea.sum()
    assert res.trachea_ml > 0
    ml = float(np.prod(vol.spacing)) / 1000
    assert res.volume_ml == pytest.approx(res.mask.sum() * ml)
    assert res.volume_ml == pytest.approx(lungs.sum() * ml, rel=0.05)
    # left / right: the patient's left is +x in LPS
    assert res.left_ml is not None and res.right_ml is not None
    assert res.left_ml + res.right_ml == pytest.approx(res.volume_ml)
    assert res.left_ml == pytest.approx(res.right_ml, rel=0.1)
    assert set(res.timings) >= {"body", "refine"} and res.method


def test_phantom_left_lung_is_plus_x():
    vol, lungs, _ = phantom()
    a = vol.array.copy()
    x = vol.world_coordinates()[..., 0]
    a[(x > 0) & lungs] = 40.0  # remove the patient's left lung (+x)
    a[(x > 0) & lungs & (np.abs(x - 45) < 20)] = -850.0  # keep a small left lung
    res = segment_lungs(vol.with_array(a))
    ml = float(np.prod(vol.spacing)) / 1000
    left_true = np.count_nonzero((x > 0) & lungs & (np.abs(x - 45) < 20)) * ml
    right_true = np.count_nonzero((x < 0) & lungs) * ml
    assert res.left_ml == pytest.approx(left_true, rel=0.1)
    assert res.right_ml == pytest.approx(right_true, rel=0.1)


def test_user_body_mask_and_valid_respected():
    vol, lungs, _ = phantom()
    body = vol.array > -2000  # everything: the air around is "body", so it must not count
    res = segment_lungs(vol, body=np.ones(vol.shape, bool) & body, check=False)
    # air around the patient is inside the given body: it touches the border -> absurd
    with pytest.raises(LungMaskError) as exc:
        segment_lungs(vol, body=body)
    assert exc.value.code in ("LungMask.Absurd",)
    assert res.mask.any()
    valid = np.ones(vol.shape, bool)
    valid[:, :, : vol.shape[2] // 2] = False
    half = segment_lungs(Volume(vol.array, vol.affine, valid), min_ml=50)
    assert not (half.mask & ~valid).any()


def test_errors_have_codes():
    vol, _, _ = phantom()
    with pytest.raises(LungMaskError) as exc:
        segment_lungs(vol.with_array(np.full(vol.shape, 40.0, np.float32)))
    assert exc.value.code == "LungMask.Empty" and isinstance(exc.value, CTRegError)
    with pytest.raises(LungMaskError) as exc:  # all air: no body
        segment_lungs(vol.with_array(np.full(vol.shape, -1000.0, np.float32)))
    assert exc.value.code == "LungMask.Empty"
    with pytest.raises(LungMaskError) as exc:  # too small to be lungs
        segment_lungs(vol, min_ml=1e5)
    assert exc.value.code == "LungMask.Absurd" and "L" in str(exc.value)
    with pytest.raises(LungMaskError) as exc:
        segment_lungs(vol, body=np.ones((3, 4, 5), bool))
    assert exc.value.code == "LungMask.GridMismatch" and "(3, 4, 5)" in str(exc.value)
    with pytest.raises(LungMaskError) as exc:
        check_mask_grid(np.ones((2, 2, 2)), vol, "reference_mask")
    assert exc.value.code == "LungMask.GridMismatch" and "reference_mask" in str(exc.value)
    assert check_mask_grid(np.ones(vol.shape, np.uint8), vol).dtype == bool
    with pytest.raises(TypeError):
        segment_lungs(np.zeros((4, 4, 4)))


def test_cip_ct64_whole_lung_dice():
    ct = read_volume(shared_path("cip-ct64", "ct-64.nrrd"))
    ref = read_volume(shared_path("cip-ct64", "wholeLung-64.nrrd")).array > 0.5
    res = segment_lungs(ct)
    assert dice(res.mask, ref) >= 0.95
    # CIP's whole-lung label excludes the trachea (label 512 in lm-64); so does ours, mostly
    lm = read_volume(shared_path("cip-ct64", "lm-64.nrrd")).array
    assert not (ref & (lm == 512)).any()
    assert res.trachea_ml > 0


@pytest.fixture(scope="module")
def empire():
    from ctreg.datasets import empire10_available, load_empire10

    if not empire10_available():
        pytest.skip("EMPIRE10-01 not downloaded (bash ../shared/data/get-empire10-01.sh)")
    return load_empire10()


@pytest.mark.slow
def test_empire10_lung_dice(empire):
    for vol, ref in (
        (empire.reference, empire.reference_lungs),
        (empire.floating, empire.floating_lungs),
    ):
        res = segment_lungs(vol)
        assert dice(res.mask, ref) >= 0.95
        assert res.volume_ml == pytest.approx(ref.sum() * np.prod(vol.spacing) / 1000, rel=0.05)
