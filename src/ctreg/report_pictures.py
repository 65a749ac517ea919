"""The pictures of ``report.html`` drawn with NumPy and zlib alone (:mod:`ctreg.report_html`).

Each panel is one plane turned into an RGB image (a grey window or a diverging colour scale,
a colour for "no data"), enlarged by nearest neighbour to square millimetre pixels, and
encoded as a PNG (8-bit RGB, one zlib stream). Titles, the side letters (A/P, R/L, S/I) and
the colour bars are HTML and CSS around the images, not pixels. A plotting library took
about 1 s per report for the same three figures (0.3 s of it its import); this takes a few
tens of milliseconds.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .report_blocks import _e

__all__ = ["Figure", "Panel", "png_rgb", "colorize", "enlarge", "GRAY", "RDBU"]

#: the longest side of a panel, in pixels (three panels fill the page's width)
PANEL_PX = 360


def _lut(anchors: list[str], n: int = 255) -> np.ndarray:
    """(n, 3) uint8 colours interpolated linearly between ``anchors`` ('#rrggbb'), low to high
    (n odd: the middle value gets the middle anchor exactly)."""
    rgb = np.array([[int(a[i : i + 2], 16) for i in (1, 3, 5)] for a in anchors], float)
    t = np.linspace(0.0, 1.0, len(anchors))
    s = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(s, t, rgb[:, c]) for c in range(3)], 1).round().astype(np.uint8)


#: black to white
GRAY_ANCHORS = ["#000000", "#ffffff"]
#: blue (low) - white - red (high): ColorBrewer's 11-class RdBu, low values blue
RDBU_ANCHORS = [
    "#053061",
    "#2166ac",
    "#4393c3",
    "#92c5de",
    "#d1e5f0",
    "#f7f7f7",
    "#fddbc7",
    "#f4a582",
    "#d6604d",
    "#b2182b",
    "#67001f",
]
GRAY = _lut(GRAY_ANCHORS)
RDBU = _lut(RDBU_ANCHORS)


def colorize(
    values: np.ndarray,
    lo: float,
    hi: float,
    lut: np.ndarray,
    bad: np.ndarray | None = None,
    bad_rgb: tuple[int, int, int] = (153, 153, 153),
) -> np.ndarray:
    """(h, w, 3) uint8: ``values`` mapped linearly from [lo, hi] onto ``lut`` (clipped; NaN and
    the ``bad`` pixels get ``bad_rgb``)."""
    v = np.asarray(values, np.float64)
    nan = ~np.isfinite(v)
    t = np.clip((np.where(nan, lo, v) - lo) / (hi - lo), 0.0, 1.0)
    rgb = lut[np.rint(t * (len(lut) - 1)).astype(np.intp)]
    off = nan if bad is None else nan | np.asarray(bad, bool)
    rgb[off] = bad_rgb
    return rgb


def enlarge(rgb: np.ndarray, spacing, max_px: int = PANEL_PX) -> np.ndarray:
    """``rgb`` (h, w, 3) with pixels of ``spacing`` (rows, columns) mm, resampled by nearest
    neighbour to square pixels with the longest side ``max_px``: the true aspect ratio."""
    h, w = rgb.shape[:2]
    h_mm, w_mm = h * float(spacing[0]), w * float(spacing[1])
    px_per_mm = max_px / max(h_mm, w_mm)
    out_h, out_w = max(1, round(h_mm * px_per_mm)), max(1, round(w_mm * px_per_mm))
    rows = np.minimum(((np.arange(out_h) + 0.5) / out_h * h).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) / out_w * w).astype(np.intp), w - 1)
    return rgb[rows[:, None], cols[None, :]]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_rgb(rgb: np.ndarray, level: int = 6) -> bytes:
    """A PNG file (8-bit RGB, no interlace, filter 0 on every row) of ``rgb`` (h, w, 3) uint8."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"png_rgb needs an (h, w, 3) image, got shape {a.shape}")
    h, w = a.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # each row starts with its filter type (0)
    raw[:, 1:] = a.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


@dataclass
class Panel:
    """One picture: its title, side letters (top, bottom, left, right) and PNG bytes."""

    title: str
    sides: tuple[str, str, str, str]
    png: bytes

    def html(self) -> str:
        b64 = base64.b64encode(self.png).decode("ascii")
        top, bottom, left, right = (_e(s) for s in self.sides)
        return (
            "<figure class='panel'><div class='pic'>"
            f"<img alt='{_e(self.title)}' src='data:image/png;base64,{b64}'>"
            f"<span class='t'>{top}</span><span class='b'>{bottom}</span>"
            f"<span class='l'>{left}</span><span class='r'>{right}</span></div>"
            f"<figcaption>{_e(self.title)}</figcaption></figure>"
        )


@dataclass
class Figure:
    """Rows of panels under a title, with an optional colour bar (``anchors`` low to high,
    ``ticks`` as (position 0..1, label) pairs, ``label``)."""

    title: str
    rows: list[list[Panel]] = field(default_factory=list)
    anchors: list[str] | None = None
    ticks: list[tuple[float, str]] = field(default_factory=list)
    label: str = ""

    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row]

    def html(self) -> str:
        parts = [f"<div class='fig'><p class='ftitle'>{_e(self.title)}</p>"]
        for row in self.rows:
            parts.append("<div class='frow'>" + "".join(p.html() for p in row) + "</div>")
        if self.anchors:
            stops = ", ".join(self.anchors)
            ticks = "".join(
                f"<span style='left:{100 * pos:.1f}%'>{_e(text)}</span>" for pos, text in self.ticks
            )
            parts.append(
                f"<div class='cbar'><div class='grad' style='background:linear-gradient(to right, "
                f"{stops})'></div><div class='ticks'>{ticks}</div>"
                f"<div class='clabel'>{_e(self.label)}</div></div>"
            )
        parts.append("</div>")
        return "".join(parts)


def linear_ticks(lo: float, hi: float, values, fmt: str = "{:.0f}") -> list[tuple[float, str]]:
    """Tick positions (0..1 along a bar from ``lo`` to ``hi``) and labels for ``values``."""
    return [((v - lo) / (hi - lo), fmt.format(v)) for v in values]


def log_ticks(span: float) -> list[tuple[float, str]]:
    """Ticks of a log scale from 1/span to span: 1/span, 1/sqrt(span), 1, sqrt(span), span."""
    m = math.log(span)
    return [
        ((math.log(t) + m) / (2 * m), f"{t:.2f}")
        for t in (1 / span, span**-0.5, 1.0, span**0.5, span)
    ]


#: the pictures' style (added to the report's style sheet)
PICTURE_CSS = """
.fig { margin: 0.8em 0 1.4em; } .ftitle { font-size: 0.95em; margin: 0.2em 0; }
.frow { display: flex; gap: 8px; flex-wrap: wrap; align-items: flex-start; }
.panel { margin: 0; } .panel figcaption { font-size: 0.8em; max-width: 360px; }
.pic { position: relative; display: inline-block; line-height: 0; }
.pic img { border: 1px solid #ddd; }
.pic span { position: absolute; color: #ff0; font: bold 11px sans-serif; line-height: 1.2;
            background: rgba(0, 0, 0, 0.55); padding: 0 2px; }
.pic .t { top: 3px; left: 50%; transform: translateX(-50%); }
.pic .b { bottom: 3px; left: 50%; transform: translateX(-50%); }
.pic .l { left: 3px; top: 50%; transform: translateY(-50%); }
.pic .r { right: 3px; top: 50%; transform: translateY(-50%); }
.cbar { width: 360px; margin-top: 0.4em; font-size: 0.8em; }
.cbar .grad { height: 12px; border: 1px solid #999; }
.cbar .ticks { position: relative; height: 1.3em; }
.cbar .ticks span { position: absolute; transform: translateX(-50%); }
"""
