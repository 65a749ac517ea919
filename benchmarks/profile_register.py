"""Profile one ``ctreg.register()`` call on a big pair, in memory (no DICOM reading or writing),
and fingerprint its outputs so that a speed change can be checked to leave them bit-identical.

    python benchmarks/profile_register.py --case empire10        # EMPIRE10-01, full resolution
    python benchmarks/profile_register.py --case 512x512x300     # popi-00 at 300 slices
    python benchmarks/profile_register.py --case 600 --threads 2 --save /tmp/a.npz
    python benchmarks/profile_register.py --case empire10 --compare /tmp/a.npz  # max abs diff

The pair is built once and cached as .npy files under ``--cache`` (default
``~/.cache/ctreg-data/profile``), so that a run costs the registration only: EMPIRE10-01 is
read with ``ctreg.datasets.load_empire10`` (lung-only values -> chest-like HU); the synthetic
cases are bench_register.py's (popi-00-dicom resampled along z, breathing-like motion).
Printed: the wall time of ``register()``, the process's peak RSS (inputs included), the
per-phase table of ``report["seconds"]`` / ``report["memory"]`` and a SHA-256 per output.
Never run as a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = Path(os.environ.get("CTREG_DATA", Path.home() / ".cache" / "ctreg-data")) / "profile"


def _save(vol, stem: Path) -> None:
    np.save(stem.with_suffix(".npy"), vol.array)
    np.save(stem.with_name(stem.name + "_affine.npy"), vol.affine)
    if vol.valid is not None:
        np.save(stem.with_name(stem.name + "_valid.npy"), vol.valid)


def _load(stem: Path):
    from ctreg import Volume

    valid = stem.with_name(stem.name + "_valid.npy")
    return Volume(
        np.load(stem.with_suffix(".npy")),
        np.load(stem.with_name(stem.name + "_affine.npy")),
        np.load(valid) if valid.exists() else None,
        {},
    )


def get_pair(case: str, cache: Path):
    d = cache / case
    if not (d / "floating.npy").exists():
        d.mkdir(parents=True, exist_ok=True)
        if case == "empire10":
            from ctreg.datasets import load_empire10

            pair = load_empire10()
            ref, flt = pair.reference, pair.floating
        else:
            import ctreg
            from bench_register import DEFAULT_SOURCE, _resample_frames
            from ctreg.synthetic import BreathingMotion, make_breathing_pair

            vol = ctreg.read_dicom_series(DEFAULT_SOURCE)
            frames = {"512x512x300": 300, "600": 600, "popi": vol.shape[0]}[case]
            if frames != vol.shape[0]:
                vol = _resample_frames(vol, frames)
            motion = BreathingMotion(
                diaphragm_mm=20.0,
                translation_mm=(6.0, -5.0, 5.0),
                rotation_deg=(3.0, -3.0, 9.0),
                seed=0,
            )
            p = make_breathing_pair(vol, motion, n_landmarks=300)
            ref, flt = p.reference, p.floating
        _save(ref, d / "reference")
        _save(flt, d / "floating")
    return _load(d / "reference"), _load(d / "floating")


def fingerprint(a: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()[:16]


def time_writers(res, folder: Path) -> None:
    """Seconds of each output writer alone (one after the other), then of result.save()."""
    import shutil

    from ctreg.io.dicom import write_dicom_series
    from ctreg.io.itk_transform import write_itk_transform
    from ctreg.io.nifti import write_displacement_nifti, write_nifti

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    jobs = {
        "registered.nii.gz": lambda p: write_nifti(res.warped, p),
        "registered.tar.gz": lambda p: write_dicom_series(res.warped, p),
        "displacement.nii.gz": lambda p: write_displacement_nifti(
            res.displacement, res.grid_affine, p
        ),
        "transform.h5": lambda p: write_itk_transform(
            p, res.displacement, res.grid_affine, res.affine
        ),
    }
    for name, fn in jobs.items():
        t = time.perf_counter()
        fn(folder / name)
        print(
            f"  write {name}: {time.perf_counter() - t:.2f} s, "
            f"{(folder / name).stat().st_size / 2**20:.0f} MiB"
        )
    t = time.perf_counter()
    res.save(folder / "save")
    print(f"  result.save(): {time.perf_counter() - t:.2f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--case", default="empire10", choices=["empire10", "512x512x300", "600", "popi"]
    )
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--save", type=Path, default=None, help="write the outputs (npz) here")
    ap.add_argument(
        "--compare", type=Path, default=None, help="max abs difference against a --save file"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--write",
        type=Path,
        default=None,
        help="time each output writer alone into this folder, then result.save() into DIR/save",
    )
    ap.add_argument(
        "--keep-freed",
        action="store_true",
        help="ops.keep_freed_memory() first (as the CLI does for small scans)",
    )
    ap.add_argument(
        "--thp-off", action="store_true", help="no transparent huge pages for this process (prctl)"
    )
    args = ap.parse_args(argv)
    if args.thp_off:
        from ctreg.ops import no_huge_pages

        no_huge_pages()
    if args.keep_freed:
        from ctreg.ops import keep_freed_memory

        keep_freed_memory()
    ref, flt = get_pair(args.case, args.cache)
    import ctreg
    from ctreg._timing import format_profile, peak_rss_mib

    print(
        f"{args.case}: reference {ref.shape}, floating {flt.shape}; inputs loaded, peak RSS "
        f"{peak_rss_mib() / 1024:.2f} GiB",
        flush=True,
    )
    t = time.perf_counter()
    res = ctreg.register(ref, flt, preset=args.preset, threads=args.threads)
    wall = time.perf_counter() - t
    print(format_profile(res.report, wall_s=wall))
    outs = {
        "warped": res.warped.array,
        "displacement": res.displacement,
        "jacobian": res.jacobian_determinant(),
    }
    sums = {k: fingerprint(v) for k, v in outs.items()}
    print(
        f"register() {wall:.2f} s, peak RSS {peak_rss_mib() / 1024:.2f} GiB; sha256 "
        + " ".join(f"{k}={v}" for k, v in sums.items())
    )
    if args.write:
        time_writers(res, args.write)
    if args.save:
        np.savez(args.save, **outs)
    if args.compare:
        with np.load(args.compare) as old:
            for k, v in outs.items():
                print(
                    f"  {k}: max |new - old| = {float(np.max(np.abs(v - old[k]))):.3g}, "
                    f"identical={bool(np.array_equal(v, old[k]))}"
                )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "case": args.case,
                    "wall_s": wall,
                    "sha256": sums,
                    "peak_rss_gib": peak_rss_mib() / 1024,
                    "seconds": res.report["seconds"],
                    "memory": res.report["memory"],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
