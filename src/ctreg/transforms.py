"""Transforms: the affine map between the two scans and the reference-frame displacement field.

Vocabulary
----------
* **world**: (x, y, z) LPS mm, as DICOM.
* **reference frame**: millimetres along the reference grid's own array axes, (z, y, x) order,
  with its origin at the centre of reference voxel (0, 0, 0).  A point ``r`` of this frame is the
  world point ``p = D @ r + o`` where ``D`` is the reference direction matrix (unit columns for
  the z, y and x array axes) and ``o`` the reference origin.  The engine's dense fields live in
  this frame (components (z, y, x) mm), which keeps the Numba kernels free of orientation logic;
  the public displacement is converted to world LPS once, at the end.
* The registration maps a reference world point ``p`` to the floating scan as
  ``T(p + D u(r))``: first the reference-frame displacement ``u``, then the affine ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GeometryError
from .volume import Volume

__all__ = [
    "AffineTransform",
    "ReferenceFrame",
    "rotation_matrix",
    "affine_from_params",
    "affine_matrix_derivatives",
    "N_RIGID",
    "N_AFFINE",
]

N_RIGID = 6
N_AFFINE = 12
#: Length (mm) that converts rotation, log-scale and shear parameters into millimetres of
#: motion, so that every parameter moves points by about the same amount per unit.
PARAM_RADIUS_MM = 100.0


def _axis_rotations(rx: float, ry: float, rz: float):
    """(Rx, Ry, Rz) and their derivatives (dRx/drx, dRy/dry, dRz/drz), angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]),
        np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]),
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]),
    )
    drot = (
        np.array([[0, 0, 0], [0, -sx, -cx], [0, cx, -sx]]),
        np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]]),
        np.array([[-sz, -cz, 0], [cz, -sz, 0], [0, 0, 0]]),
    )
    return rot, drot


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation (radians) about the world x, then y, then z axes: ``Rz @ Ry @ Rx``."""
    (rxm, rym, rzm), _ = _axis_rotations(rx, ry, rz)
    return rzm @ rym @ rxm


def affine_from_params(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix A, translation t) from the 6 (rigid) or 12 (affine) scaled parameters.

    params = [tx, ty, tz (mm), rx, ry, rz (rad * R), log sx, log sy, log sz (* R),
    shear xy, xz, yz (* R)], R = PARAM_RADIUS_MM.
    """
    p = np.zeros(N_AFFINE)
    p[: len(params)] = params
    r = p[3:6] / PARAM_RADIUS_MM
    s = np.exp(p[6:9] / PARAM_RADIUS_MM)
    h = p[9:12] / PARAM_RADIUS_MM
    shear = np.array([[1.0, h[0], h[1]], [0.0, 1.0, h[2]], [0.0, 0.0, 1.0]])
    a = rotation_matrix(*r) @ shear @ np.diag(s)
    return a, p[0:3].copy()


def affine_matrix_derivatives(params: np.ndarray, n: int = N_AFFINE) -> np.ndarray:
    """(n, 3, 3): the exact derivative of ``affine_from_params(params)[0]`` with respect to
    each of the first ``n`` parameters (zero for the translations)."""
    p = np.zeros(N_AFFINE)
    p[: len(params)] = params
    R = PARAM_RADIUS_MM
    rx, ry, rz = p[3:6] / R
    s = np.exp(p[6:9] / R)
    h = p[9:12] / R
    (mx, my, mz), (dmx, dmy, dmz) = _axis_rotations(rx, ry, rz)
    shear = np.array([[1.0, h[0], h[1]], [0.0, 1.0, h[2]], [0.0, 0.0, 1.0]])
    rot = mz @ my @ mx
    hs = shear * s  # shear @ diag(s)
    out = np.zeros((n, 3, 3))
    drot = (mz @ my @ dmx, mz @ dmy @ mx, dmz @ my @ mx)
    for m in range(3, min(n, 6)):
        out[m] = drot[m - 3] @ hs / R
    rh = rot @ shear
    for m in range(6, min(n, 9)):  # d/dlog s_c scales column c by s_c
        out[m][:, m - 6] = rh[:, m - 6] * s[m - 6] / R
    for m, (row, col) in zip(range(9, n), ((0, 1), (0, 2), (1, 2))):
        out[m][:, col] = rot[:, row] * s[col] / R  # d shear / d h has a single 1 at (row, col)
    return out


@dataclass(frozen=True)
class AffineTransform:
    """World map ``T(p) = A @ (p - centre) + centre + translation`` (reference -> floating)."""

    matrix: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    centre: np.ndarray  # (3,)

    @staticmethod
    def identity(centre=(0.0, 0.0, 0.0)) -> "AffineTransform":
        return AffineTransform(np.eye(3), np.zeros(3), np.asarray(centre, float))

    @staticmethod
    def from_params(params, centre) -> "AffineTransform":
        a, t = affine_from_params(np.asarray(params, float))
        return AffineTransform(a, t, np.asarray(centre, float))

    def homogeneous(self) -> np.ndarray:
        """4x4 matrix acting on homogeneous world points."""
        m = np.eye(4)
        m[:3, :3] = self.matrix
        m[:3, 3] = self.centre + self.translation - self.matrix @ self.centre
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) world points."""
        pts = np.asarray(points, float)
        return (pts - self.centre) @ self.matrix.T + self.centre + self.translation

    def inverse(self) -> "AffineTransform":
        inv = np.linalg.inv(self.matrix)
        # T^-1(q) = A^-1 (q - c - t) + c
        return AffineTransform(inv, -inv @ self.translation, self.centre.copy())

    def to_dict(self) -> dict:
        return {
            "matrix": self.matrix.tolist(),
            "translation_mm": self.translation.tolist(),
            "centre_mm": self.centre.tolist(),
            "homogeneous": self.homogeneous().tolist(),
        }


class ReferenceFrame:
    """Conversions between the reference grid's frame (z, y, x mm) and the world (x, y, z LPS)."""

    def __init__(self, reference: Volume):
        d = reference.direction
        if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
            raise GeometryError(
                "the reference scan's direction cosines are not orthonormal "
                f"(direction matrix {np.round(d, 5).tolist()}); "
                "ctreg accepts orthonormal grids only"
            )
        self.direction = d  # world (x, y, z) per frame axis (z, y, x)
        self.origin = reference.origin
        self.spacing = reference.spacing
        self.shape = reference.shape

    def frame_to_world_matrix(self) -> np.ndarray:
        """4x4: reference-frame point (z, y, x mm) -> world point (x, y, z)."""
        m = np.eye(4)
        m[:3, :3] = self.direction
        m[:3, 3] = self.origin
        return m

    def world_to_frame_matrix(self) -> np.ndarray:
        return np.linalg.inv(self.frame_to_world_matrix())

    def vectors_to_world(self, vectors_zyx: np.ndarray) -> np.ndarray:
        """(..., 3) frame vectors (z, y, x mm) -> world vectors (x, y, z)."""
        return vectors_zyx @ self.direction.T

    def points_to_frame(self, points_xyz: np.ndarray) -> np.ndarray:
        return (np.asarray(points_xyz, float) - self.origin) @ self.direction


def frame_to_image_matrix(
    frame: ReferenceFrame, transform: AffineTransform, image: Volume
) -> np.ndarray:
    """4x4: reference-frame point -> continuous index (k, j, i) of ``image`` after ``transform``."""
    return np.linalg.inv(image.affine) @ transform.homogeneous() @ frame.frame_to_world_matrix()


def world_displacement(
    frame: ReferenceFrame, transform: AffineTransform, u_frame: np.ndarray
) -> np.ndarray:
    """Public displacement U(p) = T(p + D u(p)) - p on the reference grid, (z, y, x, 3) float32,
    world (x, y, z) LPS components.  ``u_frame`` is (z, y, x, 3) reference-frame mm."""
    from . import ops

    nz, ny, nx = frame.shape
    if u_frame.shape != (nz, ny, nx, 3):
        raise GeometryError(
            f"displacement shape {u_frame.shape} does not match the reference grid {frame.shape}"
        )
    a = transform.matrix
    ad = a @ frame.direction  # frame vector -> world vector after T
    # p = D S idx + o ; (A - I)(p - c) + t = (A - I) D S idx + (A - I)(o - c) + t
    idx = np.zeros((3, 4))
    idx[:, :3] = (a - np.eye(3)) @ frame.direction @ np.diag(frame.spacing)
    idx[:, 3] = (a - np.eye(3)) @ (frame.origin - transform.centre) + transform.translation
    return ops.affine_field(np.ascontiguousarray(u_frame, dtype=np.float32), ad, idx)
