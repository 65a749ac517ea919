"""Collecting candidate files: folders, archives, file lists, URLs."""
from __future__ import annotations

import os
from pathlib import Path

from ..archive import extract_archive, is_archive
from ..fetch import download_urls, is_url
from .rules import _SKIP_NAMES, DicomRuleError


def _walk(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() in _SKIP_NAMES:
                continue
            out.append(Path(root) / name)
    return out


def dicom_source_files(source, workdir: str | os.PathLike) -> tuple[list[Path], str]:
    """Resolve ``source`` to a list of candidate files; archives and URLs are unpacked or
    downloaded into ``workdir`` (the caller removes it).  Returns (files, description)."""
    workdir = Path(workdir)
    if isinstance(source, (str, os.PathLike)) and not is_url(source):
        items: list = [source]
        single = True
    elif isinstance(source, str):
        items, single = [source], False
    else:
        try:
            items = list(source)
        except TypeError:
            raise DicomRuleError(
                f"source must be a folder, an archive, a list of files or a list of URLs, got "
                f"{type(source).__name__}") from None
        single = False
    if not items:
        raise DicomRuleError("source is an empty list; accepted: a folder, an archive, a list "
                             "of DICOM files or a list of http(s)/file URLs")
    urls = [str(x) for x in items if is_url(x)]
    if urls and len(urls) != len(items):
        raise DicomRuleError("source mixes URLs and local paths; accepted: all URLs or all paths")
    if urls:
        got = download_urls(urls, workdir / "download", allow_file=True,
                            schemes=("http", "https"))
        files: list[Path] = []
        for i, p in enumerate(got):
            if is_archive(p):
                files.extend(_walk(extract_archive(p, workdir / f"unpacked{i}")))
            else:
                files.append(p)
        desc = f"{len(urls)} URL(s) starting {urls[0]}"
        return files, desc
    files = []
    for i, it in enumerate(items):
        p = Path(it)
        if p.is_dir():
            files.extend(_walk(p))
        elif is_archive(p):
            files.extend(_walk(extract_archive(p, workdir / f"unpacked{i}")))
        elif p.is_file():
            files.append(p)
        else:
            raise DicomRuleError(f"{p}: no such file or folder; accepted: a folder, an archive "
                                 "(.zip, .tar, .tar.gz), DICOM files or URLs")
    if not files:
        raise DicomRuleError(f"{items[0] if single else 'the file list'}: no files found; "
                             "accepted: a folder or archive holding one DICOM CT series")
    desc = str(items[0]) if single else f"{len(items)} path(s) starting {items[0]}"
    return files, desc
