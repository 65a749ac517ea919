"""Thin, checked façades over the native kernels (ctreg._native) and the Numba kernels.

This is the only module that imports ``ctreg._native``.  Every function here:

* validates its arguments once (dtype float32, C order, shapes), raising ``TypeError`` or
  ``ValueError`` that name the argument;
* documents shapes and units; arrays are (z, y, x), spacings (z, y, x) mm;
* never copies a large array silently.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
from threadpoolctl import ThreadpoolController

from . import _native

__all__ = ["set_num_threads", "get_num_threads", "serial_blas", "gc_paused", "keep_freed_memory",
           "preload_kernels"]


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


@contextlib.contextmanager
def serial_blas():
    """Run the enclosed code with one BLAS thread (OpenBLAS, MKL, BLIS: scipy's and numpy's).

    L-BFGS-B calls BLAS on every iteration.  A threaded BLAS then leaves its worker threads
    spin-waiting for the next call, and on a machine with few cores they take the CPU from the
    native kernels' OpenMP threads: on 2 cores that made the kernels 2-14x slower between
    optimiser steps (``benchmarks/sweep_options.py --kernels --threaded-blas``, see
    ``benchmarks/README.md``).  ctreg's BLAS work is a few vectors of at most
    ~10^5 entries, which one thread does in microseconds.  The previous limits are restored on
    exit.  The setting is process-wide while it lasts, as every BLAS thread setting is.
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


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
    Cycles created meanwhile are collected after the block.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    process page-faults each of them in (measured with ``gc_paused``, see there).  glibc raises its threshold by itself after the first large blocks
    are freed, up to 32 MiB (with a trim threshold of 64 MiB), so only the first registration
    in a process pays; this sets those steady-state values at once with ``mallopt``.  Up to
    64 MiB of freed memory may stay with the process, and holes between live heap blocks are
    not returned: ``register()`` calls this only for scans of at most
    ``pipeline.KEEP_FREED_MEMORY_MAX_VOXELS`` voxels together, where it pays.  Does nothing (returns False) on other C
    libraries or when ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` are set in the
    environment (the user's choice wins).
    """
    if _malloc_state:
        return _malloc_state[0]
    ok = False
    if not any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                         "GLIBC_TUNABLES")):
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            libc.gnu_get_libc_version  # glibc only
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = (libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES) == 1
                  and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD_BYTES) == 1)
        except (OSError, AttributeError):
            ok = False
    _malloc_state.append(ok)
    return ok


def preload_kernels() -> float:
    """Load the compiled Numba kernels that ``register()`` uses from Numba's on-disk cache,
    without running any of them; returns the seconds it took.

    Numba loads a cached kernel on its first call in each process (0.1-0.2 s for the kernels of
    one registration, a start-up cost like an import).  Call this to pay it ahead of time, e.g.
    before timing a registration.  Kernels not yet in the cache are compiled, which takes longer
    the first time.  It also takes threadpoolctl's inventory of thread pools (see
    ``serial_blas``), ~5 ms once per process.  Loading a parallel kernel starts Numba's OpenMP thread pool, and GNU OpenMP
    is not fork-safe: do not fork the process afterwards (a fork server must not call this).
    """
    import time

    import numba

    from . import _kernels

    t0 = time.perf_counter()
    _blas_controller()
    f3 = np.zeros((2, 2, 2), np.float32)
    f4 = np.zeros((2, 2, 2, 3), np.float32)
    b3 = np.zeros((2, 2, 2), np.bool_)
    m33 = np.zeros((3, 3))
    x = 1.0
    # the argument types the façades pass (same dtypes, layouts and Python scalars)
    signatures = [
        (_kernels.scale_field_kernel, (f4, x, f4)),
        (_kernels.jacobian_stats_kernel, (f3, b3, True)),
        (_kernels.affine_field_kernel, (f4, m33, np.zeros((3, 4)), f4)),
    ]
    for kernel, args in signatures:
        kernel.compile(tuple(numba.typeof(a) for a in args))
    return time.perf_counter() - t0


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

__all__ += ["resample_affine", "resample_displacement", "gradient", "smooth"]


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


def resample_affine(image, matrix, out_shape, *, order=1, fill=0.0) -> np.ndarray:
    """Resample ``image`` on a new grid through an affine index map.

    Parameters
    ----------
    image : (z, y, x) float32, C-contiguous.
    matrix : (4, 4) maps an OUTPUT index (k, j, i, 1) to a continuous INPUT index (k, j, i, 1).
    out_shape : (z, y, x) of the result.
    order : 0 nearest neighbour (label maps; rounds half up), 1 trilinear.
    fill : value of output voxels that map outside the input, i.e. beyond the outermost voxel
        centres (index < 0 or > n - 1; no extrapolation).

    Returns
    -------
    (out_shape) float32.  Equals ``scipy.ndimage.map_coordinates(image, idx, order=order,
    mode='constant', cval=fill)`` (up to float32 weights; points within 1e-6 voxel of the
    border count as on it).
    """
    image = _require_f32("image", image, 3)
    _nonempty("image", image)
    m = _matrix4("matrix", matrix)
    shape = _shape3("out_shape", out_shape)
    order, fill = _order_fill(order, fill)
    return _native.resample_affine(image, m, list(shape), order, fill)


def resample_displacement(image, displacement, *, out_to_world, world_to_image,
                          field_from_out=None, out_shape=None, order=1, fill=0.0) -> np.ndarray:
    """Resample ``image`` through a dense displacement field.

    For each output voxel q: ``p = out_to_world q``; ``u = displacement(field_from_out q)``;
    ``value = interp(image, world_to_image (p + u))`` (``fill`` outside the image).

    Parameters
    ----------
    image : (z, y, x) float32, C-contiguous.
    displacement : (fz, fy, fx, 3) float32, vectors in the frame of ``p`` (world (x, y, z) mm
        when ``out_to_world`` is a ``Volume.affine``).
    out_to_world : (4, 4) output index (k, j, i) -> world point.
    world_to_image : (4, 4) world point -> continuous image index (k, j, i).
    field_from_out : (4, 4) or None; output index -> continuous field index (k, j, i).  None:
        the field lies on the output grid (fast path, no field interpolation).  Otherwise the
        field is interpolated trilinearly and clamped to its border outside its grid.
    out_shape : (z, y, x); defaults to the field's grid; required with ``field_from_out``.
    order : 0 nearest neighbour, 1 trilinear.
    fill : value outside the image (beyond the outermost voxel centres).

    Returns
    -------
    (out_shape) float32.
    """
    image = _require_f32("image", image, 3)
    _nonempty("image", image)
    displacement = _require_f32("displacement", displacement, 4)
    if displacement.shape[3] != 3:
        raise ValueError(f"displacement must be a (z, y, x, 3) vector field, got shape {displacement.shape}")
    _nonempty("displacement", displacement)
    o2w = _matrix4("out_to_world", out_to_world)
    w2i = _matrix4("world_to_image", world_to_image)
    f2o = None if field_from_out is None else _matrix4("field_from_out", field_from_out)
    shape = None if out_shape is None else list(_shape3("out_shape", out_shape))
    if f2o is None and shape is not None and tuple(shape) != displacement.shape[:3]:
        raise ValueError(f"out_shape {tuple(shape)} must equal the displacement grid "
                         f"{displacement.shape[:3]} when field_from_out is None")
    if f2o is not None and shape is None:
        raise ValueError("out_shape is required when field_from_out is given")
    order, fill = _order_fill(order, fill)
    return _native.resample_displacement(image, displacement, o2w, w2i, f2o, shape, order, fill)


__all__ += ["resample_composed"]


def resample_composed(image, inner, outer, spacing, *, out_to_world, world_to_image,
                      fill=0.0, valid_min=None, invalid_value=0.0):
    """``resample_displacement(image, compose_fields(outer, inner, spacing), ...)`` (trilinear,
    the field on the output grid) in one pass, without writing the composed field; the result
    is the same bit for bit.

    Parameters
    ----------
    image : (z, y, x) float32, C-contiguous.
    inner, outer : (z, y, x, 3) float32 displacement fields on the output grid, as for
        ``compose_fields`` (components along the array axes in mm, which must also be the frame
        of ``out_to_world``'s points).
    spacing : (z, y, x) mm of the fields' grid.
    out_to_world, world_to_image, fill : as for ``resample_displacement``.
    valid_min, invalid_value : optional; with ``valid_min`` the result is ``(warped, valid)``:
        ``valid`` (uint8) is 1 where the sample is >= valid_min, and ``warped`` holds
        ``invalid_value`` where it is not (as ``warp_with_gradient`` does).

    Returns
    -------
    (z, y, x) float32 on the fields' grid, or (that, (z, y, x) uint8) with ``valid_min``.
    """
    image = _require_f32("image", image, 3)
    _nonempty("image", image)
    _require_field("inner", inner)
    _require_field("outer", outer)
    _same_grid("outer", outer, "inner", inner.shape)
    _nonempty("inner", inner)
    sp = _require_spacing("spacing", spacing)
    o2w = _matrix4("out_to_world", out_to_world)
    w2i = _matrix4("world_to_image", world_to_image)
    _, fill = _order_fill(1, fill)
    if valid_min is None:
        return _native.resample_composed(image, inner, outer, sp, o2w, w2i, fill)
    return _native.resample_composed(image, inner, outer, sp, o2w, w2i, fill, float(valid_min),
                                     float(invalid_value))


__all__ += ["warp_with_gradient"]


def warp_with_gradient(image, gradients, displacement=None, *, out_to_world, world_to_image,
                       out_shape, fill, valid_min, invalid_value):
    """Trilinear resampling fused with the derivative of the result with respect to the sample
    point (one pass instead of four resamplings and a matrix product).

    For each output voxel q: ``x = world_to_image (out_to_world q + u(q))`` (``u`` =
    ``displacement`` on the output grid, or 0); ``w`` and ``g`` are ``image`` and the three
    ``gradients`` sampled at x with the same weights (``fill`` and 0 outside the image).

    Parameters
    ----------
    image : (z, y, x) float32, C-contiguous.
    gradients : three (z, y, x) float32 arrays shaped like ``image``: its derivative along its
        own index axes z, y, x (e.g. ``ops.gradient(image, (1, 1, 1))`` split by component).
    displacement : (out_shape + (3,)) float32 or None; vectors in the frame of ``out_to_world``.
    out_to_world, world_to_image : (4, 4) float64, as ``resample_displacement``.
    out_shape : (z, y, x) of the output grid.
    fill : ``w`` outside the image.  valid_min : ``w`` below it is invalid.
    invalid_value : written to ``warped`` where invalid.

    Returns
    -------
    warped : (out_shape) float32, ``w`` where valid, ``invalid_value`` elsewhere.
    valid : (out_shape) uint8, 1 where ``w >= valid_min``.
    gradient : (out_shape + (3,)) float32, ``L^T g`` with L the linear part of
        ``world_to_image`` (as float32): dw/du in the frame of ``out_to_world``.
    """
    image = _require_f32("image", image, 3)
    _nonempty("image", image)
    if len(gradients) != 3:
        raise ValueError(f"gradients must be three (z, y, x) arrays, got {len(gradients)}")
    grads = [_require_f32(f"gradients[{c}]", g, 3) for c, g in enumerate(gradients)]
    for c, g in enumerate(grads):
        if g.shape != image.shape:
            raise ValueError(f"gradients[{c}] has shape {g.shape}; expected the image's {image.shape}")
    shape = _shape3("out_shape", out_shape)
    if displacement is not None:
        displacement = _require_f32("displacement", displacement, 4)
        if displacement.shape != tuple(shape) + (3,):
            raise ValueError(f"displacement must have shape {tuple(shape) + (3,)} (the output grid), "
                             f"got {displacement.shape}")
    o2w = _matrix4("out_to_world", out_to_world)
    w2i = _matrix4("world_to_image", world_to_image)
    return _native.warp_with_gradient(image, *grads, displacement, o2w, w2i, list(shape),
                                      float(fill), float(valid_min), float(invalid_value))


__all__ += ["affine_moments"]

#: The entries of affine_moments' result (see cpp/include/ctreg/warp.hpp).
AFFINE_MOMENTS = 42


def affine_moments(image, gradients, reference, mask, matrix, *, valid_min: float) -> np.ndarray:
    """Sums for the exact value and affine gradient of SSD or NCC, fused with the resampling.

    ``image`` (floating, z, y, x) and its three derivative images ``gradients`` (along its own
    index axes z, y, x) are sampled trilinearly at ``matrix @ q`` for every voxel q of the
    ``reference`` grid where ``mask`` (uint8, or None) is set; a voxel counts when the point is
    inside the image and the sampled value w >= ``valid_min``.  Returns 42 float64:
    ``[N, Σr, Σw, Σr², Σw², Σrw]`` then, for a in (r, w, 1), ``Σ a g`` (3) and ``Σ a g qᵀ``
    (3 x 3, row c = gradient component, column b = index axis of q).
    """
    image = _require_f32("image", image, 3)
    _nonempty("image", image)
    if len(gradients) != 3:
        raise ValueError("gradients must be three (z, y, x) arrays (d image / d k, j, i)")
    gz, gy, gx = (_require_f32(f"gradients[{c}]", g, 3) for c, g in enumerate(gradients))
    reference = _require_f32("reference", reference, 3)
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or not mask.flags.c_contiguous:
            raise TypeError("mask must be a C-contiguous uint8 array or None")
    m = _matrix4("matrix", matrix)
    return _native.affine_moments(image, gz, gy, gx, reference, mask, m, float(valid_min))

def _spacing3(name: str, spacing) -> tuple[float, float, float]:
    s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be three positive numbers (z, y, x) in mm, got {spacing!r}")
    return tuple(float(v) for v in s)  # type: ignore[return-value]


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
    image = _require_f32("image", image, 3)
    _nonempty("image", image)
    return _native.gradient(image, list(_spacing3("spacing", spacing)))


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
    array = _require_f32("array", array, (3, 4))
    if array.ndim == 4 and array.shape[3] != 3:
        raise ValueError(f"array must be (z, y, x) or a (z, y, x, 3) vector field, got shape {array.shape}")
    _nonempty("array", array)
    sp = np.asarray(_spacing3("spacing", spacing))
    sig = np.asarray(sigma_mm, dtype=np.float64).reshape(-1)
    if sig.size == 1:
        sig = np.repeat(sig, 3)
    if sig.shape != (3,) or not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(f"sigma_mm must be a number or (z, y, x) numbers >= 0 in mm, got {sigma_mm!r}")
    truncate = float(truncate)
    if not (np.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate must be a positive number of standard deviations, got {truncate!r}")
    if add is not None:
        add = _require_f32("add", add, array.ndim)
        if add.shape != array.shape:
            raise ValueError(f"add has shape {add.shape}, array has {array.shape}")
    return _native.smooth(array, [float(v) for v in sig / sp], truncate, add)


# ---------------------------------------------------------------------------------------------
# Cubic B-spline FFD and similarity metrics (C++: cpp/include/ctreg/{bspline,metrics}.hpp)
# [section owned by the B-spline / metric kernels]

__all__ += ["bspline_grid_shape", "bspline_to_dense", "bspline_adjoint", "bending_energy",
            "ssd", "ncc", "lncc", "mattes_mi"]


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


def bspline_grid_shape(shape, spacing_vox) -> tuple[int, int, int]:
    """Control-grid shape (cz, cy, cx) of a cubic B-spline FFD over a dense (z, y, x) grid.

    Layout (Rueckert / NiftyReg): control point (a, b, c) sits at dense index
    ((a - 1) tz, (b - 1) ty, (c - 1) tx); dense voxel (k, j, i) uses control points
    (k // tz + l, j // ty + m, i // tx + n), l, m, n = 0..3.  Per axis the grid has
    ``(n - 1) // t + 4`` points, the fewest that hold the 4-point support of the last voxel
    (``ceil((n - 1) / t) + 3``, plus one when t divides n - 1).

    Parameters
    ----------
    shape : (z, y, x) dense voxel counts, positive integers.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels, >= 1.
    """
    shp = _int3("shape", shape, minimum=1)
    t = _int3("spacing_vox", spacing_vox, minimum=1)
    return tuple((n - 1) // s + 4 for n, s in zip(shp, t))  # type: ignore[return-value]


def bspline_to_dense(coeffs, spacing_vox, out_shape) -> np.ndarray:
    """Evaluate a cubic B-spline vector field on the dense grid.

    ``u(k, j, i) = sum_{l,m,n=0..3} B_l(fz) B_m(fy) B_n(fx) C[k//tz + l, j//ty + m, i//tx + n]``
    with ``fz = (k % tz) / tz`` (and likewise for y, x), B_0..B_3 the cubic B-spline basis.

    Parameters
    ----------
    coeffs : (cz, cy, cx, 3) float32, C order; any 3-vector per control point (ctreg stores
        world (x, y, z) mm displacements).  The grid must be at least
        ``bspline_grid_shape(out_shape, spacing_vox)``.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels.
    out_shape : (z, y, x) dense shape.

    Returns
    -------
    (z, y, x, 3) float32 field, in the units of ``coeffs``.
    """
    _require_coeffs("coeffs", coeffs)
    t = _int3("spacing_vox", spacing_vox, minimum=1)
    shp = _int3("out_shape", out_shape, minimum=1)
    need = bspline_grid_shape(shp, t)
    if any(c < g for c, g in zip(coeffs.shape[:3], need)):
        raise ValueError(f"coeffs grid {coeffs.shape[:3]} is smaller than bspline_grid_shape({shp}, {t}) = {need}")
    return _native.bspline_to_dense(coeffs, list(t), list(shp))


def bspline_adjoint(dense, spacing_vox, grid_shape) -> np.ndarray:
    """The exact adjoint (transpose) of :func:`bspline_to_dense`.

    ``<bspline_to_dense(c), u> == <c, bspline_adjoint(u)>``.  Maps a dense gradient (e.g.
    dcost/du from a metric) to the control points.  Deterministic for any thread count.

    Parameters
    ----------
    dense : (z, y, x, 3) float32, C order.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels.
    grid_shape : (cz, cy, cx), at least ``bspline_grid_shape(dense.shape[:3], spacing_vox)``.

    Returns
    -------
    (cz, cy, cx, 3) float32.
    """
    _require_coeffs("dense", dense)
    t = _int3("spacing_vox", spacing_vox, minimum=1)
    grid = _int3("grid_shape", grid_shape, minimum=1)
    need = bspline_grid_shape(dense.shape[:3], t)
    if any(c < g for c, g in zip(grid, need)):
        raise ValueError(f"grid_shape {grid} is smaller than bspline_grid_shape({dense.shape[:3]}, {t}) = {need}")
    return _native.bspline_adjoint(dense, list(t), list(grid))


def bending_energy(coeffs, spacing_vox, voxel_spacing_mm) -> tuple[float, np.ndarray]:
    """Thin-plate bending energy of a B-spline field and its exact gradient.

    NiftyReg's approximation: the second derivatives (mm^-2) are evaluated at the interior
    control points (indices 1..c-2 per axis, where the basis is (1/6, 4/6, 1/6)) and

        E = 1/P sum_points sum_components (u_zz² + u_yy² + u_xx² + 2 u_zy² + 2 u_zx² + 2 u_yx²)

    with P = (cz - 2)(cy - 2)(cx - 2) the number of points used.  Units: (coeff unit / mm²)².

    Parameters
    ----------
    coeffs : (cz, cy, cx, 3) float32, at least 4 points per axis.
    spacing_vox : integer or (tz, ty, tx) control spacing in voxels.
    voxel_spacing_mm : (z, y, x) voxel size in mm of the dense grid.

    Returns
    -------
    (E, dE/dcoeffs) with the gradient (cz, cy, cx, 3) float32.
    """
    _require_coeffs("coeffs", coeffs)
    if min(coeffs.shape[:3]) < 4:
        raise ValueError(f"coeffs must have at least 4 control points per axis, got {coeffs.shape[:3]}")
    t = _int3("spacing_vox", spacing_vox, minimum=1)
    sp = _spacing3("voxel_spacing_mm", voxel_spacing_mm)
    e, g = _native.bending_energy(coeffs, list(t), list(sp))
    return float(e), g


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


_METRIC_DOC = """
    Parameters
    ----------
    reference, warped : (z, y, x) float32, C order, same shape.
    mask : (z, y, x) uint8 or bool, optional; nonzero voxels are counted (N of them).  Every
        voxel when None.  No counted voxel -> ValueError.
    warped_gradient : (z, y, x, 3) float32, optional; the warped image's spatial gradient.

    Returns
    -------
    (cost, grad): ``grad`` is dcost/dW, (z, y, x) float32, zero outside the mask; or, with
    ``warped_gradient``, the fused product dcost/dW * warped_gradient, (z, y, x, 3) float32
    (the cost's gradient with respect to a displacement, computed in the same pass).
    Sums are ordered per z-slice, so results do not depend on the thread count.
"""


def ssd(reference, warped, *, mask=None, warped_gradient=None) -> tuple[float, np.ndarray]:
    mask = _metric_args(reference, warped, mask, warped_gradient)
    v, g = _native.metric_ssd(reference, warped, mask, warped_gradient)
    return float(v), g


ssd.__doc__ = """Sum of squared differences: cost = sum_mask (W - R)² / N.\n""" + _METRIC_DOC


def ncc(reference, warped, *, mask=None, warped_gradient=None) -> tuple[float, np.ndarray]:
    mask = _metric_args(reference, warped, mask, warped_gradient)
    v, g = _native.metric_ncc(reference, warped, mask, warped_gradient)
    return float(v), g


ncc.__doc__ = """Global normalised cross-correlation: cost = -cov(R, W) / sqrt(var R var W) over the mask.

    When either image is flat over the mask (variance <= 1e-12 times its mean square about a
    counted voxel's value) the cost and its gradient are 0.
""" + _METRIC_DOC


def lncc(reference, warped, *, radius_vox=(2, 2, 2), mask=None, warped_gradient=None
         ) -> tuple[float, np.ndarray]:
    mask = _metric_args(reference, warped, mask, warped_gradient)
    r = _int3("radius_vox", radius_vox, minimum=0)
    v, g = _native.metric_lncc(reference, warped, list(r), mask, warped_gradient)
    return float(v), g


lncc.__doc__ = """Local normalised cross-correlation (ANTs style): cost = -1/N sum_{v in mask} CC_v².

    CC_v² = cross² / (var_R var_W) with the window sums of centred products over the box
    |dk| <= rz, |dj| <= ry, |di| <= rx around v, clipped at the image border and restricted to
    mask voxels (so padding outside the mask never enters a window).  A window with
    var_R * var_W <= 1e-5 (intensity⁴; sums of squared deviations, not divided by the count)
    is flat: CC² = 0 there, with no gradient.  ``radius_vox``: integer or (rz, ry, rx) >= 0.
    The kernel keeps a (z, y, x, 4) float32 scratch field and a few MiB per thread.
""" + _METRIC_DOC


def mattes_mi(reference, warped, *, bins=32, ref_range=(-1000.0, 400.0), warped_range=(-1000.0, 400.0),
              mask=None, warped_gradient=None) -> tuple[float, np.ndarray]:
    mask = _metric_args(reference, warped, mask, warped_gradient)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 5:
        raise ValueError(f"bins must be an integer >= 5, got {bins!r}")
    ranges = []
    for name, rng in (("ref_range", ref_range), ("warped_range", warped_range)):
        lo, hi = (float(x) for x in rng)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"{name} must be (min, max) finite with max > min, got {rng!r}")
        ranges += [lo, hi]
    v, g = _native.metric_mattes_mi(reference, warped, int(bins), *ranges, mask, warped_gradient)
    return float(v), g


mattes_mi.__doc__ = """Mattes mutual information: cost = -MI (Mattes et al. 2003, ITK's Parzen scheme).

    The reference takes a zero-order window: bin ``floor((R - r0) / (r1 - r0) * bins)`` clipped
    to [0, bins - 1].  The warped image takes a cubic B-spline window centred at the continuous
    bin ``x = 1 + (W - w0) / (w1 - w0) * (bins - 3)`` in [1, bins - 2], spread over bins
    floor(x) - 1 .. floor(x) + 2, so no mass leaves the histogram.  Values outside the ranges are
    clipped (zero gradient there).  ``p(a, b) = 1/N sum_mask [bin_R = a] beta3(x - b)``,
    ``MI = sum p log(p / (p_R p_W))``.  ``bins`` >= 5.
""" + _METRIC_DOC


# ---------------------------------------------------------------------------------------------
# Pointwise field kernels (Numba: ctreg/_kernels.py)
# [section owned by the Numba kernels]
#
# Frame: a displacement / velocity field is a (nz, ny, nx, 3) float32 array on a regular grid
# with spacing (sz, sy, sx) mm; its components are (dz, dy, dx) in mm ALONG THE ARRAY AXES (the
# engine works in the reference grid's own axis frame and converts to world LPS at the end).
# Grid point (k, j, i) sits at mm position (k*sz, j*sy, i*sx); the map of a field u is
# phi(p) = p + u(p).  A field is evaluated between grid points by trilinear interpolation with
# the position clamped to the grid (outside the grid it takes the value of the nearest border
# point), as scipy.ndimage.map_coordinates(order=1, mode='nearest').

__all__ += [
    "compose_fields",
    "demons_forces",
    "exp_field",
    "invert_field",
    "jacobian_determinant",
    "resample_field",
]

_DEMONS_KINDS = ("symmetric", "floating")


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


def demons_forces(reference, warped, reference_gradient, warped_gradient=None, *, mask=None,
                  kind: str = "symmetric", max_step_mm: float = 2.0, spacing=None,
                  ) -> tuple[np.ndarray, float]:
    """Demons update field that decreases SSD(reference, warped).

    With ``diff = W - R`` (W the floating image warped by the current field: W(p) = F(p + u(p)))
    and ``J = (grad R + grad W) / 2`` (``kind="symmetric"``, the ESM / symmetric forces of
    Vercauteren et al.) or ``J = grad W`` (``kind="floating"``, Thirion's forces on the warped
    image), the update is::

        du = -diff * J / (|J|^2 + diff^2 / K)

    with ``K`` the normaliser in mm^2: the mean squared voxel spacing
    ``(sz^2 + sy^2 + sx^2) / 3`` of ``spacing`` (1 mm^2 when ``spacing`` is None).  This bounds
    ``|du| <= sqrt(K) / 2``; ``du`` is further clipped so that ``|du| <= max_step_mm``.  ``du`` is
    zero outside the mask and where the denominator is below 1e-12 (flat, equal images).

    Parameters
    ----------
    reference, warped : (z, y, x) float32 images (HU).
    reference_gradient, warped_gradient : (z, y, x, 3) float32, components (d/dz, d/dy, d/dx)
        in HU/mm.  ``reference_gradient`` is ignored (but checked) for ``kind="floating"``.
        ``warped_gradient=None``: ``gradient(warped, spacing)``, computed row by row inside the
        kernel (the same values bit for bit, without the (z, y, x, 3) array; needs
        ``spacing``).
    mask : (z, y, x) bool or uint8, optional; nonzero where the forces count.
    kind : "symmetric" or "floating".
    max_step_mm : positive number (``math.inf`` for no clipping).
    spacing : (z, y, x) mm, optional; sets the normaliser K.

    Returns
    -------
    du : (z, y, x, 3) float32, mm, components (dz, dy, dx) along the array axes.
    mse : float, mean of diff^2 over the mask (over the whole grid without a mask).
    """
    _require_f32("reference", reference, 3)
    _require_f32("warped", warped, 3)
    _same_grid("warped", warped, "reference", reference.shape)
    _require_field("reference_gradient", reference_gradient)
    _same_grid("reference_gradient", reference_gradient, "reference", reference.shape)
    if warped_gradient is not None:
        _require_field("warped_gradient", warped_gradient)
        _same_grid("warped_gradient", warped_gradient, "reference", reference.shape)
    elif spacing is None:
        raise ValueError("warped_gradient=None needs spacing (to compute the gradient)")
    if min(reference.shape) < 1:
        raise ValueError(f"reference must not be empty, got shape {reference.shape}")
    if kind not in _DEMONS_KINDS:
        raise ValueError(f"kind must be one of {_DEMONS_KINDS}, got {kind!r}")
    step = _require_positive("max_step_mm", max_step_mm, allow_inf=True)
    if spacing is None:
        norm, sp = 1.0, (1.0, 1.0, 1.0)
    else:
        sp = _require_spacing("spacing", spacing)
        norm = (sp[0] ** 2 + sp[1] ** 2 + sp[2] ** 2) / 3.0
    m = None
    if mask is not None:
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy.ndarray of bool or uint8, got {type(mask).__name__}")
        if mask.dtype not in (np.bool_, np.uint8):
            raise TypeError(f"mask must be bool or uint8, got {mask.dtype}")
        if mask.shape != reference.shape:
            raise ValueError(f"mask has shape {mask.shape}, reference has {reference.shape}")
        m = np.ascontiguousarray(mask).view(np.uint8)
    du, total, count = _native.demons_forces(reference, warped, reference_gradient, warped_gradient,
                                             m, sp, kind == "symmetric", norm, step, 1e-12)
    if count == 0:
        raise ValueError("mask selects no voxel: the demons forces need at least one")
    return du, float(total / count)


def compose_fields(outer, inner, spacing) -> np.ndarray:
    """Displacement of ``phi_outer ∘ phi_inner``: ``w(p) = inner(p) + outer(p + inner(p))``.

    Parameters
    ----------
    outer, inner : (z, y, x, 3) float32 displacement fields on the same grid, mm.
    spacing : (z, y, x) grid spacing, mm.

    Returns
    -------
    (z, y, x, 3) float32, mm.  ``outer`` is read at ``p + inner(p)`` by trilinear interpolation
    with the position clamped to the grid (C++: ctreg/warp.hpp).
    """
    _require_field("outer", outer)
    _require_field("inner", inner)
    _same_grid("inner", inner, "outer", outer.shape)
    sp = _require_spacing("spacing", spacing)
    return _native.compose_fields(outer, inner, sp)


def exp_field(velocity, spacing, *, max_step_vox: float = 0.5, copy: bool = True) -> np.ndarray:
    """Exponential of a stationary velocity field by scaling and squaring.

    Choose the smallest ``N >= 0`` with ``max|v| / 2^N <= max_step_vox`` (|v| measured in voxels:
    ``sqrt((vz/sz)^2 + (vy/sy)^2 + (vx/sx)^2)``), set ``u = v / 2^N`` and then ``N`` times
    ``u <- compose_fields(u, u)``.  ``exp(0) = 0``; for a smooth ``v`` the result is a
    diffeomorphism (positive Jacobian).

    Parameters
    ----------
    velocity : (z, y, x, 3) float32, mm.
    spacing : (z, y, x) mm.
    max_step_vox : positive number, the largest step in voxels before squaring.
    copy : False returns ``velocity`` itself when no squaring is needed (N = 0), instead of a
        copy; the caller must then not modify one while using the other.

    Returns
    -------
    (z, y, x, 3) float32 displacement, mm (a new array, unless ``copy=False`` and N = 0).
    """
    from . import _kernels

    _require_field("velocity", velocity)
    sz, sy, sx = _require_spacing("spacing", spacing)
    step = _require_positive("max_step_vox", max_step_vox)
    vmax = float(_native.max_norm_vox(velocity, (sz, sy, sx)))
    if not np.isfinite(vmax):
        raise ValueError("velocity contains NaN or infinity")
    n = 0 if vmax <= step else int(np.ceil(np.log2(vmax / step)))
    while vmax / 2.0 ** n > step:  # guard the rounding of log2
        n += 1
    if n == 0 and not copy:
        return velocity
    u = np.empty_like(velocity)
    _kernels.scale_field_kernel(velocity, 1.0 / 2.0 ** n, u)
    if n == 0:
        return u
    for _ in range(n):
        u = _native.compose_fields(u, u, (sz, sy, sx))
    return u


def jacobian_determinant(displacement, spacing) -> np.ndarray:
    """``det(I + grad u)`` on the grid of ``displacement``.

    ``grad u[a, b] = d u_a / d x_b`` with a, b over (z, y, x) in mm: central differences inside,
    first-order one-sided differences at the borders (``numpy.gradient`` with ``edge_order=1``),
    zero along an axis with a single point.  Values <= 0 mark folding.

    Parameters
    ----------
    displacement : (z, y, x, 3) float32, mm.
    spacing : (z, y, x) mm.

    Returns
    -------
    (z, y, x) float32.
    """
    _require_field("displacement", displacement)
    sp = _require_spacing("spacing", spacing)
    return _native.jacobian_determinant(displacement, sp)


def jacobian_statistics(jacobian, mask=None) -> dict:
    """Summary of a Jacobian determinant map, in one pass: ``{"min", "max",
    "percent_nonpositive", "sd_log"}`` over the voxels where ``mask`` (all when None);
    ``sd_log`` is the standard deviation of log J over J > 0 (None when there is none).
    An empty selection gives ``{}``.

    Parameters
    ----------
    jacobian : (z, y, x) float32.
    mask : (z, y, x) bool or uint8, or None.
    """
    from . import _kernels

    jacobian = _require_f32("jacobian", jacobian, 3)
    if mask is None:
        m, use = np.zeros((1, 1, 1), np.bool_), False
    else:
        m = np.asarray(mask)
        if m.shape != jacobian.shape:
            raise ValueError(f"mask has shape {m.shape}; expected the Jacobian's {jacobian.shape}")
        if m.dtype not in (np.bool_, np.uint8):
            raise TypeError(f"mask must be bool or uint8, got {m.dtype}")
        m, use = np.ascontiguousarray(m), True
    n, lo, hi, nonpos, pos, s1, s2 = _kernels.jacobian_stats_kernel(jacobian, m, use)
    if n == 0:
        return {}
    sd = None
    if pos > 0:
        mean = s1 / pos
        sd = float(np.sqrt(max(0.0, s2 / pos - mean * mean)))
    return {"min": float(lo), "max": float(hi), "percent_nonpositive": float(100.0 * nonpos / n),
            "sd_log": sd}


def affine_field(field, vectors, index_affine) -> np.ndarray:
    """``out(q) = vectors @ field(q) + index_affine @ (q, 1)`` at every grid index q = (k, j, i),
    computed in float64: e.g. a frame displacement turned into world coordinates.

    Parameters
    ----------
    field : (z, y, x, 3) float32.
    vectors : (3, 3) matrix applied to each vector.
    index_affine : (3, 4) or (4, 4) matrix applied to the grid index (k, j, i, 1).

    Returns
    -------
    (z, y, x, 3) float32 (a new array).
    """
    from . import _kernels

    _require_field("field", field)
    vec = np.ascontiguousarray(vectors, dtype=np.float64)
    idx = np.ascontiguousarray(np.asarray(index_affine, dtype=np.float64)[:3])
    if vec.shape != (3, 3) or idx.shape != (3, 4) or not (np.isfinite(vec).all() and np.isfinite(idx).all()):
        raise ValueError(f"vectors must be a finite 3x3 and index_affine a finite 3x4 or 4x4 matrix, "
                         f"got {np.shape(vectors)} and {np.shape(index_affine)}")
    out = np.empty_like(field)
    _kernels.affine_field_kernel(field, vec, idx, out)
    return out


def invert_field(displacement, spacing, *, iterations: int = 20, tol_mm: float = 1e-3) -> np.ndarray:
    """Inverse displacement ``v`` with ``phi_v ∘ phi_u ≈ id`` (and ``phi_u ∘ phi_v ≈ id``).

    Fixed-point iteration ``v(p) <- -u(p + v(p))`` starting from ``v = -u`` (the first of the
    ``iterations`` steps), stopping early when no voxel moves by more than ``tol_mm``.  Converges
    where ``u`` is a contraction (|grad u| < 1, no folding); near the grid border ``u`` is clamped,
    so the inverse is only accurate where ``p + v(p)`` stays inside the grid.

    Parameters
    ----------
    displacement : (z, y, x, 3) float32, mm.
    spacing : (z, y, x) mm.
    iterations : positive int, maximum number of fixed-point steps.
    tol_mm : positive number, stopping tolerance on the largest change, mm.

    Returns
    -------
    (z, y, x, 3) float32, mm.
    """
    from . import _kernels
    import logging

    _require_field("displacement", displacement)
    sz, sy, sx = _require_spacing("spacing", spacing)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    tol = _require_positive("tol_mm", tol_mm)
    v = np.empty_like(displacement)
    _kernels.scale_field_kernel(displacement, -1.0, v)
    tmp = np.empty_like(displacement)
    change = np.inf
    for _ in range(int(iterations) - 1):
        change = _kernels.invert_step_kernel(displacement, v, sz, sy, sx, tmp)
        v, tmp = tmp, v
        if change <= tol:
            break
    else:
        if iterations > 1:
            logging.getLogger("ctreg").debug(
                "invert_field: %d iterations, last change %.3g mm > tol_mm %.3g", iterations, change, tol)
    return v


def resample_field(field, spacing, out_shape, out_spacing, *, origin_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Resample a vector field onto another grid with the same axes.

    Output point (k, j, i) sits at mm ``origin_mm + (k*oz, j*oy, i*ox)`` of the input grid
    (whose index 0 is at mm 0) and takes the trilinear value of ``field`` there, the position
    clamped to the input grid (so beyond it the border value continues, as ``np.pad(mode=
    "edge")``).  Components are copied unchanged (they are mm).  C++ (ctreg/warp.hpp): the
    field's x line is interpolated once per output row, then only along x.  Downsampling does not smooth:
    the caller smooths first to avoid aliasing.

    Parameters
    ----------
    field : (z, y, x, 3) float32.
    spacing : (z, y, x) mm of ``field``.
    out_shape : three positive ints (z, y, x).
    out_spacing : (z, y, x) mm of the output grid.
    origin_mm : (z, y, x) mm position of output point (0, 0, 0) on the input grid.

    Returns
    -------
    out_shape + (3,) float32.
    """
    _require_field("field", field)
    sz, sy, sx = _require_spacing("spacing", spacing)
    oz, oy, ox = _require_spacing("out_spacing", out_spacing)
    try:
        shape = tuple(out_shape)
    except TypeError:
        raise TypeError(f"out_shape must be three positive ints (z, y, x), got {out_shape!r}") from None
    if len(shape) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                                  for n in shape):
        raise ValueError(f"out_shape must be three positive ints (z, y, x), got {out_shape!r}")
    origin = np.asarray(origin_mm, dtype=np.float64)
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise ValueError(f"origin_mm must be three finite numbers (z, y, x), got {origin_mm!r}")
    step = [oz / sz, oy / sy, ox / sx]
    first = [float(origin[0]) / sz, float(origin[1]) / sy, float(origin[2]) / sx]
    return _native.resample_field(field, step, first, [int(n) for n in shape])
