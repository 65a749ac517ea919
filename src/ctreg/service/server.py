"""The HTTP server: the RunCTRegistration / GetAsyncJobResult API, result downloads, the
dispatcher that feeds the runner, and the housekeeping that expires old results.

Standard library only (``http.server.ThreadingHTTPServer``; the request handler is in
:mod:`ctreg.service.handler`).  Layout of the data folder::

    jobs.sqlite3          the job store (WAL)
    server.lock           one server per folder (holds the pid)
    server.json           {"url", "pid"} of the running server
    work/<job>/attempt-N/ downloads and outputs of a running attempt (removed afterwards)
    results/<job>/        outputs of a finished job, served as /results/<job>/<token>-<name>
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Callable, cast

from ..errors import CTRegError
from ..io.atomic import atomic_path
from .codes import ErrorCode, Status
from .handler import SERVED_FILES, _Handler, _HTTPServer
from .params import _LIST_KEY, ApiError, _invalid, _required, _url_list
from .options import ServiceOptions
from .runner import DaskRunner, ProcessRunner, make_runner
from .store import Job, JobStore
from .worker import job_fn_name

__all__ = ["Server", "ApiError", "SERVED_FILES"]

log = logging.getLogger("ctreg.service")

_JOB_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TOMBSTONE_S = 7 * 24 * 3600.0


class Server:
    """A local RunCTRegistration service.

    ``Server(options).start()`` binds the port, recovers the job table (jobs interrupted by a
    crash go back to the queue or fail after ``max_attempts``), and starts the dispatcher;
    ``stop()`` (or leaving a ``with`` block) stops serving, kills running attempts and puts their
    jobs back in the queue for the next start.

    ``job_fn`` (a module-level function or ``"module:function"``) replaces the options' job
    function: ``job_fn(reference, floating, out_dir, **job_options)``.
    """

    def __init__(self, options: ServiceOptions, *, job_fn: Callable | str | None = None):
        if not isinstance(options, ServiceOptions):
            raise TypeError(f"options must be a ServiceOptions, got {type(options).__name__}")
        self.options = options
        self.job_fn = job_fn_name(job_fn) if job_fn is not None else options.job_fn
        self.data_dir = options.data_dir
        self.results_dir = self.data_dir / "results"
        self.work_dir = self.data_dir / "work"
        self.store: JobStore | None = None
        self.runner: ProcessRunner | DaskRunner | None = None
        self._http: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._lock_fh: IO[str] | None = None
        self._running: dict[str, int] = {}  # job id -> attempt now running
        self._running_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._started = False
        self._last_housekeeping = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def _jobs(self) -> JobStore:
        """The job table (opened by :meth:`start`)."""
        if self.store is None:
            raise CTRegError("the server is not started")
        return self.store

    @property
    def _workers(self) -> ProcessRunner | DaskRunner:
        """The runner (made by :meth:`start`)."""
        if self.runner is None:
            raise CTRegError("the server is not started")
        return self.runner

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on (the real port when 0 was asked)."""
        if self._http is None:
            raise CTRegError("the server is not started")
        host, port = cast(tuple[str, int], self._http.server_address[:2])
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> "Server":
        if self._started:
            raise CTRegError("the server is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._stopping.clear()
        self._threads = []
        self.runner = None
        try:
            self.store = JobStore(self.data_dir / "jobs.sqlite3")
            requeued, failed = self.store.recover_interrupted(self.options.max_attempts)
            if requeued or failed:
                log.warning(
                    "recovered after a stop: %d job(s) re-queued, %d failed (attempts exhausted)",
                    len(requeued),
                    len(failed),
                )
            self._clean_folders()
            self.runner = make_runner(
                workers=self.options.workers,
                dask_scheduler=self.options.dask_scheduler,
                start_method=self.options.start_method,
            )
            self._http = _HTTPServer((self.options.host, self.options.port), _Handler)
            self._http.app = self
        except BaseException:
            if self.runner is not None:
                self.runner.shutdown()
            self._release_lock()
            raise
        self._started = True
        for name, target in (
            ("ctreg-http", self._http.serve_forever),
            ("ctreg-dispatch", self._dispatch_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        with atomic_path(self.data_dir / "server.json") as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "url": self.url,
                        "pid": os.getpid(),
                        "runner": self.runner.kind,
                        "started_s": time.time(),
                    }
                )
            )
        log.info(
            "serving on %s (data dir %s, %s runner, %d worker(s))",
            self.url,
            self.data_dir,
            self.runner.kind,
            self.runner.capacity,
        )
        self._wake.set()
        return self

    def stop(self) -> None:
        """Stop serving; running attempts are killed and their jobs re-queued (not counted)."""
        if not self._started:
            return
        self._stopping.set()
        self._wake.set()
        assert self._http is not None
        self._http.shutdown()
        self._http.server_close()
        for t in self._threads:
            t.join(30)
        self._workers.shutdown()
        with self._running_lock:
            running = dict(self._running)
            self._running.clear()
        for job_id, attempt in running.items():
            if self._jobs.requeue(job_id, attempt):
                log.info("job %s re-queued (server stopping)", job_id)
        with contextlib.suppress(OSError):
            (self.data_dir / "server.json").unlink()
        self._release_lock()
        self._started = False

    def __enter__(self) -> "Server":
        return self.start() if not self._started else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start (if needed) and block until interrupted (Ctrl-C, or SIGTERM via
        KeyboardInterrupt)."""
        if not self._started:
            self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    def _acquire_lock(self) -> None:
        path = self.data_dir / "server.lock"
        fh = open(path, "a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock, trust the operator
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "?"
                fh.close()
                raise CTRegError(
                    f"data dir {self.data_dir} is in use by another ctreg server "
                    f"(pid {holder}); stop it or choose another --data-dir"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing the file drops the flock
            self._lock_fh = None

    def _clean_folders(self) -> None:
        """Nothing runs yet: remove every attempt folder, and result folders of jobs that are not
        (or no longer) successful -- e.g. moved into place just before a crash."""
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        for folder in self.results_dir.iterdir():
            job = self._jobs.get(folder.name)
            if job is None or job.expired_s is not None or job.status != Status.PROCESS_SUCCESS:
                shutil.rmtree(folder, ignore_errors=True)

    # -- API --------------------------------------------------------------------------------
    @staticmethod
    def error_body(exc: ApiError) -> dict:
        return {"RequestId": str(uuid.uuid4()).upper(), "Code": exc.code, "Message": exc.message}

    def handle_api(self, params: dict[str, str], base_url: str) -> tuple[int, dict]:
        """Answer one API call: (HTTP status, JSON body).  Raises :class:`ApiError`."""
        action = params.get("Action")
        if action is None or not action.strip():
            raise _invalid(
                "parameter Action is missing; accepted: RunCTRegistration, GetAsyncJobResult"
            )
        if action == "RunCTRegistration":
            return 200, self._run_ct_registration(params)
        if action == "GetAsyncJobResult":
            return 200, self._get_async_job_result(params, base_url)
        raise _invalid(
            f"parameter Action={action[:64]!r} is not supported; accepted: "
            "RunCTRegistration, GetAsyncJobResult"
        )

    def _run_ct_registration(self, params: dict[str, str]) -> dict:
        data_format = _required(params, "DataFormat")
        if data_format.upper() != "DICOM":
            raise _invalid(
                f"parameter DataFormat={data_format[:64]!r} is not supported; accepted: DICOM"
            )
        source = _required(params, "DataSourceType")
        if source.upper() != "HTTP_FILES":
            raise _invalid(
                f"parameter DataSourceType={source[:64]!r} is not supported; accepted: HTTP_FILES"
            )
        org_id = _required(params, "OrgId")
        org_name = _required(params, "OrgName")
        schemes = self._schemes()
        kw: dict[str, Any] = dict(schemes=schemes, max_urls=self.options.max_urls)
        reference = _url_list(params, "ReferenceList", "ReferenceURL", **kw)
        floating = _url_list(params, "FloatingList", "FloatingURL", **kw)
        for key in params:  # e.g. FloatingList.1.ReferenceURL, a typo that would be dropped
            m = _LIST_KEY.match(key)
            if key.startswith(("ReferenceList.", "FloatingList.")) and not m:
                raise _invalid(
                    f"parameter {key} is not recognised; accepted: "
                    "ReferenceList.N.ReferenceURL and FloatingList.N.FloatingURL"
                )
        job = self._jobs.create(
            org_id=org_id, org_name=org_name, reference_urls=reference, floating_urls=floating
        )
        log.info(
            "job %s queued (%s: %d reference, %d floating files)",
            job.job_id,
            org_id,
            len(reference),
            len(floating),
        )
        self._wake.set()
        return {"RequestId": job.job_id, "Data": {}}

    def _schemes(self) -> tuple[str, ...]:
        return ("http", "https") + (("file",) if self.options.allow_file_urls else ())

    def _get_async_job_result(self, params: dict[str, str], base_url: str) -> dict:
        job_id = _required(params, "JobId", max_chars=64)
        if not _JOB_ID.match(job_id):
            raise _invalid(
                "parameter JobId is invalid; accepted: the RequestId that "
                "RunCTRegistration answered"
            )
        job = self._jobs.get(job_id.upper())
        if job is None:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                ErrorCode.JOB_NOT_FOUND,
                f"JobId {job_id} is not a job of this server (or its record was "
                f"removed after it expired); submit the job again",
            )
        if job.expired_s is not None:
            raise ApiError(
                HTTPStatus.GONE,
                ErrorCode.JOB_EXPIRED,
                f"job {job.job_id} ended {job.status} and its results expired "
                f"(kept {self.options.result_ttl_s:g} s after the job finished); "
                "submit the job again",
            )
        result = None
        if job.status == Status.PROCESS_SUCCESS:
            base = f"{base_url}/results/{job.job_id}/{job.token}-"
            result = json.dumps(
                {"NUrl": base + "registered.nii.gz", "DUrl": base + "registered.tar.gz"}
            )
        return {
            "RequestId": str(uuid.uuid4()).upper(),
            "Data": {
                "JobId": job.job_id,
                "Status": job.status,
                "Result": result,
                "ErrorCode": job.error_code,
                "ErrorMessage": job.error_message,
            },
        }

    def result_file(self, url_path: str) -> tuple[Path, str]:
        """The file behind ``/results/<job id>/<token>-<name>``: looked up, never joined from the
        request (a path that is not exactly one of the job's result URLs is a 404)."""
        not_found = ApiError(
            HTTPStatus.NOT_FOUND,
            ErrorCode.NOT_FOUND,
            "no such result; use the URLs that GetAsyncJobResult gives",
        )
        parts = url_path.split("/")
        if (
            len(parts) != 4
            or parts[0] != ""
            or parts[1] != "results"
            or not _JOB_ID.match(parts[2])
        ):
            raise not_found
        job = self._jobs.get(parts[2])
        if job is None or job.status != Status.PROCESS_SUCCESS:
            raise not_found
        if job.expired_s is not None:
            raise ApiError(
                HTTPStatus.GONE,
                ErrorCode.JOB_EXPIRED,
                f"the results of job {job.job_id} expired; submit the job again",
            )
        names = {f"{job.token}-{name}": name for name in SERVED_FILES}
        name = names.get(urllib.parse.unquote(parts[3]))
        if name is None:
            raise not_found
        return self.results_dir / job.job_id / name, name

    # -- jobs -------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._housekeeping()
                self._dispatch()
            except Exception:  # keep dispatching; a failing database shows in the log
                log.exception("dispatcher error")
                time.sleep(1.0)

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            with self._running_lock:
                if len(self._running) >= self._workers.capacity:
                    return
            job = self._jobs.claim_next()
            if job is None:
                return
            with self._running_lock:
                self._running[job.job_id] = job.attempts
            try:
                self._start_attempt(job)
            except Exception as exc:  # e.g. disk full: fail the job rather than leave it running
                log.exception("job %s could not be started", job.job_id)
                self._on_done(
                    job,
                    {
                        "ok": False,
                        "error_code": ErrorCode.INTERNAL,
                        "error_message": f"the job could not be started "
                        f"({type(exc).__name__}: {exc})",
                    },
                )

    def _start_attempt(self, job: Job) -> None:
        attempt_dir = self.work_dir / job.job_id / f"attempt-{job.attempts}"
        shutil.rmtree(attempt_dir, ignore_errors=True)
        attempt_dir.mkdir(parents=True)
        spec = {
            "job_id": job.job_id,
            "attempt": job.attempts,
            "reference_urls": list(job.reference_urls),
            "floating_urls": list(job.floating_urls),
            "work_dir": str(attempt_dir),
            "job_fn": self.job_fn,
            "job_options": {"preset": self.options.preset, **self.options.extra_job_options},
            "download": {
                "timeout_s": self.options.download_timeout_s,
                "max_bytes": self.options.max_download_bytes,
                "allow_file": self.options.allow_file_urls,
                "schemes": ("http", "https"),
            },
            "max_frames": self.options.max_frames,
            # local jobs share the machine's cores; Dask workers have their own setting
            "threads": (
                max(1, (os.cpu_count() or 1) // self._workers.capacity)
                if self._workers.kind == "process"
                else None
            ),
        }
        log.info("job %s: attempt %d started", job.job_id, job.attempts)
        self._workers.submit(
            spec, self.options.job_timeout_s, functools.partial(self._on_done, job)
        )

    def _on_done(self, job: Job, outcome: dict) -> None:
        """Record an attempt's outcome (called from a runner's watcher thread)."""
        attempt = job.attempts
        try:
            if outcome.get("ok"):
                final = self.results_dir / job.job_id
                try:
                    shutil.rmtree(final, ignore_errors=True)
                    os.replace(outcome["out_dir"], final)
                except OSError as exc:
                    outcome = {
                        "ok": False,
                        "error_code": ErrorCode.INTERNAL,
                        "error_message": f"the job's outputs could not be moved into place "
                        f"({exc}); with Dask, workers must see the data "
                        "dir at the same path",
                    }
                else:
                    if self._jobs.finish(job.job_id, attempt, Status.PROCESS_SUCCESS):
                        log.info(
                            "job %s: PROCESS_SUCCESS (%.1f s)",
                            job.job_id,
                            outcome.get("seconds", float("nan")),
                        )
                    else:  # the job moved on meanwhile (re-queued); drop this attempt's result
                        shutil.rmtree(final, ignore_errors=True)
            if not outcome.get("ok"):
                status = (
                    Status.TIMEOUT_FAILED if outcome.get("timed_out") else Status.PROCESS_FAILED
                )
                self._jobs.finish(
                    job.job_id,
                    attempt,
                    status,
                    error_code=outcome.get("error_code"),
                    error_message=outcome.get("error_message"),
                )
                log.info(
                    "job %s: %s %s: %s",
                    job.job_id,
                    status,
                    outcome.get("error_code"),
                    outcome.get("error_message"),
                )
        except Exception:
            log.exception("job %s: recording its outcome failed", job.job_id)
        finally:
            shutil.rmtree(self.work_dir / job.job_id, ignore_errors=True)
            with self._running_lock:
                if self._running.get(job.job_id) == attempt:
                    del self._running[job.job_id]
            self._wake.set()

    def _housekeeping(self, *, force: bool = False) -> None:
        """Expire results older than ``result_ttl_s`` (files removed, record kept as a tombstone
        for a week so that GetAsyncJobResult can say what happened)."""
        now = time.time()
        interval = min(60.0, max(0.2, self.options.result_ttl_s / 4))
        if not force and now - self._last_housekeeping < interval:
            return
        self._last_housekeeping = now
        for job_id in self._jobs.mark_expired(now - self.options.result_ttl_s, now_s=now):
            shutil.rmtree(self.results_dir / job_id, ignore_errors=True)
            log.info("job %s: results expired and removed", job_id)
        self._jobs.purge_expired(now - _TOMBSTONE_S)
