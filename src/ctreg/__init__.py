"""ctreg: registration of two chest CT scans of one patient.

Public API: :class:`Volume`, the readers and writers, :func:`register`, and the thread setting.

The names are loaded on first use (PEP 562 ``__getattr__``): ``import ctreg`` and
``ctreg --help`` import neither NumPy's heavy users (SciPy, pydicom, nibabel) nor the native
extension, so the command line starts in a fraction of a second.
"""

from ._version import __version__
from .errors import CTRegError, DicomSeriesError, GeometryError, ResultFolderError

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "Volume": "volume",
    "get_num_threads": "ops",
    "set_num_threads": "ops",
    "list_series": "io",
    "read_dicom_series": "io",
    "read_nifti": "io",
    "read_volume": "io",
    "write_dicom_series": "io",
    "write_displacement_nifti": "io",
    "write_nifti": "io",
    "AffineOptions": "options",
    "DemonsOptions": "options",
    "FFDOptions": "options",
    "SlidingOptions": "options",
    "RegistrationOptions": "options",
    "options_for": "options",
    "register": "pipeline",
    "RegistrationResult": "result",
    "load_result": "result_io",
}


#: submodules reachable as attributes (``ctreg.ops``) without importing them first
_SUBMODULES = frozenset(
    {
        "affine",
        "cli",
        "client",
        "datasets",
        "demons",
        "discrete",
        "evaluation",
        "ffd",
        "fullres",
        "io",
        "level",
        "lungs",
        "masks",
        "metrics",
        "mind",
        "ops",
        "options",
        "pipeline",
        "pyramid",
        "result",
        "result_io",
        "samples",
        "service",
        "sliding",
        "synthetic",
        "synthetic_lung",
        "transforms",
        "volume",
    }
)


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ctreg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
    "SlidingOptions",
    "options_for",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
