"""NIfTI-1 read and write: the only module in ctreg that knows about RAS.

NIfTI stores voxels in (i, j, k) = (x, y, z) order and an affine to RAS world coordinates;
ctreg uses (z, y, x) arrays and (k, j, i) -> LPS affines.  The conversion, in one place::

    A_ctreg = diag(-1, -1, 1, 1) @ A_nifti @ P,   P: (k, j, i) -> (i, j, k)

Files ctreg writes carry the same affine in the sform and the qform (both code 1, scanner), so
SimpleITK, nibabel and 3D Slicer put every voxel at the same world position.  ``.nii.gz`` files
are gzip level 1 written as parallel-compressed gzip members (standard multi-member gzip, read by
every gzip reader; several times faster to write than single-threaded level 9).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import CTRegError, GeometryError
from ..volume import Volume
from .archive import GzipStreamWriter
from .atomic import atomic_path, open_streamed

__all__ = [
    "read_nifti",
    "write_nifti",
    "write_displacement_nifti",
    "read_displacement_nifti",
    "NIFTI_SUFFIXES",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# swaps the first and third index: (k, j, i) <-> (i, j, k); its own inverse
_SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
_NIFTI_INTENT_DISPVECT = 1006
_GZIP_LEVEL = 1
#: gzip level of displacement fields: 0, stored.  Their float32 mantissas barely compress (ISA-L
#: level 1 took 1.07 GB of EMPIRE10-01's 1.15 GB field, at 0.6-0.8 GB/s); storing costs a CRC
#: (about 6 GB/s, scratch timing).  Write phase 4.7-5.2 -> 4.1-4.3 s (docs/performance.md).
_FIELD_GZIP_LEVEL = 0


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise CTRegError(f"{path}: NIfTI file names must end in .nii or .nii.gz")


def affine_to_nifti(affine_kji_lps: np.ndarray) -> np.ndarray:
    """ctreg affine (k, j, i) -> LPS  to  NIfTI affine (i, j, k) -> RAS."""
    return _LPS_RAS @ np.asarray(affine_kji_lps, dtype=np.float64) @ _SWAP


def affine_from_nifti(affine_ijk_ras: np.ndarray) -> np.ndarray:
    """NIfTI affine (i, j, k) -> RAS  to  ctreg affine (k, j, i) -> LPS."""
    return _LPS_RAS @ np.asarray(affine_ijk_ras, dtype=np.float64) @ _SWAP


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a 3-D NIfTI-1/2 image (.nii / .nii.gz) as a float32 :class:`Volume` in LPS.

    The sform is used when its code is set, else the qform, else nibabel's fallback affine.
    Scaling (scl_slope / scl_inter) is applied.  A 4-D image with one volume is accepted.
    ``meta``: ``format="nifti"``, ``source``, ``affine_source`` ("sform", "qform" or "base").
    """
    path = Path(path)
    try:
        img: Any = nib.load(str(path))  # nibabel types it FileBasedImage: no sform, dataobj
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types
        raise CTRegError(
            f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc}); accepted: "
            ".nii or .nii.gz files"
        ) from exc
    hdr = img.header
    sform, scode = img.get_sform(coded=True)
    qform, qcode = img.get_qform(coded=True)
    if scode and scode > 0 and sform is not None:
        aff, which = sform, "sform"
    elif qcode and qcode > 0 and qform is not None:
        aff, which = qform, "qform"
    else:
        aff, which = img.affine, "base"
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        data = np.asanyarray(img.dataobj)[..., 0]
    elif len(shape) == 3:
        data = np.asanyarray(img.dataobj)
    else:
        raise GeometryError(f"{path}: image shape {shape}; accepted: a 3-D scalar image")
    array = np.ascontiguousarray(np.asarray(data, dtype=np.float32).T)
    meta = {
        "format": "nifti",
        "source": str(path),
        "affine_source": which,
        "series_description": path.name.split(".")[0],
    }
    del hdr
    return Volume(array, affine_from_nifti(aff), None, meta)


#: z slices per piece that the writers convert and hand to the compressor at a time
_SLAB = 8


def _placeholder(shape, dtype) -> np.ndarray:
    """A read-only array of ``shape`` that takes no memory: it gives nibabel the header's shape
    and type, while the voxels are streamed by :func:`_save_streamed`."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _save_streamed(img: nib.Nifti1Image, path: Path, pieces, level: int = _GZIP_LEVEL) -> Path:
    """Write ``img``'s header, then the voxel bytes of ``pieces`` (arrays, in file order),
    gzipped in parallel when ``path`` ends in .gz, atomically.  The bytes are those of
    ``img.to_bytes()`` for an image holding the same voxels (tests/test_performance_io.py),
    without a copy of the voxels or of the file in memory."""
    _check_suffix(path)
    hdr = img.header
    img.update_header()
    hdr.set_slope_inter(1.0, 0.0)
    head = io.BytesIO()
    hdr.write_to(head)
    offset = int(hdr["vox_offset"])
    prefix = head.getvalue()
    if len(prefix) > offset:  # pragma: no cover - nibabel keeps extensions before vox_offset
        raise CTRegError(f"{path}: NIfTI header of {len(prefix)} bytes exceeds vox_offset {offset}")
    prefix += b"\0" * (offset - len(prefix))
    with atomic_path(path) as tmp, open_streamed(tmp) as fh:
        if path.name.lower().endswith(".gz"):
            with GzipStreamWriter(fh, compresslevel=level) as gz:
                gz.write(prefix)
                for piece in pieces:
                    gz.write(piece.data)
        else:
            fh.write(prefix)
            for piece in pieces:
                fh.write(piece.data)
    return path


def _set_geometry(img: nib.Nifti1Image, affine_nifti: np.ndarray) -> None:
    img.set_sform(affine_nifti, code=1)
    img.set_qform(affine_nifti, code=1)
    img.header.set_xyzt_units("mm", "sec")


def write_nifti(volume: Volume, path: str | os.PathLike, *, dtype: str = "int16") -> Path:
    """Write ``volume`` as .nii.gz (or .nii): int16 HU (rounded and clipped) or float32.

    sform and qform both hold the volume's geometry (code 1, scanner).  Voxels outside
    ``volume.valid`` are written as they are in the array (ctreg readers put air, -1024 HU,
    there).  Written atomically: nothing appears under ``path`` until the file is complete.
    """
    path = Path(path)
    if dtype not in ("int16", "float32"):
        raise ValueError(f"write_nifti: dtype must be 'int16' or 'float32', got {dtype!r}")
    arr = volume.array
    out_dtype = np.int16 if dtype == "int16" else np.float32
    aff = affine_to_nifti(volume.affine)
    img = nib.Nifti1Image(_placeholder(arr.shape[::-1], out_dtype), aff)  # (x, y, z)
    img.header.set_data_dtype(out_dtype)
    _set_geometry(img, aff)
    desc = str(volume.meta.get("series_description", ""))[:79]
    if desc:
        img.header["descrip"] = desc.encode("ascii", "replace")[:79]

    def slabs():  # NIfTI order (x fastest, then y, z) is the C order of the (z, y, x) array
        for k0 in range(0, arr.shape[0], _SLAB):
            part = arr[k0 : k0 + _SLAB]
            if dtype == "int16":
                tmp = np.rint(part)
                np.clip(tmp, -32768, 32767, out=tmp)
                yield tmp.astype("<i2")
            else:
                yield np.ascontiguousarray(part, dtype="<f4")

    return _save_streamed(img, path, slabs())


def write_displacement_nifti(
    displacement: np.ndarray, affine: np.ndarray, path: str | os.PathLike
) -> Path:
    """Write a displacement field as a NIfTI vector image with intent DISPVECT (1006).

    Parameters
    ----------
    displacement : (z, y, x, 3) float array; components (x, y, z) LPS mm; a grid point p maps
        to p + u(p).
    affine : (4, 4) index (k, j, i) -> world (x, y, z) LPS of the grid.
    path : .nii.gz or .nii.

    The file is 5-D (x, y, z, 1, 3) float32, as ITK writes displacement fields, with the
    components stored in ITK's convention so that
    ``sitk.DisplacementFieldTransform(sitk.ReadImage(path, sitk.sitkVectorFloat64))`` maps a
    point p (LPS) to p + u(p).  A .nii.gz is gzip level 0 (stored blocks; standard gzip).
    """
    u = np.asarray(displacement)
    if u.ndim != 4 or u.shape[3] != 3:
        raise GeometryError(
            f"write_displacement_nifti: displacement must have shape (z, y, x, 3), got {u.shape}"
        )
    aff = affine_to_nifti(affine)
    nz, ny, nx = u.shape[:3]
    img = nib.Nifti1Image(_placeholder((nx, ny, nz, 1, 3), np.float32), aff)
    img.header.set_data_dtype(np.float32)
    img.header.set_intent(_NIFTI_INTENT_DISPVECT, (), name="DISPVECT")
    _set_geometry(img, aff)

    def slabs():  # (x, y, z, 1, 3) in Fortran order: component slowest, then z, y, x
        # one buffer for every slab (the gzip writer copies what it is given): half the time
        # of a new array per slab on 512x512x300
        buf = np.empty((min(_SLAB, nz), ny, nx), "<f4")
        for c in range(3):
            negate = _ITK_DISPVECT_IN_RAS and c < 2
            for k0 in range(0, nz, _SLAB):
                src = u[k0 : k0 + _SLAB, :, :, c]
                part = buf[: src.shape[0]]
                if negate:
                    np.negative(src, out=part, casting="same_kind")
                else:
                    np.copyto(part, src, casting="same_kind")
                yield part

    return _save_streamed(img, Path(path), slabs(), _FIELD_GZIP_LEVEL)


# ITK (since 5.x) negates the first two components of NIfTI DISPVECT fields on read and write,
# i.e. stores them in RAS; set after checking SimpleITK's reading (see tests/test_io_nifti.py).
_ITK_DISPVECT_IN_RAS = True


def read_displacement_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a field written by :func:`write_displacement_nifti`.

    Returns ``(displacement, affine)``: (z, y, x, 3) float32 with world (x, y, z) LPS components
    (the values written, bit for bit), and the (4, 4) index (k, j, i) -> LPS affine of the grid
    from the sform (float32 in the header: exact to about 1e-5 mm).  Raises
    :class:`~ctreg.GeometryError` when the file is not a 3-component vector field.
    """
    path = Path(path)
    img: Any = nib.load(str(path))
    shape = img.shape
    if len(shape) != 5 or shape[3] != 1 or shape[4] != 3:
        raise GeometryError(f"{path}: shape {shape}; a displacement field is (x, y, z, 1, 3)")
    slope, inter = img.dataobj.slope, img.dataobj.inter
    data = np.asanyarray(img.dataobj.get_unscaled())
    if (np.isfinite(slope) and slope not in (0.0, 1.0)) or (np.isfinite(inter) and inter != 0.0):
        data = data * slope + inter
    comps = np.ascontiguousarray(
        np.asarray(data[:, :, :, 0, :], dtype=np.float32).transpose(2, 1, 0, 3)
    )
    if _ITK_DISPVECT_IN_RAS:
        comps[..., 0] *= -1.0
        comps[..., 1] *= -1.0
    sform, scode = img.get_sform(coded=True)
    aff = sform if scode and sform is not None else img.affine
    return comps, affine_from_nifti(aff)
