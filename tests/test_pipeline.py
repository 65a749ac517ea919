"""End-to-end registration on real anatomy with known ground truth (thresholds, never exact
floats)."""

import json

import numpy as np
import pytest

import ctreg
from ctreg import samples
from ctreg.errors import GeometryError
from ctreg.masks import body_mask
from ctreg.options import DemonsOptions, FFDOptions, RegistrationOptions, options_for
from ctreg.synthetic import BreathingMotion, make_breathing_pair


@pytest.fixture(scope="module")
def ct64():
    return samples.ct64_volume()


def _tre(result, pair):
    return np.linalg.norm(
        result.transform_points(pair.reference_points) - pair.floating_points, axis=1
    )


@pytest.mark.slow
def test_recovers_breathing_motion_inside_the_lungs(ct64):
    # diaphragm 20 mm decaying towards the apex, plus ~10 mm and ~10 degrees of rigid motion
    motion = BreathingMotion(
        diaphragm_mm=20.0, translation_mm=(6.0, -5.0, 5.0), rotation_deg=(3.0, -3.0, 9.0), seed=3
    )
    pair = make_breathing_pair(ct64, motion, n_landmarks=250)
    initial = np.linalg.norm(pair.reference_points - pair.floating_points, axis=1)
    assert initial.mean() > 15.0  # the problem is not trivial
    result = ctreg.register(pair.reference, pair.floating)
    tre = _tre(result, pair)
    assert tre.mean() <= 1.0, f"mean TRE {tre.mean():.3f} mm"
    assert np.percentile(tre, 95) <= 2.0, f"95th percentile TRE {np.percentile(tre, 95):.3f} mm"
    jac = result.jacobian_determinant()
    assert jac.shape == ct64.shape
    assert jac.min() > 0, "the map folds"
    assert result.report["jacobian"]["percent_nonpositive"] == 0.0
    # the warped floating scan looks like the reference inside the lungs
    lungs = pair.lung_mask
    before = np.abs(pair.floating.array - pair.reference.array)[lungs].mean()
    after = np.abs(result.warped.array - pair.reference.array)[lungs].mean()
    assert after < 0.5 * before
    stages = {lv["stage"] for lv in result.report["levels"]}
    assert {"rigid", "affine", "bspline", "demons"} <= stages


@pytest.mark.slow
def test_recovers_header_only_rigid_motion_of_20_degrees(shared_data):
    pytest.importorskip("SimpleITK")
    reference = ctreg.read_volume(shared_data("cip-ct64", "ct-64.nrrd"))
    floating = ctreg.read_volume(shared_data("cip-ct64", "ct-64-transformed.nrrd"))
    assert np.array_equal(reference.array, floating.array)  # only the header moved
    result = ctreg.register(reference, floating, preset="fast")
    body = body_mask(reference)
    idx = np.argwhere(body)[::7].astype(float)
    p = reference.index_to_world(idx)
    truth = floating.index_to_world(idx)  # the same voxel is the same anatomy
    err = np.linalg.norm(result.transform_points(p) - truth, axis=1)
    assert np.linalg.norm(truth - p, axis=1).mean() > 20.0
    assert err.mean() <= 0.5, f"mean error {err.mean():.3f} mm"
    assert np.percentile(err, 95) <= 1.0


def test_identity_moves_nothing(ct64):
    result = ctreg.register(ct64, ct64, preset="fast")
    body = body_mask(ct64)
    moved = np.linalg.norm(result.displacement[body], axis=-1)
    assert moved.max() < 0.1, f"max displacement {moved.max():.3f} mm"


def test_deterministic_across_runs_and_thread_counts(ct64, tmp_path):
    pair = make_breathing_pair(ct64, BreathingMotion(seed=1), n_landmarks=20)
    opts = options_for("fast", demons={"iterations": (10,)}, ffd={"iterations": (10,)})
    before = ctreg.get_num_threads()
    try:
        ctreg.set_num_threads(2)
        a = ctreg.register(pair.reference, pair.floating, options=opts)
        b = ctreg.register(pair.reference, pair.floating, options=opts)
        ctreg.set_num_threads(1)
        c = ctreg.register(pair.reference, pair.floating, options=opts)
    finally:
        ctreg.set_num_threads(before)
    for other in (b, c):
        assert other.warped.array.tobytes() == a.warped.array.tobytes()
        assert other.displacement.tobytes() == a.displacement.tobytes()
    # and the NIfTI files are the same bytes (no timestamps in the gzip streams)
    files = []
    for name, res in (("a", a), ("c", c)):
        ctreg.write_nifti(res.warped, tmp_path / f"{name}.nii.gz")
        ctreg.write_displacement_nifti(
            res.displacement, res.reference.affine, tmp_path / f"{name}-u.nii.gz"
        )
        files.append(
            (
                (tmp_path / f"{name}.nii.gz").read_bytes(),
                (tmp_path / f"{name}-u.nii.gz").read_bytes(),
            )
        )
    assert files[0] == files[1]


def test_save_writes_the_service_outputs_and_itk_reads_the_field(ct64, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    pair = make_breathing_pair(ct64, BreathingMotion(seed=2), n_landmarks=30)
    opts = options_for("fast", demons={"iterations": (5,)}, ffd={"iterations": (5,)})
    result = ctreg.register(pair.reference, pair.floating, options=opts)
    paths = result.save(tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "registered.nii.gz",
        "registered.tar.gz",
        "displacement.nii.gz",
        "report.json",
        "transform.h5",
        "result.json",
    }
    back = ctreg.read_volume(paths["nifti"])
    assert back.shape == ct64.shape and np.allclose(back.affine, ct64.affine, atol=1e-3)
    assert np.abs(back.array - np.round(result.warped.array)).max() <= 1.0
    series = ctreg.read_dicom_series(paths["dicom"])
    assert series.shape == ct64.shape and np.allclose(series.affine, ct64.affine, atol=1e-3)
    report = json.loads(paths["report"].read_text())
    assert report["jacobian"]["min"] > 0 and report["levels"]
    field = sitk.ReadImage(str(paths["displacement"]), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    pts = pair.reference_points[:10]
    ours = result.transform_points(pts)
    theirs = np.array([tx.TransformPoint(tuple(map(float, p))) for p in pts])
    assert np.abs(ours - theirs).max() < 0.05


def test_options_are_validated():
    with pytest.raises(ValueError, match="levels_mm"):
        FFDOptions(levels_mm=(6.0, -3.0), control_spacing_mm=(40, 20), iterations=(10, 10))
    with pytest.raises(ValueError, match="one entry per level"):
        DemonsOptions(levels_mm=(4.0, 2.0), iterations=(10,))
    with pytest.raises(ValueError, match="metric"):
        FFDOptions(metric="cc")
    with pytest.raises(ValueError, match="preset"):
        options_for("fastest")
    with pytest.raises(ValueError, match="unknown registration option"):
        options_for("fast", iterations=3)
    with pytest.raises(ValueError, match="clip_hu"):
        RegistrationOptions(clip_hu=(400, -1000))
    with pytest.raises(ValueError, match="tolerance"):
        FFDOptions(tolerance=-1e-3)
    with pytest.raises(ValueError, match="tolerance"):
        DemonsOptions(tolerance=float("nan"))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="patience"):
            DemonsOptions(patience=bad)


def test_input_without_a_body_is_refused(ct64):
    air = ct64.with_array(np.full(ct64.shape, -1000.0, np.float32))
    with pytest.raises(GeometryError, match="floating"):
        ctreg.register(ct64, air, preset="fast")
    with pytest.raises(TypeError, match="reference"):
        ctreg.register(42, ct64)


@pytest.mark.slow
def test_large_initial_motion_is_recovered(ct64):
    # > 30 mm and > 15 degrees of rigid motion on top of breathing
    motion = BreathingMotion(
        diaphragm_mm=10.0,
        translation_mm=(20.0, -15.0, 15.0),
        rotation_deg=(5.0, -5.0, 15.0),
        seed=5,
    )
    pair = make_breathing_pair(ct64, motion, n_landmarks=150)
    assert np.linalg.norm(pair.reference_points - pair.floating_points, axis=1).mean() > 30.0
    result = ctreg.register(pair.reference, pair.floating, preset="fast")
    tre = _tre(result, pair)
    assert tre.mean() <= 1.0 and np.percentile(tre, 95) <= 2.0, f"TRE {tre.mean():.2f} mm"
    assert result.jacobian_determinant().min() > 0


def test_cropped_follow_up_with_padding(ct64):
    """The floating scan covers only part of the chest, with scanner padding at one side."""
    from ctreg.pyramid import crop

    grid = crop(ct64, (slice(12, 70), slice(0, 64), slice(0, 64)))  # a shorter follow-up
    motion = BreathingMotion(
        diaphragm_mm=12.0, translation_mm=(4.0, -3.0, 6.0), rotation_deg=(2.0, -2.0, 6.0), seed=4
    )
    pair = make_breathing_pair(ct64, motion, n_landmarks=150, floating_grid=grid)
    flt = pair.floating
    valid = np.ones(flt.shape, bool) if flt.valid is None else flt.valid.copy()
    valid[:, :, :5] = (
        False  # reconstructed field of view ends here: padding, as the reader marks it
    )
    padded = ctreg.Volume(np.where(valid, flt.array, -1024.0).astype(np.float32), flt.affine, valid)
    result = ctreg.register(pair.reference, padded)
    keep = np.all(padded.world_to_index(pair.floating_points)[:, 2:] >= 6, axis=1)
    tre = _tre(result, pair)[keep]
    assert keep.sum() > 50
    assert tre.mean() <= 1.0 and np.percentile(tre, 95) <= 2.0, f"TRE {tre.mean():.2f} mm"
    # where the floating scan has no data the output says so
    assert not result.warped.valid.all()
    assert np.all(result.warped.array[~result.warped.valid] == -1024.0)


def test_user_masks_are_used_and_checked(ct64):
    from ctreg.masks import lung_mask

    pair = make_breathing_pair(ct64, BreathingMotion(seed=6), n_landmarks=100)
    lungs = lung_mask(pair.reference)
    result = ctreg.register(pair.reference, pair.floating, preset="fast", reference_mask=lungs)
    tre = _tre(result, pair)
    assert tre.mean() <= 1.5
    with pytest.raises(GeometryError, match="reference_mask"):
        ctreg.register(pair.reference, pair.floating, reference_mask=lungs[1:])
    with pytest.raises(TypeError, match="floating_mask"):
        ctreg.register(pair.reference, pair.floating, floating_mask=lungs.astype(np.uint8))


def test_scans_that_do_not_overlap_are_refused(ct64):
    # the floating scan is a sliver at the side of the chest: not enough shared anatomy
    sliver = ctreg.Volume(ct64.array[:, :, :6].copy(), ct64.affine, None)
    with pytest.raises(GeometryError, match="overlap"):
        ctreg.register(ct64, sliver, preset="fast")


def test_demons_convergence_rule():
    from ctreg.demons import _converged

    falling = [100.0, 90.0, 81.0, 73.0]
    assert not _converged(falling, 2, 1e-3)
    flat = [100.0, 90.0, 89.99, 90.5]  # the last two did not beat 90 by 0.1 %
    assert _converged(flat, 2, 1e-3)
    assert not _converged(flat, 2, 0.0)  # tolerance 0: never early
    assert not _converged(flat, 3, 1e-3)  # 89.99 beat the best before it (100)
    assert not _converged(flat[:2], 2, 1e-3)  # too short to tell


def test_stages_stop_early_only_when_they_stop_gaining(ct64):
    """FFDOptions.tolerance and DemonsOptions.tolerance/patience end a level early; with
    tolerance 0 every iteration runs.  The displacement of a small motion barely changes."""
    from ctreg.ffd import MIN_ITERATIONS
    from ctreg.synthetic import BreathingMotion, make_breathing_pair

    pair = make_breathing_pair(ct64, BreathingMotion(seed=5, diaphragm_mm=6.0), n_landmarks=40)

    def run(ffd_tol, demons_tol):
        r = ctreg.register(
            pair.reference,
            pair.floating,
            preset="fast",
            ffd={"iterations": (12,), "tolerance": ffd_tol},
            demons={"iterations": (12,), "tolerance": demons_tol, "patience": 2},
        )
        levels = {lv["stage"]: lv for lv in r.report["levels"]}
        tre = np.linalg.norm(
            r.transform_points(pair.reference_points) - pair.floating_points, axis=1
        )
        return levels["bspline"], levels["demons"], tre.mean()

    b_all, d_all, tre_all = run(0.0, 0.0)
    # without a tolerance only L-BFGS-B's own criteria end the B-spline level (here after 10 or
    # more of the 12 iterations); demons run every iteration
    assert b_all["iterations"] > MIN_ITERATIONS + 3 and d_all["iterations"] == 12
    b_early, d_early, tre_early = run(0.5, 0.5)  # nothing gains 50 % per iteration
    assert b_early["iterations"] == MIN_ITERATIONS
    assert d_early["iterations"] == 2  # patience 2: the 3rd evaluation decides
    assert tre_early < 2.0 * tre_all + 0.5
