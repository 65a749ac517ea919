"""The SimpleITK recipe's grid step (benchmarks/methods/sitk_recipe.py): ITK's demons filters
need both scans on one grid, so a floating scan on another grid (EMPIRE10-01) is resampled onto
the reference grid at the same world points before the demons stage."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "methods" / "sitk_recipe.py"


def _recipe():
    spec = importlib.util.spec_from_file_location("sitk_recipe_under_test", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_same_grid_resamples_a_floating_scan_on_another_grid_at_the_same_world_points():
    recipe = _recipe()
    rng = np.random.default_rng(0)
    fixed = sitk.GetImageFromArray(rng.normal(size=(10, 12, 14)).astype(np.float32))
    fixed.SetSpacing((1.0, 1.0, 2.0))
    fixed.SetOrigin((-5.0, -4.0, -3.0))
    z, y, x = np.mgrid[0:13, 0:15, 0:17].astype(np.float32)
    moving = sitk.GetImageFromArray(3 * x + 2 * y + z)  # linear: exact under linear sampling
    moving.SetSpacing((0.8, 0.9, 1.5))
    moving.SetOrigin((-6.0, -5.0, -4.0))
    assert recipe.same_grid(sitk, fixed, fixed) is fixed
    out = recipe.same_grid(sitk, fixed, moving)
    assert out.GetSize() == fixed.GetSize() and out.GetSpacing() == fixed.GetSpacing()
    assert out.GetOrigin() == fixed.GetOrigin()
    for idx in [(0, 0, 0), (5, 6, 3), (9, 7, 4)]:
        p = fixed.TransformIndexToPhysicalPoint(idx)
        c = moving.TransformPhysicalPointToContinuousIndex(p)
        want = 3 * c[0] + 2 * c[1] + c[2]
        assert out[idx] == pytest.approx(want, abs=1e-3)
    # x = 8 mm lies beyond the floating scan (x up to -6 + 16 * 0.8 = 6.8 mm): air
    assert fixed.TransformIndexToPhysicalPoint((13, 0, 0))[0] == 8.0
    assert out[13, 0, 0] == -1000.0
