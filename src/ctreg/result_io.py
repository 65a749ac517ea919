"""A saved result folder, read back: :func:`load_result`; and ``result.json``, its index.

``RegistrationResult.save(folder)`` writes::

    registered.nii.gz     the warped floating scan (int16 HU)        [optional for loading]
    registered.tar.gz     the same as a DICOM series                 [optional]
    displacement.nii.gz   U on the reference grid (NIfTI DISPVECT)   [required]
    transform.h5          ITK composite transform (affine + field)   [optional for loading]
    report.json           the run's report                           [required]
    result.json           this index, written last                   [required, or legacy]

``result.json`` holds what the NIfTI header cannot hold exactly: the reference and floating
grids' affines in float64 (a NIfTI sform is float32), the affine part of the map, and the file
names.  A folder written before result.json existed (displacement.nii.gz + report.json) still
loads; its grid then comes from the NIfTI sform (exact to about 1e-5 mm).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CTRegError, GeometryError, ResultFolderError

__all__ = ["RESULT_FORMAT", "RESULT_FORMAT_VERSION", "write_result_index", "load_result"]

RESULT_FORMAT = "ctreg.result"
RESULT_FORMAT_VERSION = 1
INDEX_NAME = "result.json"

NOT_FOUND = "InvalidResult.NotFound"
MISSING_FILE = "InvalidResult.MissingFile"
DAMAGED = "InvalidResult.Damaged"
MISMATCH = "InvalidResult.Mismatch"
VERSION = "InvalidResult.Version"


def _grid(affine: np.ndarray, shape) -> dict[str, Any]:
    return {"shape": [int(n) for n in shape], "affine": np.asarray(affine, float).tolist()}


def write_result_index(result, out_dir: str | os.PathLike, files: dict[str, Path]) -> Path:
    """Write ``result.json`` (atomically) for ``result`` saved into ``out_dir`` as ``files``."""
    from ._version import __version__
    from .io.atomic import atomic_path

    out = Path(out_dir)
    index = {
        "format": RESULT_FORMAT,
        "format_version": RESULT_FORMAT_VERSION,
        "ctreg_version": __version__,
        "convention": "world (x, y, z) LPS mm; a reference point p maps to p + U(p) in the "
        "floating scan, U = displacement.nii.gz; affine: reference -> floating, "
        "T(p) = matrix (p - centre) + centre + translation",
        "reference_grid": _grid(result.grid_affine, result.displacement.shape[:3]),
        "floating_grid": (
            None
            if result.floating_affine is None
            else _grid(result.floating_affine, result.floating_shape)
        ),
        "affine": result.affine.to_dict(),
        "files": {k: Path(v).name for k, v in files.items()},
    }
    path = out / INDEX_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(index, indent=2))
    return path


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ResultFolderError(
            f"{path.parent}: {path.name} is missing ({what}); a result folder "
            "holds displacement.nii.gz, report.json and result.json",
            code=MISSING_FILE,
            path=path,
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFolderError(
            f"{path}: not readable JSON ({exc}); the file is damaged or truncated",
            code=DAMAGED,
            path=path,
        ) from exc
    if not isinstance(data, dict):
        raise ResultFolderError(
            f"{path}: expected a JSON object, got {type(data).__name__}", code=DAMAGED, path=path
        )
    return data


def _matrix(value, shape, path: Path, field: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.shape != shape or not np.all(np.isfinite(a)):
        raise ResultFolderError(
            f"{path}: {field} must be {shape} finite numbers, got {value!r}",
            code=DAMAGED,
            path=path,
        )
    return a


def _affine_transform(data: object, path: Path):
    from .transforms import AffineTransform

    if not isinstance(data, dict):
        raise ResultFolderError(
            f"{path}: no 'affine' entry (the map's affine part)", code=DAMAGED, path=path
        )
    return AffineTransform(
        _matrix(data.get("matrix"), (3, 3), path, "affine.matrix"),
        _matrix(data.get("translation_mm"), (3,), path, "affine.translation_mm"),
        _matrix(data.get("centre_mm"), (3,), path, "affine.centre_mm"),
    )


def _grid_from_index(data, path: Path, name: str):
    if data is None:
        return None, None
    if not isinstance(data, dict):
        raise ResultFolderError(
            f"{path}: {name} must be an object with shape and affine", code=DAMAGED, path=path
        )
    shape = _matrix(data.get("shape"), (3,), path, f"{name}.shape")
    if np.any(shape < 1) or np.any(shape != np.round(shape)):
        raise ResultFolderError(
            f"{path}: {name}.shape must be three positive integers", code=DAMAGED, path=path
        )
    return _matrix(data.get("affine"), (4, 4), path, f"{name}.affine"), tuple(int(n) for n in shape)


def load_result(path: str | os.PathLike, *, warped: bool = True):
    """Read a result folder written by ``RegistrationResult.save`` (or ``ctreg register``).

    Parameters
    ----------
    path : the folder.
    warped : also read ``registered.nii.gz`` (if present) as ``result.warped``; False skips it
        (``warp`` and the point mappings do not need it).

    Returns
    -------
    RegistrationResult with ``displacement``, ``affine``, ``report`` (options included:
    ``report["options"]``), ``warped`` (or None), ``transform_points``,
    ``inverse_transform_points``, ``warp`` and ``jacobian_determinant()`` (recomputed from the
    field).  ``reference`` and ``floating`` are None: the scans are not part of the folder;
    their grids are (``grid_affine``, ``floating_affine``).

    Raises
    ------
    ResultFolderError (a CTRegError) whose ``code`` names what is wrong: ``InvalidResult.
    NotFound``, ``.MissingFile``, ``.Damaged``, ``.Mismatch`` or ``.Version``.
    """
    from .result import RegistrationResult
    from .io.nifti import read_displacement_nifti, read_nifti

    folder = Path(path)
    if not folder.is_dir():
        raise ResultFolderError(f"{folder}: no such result folder", code=NOT_FOUND, path=folder)
    index_path = folder / INDEX_NAME
    index = None
    if index_path.exists():
        index = _read_json(index_path, "the result's index")
        if index.get("format") != RESULT_FORMAT:
            raise ResultFolderError(
                f"{index_path}: format {index.get('format')!r}; expected {RESULT_FORMAT!r}",
                code=DAMAGED,
                path=index_path,
            )
        version = index.get("format_version")
        if not isinstance(version, int) or version > RESULT_FORMAT_VERSION:
            raise ResultFolderError(
                f"{index_path}: format_version {version!r}; this ctreg reads "
                f"up to {RESULT_FORMAT_VERSION} (update ctreg)",
                code=VERSION,
                path=index_path,
            )
    files = dict(index.get("files") or {}) if index else {}
    if not isinstance(files, dict) or not all(
        isinstance(v, str) and "/" not in v and v not in ("", ".", "..") for v in files.values()
    ):
        raise ResultFolderError(
            f"{index_path}: 'files' must map names to plain file names",
            code=DAMAGED,
            path=index_path,
        )
    report_path = folder / files.get("report", "report.json")
    disp_path = folder / files.get("displacement", "displacement.nii.gz")
    if index is None and not disp_path.exists() and not report_path.exists():
        raise ResultFolderError(
            f"{folder}: not a ctreg result folder (no {INDEX_NAME}, "
            "displacement.nii.gz or report.json)",
            code=MISSING_FILE,
            path=folder,
        )
    report = _read_json(report_path, "the run's report")
    if not disp_path.is_file():
        raise ResultFolderError(
            f"{folder}: {disp_path.name} is missing (the displacement field)",
            code=MISSING_FILE,
            path=disp_path,
        )
    try:
        displacement, nifti_affine = read_displacement_nifti(disp_path)
    except GeometryError as exc:
        raise ResultFolderError(
            f"{disp_path}: not a displacement field ({exc})", code=DAMAGED, path=disp_path
        ) from exc
    except Exception as exc:  # noqa: BLE001 - nibabel, gzip and zlib raise many types
        raise ResultFolderError(
            f"{disp_path}: cannot be read ({type(exc).__name__}: {exc}); the "
            "file is damaged or truncated",
            code=DAMAGED,
            path=disp_path,
        ) from exc
    if not np.all(np.isfinite(displacement)):
        raise ResultFolderError(
            f"{disp_path}: the field holds NaN or infinity", code=DAMAGED, path=disp_path
        )
    if index is not None:
        grid_affine, grid_shape = _grid_from_index(
            index.get("reference_grid"), index_path, "reference_grid"
        )
        if grid_affine is None:
            raise ResultFolderError(
                f"{index_path}: no reference_grid", code=DAMAGED, path=index_path
            )
        flt_affine, flt_shape = _grid_from_index(
            index.get("floating_grid"), index_path, "floating_grid"
        )
        affine = _affine_transform(index.get("affine"), index_path)
        if tuple(displacement.shape[:3]) != grid_shape:
            raise ResultFolderError(
                f"{disp_path}: field grid {displacement.shape[:3]} but "
                f"{INDEX_NAME} says the reference grid is {grid_shape}",
                code=MISMATCH,
                path=disp_path,
            )
        if not np.allclose(nifti_affine, grid_affine, atol=1e-3, rtol=1e-5):
            raise ResultFolderError(
                f"{disp_path}: its grid's position differs from the reference "
                f"grid in {INDEX_NAME} (another result's field?)",
                code=MISMATCH,
                path=disp_path,
            )
    else:  # a folder from before result.json: the grid from the NIfTI header
        grid_affine, flt_affine, flt_shape = nifti_affine, None, None
        affine = _affine_transform(report.get("affine"), report_path)
    warped_vol = None
    warped_path = folder / files.get("nifti", "registered.nii.gz")
    if warped and warped_path.is_file():
        try:
            warped_vol = read_nifti(warped_path)
        except CTRegError as exc:
            raise ResultFolderError(
                f"{warped_path}: {exc}", code=DAMAGED, path=warped_path
            ) from exc
        if warped_vol.shape != tuple(displacement.shape[:3]):
            raise ResultFolderError(
                f"{warped_path}: shape {warped_vol.shape} differs from the "
                f"field's grid {displacement.shape[:3]}",
                code=MISMATCH,
                path=warped_path,
            )
        warped_vol.affine = np.array(grid_affine, dtype=np.float64)
    return RegistrationResult(
        reference=None,
        floating=None,
        warped=warped_vol,
        displacement=displacement,
        affine=affine,
        jacobian=None,
        report=report,
        grid_affine=grid_affine,
        floating_affine=flt_affine,
        floating_shape=flt_shape,
    )
