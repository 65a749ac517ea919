"""Download input files named by URL (the service accepted lists of http(s) links).

:func:`download_urls` fetches each URL into a folder with a per-request timeout and a cap on
the total number of bytes, and raises :class:`DownloadError` (a
:class:`~ctreg.errors.DicomSeriesError` with ``code = "InvalidFile.Download"``) naming the URL
on any failure.  ``file://`` URLs are refused unless ``allow_file=True`` (a server must not let
its users read its own disk).
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Lock
from typing import Sequence, cast

from ..errors import DicomSeriesError

__all__ = ["DownloadError", "download_urls", "is_url"]

_CHUNK = 1 << 20


class DownloadError(DicomSeriesError):
    """A URL could not be fetched; ``code`` is a stable machine-readable reason:
    ``InvalidFile.Download`` (HTTP error, timeout, no such file), ``InvalidFile.URL`` (scheme not
    accepted, also after a redirect) or ``InvalidFile.TooLarge`` (over the size cap)."""

    code = "InvalidFile.Download"
    codes = ("InvalidFile.Download", "InvalidFile.URL", "InvalidFile.TooLarge")

    def __init__(self, message: str, *, url: str, code: str | None = None):
        super().__init__(message, code=code)
        self.url = url


def is_url(text: object) -> bool:
    """True for strings that start with ``http://``, ``https://`` or ``file://``."""
    return isinstance(text, str) and re.match(r"^(https?|file)://", text, re.IGNORECASE) is not None


def _local_name(url: str, index: int) -> str:
    base = os.path.basename(urllib.parse.urlparse(url).path) or "file"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)[:100].lstrip(".") or "file"
    return f"{index:05d}_{base}"


class _Stopped(DownloadError):
    """A download cut short because another URL of the same list failed."""


def download_urls(
    urls: Sequence[str],
    dest_dir: str | os.PathLike,
    *,
    timeout_s: float = 60,
    max_bytes: int = 2 * 1024**3,
    allow_file: bool = False,
    schemes: Sequence[str] = ("http", "https"),
    max_workers: int = 4,
) -> list[Path]:
    """Fetch every URL into ``dest_dir``; return the local paths in the order of ``urls``.

    Parameters
    ----------
    urls : http(s):// (or, with ``allow_file``, file://) URLs.
    dest_dir : folder to write into (created if needed).  Files are named
        ``<index>_<basename of the URL path>``.
    timeout_s : timeout of each connection and each read, seconds.
    max_bytes : cap on the total size of all downloads; exceeding it stops at once.
    allow_file : accept ``file://`` URLs (for local use; a server should leave this False).
    schemes : accepted network schemes.
    max_workers : parallel downloads.

    Raises
    ------
    DownloadError
        naming the URL: unsupported scheme, HTTP error status, timeout, connection failure,
        a missing local file, or the size cap.  Partial files are removed.
    """
    if isinstance(urls, (str, bytes)):
        urls = [urls]
    urls = list(urls)
    if not urls:
        raise DownloadError("no URLs given; accepted: a non-empty list of URLs", url="")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
    accepted = tuple(s.lower() for s in schemes) + (("file",) if allow_file else ())
    for url in urls:
        scheme = urllib.parse.urlparse(str(url)).scheme.lower()
        if scheme not in accepted:
            raise DownloadError(
                f"URL {url!r} has scheme {scheme or '(none)'!r}; accepted: "
                f"{', '.join(s + '://' for s in accepted)}",
                url=str(url),
                code="InvalidFile.URL",
            )
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    lock = Lock()
    state = {"total": 0}

    def account(n: int, url: str) -> None:
        with lock:
            if state.get("failed"):  # another download failed: stop this one early
                raise _Stopped(f"downloading {url!r} stopped: another URL failed", url=url)
            state["total"] += n
            if state["total"] > max_bytes:
                raise DownloadError(
                    f"downloading {url!r}: the inputs exceed {max_bytes} bytes in total; accepted: "
                    f"at most {max_bytes} bytes",
                    url=url,
                    code="InvalidFile.TooLarge",
                )

    def fetch(item: tuple[int, str]) -> Path:
        index, url = item
        target = dest / _local_name(url, index)
        try:
            if urllib.parse.urlparse(url).scheme.lower() == "file":
                src_path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
                if not src_path.is_file():
                    raise DownloadError(f"URL {url!r}: no such file {src_path}", url=url)
                account(src_path.stat().st_size, url)
                shutil.copyfile(src_path, target)
                return target
            req = urllib.request.Request(url, headers={"User-Agent": "ctreg"})
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (scheme checked)
                final_scheme = urllib.parse.urlparse(resp.geturl()).scheme.lower()
                if final_scheme not in accepted:
                    raise DownloadError(
                        f"URL {url!r} redirected to scheme {final_scheme!r}; refused",
                        url=url,
                        code="InvalidFile.URL",
                    )
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise DownloadError(
                        f"URL {url!r} is {length} bytes; accepted: at most {max_bytes} bytes",
                        url=url,
                        code="InvalidFile.TooLarge",
                    )
                with open(target, "wb") as fh:
                    while chunk := resp.read(_CHUNK):
                        account(len(chunk), url)
                        fh.write(chunk)
            return target
        except DownloadError:
            state["failed"] = True
            target.unlink(missing_ok=True)
            raise
        except urllib.error.HTTPError as exc:
            state["failed"] = True
            target.unlink(missing_ok=True)
            raise DownloadError(
                f"downloading {url!r} failed: HTTP {exc.code} {exc.reason}", url=url
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            state["failed"] = True
            target.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"downloading {url!r} failed: {type(exc).__name__}: {reason} "
                f"(timeout {timeout_s} s)",
                url=url,
            ) from exc

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(urls)))) as pool:
        futures = [pool.submit(fetch, (i, str(u))) for i, u in enumerate(urls)]
        paths: list[Path] = []
        error: BaseException | None = None
        stopped: BaseException | None = None
        for fut in futures:
            try:
                paths.append(fut.result())
            except _Stopped as exc:  # a consequence of another URL's failure, not the cause
                stopped = stopped or exc
            except BaseException as exc:  # keep the first real error, let the others finish
                error = error or exc
    if error is not None or stopped is not None:
        raise cast(BaseException, error or stopped)
    return paths
