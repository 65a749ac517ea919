"""The HTTP layer of the service (:class:`ctreg.service.server.Server`): the request handler
that reads GET / HEAD / POST requests, answers the API in JSON and streams result files.

Standard library only (``http.server``).  What the API does is in the server
(:meth:`~ctreg.service.server.Server.handle_api`, :meth:`~ctreg.service.server.Server.result_file`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from .codes import ErrorCode
from .params import ApiError, _invalid, parse_params

if TYPE_CHECKING:
    from .server import Server

__all__ = ["SERVED_FILES"]

log = logging.getLogger("ctreg.service")

#: files of a finished job that can be downloaded (name in the job folder -> content type).
SERVED_FILES = {
    "registered.nii.gz": "application/gzip",
    "registered.tar.gz": "application/gzip",
    "displacement.nii.gz": "application/gzip",
    "report.json": "application/json",
}
_MAX_BODY_BYTES = 8 * 1024 * 1024
_HOST_HEADER = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: "Server"


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "ctreg-service"
    timeout = 60  # seconds a client may take to send its request

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(None)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(None, head=True)

    def do_POST(self) -> None:  # noqa: N802
        length_text = self.headers.get("Content-Length")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype not in ("", "application/x-www-form-urlencoded"):
                raise _invalid(
                    f"Content-Type {ctype!r} is not supported; accepted: "
                    "application/x-www-form-urlencoded (or parameters in the query)"
                )
            if length_text is None or not length_text.isdigit():
                raise ApiError(
                    HTTPStatus.LENGTH_REQUIRED,
                    ErrorCode.INVALID_PARAMETER,
                    "a POST needs a Content-Length header",
                )
            length = int(length_text)
            if length > _MAX_BODY_BYTES:
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    ErrorCode.INVALID_PARAMETER,
                    f"the request body is {length} bytes; accepted: at most {_MAX_BODY_BYTES}",
                )
            body = self.rfile.read(length)
        except ApiError as exc:
            self.close_connection = True
            self._send_json(exc.status, self.server.app.error_body(exc))
            return
        self._dispatch(body)

    def _dispatch(self, body: bytes | None, *, head: bool = False) -> None:
        app = self.server.app
        parts = urllib.parse.urlsplit(self.path)
        try:
            if parts.path.startswith("/results/"):
                self._send_result(parts.path, head=head)
                return
            if parts.path not in ("", "/"):
                raise ApiError(
                    HTTPStatus.NOT_FOUND,
                    ErrorCode.NOT_FOUND,
                    f"no such path {parts.path!r}; the API answers at / and results at "
                    "the URLs that GetAsyncJobResult gives",
                )
            status, payload = app.handle_api(parse_params(parts.query, body), self._base_url())
        except ApiError as exc:
            status, payload = exc.status, app.error_body(exc)
        except Exception:  # a bug: answer 500, keep serving
            log.exception("request %s failed", self.path)
            status, payload = (
                500,
                app.error_body(
                    ApiError(500, ErrorCode.INTERNAL, "internal error; see the server log")
                ),
            )
        self._send_json(status, payload, head=head)

    def _base_url(self) -> str:
        app = self.server.app
        if app.options.public_url:
            return app.options.public_url.rstrip("/")
        host = (self.headers.get("Host") or "").strip()
        if host and _HOST_HEADER.match(host):
            return f"http://{host}"
        return app.url

    def _send_json(self, status: int, payload: dict, *, head: bool = False) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _send_result(self, path: str, *, head: bool) -> None:
        app = self.server.app
        file_path, name = app.result_file(path)
        try:
            fh = open(file_path, "rb")
        except OSError:  # e.g. a job function that wrote no report.json, or expiring right now
            raise ApiError(
                HTTPStatus.NOT_FOUND, ErrorCode.NOT_FOUND, f"job result {name} is not available"
            ) from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", SERVED_FILES[name])
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", f'attachment; filename="{name}"')
            self.end_headers()
            if not head:
                shutil.copyfileobj(fh, self.wfile, 1 << 20)
