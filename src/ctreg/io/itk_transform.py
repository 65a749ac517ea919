"""ITK transform files (``.h5``): the registration as a composite of its affine and a
displacement field, for SimpleITK (``sitk.ReadTransform``), ITK, ANTs tools and 3D Slicer.

Layout (ITK's HDF5TransformIO, checked against the files SimpleITK 2.5 / ITK 5.4 writes)::

    /ITKVersion, /HDFVersion, /OSName, /OSVersion        one variable-length ASCII string each
    /TransformGroup/0/TransformType                      "CompositeTransform_double_3_3"
    /TransformGroup/1/TransformType                      "AffineTransform_double_3_3"
    /TransformGroup/1/TransformParameters                matrix (row-major, 9) + translation (3)
    /TransformGroup/1/TransformFixedParameters           centre (3)
    /TransformGroup/2/TransformType                      "DisplacementFieldTransform_double_3_3"
    /TransformGroup/2/TransformParameters                field, x fastest, (x, y, z) interleaved
    /TransformGroup/2/TransformFixedParameters           size (i, j, k), origin, spacing (i, j, k),
                                                         direction (3x3 row-major; column c =
                                                         world direction of index axis c)

Conventions that matter:

* ITK transforms map points of the fixed (here: reference) space to the moving (floating)
  space, in LPS physical millimetres: the same direction and the same world as ctreg.
* A composite applies its transforms last to first: the displacement field ``w`` first, then
  the affine ``T``: ``p -> T(p + w(p))``.  ctreg's displacement ``U`` includes the affine
  (``p -> p + U(p)``), so the file stores ``w(p) = T^-1(p + U(p)) - p`` on the reference grid;
  ITK's trilinear interpolation of ``w`` followed by the affine reproduces the trilinear
  interpolation of ``U`` exactly (an affine commutes with linear interpolation), up to float32.
* Beyond the field's grid (more than half a voxel) ITK uses a zero ``w`` (the affine alone);
  ``RegistrationResult.transform_points`` continues the border value instead.
* The field is stored as float32 (ITK reads float datasets into double transforms), chunked and
  deflate-compressed with the byte shuffle filter, the chunks compressed in parallel by ISA-L.

h5py is the one dependency this needs (HDF5 is too intricate to write by hand).
"""

from __future__ import annotations

import os
import platform
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import GeometryError
from .atomic import Writeback, atomic_path

__all__ = ["write_itk_transform", "read_itk_transform"]

_COMPOSITE = "CompositeTransform_double_3_3"
_AFFINE = "AffineTransform_double_3_3"
_FIELD = "DisplacementFieldTransform_double_3_3"
#: float32 values per HDF5 chunk (4 MiB).
_CHUNK = 1 << 20
_LEVEL = 1


def _itk_grid(grid_affine: np.ndarray, shape) -> np.ndarray:
    """ITK fixed parameters of a displacement field on the ctreg grid (k, j, i) -> LPS."""
    a = np.asarray(grid_affine, float)
    cols = a[:3, :3][:, ::-1]  # columns for index axes i, j, k
    spacing = np.linalg.norm(cols, axis=0)
    direction = cols / spacing
    size = [float(n) for n in tuple(shape)[::-1]]
    return np.concatenate([size, a[:3, 3], spacing, direction.reshape(-1)])


def _ascii(f, name: str, value: str) -> None:
    import h5py

    f.create_dataset(
        name,
        data=np.array([value.encode("ascii", "replace")], dtype=object),
        dtype=h5py.string_dtype("ascii"),
    )


def _write_field(
    group,
    name: str,
    u: np.ndarray,
    grid_affine,
    affine_h,
    *,
    compress: bool,
    threads: int,
    chunk_kernel=None,
) -> None:
    """The field ``w`` as a 1-D float32 dataset, computed chunk by chunk (whole x rows per chunk;
    memory stays at a few chunks); with ``compress``, shuffle + deflate chunks compressed in
    parallel and stored with ``write_direct_chunk`` (HDF5 keeps them as if its own filters had
    run).  ``chunk_kernel``: ``ops.itk_field_chunk``, which computes a compressed chunk's floats
    and byte shuffle in one native pass (``RegistrationResult.save`` passes it; io imports no
    native code): the same bytes as the NumPy path here, compared in tests/test_result_io.py."""
    g = np.asarray(grid_affine, float)
    h_inv = np.linalg.inv(np.asarray(affine_h, float))
    a_inv_t = np.ascontiguousarray(h_inv[:3, :3].T, dtype=np.float32)
    lin = (h_inv[:3, :3] - np.eye(3)) @ g[:3, :3]  # w = (A^-1 - I) G q + A^-1 U + offset
    off = (h_inv[:3, :3] - np.eye(3)) @ g[:3, 3] + h_inv[:3, 3]
    nz, ny, nx = u.shape[:3]
    n_rows = nz * ny
    rows = u.reshape(n_rows, nx, 3)
    along_x = (np.arange(nx)[:, None] * lin[:, 2]).astype(np.float32)  # (nx, 3)
    per_chunk = max(1, min(_CHUNK // (3 * nx), n_rows))  # whole rows per chunk
    size = per_chunk * nx * 3
    total = n_rows * nx * 3
    kw = {"compression": "gzip", "compression_opts": _LEVEL, "shuffle": True} if compress else {}
    dset = group.create_dataset(name, shape=(total,), dtype=np.float32, chunks=(size,), **kw)

    def chunk(r0: int):
        r1 = min(n_rows, r0 + per_chunk)
        k, j = np.divmod(np.arange(r0, r1), ny)
        start = (k[:, None] * lin[:, 0] + j[:, None] * lin[:, 1] + off).astype(np.float32)
        if compress and chunk_kernel is not None:  # the floats below, shuffled, one pass
            return isal_zlib.compress(
                chunk_kernel(rows[r0:r1], a_inv_t, start, along_x, size), _LEVEL
            )
        w = rows[r0:r1] @ a_inv_t  # (rows, nx, 3) float32
        w += start[:, None, :]
        w += along_x[None]
        part = w.reshape(-1)
        if part.size < size:  # HDF5 stores whole chunks; the tail is padding
            part = np.concatenate([part, np.zeros(size - part.size, np.float32)])
        if not compress:
            return part.tobytes()
        shuffled = np.ascontiguousarray(part.view(np.uint8).reshape(-1, 4).T)  # byte shuffle
        return isal_zlib.compress(shuffled, _LEVEL)  # any contiguous buffer: no copy

    if compress:
        from isal import isal_zlib
    try:  # the chunks go to disk as they come (the sec2 driver's file descriptor)
        fd = group.file.id.get_vfd_handle()
        writeback = Writeback(fd) if isinstance(fd, int) else None
    except Exception:  # pragma: no cover - a driver without a descriptor
        writeback = None

    def store(r0: int, data) -> None:
        dset.id.write_direct_chunk((r0 * nx * 3,), data)
        if writeback is not None:
            writeback.advance(os.fstat(writeback.fd).st_size)

    pending: deque = deque()  # a bounded window of chunks in flight keeps memory flat
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for r0 in range(0, n_rows, per_chunk):
            pending.append((r0, pool.submit(chunk, r0)))
            if len(pending) > 2 * threads:
                done, fut = pending.popleft()
                store(done, fut.result())
        while pending:
            done, fut = pending.popleft()
            store(done, fut.result())


def write_itk_transform(
    path: str | os.PathLike,
    displacement: np.ndarray,
    grid_affine,
    affine,
    *,
    compress: bool = True,
    threads: int | None = None,
    chunk_kernel=None,
) -> Path:
    """Write the registration as an ITK composite transform file (``.h5``).

    Parameters
    ----------
    path : output file name (``.h5``); written atomically.
    displacement : (z, y, x, 3) float32 ``U`` on the reference grid, world (x, y, z) LPS mm
        (``RegistrationResult.displacement``: reference p -> p + U(p) in the floating scan).
    grid_affine : (4, 4) index (k, j, i) -> world of the reference grid.
    affine : :class:`~ctreg.transforms.AffineTransform` (reference -> floating), the affine part
        of ``U``.
    compress : deflate-compress the field (level 1, shuffled); readers decompress transparently.
    threads : compression threads (default: all cores).
    chunk_kernel : ``ctreg.ops.itk_field_chunk`` to compute the compressed chunks natively (the
        same file, faster); None: NumPy.
    """
    import h5py

    from .._version import __version__

    u = np.asarray(displacement)
    if u.ndim != 4 or u.shape[3] != 3:
        raise GeometryError(f"displacement must be (z, y, x, 3), got shape {u.shape}")
    matrix = np.asarray(affine.matrix, float).reshape(3, 3)
    centre = np.asarray(affine.centre, float).reshape(3)
    translation = np.asarray(affine.translation, float).reshape(3)
    path = Path(path)
    threads = threads or os.cpu_count() or 1
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _ascii(f, "ITKVersion", "5.4.0")  # the layout's version (ITK 4.x-5.x read it)
            _ascii(f, "HDFVersion", f"HDF5 library version: {h5py.version.hdf5_version}")
            _ascii(f, "OSName", platform.system() or "unknown")
            _ascii(f, "OSVersion", f"written by ctreg {__version__}")
            group = f.create_group("TransformGroup")
            g0 = group.create_group("0")
            _ascii(g0, "TransformType", _COMPOSITE)
            g1 = group.create_group("1")
            _ascii(g1, "TransformType", _AFFINE)
            g1.create_dataset(
                "TransformParameters", data=np.concatenate([matrix.reshape(-1), translation])
            )
            g1.create_dataset("TransformFixedParameters", data=centre)
            g2 = group.create_group("2")
            _ascii(g2, "TransformType", _FIELD)
            g2.create_dataset("TransformFixedParameters", data=_itk_grid(grid_affine, u.shape[:3]))
            _write_field(
                g2,
                "TransformParameters",
                u,
                grid_affine,
                affine.homogeneous(),
                compress=compress,
                threads=threads,
                chunk_kernel=chunk_kernel,
            )
    return path


def read_itk_transform(path: str | os.PathLike) -> dict:
    """Read a file written by :func:`write_itk_transform` (h5py only, no ITK).

    Returns a dict: ``matrix`` (3, 3), ``translation`` (3,), ``centre`` (3,) of the affine;
    ``field`` (z, y, x, 3) float32 ``w``; ``grid_affine`` (4, 4) ctreg affine of its grid; and
    ``displacement``, the equivalent ctreg ``U(p) = T(p + w(p)) - p`` (float32).
    Raises ValueError when the file is not such a composite.
    """
    import h5py

    with h5py.File(path, "r") as f:
        group = f["TransformGroup"]
        kinds = [group[str(i)]["TransformType"][0].decode() for i in range(len(group))]
        if kinds[:1] != [_COMPOSITE] or [k.replace("float", "double") for k in kinds[1:]] != [
            _AFFINE,
            _FIELD,
        ]:
            raise ValueError(
                f"{path}: transforms {kinds}; expected {[_COMPOSITE, _AFFINE, _FIELD]}"
            )
        ap = group["1"]["TransformParameters"][()].astype(float)
        centre = group["1"]["TransformFixedParameters"][()].astype(float)
        fixed = group["2"]["TransformFixedParameters"][()].astype(float)
        flat = group["2"]["TransformParameters"][()]
    size = [int(round(v)) for v in fixed[:3]]
    origin, spacing, direction = fixed[3:6], fixed[6:9], fixed[9:18].reshape(3, 3)
    g = np.eye(4)
    g[:3, :3] = (direction * spacing)[:, ::-1]
    g[:3, 3] = origin
    shape = tuple(size[::-1])
    w = np.asarray(flat, np.float32).reshape(shape + (3,))
    matrix = ap[:9].reshape(3, 3)
    h = np.eye(4)
    h[:3, :3] = matrix
    h[:3, 3] = centre + ap[9:12] - matrix @ centre
    # U = T(p + w) - p = (A - I) p + A w + b
    lin = (matrix - np.eye(3)) @ g[:3, :3]
    off = (matrix - np.eye(3)) @ g[:3, 3] + h[:3, 3]
    q = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    disp = (q @ lin.T + off + w.astype(float) @ matrix.T).astype(np.float32)
    return {
        "matrix": matrix,
        "translation": ap[9:12],
        "centre": centre,
        "field": w,
        "grid_affine": g,
        "displacement": disp,
    }
