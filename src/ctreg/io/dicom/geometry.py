"""Validation of the frames and the series geometry (sorting along the normal, affine)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from .headers import _Frame, _sop_class
from .rules import (
    _ACCEPTED_SOP,
    AXIAL_TOLERANCE_DEG,
    INPLANE_DRIFT_TOLERANCE,
    SLICE_POSITION_TOLERANCE,
    DicomRuleError,
)


def _check_class(path: Path, ds: Dataset) -> None:
    sop = _sop_class(ds)
    if sop not in _ACCEPTED_SOP:
        name = UID(sop).name if sop else "(none)"
        raise DicomRuleError(
            f"{path}: SOPClassUID (0008,0016) = {sop or '(empty)'} ({name}); accepted: "
            + ", ".join(f"{n} ({u})" for u, n in _ACCEPTED_SOP.items())
        )
    modality = str(ds.get("Modality", "") or "").strip()
    if modality != "CT":
        raise DicomRuleError(
            f"{path}: Modality (0008,0060) = {modality or '(missing)'!r}; accepted: 'CT'"
        )
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photo = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if spp != 1 or photo not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomRuleError(
            f"{path}: SamplesPerPixel (0028,0002) = {spp}, PhotometricInterpretation (0028,0004) "
            f"= {photo!r}; accepted: 1 sample, MONOCHROME2 or MONOCHROME1"
        )


def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _validate_and_sort(frames: list[_Frame], *, min_frames: int, max_frames: int) -> list[_Frame]:
    f0 = frames[0]
    r, c = f0.iop[:3], f0.iop[3:]
    if (
        abs(np.linalg.norm(r) - 1) > 1e-3
        or abs(np.linalg.norm(c) - 1) > 1e-3
        or abs(float(r @ c)) > 1e-3
    ):
        raise DicomRuleError(
            f"{f0.path}: ImageOrientationPatient (0020,0037) = {f0.iop.tolist()} is not two "
            "orthogonal unit vectors; accepted: orthonormal direction cosines"
        )
    for f in frames[1:]:
        if (f.rows, f.cols) != (f0.rows, f0.cols):
            raise DicomRuleError(
                f"{f.path}: Rows x Columns = {f.rows} x {f.cols} differs from {f0.rows} x "
                f"{f0.cols} in {f0.path}; accepted: the same size on every slice"
            )
        if not np.allclose(f.pixel_spacing, f0.pixel_spacing, rtol=1e-4, atol=1e-5):
            raise DicomRuleError(
                f"{f.path}: PixelSpacing (0028,0030) = {list(f.pixel_spacing)} differs from "
                f"{list(f0.pixel_spacing)} in {f0.path}; accepted: the same spacing on every slice"
            )
        if not np.allclose(f.iop, f0.iop, atol=1e-4):
            raise DicomRuleError(
                f"{f.path}: ImageOrientationPatient (0020,0037) = {f.iop.tolist()} differs from "
                f"{f0.iop.tolist()} in {f0.path}; accepted: the same orientation on every slice"
            )
    normal = _normal(f0.iop)
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if angle > AXIAL_TOLERANCE_DEG:
        raise DicomRuleError(
            f"{f0.path}: the series is not axial: ImageOrientationPatient (0020,0037) = "
            f"{f0.iop.tolist()} gives a slice normal {np.round(normal, 4).tolist()} at "
            f"{angle:.1f} degrees from the patient z axis; accepted: axial slices, normal within "
            f"{AXIAL_TOLERANCE_DEG:g} degrees of z",
            code="InvalidFile.NotAxial",
        )
    n = len(frames)
    if not (min_frames <= n <= max_frames):
        raise DicomRuleError(
            f"{f0.path}: the series has {n} frame(s) (slices); accepted: {min_frames} to "
            f"{max_frames} frames",
            code="InvalidFile.FrameCount",
        )
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
                    f"{b.ipp.tolist()}); accepted: one slice per position"
                )
        if med <= 0:  # pragma: no cover - guarded by the duplicate check
            raise DicomRuleError(f"{f0.path}: slices have no extent along the normal")
        for k, s in enumerate(steps):
            if abs(s - med) > SLICE_POSITION_TOLERANCE * med:
                a, b = frames[k], frames[k + 1]
                kind = (
                    f"missing slice(s): gap of {s:.3f} mm"
                    if s > 1.5 * med
                    else f"uneven slice spacing: step {s:.3f} mm"
                )
                raise DicomRuleError(
                    f"{kind} between {a.path} (position {a.pos:.3f} mm) and {b.path} (position "
                    f"{b.pos:.3f} mm), expected {med:.3f} mm; accepted: evenly spaced slices "
                    f"(jitter up to {SLICE_POSITION_TOLERANCE:.0%} of the step)"
                )
        step = (pos[-1] - pos[0]) / (n - 1)
        dev = np.abs(pos - (pos[0] + step * np.arange(n)))
        if dev.max() > SLICE_POSITION_TOLERANCE * step:
            k = int(dev.argmax())
            raise DicomRuleError(
                f"{frames[k].path}: slice position {pos[k]:.3f} mm is {dev[k]:.3f} mm off the even "
                f"grid of step {step:.3f} mm; accepted: evenly spaced slices"
            )
        ipps = np.array([f.ipp for f in frames])
        inplane = ipps - ipps[0] - np.outer(pos - pos[0], normal)
        drift = float(np.linalg.norm(inplane, axis=1).max())
        if drift > INPLANE_DRIFT_TOLERANCE * min(f0.pixel_spacing):
            k = int(np.linalg.norm(inplane, axis=1).argmax())
            raise DicomRuleError(
                f"{frames[k].path}: ImagePositionPatient {frames[k].ipp.tolist()} drifts "
                f"{drift:.3f} mm sideways from the slice normal through the first slice (gantry "
                "tilt or sheared stack); accepted: slices stacked along their normal"
            )
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
    aff[:3, 1] = col_dir * f0.pixel_spacing[0]  # +j: next row
    aff[:3, 2] = row_dir * f0.pixel_spacing[1]  # +i: next column
    aff[:3, 3] = f0.ipp
    return aff
