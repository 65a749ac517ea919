"""Similarity metrics with their gradients and demons forces
(C++: cpp/include/ctreg/metrics.hpp).
"""

from __future__ import annotations

import numpy as np

from .. import _native
from .. import _checks as ck

__all__ = ["ssd", "ncc", "lncc", "mattes_mi", "demons_forces"]


def _metric_args(reference, warped, mask, warped_gradient):
    """Check the common metric arguments; a bool mask is viewed (not copied) as uint8."""
    ck.f32("reference", reference, 3)
    ck.f32("warped", warped, 3)
    if warped.shape != reference.shape:
        raise ValueError(f"warped has shape {warped.shape}, reference has {reference.shape}")
    if mask is not None:
        mask = ck.mask_u8("mask", mask, reference.shape)
    if warped_gradient is not None:
        ck.f32("warped_gradient", warped_gradient, 4)
        if warped_gradient.shape != reference.shape + (3,):
            raise ValueError(
                f"warped_gradient must have shape {reference.shape + (3,)}, "
                f"got {warped_gradient.shape}"
            )
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


ncc.__doc__ = (
    """Global normalised cross-correlation: cost = -cov(R, W) / sqrt(var R var W) over the mask.

    When either image is flat over the mask (variance <= 1e-12 times its mean square about a
    counted voxel's value) the cost and its gradient are 0.
"""
    + _METRIC_DOC
)


def lncc(
    reference, warped, *, radius_vox=(2, 2, 2), mask=None, warped_gradient=None
) -> tuple[float, np.ndarray]:
    mask = _metric_args(reference, warped, mask, warped_gradient)
    r = ck.ints3("radius_vox", radius_vox, minimum=0)
    v, g = _native.metric_lncc(reference, warped, list(r), mask, warped_gradient)
    return float(v), g


lncc.__doc__ = (
    """Local normalised cross-correlation (ANTs style): cost = -1/N sum_{v in mask} CC_v².

    CC_v² = cross² / (var_R var_W) with the window sums of centred products over the box
    |dk| <= rz, |dj| <= ry, |di| <= rx around v, clipped at the image border and restricted to
    mask voxels (so padding outside the mask never enters a window).  A window with
    var_R * var_W <= 1e-5 (intensity⁴; sums of squared deviations, not divided by the count)
    is flat: CC² = 0 there, with no gradient.  ``radius_vox``: integer or (rz, ry, rx) >= 0.
    The kernel keeps a (z, y, x, 4) float32 scratch field and a few MiB per thread.
"""
    + _METRIC_DOC
)


def mattes_mi(
    reference,
    warped,
    *,
    bins=32,
    ref_range=(-1000.0, 400.0),
    warped_range=(-1000.0, 400.0),
    mask=None,
    warped_gradient=None,
) -> tuple[float, np.ndarray]:
    mask = _metric_args(reference, warped, mask, warped_gradient)
    bins = ck.positive_int("bins", bins, minimum=5)
    ranges = []
    for name, rng in (("ref_range", ref_range), ("warped_range", warped_range)):
        lo, hi = (float(x) for x in rng)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"{name} must be (min, max) finite with max > min, got {rng!r}")
        ranges += [lo, hi]
    v, g = _native.metric_mattes_mi(reference, warped, int(bins), *ranges, mask, warped_gradient)
    return float(v), g


mattes_mi.__doc__ = (
    """Mattes mutual information: cost = -MI (Mattes et al. 2003, ITK's Parzen scheme).

    The reference takes a zero-order window: bin ``floor((R - r0) / (r1 - r0) * bins)`` clipped
    to [0, bins - 1].  The warped image takes a cubic B-spline window centred at the continuous
    bin ``x = 1 + (W - w0) / (w1 - w0) * (bins - 3)`` in [1, bins - 2], spread over bins
    floor(x) - 1 .. floor(x) + 2, so no mass leaves the histogram.  Values outside the ranges are
    clipped (zero gradient there).  ``p(a, b) = 1/N sum_mask [bin_R = a] beta3(x - b)``,
    ``MI = sum p log(p / (p_R p_W))``.  ``bins`` >= 5.
"""
    + _METRIC_DOC
)


_DEMONS_KINDS = ("symmetric", "floating")


def demons_forces(
    reference,
    warped,
    reference_gradient,
    warped_gradient=None,
    *,
    mask=None,
    kind: str = "symmetric",
    max_step_mm: float = 2.0,
    spacing=None,
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
    ck.f32("reference", reference, 3)
    ck.f32("warped", warped, 3)
    ck.same_grid("warped", warped, "reference", reference.shape)
    ck.vector_field("reference_gradient", reference_gradient)
    ck.same_grid("reference_gradient", reference_gradient, "reference", reference.shape)
    if warped_gradient is not None:
        ck.vector_field("warped_gradient", warped_gradient)
        ck.same_grid("warped_gradient", warped_gradient, "reference", reference.shape)
    elif spacing is None:
        raise ValueError("warped_gradient=None needs spacing (to compute the gradient)")
    if min(reference.shape) < 1:
        raise ValueError(f"reference must not be empty, got shape {reference.shape}")
    if kind not in _DEMONS_KINDS:
        raise ValueError(f"kind must be one of {_DEMONS_KINDS}, got {kind!r}")
    step = ck.positive("max_step_mm", max_step_mm, allow_inf=True)
    if spacing is None:
        norm, sp = 1.0, (1.0, 1.0, 1.0)
    else:
        sp = ck.spacing3("spacing", spacing)
        norm = (sp[0] ** 2 + sp[1] ** 2 + sp[2] ** 2) / 3.0
    m = None if mask is None else ck.mask_u8("mask", mask, reference.shape, copy=True)
    du, total, count = _native.demons_forces(
        reference,
        warped,
        reference_gradient,
        warped_gradient,
        m,
        sp,
        kind == "symmetric",
        norm,
        step,
        1e-12,
    )
    if count == 0:
        raise ValueError("mask selects no voxel: the demons forces need at least one")
    return du, float(total / count)
