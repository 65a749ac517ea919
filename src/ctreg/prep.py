"""The fast path of ``level.preprocess``: clip and no-data fill in one native pass
(``ops.clip_fill``), reading a crop in place, for the inputs where it gives exactly what
``np.clip`` + ``np.where`` give.

Equality holds when the scan is float32 (or a type whose values float32 holds exactly: the
conversion then commutes with clipping) and the bounds and fill are float32 values: rounding
to float32 is monotone, so clipping before or after it picks the same values.  Otherwise (e.g.
float64 scans with bounds like -1000.3) the caller keeps the NumPy path.
"""

from __future__ import annotations

import numpy as np

from . import ops
from .volume import Volume

__all__ = ["clip_fill"]

_EXACT_IN_FLOAT32 = (np.float32, np.int8, np.uint8, np.int16, np.uint16, np.float16)


def _f32_exact(x) -> bool:
    return bool(np.isfinite(x)) and float(np.float32(x)) == float(x)


def clip_fill(volume: Volume, clip_hu, invalid_value) -> np.ndarray | None:
    """``np.where(valid, clip(array), invalid_value)`` as float32, or None when the fast path
    does not apply (the caller then runs the NumPy path)."""
    arr = volume.array
    lo, hi = clip_hu
    fill = lo if invalid_value is None else invalid_value
    if (
        arr.ndim != 3
        or arr.dtype.type not in _EXACT_IN_FLOAT32
        or not all(map(_f32_exact, (lo, hi, fill)))
        or not lo <= hi
        or lo == 0
        or hi == 0
    ):  # np.clip writes +0.0 for -0.0 at a 0 bound
        return None
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    valid = volume.valid if invalid_value is not None else None
    return ops.clip_fill(arr, valid, lo, hi, fill)
