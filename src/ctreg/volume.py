"""`Volume`: a float32 (z, y, x) array that always carries its geometry.

Geometry conventions (the most important lines in ctreg):

* ``array`` has axes (z, y, x): ``array[k, j, i]``; slices are along z.
* ``affine`` is a 4x4 matrix that maps a homogeneous **array index in array-axis order**
  ``(k, j, i, 1)`` to a **world point (x, y, z, 1) in LPS millimetres**, as DICOM
  (x to the patient's left, y posterior, z superior).  So ``affine[:3, 0]`` is the world step of
  one slice, ``affine[:3, 2]`` the world step of one column.
* ``spacing`` is (z, y, x) mm, the column norms of ``affine[:3, :3]``.
* ``origin`` is the world position (x, y, z) of voxel (0, 0, 0); ``direction`` is the 3x3
  matrix of unit columns (world direction of the z, y and x array axes).
* World points and world vectors (displacements) are always (x, y, z) LPS mm.
* RAS appears only inside :mod:`ctreg.io.nifti`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from .errors import GeometryError

__all__ = ["Volume", "affine_from_geometry"]


def affine_from_geometry(origin_xyz, spacing_zyx, direction_zyx_cols=None) -> np.ndarray:
    """Build an index (k, j, i) -> world (x, y, z) LPS affine.

    Parameters
    ----------
    origin_xyz : (3,) world position (x, y, z) of voxel (0, 0, 0), mm.
    spacing_zyx : (3,) voxel size along the z, y, x array axes, mm.
    direction_zyx_cols : (3, 3), optional; column c is the unit world direction (x, y, z) of
        array axis c (0 = z, 1 = y, 2 = x).  Default: identity-like axial LPS
        (x axis -> +x, y axis -> +y, z axis -> +z).
    """
    spacing = np.asarray(spacing_zyx, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise GeometryError(
            f"spacing must be three positive numbers (z, y, x) in mm, got {spacing.tolist()}"
        )
    if direction_zyx_cols is None:
        direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    else:
        direction = np.asarray(direction_zyx_cols, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[None, :]
    affine[:3, 3] = np.asarray(origin_xyz, dtype=np.float64).reshape(3)
    return affine


@dataclass(eq=False)
class Volume:
    """A 3-D image with its geometry.

    Parameters
    ----------
    array : (z, y, x) array, converted to C-contiguous float32.
    affine : (4, 4) index (k, j, i) -> world (x, y, z) LPS mm.
    valid : (z, y, x) bool array or None; False where the scanner wrote padding (no data).
    meta : free-form provenance (e.g. DICOM header fields of the source series).
    """

    array: np.ndarray
    affine: np.ndarray
    valid: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise GeometryError(f"Volume.array must be 3-D (z, y, x), got shape {arr.shape}")
        if min(arr.shape) < 1:
            raise GeometryError(f"Volume.array must not be empty, got shape {arr.shape}")
        self.array = np.ascontiguousarray(arr, dtype=np.float32)
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise GeometryError(f"Volume.affine must be 4x4, got shape {aff.shape}")
        if not np.all(np.isfinite(aff)):
            raise GeometryError("Volume.affine contains NaN or infinity")
        if not np.allclose(aff[3], [0, 0, 0, 1]):
            raise GeometryError(
                f"Volume.affine's last row must be (0, 0, 0, 1), got {aff[3].tolist()}"
            )
        if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise GeometryError("Volume.affine is singular (zero spacing or degenerate direction)")
        self.affine = aff
        if self.valid is not None:
            valid = np.asarray(self.valid)
            if valid.shape != self.array.shape:
                raise GeometryError(
                    f"Volume.valid must have the array's shape {self.array.shape}, "
                    f"got {valid.shape}"
                )
            self.valid = np.ascontiguousarray(valid, dtype=bool)

    # -- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) voxel counts."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(z, y, x) voxel size in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """World position (x, y, z) LPS mm of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3; column c is the unit world direction (x, y, z) of array axis c (z, y, x)."""
        return self.affine[:3, :3] / self.spacing[None, :]

    def index_to_world(self, index_zyx) -> np.ndarray:
        """(N, 3) array indices (k, j, i) -> (N, 3) world points (x, y, z) LPS mm."""
        idx = np.asarray(index_zyx, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points_xyz) -> np.ndarray:
        """(N, 3) world points (x, y, z) LPS mm -> (N, 3) continuous indices (k, j, i)."""
        pts = np.asarray(points_xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def world_coordinates(self) -> np.ndarray:
        """(z, y, x, 3) world position (x, y, z) of every voxel (float64; large for big volumes)."""
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), axis=-1)
        return self.index_to_world(idx.reshape(-1, 3)).reshape(self.shape + (3,))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box (min xyz, max xyz) of voxel centres."""
        corners = np.array(
            [
                [k, j, i]
                for k in (0, self.shape[0] - 1)
                for j in (0, self.shape[1] - 1)
                for i in (0, self.shape[2] - 1)
            ],
            float,
        )
        w = self.index_to_world(corners)
        return w.min(axis=0), w.max(axis=0)

    def with_array(
        self, array: np.ndarray, *, valid: np.ndarray | None | str = "keep", **meta
    ) -> "Volume":
        """A new Volume on the same grid with another array (and, by default, the same mask)."""
        keep = isinstance(valid, str) and valid == "keep"
        new_valid = self.valid if keep else cast("np.ndarray | None", valid)
        return Volume(array, self.affine.copy(), new_valid, {**self.meta, **meta})

    def same_grid(self, other: "Volume", *, atol_mm: float = 1e-3) -> bool:
        """True when both volumes have the same shape and, to ``atol_mm``, the same voxel
        positions."""
        if self.shape != other.shape:
            return False
        return bool(np.allclose(self.affine, other.affine, atol=atol_mm, rtol=0))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        org = ", ".join(f"{o:.4g}" for o in self.origin)
        return (
            f"Volume(shape(z,y,x)={self.shape}, spacing(z,y,x)=({sp}) mm, "
            f"origin(x,y,z)=({org}) mm LPS)"
        )
