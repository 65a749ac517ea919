"""End-to-end speed and memory of `ctreg register`: DICOM folders in, both outputs written.

Builds a synthetic pair from a real scan (reference = the scan, floating = the same anatomy under
a known breathing-like motion, written as a DICOM series), then runs the command line
`ctreg register REF FLT -o OUT --preset P --threads N` in a fresh process per run and reports
wall time, peak RSS of that process, and the target registration error on the pair's landmarks
(read back from OUT/displacement.nii.gz through SimpleITK, when installed).

    python benchmarks/bench_register.py                       # popi-00-dicom, default preset
    python benchmarks/bench_register.py --presets fast default accurate
    python benchmarks/bench_register.py --frames 600          # the service's largest input
    python benchmarks/bench_register.py --source path/to/dicom_folder

Never run as a test.  Needs ../shared/data (or --source).
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
    motion = BreathingMotion(diaphragm_mm=20.0, translation_mm=(6.0, -5.0, 5.0),
                             rotation_deg=(3.0, -3.0, 9.0), seed=seed)
    pair = make_breathing_pair(vol, motion, n_landmarks=300)
    ref_dir, flt_dir = work / "reference", work / "floating"
    ctreg.write_dicom_series(pair.reference, ref_dir, series_description="benchmark reference")
    ctreg.write_dicom_series(pair.floating, flt_dir, reference=pair.reference, floating=pair.reference,
                             series_description="benchmark floating")
    return pair, ref_dir, flt_dir


def tre_from_outputs(out: Path, pair) -> dict | None:
    try:
        import SimpleITK as sitk
    except ImportError:
        return None
    field = sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    mapped = np.array([tx.TransformPoint(tuple(map(float, p))) for p in pair.reference_points])
    err = np.linalg.norm(mapped - pair.floating_points, axis=1)
    return {"mean": float(err.mean()), "median": float(np.median(err)),
            "p95": float(np.percentile(err, 95)), "max": float(err.max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="DICOM folder of a chest CT")
    ap.add_argument("--presets", nargs="+", default=["default"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=None, help="resample the scan to this many slices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if not args.source.exists():
        print(f"source not found: {args.source}", file=sys.stderr)
        return 2
    ctreg_exe = [sys.executable, "-m", "ctreg"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctreg-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        pair, ref_dir, flt_dir = make_pair(args.source, work, args.frames, args.seed)
        initial = np.linalg.norm(pair.reference_points - pair.floating_points, axis=1)
        print(f"pair: {pair.reference.shape} voxels (z, y, x), {len(initial)} landmarks, initial TRE "
              f"mean {initial.mean():.2f} mm (made in {time.perf_counter() - t:.1f} s)")
        for preset in args.presets:
            out = work / f"out-{preset}"
            cmd = ctreg_exe + ["register", str(ref_dir), str(flt_dir), "-o", str(out),
                               "--preset", preset, "--threads", str(args.threads)]
            env = dict(os.environ, CTREG_NUM_THREADS=str(args.threads))
            res = json.loads(subprocess.run([sys.executable, "-c", _RUNNER] + cmd, env=env,
                                            capture_output=True, text=True, check=True).stdout)
            if res["rc"] != 0:
                print(f"{preset}: FAILED\n{res['stderr_tail']}", file=sys.stderr)
                rows.append({"preset": preset, "failed": True})
                continue
            tre = tre_from_outputs(out, pair)
            report = json.loads((out / "report.json").read_text())
            row = {"preset": preset, "wall_s": res["wall_s"], "peak_rss_gib": res["peak_rss_gib"],
                   "register_s": report["seconds_total"], "stages_s": report["seconds"],
                   "tre_mm": tre, "jacobian": report["jacobian"], "threads": args.threads,
                   "shape": list(pair.reference.shape)}
            rows.append(row)
            tre_s = "n/a" if tre is None else f"{tre['mean']:.2f} / {tre['p95']:.2f} / {tre['max']:.2f}"
            print(f"{preset:>9}: {res['wall_s']:6.1f} s wall (register {report['seconds_total']:.1f} s), "
                  f"peak RSS {res['peak_rss_gib']:.2f} GiB, TRE mean/p95/max {tre_s} mm, "
                  f"Jacobian min {report['jacobian']['min']:.3f}")
    print("\n| preset | voxels (z,y,x) | wall s | peak RSS GiB | TRE mean mm | TRE p95 mm | Jacobian min |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['preset']} | failed | | | | | |")
            continue
        tre = r["tre_mm"] or {"mean": float("nan"), "p95": float("nan")}
        print(f"| {r['preset']} | {'x'.join(map(str, r['shape']))} | {r['wall_s']:.1f} | "
              f"{r['peak_rss_gib']:.2f} | {tre['mean']:.2f} | {tre['p95']:.2f} | {r['jacobian']['min']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
