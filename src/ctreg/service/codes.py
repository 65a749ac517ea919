"""Job statuses and error codes of the service, and the one place that maps exceptions to codes.

The codes follow the retired cloud service's style (``Family.Reason``).  A job that fails ends
``PROCESS_FAILED`` (or ``TIMEOUT_FAILED``) with one of the ``ErrorCode`` values below and a
message a user can act on (it names the list, the file or URL, the value and what is accepted).
"""
from __future__ import annotations

import re

__all__ = ["Status", "ErrorCode", "classify_error"]


class Status:
    """Values of ``Data.Status`` in ``GetAsyncJobResult``."""

    QUEUING = "QUEUING"
    PROCESSING = "PROCESSING"
    PROCESS_SUCCESS = "PROCESS_SUCCESS"
    PROCESS_FAILED = "PROCESS_FAILED"
    TIMEOUT_FAILED = "TIMEOUT_FAILED"

    FINISHED = (PROCESS_SUCCESS, PROCESS_FAILED, TIMEOUT_FAILED)
    ALL = (QUEUING, PROCESSING) + FINISHED


class ErrorCode:
    """``Code`` of an HTTP error answer, or ``Data.ErrorCode`` of a failed job."""

    # answers to a request (HTTP 4xx)
    INVALID_PARAMETER = "InvalidParameter"        # 400: a parameter is missing or invalid
    JOB_NOT_FOUND = "InvalidJobId.NotFound"       # 404: no such job on this server
    JOB_EXPIRED = "InvalidJobId.Expired"          # 410: the job's results were cleaned up
    NOT_FOUND = "NotFound"                        # 404: no such path / result file
    # failed jobs (Data.ErrorCode)
    DOWNLOAD = "InvalidFile.Download"             # URL could not be fetched (HTTP error, timeout...)
    URL = "InvalidFile.URL"                       # scheme not accepted (also after a redirect)
    TOO_LARGE = "InvalidFile.TooLarge"            # the inputs exceed the size cap
    NOT_DICOM = "InvalidFile.NotDicom"            # a file is not DICOM (or is truncated)
    FRAME_COUNT = "InvalidFile.FrameCount"        # fewer than 8 or more than 600 frames
    NOT_AXIAL = "InvalidFile.NotAxial"            # oblique / sagittal / coronal series
    SERIES = "InvalidFile.Series"                 # other DICOM rule: several series, gaps, tags...
    GEOMETRY = "InvalidFile.Geometry"             # the scans cannot be registered (e.g. no overlap)
    TIMEOUT = "Timeout.Process"                   # the job ran past the per-job timeout
    INTERRUPTED = "InternalError.Interrupted"     # the server stopped during every attempt
    INTERNAL = "InternalError"                    # anything else (a bug: see the server log)


#: codes that the readers/downloader may put on an exception's ``.code``, mapped to ours.
_KNOWN_CODES = {
    ErrorCode.DOWNLOAD, ErrorCode.URL, ErrorCode.TOO_LARGE, ErrorCode.NOT_DICOM,
    ErrorCode.FRAME_COUNT, ErrorCode.NOT_AXIAL, ErrorCode.SERIES,
}
_CODE_ALIASES = {
    "InvalidFile.Scheme": ErrorCode.URL,
    "InvalidFile.Size": ErrorCode.TOO_LARGE,
    "InvalidFile.Format": ErrorCode.NOT_DICOM,
    "InvalidFile.Frames": ErrorCode.FRAME_COUNT,
    "InvalidFile.Orientation": ErrorCode.NOT_AXIAL,
    "InvalidFile.Oblique": ErrorCode.NOT_AXIAL,
}

#: message patterns, tried in order, for DICOM errors that carry no ``.code`` (they follow the
#: wording of ctreg.io.dicom: "has N frame(s)...; accepted: 8 to 600 frames", "is not axial",
#: "is not a DICOM file", "cannot be parsed as DICOM", "... truncated").
_MESSAGE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"holds \d+ series|several series", re.I), ErrorCode.SERIES),
    (re.compile(r"has \d+ frame|accepted: \d+ to \d+ frames|too (few|many) (frames|slices)",
                re.I), ErrorCode.FRAME_COUNT),
    (re.compile(r"not axial|oblique", re.I), ErrorCode.NOT_AXIAL),
    (re.compile(r"not a DICOM file|cannot be parsed as DICOM|not DICOM|truncated|no Pixel Data",
                re.I), ErrorCode.NOT_DICOM),
)


def classify_error(exc: BaseException, stage: str) -> str:
    """Error code of a job that failed with ``exc`` during ``stage``.

    ``stage`` is ``"download"`` (fetching the URLs), ``"read"`` (reading and validating the
    DICOM series) or ``"process"`` (registration and writing the outputs).  An exception's
    ``.code`` attribute wins when it is one we know; otherwise the stage and the message decide.
    """
    from ..errors import CTRegError, DicomSeriesError, GeometryError

    code = getattr(exc, "code", None)
    if isinstance(code, str):
        if code in _KNOWN_CODES:
            return code
        if code in _CODE_ALIASES:
            return _CODE_ALIASES[code]
    if stage == "download":
        text = str(exc)
        if re.search(r"exceed|too large|at most \d+ bytes", text, re.I):
            return ErrorCode.TOO_LARGE
        if re.search(r"scheme", text, re.I):
            return ErrorCode.URL
        return ErrorCode.DOWNLOAD
    if stage == "read":
        if isinstance(exc, (DicomSeriesError, GeometryError, CTRegError)):
            text = str(exc)
            for pattern, rule_code in _MESSAGE_RULES:
                if pattern.search(text):
                    return rule_code
            return ErrorCode.SERIES
        return ErrorCode.NOT_DICOM if isinstance(exc, (EOFError, OSError)) else ErrorCode.INTERNAL
    if isinstance(exc, DicomSeriesError):
        return ErrorCode.SERIES
    if isinstance(exc, GeometryError):
        return ErrorCode.GEOMETRY
    return ErrorCode.INTERNAL
