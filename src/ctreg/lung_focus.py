"""Lung focus: the deformable stages count similarity in and around the lungs only.

Between two breaths the lungs slide along the chest wall: the displacement jumps at the
pleura, and one smooth field fitted to the whole body blurs that jump, pulling the lung
border and the vessels near it towards the chest wall's motion.  With the focus, the
deformable stages (discrete search, B-spline, demons) measure similarity only inside the
reference lungs grown by ``lung_focus_mm`` (enough to hold the pleura and the diaphragm's
edge, so the lung boundary itself is matched); the field beyond follows from the
regularisation (B-spline bending energy, demons smoothing) — smooth, and no longer competing
with the lungs' motion.  The affine stage still uses the whole body.

Lungs come from the user (``register(..., reference_lungs=mask)``) or from
``ctreg.lungs.segment_lungs``; when the automatic segmentation finds no usable lungs (a scan
without lungs in its field of view, a non-HU image), the stages fall back to the body mask and
the report says so (``report["lungs"]``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from . import ops
from .level import Level
from .masks import _expand  # nearest-neighbour upsampling back to the fine grid
from .pyramid import level_factors
from .volume import Volume

__all__ = ["focus_mask", "focus_and_lungs", "focused_level", "FOCUS_GRID_MM"]

log = logging.getLogger("ctreg")

#: The dilation by ``lung_focus_mm`` runs on a grid of about this spacing.
FOCUS_GRID_MM = 2.0


def _max_pool(mask: np.ndarray, factors) -> np.ndarray:
    """A coarse voxel is set when any fine voxel of its ``factors`` cell is (cells past the
    edge are padded with False): an OR of strided slices, one axis at a time."""
    out = mask
    for ax, f in enumerate(factors):
        if f == 1:
            continue
        idx = [slice(None)] * 3
        idx[ax] = slice(0, None, f)
        pooled = np.array(out[tuple(idx)])  # offset 0 of every cell: all n cells exist
        for off in range(1, f):
            idx[ax] = slice(off, None, f)
            part = out[tuple(idx)]  # the last cell may lack this offset
            sl = [slice(None)] * 3
            sl[ax] = slice(0, part.shape[ax])
            pooled[tuple(sl)] |= part
        out = pooled
    return out


def _grow(mask: np.ndarray, spacing, grow_mm: float) -> np.ndarray:
    """``mask`` grown by about ``grow_mm`` (Euclidean, on a ~2 mm grid), on the mask's grid."""
    f = level_factors(spacing, FOCUS_GRID_MM)
    small = _max_pool(mask, f)
    coarse_sp = np.asarray(spacing, float) * np.asarray(f)
    grown = ops.dilate_ball(small, coarse_sp, grow_mm)  # distance_transform_edt(~small) <= r
    return np.logical_or(_expand(grown, f, mask.shape), mask)


def focus_mask(
    reference_crop: Volume, body: np.ndarray, lungs: np.ndarray | None, focus_mm: float
) -> tuple[np.ndarray | None, dict]:
    """(mask on the cropped reference grid, or None for the body fallback; report entry).

    ``lungs``: the user's reference lung mask cropped to the same box, or None to segment them.
    """
    grown, info, _ = focus_and_lungs(reference_crop, body, lungs, focus_mm)
    return grown, info


def focus_and_lungs(
    reference_crop: Volume, body: np.ndarray, lungs: np.ndarray | None, focus_mm: float
) -> tuple[np.ndarray | None, dict, np.ndarray | None]:
    """``focus_mask``'s (focus, report entry) and the reference lungs it grew (None with it)."""
    spacing = reference_crop.spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    info: dict = {"focus_mm": float(focus_mm)}
    if lungs is None:
        from .lungs import LungMaskError, segment_lungs

        try:
            seg = segment_lungs(reference_crop, body=body, min_ml=100.0)
        except LungMaskError as exc:
            log.warning(
                "lung focus off: %s [%s]; the deformable stages use the body mask", exc, exc.code
            )
            info.update(used=False, source="automatic", reason=exc.code, message=str(exc))
            return None, info, None
        lungs = seg.mask
        info.update(source="automatic", notes=list(seg.notes))
    else:
        info["source"] = "user"
        if not lungs.any():
            from .lungs import LungMaskError

            raise LungMaskError(
                "reference_lungs holds no voxel inside the reference body's box", "LungMask.Empty"
            )
    grown = _grow(lungs, spacing, focus_mm) & body
    info.update(
        used=True,
        lung_ml=round(float(np.count_nonzero(lungs)) * voxel_ml, 1),
        focus_ml=round(float(np.count_nonzero(grown)) * voxel_ml, 1),
    )
    return grown, info, lungs


def focused_level(level: Level, focus: np.ndarray, factors) -> Level:
    """The level with its metric mask restricted to ``focus`` (on the cropped reference grid,
    subsampled by the level's ``factors`` as ``build_level`` subsamples the body)."""
    sl = tuple(slice(None, None, int(x)) for x in factors)
    sub = np.ascontiguousarray(focus[sl]).astype(np.uint8)
    if sub.shape != level.mask.shape:
        raise AssertionError(f"focus {sub.shape} and level {level.mask.shape} grids differ")
    mask = level.mask & sub
    if not mask.any():
        return level
    return dataclasses.replace(level, mask=np.ascontiguousarray(mask))
