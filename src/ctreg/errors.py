"""Exception hierarchy. Every message names the file, tag or argument and what is accepted."""


class CTRegError(Exception):
    """Base class of every error ctreg raises on purpose."""


class DicomSeriesError(CTRegError, ValueError):
    """A DICOM source breaks one of the service's input rules."""


class GeometryError(CTRegError, ValueError):
    """Inconsistent or unsupported geometry (affine, spacing, orientation, grid)."""


class ResultFolderError(CTRegError):
    """A saved result folder cannot be read back (``ctreg.load_result``).

    ``code`` names what is wrong (stable, for programs): ``InvalidResult.NotFound`` (no such
    folder), ``InvalidResult.MissingFile`` (a file the result needs is absent),
    ``InvalidResult.Damaged`` (a file is truncated or unreadable), ``InvalidResult.Mismatch``
    (files that disagree, e.g. a field on another grid) or ``InvalidResult.Version`` (written
    by a newer ctreg).  ``path`` is the file or folder concerned.
    """

    def __init__(self, message: str, *, code: str, path=None):
        super().__init__(message)
        self.code = code
        self.path = path
