"""Preprocessing kernels of the pyramid: smoothing evaluated only where a level keeps voxels,
and clipping with the no-data fill in one pass (C++: cpp/include/ctreg/{subsample,fields}.hpp).
"""

from __future__ import annotations

import numpy as np

from .. import _native
from .. import _checks as ck

__all__ = [
    "smooth_subsample",
    "smooth_subsample_source",
    "clip_fill",
    "map_piecewise_linear",
    "fullres_slab",
    "ball_reach",
    "dilate_ball",
    "itk_field_chunk",
]


def smooth_subsample(array, sigma_mm, spacing, factors, *, truncate=3.0) -> np.ndarray:
    """``smooth(array, sigma_mm, spacing, truncate=truncate)[::fz, ::fy, ::fx]``, bit for bit,
    computed only on the kept lattice (the z pass on the kept slices, the y pass on their kept
    rows, the x pass on the kept voxels: on a 4 mm level of a 0.7 mm scan about a sixth of
    the work of smoothing the whole grid).

    Parameters
    ----------
    array : (z, y, x) float32 scalar image, C-contiguous.
    sigma_mm, spacing, truncate : as ``ops.smooth``.
    factors : (z, y, x) integer subsampling factors >= 1.

    Returns
    -------
    (ceil(nz / fz), ceil(ny / fy), ceil(nx / fx)) float32.
    """
    array = ck.f32("array", array, 3)
    ck.nonempty("array", array)
    sig, truncate, f = _lattice(sigma_mm, spacing, factors, truncate)
    return _native.smooth_subsample(array, sig, truncate, f)


def _lattice(sigma_mm, spacing, factors, truncate):
    """smooth_subsample's arguments checked: sigma in voxels (exactly as ops.smooth computes
    it: the same kernel weights), truncate, factors."""
    sp = np.asarray(ck.spacing3("spacing", spacing))
    sig = np.asarray(sigma_mm, dtype=np.float64).reshape(-1)
    if sig.size == 1:
        sig = np.repeat(sig, 3)
    if sig.shape != (3,) or not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(
            f"sigma_mm must be a number or (z, y, x) numbers >= 0 in mm, got {sigma_mm!r}"
        )
    f = [int(x) for x in np.asarray(factors).reshape(-1)]
    if len(f) != 3 or min(f) < 1:
        raise ValueError(f"factors must be (z, y, x) integers >= 1, got {factors!r}")
    truncate = float(truncate)
    if not (np.isfinite(truncate) and truncate > 0):
        raise ValueError(
            f"truncate must be a positive number of standard deviations, got {truncate!r}"
        )
    return [float(v) for v in sig / sp], truncate, f


def _row_view(name: str, a, dtype, shape) -> np.ndarray:
    """``a`` as a (z, y, x) view with contiguous rows (copied only if it is not one)."""
    a = np.asarray(a)
    if a.dtype == np.bool_ and dtype == np.uint8:
        a = a.view(np.uint8)
    if a.dtype != dtype or a.shape != tuple(shape):
        raise ValueError(
            f"{name} must be {np.dtype(dtype).name} of shape {tuple(shape)}, got "
            f"{a.dtype} {a.shape}"
        )
    if a.strides[2] != a.itemsize or min(a.strides) < 0:
        a = np.ascontiguousarray(a)
    return a


def smooth_subsample_source(
    shape,
    sigma_mm,
    spacing,
    factors,
    *,
    image=None,
    valid=None,
    lo: float = -np.inf,
    hi: float = np.inf,
    fill: float = 0.0,
    mask=None,
    inside: float = 0.0,
    outside: float = 0.0,
    truncate: float = 3.0,
) -> np.ndarray:
    """:func:`smooth_subsample` of the image
    ``where(mask, where(valid, clip(image, lo, hi), fill), outside)`` (``image`` None: ``inside``
    in the mask; ``mask`` / ``valid`` None: everywhere), bit for bit, without that image ever
    existing whole: each row is computed where the z pass reads it.  The pyramid's sources
    (the clipped scans, their lung-only versions, the lung masks as images) are such images of
    the scans and masks, which are read in place (a crop view is not copied).

    image : (z, y, x) float32 array or view with contiguous rows; valid, mask : bool or uint8
    of ``shape`` (views too).  Values are compared and written as float32 (NaN stays NaN).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty (z, y, x), got {shape}")
    sig, truncate, f = _lattice(sigma_mm, spacing, factors, truncate)
    img = None if image is None else _row_view("image", image, np.float32, shape)
    v = None if valid is None or image is None else _row_view("valid", valid, np.uint8, shape)
    m = None if mask is None else _row_view("mask", mask, np.uint8, shape)
    return _native.smooth_subsample_source(
        img,
        v,
        m,
        shape,
        float(lo),
        float(hi),
        float(fill),
        float(inside),
        float(outside),
        sig,
        truncate,
        f,
    )


def clip_fill(image, valid, lo: float, hi: float, fill: float) -> np.ndarray:
    """``np.where(valid, np.clip(image, lo, hi), fill)`` as a new C-contiguous float32 array,
    in one pass (NaN stays NaN).

    Parameters
    ----------
    image : (z, y, x) float32 array or view whose rows are contiguous (a crop of a volume: read
        in place, not copied first).
    valid : bool or uint8 mask of the same shape (a view too), or None (every voxel valid).
    lo, hi, fill : values compared and written as float32.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.float32 or image.ndim != 3:
        raise TypeError("image must be a (z, y, x) float32 numpy array")
    if image.strides[2] != 4 or min(image.strides) < 0:
        image = np.ascontiguousarray(image)
    v = None
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != image.shape or v.dtype not in (np.bool_, np.uint8):
            raise ValueError(
                f"valid must be a bool mask of shape {image.shape}, got {v.dtype} {v.shape}"
            )
        if v.dtype == np.bool_:
            v = v.view(np.uint8)
        if v.strides[2] != 1 or min(v.strides) < 0:
            v = np.ascontiguousarray(v)
    return _native.clip_fill_view(image, v, float(lo), float(hi), float(fill))


def map_piecewise_linear(image, xp, fp, *, above: float) -> np.ndarray:
    """``np.where(image > above, np.interp(image, xp, fp), image).astype(np.float32)``, bit for
    bit, in one parallel pass (NaN stays NaN).

    Parameters
    ----------
    image : float32 array (any shape; copied to C order if it is not).
    xp, fp : the knots, 1-D of the same length >= 2, ``xp`` strictly increasing.
    above : only values above it are mapped (the others, e.g. the no-data sentinel, are kept).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.float32:
        raise TypeError("image must be a float32 numpy array")
    image = np.ascontiguousarray(image)
    xp = np.ascontiguousarray(xp, dtype=np.float64)
    fp = np.ascontiguousarray(fp, dtype=np.float64)
    if not (np.all(np.isfinite(xp)) and np.all(np.isfinite(fp))):
        raise ValueError("xp and fp must be finite")
    return _native.map_piecewise_linear(image, xp, fp, float(above))


def fullres_slab(
    u,
    step,
    first,
    rows,
    spacing,
    source,
    out_to_frame,
    to_index,
    *,
    sentinel,
    invalid_below,
    fill_hu,
    det_a,
    vec,
    idx,
    uh,
    jh,
    warped,
    valid,
    displacement,
    jacobian,
    jacobian_first: int = 0,
) -> None:
    """One z slab of ``register()``'s full-resolution step, in place (``ctreg.fullres_native``;
    C++: ctreg/fullres.hpp).  ``rows`` = (h0, h1, k0, k1): halo and core slices; ``uh`` /
    ``jh``: work buffers of at least (h1 - h0) slices; ``warped``, ``valid`` (bool) and
    ``displacement`` (z, y, x, 3) cover the whole reference grid; ``jacobian`` holds the grid's
    slices from ``jacobian_first`` on (0: the whole grid; k0: a buffer for the slab's core)."""
    ck.vector_field("u", u)
    for name, a in (
        ("source", source),
        ("uh", uh),
        ("jh", jh),
        ("warped", warped),
        ("displacement", displacement),
        ("jacobian", jacobian),
    ):
        ck.f32(name, a, (3, 4))
    if not (isinstance(valid, np.ndarray) and valid.dtype == np.bool_ and valid.flags.c_contiguous):
        raise TypeError("valid must be a C-contiguous bool array")
    vec = np.ascontiguousarray(vec, dtype=np.float64)
    idx = np.ascontiguousarray(np.asarray(idx, dtype=np.float64)[:3])
    _native.fullres_slab(
        u,
        [float(s) for s in step],
        [float(f) for f in first],
        [int(r) for r in rows],
        list(ck.spacing3("spacing", spacing)),
        source,
        ck.matrix4("out_to_frame", out_to_frame),
        ck.matrix4("to_index", to_index),
        float(sentinel),
        float(invalid_below),
        float(fill_hu),
        float(det_a),
        vec,
        idx,
        uh,
        jh,
        warped,
        valid.view(np.uint8),
        displacement,
        jacobian,
        int(jacobian_first),
    )


def ball_reach(spacing, radius_mm: float) -> np.ndarray:
    """(2 rz + 1, 2 ry + 1) int32: for each offset (dz, dy) in voxels, the largest |dx| whose
    offset is at most ``radius_mm`` long (-1: none), the length computed as
    ``scipy.ndimage.distance_transform_edt`` computes it, in float64:
    ``sqrt(((dz sz)^2 + (dy sy)^2) + (dx sx)^2)``."""
    sp = np.asarray(ck.spacing3("spacing", spacing), np.float64)
    r = float(radius_mm)
    if not (np.isfinite(r) and r >= 0):
        raise ValueError(f"radius_mm must be a number >= 0, got {radius_mm!r}")
    n = [int(r // s) + 1 for s in sp]  # offsets beyond are longer than r along that axis alone
    d = np.indices([m + 1 for m in n]).astype(np.float64)  # (3, nz+1, ny+1, nx+1): dz, dy, dx >= 0
    for ax in range(3):
        d[ax] *= sp[ax]
    np.multiply(d, d, d)
    inside = np.sqrt(np.add.reduce(d, axis=0)) <= r
    count = inside.sum(axis=2)  # the length grows with |dx|: the offsets inside are 0 .. count-1
    half = np.where(count > 0, count - 1, -1).astype(np.int32)  # (dz >= 0, dy >= 0)
    used = np.nonzero(half >= 0)  # (0, 0) always is: trim the offsets with none
    half = half[: used[0].max() + 1, : used[1].max() + 1]
    rows = np.concatenate([half[:0:-1], half])  # dz = -nz .. nz
    return np.ascontiguousarray(np.concatenate([rows[:, :0:-1], rows], axis=1))


def dilate_ball(mask, spacing, radius_mm: float) -> np.ndarray:
    """``scipy.ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm`` (the mask
    grown by ``radius_mm``), bool, without the distance map: each voxel checks the rows of the
    ball's (dz, dy) offsets for a mask voxel within the ball's x-extent
    (``cpp/src/morph.cpp``).  Equal to the scipy expression: lengths are compared as scipy
    computes them (:func:`ball_reach`); tested against it in tests/test_lung_focus_grow.py.
    A mask with no voxel set, or a ball of 255 voxels or more along x, takes the scipy path.

    Parameters
    ----------
    mask : (z, y, x) bool.
    spacing : (z, y, x) voxel size in mm.
    radius_mm : the growth, >= 0.
    """
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.ndim != 3:
        raise ValueError(f"mask must be a 3-D bool array, got {m.dtype} {m.shape}")
    reach = ball_reach(spacing, radius_mm)
    if reach.max() >= 255 or not m.any():
        import scipy.ndimage as ndi

        return ndi.distance_transform_edt(~m, sampling=spacing) <= float(radius_mm)
    grown = _native.dilate_rows(np.ascontiguousarray(m).view(np.uint8), reach)
    return grown.view(np.bool_)


def itk_field_chunk(u_rows, a_inv_t, start, along, size: int) -> np.ndarray:
    """One byte-shuffled chunk of transform.h5's field (``ctreg.io.itk_transform``): the 4 byte
    planes of ``size`` float32 values ``(u_rows @ a_inv_t + start[:, None]) + along[None]``
    (zero past the rows), the matmul as NumPy/OpenBLAS computes it in float32 (an FMA chain;
    ``cpp/src/itk_field.cpp``), the same bytes on every CPU.

    u_rows : (rows, nx, 3) float32 C-contiguous; a_inv_t : (3, 3) float32; start : (rows, 3)
    float32; along : (nx, 3) float32; size >= rows * nx * 3."""
    return _native.itk_field_chunk(
        np.ascontiguousarray(u_rows, np.float32),
        np.ascontiguousarray(a_inv_t, np.float32),
        np.ascontiguousarray(start, np.float32),
        np.ascontiguousarray(along, np.float32),
        int(size),
    )
