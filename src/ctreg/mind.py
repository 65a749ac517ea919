"""MIND-SSC descriptors, discrete block matching and coupled-convex regularisation.

Three building blocks of a discrete (corrField / deeds-like) registration step, on the voxel
grid of one pyramid level, all arrays (z, y, x) C-contiguous:

* :func:`mind_ssc` -- modality independent neighbourhood descriptors, self-similarity context
  variant (Heinrich et al., MICCAI 2013, "Towards realtime multimodal fusion for image-guided
  interventions using self-similarities"), 12 channels per voxel;
* :func:`block_match_cost` -- for every control point of a regular grid, the mean L1 feature
  distance between a block of the reference and the same block of the floating features
  displaced by each integer offset of a search cube;
* :func:`regularise_cost` -- coupled-convex optimisation over that cost volume (Heinrich et al.,
  "Non-parametric discrete registration with convex optimisation", WBIR 2014; the scheme of
  corrField/deeds): exact per-point argmin with a quadratic coupling to a smooth field,
  alternated with Gaussian smoothing, coupling weight increasing.  :func:`coupled_argmin` is
  its C++ step, exposed for testing and reuse.

The kernels are C++ (cpp/src/mind_descriptors.cpp: MIND-SSC; cpp/src/mind_match.cpp: block
matching and the coupled-convex argmin), OpenMP-parallel, and deterministic: the same output,
bit for bit, on any thread count (``ctreg.ops.set_num_threads``).  See docs/mind.md.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from . import _native
from .errors import CTRegError

__all__ = [
    "MindArgumentError",
    "MIND_CHANNELS",
    "mind_pairs",
    "mind_ssc",
    "search_offsets",
    "block_match_cost",
    "coupled_argmin",
    "regularise_cost",
    "DEFAULT_ALPHAS",
]

#: Number of MIND-SSC channels.
MIND_CHANNELS = 12

#: Default coupling schedule of :func:`regularise_cost` (cost units per squared level voxel).
DEFAULT_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class MindArgumentError(CTRegError, ValueError):
    """A bad argument to a ctreg.mind function.  ``code`` is one of ``"Mind.Dtype"`` (not a
    C-contiguous array of the required dtype), ``"Mind.Shape"`` (wrong dimensions or shapes
    that do not match) and ``"Mind.Parameter"`` (a number out of range)."""

    code = "Mind.Parameter"
    codes = ("Mind.Parameter", "Mind.Dtype", "Mind.Shape")

    def __init__(self, message: str, code: str):
        super().__init__(message, code=code)


def _f32(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise MindArgumentError(f"{name} must be a C-contiguous float32 numpy array", "Mind.Dtype")
    if a.ndim != ndim:
        raise MindArgumentError(
            f"{name} must have {ndim} dimensions, got shape {a.shape}", "Mind.Shape"
        )
    if a.size == 0:
        raise MindArgumentError(f"{name} must not be empty, got shape {a.shape}", "Mind.Shape")
    return a


def _int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
        raise MindArgumentError(f"{name} must be an integer >= {lo}, got {v!r}", "Mind.Parameter")
    return int(v)


def _vec3(name, v):
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, 3)
    if a.shape != (3,) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise MindArgumentError(
            f"{name} must be a positive number or (z, y, x) positive numbers, got {v!r}",
            "Mind.Parameter",
        )
    return a


def mind_pairs() -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The 12 channels' neighbour pairs ``((az, ay, ax), (bz, by, bx))`` in unit steps (times
    ``distance_vox``), in channel order: neighbours n0..n5 = -z, +z, -y, +y, -x, +x; channel
    pairs (p, q), p < q, lexicographic, without the opposite pairs (n0,n1), (n2,n3), (n4,n5)."""
    return [
        cast(tuple[tuple[int, int, int], tuple[int, int, int]], tuple(map(tuple, p)))
        for p in _native.mind_pairs()
    ]


def mind_ssc(image, spacing=None, *, radius_vox=1, distance_vox=2, out=None) -> np.ndarray:
    """MIND-SSC descriptors, (z, y, x, 12) float32.

    Definition (I = image, clamp = clamp-to-edge index, r = ``radius_vox``,
    d = ``distance_vox``; channel c has the neighbour pair (a_c, b_c) of :func:`mind_pairs`,
    scaled by d, two points of the six-neighbourhood at distance d that are not opposite, so
    ``|a_c - b_c| = sqrt(2) d``)::

        S_c(y) = (I(clamp(y + a_c)) - I(clamp(y + b_c)))^2          for every voxel y
        D_c(x) = mean over the (2r+1)^3 voxels y = clamp(x + p), p in [-r, r]^3, of S_c(y)
                 (a separable box filter, edges replicated: uniform_filter(mode='nearest'))
        D_c(x) <- D_c(x) - min_c' D_c'(x)
        V(x)   = mean_c D_c(x),   m = mean over all voxels of V,
        V(x)   <- clip(V(x), 1e-3 m, 1e3 m)
        out[x, c] = exp(-D_c(x) / V(x))

    So every voxel has at least one channel equal to 1, and out is in (0, 1].  A constant image
    (m = 0) gives 1 everywhere.  The exponential is a polynomial approximation (relative error
    < 2e-7; arguments below -87.3 give ~1e-38 instead of smaller numbers).

    Parameters
    ----------
    image : (z, y, x) float32, C-contiguous.
    spacing : optional (z, y, x) voxel size in mm: validated, not used (the descriptor is
        defined on the voxel grid; radius and distance are in voxels).
    radius_vox : box-filter radius r >= 0 (0: no patch, D_c = S_c).
    distance_vox : neighbour distance d >= 1.
    out : optional preallocated (z, y, x, 12) float32 C-contiguous array to fill (returned).

    Speed: 256^3 in ~1 s on 2 threads with a preallocated ``out`` (docs/mind.md).
    """
    image = _f32("image", image, 3)
    if spacing is not None:
        _vec3("spacing", spacing)
    r = _int("radius_vox", radius_vox, 0)
    d = _int("distance_vox", distance_vox, 1)
    if out is not None:
        _f32("out", out, 4)
        if out.shape != image.shape + (MIND_CHANNELS,):
            raise MindArgumentError(
                f"out must have shape {image.shape + (MIND_CHANNELS,)}, got {out.shape}",
                "Mind.Shape",
            )
        if np.shares_memory(out, image):
            raise MindArgumentError("out must not overlap image", "Mind.Shape")
    return _native.mind_ssc(image, r, d, out)


def search_offsets(search_radius_vox, search_step_vox=1) -> np.ndarray:
    """The (L, 3) int32 offsets (z, y, x voxels) of :func:`block_match_cost`: every vector
    whose components are k * step, k = -K..K, K = search_radius_vox // search_step_vox;
    L = (2K + 1)^3, z slowest, x fastest (offset 0 is row L // 2)."""
    R = _int("search_radius_vox", search_radius_vox, 0)
    s = _int("search_step_vox", search_step_vox, 1)
    K = R // s
    k = np.arange(-K, K + 1, dtype=np.int32) * s
    g = np.meshgrid(k, k, k, indexing="ij")
    return np.ascontiguousarray(np.stack([a.reshape(-1) for a in g], axis=1))


def block_match_cost(
    ref_feat,
    flt_feat,
    *,
    grid_step_vox,
    block_radius_vox,
    search_radius_vox,
    search_step_vox=1,
    block_step_vox=2,
    mask=None,
):
    """Block-matching cost of every control point for every offset of a search cube.

    Definition (p_g = g * grid_step_vox, control grid shape ceil(shape / grid_step_vox);
    offsets d_l = :func:`search_offsets`; clamp = clamp-to-edge)::

        O      = {-B, -B + s, -B + 2s, ...} (<= B), B = block_radius_vox, s = block_step_vox
        X_g    = {p_g + o : o in O^3, p_g + o inside the volume}
        cost[g, l] = mean over x in X_g of sum_c |ref_feat[x, c] - flt_feat[clamp(x + d_l), c]|

    With the default ``block_step_vox=2`` the block is sub-sampled every 2nd voxel along each
    axis, symmetrically (radius 2: o in {-2, 0, 2}, 27 voxels; radius 1: {-1, 1}, 8 voxels);
    ``block_step_vox=1`` uses the full cube.  Both feature arrays are on the SAME grid (the
    floating features already warped onto the reference grid); an offset d_l means that
    reference voxel x corresponds to floating voxel x + d_l.

    Parameters
    ----------
    ref_feat, flt_feat : (z, y, x, C) float32, C-contiguous, the same shape.
    grid_step_vox, block_radius_vox, search_radius_vox, search_step_vox, block_step_vox : ints.
    mask : optional (z, y, x) bool / uint8: a control point whose full block cube
        (p_g + [-B, B]^3, inside the volume) holds no mask voxel is inactive: its cost is 0
        for every offset.  The mask does not otherwise change the cost.

    Returns
    -------
    ``(cost, offsets)``, or ``(cost, offsets, active)`` when ``mask`` is given: cost (gz, gy,
    gx, L) float32, offsets (L, 3) int32, active (gz, gy, gx) bool.
    """
    ref_feat = _f32("ref_feat", ref_feat, 4)
    flt_feat = _f32("flt_feat", flt_feat, 4)
    if ref_feat.shape != flt_feat.shape:
        raise MindArgumentError(
            f"ref_feat {ref_feat.shape} and flt_feat {flt_feat.shape} differ", "Mind.Shape"
        )
    step = _int("grid_step_vox", grid_step_vox, 1)
    B = _int("block_radius_vox", block_radius_vox, 0)
    bs = _int("block_step_vox", block_step_vox, 1)
    R = _int("search_radius_vox", search_radius_vox, 0)
    ss = _int("search_step_vox", search_step_vox, 1)
    m8 = None
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.shape != ref_feat.shape[:3]:
            raise MindArgumentError(f"mask must be a {ref_feat.shape[:3]} array", "Mind.Shape")
        if mask.dtype == np.bool_:
            m8 = np.ascontiguousarray(mask).view(np.uint8)
        elif mask.dtype == np.uint8:
            m8 = np.ascontiguousarray(mask)
        else:
            raise MindArgumentError(f"mask must be bool or uint8, got {mask.dtype}", "Mind.Dtype")
    cost, active = _native.block_match_cost(ref_feat, flt_feat, step, B, bs, R, ss, m8)
    offsets = search_offsets(R, ss)
    if mask is None:
        return cost, offsets
    return cost, offsets, active.view(np.bool_)


def coupled_argmin(cost, disp_mm, v_mm, theta):
    """Exact argmin of the coupled-convex data step, for every point g::

        idx[g] = first l minimising  cost[g, l] + theta * |disp_mm[l] - v_mm[g]|^2
        u[g]   = disp_mm[idx[g]]

    evaluated in float32 as ``cost + theta * (((dz - vz)^2 + (dy - vy)^2) + (dx - vx)^2)``.

    Parameters
    ----------
    cost : (..., L) float32 C-contiguous (e.g. (gz, gy, gx, L)).
    disp_mm : (L, 3) float32, the candidate displacements.
    v_mm : (..., 3) float32, the current smooth field (same leading shape as cost).
    theta : coupling weight >= 0.

    Returns
    -------
    ``(idx, u)``: idx (...) int32, u (..., 3) float32.
    """
    if not isinstance(cost, np.ndarray) or cost.dtype != np.float32 or not cost.flags.c_contiguous:
        raise MindArgumentError("cost must be a C-contiguous float32 numpy array", "Mind.Dtype")
    if cost.ndim < 1 or cost.size == 0:
        raise MindArgumentError(
            f"cost must be a non-empty (..., L) array, got {cost.shape}", "Mind.Shape"
        )
    disp_mm = _f32("disp_mm", disp_mm, 2)
    lead = cost.shape[:-1]
    if not isinstance(v_mm, np.ndarray) or v_mm.dtype != np.float32 or not v_mm.flags.c_contiguous:
        raise MindArgumentError("v_mm must be a C-contiguous float32 numpy array", "Mind.Dtype")
    if disp_mm.shape != (cost.shape[-1], 3) or v_mm.shape != lead + (3,):
        raise MindArgumentError(
            f"cost {cost.shape}, disp_mm {disp_mm.shape} and v_mm {v_mm.shape} do not "
            "match (..., L), (L, 3), (..., 3)",
            "Mind.Shape",
        )
    theta = float(theta)
    if not (math.isfinite(theta) and theta >= 0):
        raise MindArgumentError(f"theta must be finite and >= 0, got {theta!r}", "Mind.Parameter")
    n = int(np.prod(lead)) if lead else 1
    idx, u = _native.coupled_argmin(
        cost.reshape(n, cost.shape[-1]), disp_mm, v_mm.reshape(n, 3), theta
    )
    return idx.reshape(lead), u.reshape(lead + (3,))


def _normalised_smooth(u, w, sigma):
    """Gaussian normalised convolution of the (g..., 3) field u with weights w (g...):
    G*(w u) / G*(w); 0 where G*(w) is 0."""
    from scipy.ndimage import gaussian_filter

    num = np.empty(u.shape, np.float64)
    for c in range(3):
        num[..., c] = gaussian_filter(u[..., c] * w, sigma, mode="nearest", truncate=3.0)
    den = gaussian_filter(w, sigma, mode="nearest", truncate=3.0)
    out = np.zeros(u.shape, np.float64)
    ok = den > 1e-6
    out[ok] = num[ok] / den[ok, None]
    return out


def regularise_cost(
    cost, offsets, active=None, *, grid_spacing_mm, voxel_mm, alphas=DEFAULT_ALPHAS, sigma_grid=1.0
) -> np.ndarray:
    """Coupled-convex regularisation of a block-matching cost volume; returns the (gz, gy, gx,
    3) float32 displacement in mm, (z, y, x) components, on the control grid.

    With d_l = offsets[l] * voxel_mm (mm), v = 0 at the start, for each alpha in ``alphas``::

        theta = alpha / h^2,  h = mean(voxel_mm)           (alpha: cost per squared voxel)
        u[g]  = d_{l*},  l* = argmin_l cost[g, l] + theta |d_l - v[g]|^2   (coupled_argmin)
        v     = G*(w u) / G*(w)      w = active (1/0), G = Gaussian over the control grid,
                                     sigma_grid control points (per axis scaled by
                                     mean(grid_spacing_mm) / grid_spacing_mm[axis], so the
                                     smoothing is isotropic in mm), edges replicated

    and the result is the last v.  Inactive points (no mask voxel in their block) take v from
    their active neighbours (normalised convolution: their own u is ignored); a point with no
    active point within 3 sigma gets 0.

    Parameters
    ----------
    cost : (gz, gy, gx, L) float32 (:func:`block_match_cost`).
    offsets : (L, 3) integer offsets in level voxels (z, y, x).
    active : optional (gz, gy, gx) bool; None = all active.
    grid_spacing_mm : control-point spacing (z, y, x) in mm (a number or 3 numbers).
    voxel_mm : level voxel size (z, y, x) in mm.
    alphas : increasing coupling weights, one alternation each.
    sigma_grid : smoothing standard deviation in control points (> 0).
    """
    cost = _f32("cost", cost, 4)
    offsets = np.asarray(offsets)
    if (
        offsets.ndim != 2
        or offsets.shape != (cost.shape[3], 3)
        or not np.issubdtype(offsets.dtype, np.integer)
    ):
        raise MindArgumentError(
            f"offsets must be ({cost.shape[3]}, 3) integers, got {offsets.shape} {offsets.dtype}",
            "Mind.Shape",
        )
    grid = cost.shape[:3]
    if active is None:
        w = np.ones(grid, np.float64)
    else:
        active = np.asarray(active)
        if active.shape != grid:
            raise MindArgumentError(
                f"active must have shape {grid}, got {active.shape}", "Mind.Shape"
            )
        w = active.astype(bool).astype(np.float64)
    gs = _vec3("grid_spacing_mm", grid_spacing_mm)
    vox = _vec3("voxel_mm", voxel_mm)
    sigma_grid = float(sigma_grid)
    if not (math.isfinite(sigma_grid) and sigma_grid > 0):
        raise MindArgumentError(f"sigma_grid must be > 0, got {sigma_grid!r}", "Mind.Parameter")
    alphas = [float(a) for a in alphas]
    if not alphas or not all(math.isfinite(a) and a >= 0 for a in alphas):
        raise MindArgumentError(
            f"alphas must be a non-empty sequence of numbers >= 0, got {alphas!r}", "Mind.Parameter"
        )
    h = float(np.mean(vox))
    sigma = sigma_grid * float(np.mean(gs)) / gs
    disp = np.ascontiguousarray(offsets.astype(np.float64) * vox, dtype=np.float32)
    v = np.zeros(grid + (3,), np.float32)
    for alpha in alphas:
        _, u = coupled_argmin(cost, disp, v, alpha / (h * h))
        v = np.ascontiguousarray(
            _normalised_smooth(u.astype(np.float64), w, sigma), dtype=np.float32
        )
    return v
