"""Readers and writers: DICOM series, NIfTI, archives; :func:`read_volume` picks the reader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CTRegError
from ..volume import Volume
from .archive import extract_archive, is_archive, pack_folder, write_tar_gz
from .dicom import (
    AXIAL_TOLERANCE_DEG,
    MAX_FRAMES,
    MIN_FRAMES,
    DicomRuleError,
    describe_volume,
    inspect_dicom,
    list_series,
    read_dicom_series,
    write_dicom_series,
)
from .fetch import DownloadError, download_urls, is_url
from .nifti import read_nifti, write_displacement_nifti, write_nifti

__all__ = [
    "AXIAL_TOLERANCE_DEG",
    "MIN_FRAMES",
    "MAX_FRAMES",
    "DownloadError",
    "DicomRuleError",
    "inspect_dicom",
    "describe_volume",
    "read_volume",
    "read_dicom_series",
    "list_series",
    "write_dicom_series",
    "read_nifti",
    "write_nifti",
    "write_displacement_nifti",
    "read_itk_image",
    "download_urls",
    "is_url",
    "extract_archive",
    "is_archive",
    "pack_folder",
    "write_tar_gz",
]

_ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def read_itk_image(path: str | os.PathLike) -> Volume:
    """Read NRRD / MetaImage (.nrrd, .nhdr, .mha, .mhd) through SimpleITK (optional dependency).

    ITK's direction matrix (columns: world directions of index axes i, j, k) and LPS origin map
    onto ctreg's (k, j, i) affine by reversing the axis order.
    """
    path = Path(path)
    try:
        import SimpleITK as sitk
    except ImportError:
        raise CTRegError(
            f"{path}: reading {path.suffix} files needs SimpleITK "
            "(pip install SimpleITK); accepted without it: DICOM and NIfTI"
        ) from None
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CTRegError(
            f"{path}: SimpleITK cannot read it: {str(exc).strip().splitlines()[-1]}"
        ) from exc
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise CTRegError(
            f"{path}: a {img.GetDimension()}-D image with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s); accepted: 3-D scalar"
        )
    arr = sitk.GetArrayFromImage(img).astype(np.float32)  # already (z, y, x)
    d = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    sp = np.array(img.GetSpacing(), dtype=np.float64)
    aff = np.eye(4)
    for c in range(3):
        aff[:3, 2 - c] = d[:, c] * sp[c]
    aff[:3, 3] = img.GetOrigin()
    return Volume(
        arr,
        aff,
        None,
        {"format": "itk", "source": str(path), "series_description": path.name.split(".")[0]},
    )


def read_volume(path, **kw) -> Volume:
    """Read a CT volume from whatever ``path`` is.

    * ``.nii`` / ``.nii.gz`` -> :func:`read_nifti`;
    * ``.nrrd`` / ``.nhdr`` / ``.mha`` / ``.mhd`` -> :func:`read_itk_image` (needs SimpleITK);
    * anything else (a folder, an archive, a DICOM file, a list of files or URLs) ->
      :func:`read_dicom_series` with ``**kw`` (e.g. ``series_uid``).
    """
    if isinstance(path, (str, os.PathLike)) and not is_url(path):
        name = str(path).lower()
        if name.endswith((".nii", ".nii.gz")):
            if kw:
                raise TypeError(f"read_volume: NIfTI input takes no options, got {sorted(kw)}")
            return read_nifti(path)
        if name.endswith(_ITK_SUFFIXES):
            if kw:
                raise TypeError(
                    f"read_volume: {Path(path).suffix} input takes no options, got {sorted(kw)}"
                )
            return read_itk_image(path)
    return read_dicom_series(path, **kw)
