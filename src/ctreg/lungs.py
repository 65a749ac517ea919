"""Automatic lung segmentation of chest CT: ``segment_lungs(volume) -> LungSegmentation``.

The method (classical, no training; ~0.5 s for 512x512x300 on 2 cores):

1. **Coarse grid.** The scan is subsampled by integer strides to about ``coarse_mm`` (2.5 mm).
   All morphology runs there.
2. **Body.** Tissue denser than -500 HU, its in-plane opened core's 3-D component, holes filled
   slice by slice (as :func:`ctreg.masks.body_mask`, but on the coarse grid), or the caller's
   ``body`` mask.
3. **Air inside the body** (< ``threshold_hu``, -320 HU), connected components (6-connectivity):
   the largest and, when it holds at least 10 % of the largest's volume, the second (the two
   lungs, or both lungs joined by the airways).  Bowel gas and small specks are dropped.
4. **Trachea.** Tracked slice by slice from the top of the lungs downwards: a small
   (<= 8 cm^2) air blob near the body's left-right centre, followed while one blob overlaps the
   previous one and stays small; it stops at the carina (split) or where it joins a lung.  The
   tracked trachea is removed; the main bronchi inside the hilum stay (as in most reference
   masks).
5. **Vessels inside the lungs.** One 3-D closing (3x3x3) and slice-wise filling of holes up to
   ``max_hole_cm2`` (vessels, airway walls, nodules) put vessels inside the lung mask, as in
   reference masks; the mediastinum (a larger hole) is never filled.
6. **Full-resolution boundary.** The coarse mask is expanded to the scan's grid; in a thin band
   of one coarse voxel (3x3x3) on each side of its boundary each voxel is re-decided at full
   resolution by the threshold, so the pleural boundary is exact to a voxel, not to a coarse cell.

Checks (``check=True``): an empty result raises :class:`LungMaskError` with code
``LungMask.Empty``; a volume outside [``min_ml``, ``max_ml``] (0.3 and 12 L) or a mask that
covers most of the scan's side border (air around the patient, no body) raises code
``LungMask.Absurd``; a ``body`` mask on another grid raises code ``LungMask.GridMismatch``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi

from ._checks import mask_on_grid
from .errors import CTRegError
from .masks import (
    BODY_THRESHOLD_HU,
    _IN_PLANE,
    _expand,
    _fill_holes_in_plane,
    _largest_component,
    _open_in_plane,
    _reconstruct,
)
from .volume import Volume

__all__ = [
    "LungMaskError",
    "LungSegmentation",
    "segment_lungs",
    "check_mask_grid",
    "LUNG_AIR_THRESHOLD_HU",
]

#: Air threshold of the lungs (Hu, Hoffman & Reinhardt, IEEE TMI 2001: -320 HU separates lung
#: from chest wall).  -400 HU (``ctreg.masks``) misses dense exhale lung: on EMPIRE10-01's exhale
#: scan 21 % of the expert mask is above -400 HU and 3 % above -320 HU.
LUNG_AIR_THRESHOLD_HU = -320.0


class LungMaskError(CTRegError, ValueError):
    """A lung (or body) mask is unusable.  ``code`` is stable: ``LungMask.Empty``,
    ``LungMask.Absurd`` or ``LungMask.GridMismatch``."""

    code = "LungMask.Empty"
    codes = ("LungMask.Empty", "LungMask.Absurd", "LungMask.GridMismatch")

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code)


def check_mask_grid(mask, volume: Volume, name: str = "mask") -> np.ndarray:
    """``mask`` as a C-contiguous bool array on ``volume``'s grid, or :class:`LungMaskError`
    with code ``LungMask.GridMismatch`` when its shape differs from the image's."""
    return mask_on_grid(
        name,
        mask,
        volume.shape,
        to_bool=True,
        mismatch=lambda msg: LungMaskError(msg, "LungMask.GridMismatch"),
    )


@dataclass(eq=False)
class LungSegmentation:
    """Result of :func:`segment_lungs`.

    Attributes
    ----------
    mask : (z, y, x) bool on the volume's grid: both lungs with their vessels, without the trachea.
    volume_ml : lung volume in millilitres.
    left_ml, right_ml : volumes of the patient's left and right lung (None where the two could
        not be separated); estimated on the coarse grid and scaled to ``volume_ml``.
    trachea_ml : volume of the trachea that was found and removed (0 when none was found).
    method : short description of the method and its parameters.
    notes : what happened that a user should know (fallbacks, splits, removed parts).
    seconds : wall time of the segmentation.
    timings : seconds per step (coarse, body, air, trachea, vessels, sides, refine).
    """

    mask: np.ndarray = field(repr=False)
    volume_ml: float
    left_ml: float | None = None
    right_ml: float | None = None
    trachea_ml: float = 0.0
    method: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _dilate_cube(m: np.ndarray) -> np.ndarray:
    """Binary dilation by a 3x3x3 cube (separable: three 3-tap ORs), outside counts as unset."""
    out = m.copy()
    for ax in range(3):
        src = out.copy()
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(1, None), slice(None, -1)
        out[tuple(lo)] |= src[tuple(hi)]
        out[tuple(hi)] |= src[tuple(lo)]
    return out


def _erode_cube(m: np.ndarray) -> np.ndarray:
    """Binary erosion by a 3x3x3 cube; outside the array counts as set (``border_value=1``)."""
    return ~_dilate_cube(~m)


def _factors(spacing, target_mm: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(target_mm / s))) for s in np.asarray(spacing, float))  # type: ignore[return-value]


def _refine_band(
    out: np.ndarray,
    band: np.ndarray,
    f,
    a: np.ndarray,
    valid: np.ndarray | None,
    threshold_hu: float,
) -> None:
    """Decide every full-resolution voxel of the coarse cells in ``band`` by ``a < threshold_hu``
    (and ``valid``), in place in ``out``; touches only those voxels."""
    kz, jy, ix = np.nonzero(band)
    if kz.size == 0:
        return
    nz, ny, nx = a.shape
    fz, fy, fx = f
    oz, oy, ox = np.meshgrid(np.arange(fz), np.arange(fy), np.arange(fx), indexing="ij")
    off = (oz * (ny * nx) + oy * nx + ox).reshape(-1)
    base = (kz.astype(np.int64) * fz) * (ny * nx) + (jy.astype(np.int64) * fy) * nx + ix * fx
    flat = base[:, None] + off[None, :]
    partial = [(kz, fz, nz, oz), (jy, fy, ny, oy), (ix, fx, nx, ox)]
    if any(n % q for _, q, n, _ in partial):  # cells cut by the array's far edges
        ok = np.ones(flat.shape, bool)
        for idx, q, n, o in partial:
            if n % q:
                ok &= (idx[:, None] * q + o.reshape(-1)[None, :]) < n
        flat = flat[ok]
    else:
        flat = flat.reshape(-1)
    lung = a.reshape(-1)[flat] < threshold_hu
    if valid is not None:
        lung &= valid.reshape(-1)[flat]
    out.reshape(-1)[flat] = lung


def _coarse_body(small: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    tissue = small > BODY_THRESHOLD_HU
    if valid is not None:
        tissue &= valid
    if not tissue.any():
        return tissue
    core = _largest_component(_open_in_plane(tissue))
    if not core.any():
        core = _largest_component(tissue)
    body = _fill_holes_in_plane(_reconstruct(core, tissue), valid)
    if valid is not None:
        body &= valid
    return body


def _fill_small_holes_in_plane(mask: np.ndarray, max_voxels: int) -> np.ndarray:
    """Fill, slice by slice, background regions not reaching the slice's edge of at most
    ``max_voxels`` voxels."""
    labels, n = ndi.label(~mask, structure=_IN_PLANE)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    fill = sizes <= max_voxels
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        fill[edge] = False
    fill[0] = False
    return mask | fill[labels]


def _track_trachea(
    mask: np.ndarray,
    order: np.ndarray,
    cell_mm2: float,
    x_centre: float,
    x_of_col: np.ndarray,
    max_area_mm2: float = 800.0,
    max_offset_mm: float = 30.0,
    search_slices: int = 12,
) -> np.ndarray:
    """(z, y, x) bool trachea on the coarse grid (see the module docstring, step 4).

    ``order``: slice indices from superior to inferior; ``x_of_col``: world x of every column
    (axial slices assumed; x in LPS mm); ``x_centre``: the body's left-right centre."""
    trachea = np.zeros_like(mask)
    rows = [k for k in order if mask[k].any()]
    if not rows:
        return trachea
    prev = None
    prev_area = 0.0
    for step, k in enumerate(rows):
        lab, n = ndi.label(mask[k])
        if n == 0:
            break
        sizes = np.bincount(lab.ravel())[1:] * cell_mm2
        if prev is None:
            if step >= search_slices:
                break
            best = None
            for c in range(1, n + 1):
                if sizes[c - 1] > max_area_mm2:
                    continue
                cols = np.nonzero(lab == c)[1]
                off = abs(float(x_of_col[cols].mean()) - x_centre)
                if off <= max_offset_mm and (best is None or off < best[0]):
                    best = (off, c)
            if best is None:
                continue
            blob = lab == best[1]
        else:
            grown = ndi.binary_dilation(prev, iterations=1)
            hit = np.unique(lab[grown & (lab > 0)])
            if hit.size != 1:
                break  # carina (two bronchi) or lost
            c = int(hit[0])
            area = float(sizes[c - 1])
            if area > max_area_mm2 or area > 2.0 * max(prev_area, 150.0):
                break  # joins a lung
            blob = lab == c
        trachea[k] = blob
        prev = blob
        prev_area = float(blob.sum()) * cell_mm2
    return trachea


def segment_lungs(
    volume: Volume,
    *,
    body: np.ndarray | None = None,
    threshold_hu: float = LUNG_AIR_THRESHOLD_HU,
    coarse_mm: float = 2.5,
    max_hole_cm2: float = 12.0,
    remove_trachea: bool = True,
    check: bool = True,
    min_ml: float = 300.0,
    max_ml: float = 12000.0,
) -> LungSegmentation:
    """Segment both lungs of a chest CT in HU (see the module docstring for the method).

    Parameters
    ----------
    volume : the scan (HU); ``volume.valid`` False voxels are never lung.
    body : optional (z, y, x) bool body mask on the volume's grid (default: found automatically).
    threshold_hu : air threshold (lung parenchyma is darker).
    coarse_mm : spacing of the grid on which the morphology runs.
    max_hole_cm2 : in-plane holes up to this area are filled (vessels inside the lungs).
    remove_trachea : track and remove the trachea.
    check, min_ml, max_ml : raise :class:`LungMaskError` for an empty or absurd result.

    Returns
    -------
    LungSegmentation
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    tick = [t0]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - tick[0]
        tick[0] = now

    if not isinstance(volume, Volume):
        raise TypeError(
            f"segment_lungs: volume must be a ctreg.Volume, got {type(volume).__name__}"
        )
    notes: list[str] = []
    f = _factors(volume.spacing, coarse_mm)
    sl = tuple(slice(None, None, x) for x in f)
    a = volume.array
    small = np.ascontiguousarray(a[sl])
    valid_small = None if volume.valid is None else volume.valid[sl]
    cspacing = volume.spacing * np.asarray(f)
    cell_ml = float(np.prod(cspacing)) / 1000.0
    lap("coarse")
    if body is None:
        body_small = _coarse_body(small, valid_small)
    else:
        body_small = check_mask_grid(body, volume, "body")[sl]
    if not body_small.any():
        if check:
            raise LungMaskError(
                f"segment_lungs: no body found (no tissue above "
                f"{BODY_THRESHOLD_HU:.0f} HU); is the image in HU?",
                "LungMask.Empty",
            )
        return LungSegmentation(
            np.zeros(volume.shape, bool),
            0.0,
            method="none",
            notes=["no body found"],
            seconds=time.perf_counter() - t0,
        )

    lap("body")
    air = (small < threshold_hu) & body_small
    if valid_small is not None:
        air &= valid_small
    labels, n = ndi.label(air)
    if n == 0:
        if check:
            raise LungMaskError(
                f"segment_lungs: no air-like voxels (< {threshold_hu:.0f} HU) inside "
                "the body: no lungs in the field of view",
                "LungMask.Empty",
            )
        return LungSegmentation(
            np.zeros(volume.shape, bool),
            0.0,
            method="none",
            notes=["no air inside the body"],
            seconds=time.perf_counter() - t0,
        )
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ranked = np.argsort(sizes)[::-1]
    keep = [int(ranked[0])]
    if n >= 2 and sizes[ranked[1]] >= 0.1 * sizes[ranked[0]]:
        keep.append(int(ranked[1]))
    dropped_ml = (sizes.sum() - sizes[keep].sum()) * cell_ml
    if dropped_ml > 1.0:
        notes.append(
            f"dropped {dropped_ml:.0f} mL of other air inside the body (bowel gas, specks)"
        )
    m = np.isin(labels, keep)

    lap("air")
    # trachea (axial slices: world z along the slice axis)
    trachea = np.zeros_like(m)
    trachea_zone = trachea
    direction = volume.direction
    axial = abs(direction[2, 0]) > 0.9
    caff = volume.affine @ np.diag([*f, 1.0])
    cols = np.arange(m.shape[2], dtype=np.float64)
    x_of_col = caff[0, 2] * cols + caff[0, 3] + caff[0, 1] * (m.shape[1] / 2)
    bx = np.nonzero(body_small.any(axis=(0, 1)))[0]
    x_centre = float(x_of_col[bx].mean())
    if remove_trachea and axial:
        order = np.arange(m.shape[0])
        if direction[2, 0] > 0:  # index 0 inferior: walk from the last slice
            order = order[::-1]
        trachea = _track_trachea(m, order, float(cspacing[1] * cspacing[2]), x_centre, x_of_col)
        if trachea.any():
            trachea_zone = ndi.binary_dilation(trachea, structure=_IN_PLANE)
            m &= ~trachea_zone
            # pieces cut off from the lungs by the removal (e.g. the larynx above the FOV) go too
            lab2, n2 = ndi.label(m)
            if n2 > 1:
                s2 = np.bincount(lab2.ravel())
                s2[0] = 0
                big = s2 >= 0.1 * s2.max()
                m = big[lab2]
            notes.append(
                f"removed the trachea ({int(trachea.any(axis=(1, 2)).sum())} coarse slices)"
            )
        else:
            notes.append(
                "no trachea found in the upper slices (cut by the field of view or joined)"
            )
    elif remove_trachea:
        notes.append("slices are not axial: trachea removal skipped")

    lap("trachea")
    # vessels: one closing, then small in-plane holes
    m = _erode_cube(_dilate_cube(m)) | m
    m &= body_small
    if trachea.any():
        m &= ~trachea
    m = _fill_small_holes_in_plane(m, int(max_hole_cm2 * 100.0 / (cspacing[1] * cspacing[2])))

    lap("vessels")
    # left / right (LPS: +x is the patient's left)
    left_c: int | None = None
    right_c: int | None = None
    lab3, n3 = ndi.label(m)
    if n3 >= 2:
        s3 = np.bincount(lab3.ravel())
        s3[0] = 0
        two = np.argsort(s3)[::-1][:2]
        if s3[two[1]] >= 0.1 * s3[two[0]]:
            cx = []
            for c in two:
                idx = np.argwhere(lab3 == c).mean(axis=0)
                cx.append(float((volume.affine @ np.diag([*f, 1.0]))[0, :3] @ idx))
            li = int(np.argmax(cx))
            left_c, right_c = int(s3[two[li]]), int(s3[two[1 - li]])
    if left_c is None and axial and abs(direction[0, 2]) > 0.9 and m.any():
        # one connected mask (bronchi, anterior junction): split each slice at the column with
        # the fewest lung voxels within 60 mm of the body's left-right centre
        colsum = m.sum(axis=1)  # (z, x)
        ic = int(np.argmin(np.abs(x_of_col - x_centre)))
        half = max(1, int(60.0 / cspacing[2]))
        lo, hi = max(0, ic - half), min(m.shape[2], ic + half + 1)
        split = lo + np.argmin(colsum[:, lo:hi], axis=1)  # (z,)
        before = np.arange(m.shape[2])[None, :] < split[:, None]
        n_before, n_after = int(colsum[before].sum()), int(colsum[~before].sum())
        if min(n_before, n_after) >= 0.1 * max(n_before, n_after):
            left_c, right_c = (n_after, n_before) if caff[0, 2] > 0 else (n_before, n_after)
            notes.append(
                "the lungs are connected (airways or anterior junction): left/right "
                "split per slice at the column with the fewest lung voxels"
            )
    if left_c is None:
        notes.append("left/right volumes not split (one lung, or not an axial scan)")

    lap("sides")
    # full-resolution boundary in a one-cell band
    core = _erode_cube(m)
    ring = _dilate_cube(m) & body_small
    if trachea.any():
        ring &= ~trachea_zone
    out = _expand(core, f, volume.shape)
    _refine_band(out, ring & ~core, f, a, volume.valid, threshold_hu)

    lap("refine")
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    volume_ml = float(np.count_nonzero(out)) * voxel_ml
    left_ml = right_ml = None
    if left_c is not None and right_c is not None:
        tot = left_c + right_c
        left_ml, right_ml = volume_ml * left_c / tot, volume_ml * right_c / tot
    method = (
        f"threshold {threshold_hu:.0f} HU in the body on a {coarse_mm:g} mm grid "
        f"(strides {f}), 2 largest air components, trachea tracking, 3x3x3 closing + "
        f"in-plane holes <= {max_hole_cm2:g} cm2, full-resolution band"
    )
    res = LungSegmentation(
        out,
        volume_ml,
        left_ml,
        right_ml,
        float(trachea.sum()) * cell_ml,
        method,
        notes,
        time.perf_counter() - t0,
        timings,
    )
    if check:
        _check_result(res, volume, min_ml, max_ml)
    return res


def _check_result(res: LungSegmentation, volume: Volume, min_ml: float, max_ml: float) -> None:
    m = res.mask
    if not m.any():
        raise LungMaskError(
            "segment_lungs: the lung mask is empty: no lungs in the field of view", "LungMask.Empty"
        )
    if res.volume_ml < min_ml or res.volume_ml > max_ml:
        raise LungMaskError(
            f"segment_lungs: the lung mask holds {res.volume_ml / 1000:.2f} L; "
            f"plausible lungs hold {min_ml / 1000:g} to {max_ml / 1000:g} L "
            "(a scan without lungs or with only a sliver of them, or not in HU); "
            "pass min_ml/max_ml for partial fields of view",
            "LungMask.Absurd",
        )
    border = np.concatenate(
        [m[:, 0, :].ravel(), m[:, -1, :].ravel(), m[:, :, 0].ravel(), m[:, :, -1].ravel()]
    )
    if border.mean() > 0.5:
        raise LungMaskError(
            f"segment_lungs: the lung mask covers {100 * border.mean():.0f} % of the scan's side "
            "border: that is air around the patient, not lungs",
            "LungMask.Absurd",
        )
