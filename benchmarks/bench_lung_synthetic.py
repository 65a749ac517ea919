"""Realistic synthetic lung pairs (ctreg.synthetic_lung: sliding at the pleura, mass-preserving
density change, cropped field of view, 2.5 mm slices, noise): landmark TRE of ctreg against
SimpleITK's recipe (the one of bench_empire10.py), in one run.  Not a test.

    python benchmarks/bench_lung_synthetic.py         # cip-ct64 seeds 0, 1 + popi seed 0
    python benchmarks/bench_lung_synthetic.py --pairs cip-ct64:0,cip-ct64:1 --presets fast,default

Per pair and method: TRE mean / p95 / max (mm) on the pair's exact landmarks (bright vessel
points inside the lungs), registration wall time.  The data come from ../shared/data
(``CTREG_SHARED_DATA``); pairs whose scan is absent are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = Path(os.environ.get("CTREG_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
SCANS = {"cip-ct64": "cip-ct64/ct-64.nrrd", "popi": "popi-00-dicom"}


def tre(pred, truth):
    e = np.linalg.norm(np.asarray(pred) - truth, axis=1)
    return {"mean": float(e.mean()), "p95": float(np.percentile(e, 95)), "max": float(e.max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="cip-ct64:0,cip-ct64:1,popi:0", help="scan:seed,...")
    ap.add_argument("--presets", default="default")
    ap.add_argument("--diaphragm-mm", type=float, default=30.0)
    ap.add_argument("--no-sitk", action="store_true")
    ap.add_argument("--sitk-finest-shrink", type=int, default=1, choices=(1, 2, 4),
                    help="finest demons level of the SimpleITK recipe (default 1: full resolution)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for v in ("OMP_NUM_THREADS", "CTREG_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ.setdefault(v, str(args.threads))
    import ctreg
    from ctreg.synthetic_lung import make_lung_pair
    from bench_empire10 import run_sitk
    from methods.common import field_transform_points

    ctreg.set_num_threads(args.threads)
    rows = []
    for item in args.pairs.split(","):
        name, seed = item.split(":")
        path = SHARED / SCANS[name]
        if not path.exists():
            print(f"skip {name}: {path} absent")
            continue
        vol = ctreg.read_volume(path)
        t0 = time.perf_counter()
        pair = make_lung_pair(vol, seed=int(seed), diaphragm_mm=args.diaphragm_mm)
        print(f"{name} seed {seed}: reference {vol.shape}, floating {pair.floating.shape} "
              f"({pair.floating.spacing.round(2).tolist()} mm), "
              f"{pair.info['n_landmarks']} landmarks, "
              f"diaphragm {pair.info['diaphragm_mm']:.1f} mm, "
              f"made in {time.perf_counter() - t0:.1f} s", flush=True)
        p, q = pair.landmarks_ref, pair.landmarks_flt
        rows.append({"pair": item, "method": "unregistered", **tre(p, q), "seconds": None})
        for preset in args.presets.split(","):
            t0 = time.perf_counter()
            res = ctreg.register(pair.reference, pair.floating, preset=preset)
            secs = time.perf_counter() - t0
            rows.append({"pair": item, "method": f"ctreg {preset}", **tre(res.transform_points(p), q),
                         "seconds": secs, "fold": int(np.count_nonzero(res.jacobian_determinant() <= 0))})
        if not args.no_sitk:
            disp, secs, _ = run_sitk(pair, args.threads, args.sitk_finest_shrink, fill_hu=-1000.0)
            rows.append({"pair": item, "method": "SimpleITK", **tre(field_transform_points(pair.reference, disp)(p), q),
                         "seconds": secs})
        for r in rows[-(len(args.presets.split(",")) + 1 + (0 if args.no_sitk else 1)):]:
            print(f"  {r['method']}: TRE mean {r['mean']:.2f} p95 {r['p95']:.2f} "
                  f"max {r['max']:.2f} mm"
                  + ("" if r["seconds"] is None else f", {r['seconds']:.1f} s"), flush=True)
    print("\n| pair | method | TRE mean mm | p95 | max | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pair']} | {r['method']} | {r['mean']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | "
              f"{'' if r['seconds'] is None else format(r['seconds'], '.1f')} |")
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
