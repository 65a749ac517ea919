"""Slow, obvious reference implementations that the fast kernels are tested against."""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi  # noqa: F401  (used by the sections below)


# --- resampling, gradients, smoothing ---------------------------------------------------------


# --- B-splines and metrics --------------------------------------------------------------------


# --- Numba field kernels ----------------------------------------------------------------------
