"""HTML building blocks of ``report.html`` (:mod:`ctreg.report_html`): the style sheet, escaping,
number formatting and tables."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

__all__: list[str] = []


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif;
       margin: 1.5em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
.note { background: #fff4d6; border: 1px solid #e0b84c; padding: 0.7em 1em; }
.bad { color: #b00020; font-weight: bold; } .good { color: #186a3b; }
img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _e(v) -> str:
    return html.escape(str(v))


def _num(v, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return "–"
        return (
            f"{float(v):.{nd}g}"
            if abs(float(v)) >= 1e4 or (v != 0 and abs(float(v)) < 1e-3)
            else f"{float(v):.{nd}f}"
        )
    return _e(v)


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    th = "".join(
        f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        tds = "".join(
            f"<td class='l'>{c if isinstance(c, _Raw) else _num(c)}</td>"
            if i < left
            else f"<td>{c if isinstance(c, _Raw) else _num(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><tr>{th}</tr>{''.join(body)}</table>"


class _Raw(str):
    """Already-escaped HTML in a table cell."""


def _geometry_row(name: str, g: dict) -> list:
    shape = g.get("shape") or []
    sp = g.get("spacing_mm") or []
    org = g.get("origin_mm") or []
    return [
        name,
        _Raw(_e(" x ".join(str(s) for s in shape))),
        _Raw(_e(" x ".join(f"{s:.3f}" for s in sp))),
        _Raw(_e(", ".join(f"{o:.1f}" for o in org))),
    ]
