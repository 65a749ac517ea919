"""The fast path of ``level.preprocess``: clip and no-data fill in one native pass
(``ops.clip_fill``), reading a crop in place, for the inputs where it gives exactly what
``np.clip`` + ``np.where`` give; and :class:`SourceImage`, the same preprocessing (and the
lung-only and lung-mask images made from it) never stored at full size: the pyramid levels are
smoothed and subsampled from it directly (``ops.smooth_subsample_source``).

Equality holds when the scan is float32 (or a type whose values float32 holds exactly: the
conversion then commutes with clipping) and the bounds and fill are float32 values: rounding
to float32 is monotone, so clipping before or after it picks the same values.  Otherwise (e.g.
float64 scans with bounds like -1000.3) the caller keeps the NumPy path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ops
from .pyramid import lattice
from .volume import Volume

__all__ = ["clip_fill", "SourceImage"]

_EXACT_IN_FLOAT32 = (np.float32, np.int8, np.uint8, np.int16, np.uint16, np.float16)


def _f32_exact(x) -> bool:
    return bool(np.isfinite(x)) and float(np.float32(x)) == float(x)


def _exact_bounds(lo, hi, fill) -> bool:
    """Whether float32 clipping to (lo, hi) and the fill give NumPy's values (np.clip writes
    +0.0 for -0.0 at a 0 bound)."""
    return all(map(_f32_exact, (lo, hi, fill))) and lo <= hi and lo != 0 and hi != 0


def clip_fill(volume: Volume, clip_hu, invalid_value) -> np.ndarray | None:
    """``np.where(valid, clip(array), invalid_value)`` as float32, or None when the fast path
    does not apply (the caller then runs the NumPy path)."""
    arr = volume.array
    lo, hi = clip_hu
    fill = lo if invalid_value is None else invalid_value
    if arr.ndim != 3 or arr.dtype.type not in _EXACT_IN_FLOAT32 or not _exact_bounds(lo, hi, fill):
        return None
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    valid = volume.valid if invalid_value is not None else None
    return ops.clip_fill(arr, valid, lo, hi, fill)


@dataclass(frozen=True, eq=False)
class SourceImage:
    """An image a pyramid level is built from, defined voxel by voxel from arrays it reads in
    place and never stored at full size::

        where(mask, where(valid, clip(image, lo, hi), fill), outside)

    (``image`` None: ``inside`` within the mask; ``fill`` None: validity does not change the
    values; ``mask`` None: no mask).  :meth:`downsample` smooths and subsamples it as
    ``pyramid.downsample`` does its stored version, bit for bit; :meth:`volume` stores it.

    ``valid`` is also the validity that the levels carry (subsampled), as the Volume's would.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    image: np.ndarray | None
    valid: np.ndarray | None
    lo: float = -np.inf
    hi: float = np.inf
    fill: float | None = None
    mask: np.ndarray | None = None
    inside: float = 0.0
    outside: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preprocessed(
        cls, volume: Volume, box, clip_hu: tuple[float, float], invalid_value: float
    ) -> SourceImage:
        """``level.preprocess(pyramid.crop(volume, box), clip_hu, invalid_value=...)`` as a
        source reading ``volume`` in place (``box`` None: the whole volume).  Bounds the native
        comparison would round differently from ``np.clip`` are stored once instead."""
        from .pyramid import crop, crop_affine

        lo, hi = (float(v) for v in clip_hu)
        if not _exact_bounds(lo, hi, float(invalid_value)):
            from .level import preprocess

            part = volume if box is None else crop(volume, box)
            return cls.of(preprocess(part, clip_hu, invalid_value=invalid_value))
        if box is None:
            image, valid, affine = volume.array, volume.valid, volume.affine
        else:
            image = volume.array[box]
            valid = None if volume.valid is None else volume.valid[box]
            affine = crop_affine(volume.affine, box)
        return cls(
            affine, image.shape, image, valid, lo, hi, float(invalid_value), meta=dict(volume.meta)
        )

    @classmethod
    def of(cls, volume: Volume) -> SourceImage:
        """The stored ``volume`` as a source (its values unchanged)."""
        return cls(volume.affine, volume.shape, volume.array, volume.valid, meta=dict(volume.meta))

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def with_mask(self, mask: np.ndarray, outside: float) -> SourceImage:
        """``outside`` where ``mask`` is not set (the lung-only image)."""
        if self.mask is not None:
            raise ValueError("the source has a mask already")
        return dataclasses.replace(self, mask=self._grid_mask(mask), outside=float(outside))

    def mask_values(self, mask: np.ndarray, inside: float, outside: float) -> SourceImage:
        """``inside`` within ``mask``, ``outside`` elsewhere, on this grid and validity (the
        lung mask as an image)."""
        return dataclasses.replace(
            self,
            image=None,
            fill=None,
            mask=self._grid_mask(mask),
            inside=float(inside),
            outside=float(outside),
        )

    def _grid_mask(self, mask) -> np.ndarray:
        m = np.asarray(mask)
        if m.shape != tuple(self.shape):
            raise AssertionError(f"mask {m.shape} and image {tuple(self.shape)} grids differ")
        return m if m.dtype == np.bool_ else m.astype(bool)

    def _plain(self) -> bool:  # the stored image's own values
        return (
            self.image is not None
            and self.mask is None
            and self.fill is None
            and self.lo == -np.inf
            and self.hi == np.inf
        )

    def volume(self) -> Volume:
        """The image stored (the values of the step-by-step path: ``preprocess``, then
        ``lung_images.lung_only`` / ``mask_image``)."""
        if self.image is None:
            arr = np.full(self.shape, np.float32(self.outside), np.float32)
            if self.mask is None:
                arr[...] = np.float32(self.inside)
            else:
                np.copyto(arr, np.float32(self.inside), where=self.mask)
        else:
            arr = self.image
            if self.fill is not None or self.lo != -np.inf or self.hi != np.inf:
                valid = self.valid if self.fill is not None else None
                fill = 0.0 if self.fill is None else self.fill
                arr = ops.clip_fill(arr, valid, self.lo, self.hi, fill)
            if self.mask is not None:
                arr = ops.clip_fill(arr, self.mask, -np.inf, np.inf, self.outside)
        return Volume(arr, self.affine, self.valid, dict(self.meta))

    def downsample(self, target_mm: float) -> Volume:
        """``pyramid.downsample(self.volume(), target_mm)``, bit for bit, without the stored
        image when an axis is subsampled."""
        f, sigma = lattice(self.spacing, target_mm)
        if np.all(f == 1):
            return self.volume()
        if self._plain():
            sub = ops.smooth_subsample(
                np.ascontiguousarray(self.image), tuple(sigma), tuple(self.spacing), tuple(f)
            )
        else:
            sub = ops.smooth_subsample_source(
                self.shape,
                tuple(sigma),
                tuple(self.spacing),
                tuple(f),
                image=self.image,
                valid=self.valid if self.fill is not None else None,
                lo=self.lo,
                hi=self.hi,
                fill=0.0 if self.fill is None else self.fill,
                mask=self.mask,
                inside=self.inside,
                outside=self.outside,
            )
        sl = tuple(slice(None, None, int(x)) for x in f)
        valid = None if self.valid is None else np.ascontiguousarray(self.valid[sl])
        return Volume(sub, self.affine @ np.diag([*f, 1.0]), valid, dict(self.meta))
