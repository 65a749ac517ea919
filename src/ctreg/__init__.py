"""ctreg: registration of two chest CT scans of one patient.

Public API: :class:`Volume`, the readers and writers, :func:`register`, and the thread setting.
"""
from .errors import CTRegError, DicomSeriesError, GeometryError
from .ops import get_num_threads, set_num_threads
from .volume import Volume

__version__ = "0.1.0"

__all__ = [
    "CTRegError",
    "DicomSeriesError",
    "GeometryError",
    "Volume",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
