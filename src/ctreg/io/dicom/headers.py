"""Per-file headers: parsing, frames (classic and enhanced multi-frame), series grouping."""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .rules import _ACCEPTED_SOP, _IO_THREADS, _NOT_DICOM, DicomRuleError


@dataclass
class _Frame:
    """One image plane: a single-frame file or one frame of a multi-frame file."""

    path: Path
    ds: Dataset
    frame: int | None  # None: single-frame file
    ipp: np.ndarray  # (x, y, z) mm
    iop: np.ndarray  # (6,) row cosine (direction of increasing column index), col cosine
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    cols: int
    slope: float
    intercept: float
    pos: float = 0.0  # position along the normal, filled in later


@dataclass
class _PixelLocation:
    """Where a native (uncompressed) Pixel Data value lies in its file."""

    offset: int  # byte offset of the value
    length: int  # value length from the element header (0xFFFFFFFF: encapsulated)


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
            f"{path} is not a DICOM file (no 'DICM' prefix after the 128-byte preamble and no "
            "File Meta Information); accepted: DICOM files only (a folder must hold nothing "
            "else)",
            code=_NOT_DICOM,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise DicomRuleError(
            f"{path} cannot be parsed as DICOM ({type(exc).__name__}: {exc}); the file may be "
            "truncated or damaged; accepted: complete DICOM files",
            code=_NOT_DICOM,
        ) from exc
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
                "accepted: complete CT image files",
                code=_NOT_DICOM,
            )
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
        raise DicomRuleError(
            f"{path}: required tag {tag} is missing or empty; accepted: {accepted}"
        )
    return value


def _frames_of(path: Path, ds: Dataset) -> list[_Frame]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    multi = "PerFrameFunctionalGroupsSequence" in ds or n > 1
    frames = []
    for f in range(n) if multi else [None]:
        ipp = _need(
            _fg(ds, f, "PlanePositionSequence", "ImagePositionPatient"),
            path,
            "ImagePositionPatient (0020,0032)",
            "three numbers (x, y, z) mm",
        )
        iop = _need(
            _fg(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient"),
            path,
            "ImageOrientationPatient (0020,0037)",
            "six direction cosines",
        )
        ps = _need(
            _fg(ds, f, "PixelMeasuresSequence", "PixelSpacing"),
            path,
            "PixelSpacing (0028,0030)",
            "two positive numbers (row, column spacing) mm",
        )
        slope = _fg(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        inter = _fg(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        try:
            ipp_a = np.array([float(v) for v in ipp], dtype=np.float64)
            iop_a = np.array([float(v) for v in iop], dtype=np.float64)
            ps_t = (float(ps[0]), float(ps[1]))
            slope_f = 1.0 if slope in (None, "") else float(slope)
            inter_f = 0.0 if inter in (None, "") else float(inter)
        except (TypeError, ValueError, IndexError) as exc:
            raise DicomRuleError(
                f"{path}: unreadable geometry or rescale tag ({exc}); accepted: "
                "numeric ImagePositionPatient, ImageOrientationPatient, "
                "PixelSpacing, RescaleSlope, RescaleIntercept"
            ) from exc
        if ipp_a.shape != (3,) or not np.all(np.isfinite(ipp_a)):
            raise DicomRuleError(
                f"{path}: ImagePositionPatient (0020,0032) = {list(ipp)}; "
                "accepted: three finite numbers"
            )
        if iop_a.shape != (6,) or not np.all(np.isfinite(iop_a)):
            raise DicomRuleError(
                f"{path}: ImageOrientationPatient (0020,0037) = {list(iop)}; "
                "accepted: six finite direction cosines"
            )
        if not all(math.isfinite(s) and s > 0 for s in ps_t):
            raise DicomRuleError(
                f"{path}: PixelSpacing (0028,0030) = {list(ps)}; accepted: two positive numbers"
            )
        if not (math.isfinite(slope_f) and slope_f != 0 and math.isfinite(inter_f)):
            raise DicomRuleError(
                f"{path}: RescaleSlope/RescaleIntercept = {slope}/{inter}; "
                "accepted: a non-zero finite slope and a finite intercept"
            )
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
        lines.append(
            f"  {uid or '(empty SeriesInstanceUID)'}: {s['description']!r}, "
            f"modality {s['modality'] or '?'}, {s['n_frames']} frame(s) in "
            f"{s['n_files']} file(s)"
        )
    return "\n".join(lines)
