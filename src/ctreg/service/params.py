"""Parameters of an API request: parsing the query / form body, required values, URL lists,
and the error answer (ApiError) every check raises."""

from __future__ import annotations

import re
import urllib.parse
from http import HTTPStatus

from .codes import ErrorCode

__all__ = ["ApiError", "parse_params"]

_MAX_FIELDS = 20000
_MAX_URL_CHARS = 4096
_MAX_ORG_CHARS = 256
_LIST_KEY = re.compile(r"^(ReferenceList|FloatingList)\.([^.]*)\.([^.]*)$")


class ApiError(Exception):
    """An answer with an HTTP error status: ``{"RequestId", "Code", "Message"}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = int(status), code, message


def _invalid(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, ErrorCode.INVALID_PARAMETER, message)


def parse_params(query: str, body: bytes | None = None) -> dict[str, str]:
    """Parameters of a request: the query string plus a form-encoded body.  A name given twice
    is refused (which value is meant would be a guess)."""
    params: dict[str, str] = {}
    sources = [query] if query else []
    if body:
        try:
            sources.append(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise _invalid(
                "the request body is not UTF-8 form data; accepted: "
                "application/x-www-form-urlencoded"
            ) from None
    for text in sources:
        try:
            pairs = urllib.parse.parse_qsl(
                text,
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=_MAX_FIELDS,
                errors="strict",
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(
                f"the parameters cannot be parsed ({exc}); accepted: a query string "
                f"or form body of at most {_MAX_FIELDS} fields"
            ) from None
        for key, value in pairs:
            if key in params:
                raise _invalid(f"parameter {key} is given more than once; accepted: once")
            params[key] = value
    return params


def _required(params: dict[str, str], name: str, *, max_chars: int = _MAX_ORG_CHARS) -> str:
    value = params.get(name)
    if value is None or not value.strip():
        raise _invalid(f"parameter {name} is missing; it is required")
    if len(value) > max_chars or any(ord(c) < 32 for c in value):
        raise _invalid(f"parameter {name} is invalid: at most {max_chars} printable characters")
    return value.strip()


def _url_list(
    params: dict[str, str],
    list_name: str,
    item_name: str,
    *,
    schemes: tuple[str, ...],
    max_urls: int,
) -> list[str]:
    by_index: dict[int, str] = {}
    for key, value in params.items():
        m = _LIST_KEY.match(key)
        if not m or m.group(1) != list_name:
            continue
        index_text, field = m.group(2), m.group(3)
        if field != item_name or not index_text.isdigit() or index_text.startswith("0"):
            raise _invalid(
                f"parameter {key} is not recognised; accepted: {list_name}.N.{item_name} "
                "with N = 1, 2, 3, ..."
            )
        by_index[int(index_text)] = value
    if not by_index:
        raise _invalid(
            f"parameter {list_name}.1.{item_name} is missing; at least one URL "
            f"(one per DICOM file) is required in {list_name}"
        )
    if len(by_index) > max_urls:
        raise _invalid(f"{list_name} has {len(by_index)} URLs; accepted: at most {max_urls}")
    expected = set(range(1, len(by_index) + 1))
    if set(by_index) != expected:
        missing = min(expected - set(by_index))
        raise _invalid(
            f"parameter {list_name}.{missing}.{item_name} is missing; N must run "
            f"1, 2, ... {len(by_index)} without gaps"
        )
    urls = []
    for n in sorted(by_index):
        name, url = f"{list_name}.{n}.{item_name}", by_index[n].strip()
        if not url:
            raise _invalid(f"parameter {name} is empty; accepted: a URL")
        if len(url) > _MAX_URL_CHARS or any(ord(c) <= 32 for c in url):
            raise _invalid(
                f"parameter {name} is not a valid URL (at most {_MAX_URL_CHARS} "
                "characters, no spaces or control characters)"
            )
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise _invalid(f"parameter {name} is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            raise _invalid(
                f"parameter {name} has scheme {scheme or '(none)'!r}; accepted: "
                f"{', '.join(s + '://' for s in schemes)}"
            )
        if scheme in ("http", "https") and not parts.hostname:
            raise _invalid(f"parameter {name} has no host name: {url!r}")
        if scheme == "file" and not parts.path:
            raise _invalid(f"parameter {name} has no path: {url!r}")
        urls.append(url)
    return urls
