"""Breathing-like known deformations of real anatomy, with exact landmark pairs.

A registration can only be judged against a ground truth.  No public chest CT pair ships with one
that is exact, so this module makes one: it deforms a real scan (the *reference*) by a smooth,
invertible, analytic map and resamples it into a *floating* scan, and returns landmark pairs whose
correspondence is exact to rounding.

The map is defined in closed form on the FLOATING side, so no field has to be inverted to build the
floating image::

    phi(q) = q + v(q) = B(T(q))          q: floating world point (x, y, z) LPS mm
    F(q)   = R(phi(q))                   trilinear interpolation of the reference R

* ``T`` is rigid: a rotation about the reference volume's centre (about the x, then y, then z axis)
  followed by a translation;
* ``B(x) = x + b(x)`` is the breathing part, built relative to the reference's lung extent (apex and
  base from the lung mask's bounding box):

  - superior-inferior motion ``b_z = diaphragm_mm * w(z)``; ``w`` is 1 at and below the lung base
    and falls as a half cosine to 0 at the apex (C1-smooth);
  - anterior-posterior expansion ``b_y = ap_expansion * w(z) * (y - y_posterior)``: the spine
    (posterior lung edge) stays, the anterior chest wall moves anteriorly (-y in LPS);
  - lateral expansion ``b_x = lateral_expansion * w(z) * (x - x_centre)``;
  - a small random smooth perturbation: a few seeded low-frequency sinusoids per component.

Landmarks ``q_i`` are voxel centres of the floating grid inside the floating lungs (preferably on
vessels, HU > -750), spread out by farthest-point sampling; ``p_i = phi(q_i)`` exactly.  Because
``q_i`` is a voxel centre, ``F[q_i]`` equals ``R`` interpolated at ``p_i`` to float32 rounding.

:meth:`SyntheticPair.true_transform_points` maps reference points to the floating scan (the
direction a registration result's ``transform_points`` uses): it solves ``q + v(q) = p`` by
fixed-point iteration, which converges fast because the map is a rigid motion composed with a
contraction-sized smooth part.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi

from . import _checks
from .errors import CTRegError
from .masks import lung_mask as _lung_mask
from .synthetic_motion import _CHUNK_VOXELS, BreathingMap, BreathingMotion
from .volume import Volume

__all__ = ["BreathingMotion", "BreathingMap", "SyntheticPair", "make_breathing_pair"]

log = logging.getLogger("ctreg")

AIR_HU = -1000.0
VESSEL_HU = -750.0


@dataclass(eq=False)
class SyntheticPair:
    """A reference scan, a floating scan made from it by a known map, and exact landmark pairs.

    Attributes
    ----------
    reference, floating : the two volumes; ``floating.valid`` is False where the map left the
        reference's data (filled with -1000 HU there).
    reference_points : (N, 3) world (x, y, z) LPS mm, inside the reference's lungs.
    floating_points : (N, 3) the exactly corresponding points in the floating scan (voxel centres
        of the floating grid).
    lung_mask : (z, y, x) bool lung mask of the reference.
    motion : the options that made the map.
    true_map : the exact map (floating -> reference); ``true_map.to_dict()`` saves it.
    """

    reference: Volume
    floating: Volume
    reference_points: np.ndarray
    floating_points: np.ndarray
    lung_mask: np.ndarray
    motion: BreathingMotion
    true_map: BreathingMap = field(repr=False)

    def true_transform_points(self, points) -> np.ndarray:
        """Exact reference -> floating map: (N, 3) reference world points -> floating world
        points."""
        p = _as_points("points", points)
        return self.true_map.inverse(p)

    def floating_to_reference_points(self, points) -> np.ndarray:
        """The closed-form map phi: (N, 3) floating world points -> reference world points."""
        return self.true_map.forward(_as_points("points", points))

    def true_jacobian_determinant(self, reference_points) -> np.ndarray:
        """(N,) Jacobian determinant of the reference -> floating map at reference points."""
        q = self.true_transform_points(reference_points)
        return 1.0 / self.true_map.jacobian_det(q)

    def true_displacement(self, grid: Volume | None = None, *, tol_mm: float = 1e-5) -> np.ndarray:
        """(z, y, x, 3) float32 displacement u (x, y, z mm) on ``grid`` (default: the reference
        grid): a grid point p maps to p + u(p) in the floating scan (``tol_mm``: solver
        tolerance)."""
        return self.true_map.displacement_on(
            self.reference if grid is None else grid, tol_mm=tol_mm
        )


def _as_points(name: str, points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3) world (x, y, z) mm, got {p.shape}")
    return p


def _world_bbox(volume: Volume, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y, z) min/max of the voxel centres of the mask's index bounding box."""
    nz = np.nonzero
    lo = [int(nz(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0][0]) for ax in range(3)]
    hi = [int(nz(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0][-1]) for ax in range(3)]
    corners = np.array(
        [[k, j, i] for k in (lo[0], hi[0]) for j in (lo[1], hi[1]) for i in (lo[2], hi[2])],
        dtype=np.float64,
    )
    w = volume.index_to_world(corners)
    return w.min(axis=0), w.max(axis=0)


def _sample_floating(
    reference: Volume,
    ref_array: np.ndarray,
    ref_valid: np.ndarray | None,
    grid: Volume,
    bmap: BreathingMap,
) -> tuple[np.ndarray, np.ndarray]:
    """F(q) = R(phi(q)) on ``grid``, trilinear; -1000 HU and valid False outside R's data.

    Works on component planes slab by slab (no (N, 3) matrix products): grid index -> rigid is one
    affine, breathing is evaluated per component, reference world -> index is one affine.
    """
    nz, ny, nx = grid.shape
    out = np.empty(grid.shape, np.float32)
    valid = np.empty(grid.shape, bool)
    upper = np.asarray(reference.shape, dtype=np.float64) - 1.0
    # index (k, j, i) -> rigidly moved world point: T(A idx + a) = R A idx + (R (a - c) + c + t)
    lin = bmap.rot @ grid.affine[:3, :3]
    off = bmap.rigid(grid.affine[:3, 3][None])[0]
    inv = np.linalg.inv(reference.affine)
    step = max(1, _CHUNK_VOXELS // (ny * nx))
    jj = np.arange(ny, dtype=np.float64)[None, :, None]
    ii = np.arange(nx, dtype=np.float64)[None, None, :]
    ref_valid_f = None if ref_valid is None else ref_valid.astype(np.float32)
    for k0 in range(0, nz, step):
        k1 = min(nz, k0 + step)
        kk = np.arange(k0, k1, dtype=np.float64)[:, None, None]
        x, y, z = (lin[c, 0] * kk + lin[c, 1] * jj + lin[c, 2] * ii + off[c] for c in range(3))
        bx, by, bz = bmap.breathing_components(x, y, z)
        x += bx
        y += by
        z += bz
        coords = np.stack(
            [inv[r, 0] * x + inv[r, 1] * y + inv[r, 2] * z + inv[r, 3] for r in range(3)]
        )
        inside = np.all((coords >= -1e-6) & (coords <= upper[:, None, None, None] + 1e-6), axis=0)
        vals = ndi.map_coordinates(ref_array, coords, order=1, mode="nearest")
        if ref_valid_f is not None:
            inside &= ndi.map_coordinates(ref_valid_f, coords, order=1, mode="nearest") > 0.999
        out[k0:k1] = np.where(inside, vals, np.float32(AIR_HU))
        valid[k0:k1] = inside
    return out, valid


def _farthest_points(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` spread-out points (greedy farthest-point sampling, random start)."""
    m = points.shape[0]
    n = min(n, m)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = int(rng.integers(m))
    dist = np.sum((points - points[chosen[0]]) ** 2, axis=1)
    for t in range(1, n):
        chosen[t] = int(np.argmax(dist))
        dist = np.minimum(dist, np.sum((points - points[chosen[t]]) ** 2, axis=1))
    return chosen


def make_breathing_pair(
    volume: Volume,
    motion: BreathingMotion = BreathingMotion(),
    *,
    n_landmarks: int = 300,
    floating_grid: Volume | None = None,
) -> SyntheticPair:
    """Deform a real chest scan by a known breathing-like map; return the pair and exact landmarks.

    Parameters
    ----------
    volume : the reference scan (HU); it must contain lungs.
    motion : the deformation's options.
    n_landmarks : at most this many landmark pairs (fewer only when the lungs have fewer usable
        voxels); at least 1.
    floating_grid : the grid (shape and affine) of the floating scan; default the reference grid.

    Returns
    -------
    SyntheticPair, with ``floating.meta['synthetic'] = motion``.

    Raises
    ------
    CTRegError : no lungs in ``volume``, lungs too short for ``diaphragm_mm`` to stay fold-free,
        or no landmark could be placed.
    """
    if not isinstance(volume, Volume):
        raise TypeError(
            f"make_breathing_pair: volume must be a ctreg.Volume, got {type(volume).__name__}"
        )
    if not isinstance(motion, BreathingMotion):
        raise TypeError(
            f"make_breathing_pair: motion must be a BreathingMotion, got {type(motion).__name__}"
        )
    n_landmarks = _checks.positive_int("make_breathing_pair: n_landmarks", n_landmarks)
    if floating_grid is not None and not isinstance(floating_grid, Volume):
        raise TypeError(
            "make_breathing_pair: floating_grid must be a ctreg.Volume or None, "
            f"got {type(floating_grid).__name__}"
        )
    grid = volume if floating_grid is None else floating_grid

    ref_lungs = _lung_mask(volume)
    if not ref_lungs.any():
        raise CTRegError(
            "make_breathing_pair: no lungs found in the reference volume "
            "(no air-like voxels below -400 HU inside the body)"
        )
    lo, hi = _world_bbox(volume, ref_lungs)
    length = hi[2] - lo[2]
    steep = abs(motion.diaphragm_mm) * math.pi / (2.0 * max(length, 1e-6))
    if steep >= 0.5:
        raise CTRegError(
            f"make_breathing_pair: the lungs span only {length:.1f} mm in z; diaphragm_mm="
            f"{motion.diaphragm_mm} would compress them by up to {100 * steep:.0f} % (at most 50 % "
            "accepted): use a smaller diaphragm_mm"
        )
    vlo, vhi = volume.bounds()
    bmap = BreathingMap(
        motion,
        centre_xyz=0.5 * (vlo + vhi),
        z_base=lo[2],
        z_apex=hi[2],
        x_centre=0.5 * (lo[0] + hi[0]),
        y_posterior=hi[1],
    )

    ref_array = volume.array
    if volume.valid is not None and not volume.valid.all():
        ref_array = np.where(volume.valid, ref_array, np.float32(AIR_HU))
    flo_array, flo_valid = _sample_floating(volume, ref_array, volume.valid, grid, bmap)
    floating = Volume(
        flo_array, grid.affine.copy(), flo_valid, {**volume.meta, "synthetic": motion}
    )

    # Landmarks: floating voxel centres inside the floating lungs, preferring vessels.
    rng = np.random.default_rng(motion.seed + 7919)
    flo_lungs = _lung_mask(floating)
    inner = ndi.binary_erosion(flo_lungs, iterations=1)
    if inner.sum() < 4 * n_landmarks:
        inner = flo_lungs
    vessels = inner & (flo_array > VESSEL_HU)
    if vessels.sum() >= 4 * n_landmarks:
        pool = vessels
    else:  # coarse scans blur the vessels: take the brightest quarter of the lung voxels
        pool = inner & (flo_array >= np.percentile(flo_array[inner], 75)) if inner.any() else inner
    cand = np.argwhere(pool)
    if cand.shape[0] == 0:
        raise CTRegError("make_breathing_pair: no voxel of the floating lungs can carry a landmark")
    if cand.shape[0] > 20000:
        cand = cand[rng.choice(cand.shape[0], 20000, replace=False)]
    cand_world = floating.index_to_world(cand)
    order = _farthest_points(cand_world, min(cand.shape[0], 2 * n_landmarks + 50), rng)
    q = cand_world[order]
    p = bmap.forward(q)
    ridx = volume.world_to_index(p)
    upper = np.asarray(volume.shape) - 1.0
    keep = np.all((ridx >= 0) & (ridx <= upper), axis=1)
    near = np.clip(np.rint(ridx), 0, upper).astype(np.int64)
    keep &= ref_lungs[near[:, 0], near[:, 1], near[:, 2]]
    if volume.valid is not None:
        keep &= volume.valid[near[:, 0], near[:, 1], near[:, 2]]
    q, p = q[keep][:n_landmarks], p[keep][:n_landmarks]
    if q.shape[0] == 0:
        raise CTRegError("make_breathing_pair: no landmark pair stayed inside the reference lungs")
    if q.shape[0] < n_landmarks:
        log.warning(
            "make_breathing_pair: only %d of %d landmark pairs could be placed",
            q.shape[0],
            n_landmarks,
        )
    return SyntheticPair(
        reference=volume,
        floating=floating,
        reference_points=p,
        floating_points=q,
        lung_mask=ref_lungs,
        motion=motion,
        true_map=bmap,
    )
