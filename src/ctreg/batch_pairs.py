"""The pairs file of ``ctreg batch`` (:mod:`ctreg.batch`): ``reference,floating[,name]`` rows
read into :class:`PairSpec` (absolute paths, checked folder names), and :class:`BatchError`.
The file's format is described in :mod:`ctreg.batch`'s docstring."""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CTRegError

__all__ = ["BatchError", "PairSpec", "read_pairs"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BatchError(CTRegError):
    """A batch that cannot start: its pairs file or output folder is wrong.  ``code``:
    ``Batch.PairsFile`` (unreadable, empty, bad columns), ``Batch.Name`` (unsafe or repeated
    name), ``Batch.Locked`` (another run holds OUT), ``Batch.Output`` (OUT is not a folder),
    ``Batch.Dask`` (dask.distributed missing or the scheduler unreachable); for one pair,
    ``Batch.MissingInput`` (an input path does not exist)."""

    code = "Batch.PairsFile"
    codes = (
        "Batch.PairsFile",
        "Batch.Name",
        "Batch.Locked",
        "Batch.Output",
        "Batch.Dask",
        "Batch.MissingInput",
        "Batch.Arguments",
    )


@dataclass(frozen=True)
class PairSpec:
    """One row of the pairs file: absolute input paths and the output folder's name."""

    name: str
    reference: str
    floating: str
    row: int = 0


def read_pairs(path) -> list[PairSpec]:
    """The pairs of a CSV with columns ``reference,floating[,name]`` (header optional)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BatchError(
            f"cannot read the pairs file {path}: {exc.strerror or exc}", code="Batch.PairsFile"
        ) from None
    rows = [
        r
        for r in csv.reader(io.StringIO(text))
        if r and any(f.strip() for f in r) and not r[0].lstrip().startswith("#")
    ]
    rows = [[f.strip() for f in r] for r in rows]
    if not rows:
        raise BatchError(
            f"{path}: no pairs (expected rows of reference,floating[,name])", code="Batch.PairsFile"
        )
    head = [f.lower() for f in rows[0]]
    if "reference" in head or "floating" in head:
        if "reference" not in head or "floating" not in head:
            raise BatchError(
                f"{path}: the header {rows[0]} must name both 'reference' and "
                "'floating' columns (and optionally 'name')",
                code="Batch.PairsFile",
            )
        cols = (
            head.index("reference"),
            head.index("floating"),
            head.index("name") if "name" in head else None,
        )
        body = rows[1:]
        first = 2
    else:
        cols = (0, 1, 2)
        body = rows
        first = 1
        if any(len(r) > 3 for r in body):
            raise BatchError(
                f"{path}: rows have more than 3 columns; without a header the columns "
                "are reference,floating[,name]",
                code="Batch.PairsFile",
            )
    if not body:
        raise BatchError(f"{path}: a header but no pairs", code="Batch.PairsFile")
    base = path.resolve().parent
    pairs: list[PairSpec] = []
    seen: dict[str, int] = {}
    for n, r in enumerate(body):
        line = first + n
        try:
            ref, flo = r[cols[0]], r[cols[1]]
        except IndexError:
            raise BatchError(
                f"{path}: line {line} {r} lacks the reference or floating column",
                code="Batch.PairsFile",
            ) from None
        if not ref or not flo:
            raise BatchError(
                f"{path}: line {line} has an empty reference or floating path",
                code="Batch.PairsFile",
            )
        name = (
            r[cols[2]]
            if cols[2] is not None and cols[2] < len(r) and r[cols[2]]
            else f"pair{n + 1:03d}"
        )
        if not _NAME_RE.match(name) or name in (".", ".."):
            raise BatchError(
                f"{path}: line {line}: name {name!r} is not usable as a folder name "
                "(letters, digits, '.', '_', '-'; at most 128)",
                code="Batch.Name",
            )
        if name.lower() in seen:
            raise BatchError(
                f"{path}: line {line}: name {name!r} repeats line {seen[name.lower()]}",
                code="Batch.Name",
            )
        seen[name.lower()] = line
        pairs.append(PairSpec(name, _resolve(ref, base), _resolve(flo, base), line))
    return pairs


def _resolve(p: str, base: Path) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://", p, re.I):  # URLs as read_volume takes them
        return p
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q))
