"""The known breathing-like map of :mod:`ctreg.synthetic`: its options (:class:`BreathingMotion`)
and the closed-form map ``phi = B o T`` with its Jacobian, inverse and displacement field
(:class:`BreathingMap`).  The model is described in :mod:`ctreg.synthetic`'s docstring; the pair
(floating scan, landmarks) is made there."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import CTRegError
from .volume import Volume

__all__ = ["BreathingMotion", "BreathingMap"]

_N_MODES = 4  # random sinusoids per displacement component
_CHUNK_VOXELS = 1 << 21


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"BreathingMotion.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"BreathingMotion.{name} must be finite, got {value!r}")
    return value


def _triple(name: str, value) -> tuple[float, float, float]:
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(
            f"BreathingMotion.{name} must be three numbers (x, y, z), got {value!r}"
        ) from None
    if len(items) != 3:
        raise ValueError(f"BreathingMotion.{name} must be three numbers (x, y, z), got {value!r}")
    return tuple(_finite(name, v) for v in items)  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class BreathingMotion:
    """Options of the known breathing-like deformation (see the module docstring).

    Parameters
    ----------
    diaphragm_mm : superior-inferior motion at and below the lung base, mm (positive: a floating
        point maps to a more superior reference point); decays as a half cosine to 0 at the apex.
        ``|diaphragm_mm|`` at most 60.
    ap_expansion : anterior-posterior expansion fraction at the base (0.04 = 4 %), in (-0.3, 0.3).
    lateral_expansion : left-right expansion fraction at the base, in (-0.3, 0.3).
    translation_mm : rigid offset (x, y, z) LPS mm, each at most 100 in magnitude.
    rotation_deg : rotation about the reference volume's centre, about the x, y and z axes
        (applied in that order), degrees, each at most 30 in magnitude.
    perturbation_mm : peak amplitude of the random smooth perturbation per component, mm, in
        [0, 10].
    perturbation_wavelength_mm : shortest wavelength of that perturbation, mm, at least 40; its
        largest gradient is ``2 * pi * perturbation_mm / perturbation_wavelength_mm`` (< 0.5).
    seed : seed of the perturbation and of the landmark sampling.
    """

    diaphragm_mm: float = 15.0
    ap_expansion: float = 0.04
    lateral_expansion: float = 0.02
    translation_mm: tuple = (4.0, -3.0, 5.0)
    rotation_deg: tuple = (3.0, -2.0, 4.0)
    perturbation_mm: float = 2.0
    perturbation_wavelength_mm: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        dia = _finite("diaphragm_mm", self.diaphragm_mm)
        if abs(dia) > 60.0:
            raise ValueError(f"BreathingMotion.diaphragm_mm must be within [-60, 60] mm, got {dia}")
        for name in ("ap_expansion", "lateral_expansion"):
            v = _finite(name, getattr(self, name))
            if not -0.3 < v < 0.3:
                raise ValueError(
                    f"BreathingMotion.{name} must be a fraction in (-0.3, 0.3), got {v}"
                )
        t = _triple("translation_mm", self.translation_mm)
        if max(abs(c) for c in t) > 100.0:
            raise ValueError(
                f"BreathingMotion.translation_mm components must be within 100 mm, got {t}"
            )
        r = _triple("rotation_deg", self.rotation_deg)
        if max(abs(c) for c in r) > 30.0:
            raise ValueError(
                f"BreathingMotion.rotation_deg components must be within 30 degrees, got {r}"
            )
        amp = _finite("perturbation_mm", self.perturbation_mm)
        if not 0.0 <= amp <= 10.0:
            raise ValueError(f"BreathingMotion.perturbation_mm must be in [0, 10] mm, got {amp}")
        lam = _finite("perturbation_wavelength_mm", self.perturbation_wavelength_mm)
        if lam < 40.0:
            raise ValueError(
                f"BreathingMotion.perturbation_wavelength_mm must be at least 40 mm, got {lam}"
            )
        if 2.0 * math.pi * amp / lam >= 0.5:
            raise ValueError(
                "BreathingMotion: perturbation too steep for a fold-free map: 2*pi*perturbation_mm/"
                f"perturbation_wavelength_mm must be < 0.5, got {2.0 * math.pi * amp / lam:.3g} "
                f"(perturbation_mm={amp}, perturbation_wavelength_mm={lam})"
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, (int, np.integer))
            or self.seed < 0
        ):
            raise ValueError(
                f"BreathingMotion.seed must be a non-negative integer, got {self.seed!r}"
            )
        object.__setattr__(self, "diaphragm_mm", dia)
        object.__setattr__(self, "translation_mm", t)
        object.__setattr__(self, "rotation_deg", r)
        object.__setattr__(self, "seed", int(self.seed))


def _rotation_matrix(rotation_deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class BreathingMap:
    """The known map phi(q) = B(T(q)): floating world (x, y, z) -> reference world (x, y, z), all
    analytic (see the module docstring).  Built by :func:`make_breathing_pair`; saved and rebuilt
    with :meth:`to_dict` / :meth:`from_dict` (JSON-able), e.g. by the benchmark scripts.
    """

    def __init__(
        self,
        motion: BreathingMotion,
        *,
        centre_xyz,
        z_base: float,
        z_apex: float,
        x_centre: float,
        y_posterior: float,
    ) -> None:
        self.motion = motion
        self.centre = np.asarray(centre_xyz, dtype=np.float64).reshape(3)
        self.rot = _rotation_matrix(motion.rotation_deg)
        self.shift = np.asarray(motion.translation_mm, dtype=np.float64)
        self.z_base, self.z_apex = float(z_base), float(z_apex)
        self.length = max(self.z_apex - self.z_base, 1e-6)
        self.x_centre, self.y_posterior = float(x_centre), float(y_posterior)
        # Random smooth perturbation: per component c, sum_m a[c,m] sin(k[c,m] . x + phase[c,m]).
        rng = np.random.default_rng(motion.seed)
        lam = motion.perturbation_wavelength_mm
        dirs = rng.normal(size=(3, _N_MODES, 3))
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        wavelengths = lam * rng.uniform(1.0, 2.5, size=(3, _N_MODES))
        self.wave = dirs * (2.0 * np.pi / wavelengths)[..., None]  # (3, M, 3) rad/mm
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=(3, _N_MODES))
        weights = rng.uniform(0.5, 1.0, size=(3, _N_MODES))
        self.amp = (
            motion.perturbation_mm * weights / weights.sum(axis=1, keepdims=True)
        )  # sum = peak

    def to_dict(self) -> dict:
        """JSON-able parameters: the options and the lung geometry the map was built on."""
        m = self.motion
        return {
            "motion": {
                "diaphragm_mm": m.diaphragm_mm,
                "ap_expansion": m.ap_expansion,
                "lateral_expansion": m.lateral_expansion,
                "translation_mm": list(m.translation_mm),
                "rotation_deg": list(m.rotation_deg),
                "perturbation_mm": m.perturbation_mm,
                "perturbation_wavelength_mm": m.perturbation_wavelength_mm,
                "seed": m.seed,
            },
            "centre_xyz": self.centre.tolist(),
            "z_base": self.z_base,
            "z_apex": self.z_apex,
            "x_centre": self.x_centre,
            "y_posterior": self.y_posterior,
        }

    @classmethod
    def from_dict(cls, params: dict) -> "BreathingMap":
        """Rebuild the exact map from :meth:`to_dict`'s output."""
        try:
            motion = BreathingMotion(**params["motion"])
            return cls(
                motion,
                centre_xyz=params["centre_xyz"],
                z_base=params["z_base"],
                z_apex=params["z_apex"],
                x_centre=params["x_centre"],
                y_posterior=params["y_posterior"],
            )
        except KeyError as exc:
            raise ValueError(
                f"BreathingMap.from_dict: missing key {exc}; expected the output of "
                "BreathingMap.to_dict()"
            ) from None

    # -- pieces --------------------------------------------------------------------------------
    def rigid(self, q: np.ndarray) -> np.ndarray:
        return (q - self.centre) @ self.rot.T + self.centre + self.shift

    def rigid_inverse(self, x: np.ndarray) -> np.ndarray:
        return (x - self.centre - self.shift) @ self.rot + self.centre

    def _profile(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """w(z): 1 at/below the base, half cosine to 0 at the apex; and dw/dz."""
        t = np.clip((z - self.z_base) / self.length, 0.0, 1.0)
        w = 0.5 * (1.0 + np.cos(np.pi * t))
        inside = (z > self.z_base) & (z < self.z_apex)
        dw = np.where(inside, -0.5 * np.pi / self.length * np.sin(np.pi * t), 0.0)
        return w, dw

    def breathing_components(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        """b at reference-side points given as component arrays of any (equal) shape."""
        m = self.motion
        w, _ = self._profile(z)
        bx = (m.lateral_expansion * (x - self.x_centre)) * w
        by = (m.ap_expansion * (y - self.y_posterior)) * w
        bz = m.diaphragm_mm * w
        if m.perturbation_mm > 0:
            for c, b in enumerate((bx, by, bz)):
                for mode in range(_N_MODES):
                    kx, ky, kz = self.wave[c, mode]
                    b += self.amp[c, mode] * np.sin(kx * x + ky * y + kz * z + self.phase[c, mode])
        return bx, by, bz

    def breathing(self, x: np.ndarray) -> np.ndarray:
        """b(x), (N, 3) world displacement of the breathing part at reference-side points x."""
        return np.stack(self.breathing_components(x[:, 0], x[:, 1], x[:, 2]), axis=1)

    def breathing_jacobian(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, 3) d(x + b(x))/dx."""
        m = self.motion
        w, dw = self._profile(x[:, 2])
        jac = np.zeros((x.shape[0], 3, 3))
        jac[:, 0, 0] = 1.0 + m.lateral_expansion * w
        jac[:, 0, 2] = m.lateral_expansion * dw * (x[:, 0] - self.x_centre)
        jac[:, 1, 1] = 1.0 + m.ap_expansion * w
        jac[:, 1, 2] = m.ap_expansion * dw * (x[:, 1] - self.y_posterior)
        jac[:, 2, 2] = 1.0 + m.diaphragm_mm * dw
        if m.perturbation_mm > 0:
            arg = np.einsum("cmd,nd->ncm", self.wave, x) + self.phase[None]
            jac += np.einsum("cm,ncm,cmd->ncd", self.amp, np.cos(arg), self.wave)
        return jac

    # -- the map -------------------------------------------------------------------------------
    def forward(self, q: np.ndarray) -> np.ndarray:
        """phi(q): floating world points -> reference world points."""
        x = self.rigid(q)
        return x + self.breathing(x)

    def jacobian_det(self, q: np.ndarray) -> np.ndarray:
        """det(d phi / dq) at floating points (rotation has det 1)."""
        return np.linalg.det(self.breathing_jacobian(self.rigid(q)))

    def inverse_components(
        self,
        px: np.ndarray,
        py: np.ndarray,
        pz: np.ndarray,
        *,
        tol_mm: float = 1e-7,
        max_iter: int = 200,
    ):
        """Solve B(x) = p for x by fixed-point iteration x <- p - b(x) (component arrays).

        Converges linearly with the Lipschitz constant of b (about 0.1 for breathing motion)."""
        x, y, z = px, py, pz
        step = 0.0
        for _ in range(max_iter):
            bx, by, bz = self.breathing_components(x, y, z)
            nx, ny, nz = px - bx, py - by, pz - bz
            step = max(
                (float(np.max(np.abs(n - o))) if n.size else 0.0)
                for n, o in ((nx, x), (ny, y), (nz, z))
            )
            x, y, z = nx, ny, nz
            if step < tol_mm:
                return x, y, z
        raise CTRegError(
            f"true_transform_points: fixed-point iteration did not converge "
            f"(last step {step:.3g} mm after {max_iter} iterations)"
        )

    def inverse(self, p: np.ndarray, *, tol_mm: float = 1e-7) -> np.ndarray:
        """q with phi(q) = p: invert the breathing part iteratively, then the rigid part."""
        x = np.stack(self.inverse_components(p[:, 0], p[:, 1], p[:, 2], tol_mm=tol_mm), axis=1)
        return self.rigid_inverse(x)

    def displacement_on(self, grid: Volume, *, tol_mm: float = 1e-5) -> np.ndarray:
        """(z, y, x, 3) float32 displacement u (x, y, z mm) of the inverse map on ``grid``: a
        reference point p maps to p + u(p) = phi^-1(p) in the floating scan; slab by slab."""
        bmap = self
        out = np.empty(grid.shape + (3,), np.float32)
        nz, ny, nx = grid.shape
        lin, off = grid.affine[:3, :3], grid.affine[:3, 3]
        rot_t = bmap.rot.T  # rigid inverse: R^T (x - c - t) + c
        shift = bmap.centre + bmap.shift
        step = max(1, _CHUNK_VOXELS // (ny * nx))
        jj = np.arange(ny, dtype=np.float64)[None, :, None]
        ii = np.arange(nx, dtype=np.float64)[None, None, :]
        for k0 in range(0, nz, step):
            k1 = min(nz, k0 + step)
            kk = np.arange(k0, k1, dtype=np.float64)[:, None, None]
            p = [lin[c, 0] * kk + lin[c, 1] * jj + lin[c, 2] * ii + off[c] for c in range(3)]
            x = bmap.inverse_components(*p, tol_mm=tol_mm)
            d = [x[c] - shift[c] for c in range(3)]
            for c in range(3):
                out[k0:k1, ..., c] = (
                    rot_t[c, 0] * d[0]
                    + rot_t[c, 1] * d[1]
                    + rot_t[c, 2] * d[2]
                    + bmap.centre[c]
                    - p[c]
                )
        return out
