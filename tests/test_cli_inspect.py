"""`ctreg inspect`: what a source holds and the verdict against the input rules."""

from __future__ import annotations

import json
import re

import numpy as np

from ctreg import Volume, write_nifti
from ctreg.cli import main
from dicom_synth import write_series


def test_inspect_sample_text(capsys):
    assert main(["inspect", "--sample"]) == 0
    out = capsys.readouterr().out
    assert "size (x, y, z): 64 x 64 x 79 voxels" in out
    assert "spacing (x, y, z): 4.172 x 4.172 x 3.987 mm" in out
    assert "orientation: LPS" in out and "Implicit VR Little Endian" in out
    assert "series found: 1" in out and "79 frame(s) in 79 file(s)" in out
    assert "verdict: VALID" in out


def test_inspect_sample_json(capsys):
    assert main(["inspect", "--sample", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["valid"] is True and rep["error"] is None
    v = rep["volume"]
    assert v["size_xyz"] == [64, 64, 79] and v["n_frames"] == 79
    assert -1100 < v["hu_min"] < -900 and 500 < v["hu_max"] < 3000
    assert v["padding_fraction"] == 0.0


def test_inspect_invalid_oblique(shared_data, capsys):
    assert main(["inspect", str(shared_data("edge-cases", "oblique-synthetic"))]) == 1
    cap = capsys.readouterr()
    assert "verdict: INVALID" in cap.out and "not axial" in cap.err


def test_inspect_lists_every_series_and_selects_one(tmp_path, capsys):
    a = write_series(tmp_path, 8, description="first", names=[f"a{k}" for k in range(8)])
    b = write_series(tmp_path, 9, description="second", names=[f"b{k}" for k in range(9)])
    assert main(["inspect", str(tmp_path), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert {s["series_uid"] for s in rep["series"]} == {a["series_uid"], b["series_uid"]}
    assert "holds 2 series" in rep["error"] and rep["error_code"] == "InvalidFile.Series"
    assert main(["inspect", str(tmp_path), "--series-uid", b["series_uid"]]) == 0
    out = capsys.readouterr().out
    assert "series found: 2" in out and "size (x, y, z): 8 x 8 x 9 voxels" in out


def test_inspect_frame_count_error_code(tmp_path, capsys):
    write_series(tmp_path, 3)
    assert main(["inspect", str(tmp_path), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["error_code"] == "InvalidFile.FrameCount" and "has 3 frame(s)" in rep["error"]
    assert rep["volume"]["size_xyz"] == [8, 8, 3]  # what was found is still described


def test_inspect_shows_padding_of_a_refused_series(shared_data, capsys):
    assert main(["inspect", str(shared_data("cip-simple-dicom"))]) == 1
    out = capsys.readouterr().out
    m = re.search(r"padding: ([\d.]+) % of voxels", out)
    assert m and 5.0 < float(m.group(1)) < 60.0  # -3024 outside the round field of view
    assert "size (x, y, z): 512 x 512 x 2 voxels" in out and "verdict: INVALID" in out


def test_inspect_nifti(tmp_path, capsys):
    vol = Volume(np.full((4, 5, 6), -500.0, np.float32), np.diag([2.0, 1.0, 1.0, 1.0]))
    p = write_nifti(vol, tmp_path / "v.nii.gz")
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "size (x, y, z): 6 x 5 x 4 voxels" in out and "READABLE" in out
    assert "HU range: -500 to -500" in out


def test_inspect_usage_errors(tmp_path, capsys):
    assert main(["inspect"]) == 2
    assert main(["inspect", str(tmp_path / "missing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
