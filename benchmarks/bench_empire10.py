"""EMPIRE10 pair 01 (real exhale/inhale chest CT with expert lung masks): ctreg against
SimpleITK's best recipe, in one run.  Not a test.

    python benchmarks/bench_empire10.py                       # preset default
    python benchmarks/bench_empire10.py --presets fast,default --sitk-finest-shrink 2

Data: ``bash ../shared/data/get-empire10-01.sh`` (about 92 MB; lands in ``$CTREG_DATA`` or
``~/.cache/ctreg-data``).  The lung-only images (HU + 1000 inside the lungs, 0 outside) are
turned into chest-like HU (0 HU outside the lungs) by ``ctreg.datasets.load_empire10``.

Per method: lung Dice of the warped floating lung mask against the reference lung mask,
95th-percentile (HD95) and mean (MSD) symmetric surface distance in mm on the reference grid
(``ctreg.evaluation``), folding (voxels with Jacobian determinant <= 0, in the reference lungs
and on the whole grid), registration wall time (images in memory -> displacement on the
reference grid), and ratios against SimpleITK.  The floating mask is warped trilinearly and cut
at 0.5.

SimpleITK's recipe (the strongest found for this pair type, after SimpleITK's notebooks 61/66):
histogram matching of the floating scan onto the reference (256 levels, 15 match points), affine
on Mattes MI (50 bins, 5 % random samples, regular-step gradient descent, shrink 8 / 4,
smoothing 4 / 2 mm, MOMENTS initialisation: the scans' origins are not aligned), then a
multi-level fast symmetric forces demons (shrink 8 / 4 / 2 by default, 50 / 30 / 20
iterations, displacement smoothing sigma 1.5 voxels) started from the affine; ITK's demons
need one grid, so the floating scan is first resampled onto the reference grid (world identity),
which cuts the inhale scan to the exhale scan's field of view.
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


def log(msg: str) -> None:
    print(msg, flush=True)


def evaluate(name, ref, flt_lungs_vol, ref_lungs, disp, seconds):
    from ctreg.evaluation import dice, folding_count, surface_distances
    from methods.common import jacobian_determinant, warp

    warped = warp(ref, flt_lungs_vol, disp)[0] > 0.5
    sd = surface_distances(warped, ref_lungs, ref.spacing)
    row = {
        "method": name,
        "dice": dice(warped, ref_lungs),
        "hd95_mm": sd.hd95,
        "msd_mm": sd.msd,
        "seconds": seconds,
    }
    if seconds is not None:
        jac = jacobian_determinant(ref, disp)
        row["fold_lungs"] = folding_count(jac, ref_lungs)
        row["fold_all"] = folding_count(jac)
        row["jac_min_lungs"] = float(jac[ref_lungs].min())
    log(
        f"  {name}: "
        + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
            if k != "method"
        )
    )
    return row


def run_ctreg(pair, preset: str, masks: str, overrides: dict | None = None):
    import ctreg

    kw = dict(overrides or {})
    if masks == "lungs":  # the expert reference lung mask; "none": ctreg segments the lungs itself
        kw["reference_lungs"] = pair.reference_lungs
    t0 = time.perf_counter()
    res = ctreg.register(pair.reference, pair.floating, preset=preset, **kw)
    seconds = time.perf_counter() - t0
    return res.displacement, seconds, sorted(k for k in kw if "lung" in k)


def run_sitk(pair, threads: int, finest_shrink: int, fill_hu: float = 0.0):
    import SimpleITK as sitk
    from methods.sitk_recipe import smooth_and_shrink as _smooth_and_shrink
    from methods.common import to_sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    fixed = to_sitk(pair.reference)
    moving = to_sitk(pair.floating)
    t0 = time.perf_counter()
    moving = sitk.HistogramMatching(
        moving,
        fixed,
        numberOfHistogramLevels=256,
        numberOfMatchPoints=15,
        thresholdAtMeanIntensity=True,
    )
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, 20240)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([8, 4])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    affine = reg.Execute(fixed, moving)
    # ITK's demons filters need both images on one grid: the floating scan is resampled onto the
    # reference grid in world space (identity; the affine goes into the initial field), 0 HU
    # (tissue) where the floating scan has no data
    moving = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, fill_hu)
    shrinks = [s for s in (8, 4, 2, 1) if s >= finest_shrink]
    iters = {8: 50, 4: 30, 2: 20, 1: 10}
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(1.5)
    field = None
    for s in shrinks:
        f_img = (
            fixed if s == 1 else _smooth_and_shrink(sitk, fixed, s, 0.5 * s * fixed.GetSpacing()[0])
        )
        m_img = (
            moving
            if s == 1
            else _smooth_and_shrink(sitk, moving, s, 0.5 * s * moving.GetSpacing()[0])
        )
        if field is None:
            field = sitk.TransformToDisplacementField(
                affine,
                sitk.sitkVectorFloat64,
                f_img.GetSize(),
                f_img.GetOrigin(),
                f_img.GetSpacing(),
                f_img.GetDirection(),
            )
        else:
            field = sitk.Resample(field, f_img)
        demons.SetNumberOfIterations(iters[s])
        field = demons.Execute(f_img, m_img, field)
    if shrinks[-1] != 1:
        field = sitk.Resample(field, fixed)  # the displacement on the reference grid
    disp = sitk.GetArrayViewFromImage(field).astype(np.float32)
    seconds = time.perf_counter() - t0
    return (
        disp,
        seconds,
        {"demons_shrinks": shrinks, "affine_iterations": reg.GetOptimizerIteration()},
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        default=None,
        help="folder of empire10-01 (default $CTREG_DATA or ~/.cache/ctreg-data)",
    )
    ap.add_argument(
        "--presets", default="default", help="ctreg presets, comma-separated (default: default)"
    )
    ap.add_argument(
        "--masks",
        choices=("lungs", "none"),
        default="lungs",
        help="lungs: pass the expert reference lung mask as reference_lungs (default); "
        "none: automatic segmentation",
    )
    ap.add_argument("--no-sitk", action="store_true", help="skip SimpleITK")
    ap.add_argument(
        "--sitk-finest-shrink",
        type=int,
        default=2,
        choices=(1, 2, 4),
        help="finest demons level of the SimpleITK recipe (1: full resolution, slow)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument(
        "--subsample",
        type=int,
        default=1,
        help="take every N-th voxel of both scans and masks (2: ~1.4 mm, for sweeps)",
    )
    ap.add_argument(
        "--options",
        default=None,
        metavar="JSON",
        help='overrides for ctreg.register, e.g. \'{"ffd": {"metric": "ncc"}}\'',
    )
    args = ap.parse_args(argv)
    overrides = json.loads(args.options) if args.options else None

    for v in ("OMP_NUM_THREADS", "CTREG_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ.setdefault(v, str(args.threads))
    import ctreg
    from ctreg.datasets import DatasetMissingError, load_empire10
    from ctreg.volume import Volume

    try:
        t0 = time.perf_counter()
        pair = load_empire10(args.data)
    except DatasetMissingError as exc:
        print(f"bench_empire10: {exc}", file=sys.stderr)
        return 2
    if args.subsample > 1:
        n = args.subsample
        sl = (slice(None, None, n),) * 3

        def sub(v):
            return Volume(
                np.ascontiguousarray(v.array[sl]), v.affine @ np.diag([n, n, n, 1.0]), None, v.meta
            )

        pair = type(pair)(
            sub(pair.reference),
            sub(pair.floating),
            np.ascontiguousarray(pair.reference_lungs[sl]),
            np.ascontiguousarray(pair.floating_lungs[sl]),
        )
    ctreg.set_num_threads(args.threads)
    log(
        f"EMPIRE10-01 loaded in {time.perf_counter() - t0:.1f} s: "
        f"reference {pair.reference.shape}, "
        f"floating {pair.floating.shape}; "
        f"lungs {pair.reference_lungs.sum() * np.prod(pair.reference.spacing) / 1e6:.2f} L "
        f"/ {pair.floating_lungs.sum() * np.prod(pair.floating.spacing) / 1e6:.2f} L"
    )
    ref, ref_lungs = pair.reference, pair.reference_lungs
    flt_lungs_vol = Volume(pair.floating_lungs.astype(np.float32), pair.floating.affine)
    rows = []
    zero = np.zeros(ref.shape + (3,), np.float32)
    rows.append(evaluate("unregistered", ref, flt_lungs_vol, ref_lungs, zero, None))
    del zero
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        disp, secs, used = run_ctreg(pair, preset, args.masks, overrides)
        row = evaluate(f"ctreg {preset}", ref, flt_lungs_vol, ref_lungs, disp, secs)
        row["lung_masks_passed"] = used
        rows.append(row)
        del disp
    if not args.no_sitk:
        try:
            disp, secs, info = run_sitk(pair, args.threads, args.sitk_finest_shrink)
        except ImportError:
            log("  SimpleITK not installed: pip install SimpleITK")
        else:
            row = evaluate(
                "SimpleITK MI affine + FSF demons", ref, flt_lungs_vol, ref_lungs, disp, secs
            )
            row.update(info)
            rows.append(row)
            del disp
    sitk_row = next((r for r in rows if r["method"].startswith("SimpleITK")), None)
    log(
        "\n| method | lung Dice | HD95 mm | MSD mm | "
        "Jac<=0 lungs | Jac<=0 all | seconds | time vs SimpleITK |"
    )
    log("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['seconds'] / sitk_row['seconds']:.2f}x" if sitk_row and r["seconds"] else ""
        log(
            f"| {r['method']} | {r['dice']:.4f} | {r['hd95_mm']:.2f} | {r['msd_mm']:.2f} | "
            f"{r.get('fold_lungs', '')} | {r.get('fold_all', '')} | "
            f"{'' if r['seconds'] is None else format(r['seconds'], '.1f')} | {ratio} |"
        )
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1, default=str))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
