"""One pyramid level of a registration problem, shared by the affine, B-spline and demons stages.

A level holds the preprocessed reference (clipped HU on a subsampled grid of the cropped
reference), its mask, and the preprocessed floating scan on its own subsampled grid.  ``warp``
resamples the floating scan onto the level grid through an affine transform and, optionally, a
reference-frame displacement field; voxels that map outside the floating scan's data are
reported as invalid so that they never count in a metric.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import metrics, ops
from .prep import SourceImage
from .prep import clip_fill as _clip_fill
from .pyramid import downsample
from .transforms import AffineTransform, ReferenceFrame
from .volume import Volume

__all__ = ["Level", "build_level", "interior_level", "SENTINEL"]

#: Value written where the floating scan has no data; far below any clipped intensity, so a
#: trilinear sample that touches it falls below the clip range and is recognised as invalid.
SENTINEL = -4096.0


@dataclass
class Level:
    index: int
    spacing: np.ndarray  # (z, y, x) mm of the level grid
    shape: tuple[int, int, int]
    reference: np.ndarray  # (z, y, x) float32, clipped intensities
    mask: np.ndarray  # (z, y, x) uint8: reference body (and valid data)
    floating: Volume  # preprocessed floating scan (clipped, SENTINEL where invalid)
    out_to_frame: np.ndarray  # 4x4: level index (k, j, i) -> reference-frame point (z, y, x mm)
    frame: ReferenceFrame
    clip_low: float
    _reference_gradient: np.ndarray | None = None
    _floating_gradient: list | None = None
    _index_from_world: np.ndarray | None = None
    _world_from_frame: np.ndarray | None = None

    @property
    def reference_gradient(self) -> np.ndarray:
        if self._reference_gradient is None:
            self._reference_gradient = ops.gradient(self.reference, tuple(self.spacing))
        return self._reference_gradient

    def frame_to_floating_index(self, transform: AffineTransform) -> np.ndarray:
        """4x4: reference-frame point -> continuous floating index, through ``transform``
        (``transforms.frame_to_image_matrix``, with its two constant factors computed once)."""
        if self._index_from_world is None:
            self._index_from_world = np.linalg.inv(self.floating.affine)
            self._world_from_frame = self.frame.frame_to_world_matrix()
        return self._index_from_world @ transform.homogeneous() @ self._world_from_frame

    def warp(
        self,
        transform: AffineTransform,
        u_frame: np.ndarray | None = None,
        *,
        outer: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Floating resampled on the level grid: (warped, valid uint8).

        The map is ``transform ∘ (id + u_frame)``, or with ``outer`` (a field on the level
        grid) ``transform ∘ (id + outer) ∘ (id + u_frame)``, composed on the fly
        (``ops.resample_composed``).  Invalid voxels (outside the floating data) are set to the
        lower clip value, so that gradients stay bounded there; the caller excludes them
        through ``valid``.
        """
        to_index = self.frame_to_floating_index(transform)
        if u_frame is None:
            if outer is not None:
                raise ValueError("outer needs u_frame (use warp(transform, outer) alone instead)")
            warped = ops.resample_affine(
                self.floating.array,
                to_index @ self.out_to_frame,
                self.shape,
                order=1,
                fill=SENTINEL,
            )
        elif outer is not None:  # validity decided in the same pass
            return ops.resample_composed(
                self.floating.array,
                u_frame,
                outer,
                tuple(float(s) for s in self.spacing),
                out_to_world=self.out_to_frame,
                world_to_image=to_index,
                fill=SENTINEL,
                valid_min=self.clip_low - 0.5,
                invalid_value=self.clip_low,
            )
        else:
            warped = ops.resample_displacement(
                self.floating.array,
                u_frame,
                out_to_world=self.out_to_frame,
                world_to_image=to_index,
                order=1,
                fill=SENTINEL,
            )
        valid = warped >= self.clip_low - 0.5
        np.copyto(warped, np.float32(self.clip_low), where=~valid)
        return warped, valid.view(np.uint8)

    def floating_gradient_components(self) -> list[np.ndarray]:
        """Gradient of the floating scan in HU per voxel along its own index axes, one
        contiguous (z, y, x) array per axis; air instead of the SENTINEL where it has no data,
        so that the gradient next to missing data stays that of an air boundary."""
        if self._floating_gradient is None:
            arr = self.floating.array
            arr = np.where(arr <= SENTINEL / 2, np.float32(self.clip_low), arr).astype(np.float32)
            g = ops.gradient(arr, (1.0, 1.0, 1.0))
            self._floating_gradient = [np.ascontiguousarray(g[..., c]) for c in range(3)]
        return self._floating_gradient

    def warp_with_gradient(
        self, transform: AffineTransform, u_frame: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(warped, valid, gradient): ``gradient`` (z, y, x, 3) is the exact derivative of the
        warped intensity with respect to a displacement of the sampling point, in
        reference-frame components: grad_r F(M r) = M^T grad_index F, resampled at the same
        points as the intensities (rather than the derivative of the warped image, which mixes
        in the field's own Jacobian)."""
        return ops.warp_with_gradient(
            self.floating.array,
            self.floating_gradient_components(),
            u_frame,
            out_to_world=self.out_to_frame,
            world_to_image=self.frame_to_floating_index(transform),
            out_shape=self.shape,
            fill=SENTINEL,
            valid_min=self.clip_low - 0.5,
            invalid_value=self.clip_low,
        )

    def metric_mask(self, valid: np.ndarray) -> np.ndarray:
        return np.bitwise_and(self.mask, valid)

    def metric(
        self,
        name: str,
        warped: np.ndarray,
        mask: np.ndarray,
        warped_gradient: np.ndarray | None = None,
        **kw,
    ):
        return metrics.evaluate(
            name,
            self.reference,
            warped,
            mask=mask,
            warped_gradient=warped_gradient,
            spacing=self.spacing,
            **kw,
        )


def preprocess(
    volume: Volume, clip_hu: tuple[float, float], *, invalid_value: float | None
) -> Volume:
    """Clip HU to ``clip_hu``; where the scanner wrote no data put ``invalid_value``
    (None: the lower clip value)."""
    fast = _clip_fill(volume, clip_hu, invalid_value)  # one pass, same values (ctreg.prep)
    if fast is not None:
        return volume.with_array(fast)
    arr = np.clip(volume.array, clip_hu[0], clip_hu[1]).astype(np.float32, copy=False)
    if volume.valid is not None and invalid_value is not None:
        arr = np.where(volume.valid, arr, np.float32(invalid_value)).astype(np.float32)
    return volume.with_array(arr)


def _downsample(image: Volume | SourceImage, target_mm: float) -> Volume:
    if isinstance(image, SourceImage):
        return image.downsample(target_mm)
    return downsample(image, target_mm)


def build_level(
    index: int,
    target_mm: float,
    reference: Volume | SourceImage,
    reference_mask: np.ndarray,
    floating: Volume | SourceImage,
    frame: ReferenceFrame,
    clip_hu: tuple[float, float],
) -> Level:
    """A level at about ``target_mm`` spacing from the (cropped, preprocessed) volumes.

    ``reference`` and ``floating`` must already be clipped (stored, or as a ``prep.SourceImage``
    that is never stored whole); ``floating`` must carry its validity mask.  The floating scan
    is smoothed and subsampled with air where it has no data, and the SENTINEL is written
    afterwards on the subsampled invalid voxels.
    """
    ref_l = _downsample(reference, target_mm)
    f = np.rint(np.linalg.norm(ref_l.affine[:3, :3], axis=0) / reference.spacing).astype(int)
    sl = tuple(slice(None, None, int(x)) for x in f)
    mask = np.ascontiguousarray(reference_mask[sl]).astype(np.uint8)
    if ref_l.valid is not None:
        mask &= ref_l.valid.view(np.uint8)
    flt_l = _downsample(floating, target_mm)
    if flt_l.valid is not None and not flt_l.valid.all():
        arr = np.where(flt_l.valid, flt_l.array, np.float32(SENTINEL)).astype(np.float32)
        flt_l = flt_l.with_array(arr)
    out_to_frame = frame.world_to_frame_matrix() @ ref_l.affine
    return Level(
        index=index,
        spacing=ref_l.spacing,
        shape=ref_l.shape,
        reference=ref_l.array,
        mask=mask,
        floating=flt_l,
        out_to_frame=out_to_frame,
        frame=frame,
        clip_low=float(clip_hu[0]),
    )


#: Reference voxels that a stage's starting map takes within this many voxels of the floating
#: scan's border (or of its missing data) do not count in its metric (affine phases, B-spline
#: levels).
INTERIOR_MARGIN_VOX = 1


def interior_level(
    level: Level,
    transform: AffineTransform,
    margin_vox: int = INTERIOR_MARGIN_VOX,
    u_frame: np.ndarray | None = None,
) -> Level:
    """The level with its metric mask restricted to the reference voxels that
    ``transform ∘ (id + u_frame)`` maps at least ``margin_vox`` voxels inside the floating
    scan's data (an axis too short for the margin keeps all of it).

    A voxel whose sample leaves the floating data drops out of the metric, so the cost jumps
    wherever the counted set changes.  Two scans of the same field of view start with whole
    border slices exactly on the floating scan's edge, and every step then changes the set:
    the cost is discontinuous at the start and L-BFGS's line search fails there (on the popi
    pair the rigid phase stopped after 0 iterations; on a popi pair rotated by 9 degrees,
    whose corners lack data, the B-spline levels took 30 evaluations for 10 iterations).  With
    the border excluded, small steps keep the counted set fixed and the cost smooth.
    """
    flt = level.floating.array
    data = flt > SENTINEL / 2  # the floating scan's data
    if margin_vox > 0 and not data.all():  # keep away from missing data too (padding, a cut FOV)
        import scipy.ndimage as ndi

        data &= ~ndi.binary_dilation(~data, iterations=margin_vox)
    interior = data.astype(np.float32)
    for ax, n in enumerate(flt.shape):
        if n > 2 * margin_vox + 2:
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax] = slice(0, margin_vox)
            hi[ax] = slice(n - margin_vox, n)
            interior[tuple(lo)] = 0.0
            interior[tuple(hi)] = 0.0
    if margin_vox > 0 and interior.all():
        return level
    to_index = level.frame_to_floating_index(transform)
    if u_frame is None:
        inside = ops.resample_affine(
            interior, to_index @ level.out_to_frame, level.shape, order=0, fill=0.0
        )
    else:  # through transform ∘ (id + u_frame)
        inside = ops.resample_displacement(
            interior,
            u_frame,
            out_to_world=level.out_to_frame,
            world_to_image=to_index,
            order=0,
            fill=0.0,
        )
    mask = level.mask & (inside > 0.5).view(np.uint8)
    if not mask.any():  # nothing left (tiny overlap): keep the plain mask
        return level
    return dataclasses.replace(level, mask=np.ascontiguousarray(mask))
