"""Speed of ctreg's native kernels against scipy.ndimage / numpy and SimpleITK (not a test).

    python benchmarks/bench_kernels.py               # 160x192x192, 2 threads (minutes at most)
    python benchmarks/bench_kernels.py --sizes all   # also 300x512x512 (long: scipy is slow)
    python benchmarks/bench_kernels.py --only smooth --threads 1 --repeat 5

Every case is one row of CASES: ``Case(name, ctreg_fn, scipy_fn, sitk_fn)``.  Each function
takes the shared, lazily built inputs ``d`` (:class:`Data`) and runs the operation once;
``None`` means "no equivalent".  Inputs are built (and cached in ``d``) during an untimed
warm-up call, so put set-up work behind ``d.get(key, factory)``.  To add kernels, append
cases to the CASES of kernel_cases.py (inputs, resampling, gradient, smoothing, fields) or
kernel_cases_metrics.py (B-spline, metrics), and, if they need new inputs, factories next to
them.

Reported: Mvox/s = output voxels / best wall time of ``--repeat`` runs, and each competitor's
time divided by ctreg's (x > 1: ctreg is faster).  All libraries use the same thread count
(ctreg.set_num_threads, SimpleITK's global default, numba); scipy.ndimage is single-threaded.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ctreg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import kernel_cases
import kernel_cases_metrics
from kernel_cases import SIZES, Case, Data, sitk

CASES: list[Case] = kernel_cases.CASES + kernel_cases_metrics.CASES

# time.perf_counter (wall) by default; --clock cpu uses the process's CPU time, which with
# --threads 1 measures the work itself on a machine shared with other jobs.
_CLOCK = time.perf_counter


def _best_time(fn: Callable[[Data], Any], d: Data, repeat: int) -> float:
    out = fn(d)  # warm-up; builds cached inputs
    del out
    best = np.inf
    for _ in range(repeat):
        gc.collect()
        t0 = _CLOCK()
        out = fn(d)
        best = min(best, _CLOCK() - t0)
        del out
    return best


def run(
    sizes: list[str], threads: int, repeat: int, only: list[str] | None, skip: set[str]
) -> list[dict]:
    ctreg.set_num_threads(threads)
    if sitk is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    rows = []
    for size in sizes:
        d = Data(SIZES[size])
        for case in CASES:
            if only and not any(case.name.startswith(o) for o in only):
                continue
            row = {"size": "x".join(map(str, d.shape)), "case": case.name}
            t_ct = _best_time(case.ctreg_fn, d, repeat)
            row["mvox_s"] = d.nvox / t_ct / 1e6
            row["ctreg_s"] = t_ct
            for lib, fn in (("scipy", case.scipy_fn), ("sitk", case.sitk_fn)):
                if fn is None or lib in skip or (lib == "sitk" and sitk is None):
                    row[lib] = None
                    continue
                row[lib] = _best_time(fn, d, repeat) / t_ct
            rows.append(row)
            print(_fmt(row), flush=True)
        del d
        gc.collect()
    return rows


def _fmt(row: dict) -> str:
    def ratio(v):
        return "-" if v is None else f"{v:.1f}x"

    return (
        f"| {row['size']} | {row['case']} | {row['mvox_s']:.0f} | {row['ctreg_s'] * 1e3:.0f} | "
        f"{ratio(row['scipy'])} | {ratio(row['sitk'])} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        choices=["small", "large", "all"],
        default="small",
        help="small: 160x192x192 (default, <= 3 min on 2 cores); large: 300x512x512; all: both",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="best of N timed runs after a warm-up")
    p.add_argument("--only", nargs="*", help="run the cases whose name starts with any of these")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (use with --threads 1 on a busy machine)",
    )
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["scipy", "sitk"], help="competitors to leave out"
    )
    args = p.parse_args(argv)
    sizes = ["small", "large"] if args.sizes == "all" else [args.sizes]
    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"# ctreg {ctreg.__version__}, {args.threads} threads, best of {args.repeat} "
        f"({args.clock} clock); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load avg {os.getloadavg()[0]:.1f}; "
        f"SimpleITK {sitk.Version.VersionString() if sitk else 'absent'}"
    )
    print("| size (z,y,x) | kernel | ctreg Mvox/s | ctreg ms | scipy/ctreg | SimpleITK/ctreg |")
    print("|---|---|---|---|---|---|")
    run(sizes, args.threads, args.repeat, args.only, set(args.skip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
