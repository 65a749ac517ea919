"""benchmarks/compare_simpleitk.py with a user pair: landmark files as users have them, and a run
that does only the pair it was given."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from methods import landmarks as lm  # noqa: E402

from ctreg.volume import Volume, affine_from_geometry  # noqa: E402

P = np.array([[-10.5, 20.25, -30.0], [1.0, 2.0, 3.0], [40.0, -50.0, 60.125], [7.0, 8.0, 9.0]])
Q = P + np.array([[1.0, -2.0, 0.5]]) + np.arange(4)[:, None] * 0.25


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _csv(rows, sep=","):
    return "\n".join(sep.join(str(v) for v in r) for r in rows) + "\n"


@pytest.mark.parametrize(
    "layout",
    [
        "plain",
        "header",
        "id-header",
        "id-first",
        "id-last-text",
        "text-id-no-header",
        "semicolon",
        "whitespace",
        "prefixed",
        "units",
        "comments",
    ],
)
def test_one_scan_files_in_every_layout(tmp_path, layout):
    ids = [f"L{i}" for i in range(len(P))]
    rows = {
        "plain": _csv(P.tolist()),
        "header": "x,y,z\n" + _csv(P.tolist()),
        "id-header": "id,x,y,z\n" + _csv([[i, *p] for i, p in zip(ids, P.tolist())]),
        "id-first": _csv([[n + 1, *p] for n, p in enumerate(P.tolist())]),
        "id-last-text": "x,y,z,name\n" + _csv([[*p, i] for i, p in zip(ids, P.tolist())]),
        "text-id-no-header": _csv([[i, *p] for i, p in zip(ids, P.tolist())]),
        "semicolon": "id;x;y;z\n" + _csv([[i, *p] for i, p in zip(ids, P.tolist())], ";"),
        "whitespace": "# my points\nid x y z\n"
        + _csv([[i, *p] for i, p in zip(ids, P.tolist())], "  "),
        "prefixed": "landmark,reference_x,reference_y,reference_z,comment\n"
        + _csv([[i, *p, "ok"] for i, p in zip(ids, P.tolist())]),
        "units": "Point, X (mm), Y (mm), Z (mm)\n"
        + _csv([[i, *p] for i, p in zip(ids, P.tolist())], ", "),
        "comments": "# exported\n\n" + _csv(P.tolist()) + "# end\n",
    }[layout]
    ps = lm.read_point_file(_write(tmp_path / "p.csv", rows))
    np.testing.assert_array_equal(ps.points, P)
    with_ids = layout not in ("plain", "header", "comments")
    assert (ps.ids is not None) == with_ids
    if layout in (
        "id-header",
        "text-id-no-header",
        "semicolon",
        "whitespace",
        "prefixed",
        "units",
        "id-last-text",
    ):
        assert ps.ids == ids


def test_paired_file_with_and_without_header_and_id(tmp_path):
    six = np.hstack([P, Q])
    for text in (
        _csv(six.tolist()),
        "reference_x,reference_y,reference_z,floating_x,floating_y,floating_z\n"
        + _csv(six.tolist()),
        "id,fixed_x,fixed_y,fixed_z,moving_x,moving_y,moving_z\n"
        + _csv([[n, *r] for n, r in enumerate(six.tolist())]),
        "x1 y1 z1 x2 y2 z2\n" + _csv(six.tolist(), " "),
        _csv([[n, *r] for n, r in enumerate(six.tolist())]),
    ):
        p, q = lm.read_landmark_pairs(landmarks=_write(tmp_path / "pairs.csv", text))
        np.testing.assert_array_equal(p, P)
        np.testing.assert_array_equal(q, Q)
    # the benchmark's original reader accepts the same files
    from methods.common import read_landmarks

    p, q = read_landmarks(tmp_path / "pairs.csv")
    np.testing.assert_array_equal(q, Q)


def test_two_files_are_paired_by_id_in_any_order(tmp_path):
    ref = _write(
        tmp_path / "ref.csv", "id,x,y,z\n" + _csv([[f"P{n}", *p] for n, p in enumerate(P.tolist())])
    )
    order = [2, 0, 3, 1]
    flo = _write(tmp_path / "flo.csv", _csv([[f"P{n}", *Q[n]] for n in order]))  # no header
    p, q = lm.read_landmark_pairs(reference_landmarks=ref, floating_landmarks=flo)
    np.testing.assert_array_equal(p, P)
    np.testing.assert_array_equal(q, Q)
    # without ids on one side: by order, and the counts must match
    flo2 = _write(tmp_path / "flo2.csv", _csv(Q[:3].tolist()))
    with pytest.raises(lm.LandmarkError) as info:
        lm.read_landmark_pairs(reference_landmarks=ref, floating_landmarks=flo2)
    assert info.value.code == "Landmarks.Count"
    flo3 = _write(tmp_path / "flo3.csv", _csv([[f"Q{n}", *Q[n]] for n in range(4)]))
    with pytest.raises(lm.LandmarkError) as info:
        lm.read_landmark_pairs(reference_landmarks=ref, floating_landmarks=flo3)
    assert info.value.code == "Landmarks.Ids"


def test_bad_files_name_what_is_wrong(tmp_path):
    cases = {
        "Landmarks.Columns": _csv([[1, 2]] * 3),
        "Landmarks.Empty": "# nothing\n",
        "Landmarks.Header": "a,b,c\n1,2,3\n",
        "Landmarks.Value": "x,y,z\n1,2,3\n4,five,6\n",
        "Landmarks.Ids": "id,x,y,z\nA,1,2,3\nA,4,5,6\n",
    }
    for code, text in cases.items():
        with pytest.raises(lm.LandmarkError) as info:
            lm.read_point_file(_write(tmp_path / "bad.csv", text))
        assert info.value.code == code, text


def test_slicer_fcsv_in_ras_and_markups_csv_in_lps(tmp_path):
    fcsv = (
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = RAS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        + "".join(
            f"vtkMRMLMarkupsFiducialNode_{n},{-p[0]},{-p[1]},{p[2]},0,0,0,1,1,1,0,F-{n},,\n"
            for n, p in enumerate(P)
        )
    )
    ps = lm.read_point_file(_write(tmp_path / "a.fcsv", fcsv))
    assert ps.space == "ras" and ps.ids == [f"vtkMRMLMarkupsFiducialNode_{n}" for n in range(4)]
    np.testing.assert_allclose(lm.to_world(ps.points, ps.space), P)
    markups = "label,l,p,s,defined,selected,visible,locked,description\n" + "".join(
        f"F-{n},{p[0]},{p[1]},{p[2]},true,true,true,false,\n" for n, p in enumerate(P)
    )
    ps = lm.read_point_file(_write(tmp_path / "b.csv", markups))
    assert ps.space == "lps" and ps.ids == [f"F-{n}" for n in range(4)]
    np.testing.assert_array_equal(lm.to_world(ps.points, ps.space), P)
    ras = "label,r,a,s\n" + "".join(f"F-{n},{-p[0]},{-p[1]},{p[2]}\n" for n, p in enumerate(P))
    ps = lm.read_point_file(_write(tmp_path / "c.csv", ras))
    np.testing.assert_allclose(lm.to_world(ps.points, ps.space), P)


def test_voxel_landmarks_use_each_scans_own_affine(tmp_path):
    ref = Volume(
        np.zeros((10, 12, 14), np.float32),
        affine_from_geometry((-5.0, 3.0, 100.0), (2.5, 0.7, 0.8)),
    )
    direction = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])[
        :, ::-1
    ]  # z, y, x axes: x and y flipped
    flo = Volume(
        np.zeros((8, 9, 10), np.float32),
        affine_from_geometry((50.0, 40.0, 90.0), (3.0, 1.0, 1.5), direction),
    )
    ijk_ref = np.array([[0, 0, 0], [13, 11, 9], [2.5, 3.0, 4.0]])
    ijk_flo = np.array([[1, 2, 3], [9, 8, 7], [0.5, 0.5, 0.5]])
    a = _write(tmp_path / "r.csv", _csv(ijk_ref.tolist()))
    b = _write(tmp_path / "f.csv", _csv((ijk_flo + 1).tolist()))
    p, _ = lm.read_landmark_pairs(
        reference_landmarks=a, floating_landmarks=a, space="voxel", reference=ref, floating=ref
    )
    expected = ref.index_to_world(ijk_ref[:, ::-1])
    np.testing.assert_allclose(p, expected)
    np.testing.assert_allclose(p[1], [-5.0 + 13 * 0.8, 3.0 + 11 * 0.7, 100.0 + 9 * 2.5])
    _, q = lm.read_landmark_pairs(
        reference_landmarks=a, floating_landmarks=b, space="voxel1", reference=ref, floating=flo
    )
    np.testing.assert_allclose(q[0], [50.0 - 1 * 1.5, 40.0 - 2 * 1.0, 90.0 + 3 * 3.0])


# -- a run with a user pair ------------------------------------------------------------------------


def test_user_pair_runs_alone_with_skipped_rows_noted(tmp_path, monkeypatch):
    """A small pair on different grids (NIfTI reference, cropped DICOM floating), landmarks in two
    files (one with header and ids, one without a header, rows shuffled): only that pair runs, the
    identity row's TRE is the landmarks' own distance, ctreg lowers it, and rows of libraries that
    are not installed are shown as skipped."""
    import compare_simpleitk
    import make_synthetic_pair

    import ctreg
    from ctreg.samples import sample_pair

    def no_standard_pairs(*a, **k):
        raise AssertionError("the built-in pairs must not run when a user pair is given")

    monkeypatch.setattr(make_synthetic_pair, "standard_pairs", no_standard_pairs)
    # elastix and ANTs take a minute here even when installed: their rows are shown as skipped,
    # with the note their real availability check gives when the package is missing
    import dataclasses

    import methods

    for name, module in (("elastix-affine+bspline", "itk"), ("ants-syn", "ants")):
        monkeypatch.setitem(
            methods.METHODS,
            name,
            dataclasses.replace(
                methods.METHODS[name], available=_missing(monkeypatch, methods, module)
            ),
        )

    pair = sample_pair(n_landmarks=40)
    ref_path = tmp_path / "ref.nii.gz"
    ctreg.write_nifti(pair.reference, ref_path, dtype="float32")
    flo = pair.floating
    crop = (slice(3, -2), slice(2, None), slice(None, -3))
    shift = flo.affine[:3, :3] @ np.array([3.0, 2.0, 0.0])
    aff = flo.affine.copy()
    aff[:3, 3] += shift
    flo_c = Volume(flo.array[crop], aff)
    assert flo_c.shape != pair.reference.shape
    ctreg.write_dicom_series(flo_c, tmp_path / "flo_dicom")
    # landmarks inside the cropped grid only
    idx = flo_c.world_to_index(pair.floating_points)
    keep = np.all((idx >= 1) & (idx <= np.asarray(flo_c.shape) - 2), axis=1)
    p, q = pair.reference_points[keep], pair.floating_points[keep]
    ids = [f"LM{n:03d}" for n in range(len(p))]
    _write(tmp_path / "ref.csv", "name,x,y,z\n" + _csv([[i, *r] for i, r in zip(ids, p.tolist())]))
    order = np.random.default_rng(1).permutation(len(q))
    _write(tmp_path / "flo.csv", _csv([[ids[n], *q[n].tolist()] for n in order], ";"))

    out = tmp_path / "results"
    rc = compare_simpleitk.main(
        [
            "--reference",
            str(ref_path),
            "--floating",
            str(tmp_path / "flo_dicom"),
            "--reference-landmarks",
            str(tmp_path / "ref.csv"),
            "--floating-landmarks",
            str(tmp_path / "flo.csv"),
            "--name",
            "mine",
            "--methods",
            "identity,ctreg-fast,sitk-affine+fsf-demons,elastix-affine+bspline,ants-syn",
            "--no-warmup",
            "--threads",
            "1",
            "--timeout",
            "300",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "latest" / "results.json").read_text())
    assert list(res["pairs"]) == ["mine"]
    rows = res["pairs"]["mine"]
    assert res["pair_info"]["mine"]["n_landmarks"] == len(p)
    initial = np.linalg.norm(p - q, axis=1)
    assert rows["identity"]["status"] == "ok"
    assert rows["identity"]["tre_mean_mm"] == pytest.approx(initial.mean(), abs=1e-6)
    assert rows["identity"]["tre_max_mm"] == pytest.approx(initial.max(), abs=1e-6)
    assert rows["ctreg-fast"]["status"] == "ok", rows["ctreg-fast"]
    assert rows["ctreg-fast"]["tre_mean_mm"] < 0.5 * initial.mean()
    md = (out / "latest" / "results.md").read_text()
    import importlib.util

    if importlib.util.find_spec("SimpleITK") is not None:  # its demons need one grid: resampled
        assert rows["sitk-affine+fsf-demons"]["status"] == "ok", rows["sitk-affine+fsf-demons"]
        assert rows["sitk-affine+fsf-demons"]["tre_mean_mm"] < 0.5 * initial.mean()

    for name, package in (("elastix-affine+bspline", "itk-elastix"), ("ants-syn", "antspyx")):
        assert rows[name]["status"].startswith("skipped: not installed")
        assert f"pip install {package}" in rows[name]["status"]
        assert f"| mine | {name} | skipped" in md
        assert (
            md.splitlines()[
                [n for n, ln in enumerate(md.splitlines()) if f"| {name} |" in ln][0]
            ].count("|")
            == 12
        )


def _missing(monkeypatch, methods, module):
    """The real availability check of ``module``, run as if the module were not installed."""
    import importlib.util

    check = methods._needs(module)
    real = importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name == module else real(name, *a, **k)

    def available():
        with monkeypatch.context() as m:
            m.setattr(importlib.util, "find_spec", find_spec)
            return check()

    return available


def test_user_pair_arguments_are_checked_before_anything_runs(tmp_path, capsys):
    import compare_simpleitk

    ref = _write(tmp_path / "r.csv", _csv(P.tolist()))
    flo = _write(tmp_path / "f.csv", _csv(Q[:2].tolist()))
    scan = _write(tmp_path / "scan.nii", "")
    base = ["--reference", str(scan), "--floating", str(scan), "--out", str(tmp_path / "o")]
    for extra, message in (
        (["--reference-landmarks", str(ref), "--floating-landmarks", str(flo)], "paired by order"),
        (["--reference-landmarks", str(ref)], "go together"),
        (
            [
                "--landmarks",
                str(ref),
                "--reference-landmarks",
                str(ref),
                "--floating-landmarks",
                str(ref),
            ],
            "not both",
        ),
        (["--landmarks", str(ref)], "Landmarks.Columns"),
    ):
        with pytest.raises(SystemExit) as info:
            compare_simpleitk.main(base + extra)
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
