"""Lung images and the lung-shape stage (ctreg.lung_images): what the deformable stages see,
the floating lungs' checks, and the fallbacks the report names."""

from __future__ import annotations

import numpy as np
import pytest

import ctreg
from ctreg import lungs as lungs_mod
from ctreg import samples
from ctreg.lung_images import MIN_AFFINE_LUNG_DICE, affine_lung_dice, lung_only, mask_image
from ctreg.lungs import LungMaskError, segment_lungs
from ctreg.synthetic import BreathingMotion, make_breathing_pair
from ctreg.transforms import AffineTransform

FAST = dict(
    preset="fast",
    demons={"iterations": (4,)},
    ffd={"iterations": (4,)},
    lung_shape={"iterations": (6, 4)},
)


@pytest.fixture(scope="module")
def ct64():
    return samples.ct64_volume()


@pytest.fixture(scope="module")
def lungs64(ct64):
    return segment_lungs(ct64).mask


def test_lung_only_and_mask_image_keep_grid_and_validity(ct64, lungs64):
    valid = np.ones(ct64.shape, bool)
    valid[:, :, :4] = False
    vol = ctreg.Volume(ct64.array, ct64.affine, valid)
    only = lung_only(vol, lungs64, -100.0)
    assert np.array_equal(only.affine, vol.affine) and np.array_equal(only.valid, valid)
    assert np.array_equal(only.array[lungs64], vol.array[lungs64])
    assert np.all(only.array[~lungs64] == np.float32(-100.0))
    img = mask_image(vol, lungs64, (-1000.0, 400.0))
    assert np.array_equal(img.affine, vol.affine) and np.array_equal(img.valid, valid)
    assert set(np.unique(img.array)) == {np.float32(-1000.0), np.float32(0.0)}
    assert np.array_equal(img.array == -1000.0, lungs64)
    with pytest.raises(AssertionError):
        lung_only(vol, lungs64[1:], 0.0)


def test_affine_lung_dice_is_one_for_the_same_lungs_and_low_for_a_lost_lung(ct64, lungs64):
    ident = AffineTransform.identity().apply
    assert affine_lung_dice(ct64, lungs64, ct64, lungs64, ident, step_mm=2.0) == pytest.approx(1.0)
    one = lungs64.copy()
    one[:, :, : ct64.shape[2] // 2] = False  # one lung lost (the scan's left or right half)
    assert affine_lung_dice(ct64, lungs64, ct64, one, ident, step_mm=2.0) < MIN_AFFINE_LUNG_DICE
    # the floating scan's invalid voxels do not count: both sides cut there agree
    valid = np.ones(ct64.shape, bool)
    valid[:, :, : ct64.shape[2] // 2] = False
    cut = ctreg.Volume(ct64.array, ct64.affine, valid)
    assert affine_lung_dice(ct64, lungs64, cut, one, ident, step_mm=2.0) == pytest.approx(1.0)


def test_default_uses_lung_images_and_the_shape_stage_and_recovers_breathing(ct64):
    motion = BreathingMotion(
        diaphragm_mm=12.0, translation_mm=(3.0, -2.0, 4.0), rotation_deg=(1.0, -1.0, 4.0), seed=11
    )
    pair = make_breathing_pair(ct64, motion, n_landmarks=120)
    res = ctreg.register(pair.reference, pair.floating, **FAST)
    info = res.report["lungs"]["images"]
    assert info["used"] and info["floating_source"] == "automatic"
    assert info["affine_dice"] >= MIN_AFFINE_LUNG_DICE
    assert [lv["stage"] for lv in res.report["levels"]].count("lung_shape") == 2
    tre = np.linalg.norm(res.transform_points(pair.reference_points) - pair.floating_points, axis=1)
    before = np.linalg.norm(pair.reference_points - pair.floating_points, axis=1)
    assert tre.mean() < 0.2 * before.mean() and tre.mean() < 1.5, (before.mean(), tre.mean())
    assert res.jacobian_determinant().min() > 0


def test_floating_lungs_argument_is_checked(ct64, lungs64):
    with pytest.raises(LungMaskError) as err:
        ctreg.register(ct64, ct64, floating_lungs=lungs64[1:], **FAST)
    assert err.value.code == "LungMask.GridMismatch"
    with pytest.raises(LungMaskError) as err:
        ctreg.register(ct64, ct64, floating_lungs=np.zeros(ct64.shape, bool), **FAST)
    assert err.value.code == "LungMask.Empty"
    res = ctreg.register(ct64, ct64, floating_lungs=lungs64, **FAST)
    assert res.report["lungs"]["images"]["floating_source"] == "user"
    assert np.abs(res.displacement).max() < 0.5


def test_automatic_floating_lungs_that_disagree_fall_back_to_the_plain_images(ct64, monkeypatch):
    """A floating segmentation that lost a lung must not drive the field: the report says why
    and the deformable stages run on the plain images (no lung_shape level)."""
    real = lungs_mod.segment_lungs

    def half(volume, **kw):
        seg = real(volume, **kw)
        seg.mask[:, :, : volume.shape[2] // 2] = False
        return seg

    monkeypatch.setattr(lungs_mod, "segment_lungs", half)
    ref_lungs = real(ct64).mask
    res = ctreg.register(ct64, ct64, reference_lungs=ref_lungs, **FAST)
    info = res.report["lungs"]["images"]
    assert info["used"] is False and info["reason"] == "LungMask.Disagree"
    assert info["affine_dice"] < MIN_AFFINE_LUNG_DICE
    assert "lung_shape" not in [lv["stage"] for lv in res.report["levels"]]
    assert np.abs(res.displacement).max() < 0.5


def test_floating_scan_without_lungs_falls_back_and_says_why(ct64):
    """A floating scan with no lungs in it (here: soft tissue only) keeps the plain images."""
    arr = np.where(ct64.array < -300, np.float32(40.0), ct64.array).astype(np.float32)
    flt = ct64.with_array(arr)
    res = ctreg.register(ct64, flt, **FAST)
    info = res.report["lungs"]["images"]
    assert info["used"] is False and info["reason"].startswith("LungMask.")
    assert "lung_shape" not in [lv["stage"] for lv in res.report["levels"]]


@pytest.mark.slow
def test_two_crops_of_one_scan_stay_still(ct64, lungs64):
    """Issue 12: two crops of the same scan (different fields of view, identity truth) with
    the default preset stay within 0.5 mm on the overlap's lung points."""
    from ctreg.pyramid import crop

    nz, ny, nx = ct64.shape
    ref = crop(ct64, (slice(8, nz), slice(0, ny), slice(0, nx)))
    flt = crop(ct64, (slice(0, nz - 10), slice(0, ny), slice(6, nx)))
    inner = lungs64.copy()
    inner[:10], inner[nz - 12 :], inner[:, :, :8] = False, False, False
    pts = ct64.index_to_world(np.argwhere(inner)[::7])
    res = ctreg.register(ref, flt)
    err = np.linalg.norm(res.transform_points(pts) - pts, axis=1)
    assert len(pts) > 200
    assert err.mean() <= 0.5 and np.percentile(err, 95) <= 0.5, (err.mean(), np.percentile(err, 95))
