"""A one-line progress bar on stderr for long CLI runs (no dependency).

The library never prints: it logs one INFO record per stage level on the ``ctreg`` logger
(``"affine: level %d/%d ..."``, ``"b-spline: ..."``, ``"demons: ..."``, ``"resampling ..."``).
:class:`ProgressBar` listens to those records and redraws
``[########............]  42%  b-spline 2/3  12.3 s``; the records it shows are not printed as
lines too.  It is off when stderr is not a terminal (pipes, files, CI) or ``TERM=dumb``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import SupportsInt, cast

__all__ = ["ProgressBar", "progress_enabled"]

#: (record prefix, label, start fraction, end fraction) of the phases of ``ctreg register``.
_PHASES = (
    ("reading reference", "reading", 0.00, 0.03),
    ("reading floating", "reading", 0.03, 0.06),
    ("reference ", "masks", 0.06, 0.08),
    ("affine: level", "affine", 0.08, 0.30),
    ("b-spline: level", "b-spline", 0.30, 0.55),
    ("demons: level", "demons", 0.55, 0.85),
    ("resampling", "resampling", 0.85, 0.90),
    ("writing", "writing", 0.90, 0.99),
    ("done in", "done", 0.90, 0.90),
)
_WIDTH = 24


def progress_enabled(stream=None) -> bool:
    """True when ``stream`` (default stderr) is an interactive terminal."""
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


class _Handler(logging.Handler):
    def __init__(self, bar: "ProgressBar"):
        super().__init__(logging.INFO)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        if self.bar.update(record):
            record.ctreg_progress = True  # the root handler's filter drops it


class ProgressBar:
    """Context manager: ``with ProgressBar(enabled=progress_enabled()): register(...)``."""

    def __init__(self, *, enabled: bool = True, stream=None, logger: str = "ctreg"):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.logger = logging.getLogger(logger)
        self.fraction = 0.0
        self.label = "starting"
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._handler = _Handler(self)
        self._thread: threading.Thread | None = None
        self._filtered: list[logging.Handler] = []

    # -- records -> state ---------------------------------------------------------------------
    def update(self, record: logging.LogRecord) -> bool:
        """Advance on a known record; True when the record was consumed."""
        msg = record.msg if isinstance(record.msg, str) else ""
        for prefix, label, lo, hi in _PHASES:
            if msg.startswith(prefix):
                frac, text = hi, label
                args = record.args if isinstance(record.args, tuple) else ()
                if "level" in prefix and len(args) >= 2 and isinstance(args[0], int) and args[1]:
                    i, n = int(args[0]), int(cast(SupportsInt, args[1]))
                    frac = lo + (hi - lo) * (i - 1) / n
                    text = f"{label} {i}/{n}"
                elif prefix != "done in":
                    frac = lo
                with self._lock:
                    self.fraction = max(self.fraction, frac)
                    self.label = text
                self.draw()
                return prefix != "done in"
        return False

    def line(self) -> str:
        with self._lock:
            frac, label = self.fraction, self.label
        filled = int(round(_WIDTH * frac))
        return (
            f"\r[{'#' * filled}{'.' * (_WIDTH - filled)}] {100 * frac:3.0f}%  {label:<14} "
            f"{time.perf_counter() - self.t0:6.1f} s"
        )

    def _filter(self, record: logging.LogRecord) -> bool:
        """On the root handlers: drop the records the bar shows; clear the bar's line before
        any other record is printed (the next redraw puts the bar back)."""
        if getattr(record, "ctreg_progress", False):
            return False
        self.clear()
        return True

    def clear(self) -> None:
        if self.enabled:
            try:
                self.stream.write("\r" + " " * (len(self.line()) - 1) + "\r")
            except (OSError, ValueError):
                pass

    def draw(self) -> None:
        if not self.enabled:
            return
        try:
            self.stream.write(self.line())
            self.stream.flush()
        except (OSError, ValueError):
            pass

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> "ProgressBar":
        if not self.enabled:
            return self
        self.logger.addHandler(self._handler)
        for h in logging.getLogger().handlers:
            h.addFilter(self._filter)
            self._filtered.append(h)
        self._thread = threading.Thread(target=self._tick, name="ctreg-progress", daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self.draw()

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.logger.removeHandler(self._handler)
        for h in self._filtered:
            h.removeFilter(self._filter)
        if exc[0] is None:
            with self._lock:
                self.fraction, self.label = 1.0, "done"
        self.draw()
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
