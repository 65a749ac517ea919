"""Process runtime of the kernels: thread count, BLAS threads, garbage collector, malloc, Numba
cache preloading.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from threadpoolctl import ThreadpoolController

from .. import _checks as ck
from .. import _native

__all__ = [
    "set_num_threads",
    "get_num_threads",
    "thread_limit",
    "serial_blas",
    "gc_paused",
    "reuse_freed_arrays",
    "keep_freed_memory",
    "preload_kernels",
]


def _env_threads() -> int:
    raw = os.environ.get("CTREG_NUM_THREADS", "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"CTREG_NUM_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"CTREG_NUM_THREADS must be a positive integer, got {raw!r}")
    return n


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in every native (C++/OpenMP) and Numba kernel.

    The default is the number of cores (or ``CTREG_NUM_THREADS`` when set).  Results do not
    depend on this setting: reductions are ordered independently of the thread count.
    """
    n = ck.positive_int("set_num_threads: n", n)
    _native.set_num_threads(n)
    numba = sys.modules.get("numba")  # ctreg's kernels are C++; set Numba's only if loaded
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    """The thread count the native kernels called from this thread use now (its
    ``thread_limit`` when inside one, else the process default)."""
    return int(_native.get_num_threads())


@contextlib.contextmanager
def thread_limit(n: int | None) -> Iterator[None]:
    """Run the enclosed code with ``n`` threads in the native and Numba kernels it calls from
    THIS thread; other threads, and this thread afterwards, are unaffected (the native count is
    thread-local, ``cpp/src/threads.cpp``, and so is Numba's).  ``None`` changes nothing.
    ``register(threads=n)`` uses it.  Results do not depend on the count.
    """
    if n is None:
        yield
        return
    n = ck.positive_int("threads", n)
    numba = sys.modules.get("numba")  # ctreg's kernels are C++; Numba's only if loaded
    prev_native = int(_native.get_thread_num_threads())
    prev_numba = None if numba is None else numba.get_num_threads()
    _native.set_thread_num_threads(n)
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        _native.set_thread_num_threads(prev_native)
        if numba is not None:
            numba.set_num_threads(prev_numba)


def run_concurrently(*calls: Callable[[], Any]) -> list:
    """Run the callables (no arguments) at once: the first in the calling thread, each other in
    a thread of its own, with the caller's context (NumPy's memory handler of
    :func:`reuse_freed_arrays`, ...) and its native thread count.  Returns their results in
    order; when some raise, the first of them (in order) is raised once all have ended.
    ``register()`` finds the two scans' masks this way: SciPy's morphology releases the GIL
    for most of its work."""
    if len(calls) <= 1:
        return [c() for c in calls]
    from concurrent.futures import ThreadPoolExecutor

    n = get_num_threads()

    def in_context(ctx, fn):
        with thread_limit(n):
            return ctx.run(fn)

    with ThreadPoolExecutor(len(calls) - 1, thread_name_prefix="ctreg-masks") as pool:
        futures = [pool.submit(in_context, contextvars.copy_context(), fn) for fn in calls[1:]]
        results: list = []
        errors: list = []
        for get in [calls[0]] + [f.result for f in futures]:
            try:
                results.append(get())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, in order
                results.append(None)
                errors.append(exc)
    if errors:
        raise errors[0]
    return results


class _Shared:
    """A process-wide setting shared by the threads inside a block: the first one in applies
    it, the last one out restores exactly what the first one found (a plain save/restore per
    thread would leave the setting changed when two blocks overlap without nesting)."""

    def __init__(self, apply, restore) -> None:
        self._apply, self._restore = apply, restore
        self._lock = threading.Lock()
        self._users = 0
        self._saved = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved = self._apply()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    saved, self._saved = self._saved, None
                    self._restore(saved)


@contextlib.contextmanager
def serial_blas():
    """Run the enclosed code with one BLAS thread (OpenBLAS, MKL, BLIS: scipy's and numpy's).

    L-BFGS-B calls BLAS on every iteration.  A threaded BLAS then leaves its worker threads
    spin-waiting for the next call, and on a machine with few cores they take the CPU from the
    native kernels' OpenMP threads: on 2 cores that made the kernels 2-14x slower between
    optimiser steps (``benchmarks/sweep_options.py --kernels --threaded-blas``, see
    ``benchmarks/README.md``).  ctreg's BLAS work is a few vectors of at most
    ~10^5 entries, which one thread does in microseconds.  The setting is process-wide while
    it lasts, as every BLAS thread setting is: with several threads inside, the last one out
    restores exactly the limits the first one found.
    """
    with _serial_blas():
        yield


def _blas_apply():
    return _blas_controller().limit(limits=1, user_api="blas")


def _blas_restore(limiter) -> None:
    limiter.restore_original_limits()


_serial_blas = _Shared(_blas_apply, _blas_restore)


_controllers: list = []


def _blas_controller():
    """threadpoolctl's view of the loaded thread pools, made once per process (it scans every
    loaded library: ~5 ms).  The BLAS libraries that matter (numpy's and scipy's, which L-BFGS-B
    uses) are loaded when ctreg is imported, before this first runs."""
    if not _controllers:
        _controllers.append(ThreadpoolController())
    return _controllers[0]


@contextlib.contextmanager
def gc_paused():
    """Run the enclosed code with Python's cyclic garbage collector paused (its previous state
    is restored on exit, also after an error).

    A registration allocates few Python objects, and its arrays are freed by reference
    counting.  But the objects it does allocate count towards the collector's thresholds, and
    a full collection then walks every object of the process (with SciPy and Numba imported,
    tens of ms in the middle of a registration).  What this and ``keep_freed_memory`` buy
    together: ``benchmarks/sweep_options.py --no-warmup --repeat 1 [--default-runtime]``, see
    ``benchmarks/README.md``.
    Cycles created meanwhile are collected after the block.  With several threads inside, the
    collector stays paused until the last one leaves, which restores the state the first one
    found; the thresholds are never touched.
    """
    with _gc_paused():
        yield


def _gc_apply() -> bool:
    import gc

    was = gc.isenabled()
    gc.disable()
    return was


def _gc_restore(was: bool) -> None:
    import gc

    if was:
        gc.enable()


_gc_paused = _Shared(_gc_apply, _gc_restore)


#: The cache of the enclosing ``reuse_freed_arrays`` block, per context (as NumPy's handler).
_array_cache: contextvars.ContextVar = contextvars.ContextVar("ctreg_array_cache", default=None)


def release_spare_arrays() -> int:
    """Give the spare blocks of the enclosing :func:`reuse_freed_arrays` block back to the
    system now; returns the bytes released (0 outside such a block).  ``register()`` calls it
    where it has just dropped large arrays that later requests would not fit (the full-size
    working copies of the scans), so that they leave the resident memory at once rather than
    one cache miss at a time; glibc's arenas are trimmed too (``malloc_trim``)."""
    handler = _array_cache.get()
    released = 0 if handler is None else int(_native.array_cache_trim(handler))
    _malloc_trim()
    return released


def _malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: free memory inside every malloc arena (the heaps of the
    threads that ran ``run_concurrently``'s calls too) goes back to the system."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


#: Smallest array buffer ``reuse_freed_arrays`` keeps for reuse (smaller ones come from
#: malloc's heap, which reuses them by itself).
REUSE_MIN_BYTES = 1024 * 1024


@contextlib.contextmanager
def reuse_freed_arrays(min_bytes: int = REUSE_MIN_BYTES) -> Iterator[dict | None]:
    """Run the enclosed code with a NumPy memory handler that reuses freed array buffers of at
    least ``min_bytes`` (``cpp/bindings/bind_memory.cpp``); yields a dict that receives the
    cache's counters (hits, misses, reused_bytes) on exit, or None when the cache is off.

    Each fresh full-size array is otherwise page-faulted in and zeroed by the kernel (glibc maps
    every block above 32 MiB anew): on 512x512x300 that was ~16 % of a registration's CPU time.
    The cache hands a freed block out again for a request of the same size (up to 25 % larger);
    on a request no block fits it releases at least that many spare bytes first, so the process
    never holds more memory than without it.  The values computed are the same.

    The handler is NumPy's per-context setting (``PyDataMem_SetHandler``, a context variable):
    other threads, and this thread after the block, keep their own handler; arrays that outlive
    the block are freed normally.  ``CTREG_REUSE_ARRAYS=0`` turns the cache off.
    """
    if os.environ.get("CTREG_REUSE_ARRAYS", "").strip() == "0":
        yield None
        return
    handler = _native.array_cache_new(int(min_bytes))
    previous = _native.array_cache_install(handler)
    token = _array_cache.set(handler)
    stats: dict = {}
    try:
        yield stats
    finally:
        _array_cache.reset(token)
        _native.array_cache_restore(previous)
        stats.update(_native.array_cache_stats(handler))
        _native.array_cache_close(handler)


#: glibc's own ceiling for its dynamic mmap threshold on 64-bit systems, and the trim threshold
#: it pairs with it (twice the mmap threshold).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024


TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES


_malloc_state: list = []


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks of up to 32 MiB instead of returning them to the
    system (once per process; returns whether the setting is in effect).

    By default glibc serves each allocation above 128 KiB with a fresh ``mmap`` and unmaps it
    when it is freed, so every new array of that size is page-faulted in again: on a 4 mm chest
    scan a registration allocates many short-lived arrays of 0.5-4 MB, and the first run in a
    process page-faults each of them in (measured with ``gc_paused``, see there).  glibc
    raises its threshold by itself after the first large blocks are freed, up to 32 MiB (with a
    trim threshold of 64 MiB), so only the first registration in a process pays; this sets
    those steady-state values at once with ``mallopt``.  Up to 64 MiB of freed memory may stay
    with the process, and holes between live heap blocks are not returned.

    A process-wide setting that cannot be undone (glibc has no way to read the previous
    values back): ``register()`` never calls it; a program that owns its process may.  The
    ``ctreg register`` command does, for scans of at most
    ``pipeline.KEEP_FREED_MEMORY_MAX_VOXELS`` voxels together, where it pays.  Does nothing
    (returns False) on other C libraries or when ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` are set in the environment (the user's choice wins).
    """
    if _malloc_state:
        return _malloc_state[0]
    ok = False
    if not any(
        k in os.environ
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    ):
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            libc.gnu_get_libc_version  # noqa: B018  (AttributeError off glibc)
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = (
                libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES) == 1
                and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD_BYTES) == 1
            )
        except (OSError, AttributeError):
            ok = False
    _malloc_state.append(ok)
    return ok


def no_huge_pages(off: bool = True) -> bool:
    """Turn transparent huge pages off (``off=True``) or back on for this process (Linux
    ``prctl(PR_SET_THP_DISABLE)``, inherited by child processes; returns whether the call took
    effect).  The values computed are the same either way.

    With THP set to ``always`` (many servers), every fresh array above glibc's mmap threshold
    is faulted in as 2 MiB pages, each zeroed (and compacted for) by the kernel; a registration
    allocates many short-lived arrays of tens of MiB (fields on the finest levels, the slabs
    of the full-resolution step): on EMPIRE10-01 ``register()`` took 23.5 s with THP and 15.4 s
    without on 2 cores, the kernel's share falling from 17.4 to 7.7 s.  Writing the outputs
    (many 4 MiB compression buffers) was faster with THP on (docs/performance.md), so the
    ``ctreg`` command turns THP off for ``register()`` only.  A process-wide setting:
    ``register()`` itself never calls it.  Set ``CTREG_HUGE_PAGES=1`` to keep the system's
    choice (the call then does nothing and returns False).
    """
    if not sys.platform.startswith("linux") or os.environ.get("CTREG_HUGE_PAGES", "") == "1":
        return False
    try:
        import ctypes

        pr_set_thp_disable = 41  # <linux/prctl.h>
        return (
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_thp_disable, 1 if off else 0, 0, 0, 0)
            == 0
        )
    except (OSError, AttributeError):
        return False


def preload_kernels() -> float:
    """Start-up work ahead of a timed registration; returns the seconds it took.

    Every kernel is compiled C++ now (no Numba compilation or cache loading at run time), so
    this only takes threadpoolctl's inventory of thread pools (see ``serial_blas``), ~5 ms once
    per process.  Kept for the benchmarks that call it.
    """
    import time

    t0 = time.perf_counter()
    _blas_controller()
    return time.perf_counter() - t0


# CTREG_NUM_THREADS applies when ctreg.ops is first imported.
_n = _env_threads()
if _n:
    set_num_threads(_n)
del _n
