"""Label maps (segmentations) with their own integer dtype: read and write NIfTI without the
float32 conversion that :class:`~ctreg.Volume` applies, so label values stay exact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import CTRegError, GeometryError
from .nifti import NIFTI_SUFFIXES, _save_streamed, _set_geometry, affine_from_nifti, affine_to_nifti

__all__ = ["read_labels", "write_labels_nifti", "smallest_integer_dtype"]


def smallest_integer_dtype(values: np.ndarray) -> np.dtype:
    """The smallest of uint8, int16, int32, int64 that holds ``values`` (integers)."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dt in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError(f"label values {lo}..{hi} do not fit int64")


def _read_nifti_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        img: Any = nib.load(str(path))  # nibabel types it FileBasedImage: no sform, dataobj
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types
        raise CTRegError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    sform, scode = img.get_sform(coded=True)
    qform, qcode = img.get_qform(coded=True)
    aff = (
        sform
        if scode and sform is not None
        else (qform if qcode and qform is not None else img.affine)
    )
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise GeometryError(f"{path}: image shape {shape}; accepted: a 3-D label image")
    slope, inter = img.dataobj.slope, img.dataobj.inter
    raw = np.asanyarray(img.dataobj.get_unscaled())
    if raw.ndim == 4:
        raw = raw[..., 0]
    scaled = (np.isfinite(slope) and slope not in (0.0, 1.0)) or (
        np.isfinite(inter) and inter != 0.0
    )
    if scaled or raw.dtype.kind == "f":
        data = raw * (slope if scaled else 1.0) + (inter if scaled else 0.0)
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise CTRegError(
                f"{path}: holds non-integer values; a label map holds integers "
                "(warp it without --labels)"
            )
        data = data.astype(smallest_integer_dtype(data))
    else:
        data = raw
    return np.ascontiguousarray(data.T), affine_from_nifti(aff)


def read_labels(path, **kw) -> tuple[np.ndarray, np.ndarray]:
    """A label map and its affine: ``(array (z, y, x) integer, affine (k, j, i) -> LPS)``.

    NIfTI keeps the file's integer dtype (float or scaled files must hold integers; they get
    the smallest integer dtype that holds them).  Anything else goes through
    :func:`ctreg.read_volume` (``**kw``: e.g. ``series_uid``) and must hold integers.
    """
    if isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(NIFTI_SUFFIXES):
        return _read_nifti_labels(Path(path))
    from . import read_volume

    vol = read_volume(path, **kw)
    arr = vol.array
    if not np.all(arr == np.round(arr)):
        raise CTRegError(f"{path}: holds non-integer values; a label map holds integers")
    return arr.astype(smallest_integer_dtype(arr)), vol.affine


def write_labels_nifti(
    array: np.ndarray, affine, path: str | os.PathLike, *, description: str = ""
) -> Path:
    """Write an integer (z, y, x) array as NIfTI in its own dtype (no scaling), atomically."""
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise GeometryError(f"labels must be 3-D (z, y, x), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    aff = affine_to_nifti(affine)
    img = nib.Nifti1Image(arr.T, aff)
    img.header.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    _set_geometry(img, aff)
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    # the voxels in file order: (x, y, z) Fortran order of arr.T is arr's C order
    return _save_streamed(img, Path(path), [np.ascontiguousarray(arr)])
