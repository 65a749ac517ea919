"""Per-phase wall time and memory of one job (read, masks, affine, discrete, bspline, demons,
resample, write), for ``RegistrationResult.report`` and ``ctreg register --profile``.

Imports nothing heavy (standard library only; psutil is not needed).  Memory figures are the
process's resident set size (RSS) in MiB:

* ``peak_rss_mib``: the high-water mark of the whole process so far (``getrusage`` ``ru_maxrss``),
  read when each phase ends; the first phase whose value jumps is the one that set the peak
  (a phase counted again later, as the lung-only images count as ``masks``, keeps the
  readings of its first end, so the values follow the phases' order);
* ``rss_mib``: the RSS right when the phase ended (``/proc/self/statm`` on Linux, else psutil
  when installed, else the peak).

A report holds ``report["seconds"]`` (phase -> s), ``report["memory"]`` with
``{"peak_rss_mib": ..., "phases": {phase: {"peak_rss_mib", "rss_mib"}}}`` and
``report["seconds_total"]``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterator

__all__ = [
    "PHASES",
    "PhaseTimer",
    "peak_rss_mib",
    "rss_mib",
    "process_age_s",
    "record",
    "snapshot",
    "format_profile",
]

#: The phases of one job, in the order they run (``bspline`` is the B-spline FFD stage,
#: ``lung_shape`` the B-spline on the two lung masks).
PHASES = (
    "read",
    "masks",
    "affine",
    "discrete",
    "lung_shape",
    "bspline",
    "demons",
    "sliding",
    "resample",
    "write",
)

_MIB = 1024.0 * 1024.0


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory so far, MiB."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / _MIB if sys.platform == "darwin" else peak / 1024.0


def rss_mib() -> float:
    """Resident memory of this process now, MiB (0.0 when it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:  # pragma: no cover - not Linux
        import psutil

        return psutil.Process().memory_info().rss / _MIB
    except Exception:  # pragma: no cover
        return 0.0


def process_age_s() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): the wall time a user sees,
    interpreter start and imports included."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            start_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PhaseTimer:
    """Wall seconds and memory per phase.  A phase entered twice adds up its seconds."""

    def __init__(self, seconds: dict | None = None, memory: dict | None = None):
        self.seconds: dict[str, float] = {} if seconds is None else seconds
        self.phases: dict[str, dict] = {} if memory is None else memory

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` for ``name`` and, the first time, read the memory now (the phase
        has just ended)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)
        if name not in self.phases:
            self.phases[name] = {
                "peak_rss_mib": round(peak_rss_mib(), 1),
                "rss_mib": round(rss_mib(), 1),
            }

    def memory_report(self) -> dict:
        return {"peak_rss_mib": round(peak_rss_mib(), 1), "phases": self.phases}


def snapshot() -> dict:
    """The memory figures of a phase that has just ended (for :func:`record` later)."""
    return {"peak_rss_mib": round(peak_rss_mib(), 1), "rss_mib": round(rss_mib(), 1)}


def record(report: dict, name: str, seconds: float, memory: dict | None = None) -> None:
    """Add a phase measured outside ``register()`` (``read`` by the CLI, ``write`` by
    ``RegistrationResult.save``) to a result's report, and add its time to ``seconds_total``
    (which then covers the whole job).  ``memory``: the :func:`snapshot` taken when the phase
    ended (default: now)."""
    timer = PhaseTimer(
        report.setdefault("seconds", {}), report.setdefault("memory", {}).setdefault("phases", {})
    )
    timer.add(name, seconds)
    if memory is not None:
        timer.phases[name] = dict(memory)
    report["memory"]["peak_rss_mib"] = round(peak_rss_mib(), 1)
    report["seconds_total"] = float(report.get("seconds_total", 0.0)) + float(seconds)


def format_profile(report: dict, *, wall_s: float | None = None) -> str:
    """The per-phase table that ``ctreg register --profile`` prints."""
    seconds = report.get("seconds", {})
    phases = report.get("memory", {}).get("phases", {})
    names = [p for p in PHASES if p in seconds] + [p for p in seconds if p not in PHASES]
    total = sum(seconds[p] for p in names)
    lines = [f"{'phase':<10} {'seconds':>8} {'share':>6} {'peak RSS MiB':>13} {'RSS MiB':>9}"]
    for p in names:
        m = phases.get(p, {})
        share = 100.0 * seconds[p] / total if total > 0 else 0.0
        lines.append(
            f"{p:<10} {seconds[p]:8.3f} {share:5.1f}% {m.get('peak_rss_mib', float('nan')):13.1f} "
            f"{m.get('rss_mib', float('nan')):9.1f}"
        )
    lines.append(f"{'phases':<10} {total:8.3f}")
    if wall_s is not None:
        lines.append(
            f"{'wall':<10} {wall_s:8.3f}   (process start to outputs written, imports included)"
        )
    lines.append(f"peak RSS {report.get('memory', {}).get('peak_rss_mib', peak_rss_mib()):.1f} MiB")
    return "\n".join(lines)
