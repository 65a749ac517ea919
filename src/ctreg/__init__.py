"""ctreg: registration of two chest CT scans of one patient.

Public API: :class:`Volume`, the readers and writers, :func:`register`, and the thread setting.
"""
from ._version import __version__
from .errors import CTRegError, DicomSeriesError, GeometryError
from .io import (list_series, read_dicom_series, read_nifti, read_volume, write_dicom_series,
                 write_displacement_nifti, write_nifti)
from .ops import get_num_threads, set_num_threads
from .options import AffineOptions, DemonsOptions, FFDOptions, RegistrationOptions, options_for
from .pipeline import register
from .result import RegistrationResult
from .volume import Volume

__all__ = [
    "CTRegError",
    "DicomSeriesError",
    "GeometryError",
    "Volume",
    "read_volume",
    "read_dicom_series",
    "list_series",
    "read_nifti",
    "write_nifti",
    "write_dicom_series",
    "write_displacement_nifti",
    "register",
    "RegistrationResult",
    "RegistrationOptions",
    "AffineOptions",
    "FFDOptions",
    "DemonsOptions",
    "options_for",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
