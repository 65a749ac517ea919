"""Pixel decoding: stored values to HU, padding mask, header copy."""

from __future__ import annotations

import copy
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from .headers import _Frame, _need
from .rules import _IO_THREADS, _NOT_DICOM, _UNCOMPRESSED, AIR_HU, PADDING_HU, DicomRuleError, log


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
                "complete files",
                code=_NOT_DICOM,
            )
        bits_stored = int(ds.get("BitsStored", dt.itemsize * 8) or dt.itemsize * 8)
        if bits_stored < dt.itemsize * 8:
            shift = dt.itemsize * 8 - bits_stored
            arr = arr.astype(dt.newbyteorder("="))
            if dt.kind == "i":
                arr = (arr << shift) >> shift  # sign-extend from bits_stored
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
            code=_NOT_DICOM,
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (n_frames, rows, cols):
        raise DicomRuleError(
            f"{path}: decoded pixel array has shape {arr.shape}, expected {(n_frames, rows, cols)}"
        )
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
