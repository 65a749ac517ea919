"""The pictures' planes for ``report.html`` (:mod:`ctreg.report_html`): which array axis runs
along which patient axis, the (k, j, i) indices of the axial, coronal and sagittal planes in
radiological convention, and the pictures sampled from a result on them (numpy and scipy only;
the drawing is :mod:`ctreg.report_pictures`, the HTML :mod:`ctreg.report_html`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi

from .errors import CTRegError
from .volume import Volume

__all__ = ["PLANES", "ReportError", "before_pictures", "canonical_axes", "plane_indices"]

AIR_HU = -1000.0

PLANES = ("axial", "coronal", "sagittal")


class ReportError(CTRegError):
    """The quality report could not be made from what it was given."""

    code = "Report.Input"
    codes = ("Report.Input", "Report.Grid", "Report.Plane")


# -- orientation ----------------------------------------------------------------------------


def canonical_axes(affine) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Which array axis runs along each patient axis, and whether it runs backwards.

    Returns ``(perm, flip)``: canonical axis t (0: inferior -> superior, world +z; 1: anterior ->
    posterior, world +y; 2: right -> left, world +x; LPS) is array axis ``perm[t]``, reversed when
    ``flip[t]``.  So ``np.flip(np.transpose(a, perm), [t for t in range(3) if flip[t]])`` is the
    array in axial LPS order (a view, no copy).  Each array axis goes to the patient axis its
    direction is closest to (slightly oblique scans: the nearest axis).
    """
    aff = np.asarray(affine, dtype=np.float64)
    d = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)[None, :]  # column c: world dir of axis c
    perm = [-1, -1, -1]
    flip = [False, False, False]
    used_axes: set[int] = set()
    # greedy on |cosine|, largest first: a proper assignment also for 45-degree ties
    order = sorted(((abs(d[w, c]), w, c) for w in range(3) for c in range(3)), reverse=True)
    for _, w, c in order:
        t = 2 - w  # world x -> canonical 2, y -> 1, z -> 0
        if perm[t] != -1 or c in used_axes:
            continue
        perm[t] = c
        flip[t] = bool(d[w, c] < 0)
        used_axes.add(c)
    return tuple(perm), tuple(flip)  # type: ignore[return-value]


def plane_indices(volume: Volume, plane: str, centre_xyz=None) -> np.ndarray:
    """(3, H, W) float64 array indices (k, j, i) of ``volume`` for the pixels of one picture.

    ``plane``: "axial" (rows anterior -> posterior, columns right -> left), "coronal" (rows
    superior -> inferior, columns right -> left) or "sagittal" (rows superior -> inferior, columns
    anterior -> posterior), through the voxel nearest ``centre_xyz`` (world, default: the grid's
    centre).  Index the volume's array (or any array on its grid) with them to get the picture.
    """
    if plane not in PLANES:
        raise ReportError(f"plane must be one of {PLANES}, got {plane!r}", code="Report.Plane")
    perm, flip = canonical_axes(volume.affine)
    shape = volume.shape
    n = [shape[perm[t]] for t in range(3)]
    if centre_xyz is None:
        centre_idx = (np.asarray(shape, float) - 1) / 2
    else:
        centre_idx = volume.world_to_index(np.asarray(centre_xyz, float).reshape(1, 3))[0]
    # canonical position of the centre
    cpos = []
    for t in range(3):
        v = float(centre_idx[perm[t]])
        v = (n[t] - 1 - v) if flip[t] else v
        cpos.append(int(np.clip(round(v), 0, n[t] - 1)))
    # canonical (S, P, L) index grids of the picture: rows, columns, fixed axis
    if plane == "axial":  # rows P (anterior at top), cols L (patient right at left)
        rows, cols = np.arange(n[1]), np.arange(n[2])
        R, C = np.meshgrid(rows, cols, indexing="ij")
        canon = [np.full_like(R, cpos[0]), R, C]
    elif plane == "coronal":  # rows S reversed (superior at top), cols L
        rows, cols = np.arange(n[0])[::-1], np.arange(n[2])
        R, C = np.meshgrid(rows, cols, indexing="ij")
        canon = [R, np.full_like(R, cpos[1]), C]
    else:  # sagittal: rows S reversed, cols P (anterior at left)
        rows, cols = np.arange(n[0])[::-1], np.arange(n[1])
        R, C = np.meshgrid(rows, cols, indexing="ij")
        canon = [R, C, np.full_like(R, cpos[2])]
    out = np.empty((3,) + R.shape, np.float64)
    for t in range(3):
        c = canon[t]
        out[perm[t]] = (n[t] - 1 - c) if flip[t] else c
    return out


def _plane_spacing(volume: Volume, plane: str) -> tuple[float, float]:
    """(row, column) pixel size in mm of a picture."""
    perm, _ = canonical_axes(volume.affine)
    sp = volume.spacing
    s = [float(sp[perm[t]]) for t in range(3)]
    return {"axial": (s[1], s[2]), "coronal": (s[0], s[2]), "sagittal": (s[0], s[1])}[plane]


_SIDES = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}  # top, bottom, left, right


def _take(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    k, j, i = (np.rint(idx[a]).astype(np.intp) for a in range(3))
    return array[k, j, i]


def _sample_floating(floating: Volume, reference: Volume, idx_ref: np.ndarray) -> np.ndarray:
    """The floating scan at the world points of reference indices ``idx_ref`` (3, ...), linear,
    air outside its grid or data (a point whose nearest voxel has no data): the scans as they
    are, before registration.  Only the plane's points are read, never a copy of the scan."""
    shape = idx_ref.shape[1:]
    world = reference.index_to_world(idx_ref.reshape(3, -1).T)
    fidx = floating.world_to_index(world).T
    vals = ndi.map_coordinates(floating.array, fidx, order=1, mode="constant", cval=AIR_HU)
    if floating.valid is not None:
        near = np.rint(fidx).astype(np.intp)
        upper = np.asarray(floating.shape)[:, None] - 1
        inside = np.all((near >= 0) & (near <= upper), axis=0)
        ok = np.zeros(vals.shape, bool)
        ok[inside] = floating.valid[tuple(near[:, inside])]
        vals = np.where(ok, vals, AIR_HU)
    return vals.reshape(shape).astype(np.float32)


def before_pictures(reference: Volume, floating: Volume) -> dict[str, np.ndarray]:
    """Per plane, the floating scan at the reference picture's world points: the report's
    "before" pictures, which need the scans only (not the registration)."""
    return {p: _sample_floating(floating, reference, plane_indices(reference, p)) for p in PLANES}


def _planes(result, before: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Per plane: the reference, warped, before (floating at the same world points; ``before``:
    :func:`before_pictures` made earlier) pictures and the Jacobian, the warped scan's validity,
    pixel size and side letters."""
    ref: Volume = result.reference
    warped: Volume = result.warped
    if warped.shape != ref.shape:
        raise ReportError(
            f"the warped scan's grid {warped.shape} is not the reference grid {ref.shape}",
            code="Report.Grid",
        )
    kept = getattr(result, "jacobian_planes", None)  # register() keeps these, not the map
    if kept is None:
        jac = result.jacobian_determinant()
        kept = {
            p: None if jac is None else _take(np.asarray(jac), plane_indices(ref, p))
            for p in PLANES
        }
    floating = getattr(result, "floating", None)
    if before is None and floating is not None:
        before = before_pictures(ref, floating)
    out = {}
    for plane in PLANES:
        idx = plane_indices(ref, plane)
        p = {
            "reference": _take(ref.array, idx),
            "warped": _take(warped.array, idx),
            "valid": None if warped.valid is None else _take(warped.valid, idx),
            "jacobian": kept[plane],
            "spacing": _plane_spacing(ref, plane),
            "sides": _SIDES[plane],
            "before": None if before is None else before[plane],
        }
        out[plane] = p
    return out
