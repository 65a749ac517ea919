"""RegistrationResult: everything one run produced, and ``save()`` in the service's formats."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from ._timing import record
from .transforms import AffineTransform
from .volume import Volume

__all__ = ["LevelReport", "RegistrationResult"]

log = logging.getLogger("ctreg")


@dataclass
class LevelReport:
    """One stage at one pyramid level."""

    stage: str
    level: int
    spacing_mm: list
    iterations: int
    metric: str
    metric_before: float
    metric_after: float
    seconds: float
    evaluations: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


class RegistrationResult:
    """The floating scan registered onto the reference grid, and how it got there.

    Attributes
    ----------
    warped : Volume
        The floating scan resampled on the reference grid (HU; ``fill_hu`` where it has no data,
        ``warped.valid`` False there).
    displacement : (z, y, x, 3) float32 ndarray
        On the reference grid, world (x, y, z) LPS components in mm: a reference point p maps to
        p + u(p) in the floating scan.
    affine : AffineTransform
        The affine part (world, reference -> floating), applied after the deformable part.
    report : dict
        Per stage and level: iterations, metric before/after, seconds; Jacobian statistics;
        options, versions, thread count.
    """

    def __init__(self, *, reference: Volume, floating: Volume, warped: Volume, displacement: np.ndarray,
                 affine: AffineTransform, jacobian: np.ndarray, report: dict[str, Any]):
        self.reference = reference
        self.floating = floating
        self.warped = warped
        self.displacement = displacement
        self.affine = affine
        self.report = report
        self._jacobian = jacobian

    # -- points -----------------------------------------------------------------------------
    def transform_points(self, points) -> np.ndarray:
        """(N, 3) reference world points (x, y, z LPS mm) -> (N, 3) points in the floating scan
        (one point of shape (3,) gives shape (3,)).

        The displacement is interpolated trilinearly (exact for its affine part); outside the
        reference grid the border value is used.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape == (3,):
            return self.transform_points(pts[None])[0]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points must be an (N, 3) array of (x, y, z) LPS mm, got shape {pts.shape}")
        idx = self.reference.world_to_index(pts).T  # (3, N) k, j, i
        u = np.stack([ndi.map_coordinates(self.displacement[..., c], idx, order=1, mode="nearest")
                      for c in range(3)], axis=1)
        return pts + u

    def jacobian_determinant(self) -> np.ndarray:
        """(z, y, x) float32 determinant of the map's Jacobian on the reference grid
        (1 = volume kept, < 1 compression, <= 0 folding)."""
        return self._jacobian

    # -- files ------------------------------------------------------------------------------
    def save(self, out_dir, name: str = "registered", *, dicom: bool = True) -> dict[str, Path]:
        """Write ``<name>.nii.gz``, ``<name>.tar.gz`` (DICOM series), ``displacement.nii.gz``
        (NIfTI intent DISPVECT, ITK convention: SimpleITK's DisplacementFieldTransform maps
        points as ``transform_points``) and ``report.json`` into ``out_dir``.

        Every file is written under a temporary name and renamed when complete.
        """
        from .io.atomic import atomic_path
        from .io.dicom import write_dicom_series
        from .io.nifti import write_displacement_nifti, write_nifti

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = {"nifti": out / f"{name}.nii.gz", "displacement": out / "displacement.nii.gz",
                 "report": out / "report.json"}
        jobs = [(write_nifti, (self.warped, paths["nifti"]), {})]
        if dicom:
            paths["dicom"] = out / f"{name}.tar.gz"
            ref_meta = self.reference if "dicom" in self.reference.meta else None
            flt_meta = self.floating if "dicom" in self.floating.meta else None
            jobs.append((write_dicom_series, (self.warped, paths["dicom"]),
                         {"reference": ref_meta, "floating": flt_meta}))
        jobs.append((write_displacement_nifti, (self.displacement, self.reference.affine,
                                                paths["displacement"]), {}))
        # The three outputs are written at once: their compression (ISA-L / zlib) and file I/O
        # release the GIL, so the DICOM encoding (Python) overlaps the two NIfTI files.  Each
        # writer renames its own file when complete (atomic); the first error is raised.
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="ctreg-save") as pool:
            futures = [pool.submit(fn, *a, **kw) for fn, a, kw in jobs]
            for f in futures:
                f.result()
        record(self.report, "write", time.perf_counter() - t0)
        with atomic_path(paths["report"]) as tmp:
            tmp.write_text(json.dumps(_jsonable(self.report), indent=2))
        return paths

    def __repr__(self) -> str:
        j = self.report.get("jacobian", {})
        return (f"RegistrationResult(warped={self.warped!r}, jacobian_min={j.get('min')}, "
                f"seconds={self.report.get('seconds_total')})")
