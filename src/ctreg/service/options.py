"""Settings of a service instance (``ctreg serve`` flags)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .._checks import known_fields
from ..errors import OptionError
from .jobs import DEFAULT_JOB_FN

__all__ = ["ServiceOptions"]


def _positive(name: str, value, *, integer: bool = False) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise OptionError(f"ServiceOptions.{name} must be {kind}, got {value!r}")


@known_fields
@dataclass(frozen=True, kw_only=True)
class ServiceOptions:
    """Settings of one :class:`~ctreg.service.server.Server`.

    Parameters
    ----------
    data_dir : folder of the job database (``jobs.sqlite3``), the downloads (``work/``) and the
        results (``results/``).  One server per folder (a lock file enforces it).
    host, port : address to listen on; port 0 picks a free port (see ``Server.url``).
    workers : jobs that run at the same time (local child processes, or Dask tasks in flight;
        None: 1 locally, the cluster's thread count with Dask).
    dask_scheduler : address of a Dask distributed scheduler; None runs jobs in local processes.
        Dask workers must see ``data_dir`` at the same path (shared file system).
    allow_file_urls : accept ``file://`` input URLs (only for a trusted, local setup).
    result_ttl_s : results (and the job's record) are removed this long after the job finished.
    job_timeout_s : an attempt running longer ends TIMEOUT_FAILED (local workers are killed).
    max_attempts : a job interrupted by a server crash runs again until it has started this
        many times, then ends PROCESS_FAILED (InternalError.Interrupted).
    download_timeout_s : timeout of each connection and read while fetching an input URL.
    max_download_bytes : cap on the total size of one list's files.
    max_urls : most URLs accepted in one list (more is an InvalidParameter at submission).
    max_frames : more files than this in one list fail the job at once (InvalidFile.FrameCount).
    preset : registration preset handed to the job function.
    public_url : base URL put in result links (e.g. behind a proxy); None: from the request's
        Host header.
    job_fn : "module:function" run for each job (see :mod:`ctreg.service.jobs`).
    start_method : "forkserver" (default where available) or "spawn" for the local pool.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int | None = None
    dask_scheduler: str | None = None
    allow_file_urls: bool = False
    result_ttl_s: float = 24 * 3600.0
    job_timeout_s: float = 3600.0
    max_attempts: int = 3
    download_timeout_s: float = 60.0
    max_download_bytes: int = 4 * 1024**3
    max_urls: int = 5000
    max_frames: int = 600
    preset: str = "default"
    public_url: str | None = None
    job_fn: str = DEFAULT_JOB_FN
    start_method: str | None = None
    extra_job_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 0 <= self.port <= 65535
        ):
            raise OptionError(f"ServiceOptions.port must be an integer 0..65535, got {self.port!r}")
        if not isinstance(self.host, str) or not self.host:
            raise OptionError(
                f"ServiceOptions.host must be a host name or address, got {self.host!r}"
            )
        if self.workers is not None:
            _positive("workers", self.workers, integer=True)
        for name in ("result_ttl_s", "job_timeout_s", "download_timeout_s"):
            _positive(name, getattr(self, name))
        for name in ("max_attempts", "max_download_bytes", "max_urls", "max_frames"):
            _positive(name, getattr(self, name), integer=True)
        if self.dask_scheduler is not None and not str(self.dask_scheduler).strip():
            raise OptionError(
                "ServiceOptions.dask_scheduler must be an address such as "
                "tcp://host:8786, got an empty string"
            )
        if not isinstance(self.preset, str) or not self.preset:
            raise OptionError(f"ServiceOptions.preset must be a preset name, got {self.preset!r}")
        if self.public_url is not None and not str(self.public_url).startswith(
            ("http://", "https://")
        ):
            raise OptionError(
                f"ServiceOptions.public_url must start with http:// or https://, "
                f"got {self.public_url!r}"
            )
        if not isinstance(self.job_fn, str) or ":" not in self.job_fn:
            raise OptionError(
                f"ServiceOptions.job_fn must be 'module:function', got {self.job_fn!r}"
            )
        if self.start_method not in (None, "forkserver", "spawn"):
            raise OptionError(
                f"ServiceOptions.start_method must be None, 'forkserver' or 'spawn', "
                f"got {self.start_method!r}"
            )
