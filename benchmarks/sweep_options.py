"""Accuracy and time of register() under option overrides, on one synthetic benchmark pair.

For tuning presets: each configuration is a preset plus overrides (as ``ctreg.register``
takes them), run ``--repeat`` times in this one process after an untimed warm-up (Numba's
kernels loaded, caches warm), and reported as the best time, the per-stage seconds of that run,
and the TRE on the pair's landmarks.  Compare configurations with each other, not with
compare_simpleitk.py's fresh-process times.  ``--kernels`` adds, for the best run of each
configuration, the calls and milliseconds of every ``ctreg.ops`` function; ``--threaded-blas``
runs without ``ops.serial_blas`` (BLAS on its default thread count), to show what it buys;
``--default-runtime`` without ``ops.gc_paused`` and ``ops.keep_freed_memory``, and
``--no-warmup`` times the process's first registration (with ``--repeat 1``: the cold run that
compare_simpleitk.py times).

    python benchmarks/sweep_options.py --pair cip-ct64 \
        --config fast=fast \
        --config 'ffd10-dem8=fast:{"ffd": {"iterations": [10]}, "demons": {"iterations": [8]}}'
    python benchmarks/sweep_options.py --pair cip-ct64 --config fast=fast --kernels --threaded-blas

Pairs are made (and cached) by make_synthetic_pair.py.  Never run as a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def parse_config(text: str) -> tuple[str, str, dict]:
    """``label=preset`` or ``label=preset:{json overrides}``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--config must be label=preset[:json], got {text!r}")
    label, rest = text.split("=", 1)
    preset, _, js = rest.partition(":")
    try:
        overrides = json.loads(js) if js.strip() else {}
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"--config {label}: overrides are not JSON ({exc})"
        ) from None
    if not isinstance(overrides, dict):
        raise argparse.ArgumentTypeError(f"--config {label}: overrides must be a JSON object")
    return label, preset, overrides


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", default="cip-ct64", help="a standard pair of make_synthetic_pair.py")
    ap.add_argument(
        "--config",
        action="append",
        type=parse_config,
        required=True,
        help="label=preset[:json overrides]; repeat for several",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--kernels",
        action="store_true",
        help="time every ctreg.ops call of the best run of each configuration",
    )
    ap.add_argument(
        "--threaded-blas",
        action="store_true",
        help="do not hold BLAS to one thread inside register() (ops.serial_blas)",
    )
    ap.add_argument(
        "--no-warmup",
        action="store_true",
        help="no untimed run first: the first timed run is the process's first "
        "registration (what compare_simpleitk.py times)",
    )
    ap.add_argument(
        "--default-runtime",
        action="store_true",
        help="leave Python's garbage collector on and glibc's malloc thresholds at "
        "their defaults inside register() (ops.gc_paused, ops.keep_freed_memory)",
    )
    args = ap.parse_args(argv)

    import ctreg
    from make_synthetic_pair import standard_pairs
    from methods.common import load_pair

    specs = {s["name"]: s for s in standard_pairs(args.pair)}
    if args.pair not in specs:
        raise SystemExit(f"{args.pair}: its source scan is not in ../shared/data")
    pair = load_pair(specs[args.pair])
    ctreg.set_num_threads(args.threads)
    ctreg.ops.preload_kernels()
    if args.threaded_blas:
        ctreg.ops.serial_blas = contextlib.nullcontext
    if args.default_runtime:
        ctreg.ops.gc_paused = contextlib.nullcontext
        ctreg.ops.keep_freed_memory = lambda: False
    calls = _time_ops(ctreg.ops) if args.kernels else None
    print(
        f"{args.pair}: {pair.reference.shape} voxels, {len(pair.reference_points)} landmarks, "
        f"{args.threads} threads, best of {args.repeat}"
        + (", BLAS threads left on (no serial_blas)" if args.threaded_blas else "")
        + (
            ", default GC and malloc (no gc_paused / keep_freed_memory)"
            if args.default_runtime
            else ""
        )
        + (", no warm-up run" if args.no_warmup else "")
    )
    runs = []
    print("| config | best s | TRE mean / p95 / max mm | Jacobian min | seconds per stage |")
    print("|---|---|---|---|---|")
    for label, preset, overrides in args.config:
        if not args.no_warmup:
            ctreg.register(pair.reference, pair.floating, preset=preset, **overrides)
        best, result, best_calls = np.inf, None, {}
        for _ in range(args.repeat):
            if calls is not None:
                calls.clear()
            t0 = time.perf_counter()
            r = ctreg.register(pair.reference, pair.floating, preset=preset, **overrides)
            dt = time.perf_counter() - t0
            if dt < best:
                best, result, best_calls = dt, r, dict(calls or {})
        runs.append((label, best_calls))
        tre = np.linalg.norm(
            result.transform_points(pair.reference_points) - pair.floating_points, axis=1
        )
        stages = ", ".join(f"{k} {v:.3f}" for k, v in result.report["seconds"].items())
        print(
            f"| {label} | {best:.3f} | {tre.mean():.3f} / {np.percentile(tre, 95):.3f} / "
            f"{tre.max():.2f} | {result.report['jacobian']['min']:.2f} | {stages} |"
        )
    for label, per_op in runs:
        if not per_op:
            continue
        print(
            f"\n{label}: ctreg.ops calls of the best run "
            "(a kernel called inside another counts in both)"
        )
        print("| function | calls | ms | ms per call |")
        print("|---|---|---|---|")
        for name, (n, sec) in sorted(per_op.items(), key=lambda kv: -kv[1][1]):
            print(f"| {name} | {n} | {sec * 1e3:.1f} | {sec / n * 1e3:.3f} |")
    return 0


def _time_ops(ops) -> dict:
    """Wrap every public function of ctreg.ops (the engine calls them through the module) with a
    timer; returns the dict name -> [calls, seconds] that the wrappers fill."""
    import functools

    calls: dict = {}
    skip = {
        "serial_blas",
        "gc_paused",
        "keep_freed_memory",
        "preload_kernels",
        "set_num_threads",
        "get_num_threads",
    }
    for name in ops.__all__:
        fn = getattr(ops, name)
        if name in skip or not callable(fn):
            continue

        @functools.wraps(fn)
        def timed(*a, _fn=fn, _name=name, **kw):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                entry = calls.setdefault(_name, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - t0

        setattr(ops, name, timed)
    return calls


if __name__ == "__main__":
    raise SystemExit(main())
