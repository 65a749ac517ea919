"""The last step of ``register()``: the field on the full reference grid, the floating scan
resampled there, the public (world) displacement and the Jacobian determinant, computed in slabs
of z slices (memory-lean path for clinical-size scans).

The Jacobian map is not kept (:class:`JacobianParts`): each slab's values go into its statistics
(over the grid and inside the body, the same values bit for bit as over the whole map) and into
the report's planes, and the slab buffer is reused.  That saves 4 bytes a voxel at the step's
memory peak (0.38 GiB on EMPIRE10-01); ``RegistrationResult.jacobian_determinant()`` computes
the map from the displacement when asked.

Done on the whole grid at once, this step held the frame displacement (z, y, x, 3), its world
copy and the Jacobian together: 12 + 12 + 4 bytes per voxel, 2.1 GiB for 512 x 512 x 300 on top
of both scans.  Slab by slab, the frame displacement exists only for :data:`SLAB` slices (plus
one slice on each side for the Jacobian's central differences) and is turned into world
coordinates straight into the result, so the step needs the outputs themselves (warped 4 B and
displacement 12 B per voxel) and a few MiB more.

The slabs are fixed (never the thread count's business), and every kernel is deterministic, so
the result is the same on any thread count.  Against the whole-grid computation the values
agree to float rounding (the slab's starting index enters the positions as an offset); the
Jacobian, which only reads neighbours, is the same bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import ops
from .transforms import AffineTransform, ReferenceFrame, frame_to_image_matrix
from .volume import Volume

__all__ = ["SLAB", "JacobianParts", "full_resolution"]

#: z slices per slab: 16 x 512 x 512 x 3 float32 = 48 MiB of frame displacement at a time.
SLAB = 16


def _world_matrices(
    frame: ReferenceFrame, transform: AffineTransform
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors 3x3, index affine 3x4) of ``transforms.world_displacement``: U(q) = vec @ u(q) +
    idx @ (k, j, i, 1), the public displacement of the frame displacement u at grid index q."""
    a = transform.matrix
    vec = a @ frame.direction
    idx = np.zeros((3, 4))
    idx[:, :3] = (a - np.eye(3)) @ frame.direction @ np.diag(frame.spacing)
    idx[:, 3] = (a - np.eye(3)) @ (frame.origin - transform.centre) + transform.translation
    return vec, idx


class JacobianParts:
    """The Jacobian determinant gathered slab by slab (z order): its statistics over the grid and
    inside ``body`` (:class:`ops.JacobianStatistics`), its values at ``points`` (name -> (3, ...)
    grid indices (k, j, i), rounded to the nearest voxel) and, only with ``keep_map``, the whole
    map (:attr:`map`)."""

    def __init__(self, shape, body=None, points=None, *, keep_map: bool = False, slab: int = SLAB):
        nz, ny, nx = (int(s) for s in shape)
        self.map = np.empty((nz, ny, nx), np.float32) if keep_map else None
        rows = min(nz, slab)
        self._buf = None if keep_map else np.empty((rows, ny, nx), np.float32)
        if body is not None and tuple(np.shape(body)) != (nz, ny, nx):
            raise ValueError(f"body has shape {np.shape(body)}, the grid is {(nz, ny, nx)}")
        self._body = body
        self._ones = None if body is not None else np.ones((rows, ny, nx), np.uint8)
        self._stats = ops.JacobianStatistics()
        # name -> (the points' shape, their (k, j, i) sorted by k, that order, the values)
        self._gather: dict[str, tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]] = {}
        upper = np.array([nz, ny, nx])[:, None]
        for name, idx in (points or {}).items():
            q = np.rint(np.asarray(idx, np.float64)).astype(np.intp).reshape(3, -1)
            if np.any(q < 0) or np.any(q >= upper):
                raise ValueError(f"points {name!r} fall outside the grid {(nz, ny, nx)}")
            order = np.argsort(q[0], kind="stable")
            vals = np.empty(q.shape[1], np.float32)
            self._gather[name] = (tuple(np.shape(idx)[1:]), q[:, order], order, vals)

    def buffer(self, k0: int, k1: int) -> tuple[np.ndarray, int]:
        """(array, the grid slice its first slice holds) to write slices [k0, k1) into."""
        if self.map is not None:
            return self.map, 0
        assert self._buf is not None and k1 - k0 <= self._buf.shape[0]
        return self._buf, k0

    def add(self, k0: int, k1: int) -> None:
        """Take slices [k0, k1), just written into :meth:`buffer` (slabs in z order)."""
        buf, first = self.buffer(k0, k1)
        j = buf[k0 - first : k1 - first]
        if self._body is not None:
            self._stats.add(j, self._body[k0:k1])
        else:
            assert self._ones is not None
            self._stats.add(j, self._ones[: k1 - k0])
        for _, q, order, vals in self._gather.values():
            a, b = np.searchsorted(q[0], [k0, k1])
            vals[order[a:b]] = j[q[0, a:b] - k0, q[1, a:b], q[2, a:b]]

    def statistics(self) -> tuple[dict, dict]:
        """(over the grid, inside the body), as ``ops.jacobian_statistics_pair`` of the map."""
        return self._stats.result()

    def values(self) -> dict[str, np.ndarray]:
        """name -> the Jacobian at those points (float32, in the points' shape)."""
        return {n: vals.reshape(shape) for n, (shape, _, _, vals) in self._gather.items()}


def full_resolution(
    ref: Volume,
    flt: Volume,
    frame: ReferenceFrame,
    transform: AffineTransform,
    u: np.ndarray | None,
    u_spacing,
    box,
    *,
    sentinel: float,
    invalid_below: float,
    fill_hu: float,
    body=None,
    points=None,
    keep_jacobian: bool = False,
    slab: int = SLAB,
    native: bool = True,
):
    """Warped floating scan and world displacement on the reference grid, and what is kept of
    the Jacobian determinant (:class:`JacobianParts`).

    Parameters
    ----------
    u : (z, y, x, 3) float32 frame displacement on the last level's grid (over the working box
        ``box``, slices of the reference grid), or None (affine only).
    u_spacing : (z, y, x) mm of ``u``'s grid.
    sentinel : value the floating scan holds where it has no data; a resampled value below
        ``invalid_below`` is invalid and set to ``fill_hu``.
    body : (z, y, x) bool mask for the Jacobian's statistics inside the body (None: everywhere).
    points : name -> (3, ...) grid indices where the Jacobian's values are kept.
    keep_jacobian : keep the whole map too (``JacobianParts.map``; 4 bytes a voxel).

    Returns
    -------
    (warped Volume, displacement (z, y, x, 3) float32 world LPS, JacobianParts)
    """
    nz, ny, nx = ref.shape
    sp = tuple(float(s) for s in ref.spacing)
    start_mm = -np.array([s.start for s in box], float) * ref.spacing
    to_index = frame_to_image_matrix(frame, transform, flt)
    vec, idx = _world_matrices(frame, transform)
    det_a = np.float32(np.linalg.det(transform.matrix))
    # One resampling for values and validity: where the floating scan has no data it holds the
    # sentinel, and a sample that draws more than ~30 % of its weight from there is invalid.
    if flt.valid is None:
        source = np.ascontiguousarray(flt.array, dtype=np.float32)
    elif flt.array.dtype == np.float32 and flt.array.ndim == 3:
        # np.where(valid, array, sentinel) in one parallel native pass (the bounds clip nothing)
        source = ops.clip_fill(flt.array, flt.valid, -np.inf, np.inf, float(np.float32(sentinel)))
    else:
        source = np.ascontiguousarray(
            np.where(flt.valid, flt.array, np.float32(sentinel)), dtype=np.float32
        )
    warped = np.empty(ref.shape, np.float32)
    displacement = np.empty(ref.shape + (3,), np.float32)
    jac = JacobianParts(ref.shape, body, points, keep_map=keep_jacobian, slab=slab)
    if u is not None and native:  # the same kernels, one native call per slab, into the outputs
        from .fullres_native import slabs_native

        valid = slabs_native(
            source,
            u,
            u_spacing,
            ref.shape,
            sp,
            start_mm,
            to_index,
            vec,
            idx,
            det_a,
            warped,
            displacement,
            jac,
            slab=slab,
            sentinel=sentinel,
            invalid_below=invalid_below,
            fill_hu=fill_hu,
        )
        del source
        return _volume(warped, ref, valid), displacement, jac
    zero = None
    for k0 in range(0, nz, slab):
        k1 = min(nz, k0 + slab)
        h0, h1 = max(0, k0 - 1), min(nz, k1 + 1)  # one halo slice each side for the Jacobian
        if u is None:
            if zero is None or zero.shape[0] != h1 - h0:
                zero = np.zeros((h1 - h0, ny, nx, 3), np.float32)
            uh = zero
        else:
            origin = start_mm + np.array([h0 * sp[0], 0.0, 0.0])
            uh = ops.resample_field(u, tuple(u_spacing), (h1 - h0, ny, nx), sp, origin_mm=origin)
        core = slice(k0 - h0, k0 - h0 + (k1 - k0))
        uc = np.ascontiguousarray(uh[core])
        out_to_frame = np.diag(list(sp) + [1.0])
        out_to_frame[0, 3] = k0 * sp[0]
        warped[k0:k1] = ops.resample_displacement(
            source, uc, out_to_world=out_to_frame, world_to_image=to_index, order=1, fill=sentinel
        )
        jh = ops.jacobian_determinant(uh, sp)
        jb, first = jac.buffer(k0, k1)
        jb[k0 - first : k1 - first] = jh[core]
        jb[k0 - first : k1 - first] *= det_a
        jac.add(k0, k1)
        idx_k = idx.copy()
        idx_k[:, 3] += idx[:, 0] * k0
        displacement[k0:k1] = ops.affine_field(uc, vec, idx_k)
    del source
    valid = warped > np.float32(invalid_below)
    np.copyto(warped, np.float32(fill_hu), where=~valid)
    return _volume(warped, ref, valid), displacement, jac


def _volume(warped: np.ndarray, ref: Volume, valid: np.ndarray) -> Volume:
    return Volume(
        warped,
        ref.affine.copy(),
        valid,
        {"source": "ctreg.register", "series_description": "registered by ctreg"},
    )
