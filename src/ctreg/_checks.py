"""Argument checks shared by the whole package (the lowest layer: imports numpy only).

Each check names the argument and says what is accepted; it raises ``TypeError`` for a wrong
type / dtype / layout and ``ValueError`` for a wrong shape or value, and returns the checked
value (converted to plain Python numbers or a view, never a silent copy of a large array unless
the caller asks for it).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = [
    "f32",
    "nonempty",
    "vector_field",
    "same_grid",
    "matrix4",
    "shape3",
    "ints3",
    "spacing3",
    "positive",
    "positive_int",
    "order_fill",
    "mask_u8",
    "gradients3",
    "mask_on_grid",
    "known_fields",
]


def f32(name: str, a: Any, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Check that ``a`` is a C-contiguous float32 ndarray with ``ndim`` dimensions."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise TypeError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {a.shape}"
        )
    return a


def nonempty(name: str, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")


def vector_field(name: str, a: Any) -> np.ndarray:
    """A non-empty C-contiguous float32 (z, y, x, 3) array (a vector field or B-spline
    coefficients)."""
    f32(name, a, 4)
    if a.shape[3] != 3 or min(a.shape[:3]) < 1:
        raise ValueError(
            f"{name} must be a non-empty (z, y, x, 3) vector field, got shape {a.shape}"
        )
    return a


def same_grid(name: str, a: np.ndarray, ref_name: str, ref_shape: tuple) -> None:
    if a.shape[:3] != tuple(ref_shape[:3]):
        raise ValueError(
            f"{name} has grid shape {a.shape[:3]}, {ref_name} has {tuple(ref_shape[:3])}"
        )


def matrix4(name: str, m: Any) -> np.ndarray:
    """A finite 4x4 float64 C-contiguous copy of ``m`` (small; copying is free)."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(a)


def shape3(name: str, shape: Any) -> tuple[int, int, int]:
    """Three positive integers (z, y, x) (any sequence of integer-valued numbers)."""
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be three positive integers (z, y, x), got {shape!r}"
        ) from None
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"{name} must be three positive integers (z, y, x), got {shape!r}")
    return s[0], s[1], s[2]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def ints3(name: str, value: Any, *, minimum: int) -> tuple[int, int, int]:
    """Three integers (z, y, x) >= minimum (a single integer is used for every axis)."""
    vals = (value,) * 3 if _is_int(value) else tuple(value)
    if len(vals) != 3 or any(not _is_int(v) or v < minimum for v in vals):
        what = "positive ints" if minimum == 1 else f"ints >= {minimum}"
        raise ValueError(
            f"{name} must be three {what} (z, y, x) or one int for every axis, got {value!r}"
        )
    return int(vals[0]), int(vals[1]), int(vals[2])


def spacing3(name: str, spacing: Any) -> tuple[float, float, float]:
    """(z, y, x) grid spacing in mm: three finite positive numbers, as Python floats."""
    try:
        s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be three numbers (z, y, x) in mm, got {spacing!r}") from None
    if s.shape != (3,):
        raise ValueError(f"{name} must be three numbers (z, y, x) in mm, got {spacing!r}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be positive and finite (z, y, x) mm, got {s.tolist()}")
    return float(s[0]), float(s[1]), float(s[2])


def positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """A positive (finite unless ``allow_inf``) real number, as a Python float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not (v > 0) or (np.isinf(v) and not allow_inf):
        raise ValueError(
            f"{name} must be a positive{'' if allow_inf else ' finite'} number, got {value!r}"
        )
    return v


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (not a bool), as a Python int."""
    if not _is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def order_fill(order: Any, fill: Any) -> tuple[int, float]:
    if isinstance(order, bool) or order not in (0, 1):
        raise ValueError(
            f"order must be 0 (nearest, for label maps) or 1 (trilinear), got {order!r}"
        )
    return int(order), float(fill)


def mask_u8(
    name: str, mask: Any, shape: tuple | None, *, copy: bool = False, ref_name: str = "reference"
) -> np.ndarray:
    """A bool or uint8 ndarray of ``shape`` (None: any shape), viewed as uint8.

    ``copy=False``: it must be C-contiguous (TypeError otherwise); ``copy=True``: a
    non-contiguous mask is copied (masks are 1 byte a voxel)."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray of bool or uint8, got {type(mask).__name__}"
        )
    if mask.dtype not in (np.bool_, np.uint8):
        raise TypeError(f"{name} must be bool or uint8, got {mask.dtype}")
    if not mask.flags.c_contiguous:
        if not copy:
            raise TypeError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
        mask = np.ascontiguousarray(mask)
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"{name} has shape {mask.shape}, {ref_name} has {tuple(shape)}")
    return mask.view(np.uint8)


def mask_on_grid(
    name: str, mask: Any, shape: tuple, *, mismatch: Callable[[str], Exception], to_bool: bool
) -> np.ndarray:
    """A user's (z, y, x) mask on its image's grid of ``shape``, as a C-contiguous bool array.

    The one check of the body masks (``register(reference_mask=...)``) and the lung masks
    (:func:`ctreg.lungs.check_mask_grid`).  A shape other than ``shape`` raises
    ``mismatch(message)``: the caller's error class with its stable code.  A mask that is not
    bool is converted (``mask != 0``) when ``to_bool``, else ``TypeError``.  A mask that is
    already a C-contiguous bool array is returned as is (no copy)."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise mismatch(
            f"{name} has shape {m.shape} (z, y, x) but its image has shape "
            f"{tuple(shape)}: a mask must be on its own image's grid (resample it "
            "there first)"
        )
    if m.dtype != bool:
        if not to_bool:
            raise TypeError(f"{name} must be a bool array, got {m.dtype}")
        m = m != 0
    return np.ascontiguousarray(m)


def gradients3(name: str, gradients: Any, shape: tuple | None) -> list[np.ndarray]:
    """Three C-contiguous float32 (z, y, x) arrays (an image's derivatives along its index
    axes), each of ``shape`` when given."""
    if len(gradients) != 3:
        raise ValueError(
            f"{name} must be three (z, y, x) arrays (d image / d k, j, i), got {len(gradients)}"
        )
    out = [f32(f"{name}[{c}]", g, 3) for c, g in enumerate(gradients)]
    if shape is not None:
        for c, g in enumerate(out):
            if g.shape != tuple(shape):
                raise ValueError(
                    f"{name}[{c}] has shape {g.shape}; expected the image's {tuple(shape)}"
                )
    return out


def known_fields(cls: type) -> type:
    """Class decorator for a keyword-only dataclass: an unknown keyword raises
    :class:`~ctreg.errors.OptionError` listing the valid field names (instead of the dataclass's
    bare ``TypeError``); ``dataclasses.replace`` goes through it too."""
    import dataclasses
    import functools

    from .errors import unknown_names

    init = cls.__init__  # type: ignore[misc]
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        err = unknown_names(f"{cls.__name__} field(s)", kwargs, names)
        if err is not None:
            raise err
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls
