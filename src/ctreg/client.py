"""Client of the RunCTRegistration service: the calls the cloud SDK offered, for ``ctreg serve``.

>>> from ctreg import client
>>> job_id = client.run_ct_registration(reference_urls, floating_urls)["RequestId"]
>>> data = client.wait(job_id, timeout=1800)           # the final Data dict
>>> client.download_results(data, "out/")              # registered.nii.gz, registered.tar.gz

The endpoint defaults to ``$CTREG_ENDPOINT`` or ``http://127.0.0.1:8080``.  Errors the service
answers (HTTP 4xx/5xx) raise :class:`ServiceError` with its ``code`` and ``message``.
Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable

from .errors import CTRegError
from .io.atomic import atomic_path

__all__ = [
    "ServiceError",
    "DEFAULT_ENDPOINT",
    "FINISHED_STATUSES",
    "run_ct_registration",
    "get_async_job_result",
    "wait",
    "download_results",
]

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
FINISHED_STATUSES = ("PROCESS_SUCCESS", "PROCESS_FAILED", "TIMEOUT_FAILED")


class ServiceError(CTRegError):
    """The service answered an error (``code``, ``message``, ``http_status``, ``request_id``),
    or could not be reached (``code`` = "ServiceUnavailable"); ``code`` is the service's
    ``Code`` / ``ErrorCode`` (its ``ErrorCode`` values, see docs/errors.md)."""

    code = "ServiceUnavailable"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
    ):
        super().__init__(f"{code}: {message}" + (f" (HTTP {http_status})" if http_status else ""))
        self.code, self.message = code, message
        self.http_status, self.request_id = http_status, request_id


def _endpoint(endpoint: str | None) -> str:
    url = endpoint or os.environ.get("CTREG_ENDPOINT") or DEFAULT_ENDPOINT
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def _call(params: dict[str, str], *, endpoint: str | None, timeout_s: float, method: str) -> dict:
    base = _endpoint(endpoint) + "/"
    data = urllib.parse.urlencode(params).encode("ascii")
    if method.upper() == "GET":
        req = urllib.request.Request(base + "?" + data.decode("ascii"), method="GET")
    elif method.upper() == "POST":
        req = urllib.request.Request(
            base,
            data=data,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        raise ValueError(f"method must be 'GET' or 'POST', got {method!r}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            payload = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            payload = {}
        raise ServiceError(
            payload.get("Code", f"HTTP{exc.code}"),
            payload.get("Message", body[:200].decode("utf-8", "replace")),
            http_status=exc.code,
            request_id=payload.get("RequestId"),
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ServiceError(
            "ServiceUnavailable", f"cannot reach {base} ({getattr(exc, 'reason', exc)})"
        ) from None


def run_ct_registration(
    reference_urls: Iterable[str],
    floating_urls: Iterable[str],
    *,
    endpoint: str | None = None,
    org_id: str = "ctreg-user",
    org_name: str = "ctreg user",
    data_format: str = "DICOM",
    data_source_type: str = "HTTP_FILES",
    method: str = "POST",
    timeout_s: float = 60.0,
) -> dict:
    """Submit a registration (one URL per DICOM file in each list).

    Returns the answer ``{"RequestId": job id, "Data": {}}``; poll it with
    :func:`get_async_job_result` or :func:`wait`.
    """
    params = {
        "Action": "RunCTRegistration",
        "DataFormat": data_format,
        "DataSourceType": data_source_type,
        "OrgId": org_id,
        "OrgName": org_name,
    }
    for list_name, item, urls in (
        ("ReferenceList", "ReferenceURL", reference_urls),
        ("FloatingList", "FloatingURL", floating_urls),
    ):
        if isinstance(urls, (str, bytes)):
            raise TypeError(
                f"{list_name}: pass a list of URLs (one per DICOM file), not one string"
            )
        for n, url in enumerate(urls, start=1):
            params[f"{list_name}.{n}.{item}"] = str(url)
    return _call(params, endpoint=endpoint, timeout_s=timeout_s, method=method)


def get_async_job_result(
    job_id: str, *, endpoint: str | None = None, timeout_s: float = 30.0, method: str = "GET"
) -> dict:
    """``{"RequestId", "Data": {"JobId", "Status", "Result", "ErrorCode", "ErrorMessage"}}``.

    ``Result`` (on PROCESS_SUCCESS) is a JSON string ``{"NUrl": ..., "DUrl": ...}``.
    """
    return _call(
        {"Action": "GetAsyncJobResult", "JobId": str(job_id)},
        endpoint=endpoint,
        timeout_s=timeout_s,
        method=method,
    )


def wait(
    job_id: str, timeout: float = 3600.0, *, endpoint: str | None = None, poll_s: float = 1.0
) -> dict:
    """Poll until the job has finished; return its ``Data`` dict (any final status).

    Raises ``TimeoutError`` when it has not finished after ``timeout`` seconds.
    """
    deadline = time.monotonic() + float(timeout)
    delay = min(0.1, poll_s)
    while True:
        data = get_async_job_result(job_id, endpoint=endpoint)["Data"]
        if data.get("Status") in FINISHED_STATUSES:
            return data
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"job {job_id} is still {data.get('Status')} after {timeout} s")
        time.sleep(min(delay, remaining))
        delay = min(poll_s, delay * 2)


def download_results(
    data: dict, dest_dir: str | os.PathLike, *, timeout_s: float = 300.0
) -> dict[str, Path]:
    """Download a successful job's files into ``dest_dir`` (written atomically).

    ``data`` is the ``Data`` dict of :func:`wait` / :func:`get_async_job_result`.  Returns
    ``{"NUrl": path of registered.nii.gz, "DUrl": path of registered.tar.gz}``.
    """
    if data.get("Status") != "PROCESS_SUCCESS" or not data.get("Result"):
        raise ServiceError(
            data.get("ErrorCode") or "NoResult",
            f"job {data.get('JobId')} has no result (Status {data.get('Status')}: "
            f"{data.get('ErrorMessage') or 'not finished'})",
        )
    urls = json.loads(data["Result"])
    dest = Path(dest_dir)
    out: dict[str, Path] = {}
    for key, name in (("NUrl", "registered.nii.gz"), ("DUrl", "registered.tar.gz")):
        target = dest / name
        try:
            with (
                urllib.request.urlopen(urls[key], timeout=timeout_s) as resp,
                atomic_path(target) as tmp,
                open(tmp, "wb") as fh,
            ):  # noqa: S310
                shutil.copyfileobj(resp, fh, 1 << 20)
        except urllib.error.HTTPError as exc:
            raise ServiceError(
                f"HTTP{exc.code}",
                f"downloading {urls[key]} failed: {exc.reason}",
                http_status=exc.code,
            ) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise ServiceError(
                "ServiceUnavailable",
                f"downloading {urls[key]} failed: {getattr(exc, 'reason', exc)}",
            ) from None
        out[key] = target
    return out
