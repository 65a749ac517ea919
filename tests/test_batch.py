"""ctreg batch: the pairs file, resuming, failures, and a run on a Dask cluster."""

import csv
import json

import numpy as np
import pytest

import ctreg
from ctreg import batch
from ctreg.cli import main
from ctreg.volume import Volume

SHIFTS = {"a": (4.0, -3.0, 2.0), "b": (-2.0, 5.0, -4.0)}


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    """A small reference (the bundled scan subsampled to 32 x 32 x 40) and two floating scans:
    the same anatomy moved by a known translation, so a reference point p maps to p + shift."""
    from ctreg.samples import ct64_volume

    root = tmp_path_factory.mktemp("batch-data")
    ct = ct64_volume()
    small = Volume(ct.array[::2, ::2, ::2], ct.affine @ np.diag([2.0, 2.0, 2.0, 1.0]))
    ctreg.write_nifti(small, root / "ref.nii.gz")
    for key, shift in SHIFTS.items():
        aff = small.affine.copy()
        aff[:3, 3] += shift
        ctreg.write_nifti(Volume(small.array, aff), root / f"flo_{key}.nii.gz")
    return root


def _csv(path, rows, header=("reference", "floating", "name")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _summary(out):
    with open(out / "summary.csv", newline="") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def _check_shift(folder, shift):
    """The saved displacement maps the reference onto the floating scan: u ~ the shift."""
    import nibabel as nib

    img = nib.load(str(folder / "displacement.nii.gz"))
    u = np.asarray(img.dataobj, dtype=np.float64).reshape(-1, 3)
    u_lps = u * np.array([-1.0, -1.0, 1.0])  # ITK-style storage: RAS sign
    centre = np.median(u_lps, axis=0)
    assert np.allclose(centre, shift, atol=1.0), (centre, shift)


# -- the pairs file ----------------------------------------------------------------------------


def test_read_pairs_with_and_without_header(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    p = _csv(sub / "pairs.csv", [["r1.nii.gz", "f1.nii.gz", "one"], ["/abs/r2", "f2", ""]])
    pairs = batch.read_pairs(p)
    assert [x.name for x in pairs] == ["one", "pair002"]
    assert pairs[0].reference == str(sub / "r1.nii.gz")  # relative to the CSV's folder
    assert pairs[1].reference == "/abs/r2" and pairs[1].floating == str(sub / "f2")
    p = _csv(tmp_path / "noheader.csv", [["r1", "f1"], ["r2", "f2", "x_2.b"]], header=None)
    assert [x.name for x in batch.read_pairs(p)] == ["pair001", "x_2.b"]
    p = _csv(
        tmp_path / "reordered.csv",
        [["n1", "f1", "r1", "note"]],
        header=("name", "floating", "reference", "comment"),
    )
    (x,) = batch.read_pairs(p)
    assert (x.name, x.reference, x.floating) == ("n1", str(tmp_path / "r1"), str(tmp_path / "f1"))


@pytest.mark.parametrize(
    "rows,header,code",
    [
        ([], ("reference", "floating"), "Batch.PairsFile"),
        ([["r", "f", "n", "extra"]], None, "Batch.PairsFile"),
        ([["r", "", "n"]], ("reference", "floating", "name"), "Batch.PairsFile"),
        ([["r", "f"]], ("reference", "moving"), "Batch.PairsFile"),
        ([["r", "f", "../up"]], ("reference", "floating", "name"), "Batch.Name"),
        ([["r", "f", "a"], ["r", "f", "A"]], ("reference", "floating", "name"), "Batch.Name"),
    ],
)
def test_bad_pairs_files_name_what_is_wrong(tmp_path, rows, header, code):
    with pytest.raises(batch.BatchError) as info:
        batch.read_pairs(_csv(tmp_path / "p.csv", rows, header=header))
    assert info.value.code == code
    assert isinstance(info.value, ctreg.CTRegError)


# -- local runs --------------------------------------------------------------------------------


def test_batch_runs_resumes_and_reports_failures(pair_files, tmp_path, capsys, monkeypatch):
    pairs = _csv(
        tmp_path / "pairs.csv",
        [
            [str(pair_files / "ref.nii.gz"), str(pair_files / "flo_a.nii.gz"), "a"],
            [str(pair_files / "ref.nii.gz"), str(pair_files / "missing.nii.gz"), "gone"],
            [str(pair_files / "ref.nii.gz"), str(pair_files / "flo_b.nii.gz"), "b"],
        ],
    )
    out = tmp_path / "out"
    args = [
        "batch",
        str(pairs),
        "--out",
        str(out),
        "--preset",
        "fast",
        "--no-dicom",
        "--no-report",
        "--threads",
        "2",
    ]
    assert main(args) == 1  # one pair failed
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # one line per pair
    assert lines[0].startswith("ok") and " a: " in lines[0]
    assert lines[1].startswith("FAILED") and "gone" in lines[1] and "Batch.MissingInput" in lines[1]
    assert lines[2].startswith("ok") and " b: " in lines[2]
    for key, shift in SHIFTS.items():
        folder = out / key
        done = json.loads((folder / batch.DONE_FILE).read_text())
        assert done["status"] == "ok" and done["jacobian_percent_nonpositive"] == 0.0
        assert sorted(done["files"]) == sorted(p.name for p in folder.iterdir())
        _check_shift(folder, shift)
    err = json.loads((out / "gone" / batch.ERROR_FILE).read_text())
    assert (
        err["error_code"] == "Batch.MissingInput" and not (out / "gone" / batch.DONE_FILE).exists()
    )
    rows = _summary(out)
    assert [rows[n]["status"] for n in ("a", "gone", "b")] == ["ok", "failed", "ok"]
    assert float(rows["a"]["seconds"]) > 0 and rows["gone"]["error_code"] == "Batch.MissingInput"
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]

    # re-run: the finished pairs are skipped (register is not called for them), the failed one
    # is tried again; a half-done pair (folder without DONE.json) is redone
    done_a = (out / "a" / batch.DONE_FILE).stat().st_mtime_ns
    (out / "b" / batch.DONE_FILE).unlink()  # as if killed before the end
    (out / ".a.x1y2.part").mkdir()  # an old temporary: cleaned
    calls = []
    real = ctreg.pipeline.register

    def counting(reference, floating, **kw):
        calls.append(reference.shape)
        return real(reference, floating, **kw)

    monkeypatch.setattr(ctreg.pipeline, "register", counting)
    assert main(args) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("done") and " a: " in lines[0] and "earlier run" in lines[0]
    assert any(ln.startswith("ok") and " b: " in ln for ln in lines)
    assert any(ln.startswith("FAILED") and "gone" in ln for ln in lines)
    assert len(calls) == 1  # only b was registered again
    assert (out / "a" / batch.DONE_FILE).stat().st_mtime_ns == done_a
    assert (out / "b" / batch.DONE_FILE).exists()
    _check_shift(out / "b", SHIFTS["b"])
    rows = _summary(out)
    assert [rows[n]["status"] for n in ("a", "gone", "b")] == ["done", "failed", "ok"]

    # with the missing input there, the batch ends with every pair finished and exit status 0
    import shutil

    shutil.copy(pair_files / "flo_a.nii.gz", pair_files / "missing.nii.gz")
    try:
        assert main(args) == 0
        assert {r["status"] for r in _summary(out).values()} == {"done", "ok"}
        assert not (out / "gone" / batch.ERROR_FILE).exists()
        assert (out / "gone" / batch.DONE_FILE).exists()
    finally:
        (pair_files / "missing.nii.gz").unlink()


def test_batch_with_report_and_a_pair_that_fails_inside_register(pair_files, tmp_path, capsys):
    pairs = _csv(
        tmp_path / "pairs.csv",
        [
            [str(pair_files / "ref.nii.gz"), str(pair_files / "flo_a.nii.gz")],
            [str(pair_files / "ref.nii.gz"), str(tmp_path / "pairs.csv")],
        ],
        header=None,
    )
    out = tmp_path / "out"
    rc = main(["batch", str(pairs), "--out", str(out), "--preset", "fast", "--no-dicom"])
    assert rc == 1
    rows = _summary(out)
    assert rows["pair001"]["status"] == "ok"
    html = (out / "pair001" / "report.html").read_text(encoding="utf-8")
    # the "before" row and figures, made before the floating scan was let go
    assert html.count("<img ") == 15 and "before" in html
    assert rows["pair002"]["status"] == "failed" and rows["pair002"]["error_code"].startswith(
        "InvalidFile"
    )


def test_a_second_batch_on_the_same_folder_is_refused(pair_files, tmp_path, capsys):
    import fcntl

    pairs = _csv(
        tmp_path / "pairs.csv", [[str(pair_files / "ref.nii.gz"), str(pair_files / "flo_a.nii.gz")]]
    )
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".batch.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        assert main(["batch", str(pairs), "--out", str(out), "--preset", "fast"]) == 1
    assert "another ctreg batch" in capsys.readouterr().err
    assert not (out / "pair001").exists()


# -- Dask --------------------------------------------------------------------------------------


def test_batch_on_a_dask_cluster(pair_files, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    pairs = _csv(
        tmp_path / "pairs.csv",
        [
            [str(pair_files / "ref.nii.gz"), str(pair_files / "flo_a.nii.gz"), "a"],
            [str(pair_files / "ref.nii.gz"), str(pair_files / "nothere.nii.gz"), "bad"],
            [str(pair_files / "ref.nii.gz"), str(pair_files / "flo_b.nii.gz"), "b"],
        ],
    )
    out = tmp_path / "out"
    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        args = [
            "batch",
            str(pairs),
            "--out",
            str(out),
            "--preset",
            "fast",
            "--no-dicom",
            "--no-report",
            "--scheduler",
            cluster.scheduler_address,
        ]
        assert main(args) == 1
        lines = capsys.readouterr().out.strip().splitlines()
        assert sorted(ln.split()[0] for ln in lines) == ["FAILED", "ok", "ok"]
        rows = _summary(out)
        assert [rows[n]["status"] for n in ("a", "bad", "b")] == ["ok", "failed", "ok"]
        for key, shift in SHIFTS.items():
            _check_shift(out / key, shift)
        assert main(args) == 1  # resumed: nothing left but "bad"
        rows = _summary(out)
        assert [rows[n]["status"] for n in ("a", "bad", "b")] == ["done", "failed", "done"]


def test_an_unreachable_scheduler_is_a_clear_error(pair_files, tmp_path):
    pytest.importorskip("distributed")
    pairs = _csv(
        tmp_path / "pairs.csv", [[str(pair_files / "ref.nii.gz"), str(pair_files / "flo_a.nii.gz")]]
    )
    with pytest.raises(batch.BatchError) as info:
        batch.run_batch(pairs, tmp_path / "out", scheduler="tcp://127.0.0.1:9", connect_timeout_s=2)
    assert info.value.code == "Batch.Dask" and "cannot reach the Dask scheduler" in str(info.value)
    assert not (tmp_path / "out" / "pair001").exists()
