"""Landmark files as users have them, read into world points (x, y, z LPS mm).

Accepted layouts (comma, semicolon, tab or white-space separated; ``#`` comment lines skipped):

* one file per scan (``--reference-landmarks`` / ``--floating-landmarks``): three coordinates per
  row, with or without a header row, with or without an id column (first or last; any text or an
  integer);
* one file for both (``--landmarks``): six coordinates per row (reference x, y, z, floating x, y,
  z), again with or without a header and an id column;
* 3D Slicer markups (``.fcsv``; the ``# columns =`` comment is its header, ``# CoordinateSystem``
  says RAS or LPS) and Slicer's markups CSV export (``label,l,p,s`` / ``r,a,s`` headers).

With a header, the coordinate columns are found by name: ``x y z`` (also ``x_mm``, ``X (mm)``,
``reference_x``/``floating_x``, ``ref_x``/``flo_x``, ``fixed_x``/``moving_x``), ``r a s`` (RAS) or
``l p s`` (LPS); the id column by ``id``, ``name``, ``label``, ``landmark``, ``point``, ``index``.
Other columns are ignored.  Without a header, the layout is taken from the number of columns
(3/6 coordinates, 4/7 with an id, the id being the column that is not a number, else the first).

Coordinates: world LPS mm unless ``space`` says ``ras`` (world RAS mm, as Slicer shows them) or
``voxel`` (0-based voxel indices i, j, k = column, row, slice of the scan the file belongs to,
converted with that scan's affine; ``voxel1``: 1-based, as DIR-Lab files).  A header that names
r/a/s columns, or an .fcsv in RAS, is RAS whatever ``space`` says.

Two files are paired by id when both have ids (the sets must match), otherwise by row order (the
counts must match).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPACES = ("lps", "ras", "voxel", "voxel1")

_ID_NAMES = {"id", "name", "label", "landmark", "point", "index", "idx", "no", "number", "#"}
_PREFIXES = ("reference", "ref", "fixed", "floating", "flo", "moving", "mov", "source", "target")


class LandmarkError(ValueError):
    """A landmark file that cannot be read; ``code`` names what is wrong."""

    def __init__(self, message: str, *, code: str = "Landmarks.Format"):
        super().__init__(message)
        self.code = code


@dataclass
class PointSet:
    """Points read from a file: ``points`` (N, k) as written (k = 3 or 6), ``ids`` or None,
    ``space`` the coordinate space they are in ("lps", "ras", "voxel", "voxel1")."""

    points: np.ndarray
    ids: list[str] | None
    space: str


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _rows(path) -> tuple[list[list[str]], list[str] | None, str | None]:
    """Data rows (fields stripped), the header from a Slicer ``# columns =`` comment, and the
    coordinate system from ``# CoordinateSystem =`` (``ras``/``lps``/None)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    header = None
    system = None
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = re.match(r"#\s*columns\s*=\s*(.*)$", s, re.I)
            if m:
                header = [c.strip() for c in m.group(1).split(",")]
            m = re.match(r"#\s*CoordinateSystem\s*=\s*(\S+)", s, re.I)
            if m:
                v = m.group(1).strip().upper()
                system = "ras" if v in ("0", "RAS") else "lps" if v in ("1", "LPS") else None
            continue
        lines.append(s)
    if not lines:
        raise LandmarkError(f"{path}: no landmark rows", code="Landmarks.Empty")
    sample = lines[0]
    if "," in sample:
        delim = ","
    elif ";" in sample:
        delim = ";"
    elif "\t" in sample:
        delim = "\t"
    else:
        delim = None
    if delim is None:
        rows = [ln.split() for ln in lines]
    else:
        rows = [
            [f.strip() for f in r]
            for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=delim)
        ]
    rows = [r for r in rows if any(f for f in r)]
    return rows, header, system


def _canonical(name: str) -> str:
    n = name.strip().lower()
    n = re.sub(r"\(.*?\)|\[.*?\]", "", n)  # "x (mm)" -> "x"
    n = re.sub(r"[\s\-\.]+", "_", n).strip("_")
    n = re.sub(r"_?mm$", "", n).strip("_")
    return n


def _split_prefix(name: str) -> tuple[str, str]:
    """("reference", "x") from "reference_x" / "ref.x" / "fixed x" / "x1"; ("", "x") from "x"."""
    n = _canonical(name)
    m = re.fullmatch(r"([xyzraslp])_?([12])", n)  # x1, y1, z1, x2, y2, z2
    if m:
        return ("reference" if m.group(2) == "1" else "floating"), m.group(1)
    for p in _PREFIXES:
        for sep in ("_", ""):
            if n.startswith(p + sep) and len(n) > len(p + sep):
                return p, n[len(p + sep) :]
    return "", n


def _role(prefix: str) -> int:
    return 0 if prefix in ("reference", "ref", "fixed", "target") else 1


def _from_header(path, header: list[str], ncoords: int) -> tuple[list[int], int | None, str | None]:
    """Column indices of the coordinates (3 or 6), of the id, and the space the names imply."""
    names = [_split_prefix(h) for h in header]
    id_col = next((i for i, (p, n) in enumerate(names) if not p and n in _ID_NAMES), None)
    for axes, space in (("xyz", None), ("ras", "ras"), ("lps", "lps")):
        found: dict[tuple[int, str], int] = {}
        for i, (p, n) in enumerate(names):
            if n in axes and len(n) == 1:
                role = _role(p) if p else None
                found.setdefault((role, n), i)
        if ncoords == 3:
            cols = [found.get((None, a)) for a in axes]
            if None in cols:  # one prefixed set ("reference_x") is fine for one scan's file
                roles = {r for r, _ in found}
                if len(roles) == 1:
                    r = roles.pop()
                    cols = [found.get((r, a)) for a in axes]
            if None not in cols:
                return cols, id_col, space
        else:
            cols = [found.get((0, a)) for a in axes] + [found.get((1, a)) for a in axes]
            if None not in cols:
                return cols, id_col, space
    raise LandmarkError(
        f"{path}: the header {header} names no "
        f"{'x, y, z' if ncoords == 3 else 'reference and floating x, y, z'}"
        " columns (accepted: x/y/z, r/a/s, l/p/s, with prefixes such as reference_/floating_)",
        code="Landmarks.Header",
    )


def read_point_file(path, *, ncoords: int = 3, space: str = "lps") -> PointSet:
    """Read a landmark CSV (see the module docstring).  ``ncoords``: 3 (one scan's points) or 6
    (reference and floating in one file)."""
    if space not in SPACES:
        raise LandmarkError(f"space must be one of {SPACES}, got {space!r}", code="Landmarks.Space")
    rows, header, system = _rows(path)
    if header is None and not all(_is_number(f) for f in rows[0] if f):
        # a header row is a first row with a field that is not a number... unless it is only the
        # id that is text ("L1, 1.0, 2.0, 3.0"): then the other fields are numbers
        numeric = [_is_number(f) for f in rows[0]]
        if sum(numeric) < ncoords:
            header, rows = rows[0], rows[1:]
    if not rows:
        raise LandmarkError(f"{path}: a header but no landmark rows", code="Landmarks.Empty")
    if header is not None:
        cols, id_col, named_space = _from_header(path, header, ncoords)
        if named_space:
            space = named_space
    else:
        width = len(rows[0])
        if width == ncoords:
            cols, id_col = list(range(ncoords)), None
        elif width == ncoords + 1:
            text_cols = [
                c for c in range(width) if not all(_is_number(r[c]) for r in rows if len(r) > c)
            ]
            if text_cols == [width - 1]:
                cols, id_col = list(range(ncoords)), width - 1
            else:
                cols, id_col = list(range(1, width)), 0
        else:
            what = "x, y, z" if ncoords == 3 else "reference x, y, z, floating x, y, z"
            raise LandmarkError(
                f"{path}: rows have {width} columns; expected {ncoords} ({what}) or {ncoords + 1} "
                "(with an id column), or a header naming the columns",
                code="Landmarks.Columns",
            )
    if system and header is not None and space in ("lps", "ras"):
        space = system
    pts, ids = [], []
    for n, r in enumerate(rows):
        try:
            pts.append([float(r[c]) for c in cols])
        except (ValueError, IndexError):
            raise LandmarkError(
                f"{path}: row {n + 1} {r} does not have numbers in columns {cols}",
                code="Landmarks.Value",
            ) from None
        if id_col is not None:
            ids.append(r[id_col] if id_col < len(r) else "")
    arr = np.asarray(pts, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise LandmarkError(f"{path}: a coordinate is not finite", code="Landmarks.Value")
    if ids and len(set(ids)) != len(ids):
        raise LandmarkError(f"{path}: the ids repeat", code="Landmarks.Ids")
    return PointSet(arr, ids or None, space)


def to_world(points: np.ndarray, space: str, volume=None) -> np.ndarray:
    """(N, 3) points in ``space`` -> world LPS mm (``volume``: the scan, for voxel indices)."""
    p = np.asarray(points, dtype=np.float64)
    if space == "lps":
        return p.copy()
    if space == "ras":
        return p * np.array([-1.0, -1.0, 1.0])
    if space in ("voxel", "voxel1"):
        if volume is None:
            raise LandmarkError(
                "voxel landmarks need their scan's geometry", code="Landmarks.Space"
            )
        ijk = p - (1.0 if space == "voxel1" else 0.0)
        return volume.index_to_world(ijk[:, ::-1])  # (i, j, k) -> array order (k, j, i)
    raise LandmarkError(f"unknown space {space!r}", code="Landmarks.Space")


def read_landmark_pairs(
    *,
    landmarks=None,
    reference_landmarks=None,
    floating_landmarks=None,
    space: str = "lps",
    reference=None,
    floating=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and floating world points (N, 3) each, LPS mm, row i of one matching row i of
    the other.  Either ``landmarks`` (one six-coordinate file) or both per-scan files.
    ``reference`` / ``floating``: the Volumes (needed for voxel coordinates)."""
    if landmarks is not None:
        if reference_landmarks is not None or floating_landmarks is not None:
            raise LandmarkError(
                "give either one paired landmark file or one file per scan",
                code="Landmarks.Arguments",
            )
        ps = read_point_file(landmarks, ncoords=6, space=space)
        return (
            to_world(ps.points[:, :3], ps.space, reference),
            to_world(ps.points[:, 3:], ps.space, floating),
        )
    if reference_landmarks is None or floating_landmarks is None:
        raise LandmarkError(
            "landmarks need both a reference and a floating file", code="Landmarks.Arguments"
        )
    a = read_point_file(reference_landmarks, space=space)
    b = read_point_file(floating_landmarks, space=space)
    pa = to_world(a.points, a.space, reference)
    pb = to_world(b.points, b.space, floating)
    if a.ids is not None and b.ids is not None:
        if set(a.ids) != set(b.ids):
            only_a = sorted(set(a.ids) - set(b.ids))[:5]
            only_b = sorted(set(b.ids) - set(a.ids))[:5]
            raise LandmarkError(
                f"landmark ids differ: only in {reference_landmarks}: {only_a}, only in "
                f"{floating_landmarks}: {only_b}",
                code="Landmarks.Ids",
            )
        where = {k: i for i, k in enumerate(b.ids)}
        pb = pb[[where[k] for k in a.ids]]
    elif len(pa) != len(pb):
        raise LandmarkError(
            f"{reference_landmarks} has {len(pa)} landmarks, {floating_landmarks} "
            f"{len(pb)}; without ids on both, rows are paired by order",
            code="Landmarks.Count",
        )
    return pa, pb
