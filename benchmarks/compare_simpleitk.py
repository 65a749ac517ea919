"""Accuracy, speed and memory of ctreg against SimpleITK (and elastix, ANTsPy, DIPY when
installed) on the same pairs, in one run.  Not a test.

    python benchmarks/compare_simpleitk.py --quick             # the 64^3 sample only: minutes
    python benchmarks/compare_simpleitk.py                     # cip-ct64, popi, pyradiomics-lung1
    python benchmarks/compare_simpleitk.py --reference REF --floating FLO [--landmarks L.csv]
    python benchmarks/compare_simpleitk.py --reference REF_DICOM/ --floating FLO.nii.gz \
        --reference-landmarks ref.csv --floating-landmarks flo.csv \\
        [--landmark-space lps|ras|voxel|voxel1]
    python benchmarks/compare_simpleitk.py --quick --methods identity,true-field,ctreg-fast

Every method runs in its own process (a fresh interpreter) with the same thread count
(``--threads``, default 2: OMP/NUMBA/ITK/CTREG thread variables and each library's own setting).
Per method and pair: wall time of the registration (from the loaded images to the warped
floating scan; loading and evaluation are not timed; with ``--repeat N`` the median of N runs,
each in a fresh process), peak RSS of that process, target
registration error (TRE) mean / median / 95th percentile / max on the landmark pairs, NCC between
the reference and the warped floating scan inside the reference body, % of body voxels with
Jacobian determinant <= 0 and the SD of log Jacobian.  All metrics are computed by the same code
(methods/common.py) from each method's reference -> floating point map and dense displacement.

A user pair (``--reference``/``--floating``: DICOM folders, archives, NIfTI, NRRD; the two grids
may differ) runs alone: the built-in pairs run too only when ``--pairs`` or ``--quick`` asks for
them.  Its landmarks: one paired CSV (``--landmarks``) or one CSV per scan
(``--reference-landmarks``/``--floating-landmarks``), with or without a header and an id column,
paired by id when both files have ids; world LPS mm, or RAS / voxel indices with
``--landmark-space`` (methods/landmarks.py lists the layouts).  elastix (``pip install
itk-elastix``), ANTs (``pip install antspyx``) and DIPY rows run when those packages are
installed; otherwise the table shows the row as skipped, with the command that installs it.

Verification rows: ``identity`` gives the initial TRE; ``true-field`` (synthetic pairs) the exact
map, whose TRE must be ~0.

Writes ``<out>/<stamp>/results.json``, ``results.md`` and ``tre_vs_time.png`` and copies them to
``<out>/latest/`` (compare_report.py).  Synthetic pairs are made by make_synthetic_pair.py (cached).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_report import fmt, merge_results, write_outputs

DEFAULT_OUT = HERE / "results"
log = logging.getLogger("compare_simpleitk")

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "CTREG_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


# -- worker: one method on one pair, in its own process --------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory.  /proc's VmHWM belongs to the process image, so it
    starts afresh at exec; ru_maxrss on Linux keeps the parent's peak across fork + exec."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(method_name: str, spec: dict, threads: int, out_path: Path) -> int:
    import numpy as np  # noqa: F401  (imported before timing, like the libraries)

    from methods import METHODS
    from methods.common import evaluate, load_pair

    method = METHODS[method_name]
    pair = load_pair(spec)
    setup_s = method.setup(threads) if method.setup else None
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    out = method.run(pair, threads)
    seconds = time.perf_counter() - t0
    rss_peak = peak_rss_mb()
    row = {
        "time_s": seconds,
        "setup_s": setup_s,
        "peak_rss_mb": rss_peak,
        "rss_after_loading_mb": rss_before,
        "notes": out.notes,
    }
    t1 = time.perf_counter()
    row.update(evaluate(pair, out))
    row["evaluation_s"] = time.perf_counter() - t1
    out_path.write_text(json.dumps(row))
    return 0


def run_in_process(method_name: str, spec: dict, threads: int, timeout_s: float) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_worker",
            "--method",
            method_name,
            "--spec",
            json.dumps(spec),
            "--threads",
            str(threads),
            "--row",
            str(out),
        ]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": f"timeout after {timeout_s:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            why = " / ".join(t.replace("|", "/") for t in tail)[-400:]
            if proc.returncode < 0:
                why = f"killed by signal {-proc.returncode}" + (f": {why}" if why else "")
            elif not why:
                why = f"exit status {proc.returncode}, no output"
            return {"status": "failed: " + why}
        row = json.loads(out.read_text())
        row["process_wall_s"] = wall
        row["status"] = "ok"
        return row


def repeated(method_name: str, spec: dict, threads: int, timeout_s: float, repeat: int) -> dict:
    """run_in_process ``repeat`` times (fresh processes): the first run's row, with ``time_s``
    the median of the runs' times, ``time_runs_s`` all of them and ``peak_rss_mb`` the largest.
    A failed run makes the row failed."""
    rows = []
    for _ in range(repeat):
        row = run_in_process(method_name, spec, threads, timeout_s)
        if row.get("status") != "ok":
            return row
        rows.append(row)
    out = dict(rows[0])
    times = [r["time_s"] for r in rows]
    out["time_runs_s"] = times
    out["time_s"] = float(statistics.median(times))
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rows)
    return out


# -- the run ---------------------------------------------------------------------------------------


def machine_info(threads: int) -> dict:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for mod in ("ctreg", "SimpleITK", "numpy", "scipy", "numba", "itk", "ants", "dipy"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", None) or (
                m.Version_VersionString() if mod == "SimpleITK" else "?"
            )
        except Exception:  # noqa: BLE001 - optional packages
            continue
    git = ""
    try:
        root = HERE.parent
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        git = head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "ctreg_git": git,
        "load_average_at_start": load,
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("--method", required=True)
        wp.add_argument("--spec", required=True)
        wp.add_argument("--threads", type=int, required=True)
        wp.add_argument("--row", required=True)
        a = wp.parse_args(argv[1:])
        return worker(a.method, json.loads(a.spec), a.threads, Path(a.row))

    from make_synthetic_pair import STANDARD, standard_pairs
    from methods import METHODS

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="only the 64^3 sample pair (a few minutes)"
    )
    ap.add_argument(
        "--pairs",
        default=None,
        help="standard synthetic pairs: 'all' (the default "
        "without a user pair) or names from " + ", ".join(STANDARD) + "; 'none' for "
        "user pairs only (the default with --reference/--floating)",
    )
    ap.add_argument(
        "--reference", help="a user pair: reference DICOM folder / archive / NIfTI / NRRD"
    )
    ap.add_argument("--floating", help="a user pair: floating scan (its grid may differ)")
    ap.add_argument(
        "--landmarks",
        help="one CSV for both scans: reference x,y,z, floating x,y,z "
        "(header and id column optional)",
    )
    ap.add_argument(
        "--reference-landmarks",
        metavar="CSV",
        help="the reference scan's landmarks: x,y,z per row (header and id column optional)",
    )
    ap.add_argument(
        "--floating-landmarks",
        metavar="CSV",
        help="the floating scan's landmarks, paired by id (both files with ids) or by row order",
    )
    ap.add_argument(
        "--landmark-space",
        default="lps",
        choices=["lps", "ras", "voxel", "voxel1"],
        help="landmark coordinates: world LPS mm (default), world RAS mm, or voxel "
        "indices i,j,k of each file's own scan (0-based; voxel1: 1-based)",
    )
    ap.add_argument("--name", default="user", help="name of the user pair")
    ap.add_argument(
        "--methods", default="all", help="comma-separated, or 'all': " + ", ".join(METHODS)
    )
    ap.add_argument("--skip", default="", help="comma-separated methods to leave out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per method and pair")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every method this many times, each in a fresh process, and report "
        "the median time (and the spread); accuracy comes from the first run",
    )
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument(
        "--no-warmup",
        action="store_true",
        help="do not run ctreg once untimed first (fills Numba's on-disk cache)",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS_JSON",
        help="run nothing: merge earlier results.json files (later files' rows win), "
        "e.g. to re-run only ctreg after a change and keep the slow SimpleITK rows",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.merge:
        return write_outputs(merge_results([Path(p) for p in args.merge], argv), Path(args.out))

    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if bool(args.reference) != bool(args.floating):
        ap.error("a user pair needs both --reference and --floating")
    user = user_pair_spec(args, ap.error)
    specs = []
    if args.quick:
        specs += standard_pairs("quick")
    elif args.pairs is not None and args.pairs != "none":
        specs += standard_pairs(args.pairs)
    elif args.pairs is None and user is None:
        specs += standard_pairs("all")
    if user is not None:
        specs.append(user)
    if not specs:
        ap.error("no pairs: give --quick, --pairs or --reference/--floating")
    names = (
        list(METHODS)
        if args.methods == "all"
        else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    names = [n for n in names if n not in skip]

    if not args.no_warmup and any(n.startswith("ctreg-") for n in names):
        log.info(
            "warm-up: ctreg-fast on the bundled 64^3 sample (untimed; compiles Numba kernels "
            "into the cache)"
        )
        run_in_process("ctreg-fast", warmup_spec(), args.threads, args.timeout)

    results = {
        "command": "python benchmarks/compare_simpleitk.py " + " ".join(argv),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(args.threads),
        "pairs": {},
        "pair_info": {},
        "skipped": {},
    }
    for spec in specs:
        info = json.loads(Path(spec["info"]).read_text()) if spec.get("info") else {}
        results["pair_info"][spec["name"]] = {
            k: info.get(k)
            for k in (
                "source",
                "n_landmarks",
                "initial_tre_mean_mm",
                "motion_options",
                "reference_shape_zyx",
                "reference_spacing_zyx_mm",
            )
        }
        if spec.get("n_landmarks") is not None:
            results["pair_info"][spec["name"]]["n_landmarks"] = spec["n_landmarks"]
        rows = results["pairs"].setdefault(spec["name"], {})
        for name in names:
            method = METHODS[name]
            why = method.available()
            if why:
                results["skipped"][name] = why
                rows[name] = {"status": f"skipped: {why}"}
                continue
            if method.needs_truth and not info.get("true_map"):
                continue
            log.info("%s: %s ...", spec["name"], name)
            row = repeated(name, spec, args.threads, args.timeout, args.repeat)
            rows[name] = row
            if row["status"] == "ok":
                log.info(
                    "%s: %s: %.1f s, %.0f MB, TRE mean %s mm, NCC %.4f, %% J<=0 %.3f",
                    spec["name"],
                    name,
                    row["time_s"],
                    row["peak_rss_mb"],
                    fmt(row.get("tre_mean_mm")),
                    row["ncc_body"],
                    row["jacobian_nonpositive_pct"],
                )
            else:
                log.warning("%s: %s: %s", spec["name"], name, row["status"])

    return write_outputs(results, Path(args.out))


def user_pair_spec(args, error) -> dict | None:
    """The spec of the user pair from the command line (None without one); the landmark files
    are read once here so that a bad file fails before any method runs."""
    if not args.reference:
        if args.landmarks or args.reference_landmarks or args.floating_landmarks:
            error("landmark files belong to a user pair: give --reference and --floating too")
        return None
    if args.landmarks and (args.reference_landmarks or args.floating_landmarks):
        error(
            "give either --landmarks (one file for both scans) or --reference-landmarks and "
            "--floating-landmarks, not both"
        )
    if bool(args.reference_landmarks) != bool(args.floating_landmarks):
        error("--reference-landmarks and --floating-landmarks go together")
    for path in (
        args.reference,
        args.floating,
        args.landmarks,
        args.reference_landmarks,
        args.floating_landmarks,
    ):
        if path and not Path(path).exists():
            error(f"{path} does not exist")
    spec = {
        "name": args.name,
        "reference": str(args.reference),
        "floating": str(args.floating),
        "landmarks": args.landmarks,
        "reference_landmarks": args.reference_landmarks,
        "floating_landmarks": args.floating_landmarks,
        "landmark_space": args.landmark_space,
        "info": None,
        "n_landmarks": None,
    }
    from methods.landmarks import LandmarkError, read_point_file

    try:
        if args.landmarks:
            spec["n_landmarks"] = len(read_point_file(args.landmarks, ncoords=6).points)
        elif args.reference_landmarks:
            a = read_point_file(args.reference_landmarks)
            b = read_point_file(args.floating_landmarks)
            if (a.ids is None or b.ids is None) and len(a.points) != len(b.points):
                error(
                    f"{args.reference_landmarks} has {len(a.points)} landmarks, "
                    f"{args.floating_landmarks} {len(b.points)} (rows are paired by order unless "
                    "both files have an id column)"
                )
            if a.ids is not None and b.ids is not None and set(a.ids) != set(b.ids):
                error(
                    f"the landmark ids of {args.reference_landmarks} "
                    f"and {args.floating_landmarks} differ"
                )
            spec["n_landmarks"] = len(a.points)
    except LandmarkError as exc:
        error(f"{exc} [{exc.code}]")
    return spec


def warmup_spec() -> dict:
    """The bundled 64^3 sample against itself: a registration that loads every kernel."""
    from ctreg.samples import ct64_dicom_path

    path = str(ct64_dicom_path())
    return {"name": "warm-up", "reference": path, "floating": path, "info": None}


if __name__ == "__main__":
    raise SystemExit(main())
