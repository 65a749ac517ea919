"""Thin, checked façades over the native kernels (ctreg._native) and the Numba kernels.

This is the only module that imports ``ctreg._native``.  Every function here:

* validates its arguments once (dtype float32, C order, shapes), raising ``TypeError`` or
  ``ValueError`` that name the argument;
* documents shapes and units; arrays are (z, y, x), spacings (z, y, x) mm;
* never copies a large array silently.
"""
from __future__ import annotations

import os

import numpy as np

from . import _native

__all__ = ["set_num_threads", "get_num_threads"]


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
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    n = int(n)
    _native.set_num_threads(n)
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    """The thread count the kernels use now."""
    return int(_native.get_num_threads())


def _require_f32(name: str, a, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Check that ``a`` is a C-contiguous float32 ndarray with ``ndim`` dimensions."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise TypeError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {a.shape}")
    return a


_n = _env_threads()
if _n:
    set_num_threads(_n)
del _n


# ---------------------------------------------------------------------------------------------
# Resampling, image gradients, Gaussian smoothing (C++: cpp/include/ctreg/{warp,gradient,smooth}.hpp)
# [section owned by the resampling kernels]


# ---------------------------------------------------------------------------------------------
# Cubic B-spline FFD and similarity metrics (C++: cpp/include/ctreg/{bspline,metrics}.hpp)
# [section owned by the B-spline / metric kernels]


# ---------------------------------------------------------------------------------------------
# Pointwise field kernels (Numba: ctreg/_kernels.py)
# [section owned by the Numba kernels]
