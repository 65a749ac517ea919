"""Image gradients and Gaussian smoothing (C++: cpp/include/ctreg/{gradient,smooth}.hpp)."""

from __future__ import annotations

import numpy as np

from .. import _native
from .. import _checks as ck

__all__ = ["gradient", "smooth"]


def gradient(image, spacing) -> np.ndarray:
    """Image gradient ``(d/dz, d/dy, d/dx)`` in value per mm along the array axes.

    Parameters
    ----------
    image : (z, y, x) float32, C-contiguous.
    spacing : (z, y, x) voxel size in mm.

    Returns
    -------
    (z, y, x, 3) float32: central differences inside, one-sided first differences at the
    borders (``np.gradient(image, *spacing, edge_order=1)``); 0 along an axis of length 1.
    """
    image = ck.f32("image", image, 3)
    ck.nonempty("image", image)
    return _native.gradient(image, list(ck.spacing3("spacing", spacing)))


def smooth(array, sigma_mm, spacing, *, truncate=3.0, add=None) -> np.ndarray:
    """Separable Gaussian smoothing with replicated borders.

    Parameters
    ----------
    array : (z, y, x) float32 scalar image or (z, y, x, 3) vector field (each component is
        smoothed separately), C-contiguous.
    sigma_mm : standard deviation in mm, a scalar or (z, y, x); 0 on an axis = no smoothing.
    spacing : (z, y, x) voxel size in mm.
    truncate : kernel radius in standard deviations (``int(truncate * sigma_vox + 0.5)``).
    add : optional array like ``array``: smooth ``array + add`` (summed as the first pass reads
        them: the same result as ``smooth(array + add, ...)``, without the temporary).

    Returns
    -------
    Same shape, float32; equals ``scipy.ndimage.gaussian_filter(array, sigma=sigma_mm /
    spacing, mode='nearest', truncate=truncate)`` (sigma 0 on the vector axis).
    """
    array = ck.f32("array", array, (3, 4))
    if array.ndim == 4 and array.shape[3] != 3:
        raise ValueError(
            f"array must be (z, y, x) or a (z, y, x, 3) vector field, got shape {array.shape}"
        )
    ck.nonempty("array", array)
    sp = np.asarray(ck.spacing3("spacing", spacing))
    sig = np.asarray(sigma_mm, dtype=np.float64).reshape(-1)
    if sig.size == 1:
        sig = np.repeat(sig, 3)
    if sig.shape != (3,) or not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(
            f"sigma_mm must be a number or (z, y, x) numbers >= 0 in mm, got {sigma_mm!r}"
        )
    truncate = float(truncate)
    if not (np.isfinite(truncate) and truncate > 0):
        raise ValueError(
            f"truncate must be a positive number of standard deviations, got {truncate!r}"
        )
    if add is not None:
        add = ck.f32("add", add, array.ndim)
        if add.shape != array.shape:
            raise ValueError(f"add has shape {add.shape}, array has {array.shape}")
    return _native.smooth(array, [float(v) for v in sig / sp], truncate, add)
