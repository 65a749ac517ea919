"""Slow, obvious reference implementations that the fast kernels are tested against."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi  # noqa: F401  (used by the sections below)


# --- resampling, gradients, smoothing ---------------------------------------------------------


def index_grid(shape) -> np.ndarray:
    """(3, N) float64 indices (k, j, i) of every voxel of ``shape``, C order."""
    return np.stack(
        np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=0
    ).reshape(3, -1)


def apply_matrix(m, pts3n) -> np.ndarray:
    """4x4 matrix applied to (3, N) points."""
    m = np.asarray(m, dtype=np.float64)
    return m[:3, :3] @ pts3n + m[:3, 3:4]


def resample_affine_ref(image, matrix, out_shape, *, order=1, fill=0.0) -> np.ndarray:
    """scipy.ndimage.map_coordinates through an output-index -> input-index matrix."""
    coords = apply_matrix(matrix, index_grid(out_shape))
    out = ndi.map_coordinates(
        image.astype(np.float64), coords, order=order, mode="constant", cval=fill
    )
    return out.reshape(out_shape)


def resample_displacement_ref(
    image,
    displacement,
    *,
    out_to_world,
    world_to_image,
    field_from_out=None,
    out_shape=None,
    order=1,
    fill=0.0,
) -> np.ndarray:
    """value(q) = interp(image, W (O q + u(F q))); u interpolated with mode='nearest'."""
    disp = np.asarray(displacement, dtype=np.float64)
    if out_shape is None:
        out_shape = disp.shape[:3]
    q = index_grid(out_shape)
    p = apply_matrix(out_to_world, q)
    if field_from_out is None:
        u = disp.reshape(-1, 3).T
    else:
        fc = apply_matrix(field_from_out, q)
        u = np.stack(
            [ndi.map_coordinates(disp[..., c], fc, order=1, mode="nearest") for c in range(3)]
        )
    coords = apply_matrix(world_to_image, p + u)
    out = ndi.map_coordinates(
        image.astype(np.float64), coords, order=order, mode="constant", cval=fill
    )
    return out.reshape(out_shape)


def affine_moments_ref(image, gradients, reference, mask, matrix, valid_min) -> np.ndarray:
    """The 42 sums of ops.affine_moments, from map_coordinates samples and numpy sums."""
    shape = reference.shape
    q = index_grid(shape)
    coords = apply_matrix(matrix, q)
    w = ndi.map_coordinates(image.astype(np.float64), coords, order=1, mode="constant", cval=-1e30)
    g = np.stack(
        [
            ndi.map_coordinates(gc.astype(np.float64), coords, order=1, mode="constant", cval=0.0)
            for gc in gradients
        ]
    )
    keep = w >= valid_min
    if mask is not None:
        keep &= mask.ravel() != 0
    r = reference.ravel().astype(np.float64)[keep]
    w, g, q = w[keep], g[:, keep], q[:, keep]
    out = [r.size, r.sum(), w.sum(), (r * r).sum(), (w * w).sum(), (r * w).sum()]
    for a in (r, w, np.ones_like(r)):
        out += list((g * a).sum(axis=1))
        out += list(((g * a) @ q.T).ravel())
    return np.asarray(out)


def gradient_ref(image, spacing) -> np.ndarray:
    """np.gradient(edge_order=1) per axis, zeros along axes of length 1; (z, y, x, 3)."""
    img = np.asarray(image, dtype=np.float64)
    comps = []
    for ax in range(3):
        if img.shape[ax] < 2:
            comps.append(np.zeros_like(img))
        else:
            comps.append(np.gradient(img, float(spacing[ax]), axis=ax, edge_order=1))
    return np.stack(comps, axis=-1)


def smooth_ref(array, sigma_mm, spacing, *, truncate=3.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter in float64, mode='nearest', sigma_mm / spacing per axis."""
    sig = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (3,)) / np.asarray(spacing, float)
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 4:
        sig = np.append(sig, 0.0)
    return ndi.gaussian_filter(arr, sigma=sig, mode="nearest", truncate=truncate)


# --- B-splines and metrics --------------------------------------------------------------------

# Cubic B-spline basis pieces as polynomials in f (highest power first), B_0..B_3.
BSPLINE_POLYS = [
    np.array([-1.0, 3.0, -3.0, 1.0]) / 6.0,
    np.array([3.0, -6.0, 0.0, 4.0]) / 6.0,
    np.array([-3.0, 3.0, 3.0, 1.0]) / 6.0,
    np.array([1.0, 0.0, 0.0, 0.0]) / 6.0,
]


def bspline_basis_ref(f, derivative=0):
    """(4, ...) B_l^(derivative)(f) for l = 0..3."""
    return np.stack(
        [
            np.polyval(np.polyder(p, derivative) if derivative else p, np.asarray(f, float))
            for p in BSPLINE_POLYS
        ]
    )


def bspline_to_dense_ref(coeffs, spacing_vox, out_shape):
    """u(k,j,i) = sum_{l,m,n} B_l(fz) B_m(fy) B_n(fx) C[k//tz+l, j//ty+m, i//tx+n] (float64)."""
    tz, ty, tx = spacing_vox
    k, j, i = np.meshgrid(*[np.arange(n) for n in out_shape], indexing="ij")
    bz, by, bx = (
        bspline_basis_ref((k % tz) / tz),
        bspline_basis_ref((j % ty) / ty),
        bspline_basis_ref((i % tx) / tx),
    )
    c = np.asarray(coeffs, np.float64)
    out = np.zeros(tuple(out_shape) + (3,))
    for l in range(4):
        for m in range(4):
            for n in range(4):
                w = bz[l] * by[m] * bx[n]
                out += w[..., None] * c[k // tz + l, j // ty + m, i // tx + n]
    return out


def bending_energy_ref(coeffs, spacing_vox, voxel_spacing_mm):
    """Bending energy at the interior control points, loops over points and the 27 neighbours,
    derivatives of the basis polynomials at f = 0 (the control point sits at B_1's centre)."""
    c = np.asarray(coeffs, np.float64)
    h = [t * s for t, s in zip(spacing_vox, voxel_spacing_mm)]
    b = [bspline_basis_ref(0.0, d)[:3] for d in range(3)]  # offsets -1, 0, +1 around the point
    orders = [
        ((2, 0, 0), 1),
        ((0, 2, 0), 1),
        ((0, 0, 2), 1),
        ((1, 1, 0), 2),
        ((1, 0, 1), 2),
        ((0, 1, 1), 2),
    ]
    cz, cy, cx = c.shape[:3]
    total = 0.0
    for a in range(1, cz - 1):
        for bb in range(1, cy - 1):
            for cc in range(1, cx - 1):
                nb = c[a - 1 : a + 2, bb - 1 : bb + 2, cc - 1 : cc + 2]  # (3, 3, 3, 3)
                for (dz, dy, dx), wt in orders:
                    w = (
                        (b[dz][:, None, None] / h[0] ** dz)
                        * (b[dy][None, :, None] / h[1] ** dy)
                        * (b[dx][None, None, :] / h[2] ** dx)
                    )
                    v = np.tensordot(w, nb, axes=3)
                    total += wt * float(v @ v)
    return total / ((cz - 2) * (cy - 2) * (cx - 2))


def _mask_or_all(reference, mask):
    return np.ones(reference.shape, bool) if mask is None else np.asarray(mask) != 0


def ssd_ref(reference, warped, mask=None):
    m = _mask_or_all(reference, mask)
    d = warped.astype(np.float64)[m] - reference.astype(np.float64)[m]
    return float(np.mean(d * d))


def ncc_ref(reference, warped, mask=None):
    m = _mask_or_all(reference, mask)
    return -float(np.corrcoef(reference.astype(np.float64)[m], warped.astype(np.float64)[m])[0, 1])


def lncc_ref(reference, warped, radius_vox, mask=None, eps=1e-5):
    """-mean over the mask of local CC² with box windows clipped at the border and restricted
    to the mask (window sums via scipy.ndimage.uniform_filter with zero padding)."""
    m = _mask_or_all(reference, mask).astype(np.float64)
    size = [2 * r + 1 for r in radius_vox]
    vol = float(np.prod(size))

    def box(x):
        return ndi.uniform_filter(x, size=size, mode="constant", cval=0.0) * vol

    r = reference.astype(np.float64)
    w = warped.astype(np.float64)
    n = box(m)
    sr, sw = box(m * r), box(m * w)
    srr, sww, srw = box(m * r * r), box(m * w * w), box(m * r * w)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = srw - sr * sw / n
        vr = np.maximum(srr - sr * sr / n, 0)
        vw = np.maximum(sww - sw * sw / n, 0)
        den = vr * vw
        cc2 = np.where(den > eps, cross * cross / den, 0.0)
    sel = m > 0
    return -float(cc2[sel].mean())


def mattes_mi_ref(
    reference, warped, bins=32, ref_range=(-1000.0, 400.0), warped_range=(-1000.0, 400.0), mask=None
):
    """-MI with a numpy joint histogram: box window on the reference bins, cubic B-spline window
    (4 bins) on the warped image's continuous bin coordinate; see ctreg.ops.mattes_mi."""
    m = _mask_or_all(reference, mask)
    r = np.clip(reference.astype(np.float64)[m], *ref_range)
    w = np.clip(warped.astype(np.float64)[m], *warped_range)
    a = np.minimum(
        ((r - ref_range[0]) / (ref_range[1] - ref_range[0]) * bins).astype(int), bins - 1
    )
    x = 1.0 + (w - warped_range[0]) / (warped_range[1] - warped_range[0]) * (bins - 3)
    joint = np.zeros((bins, bins))
    for b in range(bins):  # beta3(x - b) for every bin b, the definition of the Parzen window
        t = np.abs(x - b)
        beta = np.where(
            t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, np.where(t < 2, (2 - t) ** 3 / 6, 0.0)
        )
        np.add.at(joint[:, b], a, beta)
    p = joint / m.sum()
    pr = p.sum(axis=1, keepdims=True)
    pw = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return -float(np.sum(p[nz] * np.log(p[nz] / (pr @ pw)[nz])))


# --- Numba field kernels ----------------------------------------------------------------------
# Fields are (z, y, x, 3) with components (dz, dy, dx) in mm along the array axes; grid point
# (k, j, i) sits at mm (k*sz, j*sy, i*sx).  Interpolation: map_coordinates(order=1, 'nearest').


def field_at_index_positions(field, coords):
    """Trilinear value of ``field`` (z, y, x, 3) at index positions ``coords`` (3, ...),
    positions clamped to the grid (mode='nearest')."""
    f = np.asarray(field, dtype=np.float64)
    return np.stack(
        [ndi.map_coordinates(f[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=-1
    )


def grid_index(shape):
    """(3, z, y, x) float64 array of the index coordinates of every grid point."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def compose_fields_ref(outer, inner, spacing):
    """w(p) = inner(p) + outer(p + inner(p))."""
    s = np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)
    inner64 = np.asarray(inner, dtype=np.float64)
    coords = grid_index(inner.shape[:3]) + np.moveaxis(inner64, -1, 0) / s
    return inner64 + field_at_index_positions(outer, coords)


def exp_field_ref(velocity, spacing, max_step_vox=0.5):
    """Scaling and squaring with N chosen so that max |v| in voxels / 2^N <= max_step_vox."""
    v = np.asarray(velocity, dtype=np.float64)
    norm_vox = np.sqrt(((v / np.asarray(spacing, dtype=np.float64)) ** 2).sum(-1)).max()
    n = 0
    while norm_vox / 2.0**n > max_step_vox:
        n += 1
    u = v / 2.0**n
    for _ in range(n):
        u = compose_fields_ref(u, u, spacing)
    return u


def jacobian_determinant_ref(displacement, spacing):
    """det(I + grad u) with np.gradient (central inside, one-sided at the borders)."""
    u = np.asarray(displacement, dtype=np.float64)
    jac = np.empty(u.shape[:3] + (3, 3))
    for a in range(3):
        grads = np.gradient(u[..., a], *[float(h) for h in spacing], edge_order=1)
        for b in range(3):
            jac[..., a, b] = grads[b] + (1.0 if a == b else 0.0)
    return np.linalg.det(jac)


def invert_field_ref(displacement, spacing, iterations=20, tol_mm=1e-3):
    """Fixed point v <- -u(p + v(p)) from v = -u, at most ``iterations`` evaluations."""
    s = np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)
    idx = grid_index(displacement.shape[:3])
    v = -np.asarray(displacement, dtype=np.float64)
    for _ in range(iterations - 1):
        new = -field_at_index_positions(displacement, idx + np.moveaxis(v, -1, 0) / s)
        change = np.sqrt(((new - v) ** 2).sum(-1)).max()
        v = new
        if change <= tol_mm:
            break
    return v


def resample_field_ref(field, spacing, out_shape, out_spacing):
    """Value of ``field`` at mm (k*oz, j*oy, i*ox) of the output grid, border clamp."""
    ratio = np.asarray(out_spacing, dtype=np.float64) / np.asarray(spacing, dtype=np.float64)
    return field_at_index_positions(field, grid_index(out_shape) * ratio.reshape(3, 1, 1, 1))


def demons_forces_ref(
    reference,
    warped,
    reference_gradient,
    warped_gradient,
    mask=None,
    kind="symmetric",
    max_step_mm=2.0,
    spacing=None,
):
    """du = -diff J / (|J|^2 + diff^2 / K), K = mean squared spacing; clip; zero off mask."""
    r = np.asarray(reference, dtype=np.float64)
    diff = np.asarray(warped, dtype=np.float64) - r
    gw = np.asarray(warped_gradient, dtype=np.float64)
    jac = (
        0.5 * (np.asarray(reference_gradient, dtype=np.float64) + gw) if kind == "symmetric" else gw
    )
    norm = 1.0 if spacing is None else float(np.mean(np.square(spacing)))
    den = (jac**2).sum(-1) + diff**2 / norm
    ok = den > 1e-12
    du = np.zeros(r.shape + (3,))
    du[ok] = (-diff[ok] / den[ok])[:, None] * jac[ok]
    length = np.sqrt((du**2).sum(-1))
    big = length > max_step_mm
    du[big] *= (max_step_mm / length[big])[:, None]
    inside = np.ones(r.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    du[~inside] = 0.0
    return du, float(np.mean(diff[inside] ** 2))


# --- masks ------------------------------------------------------------------------------------


def body_mask_morphology_ref(tissue: np.ndarray) -> np.ndarray:
    """The body from its tissue voxels as first written: open in-plane, largest component
    (``ctreg.masks._largest_component``, unchanged), binary_propagation back into the tissue,
    binary_fill_holes slice by slice."""
    from ctreg.masks import _largest_component

    st = np.zeros((1, 3, 3), bool)
    st[0] = ndi.generate_binary_structure(2, 1)
    core = _largest_component(ndi.binary_opening(tissue, structure=st, iterations=1))
    if not core.any():
        core = _largest_component(tissue)
    body = ndi.binary_propagation(core, mask=tissue)
    return np.stack([fill_holes_one_side_ref(body[k]) for k in range(body.shape[0])])


def fill_holes_one_side_ref(plane: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """One slice, region by region: a 4-connected background region is outside the body when
    it touches at least two of the four sides of the slice (the air around a patient), else it
    is filled (a hole, or a lung cut by the field of view).  With ``valid``, a region pixel next
    to an invalid pixel touches the side in its direction from the centre of the valid pixels
    (pixel by pixel, the larger of the row and column offsets); invalid pixels stay as they are."""
    if valid is None:
        valid = np.ones_like(plane)
    labels, n = ndi.label(~plane & valid)
    out = plane.copy()
    rows, cols = np.nonzero(valid)
    cy, cx = rows.mean(), cols.mean()
    h, w = plane.shape
    for lab in range(1, n + 1):
        region = labels == lab
        touched = {
            side
            for side, edge in enumerate((region[0], region[-1], region[:, 0], region[:, -1]))
            if edge.any()
        }
        for y, x in zip(*np.nonzero(region)):
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and not valid[ny, nx]:
                    dy, dx = y - cy, x - cx
                    if abs(dy) >= abs(dx):
                        touched.add(0 if dy < 0 else 1)
                    else:
                        touched.add(2 if dx < 0 else 3)
        if len(touched) < 2:
            out |= region
    return out
