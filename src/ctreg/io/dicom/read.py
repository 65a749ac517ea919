"""Public reading: read_dicom_series, list_series, inspect_dicom, describe_volume."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydicom.uid import UID

from ...errors import DicomSeriesError
from ...volume import Volume
from .geometry import _affine, _check_class, _validate_and_sort
from .headers import (
    _describe_groups,
    _Frame,
    _frames_of,
    _group_series,
    _parse_all,
    _series_summary,
    _sop_class,
)
from .pixels import _header_copy, _load_pixels
from .rules import MAX_FRAMES, MIN_FRAMES, DicomRuleError, log
from .sources import dicom_source_files


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
                + _describe_groups(groups)
            )
        return series_uid, groups[series_uid]
    if len(groups) > 1:
        raise DicomRuleError(
            f"{desc} holds {len(groups)} series; accepted: one series (choose one with "
            "series_uid / --series-uid):\n" + _describe_groups(groups)
        )
    uid = next(iter(groups))
    return uid, groups[uid]


def _read_series_files(
    files: Sequence[Path],
    desc: str,
    *,
    series_uid: str | None = None,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> Volume:
    groups = _group_series(_parse_all(files))
    return _read_groups(
        groups, desc, series_uid=series_uid, min_frames=min_frames, max_frames=max_frames
    )


def _read_groups(
    groups,
    desc: str,
    *,
    series_uid: str | None = None,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> Volume:
    with warnings.catch_warnings():  # pydicom warns on every non-conforming value it converts
        warnings.simplefilter("ignore", UserWarning)
        return _read_groups_quiet(
            groups, desc, series_uid=series_uid, min_frames=min_frames, max_frames=max_frames
        )


def _read_groups_quiet(
    groups, desc: str, *, series_uid: str | None, min_frames: int, max_frames: int
) -> Volume:
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
        skipped: list[Path] = []
        files, desc = dicom_source_files(source, tmp, skipped)
        volume = _read_series_files(files, desc, series_uid=series_uid)
    if skipped:  # the folder policy's note: what was left out, by name
        names = [p.name for p in skipped]
        volume.meta["skipped_files"] = names
        log.warning(
            "%s: skipped %d file(s) that are not part of a DICOM series: %s",
            desc,
            len(names),
            ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
        )
    return volume


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
        "padding_fraction": float(
            meta.get("padding_fraction", 0.0 if valid is None else 1.0 - valid.mean())
        ),
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
    report: dict[str, Any] = {
        "source": str(source),
        "format": "dicom",
        "series": [],
        "valid": False,
        "error": None,
        "error_code": None,
        "volume": None,
    }
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
            report["error_code"] = exc.code
            if report["error_code"] == "InvalidFile.FrameCount" and groups is not None:
                try:  # still show what the series holds
                    volume = _read_groups(
                        groups, desc, series_uid=series_uid, min_frames=1, max_frames=10**7
                    )
                    report["volume"] = describe_volume(volume)
                except DicomSeriesError:
                    pass
            return report
    report["valid"] = True
    report["volume"] = describe_volume(volume)
    return report
