"""Argument checks shared by the ops façades (dtype, layout, shapes, spacings).
"""
from __future__ import annotations

import numpy as np


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


def _matrix4(name: str, m) -> np.ndarray:
    """A finite 4x4 float64 C-contiguous copy of ``m`` (small; copying is free)."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(a)


def _shape3(name: str, shape) -> tuple[int, int, int]:
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three positive integers (z, y, x), got {shape!r}") from None
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"{name} must be three positive integers (z, y, x), got {shape!r}")
    return s  # type: ignore[return-value]


def _order_fill(order, fill) -> tuple[int, float]:
    if isinstance(order, bool) or order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest, for label maps) or 1 (trilinear), got {order!r}")
    return int(order), float(fill)


def _nonempty(name: str, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")


def _spacing3(name: str, spacing) -> tuple[float, float, float]:
    s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be three positive numbers (z, y, x) in mm, got {spacing!r}")
    return tuple(float(v) for v in s)  # type: ignore[return-value]


def _int3(name: str, value, *, minimum: int) -> tuple[int, int, int]:
    """Three integers (z, y, x) >= minimum (a single integer is used for every axis)."""
    vals = (value,) * 3 if isinstance(value, (int, np.integer)) else tuple(value)
    if len(vals) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                             for v in vals):
        raise ValueError(f"{name} must be an integer or three integers (z, y, x) >= {minimum}, got {value!r}")
    return tuple(int(v) for v in vals)  # type: ignore[return-value]


def _require_coeffs(name: str, a) -> np.ndarray:
    a = _require_f32(name, a, 4)
    if a.shape[3] != 3:
        raise ValueError(f"{name} must have shape (z, y, x, 3), got {a.shape}")
    return a


def _metric_args(reference, warped, mask, warped_gradient):
    """Check the common metric arguments; a bool mask is viewed (not copied) as uint8."""
    _require_f32("reference", reference, 3)
    _require_f32("warped", warped, 3)
    if warped.shape != reference.shape:
        raise ValueError(f"warped has shape {warped.shape}, reference has {reference.shape}")
    if mask is not None:
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy.ndarray (uint8 or bool) or None, got {type(mask).__name__}")
        if mask.dtype == np.bool_:
            mask = mask.view(np.uint8)
        if mask.dtype != np.uint8:
            raise TypeError(f"mask must be uint8 or bool, got {mask.dtype}")
        if not mask.flags.c_contiguous:
            raise TypeError("mask must be C-contiguous (use np.ascontiguousarray)")
        if mask.shape != reference.shape:
            raise ValueError(f"mask has shape {mask.shape}, reference has {reference.shape}")
    if warped_gradient is not None:
        _require_f32("warped_gradient", warped_gradient, 4)
        if warped_gradient.shape != reference.shape + (3,):
            raise ValueError(f"warped_gradient must have shape {reference.shape + (3,)}, "
                             f"got {warped_gradient.shape}")
    return mask


def _require_field(name: str, a) -> np.ndarray:
    """Check that ``a`` is a non-empty C-contiguous float32 (z, y, x, 3) vector field."""
    _require_f32(name, a, 4)
    if a.shape[3] != 3 or min(a.shape[:3]) < 1:
        raise ValueError(f"{name} must be a non-empty (z, y, x, 3) vector field, got shape {a.shape}")
    return a


def _require_spacing(name: str, spacing) -> tuple[float, float, float]:
    """(z, y, x) grid spacing in mm: three finite positive numbers, returned as Python floats."""
    try:
        s = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be three numbers (z, y, x) in mm, got {spacing!r}") from None
    if s.shape != (3,):
        raise ValueError(f"{name} must be three numbers (z, y, x) in mm, got {spacing!r}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be positive and finite (z, y, x) mm, got {s.tolist()}")
    return float(s[0]), float(s[1]), float(s[2])


def _require_positive(name: str, value, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not (v > 0) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a positive{'' if allow_inf else ' finite'} number, got {value!r}")
    return v


def _same_grid(name: str, a: np.ndarray, ref_name: str, ref_shape: tuple) -> None:
    if a.shape[:3] != tuple(ref_shape[:3]):
        raise ValueError(f"{name} has grid shape {a.shape[:3]}, {ref_name} has {tuple(ref_shape[:3])}")
