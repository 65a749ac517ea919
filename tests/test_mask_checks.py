"""The one mask check (ctreg._checks.mask_on_grid) behind register()'s body masks and the lung
masks: same shape rule, each caller's error class and stable code."""

from __future__ import annotations

import numpy as np
import pytest

from ctreg import Volume
from ctreg._checks import mask_on_grid
from ctreg.errors import CTRegError, GeometryError
from ctreg.lungs import LungMaskError, check_mask_grid
from ctreg.pipeline import _check_mask


def _volume(shape=(4, 5, 6)) -> Volume:
    return Volume(np.zeros(shape, np.float32), np.diag([2.5, 0.8, 0.7, 1.0]))


def test_mask_on_grid_shape_and_dtype():
    shape = (4, 5, 6)
    ok = np.zeros(shape, bool)
    ok[1:3, 2:4, 3:5] = True
    out = mask_on_grid("m", ok, shape, mismatch=GeometryError, to_bool=False)
    assert out is ok  # already C-contiguous bool: no copy
    # a non-contiguous bool view is made contiguous, values unchanged
    view = np.zeros((4, 5, 12), bool)[:, :, ::2]
    view[0, 0, 0] = True
    got = mask_on_grid("m", view, shape, mismatch=GeometryError, to_bool=False)
    assert got.flags.c_contiguous and np.array_equal(got, view)
    # to_bool: any non-zero value is inside, as the lung masks always accepted
    labels = np.zeros(shape, np.int16)
    labels[0, 0, 0], labels[1, 1, 1], labels[2, 2, 2] = 1, 2, -3
    conv = mask_on_grid("m", labels, shape, mismatch=GeometryError, to_bool=True)
    assert conv.dtype == bool and np.array_equal(conv, labels != 0)
    with pytest.raises(TypeError, match="m must be a bool array"):
        mask_on_grid("m", labels, shape, mismatch=GeometryError, to_bool=False)
    # a list of lists is an array too
    assert (
        mask_on_grid("m", ok.tolist(), shape, mismatch=GeometryError, to_bool=False).tolist()
        == ok.tolist()
    )


def test_mask_on_grid_mismatch_raises_the_callers_error():
    class Custom(Exception):
        pass

    with pytest.raises(Custom) as exc:
        mask_on_grid("lungs", np.zeros((4, 5), bool), (4, 5, 6), mismatch=Custom, to_bool=True)
    msg = str(exc.value)
    assert "lungs" in msg and "(4, 5)" in msg and "(4, 5, 6)" in msg
    # a transposed mask (x, y, z) is refused, not silently reshaped
    with pytest.raises(Custom):
        mask_on_grid("lungs", np.zeros((6, 5, 4), bool), (4, 5, 6), mismatch=Custom, to_bool=True)


def test_both_callers_keep_their_error_classes_and_codes():
    vol = _volume()
    bad = np.zeros((4, 5, 7), bool)
    with pytest.raises(GeometryError) as body_err:
        _check_mask(bad, vol, "reference_mask")
    assert body_err.value.code == "InvalidFile.Geometry" and "reference_mask" in str(body_err.value)
    with pytest.raises(LungMaskError) as lung_err:
        check_mask_grid(bad, vol, "reference_lungs")
    assert lung_err.value.code == "LungMask.GridMismatch" and isinstance(lung_err.value, CTRegError)
    assert "reference_lungs" in str(lung_err.value) and "(4, 5, 7)" in str(lung_err.value)
    # the same message text from both (one check), only the class and code differ
    assert str(body_err.value).replace("reference_mask", "X") == str(lung_err.value).replace(
        "reference_lungs", "X"
    )
    # dtype policy: body masks must be bool, lung masks may be labels
    u8 = np.ones(vol.shape, np.uint8)
    with pytest.raises(TypeError):
        _check_mask(u8, vol, "floating_mask")
    assert check_mask_grid(u8, vol).dtype == bool and check_mask_grid(u8, vol).all()
