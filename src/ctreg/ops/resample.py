"""Resampling through affine maps and displacement fields, fused resampling + gradient, affine
moments (C++: cpp/include/ctreg/warp.hpp).
"""

from __future__ import annotations

import numpy as np

from .. import _native
from .. import _checks as ck

__all__ = [
    "resample_affine",
    "resample_displacement",
    "resample_composed",
    "warp_with_gradient",
    "affine_moments",
    "resample_field",
]


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
    image = ck.f32("image", image, 3)
    ck.nonempty("image", image)
    m = ck.matrix4("matrix", matrix)
    shape = ck.shape3("out_shape", out_shape)
    order, fill = ck.order_fill(order, fill)
    return _native.resample_affine(image, m, list(shape), order, fill)


def resample_displacement(
    image,
    displacement,
    *,
    out_to_world,
    world_to_image,
    field_from_out=None,
    out_shape=None,
    order=1,
    fill=0.0,
) -> np.ndarray:
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
    image = ck.f32("image", image, 3)
    ck.nonempty("image", image)
    displacement = ck.f32("displacement", displacement, 4)
    if displacement.shape[3] != 3:
        raise ValueError(
            f"displacement must be a (z, y, x, 3) vector field, got shape {displacement.shape}"
        )
    ck.nonempty("displacement", displacement)
    o2w = ck.matrix4("out_to_world", out_to_world)
    w2i = ck.matrix4("world_to_image", world_to_image)
    f2o = None if field_from_out is None else ck.matrix4("field_from_out", field_from_out)
    shape = None if out_shape is None else list(ck.shape3("out_shape", out_shape))
    if f2o is None and shape is not None and tuple(shape) != displacement.shape[:3]:
        raise ValueError(
            f"out_shape {tuple(shape)} must equal the displacement grid "
            f"{displacement.shape[:3]} when field_from_out is None"
        )
    if f2o is not None and shape is None:
        raise ValueError("out_shape is required when field_from_out is given")
    order, fill = ck.order_fill(order, fill)
    return _native.resample_displacement(image, displacement, o2w, w2i, f2o, shape, order, fill)


def resample_composed(
    image,
    inner,
    outer,
    spacing,
    *,
    out_to_world,
    world_to_image,
    fill=0.0,
    valid_min=None,
    invalid_value=0.0,
):
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
    image = ck.f32("image", image, 3)
    ck.nonempty("image", image)
    ck.vector_field("inner", inner)
    ck.vector_field("outer", outer)
    ck.same_grid("outer", outer, "inner", inner.shape)
    ck.nonempty("inner", inner)
    sp = ck.spacing3("spacing", spacing)
    o2w = ck.matrix4("out_to_world", out_to_world)
    w2i = ck.matrix4("world_to_image", world_to_image)
    _, fill = ck.order_fill(1, fill)
    if valid_min is None:
        return _native.resample_composed(image, inner, outer, sp, o2w, w2i, fill)
    return _native.resample_composed(
        image, inner, outer, sp, o2w, w2i, fill, float(valid_min), float(invalid_value)
    )


def warp_with_gradient(
    image,
    gradients,
    displacement=None,
    *,
    out_to_world,
    world_to_image,
    out_shape,
    fill,
    valid_min,
    invalid_value,
):
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
    image = ck.f32("image", image, 3)
    ck.nonempty("image", image)
    grads = ck.gradients3("gradients", gradients, image.shape)
    shape = ck.shape3("out_shape", out_shape)
    if displacement is not None:
        displacement = ck.f32("displacement", displacement, 4)
        if displacement.shape != tuple(shape) + (3,):
            raise ValueError(
                f"displacement must have shape {tuple(shape) + (3,)} (the output grid), "
                f"got {displacement.shape}"
            )
    o2w = ck.matrix4("out_to_world", out_to_world)
    w2i = ck.matrix4("world_to_image", world_to_image)
    return _native.warp_with_gradient(
        image,
        *grads,
        displacement,
        o2w,
        w2i,
        list(shape),
        float(fill),
        float(valid_min),
        float(invalid_value),
    )


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
    image = ck.f32("image", image, 3)
    ck.nonempty("image", image)
    gz, gy, gx = ck.gradients3("gradients", gradients, None)
    reference = ck.f32("reference", reference, 3)
    if mask is not None:
        mask = ck.mask_u8("mask", mask, reference.shape)
    m = ck.matrix4("matrix", matrix)
    return _native.affine_moments(image, gz, gy, gx, reference, mask, m, float(valid_min))


def resample_field(
    field, spacing, out_shape, out_spacing, *, origin_mm=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """Resample a vector field onto another grid with the same axes.

    Output point (k, j, i) sits at mm ``origin_mm + (k*oz, j*oy, i*ox)`` of the input grid
    (whose index 0 is at mm 0) and takes the trilinear value of ``field`` there, the position
    clamped to the input grid (so beyond it the border value continues, as ``np.pad(mode=
    "edge")``).  Components are copied unchanged (they are mm).  C++ (ctreg/warp.hpp): the
    field's x line is interpolated once per output row, then only along x.  Downsampling does
    not smooth: the caller smooths first to avoid aliasing.

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
    ck.vector_field("field", field)
    sz, sy, sx = ck.spacing3("spacing", spacing)
    oz, oy, ox = ck.spacing3("out_spacing", out_spacing)
    shape = ck.ints3("out_shape", tuple(out_shape), minimum=1)
    origin = np.asarray(origin_mm, dtype=np.float64)
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise ValueError(f"origin_mm must be three finite numbers (z, y, x), got {origin_mm!r}")
    step = [oz / sz, oy / sy, ox / sx]
    first = [float(origin[0]) / sz, float(origin[1]) / sy, float(origin[2]) / sx]
    return _native.resample_field(field, step, first, [int(n) for n in shape])
