"""Lung images: the deformable stages compare the two scans' lungs, not their surroundings.

Between two breaths the lungs slide along the chest wall and the diaphragm moves 20-50 mm,
while ribs, muscle and the mediastinum move differently (or hardly at all).  With the lung
focus alone (``ctreg.lung_focus``) the metric still sees the chest wall inside the focus band
and the lung border competes with the wall's motion.  With lung images each scan is replaced,
for the deformable stages only, by its lungs: HU inside the scan's own lung mask, a constant
``outside_hu`` (soft tissue) elsewhere.  The lung border then becomes one strong, unambiguous
edge that the whole-lung NCC of the coarse B-spline level follows over large motion (as on
EMPIRE10's lung-only images), the vessels inside stay for the finer levels, and nothing
outside the lungs pulls the field.

The floating lungs come from ``register(floating_lungs=...)`` or ``ctreg.lungs.segment_lungs``;
when either scan has no usable lung mask, the deformable stages use the plain images and the
report says why (``report["lungs"]["images"]``).  The affine stage always uses the plain
images; the final warped scan is always resampled from the floating scan's original HU.
"""

from __future__ import annotations

import logging

import numpy as np

from .prep import SourceImage
from .volume import Volume

__all__ = ["floating_lungs", "lung_only", "mask_image", "affine_lung_dice", "MIN_AFFINE_LUNG_DICE"]

#: Below this Dice of the two lung masks after the affine stage the floating lungs are not
#: trusted (a lung lost by the segmentation gives at most ~0.67): the deformable stages then use
#: the plain images (``report["lungs"]["images"]["reason"] == "LungMask.Disagree"``).
MIN_AFFINE_LUNG_DICE = 0.75

log = logging.getLogger("ctreg")


def segment_floating(floating: Volume):
    """The floating scan's automatic lung segmentation (``ctreg.lungs.segment_lungs``), or the
    LungMaskError it raised: the slow part of :func:`floating_lungs`, which register() runs
    while the reference lungs are found."""
    from .lungs import LungMaskError, segment_lungs

    try:
        return segment_lungs(floating, min_ml=100.0)
    except LungMaskError as exc:
        return exc


def floating_lungs(
    floating: Volume, user_mask: np.ndarray | None, segmented=None
) -> tuple[np.ndarray | None, dict]:
    """(floating lung mask or None; report entry).  ``user_mask`` must be on the floating grid
    (checked by the caller).  ``segmented``: :func:`segment_floating`'s result when made
    already."""
    if user_mask is not None:
        if not user_mask.any():
            from .lungs import LungMaskError

            raise LungMaskError("floating_lungs holds no voxel", "LungMask.Empty")
        return user_mask, {"floating_source": "user"}
    from .lungs import LungMaskError

    seg = segment_floating(floating) if segmented is None else segmented
    if isinstance(seg, LungMaskError):
        exc = seg
        log.warning(
            "lung images off: floating scan: %s [%s]; the deformable stages use the plain images",
            exc,
            exc.code,
        )
        return None, {"floating_source": "automatic", "reason": exc.code, "message": str(exc)}
    voxel_ml = float(np.prod(floating.spacing)) / 1000.0
    return seg.mask, {
        "floating_source": "automatic",
        "floating_lung_ml": round(float(np.count_nonzero(seg.mask)) * voxel_ml, 1),
    }


def lung_only(image: Volume | SourceImage, lungs: np.ndarray, outside_hu: float):
    """The preprocessed ``image`` with ``outside_hu`` outside ``lungs`` (same grid, same
    validity: where the scanner wrote no data stays invalid); a ``prep.SourceImage`` gives a
    SourceImage (never stored whole), a Volume a Volume."""
    return _on(image, lambda src: src.with_mask(lungs, outside_hu))


def mask_image(image: Volume | SourceImage, lungs: np.ndarray, clip_hu: tuple[float, float]):
    """The lung mask as an image on ``image``'s grid: the lower clip value (air) in the lungs,
    0 HU (tissue) elsewhere; ``image``'s validity is kept.  SourceImage in, SourceImage out."""
    return _on(image, lambda src: src.mask_values(lungs, clip_hu[0], 0.0))


def _on(image, make):
    if isinstance(image, SourceImage):
        return make(image)
    return make(SourceImage.of(image)).volume()


def affine_lung_dice(
    reference: Volume,
    ref_lungs: np.ndarray,
    floating: Volume,
    flt_lungs: np.ndarray,
    world_map,
    step_mm: float = 4.0,
) -> float:
    """Dice of the reference lungs and the floating lungs mapped by ``world_map`` (reference
    world points -> floating world points, e.g. the affine stage's ``AffineTransform.apply``),
    on reference voxels about every ``step_mm`` where the floating scan has data (nearest
    neighbour).  A cheap check (~10^5 points) that the two masks show the same lungs."""
    step = np.maximum(1, np.round(step_mm / reference.spacing)).astype(int)
    idx = np.stack(
        np.meshgrid(*(np.arange(0, n, s) for n, s in zip(reference.shape, step)), indexing="ij"),
        axis=-1,
    ).reshape(-1, 3)
    ref_in = ref_lungs[idx[:, 0], idx[:, 1], idx[:, 2]]
    q = np.rint(floating.world_to_index(world_map(reference.index_to_world(idx)))).astype(np.int64)
    inside = np.all((q >= 0) & (q < np.asarray(floating.shape)), axis=1)
    q = np.clip(q, 0, np.asarray(floating.shape) - 1)
    if floating.valid is not None:
        inside &= floating.valid[q[:, 0], q[:, 1], q[:, 2]]
    flt_in = flt_lungs[q[:, 0], q[:, 1], q[:, 2]] & inside
    ref_in = ref_in & inside
    total = int(np.count_nonzero(ref_in)) + int(np.count_nonzero(flt_in))
    return 2.0 * int(np.count_nonzero(ref_in & flt_in)) / total if total else 0.0
