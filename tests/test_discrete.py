"""The discrete large-motion stage (MIND-SSC block matching) and the demons intensity matching."""

import numpy as np
import pytest

import ctreg
from ctreg import samples
from ctreg.errors import CTRegError
from ctreg.options import DiscreteOptions, FFDOptions
from ctreg.synthetic import BreathingMotion, make_breathing_pair


@pytest.fixture(scope="module")
def ct64():
    return samples.ct64_volume()


def _tre(result, pair):
    return np.linalg.norm(
        result.transform_points(pair.reference_points) - pair.floating_points, axis=1
    )


def test_discrete_stage_alone_recovers_most_of_a_large_diaphragm_motion(ct64):
    motion = BreathingMotion(
        diaphragm_mm=25.0,
        translation_mm=(3.0, -2.0, 2.0),
        rotation_deg=(0.0, 0.0, 2.0),
        perturbation_mm=0.0,
        seed=7,
    )
    pair = make_breathing_pair(ct64, motion, n_landmarks=200)
    base = dict(ffd={"enabled": False}, demons={"enabled": False}, lung_shape={"enabled": False})
    affine_only = ctreg.register(pair.reference, pair.floating, discrete={"enabled": False}, **base)
    searched = ctreg.register(pair.reference, pair.floating, discrete={"enabled": True}, **base)
    before, after = _tre(affine_only, pair), _tre(searched, pair)
    rep = [lv for lv in searched.report["levels"] if lv["stage"] == "discrete"]
    assert len(rep) == 1 and rep[0]["metric_after"] < rep[0]["metric_before"]
    assert after.mean() < 0.85 * before.mean(), (before.mean(), after.mean())
    assert searched.jacobian_determinant().min() > 0  # exp(v): invertible


def test_discrete_stage_keeps_an_identity_pair_still(ct64):
    r = ctreg.register(
        ct64,
        ct64,
        discrete={"enabled": True},
        ffd={"enabled": False},
        demons={"enabled": False},
        lung_shape={"enabled": False},
    )
    assert np.abs(r.displacement).max() < 0.1


def test_discrete_options_are_validated():
    assert DiscreteOptions(grid_step_vox=3).grid_step_vox == 3
    for bad in (
        {"grid_step_vox": 0},
        {"grid_step_vox": 1.5},
        {"search_radius_mm": -1.0},
        {"alphas": ()},
        {"level_mm": 0.0},
    ):
        with pytest.raises((ValueError, CTRegError)):
            DiscreteOptions(**bad)


def test_ffd_metric_per_level():
    o = FFDOptions(
        levels_mm=(6.0, 3.0),
        control_spacing_mm=(24.0, 12.0),
        iterations=(5, 5),
        metric=("ncc", "lncc"),
    )
    assert o.metric == ("ncc", "lncc")
    with pytest.raises((ValueError, CTRegError)):
        FFDOptions(
            levels_mm=(6.0, 3.0),
            control_spacing_mm=(24.0, 12.0),
            iterations=(5, 5),
            metric=("ncc",),
        )
    with pytest.raises((ValueError, CTRegError)):
        FFDOptions(metric="nope")


def test_intensity_matching_maps_a_global_density_change_back(ct64):
    """match_floating_intensities: a floating scan whose intensities are a monotone function of
    the reference's (darker lungs) is mapped back onto the reference's values; equal scans stay
    exactly equal."""
    from ctreg.demons import match_floating_intensities
    from ctreg.level import build_level, preprocess
    from ctreg.masks import body_mask
    from ctreg.transforms import AffineTransform, ReferenceFrame

    clip = (-1000.0, 400.0)
    body = body_mask(ct64)
    ref_p = preprocess(ct64, clip, invalid_value=clip[0])
    darker = ref_p.with_array(
        np.where(ref_p.array < -300, -1000 + (ref_p.array + 1000) * 0.8, ref_p.array).astype(
            np.float32
        )
    )
    frame = ReferenceFrame(ct64)
    ident = AffineTransform.from_params(np.zeros(12), np.zeros(3))
    lv = build_level(0, 4.0, ref_p, body, darker, frame, clip)
    m = lv.mask.astype(bool)
    before = np.abs(lv.floating.array - lv.reference)[m].mean()
    mapped = match_floating_intensities(lv, ident, None)
    after = np.abs(mapped.floating.array - lv.reference)[m].mean()
    assert after < 0.25 * before, (before, after)
    same = build_level(0, 4.0, ref_p, body, ref_p, frame, clip)
    out = match_floating_intensities(same, ident, None)
    assert np.abs(out.floating.array - same.floating.array).max() < 1e-3
