"""Per-phase timings and memory in the report, --profile, lazy imports (issue 13)."""

import json
import subprocess
import sys

import pytest

from ctreg import _timing
from ctreg.cli import main

PHASES = ("read", "masks", "affine", "bspline", "demons", "resample", "write")


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "demo"
    assert main(["sample", str(out)]) == 0
    return out


def test_report_has_seconds_and_memory_per_phase(sample_dir, tmp_path, capsys):
    out = tmp_path / "reg"
    rc = main(
        [
            "register",
            str(sample_dir / "reference"),
            str(sample_dir / "floating"),
            "-o",
            str(out),
            "--preset",
            "fast",
            "--profile",
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    seconds, memory = report["seconds"], report["memory"]
    assert set(PHASES) <= set(seconds)
    assert all(seconds[p] >= 0 for p in PHASES)
    assert seconds["read"] > 0 and seconds["write"] > 0  # the CLI read DICOM and wrote 3 files
    # the phases cover the job: their sum is the total, up to the checks between phases
    total = sum(seconds.values())
    assert total <= report["seconds_total"] + 1e-6
    assert total >= 0.5 * report["seconds_total"]
    assert set(PHASES) <= set(memory["phases"])
    peaks = [memory["phases"][p]["peak_rss_mib"] for p in PHASES if p != "read"]
    assert peaks == sorted(peaks)  # a high-water mark never falls
    assert 30 < memory["peak_rss_mib"] < 64 * 1024
    assert memory["peak_rss_mib"] >= max(peaks) - 0.1
    for p in PHASES:  # the --profile table names every phase
        assert any(line.split()[:1] == [p] for line in err.splitlines()), p
    assert "peak RSS" in err and "wall" in err


def test_register_api_report_has_phases_and_save_adds_write(tmp_path):
    from ctreg.samples import sample_pair

    import ctreg

    pair = sample_pair()
    result = ctreg.register(pair.reference, pair.floating, preset="fast")
    seconds = result.report["seconds"]
    assert set(PHASES) - {"write"} <= set(seconds) and "write" not in seconds
    before = result.report["seconds_total"]
    result.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["seconds"]["write"] > 0
    assert saved["seconds_total"] == pytest.approx(before + saved["seconds"]["write"])
    assert saved["memory"]["phases"]["write"]["peak_rss_mib"] > 0


def test_phase_timer_adds_and_formats():
    t = _timing.PhaseTimer()
    with t.phase("masks"):
        sum(range(1000))
    t.add("masks", 1.0)
    t.add("affine", 2.0)
    assert t.seconds["masks"] >= 1.0 and t.seconds["affine"] == 2.0
    report = {"seconds": dict(t.seconds), "memory": t.memory_report(), "seconds_total": 3.5}
    _timing.record(report, "write", 0.5)
    assert report["seconds_total"] == 4.0 and report["seconds"]["write"] == 0.5
    table = _timing.format_profile(report, wall_s=5.0)
    names = [line.split()[0] for line in table.splitlines()[1:4]]
    assert names == ["masks", "affine", "write"]  # in pipeline order
    assert _timing.peak_rss_mib() >= _timing.rss_mib() * 0.99 > 0
    age = _timing.process_age_s()
    assert age is None or age > 0


def _modules_after(code: str) -> set:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


HEAVY = {"numba", "scipy", "pydicom", "nibabel", "ctreg._native", "SimpleITK"}


def test_import_ctreg_imports_nothing_heavy():
    mods = _modules_after("import ctreg; ctreg.__version__; ctreg.CTRegError")
    assert not (HEAVY & mods), HEAVY & mods


def test_cli_help_imports_nothing_heavy():
    code = (
        "import sys, io, contextlib\nfrom ctreg.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "    try:\n        main(['register', '--help'])\n    except SystemExit:\n        pass\n"
        "assert 'register' in buf.getvalue()"
    )
    mods = _modules_after(code)
    assert not (HEAVY & mods), HEAVY & mods


def test_registration_imports_no_numba():
    """Every kernel is C++: a registration neither imports nor compiles Numba code."""
    mods = _modules_after(
        "import ctreg, numpy as np\n"
        "from ctreg.samples import ct64_dicom_path\n"
        "v = ctreg.read_dicom_series(ct64_dicom_path())\n"
        "r = ctreg.register(v, v, preset='fast', ffd={'enabled': False}, "
        "demons={'levels_mm': (4.0,)})\n"
        "r.jacobian_determinant(); ctreg.ops.jacobian_statistics(r.jacobian_determinant())\n"
        "ctreg.ops.invert_field(np.zeros((4, 4, 4, 3), np.float32), (1, 1, 1))\n"
    )
    assert "numba" not in mods


def test_lazy_names_resolve():
    import ctreg

    for name in ctreg.__all__:
        assert getattr(ctreg, name) is not None
    assert ctreg.ops.get_num_threads() >= 1
    with pytest.raises(AttributeError):
        ctreg.no_such_name  # noqa: B018


def test_bench_register_lists_every_phase_of_the_report():
    """benchmarks/bench_register.py prints a column per phase: the same names as ctreg._timing."""
    import ast
    from pathlib import Path

    from ctreg import _timing

    src = (Path(__file__).resolve().parents[1] / "benchmarks" / "bench_register.py").read_text()
    tree = ast.parse(src)
    found = [
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PHASES" for t in n.targets)
    ]
    assert found == [tuple(_timing.PHASES)]
