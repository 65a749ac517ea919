"""lung_focus._grow (the lung focus dilation) against the obvious implementation it replaced:
pad, max-pool by reshaping, Euclidean distance on the coarse grid, np.repeat back."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg.lung_focus import _grow, _max_pool
from ctreg.pyramid import level_factors


def _grow_reference(mask, spacing, grow_mm):
    f = level_factors(spacing, 2.0)
    pads = [(-n) % x for n, x in zip(mask.shape, f)]
    m = np.pad(mask, [(0, p) for p in pads])
    small = m.reshape(
        m.shape[0] // f[0], f[0], m.shape[1] // f[1], f[1], m.shape[2] // f[2], f[2]
    ).any(axis=(1, 3, 5))
    dist = ndi.distance_transform_edt(~small, sampling=np.asarray(spacing) * np.asarray(f))
    out = dist <= grow_mm
    for ax, x in enumerate(f):
        out = np.repeat(out, x, axis=ax)
    return np.ascontiguousarray(out[: mask.shape[0], : mask.shape[1], : mask.shape[2]]) | mask


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((23, 31, 29), (0.7, 0.68, 0.68)),  # factors (3, 3, 3), ragged edges
        ((20, 24, 24), (2.5, 0.8, 0.8)),  # (1, 2, 2)
        ((17, 19, 21), (2.0, 2.0, 2.0)),  # (1, 1, 1): no pooling
        ((16, 30, 33), (1.25, 0.5, 0.45)),  # (2, 4, 4)
    ],
)
def test_grow_equals_reference(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.97
    for grow_mm in (0.0, 3.0, 7.5):
        got = _grow(mask, spacing, grow_mm)
        expect = _grow_reference(mask, spacing, grow_mm)
        assert got.dtype == np.bool_ and got.shape == mask.shape
        np.testing.assert_array_equal(got, expect)


def test_max_pool_sets_a_cell_when_any_voxel_is_set():
    mask = np.zeros((5, 7, 8), bool)
    mask[4, 6, 7] = True  # in the ragged last cell of every axis
    pooled = _max_pool(mask, (2, 3, 3))
    assert pooled.shape == (3, 3, 3)
    assert pooled.sum() == 1 and pooled[2, 2, 2]
