"""ctreg register --save-result, ctreg apply (images and --labels), the progress bar."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import ctreg
from ctreg.cli import main
from ctreg.io.labels import write_labels_nifti


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The sample pair registered once (fast preset): -o and --save-result folders."""
    root = tmp_path_factory.mktemp("apply")
    assert main(["sample", str(root / "demo")]) == 0
    rc = main(
        [
            "register",
            str(root / "demo" / "reference"),
            str(root / "demo" / "floating"),
            "-o",
            str(root / "out"),
            "--save-result",
            str(root / "saved"),
            "--preset",
            "fast",
            "--no-dicom",
        ]
    )
    assert rc == 0
    return root


def test_save_result_folder_holds_the_reusable_files(run):
    assert sorted(p.name for p in (run / "saved").iterdir()) == [
        "displacement.nii.gz",
        "report.json",
        "result.json",
        "transform.h5",
    ]
    a, b = ctreg.load_result(run / "saved"), ctreg.load_result(run / "out")
    np.testing.assert_array_equal(a.displacement, b.displacement)
    assert a.warped is None and b.warped is not None


def test_apply_to_the_floating_scan_reproduces_the_registered_image(run, capsys):
    out = run / "again.nii.gz"
    assert main(["apply", str(run / "saved"), str(run / "demo" / "floating"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    got = nib.load(str(out))
    assert got.get_data_dtype() == np.int16
    mine = ctreg.read_nifti(out)
    registered = ctreg.read_nifti(run / "out" / "registered.nii.gz")
    assert np.allclose(mine.affine, registered.affine, atol=1e-4)
    inside = (mine.array > -1000) & (registered.array > -1000)
    assert inside.mean() > 0.3
    assert np.abs(mine.array - registered.array)[inside].max() <= 1.0  # int16 rounding


@pytest.mark.parametrize("dtype,offset", [(np.uint8, 1), (np.int32, 1_000_000_001)])
def test_apply_labels_keeps_values_and_dtype(run, tmp_path, dtype, offset):
    flt = ctreg.read_volume(run / "demo" / "floating")
    lab = np.zeros(flt.shape, dtype)
    lab[flt.array > -400] = offset  # body
    lab[(flt.array > -950) & (flt.array < -600)] = offset + 2  # lung-ish
    src = write_labels_nifti(lab, flt.affine, tmp_path / "labels.nii.gz")
    out = tmp_path / "warped-labels.nii.gz"
    assert main(["apply", str(run / "saved"), str(src), "-o", str(out), "--labels"]) == 0
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.dtype(dtype)
    warped = np.asarray(img.dataobj).T
    assert set(np.unique(warped)) <= {0, offset, offset + 2}
    from ctreg.io.labels import read_labels

    back, aff = read_labels(src)  # the file's float32 sform: the affine the command used
    np.testing.assert_array_equal(back, lab)
    expected = ctreg.load_result(run / "saved").warp(lab, interpolation="nearest", affine=aff)
    np.testing.assert_array_equal(warped, expected)


def test_apply_errors_have_clear_messages(run, tmp_path, capsys):
    assert (
        main(
            [
                "apply",
                str(tmp_path / "none"),
                str(run / "demo" / "floating"),
                "-o",
                str(tmp_path / "x.nii.gz"),
            ]
        )
        == 1
    )
    assert "no such result folder" in capsys.readouterr().err
    flt = ctreg.read_volume(run / "demo" / "floating")
    ctreg.write_nifti(
        flt.with_array(flt.array * 0 + 0.5), tmp_path / "half.nii.gz", dtype="float32"
    )
    assert (
        main(
            [
                "apply",
                str(run / "saved"),
                str(tmp_path / "half.nii.gz"),
                "-o",
                str(tmp_path / "x.nii.gz"),
                "--labels",
            ]
        )
        == 1
    )
    assert "non-integer" in capsys.readouterr().err
    assert (
        main(
            [
                "apply",
                str(run / "saved"),
                str(run / "demo" / "floating"),
                "-o",
                str(tmp_path / "x.mha"),
            ]
        )
        == 1
    )
    assert ".nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


def test_register_needs_an_output(run, capsys):
    assert main(["register", str(run / "demo" / "reference"), str(run / "demo" / "floating")]) == 1
    assert "--save-result" in capsys.readouterr().err


def test_cli_transform_h5_maps_landmarks_like_transform_points(run):
    sitk = pytest.importorskip("SimpleITK")
    res = ctreg.load_result(run / "out")
    rows = np.loadtxt(run / "demo" / "landmarks.csv", delimiter=",", skiprows=1)
    tx = sitk.ReadTransform(str(run / "out" / "transform.h5"))
    itk = np.array([tx.TransformPoint(tuple(map(float, p))) for p in rows[:, :3]])
    ours = res.transform_points(rows[:, :3])
    assert np.abs(itk - ours).max() < 0.05
    assert np.linalg.norm(itk - rows[:, 3:], axis=1).mean() < 1.5  # and it is the registration
    back, err = res.inverse_transform_points(ours, return_error=True)
    assert err.max() < 1e-3
    np.testing.assert_allclose(back, rows[:, :3], atol=1e-3)


# -- progress bar ------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_follows_stage_records_and_hides_them():
    from ctreg.progress import ProgressBar, progress_enabled

    assert progress_enabled(_Tty()) and not progress_enabled(io.StringIO())
    stream, lines = _Tty(), io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(lines)
    root.addHandler(handler)
    log = logging.getLogger("ctreg")
    old = log.level
    log.setLevel(logging.INFO)
    try:
        with ProgressBar(enabled=True, stream=stream) as bar:
            log.info("affine: level %d/%d (%.1f mm)", 2, 3, 4.0)
            assert 0.08 < bar.fraction < 0.30 and bar.label == "affine 2/3"
            log.info("demons: level %d/%d (%.1f mm)", 1, 2, 2.0)
            log.info("something else")
            log.info("b-spline: level %d/%d (%.1f mm)", 1, 2, 2.0)  # never goes back
            assert bar.fraction >= 0.55
    finally:
        root.removeHandler(handler)
        log.setLevel(old)
    drawn = stream.getvalue()
    assert "affine 2/3" in drawn and "demons 1/2" in drawn and "100%" in drawn
    assert lines.getvalue() == "something else\n"  # stage records shown by the bar only


def test_no_progress_bar_when_stderr_is_not_a_terminal(run, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctreg",
            "register",
            str(run / "demo" / "reference"),
            str(run / "demo" / "floating"),
            "--save-result",
            str(tmp_path / "r"),
            "--preset",
            "fast",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "affine: level 1/" in proc.stderr
    assert (tmp_path / "r" / "transform.h5").is_file()
