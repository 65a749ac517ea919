"""How long writing a big output file takes with and without ctreg's writeback (not a test).

    python benchmarks/bench_writeback.py                 # 800 MiB in 4 MiB pieces, 3 rounds
    python benchmarks/bench_writeback.py --mib 2000 --dir /data/tmp

Each round writes the same random bytes twice, alternating: once with plain buffered writes
(``open(path, "wb")``), once through ``ctreg.io.atomic.open_streamed``. The second writes
each window back to disk and drops it from the page cache as the file grows
(``io.atomic.Writeback``). Both are ``fsync``-ed at the end, as ctreg's outputs are before
their rename, and removed after.

For each it prints wall time, kernel CPU time, and the ratio of the means plain / streamed
(> 1: the streamed write is faster). Where fresh page-cache pages are expensive (a VM whose
host backs memory lazily and takes freed pages back), the plain write is mostly kernel time.
A write soon after a file of the same size was deleted reuses that file's pages and is fast
either way: the rounds are ``--pause`` seconds apart (default 5) so that each write meets the
memory as a new ``ctreg register`` run does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _write(path: str, data: np.ndarray, piece: int, streamed: bool) -> tuple[float, float]:
    from ctreg.io.atomic import open_streamed

    t0, c0 = time.perf_counter(), os.times()
    with open_streamed(path) if streamed else open(path, "wb") as fh:
        view = memoryview(data)
        for i in range(0, len(view), piece):
            fh.write(view[i : i + piece])
        fh.flush()
        os.fsync(fh.fileno())
    c1 = os.times()
    return time.perf_counter() - t0, c1.system - c0.system


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=800, help="file size in MiB (default 800)")
    ap.add_argument("--piece-mib", type=int, default=4, help="bytes per write() (default 4 MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="folder to write in (default: the temp folder)")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between writes (default 5)")
    args = ap.parse_args(argv)
    data = np.random.default_rng(0).integers(0, 256, args.mib << 20, dtype=np.uint8)
    folder = tempfile.mkdtemp(prefix="ctreg-writeback-", dir=args.dir)
    rows = {"plain": [], "streamed": []}
    try:
        for r in range(args.rounds):
            for kind in ("plain", "streamed"):
                time.sleep(args.pause)
                path = os.path.join(folder, f"{kind}.bin")
                wall, sys_s = _write(path, data, args.piece_mib << 20, kind == "streamed")
                rows[kind].append((wall, sys_s))
                os.unlink(path)
                print(f"round {r + 1} {kind:9s} {wall:6.2f} s wall  {sys_s:6.2f} s kernel")
    finally:
        os.rmdir(folder)
    mean = {k: sum(w for w, _ in v) / len(v) for k, v in rows.items()}
    print(
        f"{args.mib} MiB: plain {mean['plain']:.2f} s, streamed {mean['streamed']:.2f} s "
        f"(mean of {args.rounds}); plain / streamed {mean['plain'] / mean['streamed']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
