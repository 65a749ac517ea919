import json

import numpy as np
import pytest

import ctreg
from ctreg.cli import main


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "demo"
    assert main(["sample", str(out)]) == 0
    return out


def test_sample_pair_is_written_with_landmarks(sample_dir):
    ref = ctreg.read_dicom_series(sample_dir / "reference")
    flt = ctreg.read_dicom_series(sample_dir / "floating")
    assert ref.shape == flt.shape == (79, 64, 64)
    rows = np.loadtxt(sample_dir / "landmarks.csv", delimiter=",", skiprows=1)
    assert rows.shape[1] == 6 and rows.shape[0] >= 100
    assert np.linalg.norm(rows[:, :3] - rows[:, 3:], axis=1).mean() > 5.0  # there is motion to find
    with pytest.raises(ctreg.CTRegError, match="exists"):
        from ctreg.samples import write_sample_pair

        write_sample_pair(sample_dir)


def test_register_command_writes_all_outputs_and_reduces_tre(sample_dir, tmp_path, capsys):
    out = tmp_path / "registered"
    rc = main(
        [
            "register",
            str(sample_dir / "reference"),
            str(sample_dir / "floating"),
            "-o",
            str(out),
            "--preset",
            "fast",
            "--threads",
            "2",
            "--json",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["outputs"]) == {
        "nifti",
        "dicom",
        "displacement",
        "report",
        "itk_transform",
        "index",
        "report_html",
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "displacement.nii.gz",
        "registered.nii.gz",
        "registered.tar.gz",
        "report.html",
        "report.json",
        "result.json",
        "transform.h5",
    ]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<img ") == 15
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    sitk = pytest.importorskip("SimpleITK")
    rows = np.loadtxt(sample_dir / "landmarks.csv", delimiter=",", skiprows=1)
    tx = sitk.DisplacementFieldTransform(
        sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    )
    mapped = np.array([tx.TransformPoint(tuple(map(float, p))) for p in rows[:, :3]])
    tre = np.linalg.norm(mapped - rows[:, 3:], axis=1)
    assert tre.mean() < 1.5, f"mean TRE {tre.mean():.2f} mm with the fast preset"


def test_failed_register_leaves_no_output_folder(sample_dir, tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(
        ["register", str(sample_dir / "reference"), str(tmp_path / "missing"), "-o", str(out)]
    )
    assert rc != 0
    assert not out.exists()
    err = capsys.readouterr().err
    assert "error" in err and "missing" in err


def test_register_refuses_a_non_empty_output_folder(sample_dir, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = main(
        ["register", str(sample_dir / "reference"), str(sample_dir / "floating"), "-o", str(out)]
    )
    assert rc == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert "not empty" in capsys.readouterr().err


def test_register_no_report_and_a_failing_report_keep_the_outputs(
    sample_dir, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "plain"
    assert (
        main(
            [
                "register",
                str(sample_dir / "reference"),
                str(sample_dir / "floating"),
                "-o",
                str(out),
                "--preset",
                "fast",
                "--no-dicom",
                "--no-report",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "displacement.nii.gz",
        "registered.nii.gz",
        "report.json",
        "result.json",
        "transform.h5",
    ]

    from ctreg import report_html

    def broken(result, path, **kw):
        raise report_html.ReportError("broken on purpose", code="Report.Grid")

    monkeypatch.setattr(report_html, "write_report_html", broken)
    out = tmp_path / "broken"
    assert (
        main(
            [
                "register",
                str(sample_dir / "reference"),
                str(sample_dir / "floating"),
                "-o",
                str(out),
                "--preset",
                "fast",
                "--no-dicom",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "displacement.nii.gz",
        "registered.nii.gz",
        "report.json",
        "result.json",
        "transform.h5",
    ]
    assert any("Report.Grid" in r.getMessage() for r in caplog.records)


def test_register_takes_lung_and_body_masks_as_files(sample_dir, tmp_path, capsys):
    """--reference-lungs / --floating-lungs / --reference-mask FILE reach register() (the report
    says the masks came from the user); a mask on another grid fails with its code and no output."""
    from ctreg.io.labels import write_labels_nifti
    from ctreg.lungs import segment_lungs
    from ctreg.masks import body_mask

    ref = ctreg.read_dicom_series(sample_dir / "reference")
    flt = ctreg.read_dicom_series(sample_dir / "floating")
    write_labels_nifti(segment_lungs(ref).mask.astype(np.uint8), ref.affine, tmp_path / "rl.nii.gz")
    write_labels_nifti(segment_lungs(flt).mask.astype(np.uint8), flt.affine, tmp_path / "fl.nii.gz")
    write_labels_nifti(body_mask(ref).astype(np.uint8), ref.affine, tmp_path / "rb.nii.gz")
    out = tmp_path / "out"
    rc = main(
        [
            "register",
            str(sample_dir / "reference"),
            str(sample_dir / "floating"),
            "-o",
            str(out),
            "--preset",
            "fast",
            "--no-dicom",
            "--no-report",
            "--json",
            "--reference-lungs",
            str(tmp_path / "rl.nii.gz"),
            "--floating-lungs",
            str(tmp_path / "fl.nii.gz"),
            "--reference-mask",
            str(tmp_path / "rb.nii.gz"),
        ]
    )
    assert rc == 0
    lungs = json.loads(capsys.readouterr().out)["report"]["lungs"]
    assert lungs["source"] == "user" and lungs["images"]["floating_source"] == "user"
    shifted = ref.affine.copy()
    shifted[:3, 3] += 5.0  # the same shape, another place: not the reference's grid
    write_labels_nifti(segment_lungs(ref).mask.astype(np.uint8), shifted, tmp_path / "bad.nii.gz")
    bad = tmp_path / "bad_out"
    rc = main(
        [
            "register",
            str(sample_dir / "reference"),
            str(sample_dir / "floating"),
            "-o",
            str(bad),
            "--preset",
            "fast",
            "--reference-lungs",
            str(tmp_path / "bad.nii.gz"),
        ]
    )
    assert rc == 1 and not bad.exists()
    assert "[LungMask.GridMismatch]" in capsys.readouterr().err
