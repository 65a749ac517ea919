"""Never leave a partial file under its final name: write to a temporary name, then rename.

``os.replace`` within one folder is atomic on POSIX and Windows, so a reader sees either the
old file, no file, or the complete new one — also when the process is killed mid-write (the
temporary file, named ``.<name>.<random>.part``, is what is left then).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, *, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give the final one the usual permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` when the block succeeds.

    ``suffix`` is appended to the temporary name (e.g. ``".nii.gz"`` for writers that infer the
    format from the extension).  On an exception the temporary file is removed and ``final`` is
    left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part" + suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # data on disk before the name says it is complete
            os.fsync(fh.fileno())
        _default_mode(tmp_path, directory=False)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` when the block succeeds.

    ``final`` must not exist yet (or be an empty folder).  On an exception the temporary
    folder and everything in it are removed.
    """
    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise FileExistsError(f"output folder {final} exists and is not empty")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        _default_mode(tmp, directory=True)
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
