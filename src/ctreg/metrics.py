"""Similarity metrics by name, as costs to minimise, over the native kernels in ops.

``evaluate(name, reference, warped, ...) -> (cost, gradient)``: the gradient is dcost/dW (z, y, x)
or, when ``warped_gradient`` is given, dcost/dW times it — the gradient with respect to the
displacement (z, y, x, 3), in the frame of ``warped_gradient``'s components.

* ``ssd``: mean squared difference over the mask;
* ``ncc``: minus the normalised cross-correlation over the mask (robust to a global change of
  lung density between two breaths);
* ``lncc``: minus the mean squared local correlation in boxes of ``lncc_radius_mm``
  (follows vessels and fissures whatever the local density);
* ``mi``: minus Mattes mutual information with Parzen windows.
"""

from __future__ import annotations

import numpy as np

from . import ops

__all__ = ["METRICS", "evaluate", "radius_vox"]

METRICS = ("ssd", "ncc", "lncc", "mi")


def radius_vox(radius_mm: float, spacing) -> tuple[int, int, int]:
    """Box radius in voxels per axis (at least 1) for a radius in mm."""
    return tuple(max(1, int(round(radius_mm / s))) for s in np.asarray(spacing, float))  # type: ignore[return-value]


def evaluate(
    name: str,
    reference: np.ndarray,
    warped: np.ndarray,
    *,
    mask: np.ndarray | None,
    warped_gradient: np.ndarray | None = None,
    spacing=(1.0, 1.0, 1.0),
    lncc_radius_mm: float = 5.0,
    mi_bins: int = 32,
    intensity_range: tuple[float, float] = (-1000.0, 400.0),
) -> tuple[float, np.ndarray]:
    if name == "ssd":
        return ops.ssd(reference, warped, mask=mask, warped_gradient=warped_gradient)
    if name == "ncc":
        return ops.ncc(reference, warped, mask=mask, warped_gradient=warped_gradient)
    if name == "lncc":
        return ops.lncc(
            reference,
            warped,
            radius_vox=radius_vox(lncc_radius_mm, spacing),
            mask=mask,
            warped_gradient=warped_gradient,
        )
    if name == "mi":
        return ops.mattes_mi(
            reference,
            warped,
            bins=mi_bins,
            ref_range=intensity_range,
            warped_range=intensity_range,
            mask=mask,
            warped_gradient=warped_gradient,
        )
    raise ValueError(f"metric must be one of {METRICS}, got {name!r}")
