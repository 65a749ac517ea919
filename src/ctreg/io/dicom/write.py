"""Writing a CT series (write_dicom_series)."""

from __future__ import annotations

import copy
import datetime
import os
import struct
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ..._version import __version__
from ...volume import Volume
from ..archive import write_tar_gz
from ..atomic import atomic_dir
from .rules import _IO_THREADS, CT_IMAGE_STORAGE


_PATIENT_TAGS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
)


_STUDY_TAGS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


def _value_range(arr: np.ndarray, valid: np.ndarray | None) -> tuple[int, float, float]:
    """(count, min, max) of ``arr`` where ``valid`` (everywhere when None), without a copy of
    the selected values (NaN propagates as in ``arr[valid].min()``)."""
    n = arr.size if valid is None else int(np.count_nonzero(valid))
    if n == 0:
        return 0, float("nan"), float("nan")
    if valid is None:
        return n, float(arr.min()), float(arr.max())
    return (
        n,
        float(np.min(arr, where=valid, initial=np.inf)),
        float(np.max(arr, where=valid, initial=-np.inf)),
    )


def _rescale_for(n: int, vmin: float, vmax: float) -> tuple[float, float]:
    """(slope, intercept) so that round((v - intercept) / slope) fits int16 for ``n`` values
    in [vmin, vmax]."""
    if n == 0:
        return 1.0, 0.0
    if vmin >= -32767.5 and vmax <= 32766.5:
        return 1.0, 0.0
    slope = (vmax - vmin) / 65530.0
    intercept = vmin + 32765.0 * slope
    return slope, intercept


def _dicom_now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _meta(scan: Volume | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A scan's ``meta`` (a Volume's, or the mapping itself); empty for None."""
    if scan is None:
        return {}
    return scan.meta if isinstance(scan, Volume) else scan


def _series_template(
    volume: Volume,
    reference: Volume | Mapping[str, Any] | None,
    floating: Volume | Mapping[str, Any] | None,
    series_description: str | None,
) -> tuple[Dataset, str]:
    ref = _meta(reference).get("dicom")
    flo = _meta(floating).get("dicom")
    ds = Dataset()
    date, time_ = _dicom_now()
    ds.SpecificCharacterSet = (
        flo.get("SpecificCharacterSet")
        if flo is not None and flo.get("SpecificCharacterSet")
        else "ISO_IR 192"
    )
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = date
    ds.StudyTime = time_
    ds.SeriesDate = date
    ds.SeriesTime = time_
    ds.ContentDate = date
    ds.ContentTime = time_
    ds.Modality = "CT"
    ds.Manufacturer = "ctreg"
    ds.SoftwareVersions = f"ctreg {__version__}"
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.PatientName = "Anonymous"
    ds.PatientID = "ctreg"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyID = ""
    if flo is not None:
        for tag in _PATIENT_TAGS + _STUDY_TAGS:
            if tag in flo:
                ds[tag] = copy.deepcopy(flo[tag])
    if "StudyInstanceUID" not in ds or not str(ds.StudyInstanceUID).strip():
        ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    flo_num = flo.get("SeriesNumber") if flo is not None else None
    try:
        ds.SeriesNumber = int(flo_num) + 1000 if flo_num not in (None, "") else 1000
    except (TypeError, ValueError):
        ds.SeriesNumber = 1000
    if series_description is None:
        fd = _meta(floating).get("series_description") or "floating"
        rd = _meta(reference).get("series_description") or "reference"
        series_description = f"ctreg: {fd} registered to {rd}"
    ds.SeriesDescription = str(series_description)[:64]
    for_uid = str(ref.get("FrameOfReferenceUID", "") or "") if ref is not None else ""
    ds.FrameOfReferenceUID = for_uid or generate_uid()
    ds.PositionReferenceIndicator = (
        ref.get("PositionReferenceIndicator", "") if ref is not None else ""
    )
    if ref is not None and ref.get("PatientPosition"):
        ds.PatientPosition = ref.PatientPosition
    ds.DerivationDescription = str(series_description)[:1024]
    ds.BodyPartExamined = ref.get("BodyPartExamined", "CHEST") if ref is not None else "CHEST"
    return ds, ds.SeriesDescription


def _ds_fmt(x: float) -> str:
    """A DICOM DS string (<= 16 characters) for ``x``."""
    s = f"{x:.10g}"
    if len(s) > 16:
        s = f"{x:.6g}"
    return s


def _encode_slices(volume: Volume, template: Dataset, ref_thickness) -> Iterator[tuple[str, bytes]]:
    aff = volume.affine
    sp = volume.spacing
    direction = volume.direction
    row_dir, col_dir = direction[:, 2], direction[:, 1]
    normal = np.cross(row_dir, col_dir)
    nz, ny, nx = volume.shape
    arr = volume.array
    valid = volume.valid
    has_pad = valid is not None and not bool(valid.all())
    n_values, vmin, vmax = _value_range(arr, valid if has_pad else None)
    slope, intercept = _rescale_for(n_values, vmin, vmax)
    pad_stored = -32768
    if has_pad and slope == 1.0 and intercept == 0.0 and (n_values == 0 or vmin > -3023.5):
        pad_stored = -3024  # the usual scanner padding value
    iop = [_ds_fmt(v) for v in (*row_dir, *col_dir)]
    pix = [_ds_fmt(sp[1]), _ds_fmt(sp[2])]
    thickness = ref_thickness if ref_thickness else _ds_fmt(sp[0])
    base = copy.deepcopy(template)
    base.ImageOrientationPatient = iop
    base.PixelSpacing = pix
    base.SliceThickness = thickness
    base.SpacingBetweenSlices = _ds_fmt(sp[0])
    base.Rows, base.Columns = ny, nx
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 1
    base.RescaleIntercept = _ds_fmt(intercept)
    base.RescaleSlope = _ds_fmt(slope)
    base.RescaleType = "HU"
    base.WindowCenter = "-600"
    base.WindowWidth = "1600"
    if has_pad:
        base.add_new(0x00280120, "SS", pad_stored)  # PixelPaddingValue
    width = max(4, len(str(nz)))
    encoder = _SliceEncoder(base)

    def one(k: int) -> tuple[str, bytes]:
        ipp = aff[:3, 3] + aff[:3, 0] * k
        plane = (
            np.rint((arr[k] - intercept) / slope)
            if slope != 1.0 or intercept != 0.0
            else np.rint(arr[k])
        )
        plane = np.clip(plane, -32768, 32767).astype("<i2")
        if has_pad and valid is not None:  # has_pad implies a mask
            plane[~valid[k]] = pad_stored
        data = encoder.encode(
            generate_uid(),
            k + 1,
            [_ds_fmt(v) for v in ipp],
            _ds_fmt(float(ipp @ normal)),
            plane.tobytes(),
        )
        return f"IM{k + 1:0{width}d}.dcm", data

    # encoded in order, a bounded window at a time: the writer consumes the files as they come,
    # so the series is never held in memory as a whole
    with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
        pending: deque = deque()
        for k in range(nz):
            pending.append(pool.submit(one, k))
            if len(pending) > 2 * _IO_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_PER_SLICE_TAGS = (0x00080018, 0x00200013, 0x00200032, 0x00201041)


def _explicit_le() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return fp


class _SliceEncoder:
    """Explicit VR little endian files of one series: the elements shared by every slice are
    encoded once (by pydicom), per-slice elements and pixels spliced in at their tag order.
    The bytes are those pydicom's ``dcmwrite`` would write for the whole dataset."""

    def __init__(self, base: Dataset):
        charset = base.get("SpecificCharacterSet", None)
        self.encodings = convert_encodings(charset) if charset else None
        chunks: list[bytearray] = [bytearray() for _ in range(len(_PER_SLICE_TAGS) + 1)]
        for elem in base:
            if elem.tag in _PER_SLICE_TAGS or elem.tag.group >= 0x7FE0:
                continue
            idx = sum(1 for t in _PER_SLICE_TAGS if t < elem.tag)
            chunks[idx] += self._element(elem)
        self.chunks = [bytes(c) for c in chunks]

    def _element(self, elem) -> bytes:
        fp = _explicit_le()
        write_data_element(fp, elem, self.encodings)
        return fp.getvalue()

    def encode(
        self, sop_uid: UID, instance: int, ipp: list[str], slice_location: str, pixels: bytes
    ) -> bytes:
        per = Dataset()
        per.SOPInstanceUID = sop_uid
        per.InstanceNumber = instance
        per.ImagePositionPatient = ipp
        per.SliceLocation = slice_location
        values = [self._element(per[t]) for t in _PER_SLICE_TAGS]
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        fm.ImplementationVersionName = f"CTREG_{__version__}"[:16]
        meta = _explicit_le()
        write_file_meta_info(meta, fm, enforce_standard=True)
        if len(pixels) % 2:
            pixels += b"\0"
        pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels))
        parts = [b"\0" * 128, b"DICM", meta.getvalue()]
        for chunk, value in zip(self.chunks, values):
            parts += [chunk, value]
        parts += [self.chunks[-1], pixel_header, pixels]
        return b"".join(parts)


def write_dicom_series(
    volume: Volume,
    out: str | os.PathLike,
    *,
    reference: Volume | Mapping[str, Any] | None = None,
    floating: Volume | Mapping[str, Any] | None = None,
    series_description: str | None = None,
) -> Path:
    """Write ``volume`` (HU) as a new CT series: one CT Image Storage file per slice.

    Parameters
    ----------
    volume : HU volume on its own grid (for a registration: the warped floating scan on the
        reference grid).
    out : a folder (created; must not exist or be empty) or a path ending in ``.tar.gz`` / ``.tgz``
        (the files inside one top-level folder named after the archive).
    reference : Volume read from the reference DICOM series (or its ``meta``) or None:
        FrameOfReferenceUID, PositionReferenceIndicator, PatientPosition and SliceThickness come
        from it.
    floating : Volume read from the floating DICOM series (or its ``meta`` mapping) or None:
        patient and study tags come from it (None: a fresh StudyInstanceUID and an anonymous
        patient).
    series_description : default ``"ctreg: <floating desc> registered to <reference desc>"``.

    Files: explicit VR little endian, int16 with RescaleSlope/RescaleIntercept fitted to the
    value range (slope 1, intercept 0 whenever HU fit int16), ImageType DERIVED\\SECONDARY,
    fresh SeriesInstanceUID and SOPInstanceUIDs, geometry from the volume's affine.  Invalid
    voxels (``volume.valid`` False) are written as PixelPaddingValue.  Nothing appears under
    ``out`` until everything is written.

    Returns the path written.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a ctreg.Volume, got {type(volume).__name__}")
    out = Path(out)
    template, _ = _series_template(volume, reference, floating, series_description)
    ref_ds = _meta(reference).get("dicom")
    ref_thick = None
    if ref_ds is not None and ref_ds.get("SliceThickness") not in (None, ""):
        ref_thick = str(ref_ds.SliceThickness)
    members = _encode_slices(volume, template, ref_thick)
    name = out.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        top = out.name[: -len(".tar.gz")] if name.endswith(".tar.gz") else out.name[: -len(".tgz")]
        return write_tar_gz(((f"{top}/{n}", data) for n, data in members), out)
    with atomic_dir(out) as tmp:
        for n, data in members:
            (tmp / n).write_bytes(data)
    return out
