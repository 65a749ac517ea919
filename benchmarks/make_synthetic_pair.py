"""Write a synthetic benchmark pair: real anatomy deformed by a known breathing-like map.

    python benchmarks/make_synthetic_pair.py --standard quick      # cip-ct64 only (seconds)
    python benchmarks/make_synthetic_pair.py --standard all   # cip-ct64, popi, pyradiomics-lung1
    python benchmarks/make_synthetic_pair.py --source path/to/dicom-folder-or.nii.gz --name mine

A pair folder (default under benchmarks/results/pairs/<name>/) holds ``reference.nii.gz`` (the
source scan), ``floating.nii.gz`` (the deformed scan, int16 HU), ``landmarks.csv`` (reference x,
y, z, floating x, y, z in LPS mm; points inside the lungs, preferably on vessels) and ``pair.json``
(the options, the exact map for ``BreathingMap.from_dict`` and summary numbers).  An existing
pair made with the same options is reused unless ``--force``.  See ctreg.synthetic for the map.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "pairs"
SHARED_DATA = Path(os.environ.get("CTREG_SHARED_DATA", HERE.parent.parent / "shared" / "data"))

#: name -> path under ../shared/data; the issue's diaphragm motion is "up to 20 mm"
STANDARD = {
    "cip-ct64": "cip-ct64/ct-64.nrrd",
    "popi": "popi-00-dicom",
    "pyradiomics-lung1": "pyradiomics-lung1/lung1_image.nrrd",
}
QUICK = ("cip-ct64",)
DEFAULT_MOTION = {"diaphragm_mm": 20.0}

log = logging.getLogger("make_synthetic_pair")


def make_pair(
    source,
    out_root=DEFAULT_OUT,
    *,
    name: str,
    motion: dict | None = None,
    n_landmarks: int = 300,
    force: bool = False,
) -> dict:
    """Build (or reuse) the pair folder; return its spec for compare_simpleitk.py."""
    import numpy as np

    import ctreg
    from ctreg.io import read_volume, write_nifti
    from ctreg.io.atomic import atomic_dir, atomic_path
    from ctreg.synthetic import BreathingMotion, make_breathing_pair

    sys.path.insert(0, str(HERE))
    from methods.common import write_landmarks

    motion = dict(DEFAULT_MOTION if motion is None else motion)
    opts = BreathingMotion(**motion)
    folder = Path(out_root) / name
    spec = {
        "name": name,
        "reference": str(folder / "reference.nii.gz"),
        "floating": str(folder / "floating.nii.gz"),
        "landmarks": str(folder / "landmarks.csv"),
        "info": str(folder / "pair.json"),
    }
    wanted = {
        "source": str(source),
        "motion_options": motion,
        "n_landmarks_requested": int(n_landmarks),
    }
    info_path = folder / "pair.json"
    if info_path.exists() and not force:
        old = json.loads(info_path.read_text())
        if all(old.get(k) == v for k, v in wanted.items()):
            log.info("%s: reusing %s", name, folder)
            return spec
    t0 = time.perf_counter()
    volume = read_volume(source)
    pair = make_breathing_pair(volume, opts, n_landmarks=n_landmarks)
    d0 = np.linalg.norm(pair.floating_points - pair.reference_points, axis=1)
    info = {
        **wanted,
        "name": name,
        "ctreg_version": ctreg.__version__,
        "true_map": pair.true_map.to_dict(),
        "n_landmarks": int(pair.reference_points.shape[0]),
        "initial_tre_mean_mm": float(d0.mean()),
        "initial_tre_max_mm": float(d0.max()),
        "reference_shape_zyx": list(volume.shape),
        "reference_spacing_zyx_mm": [float(s) for s in volume.spacing],
        "seconds_to_make": None,
    }
    if folder.exists():  # --force, or made with other options
        shutil.rmtree(folder)
    with atomic_dir(folder) as tmp:
        write_nifti(pair.reference, tmp / "reference.nii.gz")
        write_nifti(pair.floating, tmp / "floating.nii.gz")
        write_landmarks(tmp / "landmarks.csv", pair.reference_points, pair.floating_points)
        info["seconds_to_make"] = round(time.perf_counter() - t0, 1)
        with atomic_path(tmp / "pair.json") as p:
            p.write_text(json.dumps(info, indent=2))
    log.info(
        "%s: %d landmarks, initial TRE %.1f mm (max %.1f), %.0f s -> %s",
        name,
        info["n_landmarks"],
        info["initial_tre_mean_mm"],
        info["initial_tre_max_mm"],
        info["seconds_to_make"],
        folder,
    )
    return spec


def standard_pairs(which: str, out_root=DEFAULT_OUT, *, force: bool = False) -> list[dict]:
    """``which``: "quick" (cip-ct64), "all", or comma-separated names of STANDARD."""
    names = (
        QUICK
        if which == "quick"
        else tuple(STANDARD)
        if which == "all"
        else tuple(which.split(","))
    )
    specs = []
    for name in names:
        if name not in STANDARD:
            raise SystemExit(f"unknown standard pair {name!r}; choose from {sorted(STANDARD)}")
        src = SHARED_DATA / STANDARD[name]
        if not src.exists():
            log.warning("%s: source %s not found; skipped", name, src)
            continue
        specs.append(make_pair(src, out_root, name=name, force=force))
    return specs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--standard", help='"quick", "all" or names from: ' + ", ".join(STANDARD))
    g.add_argument("--source", help="a DICOM folder / NIfTI / NRRD file with a chest CT")
    ap.add_argument("--name", help="pair name (with --source)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="folder of pair folders")
    ap.add_argument("--diaphragm-mm", type=float, default=DEFAULT_MOTION["diaphragm_mm"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-landmarks", type=int, default=300)
    ap.add_argument("--force", action="store_true", help="rebuild even if the pair exists")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.standard:
        specs = standard_pairs(args.standard, args.out, force=args.force)
    else:
        name = args.name or Path(args.source.rstrip("/")).name.split(".")[0]
        motion = {"diaphragm_mm": args.diaphragm_mm, "seed": args.seed}
        specs = [
            make_pair(
                args.source,
                args.out,
                name=name,
                motion=motion,
                n_landmarks=args.n_landmarks,
                force=args.force,
            )
        ]
    for s in specs:
        print(json.dumps(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
