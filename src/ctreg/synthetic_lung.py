"""Realistic synthetic lung pairs: sliding at the pleura, breathing density change, another
field of view and slice thickness, noise; exact landmark truth inside the lungs.

The known map is defined on the FLOATING side (no field inversion to build the image)::

    phi(q) = q + v(q),   F(q) = R(phi(q))      q floating world (x, y, z) LPS mm

with ``v = (v_x, v_y, s(q) v_in_z + (1 - s(q)) v_out_z)``:

* ``w(z)``: 1 at and below the floating lung base, half cosine to 0 at the apex;
* ``v_x = -lateral * w (x - x_c)``, ``v_y = -ap * w (y - y_post)``: the inhale (floating) lungs
  are wider and deeper; the same inside and outside the lungs (no normal gap at the wall);
* ``v_in_z = D w(z)`` (diaphragm motion ``D = diaphragm_mm``), ``v_out_z = D w(z)^3``: below the
  lungs the abdomen moves with the diaphragm, higher up the chest wall moves much less than the
  lung beside it: **sliding** (a tangential jump of up to ~0.4 D at mid height);
* ``s(q) = S(q + v_in(q))``: ``S`` is the reference lung mask smoothed by a Gaussian of
  ``pleura_sigma_mm`` (0.7 mm: the transition is ~2 mm wide, or one voxel of a coarser
  reference grid, as trilinear interpolation of ``S`` spreads it), so the floating lungs are
  exactly the preimage of the reference lungs under the inside motion.
* **Density** (``density="mass"``): inside the lungs HU' = -1000 + (HU + 1000) det(D phi_in), the
  mass-preserving change for the inside map's analytic Jacobian (< 1 on inhale: darker lungs).
* **Field of view / slices**: the floating grid is the reference grid cropped by
  ``crop_mm`` on each side in x and y and by ``crop_z_mm`` at the top, with ``slice_mm`` slices;
  the reference is smoothed along z by a Gaussian of FWHM ``slice_mm`` before sampling.
* **Noise**: Gaussian, ``noise_hu``.

Landmarks: bright local maxima (vessels, > -600 HU) of the reference at least ~5 mm inside the
lungs, spread by farthest-point sampling; their floating positions solve ``phi(q) = p`` by
fixed-point iteration (residual checked <= 0.01 mm; points whose solution leaves the floating grid
are dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi

from .errors import CTRegError
from .volume import Volume

__all__ = ["LungMotion", "LungPair", "make_lung_pair", "SyntheticLungError"]

_CHUNK = 1 << 21


class SyntheticLungError(CTRegError, ValueError):
    """A realistic lung pair cannot be made; ``code``: ``SyntheticLung.NoLungs``,
    ``SyntheticLung.NoLandmarks`` or
    ``SyntheticLung.InverseFailed``."""

    code = "SyntheticLung.NoLungs"
    codes = ("SyntheticLung.NoLungs", "SyntheticLung.NoLandmarks", "SyntheticLung.InverseFailed")

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code)


class LungMotion:
    """The known map (see the module docstring); all world LPS mm."""

    def __init__(
        self, *, diaphragm_mm, ap, lateral, z_base, z_apex, x_c, y_post, smooth_lungs: Volume
    ):
        self.d = float(diaphragm_mm)
        self.ap, self.lat = float(ap), float(lateral)
        self.z_base, self.z_apex = float(z_base), float(z_apex)
        self.length = max(self.z_apex - self.z_base, 1e-6)
        self.x_c, self.y_post = float(x_c), float(y_post)
        self.smooth = smooth_lungs
        self._inv = np.linalg.inv(smooth_lungs.affine)

    def _w(self, z):
        t = np.clip((z - self.z_base) / self.length, 0.0, 1.0)
        w = 0.5 * (1.0 + np.cos(np.pi * t))
        inside = (z > self.z_base) & (z < self.z_apex)
        dw = np.where(inside, -0.5 * np.pi / self.length * np.sin(np.pi * t), 0.0)
        return w, dw

    def lung_weight(self, x, y, z):
        """s: the smoothed reference lung indicator at the inside motion's image of (x, y, z)."""
        w, _ = self._w(z)
        px = x - self.lat * w * (x - self.x_c)
        py = y - self.ap * w * (y - self.y_post)
        pz = z + self.d * w
        inv = self._inv
        coords = np.stack(
            [inv[r, 0] * px + inv[r, 1] * py + inv[r, 2] * pz + inv[r, 3] for r in range(3)]
        )
        return ndi.map_coordinates(
            self.smooth.array, coords.reshape(3, -1), order=1, mode="constant", cval=0.0
        ).reshape(np.shape(x))

    def components(self, x, y, z):
        """v at floating points (component arrays) and s."""
        w, _ = self._w(z)
        s = self.lung_weight(x, y, z)
        vx = -self.lat * w * (x - self.x_c)
        vy = -self.ap * w * (y - self.y_post)
        vz = self.d * (s * w + (1.0 - s) * w**3)
        return vx, vy, vz, s

    def inside_jacobian(self, x, y, z):
        """det(D phi_in) (analytic, inside motion only)."""
        w, dw = self._w(z)
        return (1.0 - self.lat * w) * (1.0 - self.ap * w) * (1.0 + self.d * dw)

    def forward(self, q: np.ndarray) -> np.ndarray:
        """phi: (N, 3) floating points -> reference points."""
        q = np.asarray(q, float)
        vx, vy, vz, _ = self.components(q[:, 0], q[:, 1], q[:, 2])
        return q + np.stack([vx, vy, vz], axis=1)

    def inverse(self, p: np.ndarray, *, tol_mm: float = 1e-6, max_iter: int = 200) -> np.ndarray:
        """q with phi(q) = p by fixed-point iteration q <- p - v(q)."""
        p = np.asarray(p, float)
        q = p.copy()
        for _ in range(max_iter):
            vx, vy, vz, _ = self.components(q[:, 0], q[:, 1], q[:, 2])
            new = p - np.stack([vx, vy, vz], axis=1)
            step = float(np.max(np.abs(new - q))) if q.size else 0.0
            q = new
            if step < tol_mm:
                break
        return q


@dataclass(eq=False)
class LungPair:
    """A realistic synthetic lung pair (see the module docstring).

    landmarks_ref : (N, 3) reference world points (bright vessel points inside the lungs).
    landmarks_flt : (N, 3) their exact floating positions.
    motion : the map (``motion.forward`` floating -> reference, ``motion.inverse``).
    info : the parameters and checks (max inverse residual, ...).
    """

    reference: Volume
    floating: Volume
    reference_lungs: np.ndarray = field(repr=False)
    landmarks_ref: np.ndarray = field(repr=False)
    landmarks_flt: np.ndarray = field(repr=False)
    motion: LungMotion = field(repr=False)
    info: dict = field(default_factory=dict)

    def true_transform_points(self, points) -> np.ndarray:
        """Reference -> floating (the direction of ``RegistrationResult.transform_points``)."""
        return self.motion.inverse(np.asarray(points, float).reshape(-1, 3))

    def outside_points(
        self, n: int = 500, *, near_mm: float = 5.0, far_mm: float = 40.0, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(reference points, exact floating points) outside the lungs, for the TRE of the
        chest wall, mediastinum and upper abdomen: up to ``n`` random reference body voxels
        (``ctreg.masks.body_mask``) ``near_mm``-``far_mm`` outside the reference lungs, kept
        where the exact inverse converged (residual <= 0.01 mm: the slab under the dome that
        the floating scan does not show has none) at least a voxel inside the floating grid."""
        from .masks import body_mask

        ref = self.reference
        d = ndi.distance_transform_edt(~self.reference_lungs, sampling=ref.spacing)
        cand = np.argwhere(body_mask(ref) & (d >= near_mm) & (d <= far_mm))
        rng = np.random.default_rng(seed)
        cand = cand[rng.choice(cand.shape[0], min(cand.shape[0], 4 * n), replace=False)]
        p = ref.index_to_world(cand.astype(float))
        q = self.true_transform_points(p)
        resid = np.linalg.norm(self.motion.forward(q) - p, axis=1)
        gi = self.floating.world_to_index(q)
        inside = np.all((gi >= 1) & (gi <= np.asarray(self.floating.shape) - 2), axis=1)
        keep = np.flatnonzero(inside & (resid <= 0.01))[:n]
        return p[keep], q[keep]


def _floating_grid(
    ref: Volume, lungs: np.ndarray, crop_mm: float, crop_z_mm: float, slice_mm: float | None
) -> Volume:
    sp = ref.spacing
    ck = int(round(crop_z_mm / sp[0]))
    cj = int(round(crop_mm / sp[1]))
    ci = int(round(crop_mm / sp[2]))
    nz, ny, nx = ref.shape
    # crop at the top (superior end) in z
    sup_first = ref.affine[2, 0] < 0
    k0, k1 = (ck, nz) if sup_first else (0, nz - ck)
    j0, j1, i0, i1 = cj, ny - cj, ci, nx - ci
    if min(k1 - k0, j1 - j0, i1 - i0) < 4:
        raise SyntheticLungError(
            "make_lung_pair: the crop leaves no floating grid", "SyntheticLung.NoLungs"
        )
    aff = ref.affine.copy()
    aff[:3, 3] = ref.index_to_world(np.array([[k0, j0, i0]], float))[0]
    shape = [k1 - k0, j1 - j0, i1 - i0]
    if slice_mm is not None:
        length = (shape[0] - 1) * sp[0]
        shape[0] = int(length // slice_mm) + 1
        aff[:3, 0] *= slice_mm / sp[0]
    return Volume(np.zeros(shape, np.float32), aff)


def make_lung_pair(
    volume: Volume,
    *,
    seed: int = 0,
    diaphragm_mm: float = 30.0,
    ap_expansion: float = 0.06,
    lateral_expansion: float = 0.03,
    density: str = "mass",
    crop_mm: float = 15.0,
    crop_z_mm: float = 10.0,
    slice_mm: float | None = 2.5,
    noise_hu: float = 20.0,
    pleura_sigma_mm: float = 0.7,
    n_landmarks: int = 100,
    lungs: np.ndarray | None = None,
) -> LungPair:
    """Make a realistic synthetic lung pair from a real chest scan (see the module docstring).

    ``volume`` is the reference (exhale-like); the floating scan is inhale-like.  ``lungs``: the
    reference lung mask (default :func:`ctreg.lungs.segment_lungs`).  ``density``: "mass"
    (mass-preserving, inside the lungs) or "none".  ``seed`` fixes the noise, the landmarks'
    sampling and the small random part of the motion (amplitudes jittered by +-10 %).
    """
    if not isinstance(volume, Volume):
        raise TypeError(
            f"make_lung_pair: volume must be a ctreg.Volume, got {type(volume).__name__}"
        )
    if density not in ("mass", "none"):
        raise ValueError(f"make_lung_pair: density must be 'mass' or 'none', got {density!r}")
    rng = np.random.default_rng(seed)
    if lungs is None:
        from .lungs import segment_lungs

        lungs = segment_lungs(volume, check=False).mask
    lungs = np.asarray(lungs, bool)
    if lungs.shape != volume.shape or not lungs.any():
        raise SyntheticLungError(
            "make_lung_pair: no lungs on the reference grid", "SyntheticLung.NoLungs"
        )
    jit = rng.uniform(0.9, 1.1, size=3)
    d, ap, lat = diaphragm_mm * jit[0], ap_expansion * jit[1], lateral_expansion * jit[2]
    idx = np.argwhere(lungs)
    w = volume.index_to_world(np.array([idx.min(0), idx.max(0)], float))
    lo, hi = w.min(0), w.max(0)
    if abs(d) * math.pi / (2.0 * (hi[2] - lo[2] + abs(d))) >= 0.5:
        raise SyntheticLungError(
            f"make_lung_pair: lungs of {hi[2] - lo[2]:.0f} mm in z are too short "
            f"for diaphragm_mm={diaphragm_mm}",
            "SyntheticLung.NoLungs",
        )
    sigma_vox = pleura_sigma_mm / volume.spacing
    smooth = Volume(ndi.gaussian_filter(lungs.astype(np.float32), sigma_vox), volume.affine)
    motion = LungMotion(
        diaphragm_mm=d,
        ap=ap,
        lateral=lat,
        z_base=lo[2] - d,
        z_apex=hi[2],
        x_c=0.5 * (lo[0] + hi[0]),
        y_post=hi[1],
        smooth_lungs=smooth,
    )

    grid = _floating_grid(volume, lungs, crop_mm, crop_z_mm, slice_mm)
    src = volume.array
    if slice_mm is not None and slice_mm > volume.spacing[0]:
        src = ndi.gaussian_filter1d(src, slice_mm / 2.355 / volume.spacing[0], axis=0)
    nz, ny, nx = grid.shape
    out = np.empty(grid.shape, np.float32)
    inv = np.linalg.inv(volume.affine)
    lin, off = grid.affine[:3, :3], grid.affine[:3, 3]
    jj = np.arange(ny, dtype=float)[None, :, None]
    ii = np.arange(nx, dtype=float)[None, None, :]
    step = max(1, _CHUNK // (ny * nx))
    for k0 in range(0, nz, step):
        kk = np.arange(k0, min(nz, k0 + step), dtype=float)[:, None, None]
        x, y, z = (lin[c, 0] * kk + lin[c, 1] * jj + lin[c, 2] * ii + off[c] for c in range(3))
        x, y, z = (np.broadcast_to(a, (kk.shape[0], ny, nx)) for a in (x, y, z))
        vx, vy, vz, s = motion.components(x, y, z)
        px, py, pz = x + vx, y + vy, z + vz
        coords = np.stack(
            [inv[r, 0] * px + inv[r, 1] * py + inv[r, 2] * pz + inv[r, 3] for r in range(3)]
        )
        vals = ndi.map_coordinates(src, coords, order=1, mode="nearest")
        if density == "mass":
            lung_vals = -1000.0 + (vals + 1000.0) * motion.inside_jacobian(x, y, z)
            vals = s * lung_vals + (1.0 - s) * vals
        out[k0 : k0 + kk.shape[0]] = vals
    if noise_hu > 0:
        out += rng.normal(0.0, noise_hu, out.shape).astype(np.float32)
    floating = Volume(out, grid.affine, None, {"synthetic_lung": True})

    # landmarks: bright local maxima >= ~5 mm inside the reference lungs
    deep = ndi.gaussian_filter(lungs.astype(np.float32), 4.0 / volume.spacing) > 0.995
    a = volume.array
    cand = np.argwhere(deep & (a > -600))
    if cand.shape[0] > 0:
        c = np.clip(cand, 1, np.asarray(a.shape) - 2)
        v0 = a[c[:, 0], c[:, 1], c[:, 2]]
        is_max = np.ones(c.shape[0], bool)
        for dk in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for di in (-1, 0, 1):
                    if dk or dj or di:
                        is_max &= v0 >= a[c[:, 0] + dk, c[:, 1] + dj, c[:, 2] + di]
        cand = c[is_max]
    if cand.shape[0] == 0:
        raise SyntheticLungError(
            "make_lung_pair: no bright vessel point deep inside the lungs",
            "SyntheticLung.NoLandmarks",
        )
    if cand.shape[0] > 20000:
        cand = cand[rng.choice(cand.shape[0], 20000, replace=False)]
    from .synthetic import _farthest_points

    pts = volume.index_to_world(cand.astype(float))
    order = _farthest_points(pts, min(pts.shape[0], 2 * n_landmarks + 20), rng)
    p = pts[order]
    q = motion.inverse(p)
    resid = np.linalg.norm(motion.forward(q) - p, axis=1)
    gi = floating.world_to_index(q)
    inside = np.all((gi >= 0) & (gi <= np.asarray(floating.shape) - 1), axis=1)
    keep = inside & (resid <= 0.01)
    p, q, resid = p[keep][:n_landmarks], q[keep][:n_landmarks], resid[keep][:n_landmarks]
    if p.shape[0] == 0:
        raise SyntheticLungError(
            "make_lung_pair: no landmark's floating position could be solved "
            "inside the floating grid",
            "SyntheticLung.InverseFailed",
        )
    info = {
        "diaphragm_mm": d,
        "ap_expansion": ap,
        "lateral_expansion": lat,
        "density": density,
        "crop_mm": crop_mm,
        "crop_z_mm": crop_z_mm,
        "slice_mm": slice_mm,
        "noise_hu": noise_hu,
        "pleura_sigma_mm": pleura_sigma_mm,
        "seed": seed,
        "n_landmarks": int(p.shape[0]),
        "max_inverse_residual_mm": float(resid.max()),
    }
    return LungPair(volume, floating, lungs, p, q, motion, info)
