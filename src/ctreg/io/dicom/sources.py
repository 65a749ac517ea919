"""Collecting candidate files: folders, archives, file lists, URLs."""

from __future__ import annotations

import os
from pathlib import Path

from ..archive import extract_archive, is_archive
from ..fetch import download_urls, is_url
from .rules import _SKIP_NAMES, DicomRuleError


#: Files of these kinds found in a folder or archive are skipped (with a note naming them)
#: unless they carry the DICOM prefix: notes, pictures, documents, spreadsheets next to a series.
STRAY_SUFFIXES = frozenset(
    {
        ".txt",
        ".md",
        ".rst",
        ".pdf",
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".html",
        ".htm",
        ".json",
        ".xml",
        ".csv",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".ini",
        ".log",
        ".py",
        ".sh",
        ".bat",
        ".exe",
        ".db",
    }
)
STRAY_NAMES = frozenset({"README", "LICENSE", "NOTICE", "THUMBS.DB", "DESKTOP.INI"})


def _has_dicom_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_stray_file(path: Path) -> bool:
    """A file a folder may hold next to its DICOM series (README, JPEG, PDF, Thumbs.db ...):
    a stray suffix or name, and no DICOM prefix."""
    stem = path.name.split(".")[0].upper()
    stray = (
        path.suffix.lower() in STRAY_SUFFIXES
        or path.name.upper() in STRAY_NAMES
        or (stem in STRAY_NAMES)
    )
    return stray and not _has_dicom_prefix(path)


def _walk(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """Every candidate file under ``folder``: hidden files/folders (.DS_Store, .git ...) and
    DICOMDIR never; stray files (``is_stray_file``) appended to ``skipped`` instead."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or name.upper() in _SKIP_NAMES:
                if name.startswith(".") and skipped is not None:
                    skipped.append(path)
                continue
            if is_stray_file(path):
                if skipped is not None:
                    skipped.append(path)
                continue
            out.append(path)
    return out


def dicom_source_files(
    source, workdir: str | os.PathLike, skipped: list[Path] | None = None
) -> tuple[list[Path], str]:
    """Resolve ``source`` to a list of candidate files; archives and URLs are unpacked or
    downloaded into ``workdir`` (the caller removes it).  Returns (files, description).

    Folder policy: inside a folder or archive, hidden files and stray files (README, JPEG, PDF
    ... without a DICOM prefix; ``is_stray_file``) are left out and appended to ``skipped``; an
    explicit list of files stays strict (every file must be DICOM)."""
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
                f"{type(source).__name__}"
            ) from None
        single = False
    if not items:
        raise DicomRuleError(
            "source is an empty list; accepted: a folder, an archive, a list "
            "of DICOM files or a list of http(s)/file URLs"
        )
    urls = [str(x) for x in items if is_url(x)]
    if urls and len(urls) != len(items):
        raise DicomRuleError("source mixes URLs and local paths; accepted: all URLs or all paths")
    if urls:
        got = download_urls(urls, workdir / "download", allow_file=True, schemes=("http", "https"))
        files: list[Path] = []
        for i, p in enumerate(got):
            if is_archive(p):
                files.extend(_walk(extract_archive(p, workdir / f"unpacked{i}"), skipped))
            else:
                files.append(p)
        desc = f"{len(urls)} URL(s) starting {urls[0]}"
        return files, desc
    files = []
    for i, it in enumerate(items):
        p = Path(it)
        if p.is_dir():
            files.extend(_walk(p, skipped))
        elif is_archive(p):
            files.extend(_walk(extract_archive(p, workdir / f"unpacked{i}"), skipped))
        elif p.is_file():
            files.append(p)
        else:
            raise DicomRuleError(
                f"{p}: no such file or folder; accepted: a folder, an archive "
                "(.zip, .tar, .tar.gz), DICOM files or URLs"
            )
    if not files:
        raise DicomRuleError(
            f"{items[0] if single else 'the file list'}: no files found; "
            "accepted: a folder or archive holding one DICOM CT series"
        )
    desc = str(items[0]) if single else f"{len(items)} path(s) starting {items[0]}"
    return files, desc
