"""What every benchmark method shares: the pair on disk, SimpleITK conversion and the metrics.

A method returns a :class:`MethodOutput`: the map from reference points to floating points (what
target registration error needs) and the displacement on the reference grid (what the warped
image, NCC and Jacobian statistics need).  Every method is evaluated by the same code here, so the
numbers compare like with like: the warped scan is the floating scan sampled trilinearly at
p + u(p); Jacobians come from central differences of u; both on the reference body mask.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.ndimage as ndi

from ctreg.masks import body_mask
from ctreg.volume import Volume

CHUNK_VOXELS = 1 << 21
AIR_HU = -1000.0


# -- the pair --------------------------------------------------------------------------------------


@dataclass
class Pair:
    """A reference and a floating scan and, when known, landmark pairs (world x, y, z LPS mm)."""

    name: str
    reference: Volume
    floating: Volume
    reference_points: np.ndarray | None = None
    floating_points: np.ndarray | None = None
    info: dict | None = None  # pair.json of a synthetic pair (with "true_map")


def read_landmarks(path) -> tuple[np.ndarray, np.ndarray]:
    """One CSV with both point sets: reference x, y, z, floating x, y, z (LPS mm), with or
    without a header row and an id column (see methods/landmarks.py for every layout)."""
    from .landmarks import read_landmark_pairs

    return read_landmark_pairs(landmarks=path)


def write_landmarks(path, reference_points: np.ndarray, floating_points: np.ndarray) -> None:
    from ctreg.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["reference_x", "reference_y", "reference_z", "floating_x", "floating_y", "floating_z"]
        )
        for p, q in zip(reference_points, floating_points):
            w.writerow([f"{v:.6f}" for v in (*p, *q)])


def load_pair(spec: dict) -> Pair:
    """``spec``: {"name", "reference", "floating", "landmarks" (optional: one paired file) or
    "reference_landmarks" and "floating_landmarks" (optional: one file per scan),
    "landmark_space" ("lps" default, "ras", "voxel", "voxel1"), "info" (optional)}."""
    from ctreg.io import read_volume

    from .landmarks import read_landmark_pairs

    ref = read_volume(spec["reference"])
    flo = read_volume(spec["floating"])
    p = q = None
    if spec.get("landmarks") or spec.get("reference_landmarks") or spec.get("floating_landmarks"):
        p, q = read_landmark_pairs(
            landmarks=spec.get("landmarks"),
            reference_landmarks=spec.get("reference_landmarks"),
            floating_landmarks=spec.get("floating_landmarks"),
            space=spec.get("landmark_space") or "lps",
            reference=ref,
            floating=flo,
        )
    info = None
    if spec.get("info"):
        info = json.loads(Path(spec["info"]).read_text())
    return Pair(spec["name"], ref, flo, p, q, info)


# -- SimpleITK <-> Volume --------------------------------------------------------------------------


def to_sitk(volume: Volume, array: np.ndarray | None = None):
    """A SimpleITK image with the volume's geometry (ITK index axes are x, y, z: reverse ours)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(volume.array if array is None else array)
    img.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    img.SetOrigin(tuple(float(o) for o in volume.origin))
    img.SetDirection(tuple(float(d) for d in volume.direction[:, ::-1].ravel()))
    return img


# -- what a method returns ------------------------------------------------------------------------


@dataclass
class MethodOutput:
    """transform_points: (N, 3) reference world points -> floating world points.
    displacement: (z, y, x, 3) float32 on the reference grid, world (x, y, z) mm (p -> p + u(p)),
    or a function that computes it (called after the timed part)."""

    transform_points: Callable[[np.ndarray], np.ndarray]
    displacement: np.ndarray | Callable[[], np.ndarray]
    notes: str = ""

    def dense(self) -> np.ndarray:
        if callable(self.displacement):
            self.displacement = self.displacement()
        return self.displacement


def field_transform_points(reference: Volume, displacement: np.ndarray):
    """transform_points from a reference-grid displacement (trilinear)."""

    def apply(points: np.ndarray) -> np.ndarray:
        idx = reference.world_to_index(points).T
        u = np.stack(
            [
                ndi.map_coordinates(displacement[..., c], idx, order=1, mode="nearest")
                for c in range(3)
            ],
            axis=1,
        )
        return points + u

    return apply


def field_from_warped_coordinates(reference: Volume, floating: Volume, warp_image) -> np.ndarray:
    """The displacement of a black-box method that can only warp images.

    ``warp_image(array)`` warps an array on the floating grid onto the reference grid (linear
    interpolation, fill value 0).  Warping the world coordinates of the floating voxels gives, at
    each reference voxel p, its corresponding floating point p + u(p) exactly (linear functions
    interpolate exactly); a warped image of ones tells where that point left the floating grid,
    and there the nearest valid displacement is used.
    """
    world = floating.world_coordinates()  # (z, y, x, 3) float64
    ones = warp_image(np.ones(floating.shape, np.float32))
    u = np.empty(reference.shape + (3,), np.float32)
    ref_world = reference.world_coordinates()
    for c in range(3):
        u[..., c] = (
            warp_image(np.ascontiguousarray(world[..., c], dtype=np.float32))
            / np.maximum(ones, 1e-6)
            - ref_world[..., c]
        )
    del world, ref_world
    bad = ones < 0.999
    if bad.any() and not bad.all():
        idx = ndi.distance_transform_edt(bad, return_distances=False, return_indices=True)
        u = u[idx[0], idx[1], idx[2]]
    return u


# -- metrics ---------------------------------------------------------------------------------------


def _slabs(nz: int, ny: int, nx: int):
    step = max(1, CHUNK_VOXELS // (ny * nx))
    for k0 in range(0, nz, step):
        yield k0, min(nz, k0 + step)


def warp(
    reference: Volume, floating: Volume, displacement: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Floating sampled trilinearly at p + u(p) on the reference grid; and where that is inside the
    floating grid."""
    nz, ny, nx = reference.shape
    out = np.empty(reference.shape, np.float32)
    inside = np.empty(reference.shape, bool)
    lin, off = reference.affine[:3, :3], reference.affine[:3, 3]
    inv = np.linalg.inv(floating.affine)
    upper = np.asarray(floating.shape, float) - 1
    jj = np.arange(ny, dtype=np.float64)[None, :, None]
    ii = np.arange(nx, dtype=np.float64)[None, None, :]
    for k0, k1 in _slabs(nz, ny, nx):
        kk = np.arange(k0, k1, dtype=np.float64)[:, None, None]
        w = [
            lin[c, 0] * kk + lin[c, 1] * jj + lin[c, 2] * ii + off[c] + displacement[k0:k1, ..., c]
            for c in range(3)
        ]
        coords = np.stack(
            [inv[r, 0] * w[0] + inv[r, 1] * w[1] + inv[r, 2] * w[2] + inv[r, 3] for r in range(3)]
        )
        ins = np.all((coords >= 0) & (coords <= upper[:, None, None, None]), axis=0)
        out[k0:k1] = ndi.map_coordinates(
            floating.array, coords, order=1, mode="constant", cval=AIR_HU
        )
        inside[k0:k1] = ins
    return out, inside


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    if x.size < 2:
        return float("nan")
    x -= x.mean()
    y -= y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def jacobian_determinant(reference: Volume, displacement: np.ndarray) -> np.ndarray:
    """(z, y, x) float32 det(I + du/dx), central differences (one-sided at the grid's faces)."""
    nz, ny, nx = reference.shape
    ainv = np.linalg.inv(reference.affine[:3, :3])  # d index / d world
    det = np.empty(reference.shape, np.float32)
    for k0, k1 in _slabs(nz, ny, nx):
        h0, h1 = max(0, k0 - 1), min(nz, k1 + 1)
        u = displacement[h0:h1]
        # G[c][a] = d u_c / d index_a, then J = I + G @ ainv
        g = [[None] * 3 for _ in range(3)]
        for c in range(3):
            comp = u[..., c].astype(np.float32)
            grads = np.gradient(comp) if min(comp.shape) > 1 else [np.zeros_like(comp)] * 3
            for a in range(3):
                g[c][a] = grads[a][k0 - h0 : k0 - h0 + (k1 - k0)]
        j = [
            [
                (1.0 if r == c else 0.0)
                + g[r][0] * ainv[0, c]
                + g[r][1] * ainv[1, c]
                + g[r][2] * ainv[2, c]
                for c in range(3)
            ]
            for r in range(3)
        ]
        det[k0:k1] = (
            j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
        )
    return det


def tre_stats(errors: np.ndarray | None) -> dict:
    if errors is None or errors.size == 0:
        return {"tre_mean_mm": None, "tre_median_mm": None, "tre_p95_mm": None, "tre_max_mm": None}
    return {
        "tre_mean_mm": float(errors.mean()),
        "tre_median_mm": float(np.median(errors)),
        "tre_p95_mm": float(np.percentile(errors, 95)),
        "tre_max_mm": float(errors.max()),
    }


def evaluate(pair: Pair, out: MethodOutput) -> dict:
    """TRE on the landmarks, NCC inside the reference body, Jacobian statistics inside the body."""
    ref = pair.reference
    u = out.dense()
    if u.shape != ref.shape + (3,):
        raise ValueError(f"displacement has shape {u.shape}; expected {ref.shape + (3,)}")
    row: dict = {}
    if pair.reference_points is not None:
        mapped = out.transform_points(pair.reference_points)
        row.update(tre_stats(np.linalg.norm(mapped - pair.floating_points, axis=1)))
        row["n_landmarks"] = int(pair.reference_points.shape[0])
    else:
        row.update(tre_stats(None))
        row["n_landmarks"] = 0
    body = body_mask(ref)
    warped, inside = warp(ref, pair.floating, u)
    row["ncc_body"] = ncc(ref.array, warped, body & inside)
    del warped
    det = jacobian_determinant(ref, u)[body]
    row["jacobian_nonpositive_pct"] = float(100.0 * np.count_nonzero(det <= 0) / max(det.size, 1))
    pos = det[det > 0]
    row["log_jacobian_sd"] = float(np.log(pos).std()) if pos.size else None
    row["jacobian_min"] = float(det.min()) if det.size else None
    return row
