"""Slow, obvious reference readers for the I/O tests that must run without SimpleITK:
pydicom for DICOM series, nibabel for NIfTI, both written independently of ctreg.io."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pydicom_series(files) -> tuple[np.ndarray, np.ndarray]:
    """One single-frame DICOM series -> (HU (z, y, x) float32, 4x4 affine index (k, j, i) ->
    world LPS mm), slices sorted along the normal of ImageOrientationPatient."""
    import pydicom

    paths = sorted(Path(f) for f in files)
    dss = [pydicom.dcmread(p) for p in paths]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=np.float64)
    row_cos, col_cos = iop[:3], iop[3:]  # directions of increasing column (i) and row (j)
    normal = np.cross(row_cos, col_cos)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    hu = np.stack(
        [
            d.pixel_array.astype(np.float64) * float(getattr(d, "RescaleSlope", 1))
            + float(getattr(d, "RescaleIntercept", 0))
            for d in dss
        ]
    ).astype(np.float32)
    ipp = np.array([d.ImagePositionPatient for d in dss], dtype=np.float64)
    dr, dc = (float(v) for v in dss[0].PixelSpacing)  # between rows, between columns
    aff = np.eye(4)
    aff[:3, 0] = (ipp[-1] - ipp[0]) / max(1, len(dss) - 1)
    aff[:3, 1] = col_cos * dr
    aff[:3, 2] = row_cos * dc
    aff[:3, 3] = ipp[0]
    return hu, aff


def pydicom_folder(folder) -> tuple[np.ndarray, np.ndarray]:
    return pydicom_series(
        [
            p
            for p in Path(folder).rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR"
        ]
    )


def nibabel_lps(path) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D NIfTI file -> (array (z, y, x) float32, 4x4 affine index (k, j, i) -> LPS mm)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float64)  # scaled by scl_slope / scl_inter
    arr = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    kji_to_ijk = np.zeros((4, 4))
    kji_to_ijk[0, 2] = kji_to_ijk[1, 1] = kji_to_ijk[2, 0] = kji_to_ijk[3, 3] = 1.0
    return arr, ras_to_lps @ img.affine @ kji_to_ijk
