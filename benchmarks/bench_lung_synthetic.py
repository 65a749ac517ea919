"""Realistic synthetic lung pairs (ctreg.synthetic_lung: sliding at the pleura, mass-preserving
density change, cropped field of view, 2.5 mm slices, noise): landmark TRE of ctreg against
SimpleITK's recipe (the one of bench_empire10.py), in one run.  Not a test.

    python benchmarks/bench_lung_synthetic.py         # cip-ct64 seeds 0, 1 + popi seed 0
    python benchmarks/bench_lung_synthetic.py --pairs cip-ct64:0,cip-ct64:1 --presets fast,default

Per pair and method: TRE mean / p95 / max (mm) on the pair's exact landmarks (bright vessel
points inside the lungs), the same on points outside the lungs (``LungPair.outside_points``: random
reference body voxels 5-40 mm outside the lung boundary whose exact floating position lies
inside the floating grid: chest wall, mediastinum, upper abdomen), registration wall time and
folding.  ``--sliding`` adds a row per preset with ``sliding=True`` (``ctreg.sliding``);
``--options JSON`` overrides fields for every ctreg row.  ``--identity`` adds, per scan, two
crops of the same scan (different field of view, no motion: the truth is the identity), with
the error on lung points of the overlap.  The data come from ../shared/data
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


def identity_crops(vol, seed: int = 0):
    """(reference, floating, points): two crops of ``vol`` (the floating one 15 % shorter at the
    top, 10 % narrower at one side; the reference 10 % shorter at the bottom), and up to 400
    lung points of their overlap.  The true map is the identity."""
    from ctreg.lungs import segment_lungs
    from ctreg.pyramid import crop

    nz, ny, nx = vol.shape
    ref = crop(vol, (slice(int(0.1 * nz), nz), slice(0, ny), slice(0, nx)))
    flt = crop(vol, (slice(0, int(0.85 * nz)), slice(0, ny), slice(int(0.1 * nx), nx)))
    lungs = segment_lungs(vol).mask
    lungs[: int(0.1 * nz) + 2] = False
    lungs[int(0.85 * nz) - 2 :] = False
    lungs[:, :, : int(0.1 * nx) + 2] = False
    idx = np.argwhere(lungs)
    rng = np.random.default_rng(seed)
    idx = idx[rng.choice(len(idx), size=min(400, len(idx)), replace=False)]
    return ref, flt, vol.index_to_world(idx)


def identity_rows(ctreg, vol, name: str, presets) -> list:
    """Rows of the two-crops case: |mapped - p| on the overlap's lung points."""
    ref, flt, pts = identity_crops(vol)
    print(
        f"{name} two crops: reference {ref.shape}, floating {flt.shape}, {len(pts)} lung points",
        flush=True,
    )
    rows = []
    for preset in presets:
        t0 = time.perf_counter()
        res = ctreg.register(ref, flt, preset=preset)
        secs = time.perf_counter() - t0
        r = {
            "pair": f"{name}:crops",
            "method": f"ctreg {preset}",
            **tre(res.transform_points(pts), pts),
            "seconds": secs,
            "fold": int(np.count_nonzero(res.jacobian_determinant() <= 0)),
        }
        r.update({f"out_{k}": float("nan") for k in ("mean", "p95", "max")})
        print(
            f"  {r['method']}: error mean {r['mean']:.2f} p95 {r['p95']:.2f} "
            f"max {r['max']:.2f} mm, {secs:.1f} s",
            flush=True,
        )
        rows.append(r)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", default="cip-ct64:0,cip-ct64:1,popi:0", help="scan:seed,...")
    ap.add_argument("--presets", default="default")
    ap.add_argument("--diaphragm-mm", type=float, default=30.0)
    ap.add_argument("--no-sitk", action="store_true")
    ap.add_argument(
        "--sitk-finest-shrink",
        type=int,
        default=1,
        choices=(1, 2, 4),
        help="finest demons level of the SimpleITK recipe (default 1: full resolution)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sliding", action="store_true", help="also run each preset with sliding=True")
    ap.add_argument(
        "--options",
        default=None,
        metavar="JSON",
        help='overrides for ctreg.register, e.g. \'{"sliding": {"band_mm": 4}}\'',
    )
    ap.add_argument(
        "--identity",
        action="store_true",
        help="also register two crops of each scan (identity truth)",
    )
    args = ap.parse_args(argv)
    for v in ("OMP_NUM_THREADS", "CTREG_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ.setdefault(v, str(args.threads))
    import ctreg
    from ctreg.synthetic_lung import make_lung_pair
    from bench_empire10 import run_sitk
    from methods.common import field_transform_points

    ctreg.set_num_threads(args.threads)
    rows = []
    if args.identity:
        for name in dict.fromkeys(item.split(":")[0] for item in args.pairs.split(",")):
            if (SHARED / SCANS[name]).exists():
                rows += identity_rows(
                    ctreg, ctreg.read_volume(SHARED / SCANS[name]), name, args.presets.split(",")
                )
    for item in args.pairs.split(","):
        name, seed = item.split(":")
        path = SHARED / SCANS[name]
        if not path.exists():
            print(f"skip {name}: {path} absent")
            continue
        vol = ctreg.read_volume(path)
        t0 = time.perf_counter()
        pair = make_lung_pair(vol, seed=int(seed), diaphragm_mm=args.diaphragm_mm)
        print(
            f"{name} seed {seed}: reference {vol.shape}, floating {pair.floating.shape} "
            f"({pair.floating.spacing.round(2).tolist()} mm), "
            f"{pair.info['n_landmarks']} landmarks, "
            f"diaphragm {pair.info['diaphragm_mm']:.1f} mm, "
            f"made in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        p, q = pair.landmarks_ref, pair.landmarks_flt
        po, qo = pair.outside_points(seed=int(seed))
        print(f"  {po.shape[0]} outside points (5-40 mm outside the lungs)", flush=True)
        first = len(rows)

        def row(method, fn, secs, fold=None, item=item, p=p, q=q, po=po, qo=qo):
            out = {"pair": item, "method": method, **tre(fn(p), q), "seconds": secs, "fold": fold}
            out.update({f"out_{k}": v for k, v in tre(fn(po), qo).items()})
            return out

        row_id = lambda x: x  # noqa: E731
        rows.append(row("unregistered", row_id, None))
        overrides = json.loads(args.options) if args.options else {}
        for preset in args.presets.split(","):
            for sliding in (False, True) if args.sliding else (None,):
                kw = dict(overrides)
                if sliding:
                    kw["sliding"] = True
                t0 = time.perf_counter()
                res = ctreg.register(pair.reference, pair.floating, preset=preset, **kw)
                secs = time.perf_counter() - t0
                name = f"ctreg {preset}" + (" sliding" if sliding else "")
                rows.append(
                    row(
                        name,
                        res.transform_points,
                        secs,
                        int(np.count_nonzero(res.jacobian_determinant() <= 0)),
                    )
                )
                rows[-1]["sliding"] = res.report.get("sliding")
                rows[-1]["seconds_phases"] = {
                    k: round(v, 2) for k, v in res.report["seconds"].items()
                }
        if not args.no_sitk:
            disp, secs, _ = run_sitk(pair, args.threads, args.sitk_finest_shrink, fill_hu=-1000.0)
            rows.append(row("SimpleITK", field_transform_points(pair.reference, disp), secs))
        for r in rows[first:]:
            print(
                f"  {r['method']}: TRE mean {r['mean']:.2f} p95 {r['p95']:.2f} "
                f"max {r['max']:.2f} mm; "
                f"outside mean {r['out_mean']:.2f} p95 {r['out_p95']:.2f} max {r['out_max']:.2f} mm"
                + ("" if r["seconds"] is None else f", {r['seconds']:.1f} s")
                + ("" if r.get("fold") is None else f", Jac<=0 {r['fold']}")
                + ("" if not r.get("sliding") else f", sliding {r['sliding'].get('reason')}"),
                flush=True,
            )
            if r.get("seconds_phases"):
                print(f"    phases {r['seconds_phases']}", flush=True)
    print(
        "\n| pair | method | TRE mean mm | p95 | max | outside mean | p95 | max | seconds "
        "| Jac<=0 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pair']} | {r['method']} | {r['mean']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | "
            f"{r['out_mean']:.2f} | {r['out_p95']:.2f} | {r['out_max']:.2f} | "
            f"{'' if r['seconds'] is None else format(r['seconds'], '.1f')} | "
            f"{'' if r.get('fold') is None else r['fold']} |"
        )
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
