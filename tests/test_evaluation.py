"""ctreg.evaluation against brute-force references on small masks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from ctreg.evaluation import EvaluationError, dice, folding_count, surface, surface_distances


def _blob(rng, shape):
    m = ndi.gaussian_filter(rng.normal(size=shape), 2.0) > 0.05
    return m


def _surface_brute(m):
    out = np.zeros_like(m)
    for k, j, i in np.argwhere(m):
        for dk, dj, di in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            q = (k + dk, j + dj, i + di)
            if not all(0 <= q[x] < m.shape[x] for x in range(3)) or not m[q]:
                out[k, j, i] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (14, 17, 19)
    a, b = _blob(rng, shape), _blob(rng, shape)
    spacing = (2.5, 0.8, 1.1)
    sa, sb = _surface_brute(a), _surface_brute(b)
    assert np.array_equal(surface(a), sa)
    pa = np.argwhere(sa) * spacing
    pb = np.argwhere(sb) * spacing
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    da, db = d.min(axis=1), d.min(axis=0)
    pooled = np.concatenate([da, db])
    res = surface_distances(a, b, spacing)
    np.testing.assert_allclose(np.sort(res.a_to_b), np.sort(da), atol=1e-9)
    np.testing.assert_allclose(np.sort(res.b_to_a), np.sort(db), atol=1e-9)
    assert res.hd95 == pytest.approx(np.percentile(pooled, 95))
    assert res.msd == pytest.approx(pooled.mean())
    assert res.hd == pytest.approx(pooled.max())
    inter = np.count_nonzero(a & b)
    assert dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()))


def test_shifted_cube_distances():
    a = np.zeros((20, 20, 20), bool)
    a[5:15, 5:15, 5:15] = True
    b = np.roll(a, 2, axis=2)
    res = surface_distances(a, b, (1.0, 1.0, 3.0))
    assert res.hd == pytest.approx(6.0)
    assert dice(a, a) == 1.0 and surface_distances(a, a, (1, 1, 1)).hd == 0.0
    assert dice(a, b) == pytest.approx(0.8)


def test_errors_and_folding():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(EvaluationError) as exc:
        surface_distances(a, a, (1, 1, 1))
    assert exc.value.code == "Evaluation.EmptyMask"
    with pytest.raises(EvaluationError) as exc:
        dice(a, np.zeros((4, 4, 5), bool))
    assert exc.value.code == "Evaluation.MaskShape"
    j = np.ones((4, 4, 4))
    j[0, 0, 0] = -0.1
    j[1, 1, 1] = 0.0
    j[2, 2, 2] = np.nan
    assert folding_count(j) == 3
    m = np.zeros((4, 4, 4), bool)
    m[1, 1, 1] = True
    assert folding_count(j, m) == 1
