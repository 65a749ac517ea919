"""Exception hierarchy. Every message names the file, tag or argument and what is accepted."""


class CTRegError(Exception):
    """Base class of every error ctreg raises on purpose."""


class DicomSeriesError(CTRegError, ValueError):
    """A DICOM source breaks one of the service's input rules."""


class GeometryError(CTRegError, ValueError):
    """Inconsistent or unsupported geometry (affine, spacing, orientation, grid)."""
