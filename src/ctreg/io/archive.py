"""Archives: safe extraction of .zip / .tar / .tar.gz inputs, fast .tar.gz packing of outputs.

Extraction refuses absolute paths, ``..`` components, links and device files, and stops at a
size and member-count cap, so that an uploaded archive cannot write outside its folder or fill
the disk.  Packing uses a low gzip level (1 by default): the file stays standard gzip but is
written several times faster than at the default level 9.  Level 0 writes stored deflate
blocks (still standard gzip), for data that hardly compresses.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
import time
import types
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import DicomSeriesError
from .atomic import atomic_path, open_streamed

_deflate: types.ModuleType
try:  # ISA-L deflate: the same gzip format, about five times faster than zlib at level 1
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency, zlib the fallback
    _deflate = zlib

__all__ = [
    "ARCHIVE_SUFFIXES",
    "is_archive",
    "extract_archive",
    "pack_folder",
    "write_tar_gz",
    "write_gzip",
    "GzipStreamWriter",
]

#: file name endings recognised as archives (lower case).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
#: default caps on what one archive may unpack to.
MAX_EXTRACT_BYTES = 4 * 1024**3
MAX_EXTRACT_FILES = 20000
#: gzip level of the archives ctreg writes (1 = fastest; every level is standard gzip).
GZIP_LEVEL = 1


def is_archive(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file whose name ends in one of :data:`ARCHIVE_SUFFIXES`."""
    name = str(path).lower()
    return Path(path).is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DicomSeriesError(
            f"archive {archive} holds an unsafe member path {name!r}; accepted: relative paths "
            "inside the archive without '..'"
        )
    return p


def extract_archive(
    path: str | os.PathLike,
    dest_dir: str | os.PathLike,
    *,
    max_bytes: int = MAX_EXTRACT_BYTES,
    max_files: int = MAX_EXTRACT_FILES,
) -> Path:
    """Extract a .zip, .tar, .tar.gz or .tgz into ``dest_dir``; return ``dest_dir``.

    Only regular files and folders are extracted (links and devices are skipped).  Raises
    :class:`~ctreg.errors.DicomSeriesError` naming the archive when it is unreadable, holds an
    unsafe path, or unpacks to more than ``max_bytes`` bytes or ``max_files`` files.
    """
    path = Path(path)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    total = 0
    count = 0

    def budget(size: int, member: str) -> None:
        nonlocal total, count
        total += size
        count += 1
        if total > max_bytes:
            raise DicomSeriesError(
                f"archive {path} unpacks to more than {max_bytes} bytes (at member {member!r}); "
                f"accepted: at most {max_bytes} bytes",
                code="InvalidFile.TooLarge",
            )
        if count > max_files:
            raise DicomSeriesError(
                f"archive {path} holds more than {max_files} files; accepted: at most {max_files}",
                code="InvalidFile.TooLarge",
            )

    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    rel = _safe_member_path(info.filename, path)
                    budget(info.file_size, info.filename)
                    target = dest.joinpath(*rel.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        # copy with a running cap: file_size in the header may lie
                        written = 0
                        while chunk := src.read(1 << 20):
                            written += len(chunk)
                            if written > info.file_size + 1024:
                                raise DicomSeriesError(
                                    f"archive {path}: member {info.filename!r} is larger than its "
                                    "header says; refused"
                                )
                            dst.write(chunk)
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    rel = _safe_member_path(member.name, path)
                    budget(member.size, member.name)
                    target = dest.joinpath(*rel.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    member_file = tf.extractfile(member)
                    if member_file is None:  # pragma: no cover - isfile() members have data
                        continue
                    with member_file, open(target, "wb") as dst:
                        shutil.copyfileobj(member_file, dst, 1 << 20)
        else:
            raise DicomSeriesError(
                f"{path} is not a supported archive; accepted: {', '.join(ARCHIVE_SUFFIXES)}"
            )
    except DicomSeriesError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise DicomSeriesError(
            f"archive {path} cannot be read ({type(exc).__name__}: {exc}); accepted: a complete "
            f".zip, .tar or .tar.gz file"
        ) from exc
    return dest


#: uncompressed bytes per gzip member in :func:`write_gzip`.
GZIP_BLOCK = 4 * 1024**2


#: deflate's largest stored block (RFC 1951, 3.2.4)
_STORED_MAX = 0xFFFF
#: gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (RFC 1952)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _stored_member(block) -> bytes:
    """One gzip member holding ``block`` in stored (uncompressed) deflate blocks: level 0.

    Standard gzip that every reader decompresses; for data that hardly compresses (float
    fields) it costs a CRC and a copy instead of a deflate pass.  The CRC is ISA-L's when it
    is installed (several GB/s), else zlib's, with the same value; zlib's own level 0 ran at
    0.8 GB/s (scratch timing)."""
    view = memoryview(block).cast("B")
    n = len(view)
    parts: list[bytes | memoryview] = [_GZIP_HEADER]
    pos = 0
    while True:  # an empty block is one final stored block of length 0
        size = min(_STORED_MAX, n - pos)
        final = pos + size >= n
        parts.append(bytes((1 if final else 0,)) + struct.pack("<HH", size, size ^ 0xFFFF))
        parts.append(view[pos : pos + size])
        pos += size
        if final:
            break
    parts.append(struct.pack("<II", _deflate.crc32(view) & 0xFFFFFFFF, n & 0xFFFFFFFF))
    return b"".join(parts)


def _compress_member(block, compresslevel: int) -> bytes:
    """One complete gzip member of ``block``; level 0 stores it (:func:`_stored_member`)."""
    if compresslevel == 0:
        return _stored_member(block)
    if _deflate is not zlib:  # ISA-L levels are 0-3
        return _deflate.compress(block, min(compresslevel, 3), wbits=31)
    return zlib.compress(block, compresslevel, wbits=31)


class GzipStreamWriter(io.RawIOBase):
    """A write-only file object that gzips what is written to it into ``fh``, in parallel.

    Written bytes are cut into blocks of :data:`GZIP_BLOCK` bytes; each block is compressed in
    a worker thread (ISA-L and zlib release the GIL) into a complete gzip member, and members
    are written to ``fh`` in order: a standard multi-member gzip file (see :func:`write_gzip`).
    At most ``2 * threads`` blocks are in flight, so memory stays at a few blocks whatever the
    size of the stream: data can be produced slice by slice (NIfTI voxels, tar members) without
    a copy of the whole file in memory.  The output depends only on the bytes written, never
    on how they were split into ``write`` calls or on the thread count.  ``close()`` (or the
    ``with`` block's end) flushes the last block; it does not close ``fh``.
    """

    def __init__(self, fh, *, compresslevel: int = GZIP_LEVEL, threads: int | None = None):
        super().__init__()
        self._fh = fh
        self._level = compresslevel
        self._threads = max(1, threads or min(8, os.cpu_count() or 1))
        self._buf = bytearray()
        self._pending: list = []  # futures of compressed members, in order
        self._pool = ThreadPoolExecutor(max_workers=self._threads) if self._threads > 1 else None
        self._blocks = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:  # tarfile asks; the position in the uncompressed stream
        return self.bytes_in

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        self.bytes_in += n
        pos = 0
        if self._buf:  # top up the partial block first
            take = min(n, GZIP_BLOCK - len(self._buf))
            self._buf += view[:take]
            pos = take
            if len(self._buf) == GZIP_BLOCK:
                self._submit(bytes(self._buf))
                self._buf.clear()
        while n - pos >= GZIP_BLOCK:  # whole blocks straight from the caller's buffer
            self._submit(bytes(view[pos : pos + GZIP_BLOCK]))
            pos += GZIP_BLOCK
        if pos < n:
            self._buf += view[pos:]
        return n

    def _submit(self, block: bytes) -> None:
        self._blocks += 1
        if self._pool is None:
            self.bytes_out += self._fh.write(_compress_member(block, self._level))
            return
        self._pending.append(self._pool.submit(_compress_member, block, self._level))
        while len(self._pending) > 2 * self._threads:
            self._drain_one()

    def _drain_one(self) -> None:
        self.bytes_out += self._fh.write(self._pending.pop(0).result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf or self._blocks == 0:  # an empty stream is one empty member
                self._submit(bytes(self._buf))
                self._buf.clear()
            while self._pending:
                self._drain_one()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            super().close()


def write_gzip(data, fh, *, compresslevel: int = GZIP_LEVEL, threads: int | None = None) -> int:
    """Compress ``data`` (bytes-like) into the open binary file ``fh`` as gzip; return the
    number of bytes written.

    Compression uses ISA-L (package ``isal``) when installed, else zlib.  The data is cut into
    blocks of :data:`GZIP_BLOCK` bytes compressed in parallel threads
    (zlib releases the GIL), each a complete gzip member, written in order: a multi-member gzip
    file as ``pigz`` and ``bgzip`` write, which every gzip reader (Python's gzip, zlib's gzread
    used by ITK, ``gunzip``) decompresses to the concatenated data (RFC 1952, section 2.2).
    To write a stream piece by piece instead, use :class:`GzipStreamWriter`.
    """
    with GzipStreamWriter(fh, compresslevel=compresslevel, threads=threads) as gz:
        gz.write(data)
    return gz.bytes_out


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


def write_tar_gz(
    members: Iterable[tuple[str, bytes]],
    out_path: str | os.PathLike,
    *,
    compresslevel: int = GZIP_LEVEL,
) -> Path:
    """Write ``(name, data)`` pairs as regular files into a new .tar.gz, atomically.

    Folders named in ``name`` (``"series/IM0001.dcm"``) get their own entries.  The tar is
    streamed through :class:`GzipStreamWriter` (parallel, level 1) as the members come, so
    a generator of members is never held in memory as a whole.  The archive appears under
    ``out_path`` only once complete.
    """
    out_path = Path(out_path)
    now = time.time()
    with (
        atomic_path(out_path) as tmp,
        open_streamed(tmp) as fh,
        GzipStreamWriter(fh, compresslevel=compresslevel) as gz,
        tarfile.open(fileobj=gz, mode="w") as tf,
    ):
        dirs_done: set[str] = set()
        for name, data in members:
            parts = PurePosixPath(name).parts
            for depth in range(1, len(parts)):
                d = "/".join(parts[:depth])
                if d not in dirs_done:
                    dinfo = tarfile.TarInfo(d)
                    dinfo.type = tarfile.DIRTYPE
                    dinfo.mode = 0o755
                    dinfo.mtime = int(now)
                    tf.addfile(dinfo)
                    dirs_done.add(d)
            tf.addfile(_tarinfo(name, len(data), now), io.BytesIO(data))
    return out_path


def pack_folder(
    folder: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    arcname: str | None = None,
    compresslevel: int = GZIP_LEVEL,
) -> Path:
    """Pack ``folder`` into ``out_path`` (.tar.gz) with its files inside one top-level folder
    ``arcname`` (default: the folder's name), atomically."""
    folder = Path(folder)
    top = arcname or folder.name

    def members():
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                yield f"{top}/{p.relative_to(folder).as_posix()}", p.read_bytes()

    return write_tar_gz(members(), out_path, compresslevel=compresslevel)
