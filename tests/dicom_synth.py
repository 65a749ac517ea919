"""Small synthetic CT series written with pydicom, for the I/O tests (no ctreg code involved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"


def slice_values(k: int, rows: int, cols: int) -> np.ndarray:
    """Stored int16 values of slice k: a ramp that differs per slice, row and column."""
    j, i = np.mgrid[0:rows, 0:cols]
    return (100 * k + 3 * j + i - 300).astype(np.int16)


def write_series(
    folder,
    n: int,
    *,
    rows: int = 8,
    cols: int = 8,
    step: float = 2.5,
    pixel_spacing=(0.7, 0.8),
    origin=(-10.0, 20.0, 30.0),
    iop=(1, 0, 0, 0, 1, 0),
    positions=None,
    series_uid: str | None = None,
    description: str = "synthetic",
    modality: str | None = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    names=None,
    values=None,
    padding_value: int | None = None,
) -> dict:
    """Write ``n`` single-frame CT files into ``folder``; return geometry facts.

    Slices lie at ``origin + k * step * normal`` unless ``positions`` (n x 3) is given.  Files
    are named ``names[k]`` (default ``s{k:03d}.dcm``).  ``values(k)`` gives stored values.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    frame_of_ref = generate_uid()
    if positions is None:
        positions = [np.asarray(origin) + k * step * normal for k in range(n)]
    paths = []
    for k in range(n):
        ds = Dataset()
        uid = generate_uid()
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = uid
        if modality is not None:
            ds.Modality = modality
        ds.PatientName = "Synthetic^Patient"
        ds.PatientID = "SYN001"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = 3
        ds.FrameOfReferenceUID = frame_of_ref
        ds.InstanceNumber = n - k  # deliberately reversed: order must come from positions
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.7f}" for v in iop]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.SliceThickness = f"{step:g}"
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = f"{(slope(k) if callable(slope) else slope):g}"
        ds.RescaleIntercept = f"{intercept:g}"
        if padding_value is not None:
            ds.add_new(0x00280120, "SS", padding_value)
        arr = values(k) if values is not None else slice_values(k, rows, cols)
        ds.PixelData = np.asarray(arr, dtype="<i2").tobytes()
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CT
        fm.MediaStorageSOPInstanceUID = uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = fm
        name = names[k] if names is not None else f"s{k:03d}.dcm"
        path = folder / name
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return {
        "paths": paths,
        "series_uid": series_uid,
        "normal": normal,
        "positions": np.asarray(positions, dtype=float),
    }


def write_enhanced(
    path,
    n: int,
    *,
    rows: int = 4,
    cols: int = 4,
    step: float = 1.5,
    origin=(5.0, -7.0, 11.0),
    pixel_spacing=(0.6, 0.9),
    iop=(1, 0, 0, 0, 1, 0),
    intercept: float = -1024.0,
) -> dict:
    """One Enhanced CT file with ``n`` frames (per-frame positions, shared orientation,
    spacing and rescale), frames stored in *reverse* position order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    uid = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = uid
    ds.Modality = "CT"
    ds.PatientID = "SYN002"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.7f}" for v in iop]
    pm = Dataset()
    pm.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    pm.SliceThickness = f"{step:g}"
    pv = Dataset()
    pv.RescaleSlope = "1"
    pv.RescaleIntercept = f"{intercept:g}"
    shared.PlaneOrientationSequence = [po]
    shared.PixelMeasuresSequence = [pm]
    shared.PixelValueTransformationSequence = [pv]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame, planes = [], []
    for f in range(n):
        k = n - 1 - f  # frame f lies at position k
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) + k * step * normal]
        item.PlanePositionSequence = [pp]
        per_frame.append(item)
        planes.append(slice_values(k, rows, cols))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(planes).astype("<i2").tobytes()
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    fm.MediaStorageSOPInstanceUID = uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = fm
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return {"path": path, "normal": normal}
