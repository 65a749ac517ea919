"""Where job attempts run: local child processes (default) or a Dask distributed cluster.

Both runners take ``submit(spec, timeout_s, on_done)`` and call ``on_done(outcome)`` exactly once
per attempt from a watcher thread -- unless the runner is shut down first (the server then puts
the job back in the queue).  An outcome is the dict of :func:`~ctreg.service.worker.execute_job`,
or a failure made here (timeout, crashed worker).

Local pool: each attempt runs in its own child process from a ``forkserver`` context (``spawn``
where there is none) whose server preloads ctreg, so a job starts in milliseconds without
inheriting the HTTP server's threads.  ``concurrent.futures.ProcessPoolExecutor`` was not used
because it cannot stop one task: killing a timed-out job's worker breaks the whole pool and every
other running job with it.  Here a timed-out attempt's process is killed alone, and a child whose
server died exits by itself (it watches its pipe to the server).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any, Callable

from .codes import ErrorCode

__all__ = ["ProcessRunner", "DaskRunner", "make_runner"]

log = logging.getLogger("ctreg.service")

OnDone = Callable[[dict], None]


def _timeout_outcome(timeout_s: float, where: str) -> dict:
    return {
        "ok": False,
        "timed_out": True,
        "error_code": ErrorCode.TIMEOUT,
        "error_message": f"the job ran longer than the per-job timeout of {timeout_s:g} s "
        f"({where}); try smaller inputs or ask the operator for a longer "
        "--job-timeout-s",
    }


class ProcessRunner:
    """Runs each attempt in a fresh child process; at most ``workers`` at a time (the server
    enforces the count through :attr:`capacity`)."""

    kind = "process"

    def __init__(self, workers: int = 1, *, start_method: str | None = None):
        methods = multiprocessing.get_all_start_methods()
        method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        # typeshed gives a str method BaseContext, which lacks Process
        self._ctx: Any = multiprocessing.get_context(method)
        if method == "forkserver":
            # modules imported once in the fork server, inherited by every job's process
            self._ctx.set_forkserver_preload(
                ["ctreg.service.worker", "ctreg.io.dicom", "ctreg.io.nifti", "ctreg"]
            )
        self.start_method = method
        self.capacity = int(workers)
        self._lock = threading.Lock()
        self._active: dict[str, tuple] = {}  # key -> (process, watcher thread)
        self._closing = threading.Event()

    def submit(self, spec: dict, timeout_s: float, on_done: OnDone) -> None:
        from .worker import child_main

        key = f"{spec['job_id']}/{spec['attempt']}"
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=child_main,
            args=(child_conn, spec),
            daemon=True,
            name=f"ctreg-job-{spec['job_id'][:8]}",
        )
        proc.start()
        child_conn.close()
        watcher = threading.Thread(
            target=self._watch,
            name=f"ctreg-watch-{spec['job_id'][:8]}",
            args=(key, proc, parent_conn, timeout_s, on_done),
            daemon=True,
        )
        with self._lock:
            self._active[key] = (proc, watcher)
        watcher.start()

    def _watch(self, key, proc, conn, timeout_s: float, on_done: OnDone) -> None:
        deadline = time.monotonic() + timeout_s
        outcome: dict | None = None
        try:
            while outcome is None:
                if self._closing.is_set():
                    proc.kill()
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "job %s: timed out after %g s; killing pid %s", key, timeout_s, proc.pid
                    )
                    proc.kill()
                    outcome = _timeout_outcome(timeout_s, "its process was stopped")
                    break
                if conn.poll(min(remaining, 0.25)):
                    try:
                        outcome = conn.recv()
                    except (EOFError, OSError):
                        proc.join(5)
                        outcome = {
                            "ok": False,
                            "error_code": ErrorCode.INTERNAL,
                            "error_message": f"the job's process ended unexpectedly (exit "
                            f"code {proc.exitcode}; e.g. out of memory); "
                            "see the server log",
                        }
        finally:
            conn.close()  # the child's watchdog sees EOF and exits if still there
            proc.join(10)
            if proc.is_alive():  # pragma: no cover - a child that ignores its pipe
                proc.kill()
                proc.join(5)
            with self._lock:
                self._active.pop(key, None)
        if outcome is not None and not self._closing.is_set():
            on_done(outcome)

    def shutdown(self) -> None:
        """Kill every running attempt (their jobs are re-queued by the server) and wait."""
        self._closing.set()
        with self._lock:
            active = list(self._active.values())
        for proc, _ in active:
            proc.kill()
        for _, watcher in active:
            watcher.join(15)


class DaskRunner:
    """Runs attempts as tasks on a Dask distributed cluster (``--dask-scheduler ADDRESS``).

    A timed-out task is cancelled and reported TIMEOUT_FAILED; Dask cannot interrupt a task that
    is already running, so its worker finishes it and the result is discarded.
    """

    kind = "dask"

    def __init__(self, address: str, workers: int | None = None, *, connect_timeout_s: float = 30):
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the installation
            from ..errors import CTRegError

            raise CTRegError(
                "--dask-scheduler needs dask.distributed: pip install 'ctreg[service]'"
            ) from exc
        self.address = address
        self.client = Client(address, timeout=connect_timeout_s, set_as_default=False)
        if workers is None:
            workers = max(1, sum(self.client.nthreads().values()))
        self.capacity = int(workers)
        self._lock = threading.Lock()
        self._active: dict[str, tuple] = {}
        self._closing = threading.Event()

    def submit(self, spec: dict, timeout_s: float, on_done: OnDone) -> None:
        from .worker import execute_job

        key = f"ctreg-job-{spec['job_id']}-{spec['attempt']}"
        future = self.client.submit(execute_job, spec, key=key, pure=False, retries=0)
        watcher = threading.Thread(
            target=self._watch,
            args=(key, future, timeout_s, on_done),
            name=f"ctreg-dask-{spec['job_id'][:8]}",
            daemon=True,
        )
        with self._lock:
            self._active[key] = (future, watcher)
        watcher.start()

    def _watch(self, key, future, timeout_s: float, on_done: OnDone) -> None:
        deadline = time.monotonic() + timeout_s
        outcome: dict | None = None
        try:
            while outcome is None and not self._closing.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    future.cancel()
                    outcome = _timeout_outcome(timeout_s, "the Dask task was cancelled")
                    break
                try:
                    outcome = future.result(timeout=min(remaining, 0.25))
                except TimeoutError:
                    continue
                except BaseException as exc:  # raised, cancelled, or its worker died (KilledWorker)
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    if self._closing.is_set():
                        break
                    log.error("dask task %s failed: %r", key, exc)
                    outcome = {
                        "ok": False,
                        "error_code": ErrorCode.INTERNAL,
                        "error_message": f"the Dask task failed ({type(exc).__name__}: "
                        f"{exc}); see the server and worker logs",
                    }
        finally:
            with self._lock:
                self._active.pop(key, None)
        if outcome is not None and not self._closing.is_set():
            on_done(outcome)

    def shutdown(self) -> None:
        self._closing.set()
        with self._lock:
            active = list(self._active.values())
        for future, _ in active:
            future.cancel()
        for _, watcher in active:
            watcher.join(15)
        self.client.close()


def make_runner(
    *, workers: int | None, dask_scheduler: str | None, start_method: str | None = None
) -> ProcessRunner | DaskRunner:
    """The runner the options ask for."""
    if dask_scheduler:
        return DaskRunner(dask_scheduler, workers)
    return ProcessRunner(workers or 1, start_method=start_method)
