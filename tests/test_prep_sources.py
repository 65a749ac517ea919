"""Pyramid sources (ctreg.prep.SourceImage, ops.smooth_subsample_source): levels built from
images that are never stored whole equal the levels of the stored images, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ctreg import ops
from ctreg.level import SENTINEL, build_level, preprocess
from ctreg.lung_images import lung_only, mask_image
from ctreg.prep import SourceImage
from ctreg.pyramid import crop, downsample
from ctreg.transforms import ReferenceFrame
from ctreg.volume import Volume, affine_from_geometry


def _stored(image, valid, lo, hi, fill, mask, inside, outside):
    """The image smooth_subsample_source defines, by NumPy."""
    if image is None:
        arr = np.full(mask.shape, np.float32(inside), np.float32)
    else:
        arr = np.clip(image, np.float32(lo), np.float32(hi)).astype(np.float32)
        if valid is not None:
            arr = np.where(valid, arr, np.float32(fill)).astype(np.float32)
    if mask is not None:
        arr = np.where(mask, arr, np.float32(outside)).astype(np.float32)
    return np.ascontiguousarray(arr)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_smooth_subsample_source_equals_the_stored_image(threads):
    rng = np.random.default_rng(7)
    for trial in range(24):
        shape = tuple(int(x) for x in rng.integers(1, 24, 3))
        big = (rng.standard_normal(tuple(n + 5 for n in shape)) * 700).astype(np.float32)
        big.flat[::53] = np.nan
        image = big[2 : 2 + shape[0], 1 : 1 + shape[1], 3 : 3 + shape[2]]  # a crop view
        valid = (rng.random(tuple(n + 5 for n in shape)) > 0.2)[
            1 : 1 + shape[0], : shape[1], 2 : 2 + shape[2]
        ]
        mask = rng.random(shape) > 0.4
        use_image, use_valid, use_mask = trial % 2 == 0, trial % 3 != 0, trial % 4 != 1
        if not use_image and not use_mask:
            use_mask = True
        args = dict(
            image=image if use_image else None,
            valid=valid if use_valid else None,
            lo=-1000.0,
            hi=400.0,
            fill=-1024.0,
            mask=mask if use_mask else None,
            inside=-1000.0,
            outside=-100.0,
        )
        sp = tuple(float(x) for x in rng.uniform(0.5, 3, 3))
        f = tuple(int(x) for x in rng.integers(1, 7, 3))  # factor 1: no smoothing on that axis
        sig = tuple(0.4 * s * q if q > 1 else 0.0 for s, q in zip(sp, f))
        stored = _stored(
            args["image"],
            args["valid"] if use_image else None,
            -1000.0,
            400.0,
            -1024.0,
            args["mask"],
            -1000.0,
            -100.0,
        )
        want = ops.smooth_subsample(stored, sig, sp, f)
        with ops.thread_limit(threads):
            got = ops.smooth_subsample_source(shape, sig, sp, f, **args)
        assert got.shape == want.shape
        assert np.array_equal(got, want, equal_nan=True), (trial, shape, f)


def test_smooth_subsample_source_refuses_wrong_arrays():
    a = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match="image must be float32 of shape"):
        ops.smooth_subsample_source((4, 5, 7), (1.0, 1.0, 1.0), (1, 1, 1), (2, 2, 2), image=a)
    with pytest.raises(ValueError, match="mask must be uint8 of shape"):
        ops.smooth_subsample_source(
            (4, 5, 6), (1.0, 1.0, 1.0), (1, 1, 1), (2, 2, 2), image=a, mask=np.ones((4, 5), bool)
        )
    with pytest.raises(ValueError, match="shape must be a non-empty"):
        ops.smooth_subsample_source((0, 5, 6), (1.0, 1.0, 1.0), (1, 1, 1), (2, 2, 2), image=a)
    with pytest.raises(ValueError, match="factors"):
        ops.smooth_subsample_source((4, 5, 6), (1.0, 1.0, 1.0), (1, 1, 1), (0, 2, 2), image=a)


def _scan(shape=(26, 40, 44), spacing=(1.25, 0.7, 0.7)):
    rng = np.random.default_rng(2)
    arr = (rng.standard_normal(shape) * 600 - 300).astype(np.float32)
    valid = np.ones(shape, bool)
    valid[:, :3, :] = False  # a band without data
    direction = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]])
    return Volume(arr, affine_from_geometry((-5, 8, 30), spacing, direction), valid, {"k": 1})


@pytest.mark.parametrize("clip", [(-1000.0, 400.0), (-1000.3, 400.0), (0.0, 300.0)])
def test_source_image_levels_equal_the_stored_path(clip):
    """preprocess(crop()), lung_only and mask_image stored, then downsample: the same arrays,
    validity and affines as from the SourceImage (the last two clips take the stored fallback
    or keep NumPy's -0.0 rule)."""
    vol = _scan()
    box = (slice(2, 24), slice(1, 37), slice(4, 44))
    lungs = np.zeros(vol.shape, bool)
    lungs[5:20, 10:30, 8:20] = lungs[5:20, 10:30, 25:40] = True
    src = SourceImage.preprocessed(vol, box, clip, clip[0])
    stored = preprocess(crop(vol, box), clip, invalid_value=clip[0])
    assert np.array_equal(src.volume().array, stored.array, equal_nan=True)
    pairs = [
        (src, stored),
        (lung_only(src, lungs[box], -80.0), lung_only(stored, lungs[box], -80.0)),
        (mask_image(src, lungs[box], clip), mask_image(stored, lungs[box], clip)),
    ]
    for s, v in pairs:
        assert isinstance(s, SourceImage) and isinstance(v, Volume)
        for mm in (0.5, 1.4, 2.0, 5.0):  # 0.5: no axis subsampled (the stored image itself)
            got, want = s.downsample(mm), downsample(v, mm)
            assert np.array_equal(got.array, want.array), mm
            assert np.array_equal(got.valid, want.valid)
            assert np.array_equal(got.affine, want.affine)


def test_build_level_from_sources_equals_from_stored_volumes():
    ref, flt = _scan(), _scan((30, 36, 40), (1.0, 0.8, 0.8))
    box = (slice(1, 25), slice(0, 40), slice(2, 40))
    clip = (-1000.0, 400.0)
    body = np.ones(ref.shape, bool)[box]
    frame = ReferenceFrame(ref)
    a = build_level(
        0,
        3.0,
        SourceImage.preprocessed(ref, box, clip, clip[0]),
        body,
        SourceImage.preprocessed(flt, None, clip, clip[0]),
        frame,
        clip,
    )
    b = build_level(
        0,
        3.0,
        preprocess(crop(ref, box), clip, invalid_value=clip[0]),
        body,
        preprocess(flt, clip, invalid_value=clip[0]),
        frame,
        clip,
    )
    assert np.array_equal(a.reference, b.reference) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.floating.array, b.floating.array)
    assert (a.floating.array == np.float32(SENTINEL)).any()  # the band without data
    assert np.array_equal(a.out_to_frame, b.out_to_frame)


def test_source_image_mask_rules():
    vol = _scan()
    src = SourceImage.of(vol)
    assert np.array_equal(src.volume().array, vol.array)  # the stored values, unchanged
    with pytest.raises(AssertionError, match="grids differ"):
        src.with_mask(np.ones((2, 2, 2), bool), 0.0)
    once = src.with_mask(np.ones(vol.shape, bool), 0.0)
    with pytest.raises(ValueError, match="has a mask already"):
        once.with_mask(np.ones(vol.shape, bool), 0.0)
