"""Job statuses and error codes of the service, and the one place that maps exceptions to codes.

The codes follow the retired cloud service's style (``Family.Reason``).  A job that fails ends
``PROCESS_FAILED`` (or ``TIMEOUT_FAILED``) with one of the ``ErrorCode`` values below and a
message a user can act on (it names the list, the file or URL, the value and what is accepted).
"""

from __future__ import annotations

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
    INVALID_PARAMETER = "InvalidParameter"  # 400: a parameter is missing or invalid
    JOB_NOT_FOUND = "InvalidJobId.NotFound"  # 404: no such job on this server
    JOB_EXPIRED = "InvalidJobId.Expired"  # 410: the job's results were cleaned up
    NOT_FOUND = "NotFound"  # 404: no such path / result file
    # failed jobs (Data.ErrorCode)
    DOWNLOAD = "InvalidFile.Download"  # URL could not be fetched (HTTP error, timeout...)
    URL = "InvalidFile.URL"  # scheme not accepted (also after a redirect)
    TOO_LARGE = "InvalidFile.TooLarge"  # the inputs exceed the size cap
    NOT_DICOM = "InvalidFile.NotDicom"  # a file is not DICOM (or is truncated)
    FRAME_COUNT = "InvalidFile.FrameCount"  # fewer than 8 or more than 600 frames
    NOT_AXIAL = "InvalidFile.NotAxial"  # oblique / sagittal / coronal series
    SERIES = "InvalidFile.Series"  # other DICOM rule: several series, gaps, tags...
    GEOMETRY = "InvalidFile.Geometry"  # the scans cannot be registered (e.g. no overlap)
    TIMEOUT = "Timeout.Process"  # the job ran past the per-job timeout
    INTERRUPTED = "InternalError.Interrupted"  # the server stopped during every attempt
    INTERNAL = "InternalError"  # anything else (a bug: see the server log)


#: codes that the readers/downloader may put on an exception's ``.code``, mapped to ours.
_KNOWN_CODES = {
    ErrorCode.DOWNLOAD,
    ErrorCode.URL,
    ErrorCode.TOO_LARGE,
    ErrorCode.NOT_DICOM,
    ErrorCode.FRAME_COUNT,
    ErrorCode.NOT_AXIAL,
    ErrorCode.SERIES,
}
_CODE_ALIASES = {
    "InvalidFile.Scheme": ErrorCode.URL,
    "InvalidFile.Size": ErrorCode.TOO_LARGE,
    "InvalidFile.Format": ErrorCode.NOT_DICOM,
    "InvalidFile.Frames": ErrorCode.FRAME_COUNT,
    "InvalidFile.Orientation": ErrorCode.NOT_AXIAL,
    "InvalidFile.Oblique": ErrorCode.NOT_AXIAL,
}


def classify_error(exc: BaseException, stage: str) -> str:
    """Error code of a job that failed with ``exc`` during ``stage``.

    ``stage`` is ``"download"`` (fetching the URLs), ``"read"`` (reading and validating the
    DICOM series) or ``"process"`` (registration and writing the outputs).  The exception's
    ``code`` attribute (every :class:`~ctreg.errors.CTRegError` has one, see docs/errors.md)
    wins when it is one of ours; otherwise its class and the stage decide.  The message text is
    never looked at.
    """
    from ..errors import CTRegError, DicomSeriesError, GeometryError

    code = getattr(exc, "code", None) if isinstance(exc, CTRegError) else None
    if isinstance(code, str):
        code = _CODE_ALIASES.get(code, code)
        if code in _KNOWN_CODES:
            return code
    if stage == "download":
        return ErrorCode.DOWNLOAD
    if stage == "read":
        if isinstance(exc, CTRegError):
            return ErrorCode.SERIES
        return ErrorCode.NOT_DICOM if isinstance(exc, (EOFError, OSError)) else ErrorCode.INTERNAL
    if isinstance(exc, DicomSeriesError):
        return ErrorCode.SERIES
    if isinstance(exc, GeometryError):
        return ErrorCode.GEOMETRY
    return ErrorCode.INTERNAL
