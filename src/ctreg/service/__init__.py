"""A local drop-in for the retired RunCTRegistration cloud service (``ctreg serve``).

:class:`Server` answers the service's HTTP API (``Action=RunCTRegistration`` and
``Action=GetAsyncJobResult``), keeps its jobs in SQLite (:class:`JobStore`), runs them in local
processes or on a Dask cluster, and serves their results.  The client side is
:mod:`ctreg.client`.  Needs only the standard library (plus ``dask[distributed]`` for Dask).
"""

from .codes import ErrorCode, Status
from .options import ServiceOptions
from .server import Server
from .store import Job, JobStore

__all__ = ["ErrorCode", "Job", "JobStore", "Server", "ServiceOptions", "Status"]
