"""The package's layering and size rules, checked on the source files (no import needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ctreg"
FILES = sorted(SRC.rglob("*.py"))
MAX_LINES = 600


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(target module, imported name or None) for every import in ``path``, also inside
    functions; relative imports resolved."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                yield target, a.name


def _is_submodule(name: str) -> bool:
    parts = name.split(".")[1:]
    return (
        SRC.joinpath(*parts).with_suffix(".py").exists()
        or SRC.joinpath(*parts, "__init__.py").exists()
        or SRC.joinpath(*parts).with_suffix(".pyi").exists()  # the extension's stub: a
        # non-editable install builds _native into site-packages, not into src/
        or any(SRC.joinpath(*parts[:-1]).glob(parts[-1] + ".*.so"))
    )


def test_files_are_at_most_600_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in FILES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these by topic (at most {MAX_LINES} lines each): {long}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_the_package_root(path):
    """``ctreg/__init__.py`` is the top layer (the public API): a module below it must import
    the submodule that defines a name (e.g. ``ctreg._version``), never the package root."""
    if path == SRC / "__init__.py":
        return
    bad = [
        f"from {t} import {n}" if n else f"import {t}"
        for t, n in _imports(path)
        if t == "ctreg" and (n is None or not _is_submodule(f"ctreg.{n}"))
    ]
    assert not bad, f"{path.relative_to(SRC)} imports from the package root: {bad}"


def test_only_ops_imports_native():
    users = {
        _module(p)
        for p in FILES
        for t, n in _imports(p)
        if t == "ctreg._native" or (t == "ctreg" and n == "_native")
    }
    # ctreg.mind is the checked facade of the MIND / block-matching kernels, as ops is of the rest
    assert users and all(
        u in ("ctreg.ops", "ctreg.mind") or u.startswith("ctreg.ops.") for u in users
    ), users


def test_lower_layers_do_not_import_higher_ones():
    """errors / _checks / _version / volume / io import nothing above them (no ops, no engine,
    no pipeline, cli or service)."""
    low = ("ctreg.errors", "ctreg._checks", "ctreg._version", "ctreg.volume", "ctreg.io")
    high = (
        "ctreg.ops",
        "ctreg.pipeline",
        "ctreg.cli",
        "ctreg.service",
        "ctreg.result",
        "ctreg.affine",
        "ctreg.ffd",
        "ctreg.demons",
        "ctreg.level",
        "ctreg.options",
    )
    bad = []
    for p in FILES:
        mod = _module(p)
        if not any(mod == m or mod.startswith(m + ".") for m in low):
            continue
        for t, n in _imports(p):
            full = f"{t}.{n}" if t == "ctreg" and n else t
            if any(full == h or full.startswith(h + ".") for h in high):
                bad.append(f"{mod} -> {full}")
    assert not bad, bad
