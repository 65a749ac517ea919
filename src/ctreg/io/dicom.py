"""DICOM CT series: read and validate by the RunCTRegistration service's rules; write a series.

Input rules (each broken rule raises :class:`~ctreg.errors.DicomSeriesError` naming the file,
tag and value and saying what is accepted):

* every file is DICOM (hidden files and ``DICOMDIR`` are skipped), complete, CT Image Storage
  or Enhanced CT Image Storage (SOP Class UID from the dataset, else from the file meta),
  Modality ``CT``, one grey sample per pixel;
* one series (several: the error lists them; choose one with ``series_uid``);
* axial: the slice normal within :data:`AXIAL_TOLERANCE_DEG` of the patient z axis;
* :data:`MIN_FRAMES` to :data:`MAX_FRAMES` frames, all with the same rows, columns, pixel
  spacing and orientation;
* slices sorted by their position along the normal (never by file name or InstanceNumber), at
  an even step: float jitter up to :data:`SLICE_POSITION_TOLERANCE` of the step is accepted,
  missing or duplicated slices are refused;
* HU = stored × RescaleSlope + RescaleIntercept per slice, float32;
* padding outside the field of view — the PixelPaddingValue (and range), or any value
  ≤ :data:`PADDING_HU` — is marked ``Volume.valid = False`` and set to :data:`AIR_HU` in the
  array, so that nothing downstream mistakes -3024 for tissue.

``Volume.meta`` keys of a volume read here:

=================== ==========================================================================
``dicom``           pydicom Dataset: every element of the first sorted slice except pixel data
                    and per-frame functional groups (patient, study, series, equipment tags)
``series_uid``      SeriesInstanceUID (``""`` when the files leave it empty)
``series_description`` SeriesDescription (``""`` when absent)
``transfer_syntax`` TransferSyntaxUID of the first file
``sop_class_uid``   CT Image Storage or Enhanced CT Image Storage
``n_files``         number of files of the series; ``n_frames``: number of slices
``files``           list of file paths in slice order (temporary for archives and URLs)
``padding_fraction`` fraction of voxels marked invalid (padding)
``source``          what was read: a folder, archive, file list or URL list, as text
``format``          ``"dicom"``
=================== ==========================================================================
"""
from __future__ import annotations

import copy
import datetime
import logging
import math
import os
import struct
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from .. import __version__
from ..errors import DicomSeriesError
from ..volume import Volume
from .archive import extract_archive, is_archive, write_tar_gz
from .atomic import atomic_dir
from .fetch import download_urls, is_url

__all__ = [
    "DicomRuleError",
    "AXIAL_TOLERANCE_DEG",
    "MIN_FRAMES",
    "MAX_FRAMES",
    "PADDING_HU",
    "AIR_HU",
    "SLICE_POSITION_TOLERANCE",
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "read_dicom_series",
    "list_series",
    "inspect_dicom",
    "describe_volume",
    "write_dicom_series",
    "dicom_source_files",
]

log = logging.getLogger("ctreg")


class DicomRuleError(DicomSeriesError):
    """A broken input rule; ``code`` names the rule in the service's terms:
    ``InvalidFile.NotDicom``, ``InvalidFile.FrameCount``, ``InvalidFile.NotAxial`` or
    ``InvalidFile.Series`` (every other rule)."""

    def __init__(self, message: str, *, code: str = "InvalidFile.Series"):
        super().__init__(message)
        self.code = code


#: largest accepted angle (degrees) between the slice normal and the patient z axis.
AXIAL_TOLERANCE_DEG = 5.0
_NOT_DICOM = "InvalidFile.NotDicom"
#: accepted number of frames (slices) of a series, inclusive.
MIN_FRAMES = 8
MAX_FRAMES = 600
#: stored values at or below this many HU are scanner padding (-2048, -3024), not tissue.
PADDING_HU = -1500.0
#: value written into the array where the scan has no data (air).
AIR_HU = -1024.0
#: largest accepted deviation of a slice from the even grid, as a fraction of the step.
SLICE_POSITION_TOLERANCE = 0.1
#: largest accepted in-plane drift of slice positions (gantry tilt), as a fraction of the
#: smallest pixel spacing.
INPLANE_DRIFT_TOLERANCE = 0.1

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
LEGACY_ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.2")
_ACCEPTED_SOP = {CT_IMAGE_STORAGE: "CT Image Storage",
                 ENHANCED_CT_IMAGE_STORAGE: "Enhanced CT Image Storage",
                 LEGACY_ENHANCED_CT_IMAGE_STORAGE: "Legacy Converted Enhanced CT Image Storage"}
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                 "1.2.840.10008.1.2.2"}
_SKIP_NAMES = {"DICOMDIR"}
_IO_THREADS = min(8, (os.cpu_count() or 2) + 2)


# ------------------------------------------------------------------------------------------
# collecting files
# ------------------------------------------------------------------------------------------

def _walk(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() in _SKIP_NAMES:
                continue
            out.append(Path(root) / name)
    return out


def dicom_source_files(source, workdir: str | os.PathLike) -> tuple[list[Path], str]:
    """Resolve ``source`` to a list of candidate files; archives and URLs are unpacked or
    downloaded into ``workdir`` (the caller removes it).  Returns (files, description)."""
    workdir = Path(workdir)
    if isinstance(source, (str, os.PathLike)) and not is_url(source):
        items: list = [source]
        single = True
    elif isinstance(source, str):
        items, single = [source], False
    else:
        try:
            items = list(source)
        except TypeError:
            raise DicomRuleError(
                f"source must be a folder, an archive, a list of files or a list of URLs, got "
                f"{type(source).__name__}") from None
        single = False
    if not items:
        raise DicomRuleError("source is an empty list; accepted: a folder, an archive, a list "
                             "of DICOM files or a list of http(s)/file URLs")
    urls = [str(x) for x in items if is_url(x)]
    if urls and len(urls) != len(items):
        raise DicomRuleError("source mixes URLs and local paths; accepted: all URLs or all paths")
    if urls:
        got = download_urls(urls, workdir / "download", allow_file=True,
                            schemes=("http", "https"))
        files: list[Path] = []
        for i, p in enumerate(got):
            if is_archive(p):
                files.extend(_walk(extract_archive(p, workdir / f"unpacked{i}")))
            else:
                files.append(p)
        desc = f"{len(urls)} URL(s) starting {urls[0]}"
        return files, desc
    files = []
    for i, it in enumerate(items):
        p = Path(it)
        if p.is_dir():
            files.extend(_walk(p))
        elif is_archive(p):
            files.extend(_walk(extract_archive(p, workdir / f"unpacked{i}")))
        elif p.is_file():
            files.append(p)
        else:
            raise DicomRuleError(f"{p}: no such file or folder; accepted: a folder, an archive "
                                 "(.zip, .tar, .tar.gz), DICOM files or URLs")
    if not files:
        raise DicomRuleError(f"{items[0] if single else 'the file list'}: no files found; "
                             "accepted: a folder or archive holding one DICOM CT series")
    desc = str(items[0]) if single else f"{len(items)} path(s) starting {items[0]}"
    return files, desc


# ------------------------------------------------------------------------------------------
# per-file headers
# ------------------------------------------------------------------------------------------

@dataclass
class _Frame:
    """One image plane: a single-frame file or one frame of a multi-frame file."""

    path: Path
    ds: Dataset
    frame: int | None          # None: single-frame file
    ipp: np.ndarray            # (x, y, z) mm
    iop: np.ndarray            # (6,) row cosine (direction of increasing column index), col cosine
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    cols: int
    slope: float
    intercept: float
    pos: float = 0.0           # position along the normal, filled in later


@dataclass
class _PixelLocation:
    """Where a native (uncompressed) Pixel Data value lies in its file."""

    offset: int      # byte offset of the value
    length: int      # value length from the element header (0xFFFFFFFF: encapsulated)


def _locate_pixel_data(fh, ds: Dataset) -> _PixelLocation | None:
    """After ``dcmread(fh, stop_before_pixels=True)`` the file position is at the Pixel Data
    element: read its header (explicit or implicit VR little endian)."""
    pos = fh.tell()
    head = fh.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":  # (7FE0,0010), little endian
        return None
    fm = getattr(ds, "file_meta", None)
    ts = str(fm.get("TransferSyntaxUID", "")) if fm is not None else ""
    if ts == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        return _PixelLocation(pos + 8, int.from_bytes(head[4:8], "little"))
    if head[4:6] in (b"OB", b"OW", b"OF", b"UN") and len(head) == 12:
        return _PixelLocation(pos + 12, int.from_bytes(head[8:12], "little"))
    return None


def _read_file(path: Path) -> Dataset:
    """Header of ``path`` (everything before Pixel Data); the pixel element's location is kept
    in ``ds._ctreg_pixels`` so that native pixels are read straight into numpy later."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(path, "rb") as fh:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
                loc = _locate_pixel_data(fh, ds)
    except InvalidDicomError as exc:
        raise DicomRuleError(
            f"{path} is not a DICOM file ({exc}); accepted: DICOM files only (a folder must hold "
            "nothing else)", code=_NOT_DICOM) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise DicomRuleError(
            f"{path} cannot be parsed as DICOM ({type(exc).__name__}: {exc}); the file may be "
            "truncated or damaged; accepted: complete DICOM files", code=_NOT_DICOM) from exc
    if loc is None and _sop_class(ds) in _ACCEPTED_SOP:
        # a parse that stopped early (truncated header), or pixels we must let pydicom find
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                full = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001
                full = ds
        if "PixelData" not in full:
            raise DicomRuleError(
                f"{path} has no Pixel Data (7FE0,0010): the file is truncated or damaged; "
                "accepted: complete CT image files", code=_NOT_DICOM)
    ds._ctreg_pixels = loc
    return ds


def _sop_class(ds: Dataset) -> str:
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop and getattr(ds, "file_meta", None) is not None:
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    return sop


def _series_uid(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "").strip()


def _fg(ds: Dataset, frame: int | None, seq: str, attr: str):
    """Attribute ``attr`` of functional group ``seq`` for ``frame`` (per-frame, then shared),
    falling back to the top-level dataset."""
    if frame is not None:
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            g = ds.get(groups)
            if not g:
                continue
            if groups.startswith("PerFrame"):
                if frame >= len(g):
                    continue
                item = g[frame]
            else:
                item = g[0]
            s = item.get(seq)
            if s and attr in s[0]:
                return s[0].get(attr)
    return ds.get(attr)


def _need(value, path: Path, tag: str, accepted: str):
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DicomRuleError(f"{path}: required tag {tag} is missing or empty; accepted: {accepted}")
    return value


def _frames_of(path: Path, ds: Dataset) -> list[_Frame]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    multi = "PerFrameFunctionalGroupsSequence" in ds or n > 1
    frames = []
    for f in (range(n) if multi else [None]):
        ipp = _need(_fg(ds, f, "PlanePositionSequence", "ImagePositionPatient"), path,
                    "ImagePositionPatient (0020,0032)", "three numbers (x, y, z) mm")
        iop = _need(_fg(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient"), path,
                    "ImageOrientationPatient (0020,0037)", "six direction cosines")
        ps = _need(_fg(ds, f, "PixelMeasuresSequence", "PixelSpacing"), path,
                   "PixelSpacing (0028,0030)", "two positive numbers (row, column spacing) mm")
        slope = _fg(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        inter = _fg(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        try:
            ipp_a = np.array([float(v) for v in ipp], dtype=np.float64)
            iop_a = np.array([float(v) for v in iop], dtype=np.float64)
            ps_t = (float(ps[0]), float(ps[1]))
            slope_f = 1.0 if slope in (None, "") else float(slope)
            inter_f = 0.0 if inter in (None, "") else float(inter)
        except (TypeError, ValueError, IndexError) as exc:
            raise DicomRuleError(f"{path}: unreadable geometry or rescale tag ({exc}); accepted: "
                                 "numeric ImagePositionPatient, ImageOrientationPatient, "
                                 "PixelSpacing, RescaleSlope, RescaleIntercept") from exc
        if ipp_a.shape != (3,) or not np.all(np.isfinite(ipp_a)):
            raise DicomRuleError(f"{path}: ImagePositionPatient (0020,0032) = {list(ipp)}; "
                                 "accepted: three finite numbers")
        if iop_a.shape != (6,) or not np.all(np.isfinite(iop_a)):
            raise DicomRuleError(f"{path}: ImageOrientationPatient (0020,0037) = {list(iop)}; "
                                 "accepted: six finite direction cosines")
        if not all(math.isfinite(s) and s > 0 for s in ps_t):
            raise DicomRuleError(f"{path}: PixelSpacing (0028,0030) = {list(ps)}; accepted: two "
                                 "positive numbers")
        if not (math.isfinite(slope_f) and slope_f != 0 and math.isfinite(inter_f)):
            raise DicomRuleError(f"{path}: RescaleSlope/RescaleIntercept = {slope}/{inter}; "
                                 "accepted: a non-zero finite slope and a finite intercept")
        rows = int(_need(ds.get("Rows"), path, "Rows (0028,0010)", "a positive integer"))
        cols = int(_need(ds.get("Columns"), path, "Columns (0028,0011)", "a positive integer"))
        frames.append(_Frame(path, ds, f, ipp_a, iop_a, ps_t, rows, cols, slope_f, inter_f))
    return frames


def _parse_all(files: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
        datasets = list(pool.map(_read_file, files))
    return list(zip(files, datasets))


def _group_series(parsed) -> dict[str, list[tuple[Path, Dataset]]]:
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for path, ds in parsed:
            groups.setdefault(_series_uid(ds), []).append((path, ds))
            ds.get("SeriesDescription"), ds.get("Modality")  # convert quietly, once
    return groups


def _series_summary(uid: str, members) -> dict[str, Any]:
    ds0 = members[0][1]
    n_frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in members)
    return {
        "series_uid": uid,
        "description": str(ds0.get("SeriesDescription", "") or ""),
        "modality": str(ds0.get("Modality", "") or ""),
        "sop_class_uid": _sop_class(ds0),
        "n_files": len(members),
        "n_frames": n_frames,
    }


def _describe_groups(groups) -> str:
    lines = []
    for uid, members in groups.items():
        s = _series_summary(uid, members)
        lines.append(f"  {uid or '(empty SeriesInstanceUID)'}: {s['description']!r}, "
                     f"modality {s['modality'] or '?'}, {s['n_frames']} frame(s) in "
                     f"{s['n_files']} file(s)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# validation and geometry
# ------------------------------------------------------------------------------------------

def _check_class(path: Path, ds: Dataset) -> None:
    sop = _sop_class(ds)
    if sop not in _ACCEPTED_SOP:
        name = UID(sop).name if sop else "(none)"
        raise DicomRuleError(
            f"{path}: SOPClassUID (0008,0016) = {sop or '(empty)'} ({name}); accepted: "
            + ", ".join(f"{n} ({u})" for u, n in _ACCEPTED_SOP.items()))
    modality = str(ds.get("Modality", "") or "").strip()
    if modality != "CT":
        raise DicomRuleError(f"{path}: Modality (0008,0060) = {modality or '(missing)'!r}; "
                             "accepted: 'CT'")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photo = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if spp != 1 or photo not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomRuleError(
            f"{path}: SamplesPerPixel (0028,0002) = {spp}, PhotometricInterpretation (0028,0004) "
            f"= {photo!r}; accepted: 1 sample, MONOCHROME2 or MONOCHROME1")


def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _validate_and_sort(frames: list[_Frame], *, min_frames: int, max_frames: int) -> list[_Frame]:
    f0 = frames[0]
    r, c = f0.iop[:3], f0.iop[3:]
    if (abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3
            or abs(float(r @ c)) > 1e-3):
        raise DicomRuleError(
            f"{f0.path}: ImageOrientationPatient (0020,0037) = {f0.iop.tolist()} is not two "
            "orthogonal unit vectors; accepted: orthonormal direction cosines")
    for f in frames[1:]:
        if (f.rows, f.cols) != (f0.rows, f0.cols):
            raise DicomRuleError(
                f"{f.path}: Rows x Columns = {f.rows} x {f.cols} differs from {f0.rows} x "
                f"{f0.cols} in {f0.path}; accepted: the same size on every slice")
        if not np.allclose(f.pixel_spacing, f0.pixel_spacing, rtol=1e-4, atol=1e-5):
            raise DicomRuleError(
                f"{f.path}: PixelSpacing (0028,0030) = {list(f.pixel_spacing)} differs from "
                f"{list(f0.pixel_spacing)} in {f0.path}; accepted: the same spacing on every slice")
        if not np.allclose(f.iop, f0.iop, atol=1e-4):
            raise DicomRuleError(
                f"{f.path}: ImageOrientationPatient (0020,0037) = {f.iop.tolist()} differs from "
                f"{f0.iop.tolist()} in {f0.path}; accepted: the same orientation on every slice")
    normal = _normal(f0.iop)
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if angle > AXIAL_TOLERANCE_DEG:
        raise DicomRuleError(
            f"{f0.path}: the series is not axial: ImageOrientationPatient (0020,0037) = "
            f"{f0.iop.tolist()} gives a slice normal {np.round(normal, 4).tolist()} at "
            f"{angle:.1f} degrees from the patient z axis; accepted: axial slices, normal within "
            f"{AXIAL_TOLERANCE_DEG:g} degrees of z", code="InvalidFile.NotAxial")
    n = len(frames)
    if not (min_frames <= n <= max_frames):
        raise DicomRuleError(
            f"{f0.path}: the series has {n} frame(s) (slices); accepted: {min_frames} to "
            f"{max_frames} frames", code="InvalidFile.FrameCount")
    for f in frames:
        f.pos = float(f.ipp @ normal)
    frames = sorted(frames, key=lambda f: f.pos)
    pos = np.array([f.pos for f in frames])
    steps = np.diff(pos)
    if n >= 2:
        med = float(np.median(steps))
        for k, s in enumerate(steps):
            if s <= max(1e-3, 0.2 * med):
                a, b = frames[k], frames[k + 1]
                raise DicomRuleError(
                    f"duplicated slice: {a.path} and {b.path} are both at position {a.pos:.3f} mm "
                    f"along the slice normal (ImagePositionPatient {a.ipp.tolist()}, "
                    f"{b.ipp.tolist()}); accepted: one slice per position")
        if med <= 0:  # pragma: no cover - guarded by the duplicate check
            raise DicomRuleError(f"{f0.path}: slices have no extent along the normal")
        for k, s in enumerate(steps):
            if abs(s - med) > SLICE_POSITION_TOLERANCE * med:
                a, b = frames[k], frames[k + 1]
                kind = (f"missing slice(s): gap of {s:.3f} mm" if s > 1.5 * med
                        else f"uneven slice spacing: step {s:.3f} mm")
                raise DicomRuleError(
                    f"{kind} between {a.path} (position {a.pos:.3f} mm) and {b.path} (position "
                    f"{b.pos:.3f} mm), expected {med:.3f} mm; accepted: evenly spaced slices "
                    f"(jitter up to {SLICE_POSITION_TOLERANCE:.0%} of the step)")
        step = (pos[-1] - pos[0]) / (n - 1)
        dev = np.abs(pos - (pos[0] + step * np.arange(n)))
        if dev.max() > SLICE_POSITION_TOLERANCE * step:
            k = int(dev.argmax())
            raise DicomRuleError(
                f"{frames[k].path}: slice position {pos[k]:.3f} mm is {dev[k]:.3f} mm off the even "
                f"grid of step {step:.3f} mm; accepted: evenly spaced slices")
        ipps = np.array([f.ipp for f in frames])
        inplane = ipps - ipps[0] - np.outer(pos - pos[0], normal)
        drift = float(np.linalg.norm(inplane, axis=1).max())
        if drift > INPLANE_DRIFT_TOLERANCE * min(f0.pixel_spacing):
            k = int(np.linalg.norm(inplane, axis=1).argmax())
            raise DicomRuleError(
                f"{frames[k].path}: ImagePositionPatient {frames[k].ipp.tolist()} drifts "
                f"{drift:.3f} mm sideways from the slice normal through the first slice (gantry "
                "tilt or sheared stack); accepted: slices stacked along their normal")
    return frames


def _affine(frames: list[_Frame]) -> np.ndarray:
    f0 = frames[0]
    row_dir, col_dir = f0.iop[:3], f0.iop[3:]
    normal = _normal(f0.iop)
    n = len(frames)
    if n > 1:
        step = (frames[-1].pos - frames[0].pos) / (n - 1)
    else:
        st = f0.ds.get("SliceThickness")
        try:
            step = float(st) if st not in (None, "") and float(st) > 0 else 1.0
        except (TypeError, ValueError):
            step = 1.0
    aff = np.eye(4)
    aff[:3, 0] = normal * step
    aff[:3, 1] = col_dir * f0.pixel_spacing[0]   # +j: next row
    aff[:3, 2] = row_dir * f0.pixel_spacing[1]   # +i: next column
    aff[:3, 3] = f0.ipp
    return aff


# ------------------------------------------------------------------------------------------
# pixels
# ------------------------------------------------------------------------------------------

def _stored_dtype(ds: Dataset, path: Path, big_endian: bool) -> np.dtype:
    bits = int(_need(ds.get("BitsAllocated"), path, "BitsAllocated (0028,0100)", "8, 16 or 32"))
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        raise DicomRuleError(f"{path}: BitsAllocated (0028,0100) = {bits}; accepted: 8, 16 or 32")
    return np.dtype(f"{'>' if big_endian else '<'}{'i' if signed else 'u'}{bits // 8}")


def _decode_file(path: Path, ds: Dataset, n_frames: int, rows: int, cols: int) -> np.ndarray:
    """Stored values (n_frames, rows, cols) of one file, integer dtype."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if getattr(ds, "file_meta", None) else ""
    loc = getattr(ds, "_ctreg_pixels", None)
    if ts in _UNCOMPRESSED or not ts:
        dt = _stored_dtype(ds, path, ts == "1.2.840.10008.1.2.2")
        count = n_frames * rows * cols
        need = count * dt.itemsize
        if loc is not None and loc.length != 0xFFFFFFFF and ts != "1.2.840.10008.1.2.1.99":
            avail = min(loc.length, max(0, path.stat().st_size - loc.offset))
            arr = None
            if avail >= need:
                arr = np.fromfile(path, dtype=dt, count=count, offset=loc.offset)
            got = avail
        else:  # deflated or unusual layout: let pydicom read the element
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = pydicom.dcmread(path).PixelData
            got = len(raw)
            arr = np.frombuffer(raw, dtype=dt, count=count) if got >= need else None
        if arr is None or arr.size < count:
            raise DicomRuleError(
                f"{path}: Pixel Data (7FE0,0010) holds {got} bytes, {need} expected for "
                f"{n_frames} x {rows} x {cols} x {dt.itemsize}: the file is truncated; accepted: "
                "complete files", code=_NOT_DICOM)
        bits_stored = int(ds.get("BitsStored", dt.itemsize * 8) or dt.itemsize * 8)
        if bits_stored < dt.itemsize * 8:
            shift = dt.itemsize * 8 - bits_stored
            arr = arr.astype(dt.newbyteorder("="))
            if dt.kind == "i":
                arr = (arr << shift) >> shift          # sign-extend from bits_stored
            else:
                arr = arr & ((1 << bits_stored) - 1)  # drop overlay bits above bits_stored
        return arr.reshape(n_frames, rows, cols)
    # compressed: pydicom's decoder plugins (RLE built in; pylibjpeg / gdcm for JPEG family);
    # the header was read without pixels: now the whole file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pydicom.dcmread(path).pixel_array
    except Exception as exc:  # noqa: BLE001
        name = UID(ts).name if ts else "(unknown)"
        raise DicomRuleError(
            f"{path}: cannot decode Pixel Data in transfer syntax {name} ({ts}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; accepted: "
            "uncompressed, RLE, JPEG lossless, JPEG-LS and JPEG 2000 with pylibjpeg, "
            "pylibjpeg-openjpeg and python-gdcm installed (a damaged file also fails here)",
            code=_NOT_DICOM) from exc
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (n_frames, rows, cols):
        raise DicomRuleError(f"{path}: decoded pixel array has shape {arr.shape}, expected "
                             f"{(n_frames, rows, cols)}")
    return arr


def _padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    pad = ds.get("PixelPaddingValue")
    if pad is None:
        return None
    pad = int(pad)
    lim = ds.get("PixelPaddingRangeLimit")
    if lim is None:
        return stored == pad
    lo, hi = sorted((pad, int(lim)))
    return (stored >= lo) & (stored <= hi)


def _load_pixels(frames: list[_Frame]) -> tuple[np.ndarray, np.ndarray]:
    """HU float32 (z, y, x) and the valid mask for sorted ``frames``."""
    f0 = frames[0]
    nz, ny, nx = len(frames), f0.rows, f0.cols
    hu = np.empty((nz, ny, nx), dtype=np.float32)
    valid = np.empty((nz, ny, nx), dtype=bool)
    by_file: dict[Path, list[tuple[int, _Frame]]] = {}
    for z, f in enumerate(frames):
        by_file.setdefault(f.path, []).append((z, f))

    def work(item):
        path, members = item
        ds = members[0][1].ds
        n_in_file = int(ds.get("NumberOfFrames", 1) or 1)
        stored = _decode_file(path, ds, n_in_file, ny, nx)
        for z, f in members:
            plane = stored[f.frame or 0]
            out = hu[z]
            if f.slope == 1.0:
                out[...] = plane
            else:
                np.multiply(plane, np.float32(f.slope), out=out, casting="unsafe")
            if f.intercept != 0.0:
                out += np.float32(f.intercept)
            pm = _padding_mask(plane, ds)
            if pm is not None and not pm.any():
                pm = None
            low = f.slope < 0 or float(plane.min()) * f.slope + f.intercept <= PADDING_HU
            if pm is None and not low:
                valid[z] = True
                continue
            v = out > PADDING_HU
            if pm is not None:
                v &= ~pm
            np.copyto(out, np.float32(AIR_HU), where=~v)
            valid[z] = v

    with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
        list(pool.map(work, by_file.items()))
    return hu, valid


def _header_copy(ds: Dataset) -> Dataset:
    hdr = Dataset()
    for tag in list(ds.keys()):
        if tag.group == 0x7FE0 or tag == 0x52009230 or tag.is_private:
            continue  # pixels, per-frame functional groups, vendor-private tags
        try:
            elem = ds[tag]
            hdr[tag] = copy.deepcopy(elem) if elem.VR == "SQ" else elem
        except Exception as exc:  # noqa: BLE001 - an undecodable element is not needed
            log.debug("header element %s skipped: %s", tag, exc)
    fm = getattr(ds, "file_meta", None)
    if fm is not None:
        hdr.file_meta = copy.deepcopy(fm)
    return hdr


# ------------------------------------------------------------------------------------------
# public: reading
# ------------------------------------------------------------------------------------------

def list_series(source) -> list[dict[str, Any]]:
    """Every series found in ``source`` (folder, archive, files, URLs), without validation.

    Each entry: ``series_uid``, ``description``, ``modality``, ``sop_class_uid``, ``n_files``,
    ``n_frames``.  Files that are not DICOM raise :class:`DicomSeriesError`.
    """
    with tempfile.TemporaryDirectory(prefix="ctreg-dicom-") as tmp:
        files, _ = dicom_source_files(source, tmp)
        groups = _group_series(_parse_all(files))
        return [_series_summary(uid, m) for uid, m in groups.items()]


def _select(groups, series_uid: str | None, desc: str):
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomRuleError(
                f"{desc}: no series with SeriesInstanceUID {series_uid!r}; found:\n"
                + _describe_groups(groups))
        return series_uid, groups[series_uid]
    if len(groups) > 1:
        raise DicomRuleError(
            f"{desc} holds {len(groups)} series; accepted: one series (choose one with "
            "series_uid / --series-uid):\n" + _describe_groups(groups))
    uid = next(iter(groups))
    return uid, groups[uid]


def _read_series_files(files: Sequence[Path], desc: str, *, series_uid: str | None = None,
                       min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> Volume:
    groups = _group_series(_parse_all(files))
    return _read_groups(groups, desc, series_uid=series_uid, min_frames=min_frames,
                        max_frames=max_frames)


def _read_groups(groups, desc: str, *, series_uid: str | None = None,
                 min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> Volume:
    with warnings.catch_warnings():  # pydicom warns on every non-conforming value it converts
        warnings.simplefilter("ignore", UserWarning)
        return _read_groups_quiet(groups, desc, series_uid=series_uid, min_frames=min_frames,
                                  max_frames=max_frames)


def _read_groups_quiet(groups, desc: str, *, series_uid: str | None, min_frames: int,
                       max_frames: int) -> Volume:
    uid, members = _select(groups, series_uid, desc)
    frames: list[_Frame] = []
    for path, ds in members:
        _check_class(path, ds)
        frames.extend(_frames_of(path, ds))
    frames = _validate_and_sort(frames, min_frames=min_frames, max_frames=max_frames)
    affine = _affine(frames)
    hu, valid = _load_pixels(frames)
    n_invalid = int(valid.size - np.count_nonzero(valid))
    ds0 = frames[0].ds
    ts = str(ds0.file_meta.get("TransferSyntaxUID", "")) if getattr(ds0, "file_meta", None) else ""
    meta = {
        "format": "dicom",
        "dicom": _header_copy(ds0),
        "series_uid": uid,
        "series_description": str(ds0.get("SeriesDescription", "") or ""),
        "transfer_syntax": ts,
        "sop_class_uid": _sop_class(ds0),
        "n_files": len(members),
        "n_frames": len(frames),
        "files": [str(f.path) for f in frames],
        "padding_fraction": n_invalid / valid.size,
        "source": desc,
    }
    log.debug("read DICOM series %s: %d frames, %s", uid, len(frames), desc)
    return Volume(hu, affine, valid if n_invalid else None, meta)


def read_dicom_series(source, *, series_uid: str | None = None) -> Volume:
    """Read one CT series by the service's input rules (see the module docstring).

    Parameters
    ----------
    source : a folder (searched recursively; files with or without ``.dcm``), a ``.zip`` /
        ``.tar`` / ``.tar.gz`` archive, a list of files, or a list of ``http(s)://`` or
        ``file://`` URLs (downloaded into a temporary folder that is removed afterwards; URLs
        may also name archives).
    series_uid : SeriesInstanceUID to read when the source holds several series.

    Returns
    -------
    Volume
        HU float32 (z, y, x), slices sorted along the normal; ``affine`` from the first slice's
        ImagePositionPatient, ImageOrientationPatient and the slice step; ``valid`` False on
        padding (None when there is none); ``meta`` as documented in the module.

    Raises
    ------
    DicomSeriesError
        for every broken input rule, naming the file, the tag and what is accepted.
    """
    with tempfile.TemporaryDirectory(prefix="ctreg-dicom-") as tmp:
        files, desc = dicom_source_files(source, tmp)
        return _read_series_files(files, desc, series_uid=series_uid)


def _axis_letter(v: np.ndarray) -> str:
    a = int(np.argmax(np.abs(v)))
    return ("LR", "PA", "SI")[a][0 if v[a] > 0 else 1]


def describe_volume(volume: Volume) -> dict[str, Any]:
    """JSON-ready summary of a volume: size, spacing, orientation, HU range, padding."""
    d = volume.direction
    normal = np.cross(d[:, 2], d[:, 1])
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    valid = volume.valid
    vals = volume.array[valid] if valid is not None else volume.array
    meta = volume.meta
    ts = str(meta.get("transfer_syntax", "") or "")
    out = {
        "shape_zyx": list(volume.shape),
        "size_xyz": list(volume.shape[::-1]),
        "spacing_zyx_mm": [round(float(v), 6) for v in volume.spacing],
        "origin_xyz_mm": [round(float(v), 6) for v in volume.origin],
        "direction_zyx_columns": np.round(d, 6).tolist(),
        # letters of the world directions of the x, y, z array axes (ITK style, e.g. "LPS")
        "orientation": "".join(_axis_letter(d[:, c]) for c in (2, 1, 0)),
        "slice_normal_angle_from_z_deg": round(angle, 3),
        "hu_min": float(vals.min()) if vals.size else None,
        "hu_max": float(vals.max()) if vals.size else None,
        "padding_fraction": float(meta.get("padding_fraction", 0.0 if valid is None
                                           else 1.0 - valid.mean())),
        "format": meta.get("format"),
    }
    if ts:
        out["transfer_syntax"] = ts
        out["transfer_syntax_name"] = UID(ts).name
    for key in ("series_uid", "series_description", "n_files", "n_frames", "sop_class_uid"):
        if key in meta:
            out[key] = meta[key]
    return out


def inspect_dicom(source, *, series_uid: str | None = None) -> dict[str, Any]:
    """What ``source`` holds and whether it passes the input rules, without raising.

    Returns ``{"source", "series": [summary per series], "valid": bool, "error": str | None,
    "error_code": str | None, "volume": describe_volume(...) | None}``.
    """
    report: dict[str, Any] = {"source": str(source), "format": "dicom", "series": [],
                              "valid": False, "error": None, "error_code": None, "volume": None}
    with tempfile.TemporaryDirectory(prefix="ctreg-dicom-") as tmp:
        groups = None
        try:
            files, desc = dicom_source_files(source, tmp)
            report["source"] = desc
            groups = _group_series(_parse_all(files))
            report["series"] = [_series_summary(u, m) for u, m in groups.items()]
            volume = _read_groups(groups, desc, series_uid=series_uid)
        except DicomSeriesError as exc:
            report["error"] = str(exc)
            report["error_code"] = getattr(exc, "code", "InvalidFile.Series")
            if report["error_code"] == "InvalidFile.FrameCount" and groups is not None:
                try:  # still show what the series holds
                    volume = _read_groups(groups, desc, series_uid=series_uid, min_frames=1,
                                          max_frames=10**7)
                    report["volume"] = describe_volume(volume)
                except DicomSeriesError:
                    pass
            return report
    report["valid"] = True
    report["volume"] = describe_volume(volume)
    return report


# ------------------------------------------------------------------------------------------
# public: writing
# ------------------------------------------------------------------------------------------

_PATIENT_TAGS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                 "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
                 "PatientIdentityRemoved", "DeidentificationMethod")
_STUDY_TAGS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
               "ReferringPhysicianName", "StudyDescription")


def _rescale_for(values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) so that round((v - intercept) / slope) fits int16."""
    if values.size == 0:
        return 1.0, 0.0
    vmin, vmax = float(values.min()), float(values.max())
    if vmin >= -32767.5 and vmax <= 32766.5:
        return 1.0, 0.0
    slope = (vmax - vmin) / 65530.0
    intercept = vmin + 32765.0 * slope
    return slope, intercept


def _dicom_now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _series_template(volume: Volume, reference: Volume | None, floating: Volume | None,
                     series_description: str | None) -> tuple[Dataset, str]:
    ref = reference.meta.get("dicom") if reference is not None else None
    flo = floating.meta.get("dicom") if floating is not None else None
    ds = Dataset()
    date, time_ = _dicom_now()
    ds.SpecificCharacterSet = (flo.get("SpecificCharacterSet") if flo is not None
                               and flo.get("SpecificCharacterSet") else "ISO_IR 192")
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
        fd = (floating.meta.get("series_description") if floating is not None else "") or "floating"
        rd = (reference.meta.get("series_description") if reference is not None else "") or "reference"
        series_description = f"ctreg: {fd} registered to {rd}"
    ds.SeriesDescription = str(series_description)[:64]
    for_uid = str(ref.get("FrameOfReferenceUID", "") or "") if ref is not None else ""
    ds.FrameOfReferenceUID = for_uid or generate_uid()
    ds.PositionReferenceIndicator = (ref.get("PositionReferenceIndicator", "") if ref is not None
                                     else "")
    if ref is not None and ref.get("PatientPosition"):
        ds.PatientPosition = ref.PatientPosition
    ds.DerivationDescription = str(series_description)[:1024]
    ds.BodyPartExamined = (ref.get("BodyPartExamined", "CHEST") if ref is not None else "CHEST")
    return ds, ds.SeriesDescription


def _ds_fmt(x: float) -> str:
    """A DICOM DS string (<= 16 characters) for ``x``."""
    s = f"{x:.10g}"
    if len(s) > 16:
        s = f"{x:.6g}"
    return s


def _encode_slices(volume: Volume, template: Dataset, ref_thickness) -> list[tuple[str, bytes]]:
    aff = volume.affine
    sp = volume.spacing
    direction = volume.direction
    row_dir, col_dir = direction[:, 2], direction[:, 1]
    normal = np.cross(row_dir, col_dir)
    nz, ny, nx = volume.shape
    arr = volume.array
    valid = volume.valid
    has_pad = valid is not None and not bool(valid.all())
    values = arr[valid] if has_pad else arr
    slope, intercept = _rescale_for(values)
    pad_stored = -32768
    if has_pad and slope == 1.0 and intercept == 0.0 and (values.size == 0 or values.min() > -3023.5):
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
        plane = np.rint((arr[k] - intercept) / slope) if slope != 1.0 or intercept != 0.0 \
            else np.rint(arr[k])
        plane = np.clip(plane, -32768, 32767).astype("<i2")
        if has_pad:
            plane[~valid[k]] = pad_stored
        data = encoder.encode(generate_uid(), k + 1, [_ds_fmt(v) for v in ipp],
                              _ds_fmt(float(ipp @ normal)), plane.tobytes())
        return f"IM{k + 1:0{width}d}.dcm", data

    with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
        return list(pool.map(one, range(nz)))


# per-slice elements, in tag order: SOPInstanceUID, InstanceNumber, ImagePositionPatient,
# SliceLocation (PixelData, 7FE0,0010, comes last)
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

    def encode(self, sop_uid: str, instance: int, ipp: list[str], slice_location: str,
               pixels: bytes) -> bytes:
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


def write_dicom_series(volume: Volume, out: str | os.PathLike, *, reference: Volume | None = None,
                       floating: Volume | None = None, series_description: str | None = None) -> Path:
    """Write ``volume`` (HU) as a new CT series: one CT Image Storage file per slice.

    Parameters
    ----------
    volume : HU volume on its own grid (for a registration: the warped floating scan on the
        reference grid).
    out : a folder (created; must not exist or be empty) or a path ending in ``.tar.gz`` / ``.tgz``
        (the files inside one top-level folder named after the archive).
    reference : Volume read from the reference DICOM series or None: FrameOfReferenceUID,
        PositionReferenceIndicator, PatientPosition and SliceThickness come from it.
    floating : Volume read from the floating DICOM series or None: patient and study tags
        come from it (None: a fresh StudyInstanceUID and an anonymous patient).
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
    ref_ds = reference.meta.get("dicom") if reference is not None else None
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

