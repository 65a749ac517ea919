"""Speed of the ctreg.mind kernels (not a test).

    python benchmarks/bench_mind.py                 # 2 threads, each case 3 times
    python benchmarks/bench_mind.py --threads 1 --repeat 5

Cases (random data; the kernels' cost does not depend on the values):

* mind_ssc on 256^3 (radius 1, distance 2), into a preallocated, already touched ``out``
  and into a new array (805 MB, first-touch page faults included);
* block_match_cost on a 100^3 level with 12 channels, grid step 4 (25^3 control points),
  block radius 2 sub-sampled (27 voxels), search radius 6 (L = 13^3 = 2197);
* regularise_cost on that cost volume with the default 6 alphas.

Prints every wall time (seconds) and the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ctreg import mind, ops


def timed(label, fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    print(
        f"{label}: median {statistics.median(ts):.3f} s  ({', '.join(f'{x:.3f}' for x in ts)})",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="mind_ssc cube edge")
    args = ap.parse_args()
    ops.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = args.size
    img = rng.normal(size=(n, n, n)).astype(np.float32)
    out = np.zeros(img.shape + (12,), np.float32)
    mind.mind_ssc(img[:8].copy())  # warm-up
    timed(f"mind_ssc {n}^3 out=", lambda: mind.mind_ssc(img, out=out), args.repeat)
    out = None  # free the 805 MB buffer before the next case
    timed(f"mind_ssc {n}^3 new output", lambda: mind.mind_ssc(img), args.repeat)
    img = None
    f = mind.mind_ssc(rng.normal(size=(100, 100, 100)).astype(np.float32))
    g = mind.mind_ssc(rng.normal(size=(100, 100, 100)).astype(np.float32))
    res = {}

    def bm():
        res["c"] = mind.block_match_cost(
            f, g, grid_step_vox=4, block_radius_vox=2, search_radius_vox=6
        )

    timed("block_match_cost 100^3 C=12 step 4 B=2/2 R=6 (L=2197)", bm, args.repeat)
    cost, offs = res["c"]
    timed(
        "regularise_cost 25^3 x 2197, 6 alphas",
        lambda: mind.regularise_cost(cost, offs, grid_spacing_mm=6.0, voxel_mm=1.5),
        args.repeat,
    )


if __name__ == "__main__":
    main()
