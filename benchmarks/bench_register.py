"""End-to-end speed and memory of `ctreg register` against SimpleITK's recipe, in one run:
DICOM (or NIfTI) in, every output written (registered.nii.gz, registered.tar.gz DICOM series,
displacement.nii.gz, report.json), each method in a fresh process per run.

Pairs (``--pairs``): ``sample`` (the bundled 64x64x79 pair, ``ctreg sample``), ``popi``
(popi-00-dicom, 512x512x141, under a known breathing-like motion), ``512x512x300`` and ``600``
(the same anatomy resampled to 300 and 600 slices), ``empire10`` (EMPIRE10 pair 01, a real
exhale/inhale pair, ~100 M voxels per scan, when ``../shared/data/get-empire10-01.sh`` has
fetched it: converted to chest-like HU by ``ctreg.datasets.load_empire10``, v - 1000 inside
the lungs and 0 HU outside, as bench_empire10.py registers it, and written as DICOM series).
Reported per pair and method: wall time of the whole process, its peak RSS, the SimpleITK / ctreg
time ratio, TRE on the pair's landmarks (synthetic pairs; read back from displacement.nii.gz through
SimpleITK) and ctreg's per-phase table (``report.json``: seconds and peak RSS per phase).

    python benchmarks/bench_register.py   # sample and popi, ctreg default vs SimpleITK
    python benchmarks/bench_register.py --pairs sample --presets fast default
    python benchmarks/bench_register.py --pairs 512x512x300 600 --no-sitk   # ctreg only
    python benchmarks/bench_register.py --pairs empire10 --sitk-method affine
    python benchmarks/bench_register.py --source path/to/dicom_folder --frames 200
    # pairs made once, then reused:
    python benchmarks/bench_register.py --pairs empire10 --no-sitk --work /tmp/b --reuse

SimpleITK's recipe (benchmarks/methods/sitk_pipeline.py): affine (mean squares, regular-step
gradient descent, 3 levels) then multi-resolution fast symmetric forces demons (notebook 66),
outputs written with SimpleITK and tarfile.  Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "data" / "popi-00-dicom"
DEFAULT_EMPIRE = (
    Path(os.environ.get("CTREG_DATA", Path.home() / ".cache" / "ctreg-data")) / "empire10-01"
)

_RUNNER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": proc.returncode, "wall_s": wall, "peak_rss_gib": rss_kb / 1024**2,
                  "stderr_tail": proc.stderr[-2000:]}))
"""


def _resample_frames(volume, frames: int):
    """The same anatomy on `frames` slices (linear interpolation along z, same z extent)."""
    from ctreg import Volume

    nz = volume.shape[0]
    z = np.linspace(0, nz - 1, frames)
    arr = np.empty((frames,) + volume.shape[1:], np.float32)
    for k, zk in enumerate(z):
        k0 = int(np.floor(zk))
        k1 = min(nz - 1, k0 + 1)
        w = zk - k0
        arr[k] = (1 - w) * volume.array[k0] + w * volume.array[k1]
    aff = volume.affine.copy()
    aff[:3, 0] *= (nz - 1) / (frames - 1)
    return Volume(arr, aff, None, dict(volume.meta))


def make_pair(source: Path, work: Path, frames: int | None, seed: int):
    import ctreg
    from ctreg.synthetic import BreathingMotion, make_breathing_pair

    vol = ctreg.read_dicom_series(source)
    if frames is not None and frames != vol.shape[0]:
        vol = _resample_frames(vol, frames)
    motion = BreathingMotion(
        diaphragm_mm=20.0, translation_mm=(6.0, -5.0, 5.0), rotation_deg=(3.0, -3.0, 9.0), seed=seed
    )
    pair = make_breathing_pair(vol, motion, n_landmarks=300)
    ref_dir, flt_dir = work / "reference", work / "floating"
    ctreg.write_dicom_series(pair.reference, ref_dir, series_description="benchmark reference")
    ctreg.write_dicom_series(
        pair.floating,
        flt_dir,
        reference=pair.reference,
        floating=pair.reference,
        series_description="benchmark floating",
    )
    return pair.reference_points, pair.floating_points, ref_dir, flt_dir, pair.reference.shape


def make_sample(work: Path):
    from ctreg.samples import write_sample_pair

    written = write_sample_pair(work / "sample")
    rows = np.loadtxt(written["landmarks"], delimiter=",", skiprows=1)
    from ctreg import read_dicom_series

    shape = read_dicom_series(written["reference"]).shape
    return rows[:, :3], rows[:, 3:], written["reference"], written["floating"], shape


def make_empire(work: Path, data: Path):
    """EMPIRE10-01 as two DICOM series in chest-like HU (``ctreg.datasets.load_empire10``: the
    lung-only values v -> v - 1000 HU inside the lungs, 0 HU outside), as bench_empire10.py
    registers it."""
    import ctreg
    from ctreg.datasets import load_empire10

    pair = load_empire10(data)
    out = []
    for name, vol in (("reference", pair.reference), ("floating", pair.floating)):
        d = work / name
        ctreg.write_dicom_series(vol, d, series_description=f"empire10-01 {name}")
        out.append((d, vol.shape))
    return None, None, out[0][0], out[1][0], out[0][1]


def tre_from_outputs(out: Path, ref_pts, flt_pts) -> dict | None:
    if ref_pts is None:
        return None
    try:
        import SimpleITK as sitk
    except ImportError:
        return None
    field = sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    mapped = np.array([tx.TransformPoint(tuple(map(float, p))) for p in ref_pts])
    err = np.linalg.norm(mapped - flt_pts, axis=1)
    return {
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "p95": float(np.percentile(err, 95)),
        "max": float(err.max()),
    }


def _run(cmd: list[str], threads: int) -> dict:
    env = dict(
        os.environ,
        CTREG_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads),
    )
    return json.loads(
        subprocess.run(
            [sys.executable, "-c", _RUNNER] + cmd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


# ctreg._timing.PHASES (tests/test_performance.py keeps the two equal)
PHASES = (
    "read",
    "masks",
    "affine",
    "discrete",
    "lung_shape",
    "bspline",
    "demons",
    "sliding",
    "resample",
    "write",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--pairs",
        nargs="+",
        default=["sample", "popi"],
        choices=["sample", "popi", "512x512x300", "600", "empire10", "source"],
    )
    ap.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="DICOM folder of a chest CT for popi/512x512x300/600 (default popi-00-dicom)",
    )
    ap.add_argument(
        "--frames",
        type=int,
        default=None,
        help="pair 'source': resample the scan to this many slices",
    )
    ap.add_argument(
        "--empire", type=Path, default=DEFAULT_EMPIRE, help="folder of get-empire10-01.sh's files"
    )
    ap.add_argument("--presets", nargs="+", default=["default"])
    ap.add_argument(
        "--sitk-method",
        default="fsf-demons",
        choices=["fsf-demons", "diffeo-demons", "bspline", "affine"],
    )
    ap.add_argument("--no-sitk", action="store_true", help="run ctreg only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep pairs and outputs here (default: a temporary folder)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --work: reuse the pairs a previous run wrote there instead of making them again",
    )
    args = ap.parse_args(argv)
    if "source" in args.pairs and args.frames is None:
        args.frames = None
    run_sitk = not args.no_sitk
    if run_sitk:
        try:
            import SimpleITK  # noqa: F401
        except ImportError:
            print(
                "SimpleITK is not installed: ctreg only (pip install '.[bench]')", file=sys.stderr
            )
            run_sitk = False
    ctreg_exe = [sys.executable, "-m", "ctreg"]
    sitk_exe = [sys.executable, str(HERE / "methods" / "sitk_pipeline.py")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctreg-bench-") as tmp:
        root = args.work or Path(tmp)
        for pair_name in args.pairs:
            work = root / pair_name
            work.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            saved = work / "pair.json"
            if args.reuse and saved.exists():
                s = json.loads(saved.read_text())
                made = (
                    None if s["ref_pts"] is None else np.array(s["ref_pts"]),
                    None if s["flt_pts"] is None else np.array(s["flt_pts"]),
                    Path(s["ref_dir"]),
                    Path(s["flt_dir"]),
                    tuple(s["shape"]),
                )
            elif pair_name == "sample":
                made = make_sample(work)
            elif pair_name == "empire10":
                if not (args.empire / "floating.nii.gz").exists():
                    print(
                        f"empire10: {args.empire} not found "
                        "(bash ../shared/data/get-empire10-01.sh); skipped"
                    )
                    continue
                made = make_empire(work, args.empire)
            else:
                if not args.source.exists():
                    print(f"{pair_name}: source not found: {args.source}; skipped", file=sys.stderr)
                    continue
                frames = {"popi": None, "512x512x300": 300, "600": 600, "source": args.frames}[
                    pair_name
                ]
                made = make_pair(args.source, work, frames, args.seed)
            ref_pts, flt_pts, ref_dir, flt_dir, shape = made
            if args.work is not None and not saved.exists():
                saved.write_text(
                    json.dumps(
                        {
                            "ref_pts": None if ref_pts is None else np.asarray(ref_pts).tolist(),
                            "flt_pts": None if flt_pts is None else np.asarray(flt_pts).tolist(),
                            "ref_dir": str(ref_dir),
                            "flt_dir": str(flt_dir),
                            "shape": [int(n) for n in shape],
                        }
                    )
                )
            initial = (
                ""
                if ref_pts is None
                else (
                    f", {len(ref_pts)} landmarks, "
                    f"initial TRE {np.linalg.norm(ref_pts - flt_pts, axis=1).mean():.2f} mm"
                )
            )
            print(
                f"pair {pair_name}: {shape} voxels (z, y, x){initial} "
                f"(made in {time.perf_counter() - t:.1f} s)",
                flush=True,
            )
            methods = [
                (
                    f"ctreg {p}",
                    ctreg_exe
                    + [
                        "register",
                        str(ref_dir),
                        str(flt_dir),
                        "-o",
                        "{out}",
                        "--preset",
                        p,
                        "--threads",
                        str(args.threads),
                    ],
                )
                for p in args.presets
            ]
            if run_sitk:
                methods.append(
                    (
                        f"SimpleITK {args.sitk_method}",
                        sitk_exe
                        + [
                            str(ref_dir),
                            str(flt_dir),
                            "{out}",
                            "--threads",
                            str(args.threads),
                            "--method",
                            args.sitk_method,
                        ],
                    )
                )
            for label, cmd in methods:
                out = work / ("out-" + label.replace(" ", "-"))
                if out.exists():  # a previous run's outputs (--work)
                    import shutil

                    shutil.rmtree(out)
                res = _run([c.replace("{out}", str(out)) for c in cmd], args.threads)
                row = {
                    "pair": pair_name,
                    "method": label,
                    "shape": list(shape),
                    "threads": args.threads,
                }
                if res["rc"] != 0:
                    print(f"  {label}: FAILED\n{res['stderr_tail']}", file=sys.stderr)
                    rows.append(dict(row, failed=True))
                    continue
                report = json.loads((out / "report.json").read_text())
                row.update(
                    wall_s=res["wall_s"],
                    peak_rss_gib=res["peak_rss_gib"],
                    tre_mm=tre_from_outputs(out, ref_pts, flt_pts),
                    seconds=report.get("seconds", {}),
                    memory=report.get("memory", {}),
                    jacobian=report.get("jacobian"),
                )
                rows.append(row)
                tre = row["tre_mm"]
                tre_s = (
                    "" if tre is None else f", TRE mean/p95 {tre['mean']:.2f} / {tre['p95']:.2f} mm"
                )
                print(
                    f"  {label:>22}: {res['wall_s']:6.1f} s wall, "
                    f"peak RSS {res['peak_rss_gib']:.2f} GiB{tre_s}",
                    flush=True,
                )
                if args.work is None:
                    import shutil

                    shutil.rmtree(out, ignore_errors=True)
    _print_tables(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _print_tables(rows: list[dict]) -> None:
    print(
        "\n| pair | voxels (z,y,x) | method | wall s | "
        "peak RSS GiB | SimpleITK / ctreg time | TRE mean mm | TRE p95 mm |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed"):
            print(
                f"| {r['pair']} | {'x'.join(map(str, r['shape']))} | "
                f"{r['method']} | failed | | | | |"
            )
            continue
        sitk_rows = [
            q
            for q in rows
            if q["pair"] == r["pair"]
            and q["method"].startswith("SimpleITK")
            and not q.get("failed")
        ]
        ratio = (
            f"{sitk_rows[0]['wall_s'] / r['wall_s']:.1f}x"
            if sitk_rows and r["method"].startswith("ctreg")
            else ""
        )
        tre = r["tre_mm"] or {}
        f = lambda k, tre=tre: f"{tre[k]:.2f}" if k in tre else ""
        print(
            f"| {r['pair']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['method']} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_gib']:.2f} | {ratio} | {f('mean')} | {f('p95')} |"
        )
    print("\nper phase: seconds (peak RSS GiB when the phase ended)")
    names = list(PHASES) + ["register"]
    print("| pair | method | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        if r.get("failed"):
            continue
        mem = r.get("memory", {}).get("phases", {})
        cells = []
        for n in names:
            if n not in r["seconds"]:
                cells.append("")
                continue
            peak = mem.get(n, {}).get("peak_rss_mib")
            cells.append(
                f"{r['seconds'][n]:.2f}" + ("" if peak is None else f" ({peak / 1024:.2f})")
            )
        print(f"| {r['pair']} | {r['method']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
