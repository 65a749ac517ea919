"""ctreg.sliding: a separate field outside the lungs, joined across the pleura without folding.

Unit tests on analytic fields (planar pleura, exact signed distance), the fold check's
fallback, the options, and one end-to-end check on a realistic synthetic sliding pair made
from the 64^3 CIP scan (skipped when ../shared/data is absent): outside the lungs the sliding
field must beat the smooth extension of the lung-focused field, inside it must not lose.
"""

from __future__ import annotations

import numpy as np
import pytest

import ctreg.sliding as sliding
from conftest import shared_path
from ctreg import ops
from ctreg.errors import OptionError
from ctreg.options import RegistrationOptions, SlidingOptions, options_for

SP = (2.0, 2.0, 2.0)
SHAPE = (24, 28, 40)


def _planar():
    """Lungs: x < 40 mm (indicator; signed distance d = x - 40).  Inside: the lung slides 6 mm
    along z and expands 2 % in x; outside: the wall moves 1 mm in y only."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SP)], indexing="ij")
    d = (x - 39.0).astype(np.float32)  # the boundary halfway between the voxels at 38 and 40
    lungs = (d < 0).astype(np.float32)
    u_in = np.zeros(SHAPE + (3,), np.float32)
    u_in[..., 0] = 6.0
    u_in[..., 2] = 0.02 * (x - 40.0)
    u_out = np.zeros(SHAPE + (3,), np.float32)
    u_out[..., 1] = 1.0
    return d, lungs, u_in, u_out


def test_options_declared_and_checked():
    assert RegistrationOptions().sliding.enabled is True  # on in default / accurate
    assert options_for("fast").sliding.enabled is False
    assert options_for("accurate").sliding.enabled is True
    assert options_for(sliding=False).sliding == SlidingOptions(enabled=False)
    assert options_for(sliding=True).sliding == SlidingOptions(enabled=True)
    opts = options_for(sliding={"enabled": True, "band_mm": 4})
    assert opts.sliding.enabled and opts.sliding.band_mm == 4.0
    assert opts.to_dict()["sliding"]["band_mm"] == 4.0
    assert RegistrationOptions(**{"sliding": opts.to_dict()["sliding"]}).sliding == opts.sliding
    with pytest.raises(OptionError):
        options_for(sliding={"bogus": 1})
    with pytest.raises(OptionError):
        SlidingOptions(band_mm=0)
    with pytest.raises(OptionError):
        SlidingOptions(levels_mm=(6.0,), control_spacing_mm=(40.0, 20.0), iterations=(20,))
    with pytest.raises(OptionError):
        RegistrationOptions(sliding="yes")


def test_outside_weight_planar():
    d, lungs, _, _ = _planar()
    w = sliding.outside_weight(lungs, SP, 6.0)
    assert w[d < -3.5].max() == 0.0 and w[d > 9.5].min() == 1.0
    assert w[d < 0].max() < 0.03  # the lung surface follows the inside field
    # planar boundary: w = Phi((d - band / 2) / sigma), sigma = band / 4, to the grid's 2 mm
    from scipy.stats import norm

    near = np.abs(d - 3.0) < 4
    assert np.abs(w[near] - norm.cdf((d[near] - 3.0) / 1.5)).max() < 0.3  # 1 mm quantisation


def test_join_planar_sliding_exact_sides_no_fold():
    d, lungs, u_in, u_out = _planar()
    band = 6.0
    joined = sliding.join_fields(u_in, u_out, sliding.outside_weight(lungs, SP, band), SP)
    inside = d < 0
    outside = d > 1.5 * band + 0.5
    np.testing.assert_allclose(joined[inside], u_in[inside], atol=0.2)
    np.testing.assert_allclose(joined[d < -4], u_in[d < -4], atol=1e-5)
    # beyond the band the map is (id + u_in) ∘ (id + r) = id + u_out, to fixed-point accuracy
    assert np.abs(joined[outside] - u_out[outside]).max() < 0.05
    jac = ops.jacobian_determinant(joined, SP)
    assert jac.min() > 0.2
    out, info = sliding.join_checked(u_in, u_out, lungs, SP, 1.0, band)
    assert info["used"] and info["reason"] == "ok" and info["attempts"][0]["folded_voxels"] == 0
    np.testing.assert_array_equal(out, joined)


def test_join_normal_mismatch_compresses_not_folds():
    """The outside field pushes the wall 5 mm into the lung (a normal mismatch, which a
    displacement blend over 3 mm folds): the log-domain join compresses, J > 0."""
    d, lungs, u_in, _ = _planar()
    u_out = np.zeros(SHAPE + (3,), np.float32)
    u_out[..., 2] = -5.0
    w = sliding.outside_weight(lungs, SP, 3.0)[..., None]
    blend = np.ascontiguousarray(u_in + w * (u_out - u_in), dtype=np.float32)
    assert ops.jacobian_determinant(blend, SP).min() <= 0
    joined, info = sliding.join_checked(u_in, u_out, lungs, SP, 1.0, 3.0)
    assert info["used"] and info["reason"] == "ok"
    assert ops.jacobian_determinant(joined, SP).min() > 0


def test_fold_check_falls_back_to_inside_field():
    d, lungs, u_in, _ = _planar()
    rng = np.random.default_rng(0)
    u_out = rng.normal(0, 4.0, SHAPE + (3,)).astype(np.float32)  # folds by itself
    out, info = sliding.join_checked(u_in, u_out, lungs, SP, 1.0, 3.0)
    assert not info["used"] and info["reason"] == "sliding_folded"
    assert len(info["attempts"]) == sliding.MAX_WIDENINGS + 1
    assert [a["band_mm"] for a in info["attempts"]] == [3.0, 6.0, 12.0]
    assert all(a["folded_voxels"] > 0 for a in info["attempts"])
    assert out is u_in


def test_outside_level_erodes_lungs():
    from ctreg.level import Level

    d, lungs, _, _ = _planar()
    lv = Level(
        index=0,
        spacing=np.array(SP),
        shape=SHAPE,
        reference=np.zeros(SHAPE, np.float32),
        mask=np.ones(SHAPE, np.uint8),
        floating=None,
        out_to_frame=np.eye(4),
        frame=None,
        clip_low=-1000.0,
    )
    out = sliding.outside_level(lv, lungs, 3.0)
    kept = out.mask.astype(bool)
    assert kept[d > 0].all()  # everything outside the lungs
    assert kept[(d < 0) & (d > -2.5)].all()  # the lung border (within 3 mm)
    assert not kept[d < -3.5].any()  # not the lungs beyond it
    assert lv.mask.all()  # the level itself is unchanged


@pytest.fixture(scope="module")
def cip_pair():
    from ctreg import read_volume
    from ctreg.synthetic_lung import make_lung_pair

    return make_lung_pair(
        read_volume(shared_path("cip-ct64", "ct-64.nrrd")), seed=0, diaphragm_mm=30
    )


def _tre(res, p, q):
    return float(np.linalg.norm(res.transform_points(p) - q, axis=1).mean())


def test_sliding_pair_outside_better_inside_kept(cip_pair):
    from ctreg import register

    pair = cip_pair
    po, qo = pair.outside_points(300)
    assert po.shape[0] >= 200
    base = register(pair.reference, pair.floating, sliding=False)
    slide = register(pair.reference, pair.floating)  # the default
    rep = slide.report["sliding"]
    assert rep["used"] and rep["reason"] in ("ok", "sliding_widened"), rep
    assert base.report["sliding"] == {"used": False, "reason": "sliding off"}
    assert "sliding" in slide.report["seconds"]
    assert any(lv["stage"] == "sliding" for lv in slide.report["levels"])
    # no folding anywhere (full resolution)
    assert slide.report["jacobian"]["min"] > 0
    assert np.count_nonzero(slide.jacobian_determinant() <= 0) == 0
    out_base, out_slide = _tre(base, po, qo), _tre(slide, po, qo)
    in_base = _tre(base, pair.landmarks_ref, pair.landmarks_flt)
    in_slide = _tre(slide, pair.landmarks_ref, pair.landmarks_flt)
    # measured: outside 4.39 -> ~1.7 mm, inside 0.54 -> 0.54 mm
    assert out_slide < 0.6 * out_base, (out_base, out_slide)
    assert in_slide <= in_base + 0.05, (in_base, in_slide)


def test_pipeline_fallbacks_are_named(cip_pair, monkeypatch):
    from ctreg import register

    pair = cip_pair
    base = register(pair.reference, pair.floating, sliding=False)

    def folding(u_in, u_out, weight, spacing):
        bad = u_in.copy()
        bad[u_in.shape[0] // 2, :, :, 0] += 50.0  # a slab pushed 50 mm: folds
        return bad

    monkeypatch.setattr(sliding, "join_fields", folding)
    res = register(pair.reference, pair.floating, sliding=True)
    assert res.report["sliding"]["reason"] == "sliding_folded"
    assert not res.report["sliding"]["used"]
    np.testing.assert_allclose(res.displacement, base.displacement, atol=1e-4)

    # the level check passes (patched), the full-resolution check catches the fold
    monkeypatch.setattr(sliding, "_folds", lambda u, spacing, det_a: (0, 1.0))
    res = register(pair.reference, pair.floating, sliding=True)
    assert res.report["sliding"]["reason"] == "sliding_folded_full_resolution"
    assert res.report["jacobian"]["min"] > 0
    np.testing.assert_allclose(res.displacement, base.displacement, atol=1e-4)


def test_lung_only_images_skip_sliding(cip_pair):
    """EMPIRE10-like lung-only images (0 HU outside the lungs): nothing to fit outside."""
    from ctreg import register
    from ctreg.volume import Volume

    pair = cip_pair
    ref = pair.reference
    flat = Volume(np.where(pair.reference_lungs, ref.array, 0.0).astype(np.float32), ref.affine)
    res = register(flat, pair.floating, reference_lungs=pair.reference_lungs, sliding=True)
    rep = res.report["sliding"]
    assert not rep["used"] and rep["reason"] == "sliding_no_outside_contrast"
    assert rep["outside_std_hu"] < 30
    base = register(flat, pair.floating, reference_lungs=pair.reference_lungs, sliding=False)
    np.testing.assert_allclose(res.displacement, base.displacement, atol=1e-4)
