"""RegistrationResult: everything one run produced, and ``save()`` in the service's formats."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from ._timing import record
from .transforms import AffineTransform
from .errors import GeometryError
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

    def __init__(
        self,
        *,
        reference: Volume | None,
        floating: Volume | None,
        warped: Volume | None,
        displacement: np.ndarray,
        affine: AffineTransform,
        jacobian: np.ndarray | None,
        report: dict[str, Any],
        grid_affine: np.ndarray | None = None,
        floating_affine: np.ndarray | None = None,
        floating_shape=None,
        jacobian_planes: dict[str, np.ndarray] | None = None,
    ):
        self.reference = reference
        self.floating = floating
        self.warped = warped
        self.displacement = displacement
        self.affine = affine
        self.report = report
        self._jacobian = jacobian
        #: (4, 4) affine of the reference grid (the grid of ``displacement`` and ``warped``).
        self.grid_affine = np.asarray(  # one of reference, grid_affine is given
            cast(Volume, reference).affine if grid_affine is None else grid_affine, float
        )
        #: (4, 4) affine and (z, y, x) shape of the floating scan's grid (None if unknown).
        self.floating_affine = (
            floating.affine if floating is not None and floating_affine is None else floating_affine
        )
        self.floating_shape = (
            floating.shape if floating is not None and floating_shape is None else floating_shape
        )
        #: the Jacobian determinant on report.html's planes (plane name -> 2-D float32), kept by
        #: ``register()`` in place of the whole map; None for a loaded result.
        self.jacobian_planes = jacobian_planes
        # the floating scan's metadata (DICOM tags for save()), kept by release_floating()
        self._floating_meta: dict[str, Any] | None = None

    def release_floating(self) -> None:
        """Let go of the floating scan (``self.floating`` becomes None), so that its voxels are
        freed once nothing else holds them; its grid (``floating_affine``, ``floating_shape``)
        and its DICOM tags, which :meth:`save` copies, are kept.  ``ctreg register`` calls it
        before writing; :func:`ctreg.report_html.before_parts` must be made first for the
        report's "before" pictures."""
        if self.floating is not None:
            self._floating_meta = self.floating.meta
            self.floating = None

    # -- points and images: ctreg.apply -------------------------------------------------------
    def transform_points(self, points) -> np.ndarray:
        """Reference world points (x, y, z LPS mm) -> points in the floating scan.

        ``points``: one point (3,) or an (N, 3) array; the result has the same shape.  The
        displacement is interpolated trilinearly (exact for its affine part); outside the
        reference grid the border value is used.
        """
        from .apply import map_points

        return map_points(points, self.displacement, self.grid_affine)

    def inverse_transform_points(
        self, points, *, return_error: bool = False, max_iterations: int = 100, tol_mm: float = 1e-5
    ):
        """Floating world points (x, y, z LPS mm) -> reference points ``p`` with
        ``transform_points(p) == points``.

        Solved per point by a fixed-point iteration on the displacement (see
        :func:`ctreg.apply.invert_points`).  Accuracy: with ``return_error=True`` the result is
        ``(p, error_mm)``, the inverse-consistency error ``|transform_points(p) - points|`` per
        point (typically < 1e-4 mm; larger where the field folds or beyond the reference grid,
        which is also logged as a warning).
        """
        from .apply import invert_points

        p, err = invert_points(
            points,
            self.displacement,
            self.grid_affine,
            self.affine.homogeneous(),
            max_iterations=max_iterations,
            tol_mm=tol_mm,
        )
        return (p, err) if return_error else p

    def warp(self, image, *, interpolation: str = "linear", default: float = 0.0, affine=None):
        """Resample an image of the floating scan's world onto the reference grid.

        Parameters
        ----------
        image : Volume (any grid: its affine places it), or a (z, y, x) ndarray on the grid
            given by ``affine`` (default: the floating scan's grid).
        interpolation : "linear", "nearest" (label maps: values and dtype kept exactly) or
            "bspline" (cubic B-spline, as SimpleITK's sitkBSpline).
        default : value where the image has no data (beyond its outermost voxel centres or
            outside ``image.valid``), e.g. -1024 for CT, 0 for labels.
        affine : (4, 4) index (k, j, i) -> world LPS of an ndarray ``image``.

        Returns
        -------
        A Volume on the reference grid (float32; ``valid`` False where ``default`` was used) for
        a Volume; an ndarray on the reference grid for an ndarray (its dtype with "nearest",
        float32 otherwise).
        """
        from .apply import warp_array

        if isinstance(image, Volume):
            if affine is not None:
                raise TypeError("affine= is for ndarray images; a Volume carries its own")
            out, valid = warp_array(
                image.array,
                image.affine,
                self.displacement,
                self.grid_affine,
                interpolation=interpolation,
                default=default,
                image_valid=image.valid,
            )
            return Volume(
                out,
                self.grid_affine.copy(),
                valid,
                {
                    **image.meta,
                    "source": "ctreg.RegistrationResult.warp",
                    "interpolation": interpolation,
                },
            )
        arr = np.asarray(image)
        if affine is None:
            if self.floating_affine is None or tuple(arr.shape) != tuple(self.floating_shape):
                raise GeometryError(
                    f"an ndarray image of shape {arr.shape} needs affine= (its index -> world LPS "
                    f"matrix) unless it lies on the floating grid {self.floating_shape}"
                )
            affine = self.floating_affine
        out, _ = warp_array(
            arr,
            affine,
            self.displacement,
            self.grid_affine,
            interpolation=interpolation,
            default=default,
        )
        return out

    def jacobian_determinant(self) -> np.ndarray:
        """(z, y, x) float32 determinant of the map's Jacobian on the reference grid
        (1 = volume kept, < 1 compression, <= 0 folding).  Computed from the displacement on
        the first call and then kept (``register()`` keeps only its statistics, in ``report``,
        and its values on the report's planes; they come from the engine's own field and can
        differ from this map in the last float digits)."""
        if self._jacobian is None:  # from the field
            from .apply import world_jacobian

            self._jacobian = world_jacobian(self.displacement, self.grid_affine)
        return self._jacobian

    # -- files ------------------------------------------------------------------------------
    def save(
        self,
        out_dir,
        name: str = "registered",
        *,
        dicom: bool = True,
        itk_transform: bool = True,
        images: bool = True,
    ) -> dict[str, Path]:
        """Write ``<name>.nii.gz``, ``<name>.tar.gz`` (DICOM series), ``displacement.nii.gz``
        (NIfTI intent DISPVECT, ITK convention: SimpleITK's DisplacementFieldTransform maps
        points as ``transform_points``), ``transform.h5`` (ITK composite transform: affine +
        displacement field, for SimpleITK/ITK/3D Slicer), ``report.json`` and, last,
        ``result.json`` (the index ``ctreg.load_result`` reads) into ``out_dir``.
        ``images=False`` writes only the reusable part (no ``<name>`` image files).

        Every file is written under a temporary name and renamed when complete.
        """
        from .io.atomic import atomic_path
        from .io.dicom import write_dicom_series
        from .io.nifti import write_displacement_nifti, write_nifti
        from .result_io import write_result_index

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = {"displacement": out / "displacement.nii.gz", "report": out / "report.json"}
        jobs: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        if images and self.warped is not None:  # None: a loaded result's folder had no image
            paths["nifti"] = out / f"{name}.nii.gz"
            jobs.append((write_nifti, (self.warped, paths["nifti"]), {}))
        if images and dicom and self.warped is not None:
            paths["dicom"] = out / f"{name}.tar.gz"
            ref_meta = (
                self.reference
                if self.reference is not None and "dicom" in self.reference.meta
                else None
            )
            meta = self.floating.meta if self.floating is not None else self._floating_meta
            flt_meta = meta if meta is not None and "dicom" in meta else None
            jobs.append(
                (
                    write_dicom_series,
                    (self.warped, paths["dicom"]),
                    {"reference": ref_meta, "floating": flt_meta},
                )
            )
        jobs.append(
            (
                write_displacement_nifti,
                (self.displacement, self.grid_affine, paths["displacement"]),
                {},
            )
        )
        if itk_transform:
            from . import ops
            from .io.itk_transform import write_itk_transform

            paths["itk_transform"] = out / "transform.h5"
            jobs.append(
                (
                    write_itk_transform,
                    (paths["itk_transform"], self.displacement, self.grid_affine, self.affine),
                    {"chunk_kernel": ops.itk_field_chunk},
                )
            )
        # The outputs are written at once: their compression (ISA-L / zlib) and file I/O
        # release the GIL, so the DICOM encoding (Python) overlaps the other files.  Each
        # writer renames its own file when complete (atomic); the first error is raised.
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="ctreg-save") as pool:
            futures = [pool.submit(fn, *a, **kw) for fn, a, kw in jobs]
            for f in futures:
                f.result()
        record(self.report, "write", time.perf_counter() - t0)
        with atomic_path(paths["report"]) as tmp:
            tmp.write_text(json.dumps(_jsonable(self.report), indent=2))
        paths["index"] = write_result_index(self, out, paths)
        return paths

    def __repr__(self) -> str:
        j = self.report.get("jacobian", {})
        return (
            f"RegistrationResult(warped={self.warped!r}, jacobian_min={j.get('min')}, "
            f"seconds={self.report.get('seconds_total')})"
        )
