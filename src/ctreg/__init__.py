"""ctreg: registration of two chest CT scans of one patient.

Public API: :class:`Volume`, the readers and writers, :func:`register`, and the thread setting.
"""
from .errors import CTRegError, DicomSeriesError, GeometryError, ResultFolderError
from .ops import get_num_threads, set_num_threads
from .volume import Volume

__version__ = "0.1.0"

# readers and writers (after __version__: the DICOM writer stamps it into files)
from .io import (list_series, read_dicom_series, read_nifti, read_volume,  # noqa: E402
                 write_dicom_series, write_displacement_nifti, write_nifti)
from .options import (AffineOptions, DemonsOptions, FFDOptions, RegistrationOptions,  # noqa: E402
                      options_for)
from .pipeline import register  # noqa: E402
from .result import RegistrationResult  # noqa: E402
from .io.result_io import load_result  # noqa: E402

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
    "load_result",
    "ResultFolderError",
    "RegistrationOptions",
    "AffineOptions",
    "FFDOptions",
    "DemonsOptions",
    "options_for",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
