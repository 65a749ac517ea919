"""What runs on a worker (a child process of the local pool, or a Dask worker): one job attempt.

:func:`execute_job` downloads both URL lists, reads and validates both series with
:func:`ctreg.io.dicom.read_dicom_series`, calls the job function, and returns an outcome dict;
it never raises for a bad input (the outcome carries the error code and message), so that the
server records every failure as a job state.  Its only side effects are inside
``spec["work_dir"]``: the server moves the outputs into place when it accepts the outcome, so a
stale attempt (after a crash or a timeout) can never overwrite a newer result.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .codes import ErrorCode, classify_error

__all__ = ["execute_job", "resolve_job_fn", "job_fn_name", "REQUIRED_OUTPUTS"]

log = logging.getLogger("ctreg.service")

#: files a job function must write into its output folder (the job's NUrl and DUrl).
REQUIRED_OUTPUTS = ("registered.nii.gz", "registered.tar.gz")


def job_fn_name(fn: Callable | str) -> str:
    """``"module:qualname"`` of a module-level function (how job functions travel to workers)."""
    if isinstance(fn, str):
        if ":" not in fn:
            raise ValueError(f"job_fn must be 'module:function', got {fn!r}")
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        raise ValueError(
            f"job_fn must be a module-level function (importable by workers), got {fn!r}"
        )
    return f"{module}:{qualname}"


def resolve_job_fn(name: str) -> Callable:
    """Import ``"module:qualname"``."""
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"job function {name!r} is not callable")
    return obj


def _user_message(text: str, names: dict[str, str], folder: Path) -> str:
    """Name inputs by their parameter and URL, not by the worker's local paths."""
    for local in sorted(names, key=len, reverse=True):
        text = text.replace(local, names[local])
    return text.replace(str(folder), "the downloaded files")


def _fail(code: str, message: str, **extra) -> dict:
    return {"ok": False, "error_code": code, "error_message": message, **extra}


def execute_job(spec: dict) -> dict:
    """Run one attempt of a job described by ``spec``; return its outcome.

    ``spec`` keys: job_id, attempt, reference_urls, floating_urls, work_dir, job_fn
    ("module:function"), job_options (keyword arguments of the job function, e.g. preset),
    download (keyword arguments of :func:`ctreg.io.fetch.download_urls`: timeout_s, max_bytes,
    allow_file, schemes), max_frames, threads (ctreg threads of this job; None: leave as is).

    The outcome is ``{"ok": True, "out_dir": str, "seconds": float}`` or
    ``{"ok": False, "error_code": str, "error_message": str}``.
    """
    t0 = time.perf_counter()
    work = Path(spec["work_dir"])
    out_dir = work / "out"
    lists = (
        ("ReferenceList", "reference", spec["reference_urls"]),
        ("FloatingList", "floating", spec["floating_urls"]),
    )
    try:
        from ..io.atomic import atomic_dir
        from ..io.dicom import read_dicom_series
        from ..io.fetch import download_urls
    except Exception as exc:  # pragma: no cover - a broken installation
        return _fail(ErrorCode.INTERNAL, f"ctreg is not importable on this worker: {exc}")

    max_frames = int(spec.get("max_frames", 600))
    volumes = {}
    for label, key, urls in lists:
        if len(urls) > max_frames:
            return _fail(
                ErrorCode.FRAME_COUNT,
                f"{label}: {len(urls)} files were given, so the series has more than "
                f"{max_frames} frames; accepted: 8 to {max_frames} frames (one URL per "
                "DICOM file)",
            )
        try:
            paths = download_urls(urls, work / key, **spec.get("download", {}))
        except Exception as exc:
            item = "ReferenceURL" if key == "reference" else "FloatingURL"
            where = label
            url = getattr(exc, "url", None)
            if url in urls:
                where = f"{label}.{list(urls).index(url) + 1}.{item}"
            return _fail(classify_error(exc, "download"), f"{where}: {exc}")
        try:
            volumes[key] = read_dicom_series(work / key)
        except Exception as exc:
            code = classify_error(exc, "read")
            if code == ErrorCode.INTERNAL:
                log.exception("job %s: reading %s failed", spec["job_id"], label)
            item = "ReferenceURL" if key == "reference" else "FloatingURL"
            names = {
                str(p): f"{label}.{n}.{item} ({url})"
                for n, (p, url) in enumerate(zip(paths, urls), start=1)
            }
            return _fail(code, f"{label}: {_user_message(str(exc), names, work / key)}")
    try:
        if spec.get("threads"):
            from ..ops import set_num_threads

            set_num_threads(int(spec["threads"]))
        job_fn = resolve_job_fn(spec["job_fn"])
        with atomic_dir(out_dir) as tmp:
            job_fn(volumes["reference"], volumes["floating"], tmp, **spec.get("job_options", {}))
            missing = [name for name in REQUIRED_OUTPUTS if not (tmp / name).is_file()]
            if missing:
                raise RuntimeError(f"the job function {spec['job_fn']} did not write {missing}")
    except Exception as exc:
        code = classify_error(exc, "process")
        log.error(
            "job %s failed: %s",
            spec["job_id"],
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        text = str(exc).replace(str(work), "(job folder)")
        if code == ErrorCode.INTERNAL:
            return _fail(
                code,
                f"registration failed ({type(exc).__name__}: {text}); the server "
                "log has the details",
            )
        return _fail(code, text)
    return {"ok": True, "out_dir": str(out_dir), "seconds": time.perf_counter() - t0}


# -- child process of the local pool ----------------------------------------------------------
def _watch_parent(conn) -> None:
    """Exit when the server goes away (its end of the pipe closes): no orphaned jobs."""
    try:
        while True:
            conn.recv()  # the server never sends; returns only by EOF / error
    except (EOFError, OSError):
        os._exit(70)


def child_main(conn, spec: dict) -> None:
    """Entry point of a job's child process: run the job, send the outcome through ``conn``."""
    threading.Thread(
        target=_watch_parent, args=(conn,), daemon=True, name="ctreg-parent-watch"
    ).start()
    try:
        outcome = execute_job(spec)
    except BaseException as exc:  # pragma: no cover - execute_job catches job errors itself
        outcome = _fail(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    conn.send(outcome)
