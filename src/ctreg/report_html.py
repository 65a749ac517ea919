"""Quality report of one registration: ``report.html``, one self-contained file to check a run
by eye.

What it holds:

* pictures (PNG, embedded as base64 ``data:`` URIs, so the file can be mailed or archived alone),
  each in three planes through the centre of the reference grid (axial, coronal, sagittal):

  1. checkerboard of the reference and the floating scan, before registration (the floating scan
     sampled at the same world points, i.e. in scanner coordinates) and after (the warped scan);
  2. difference image (warped - reference, HU), before and after;
  3. Jacobian determinant of the map (log colour scale centred at 1: blue compression,
     red expansion, black folding, J <= 0);

* the figures of ``report.json``: times, Jacobian statistics, the affine, the stages and levels,
  and similarity figures computed here (NCC and mean absolute difference in the reference body,
  before and after).

Orientation: every plane is shown in radiological convention, whatever the scan's storage order:
the array axes are matched to the nearest patient axes from the affine (``canonical_axes``), so
in axial and coronal views the patient's right is on the image's left, anterior is up in axial
views, superior is up in coronal and sagittal views, anterior on the left in sagittal views.
Pixels are drawn with their true aspect ratio (mm).

The pictures are drawn with NumPy and zlib (:mod:`ctreg.report_pictures`): no plotting library.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from .report_blocks import _CSS, _e, _geometry_row, _num, _Raw, _table
from .report_planes import (
    PLANES,
    ReportError,
    _planes,
    before_pictures,
    canonical_axes,
    plane_indices,
)
from .report_pictures import (
    GRAY,
    PICTURE_CSS,
    RDBU,
    RDBU_ANCHORS,
    Figure,
    Panel,
    colorize,
    enlarge,
    linear_ticks,
    log_ticks,
    png_rgb,
)
from .report_planes import _plane_spacing, _take  # noqa: F401 (tests use them from here)
from .volume import Volume

__all__ = [
    "write_report_html",
    "before_parts",
    "report_for_run",
    "render_report_html",
    "report_figures",
    "canonical_axes",
    "plane_indices",
    "ReportError",
]

log = logging.getLogger("ctreg")

#: display window of the CT pictures (HU): lungs and soft tissue both readable
WINDOW_HU = (-1000.0, 400.0)
#: range of the difference pictures (HU), symmetric
DIFF_HU = 500.0
#: the Jacobian colour scale spans 1/JAC_SPAN .. JAC_SPAN (log scale)
JAC_SPAN = 2.0
#: about this many checkerboard tiles across the largest side of a plane
CHECKER_TILES = 8
#: at most this many voxels are sampled for the similarity figures
SAMPLE_VOXELS = 2_000_000
#: points per piece of similarity_figures' "before" sampling
_SIMILARITY_PIECE = 1 << 18


# -- pictures ---------------------------------------------------------------------------------


def _checker(shape, spacing, tile_mm: float) -> np.ndarray:
    r = (np.arange(shape[0]) * spacing[0] // tile_mm).astype(int)
    c = (np.arange(shape[1]) * spacing[1] // tile_mm).astype(int)
    return ((r[:, None] + c[None, :]) % 2).astype(bool)


def _picture(image, spacing, rgb_of) -> bytes:
    return png_rgb(enlarge(rgb_of(image), spacing))


def report_figures(result, before: dict | None = None) -> dict[str, Figure]:
    """The report's pictures: ``{"checkerboard", "difference", "jacobian"}``, each a
    :class:`~ctreg.report_pictures.Figure` of PNG panels (``.html()`` for the page).
    ``before``: :func:`before_parts` made while the result still held the floating scan."""
    planes = _planes(result, None if before is None else before.get("pictures"))
    has_before = all(p["before"] is not None for p in planes.values())
    rows = [("after", "warped")] if not has_before else [("before", "before"), ("after", "warped")]
    lo, hi = WINDOW_HU
    figs: dict[str, Figure] = {}

    def gray(img):
        return colorize(img, lo, hi, GRAY)

    # 1. checkerboard
    fig = Figure(
        "Checkerboard of the reference and the floating scan (edges should continue across "
        f"tiles after registration); window {lo:.0f} to {hi:.0f} HU"
    )
    for label, key in rows:
        row = []
        for plane in PLANES:
            p = planes[plane]
            ref = p["reference"]
            ext = max(ref.shape[0] * p["spacing"][0], ref.shape[1] * p["spacing"][1])
            board = _checker(ref.shape, p["spacing"], ext / CHECKER_TILES)
            other = "floating" if key == "before" else "warped"
            row.append(
                Panel(
                    f"{plane}, {label} registration: reference / {other}",
                    p["sides"],
                    _picture(np.where(board, ref, p[key]), p["spacing"], gray),
                )
            )
        fig.rows.append(row)
    figs["checkerboard"] = fig

    # 2. difference
    fig = Figure(
        f"Difference image, HU (clipped to +-{DIFF_HU:.0f}; should fade after registration)",
        anchors=RDBU_ANCHORS,
        ticks=linear_ticks(-DIFF_HU, DIFF_HU, np.linspace(-DIFF_HU, DIFF_HU, 5)),
        label="HU (grey: no data)",
    )
    for label, key in rows:
        row = []
        for plane in PLANES:
            p = planes[plane]
            diff = p[key].astype(np.float32) - p["reference"].astype(np.float32)
            bad = ~p["valid"] if key == "warped" and p["valid"] is not None else None
            other = "floating" if key == "before" else "warped"
            row.append(
                Panel(
                    f"{plane}, {label}: {other} - reference",
                    p["sides"],
                    _picture(
                        diff, p["spacing"], lambda d, b=bad: colorize(d, -DIFF_HU, DIFF_HU, RDBU, b)
                    ),
                )
            )
        fig.rows.append(row)
    figs["difference"] = fig

    # 3. Jacobian determinant (log scale centred at 1; black: folding)
    span = math.log(JAC_SPAN)
    fig = Figure("", anchors=RDBU_ANCHORS, ticks=log_ticks(JAC_SPAN), label="J (log scale)")
    row, n_fold = [], 0
    for plane in PLANES:
        p = planes[plane]
        if p["jacobian"] is None:
            continue
        jac = np.asarray(p["jacobian"], np.float64)
        fold = ~(jac > 0)
        n_fold += int(np.count_nonzero(fold))
        logj = np.log(np.where(fold, 1.0, jac))
        row.append(
            Panel(
                f"{plane}: Jacobian determinant",
                p["sides"],
                _picture(
                    logj,
                    p["spacing"],
                    lambda v, f=fold: colorize(v, -span, span, RDBU, f, (0, 0, 0)),
                ),
            )
        )
    fig.rows.append(row)
    fig.title = (
        "Jacobian determinant of the map (1: volume kept, < 1 compression, > 1 expansion, "
        f"black: J <= 0, folding; {n_fold} folded pixels in these planes)"
    )
    figs["jacobian"] = fig
    return figs


# -- similarity figures -----------------------------------------------------------------------


def _similarity_sample(ref: Volume) -> tuple[int, tuple[slice, ...], np.ndarray, np.ndarray]:
    """(stride, slices, the subsampled reference array, its body mask) of the similarity
    figures: a regular subsample of at most ``SAMPLE_VOXELS`` reference voxels."""
    from .masks import body_mask

    stride = max(1, int(math.ceil((ref.array.size / SAMPLE_VOXELS) ** (1 / 3))))
    sl = (slice(None, None, stride),) * 3
    small = Volume(
        ref.array[sl],
        ref.affine @ np.diag([stride, stride, stride, 1.0]),
        None if ref.valid is None else ref.valid[sl],
    )
    return stride, sl, small.array, body_mask(small, resolution_mm=None)


def similarity_before(reference: Volume, floating: Volume) -> dict[str, Any]:
    """The "before" half of :func:`similarity_figures`: the floating scan at the reference's
    sampled world points where it has data (needs the scans only, not the registration)."""
    stride, _, r, body = _similarity_sample(reference)
    k, j, i = np.nonzero(body)
    # the points go through the geometry in pieces (each point on its own: the same values
    # as all at once), so the float64 temporaries stay at a few tens of MB
    inside_parts, val_parts = [], []
    upper = np.asarray(floating.shape, float)[:, None] - 1
    for a in range(0, k.size, _SIMILARITY_PIECE):
        b = a + _SIMILARITY_PIECE
        idx = np.stack([k[a:b], j[a:b], i[a:b]]).astype(np.float64) * stride
        fidx = floating.world_to_index(reference.index_to_world(idx.T)).T
        ins = np.all((fidx >= 0) & (fidx <= upper), axis=0)
        if floating.valid is not None and ins.any():
            ins[ins] &= ndi.map_coordinates(floating.valid, fidx[:, ins], order=0)
        inside_parts.append(ins)
        val_parts.append(ndi.map_coordinates(floating.array, fidx[:, ins], order=1))
    inside = np.concatenate(inside_parts) if inside_parts else np.zeros(0, bool)
    vals = np.concatenate(val_parts) if val_parts else np.zeros(0)
    out = _pair_stats(r[k, j, i][inside], vals)
    out["overlap_percent"] = float(100.0 * inside.mean()) if inside.size else 0.0
    return out


def similarity_figures(result, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """NCC and mean absolute difference (HU) between the reference and the floating scan inside
    the reference body, before registration (floating at the same world points) and after
    (warped), over a regular subsample of at most ``SAMPLE_VOXELS`` reference voxels where the
    floating scan has data.  ``before``: :func:`similarity_before` made earlier (when the result
    no longer holds the floating scan)."""
    ref: Volume = result.reference
    warped: Volume = result.warped
    stride, sl, r, body = _similarity_sample(ref)
    out: dict[str, Any] = {"voxels_sampled": int(np.count_nonzero(body)), "stride": stride}
    w = warped.array[sl]
    ok = body if warped.valid is None else body & warped.valid[sl]
    out["after"] = _pair_stats(r[ok], w[ok])
    floating = getattr(result, "floating", None)
    if before is None and floating is not None:
        before = similarity_before(ref, floating)
    if before is not None:
        out["before"] = before
    return out


def _pair_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.size < 2:
        return {"ncc": None, "mean_abs_diff_hu": None, "voxels": int(a.size)}
    x = a - a.mean()
    y = b - b.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return {
        "ncc": float((x * y).sum() / den) if den > 0 else None,
        "mean_abs_diff_hu": float(np.abs(a - b).mean()),
        "voxels": int(a.size),
    }


# -- HTML ---------------------------------------------------------------------------------------


def render_report_html(
    result,
    *,
    title: str | None = None,
    figures: dict[str, Figure] | None = None,
    similarity: dict | None = None,
) -> str:
    """The report as an HTML string.  ``figures``: :func:`report_figures` (None: no pictures);
    ``similarity``: :func:`similarity_figures` (None: computed here)."""
    rep = result.report or {}
    if similarity is None:
        similarity = similarity_figures(result)
    title = title or "ctreg registration report"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_CSS}{PICTURE_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Written {now} by ctreg {_e(rep.get('ctreg_version', '?'))}; preset "
        f"<code>{_e(rep.get('preset'))}</code>; {_num(rep.get('seconds_total'), 2)} s on "
        f"{_e(rep.get('threads', '?'))} threads. The tables repeat <code>report.json</code>.</p>",
    ]

    # verdict line
    jac = rep.get("jacobian") or {}
    jb = rep.get("jacobian_in_body") or {}
    fold = jac.get("percent_nonpositive")
    if fold is not None:
        cls = "good" if fold == 0 else "bad"
        parts.append(
            f"<p class='{cls}'>Folding: {_num(fold, 4)} % of the reference grid has "
            f"J &le; 0 (min J {_num(jac.get('min'))}).</p>"
        )

    # similarity
    parts.append("<h2>Similarity in the reference body</h2>")
    srows = []
    for key, label in (("before", "before (scanner coordinates)"), ("after", "after registration")):
        s = similarity.get(key)
        if s:
            srows.append([label, s.get("ncc"), s.get("mean_abs_diff_hu"), s.get("voxels")])
    parts.append(_table(["", "NCC", "mean |difference| HU", "voxels sampled"], srows))
    stride = int(similarity.get("stride", 1))
    every = "Every voxel" if stride == 1 else f"Every {stride}th voxel along each axis"
    parts.append(
        f"<p>{every} of the reference body where the floating scan has data; before: the "
        "floating scan at the same world points (no registration); NCC 1 is a perfect "
        "match. Computed for this report (not in <code>report.json</code>).</p>"
    )

    # pictures
    if figures:
        parts.append("<h2>Pictures</h2>")
        parts.append(
            "<p>Three planes through the centre of the reference grid, in radiological "
            "convention (letters: the patient's sides), pixels in true proportion.</p>"
        )
        parts.extend(fig.html() for fig in figures.values())

    # Jacobian
    parts.append("<h2>Jacobian determinant</h2>")
    jrows = []
    for label, st in (("whole reference grid", jac), ("reference body", jb)):
        if st:
            jrows.append(
                [
                    label,
                    st.get("min"),
                    st.get("max"),
                    st.get("percent_nonpositive"),
                    st.get("sd_log"),
                ]
            )
    parts.append(_table(["region", "min", "max", "% J ≤ 0", "SD log J"], jrows))

    # geometry
    parts.append("<h2>Scans</h2>")
    grows = [
        _geometry_row(n, rep[k])
        for n, k in (("reference", "reference"), ("floating", "floating"))
        if isinstance(rep.get(k), dict)
    ]
    parts.append(
        _table(
            ["scan", "shape (z, y, x)", "spacing (z, y, x) mm", "origin (x, y, z) mm LPS"],
            grows,
            left=4,
        )
    )

    # affine
    aff = rep.get("affine") or {}
    if aff.get("matrix") is not None:
        parts.append("<h2>Affine part (reference world -&gt; floating world)</h2>")
        m = np.asarray(aff["matrix"], float)
        t = aff.get("translation_mm") or [None] * 3
        arows = [[["x", "y", "z"][r], *m[r].tolist(), t[r]] for r in range(3)]
        parts.append(_table(["", "matrix x", "matrix y", "matrix z", "translation mm"], arows))
        try:
            det = float(np.linalg.det(m))
            parts.append(f"<p>Determinant {_num(det, 4)} (volume change of the affine part).</p>")
        except (ValueError, np.linalg.LinAlgError):
            pass

    # times
    secs = rep.get("seconds") or {}
    if secs:
        parts.append("<h2>Times</h2>")
        parts.append(
            _table(
                ["step", "seconds"],
                [[k, v] for k, v in secs.items()]
                + [[_Raw("<b>total</b>"), rep.get("seconds_total")]],
            )
        )

    # levels
    levels = rep.get("levels") or []
    if levels:
        parts.append("<h2>Stages and levels</h2>")
        lrows = []
        for lv in levels:
            sp = lv.get("spacing_mm")
            sp_s = " x ".join(f"{s:.2f}" for s in sp) if isinstance(sp, (list, tuple)) else _num(sp)
            lrows.append(
                [
                    lv.get("stage"),
                    lv.get("level"),
                    _Raw(_e(sp_s)),
                    lv.get("iterations"),
                    lv.get("evaluations"),
                    lv.get("metric"),
                    lv.get("metric_before"),
                    lv.get("metric_after"),
                    lv.get("seconds"),
                ]
            )
        parts.append(
            _table(
                [
                    "stage",
                    "level",
                    "spacing mm",
                    "iterations",
                    "evaluations",
                    "metric",
                    "before",
                    "after",
                    "seconds",
                ],
                lrows,
                left=1,
            )
        )

    # options
    opts = rep.get("options")
    if opts:
        import json

        parts.append(
            "<h2>Options</h2><details><summary>all options (as in report.json)</summary>"
            f"<pre>{_e(json.dumps(opts, indent=1, default=str))}</pre></details>"
        )
    versions = rep.get("versions") or {}
    if versions:
        parts.append(
            "<p>Versions: " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items()) + "</p>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report_html(
    result,
    path,
    *,
    title: str | None = None,
    figures: dict[str, Figure] | None = None,
    similarity: dict | None = None,
) -> Path:
    """Write ``report.html`` for ``result`` (a :class:`ctreg.RegistrationResult`) atomically
    (temporary name, then rename).  ``figures`` / ``similarity``: :func:`report_figures` /
    :func:`similarity_figures` of ``result`` when already made (default: made here).
    Returns the path."""
    from .io.atomic import atomic_path

    path = Path(path)
    if figures is None:
        figures = report_figures(result)
    text = render_report_html(result, title=title, figures=figures, similarity=similarity)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def before_parts(result) -> dict[str, Any]:
    """What the report needs of the floating scan itself ("before" pictures and similarity):
    made before ``result.release_floating()``, then given to :func:`report_parts`.  ``{}`` when
    the result holds no floating scan."""
    ref, floating = result.reference, getattr(result, "floating", None)
    if floating is None:
        return {}
    return {
        "pictures": before_pictures(ref, floating),
        "similarity": similarity_before(ref, floating),
    }


def report_parts(result, before: dict | None = None) -> tuple[dict[str, Figure], dict]:
    """(:func:`report_figures`, :func:`similarity_figures`) of ``result``: the slow part of a
    report, which reads the result only (``ctreg register`` makes it while the other outputs
    are written).  ``before``: :func:`before_parts`, made while the result held the floating
    scan."""
    b = before or {}
    return report_figures(result, b or None), similarity_figures(result, b.get("similarity"))


def before_parts_kept(result) -> Future:
    """:func:`before_parts` of ``result``, made now, as a finished future: an error is kept for
    :func:`report_for_run` to log (a report that cannot be made never fails the run)."""
    fut: Future = Future()
    try:
        fut.set_result(before_parts(result))
    except Exception as exc:  # noqa: BLE001 - report_for_run logs it
        fut.set_exception(exc)
    return fut


def report_for_run(
    result, path, parts: Future | None = None, before: Future | None = None
) -> dict[str, Path]:
    """What ``ctreg register`` calls: :func:`write_report_html`, but a report that cannot be made
    is logged as a warning and the run's other outputs are kept.  ``parts``: a future of
    :func:`report_parts` started earlier; else ``before``: :func:`before_parts_kept`, made while
    the result held the floating scan.  Returns ``{"report_html": path}``, or ``{}`` when
    nothing was written."""
    try:
        if parts is not None:
            figures, similarity = parts.result()
        elif before is not None:
            figures, similarity = report_parts(result, before.result())
        else:
            figures, similarity = None, None
        return {
            "report_html": write_report_html(result, path, figures=figures, similarity=similarity)
        }
    except Exception as exc:  # noqa: BLE001 - the registration's outputs matter more
        code = getattr(exc, "code", type(exc).__name__)
        log.warning("report.html not written (%s): %s", code, exc)
        return {}
