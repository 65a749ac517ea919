"""SimpleITK recipes, after SimpleITK's own registration notebooks (60-66 in
InsightSoftwareConsortium/SimpleITK-Notebooks), with fixed = reference and moving = floating, so
every transform maps reference points to floating points (what TRE needs).

* affine: CenteredTransformInitializer(GEOMETRY) + AffineTransform, mean squares (the notebooks'
  intra-modal metric), random sampling, linear interpolation, regular-step gradient descent
  (learning rate 2, 200 iterations), scales from physical shift, shrink factors [4, 2, 1],
  smoothing sigmas [2, 1, 0] mm; metric on the reference body mask.  (Notebook 60's Mattes MI +
  gradient descent stopped after ~9 iterations on these pairs, worse than no registration:
  27 mm against 19 mm initial TRE on cip-ct64; mean squares + regular step reached 2.2 mm.)
* demons (notebook 66, "multiscale_demons"): the affine result turned into the initial
  displacement field at the coarsest level, pyramid shrink [4, 2] + full resolution, smoothing
  sigmas [8, 4] mm, 20 iterations per level, SmoothDisplacementField with standard deviation 2.
* B-spline (notebook 65, bspline_intra_modal_registration): one control grid every 50 mm,
  mean squares, LBFGSB (gradient tolerance 1e-5, 100 iterations), shrink [4, 2, 1], sigmas
  [2, 1, 0] mm, on top of the affine (SetMovingInitialTransform).  The notebook's refining variant
  (SetInitialTransformAsBSpline, scaleFactors [1, 2, 4]) fails with LBFGSB in SimpleITK 2.5
  ("BoundSelection array does not have sufficient number of elements" / "Size of scales (1728)
  must equal number of local parameters (7605)"), and LBFGS2 had not finished a 64^3 pair in
  10 minutes; finer single grids (25 or 12.5 mm) took over 5 minutes on the 64^3 pair.

Random metric sampling: the notebooks' 1 %, raised to at least 50,000 samples at full
resolution on small images (1 % of a 64^3 volume is too few for 50 MI bins); seed fixed.
The timed part ends with the floating scan resampled on the reference grid (what a user needs);
the dense displacement for the metrics is computed afterwards, untimed.
"""

from __future__ import annotations

import numpy as np

from ctreg.masks import body_mask

from .common import MethodOutput, Pair, to_sitk

from .sitk_recipe import SEED, SHRINK, SIGMAS_MM
from .sitk_recipe import affine as _affine
from .sitk_recipe import sampling_percentage as _sampling_percentage
from .sitk_recipe import smooth_and_shrink as _smooth_and_shrink
from .sitk_recipe import same_grid as _same_grid


def _setup(pair: Pair, threads: int):
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    fixed = to_sitk(pair.reference)
    moving = to_sitk(pair.floating)
    mask = to_sitk(pair.reference, body_mask(pair.reference).astype(np.uint8))
    return sitk, fixed, moving, mask


def _points(tx):
    def apply(points: np.ndarray) -> np.ndarray:
        return np.array(
            [tx.TransformPoint(tuple(float(c) for c in p)) for p in points], dtype=np.float64
        )

    return apply


def _dense(sitk, tx, fixed):
    """(z, y, x, 3) float32 displacement of ``tx`` on the fixed grid (untimed, for the metrics)."""

    def make() -> np.ndarray:
        field = sitk.TransformToDisplacementField(
            tx,
            sitk.sitkVectorFloat64,
            fixed.GetSize(),
            fixed.GetOrigin(),
            fixed.GetSpacing(),
            fixed.GetDirection(),
        )
        return sitk.GetArrayFromImage(field).astype(np.float32)

    return make


def affine_only(pair: Pair, threads: int) -> MethodOutput:
    sitk, fixed, moving, mask = _setup(pair, threads)
    tx = _affine(sitk, fixed, moving, mask)
    sitk.Resample(moving, fixed, tx, sitk.sitkLinear, -1000.0)
    return MethodOutput(_points(tx), _dense(sitk, tx, fixed))


# -- demons (notebook 66) -------------------------------------------------------------------------


def _multiscale_demons(
    sitk, demons, fixed, moving, initial_transform, shrink=(4, 2), sigmas_mm=(8.0, 4.0)
):
    moving = _same_grid(sitk, fixed, moving)
    fixed_levels = [fixed] + [
        _smooth_and_shrink(sitk, fixed, s, g) for s, g in zip(shrink, sigmas_mm)
    ]
    moving_levels = [moving] + [
        _smooth_and_shrink(sitk, moving, s, g) for s, g in zip(shrink, sigmas_mm)
    ]
    # coarsest first: the affine becomes the initial displacement field there
    coarse = fixed_levels[-1]
    field = sitk.TransformToDisplacementField(
        initial_transform,
        sitk.sitkVectorFloat64,
        coarse.GetSize(),
        coarse.GetOrigin(),
        coarse.GetSpacing(),
        coarse.GetDirection(),
    )
    field = demons.Execute(fixed_levels[-1], moving_levels[-1], field)
    for f_img, m_img in reversed(list(zip(fixed_levels[:-1], moving_levels[:-1]))):
        field = sitk.Resample(field, f_img)
        field = demons.Execute(f_img, m_img, field)
    return field


def _demons(pair: Pair, threads: int, demons_factory) -> MethodOutput:
    sitk, fixed, moving, mask = _setup(pair, threads)
    affine = _affine(sitk, fixed, moving, mask)
    demons = demons_factory(sitk)
    demons.SetNumberOfIterations(20)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(2.0)
    field = _multiscale_demons(sitk, demons, fixed, moving, affine)
    displacement = sitk.GetArrayFromImage(field).astype(np.float32)  # before the transform owns it
    tx = sitk.DisplacementFieldTransform(field)
    sitk.Resample(moving, fixed, tx, sitk.sitkLinear, -1000.0)
    return MethodOutput(_points(tx), displacement)


def affine_fast_symmetric_demons(pair: Pair, threads: int) -> MethodOutput:
    return _demons(pair, threads, lambda sitk: sitk.FastSymmetricForcesDemonsRegistrationFilter())


def affine_diffeomorphic_demons(pair: Pair, threads: int) -> MethodOutput:
    return _demons(pair, threads, lambda sitk: sitk.DiffeomorphicDemonsRegistrationFilter())


# -- B-spline (notebook 65) ------------------------------------------------------------------------


def affine_bspline(pair: Pair, threads: int) -> MethodOutput:
    sitk, fixed, moving, mask = _setup(pair, threads)
    affine = _affine(sitk, fixed, moving, mask)
    grid_mm = 50.0
    extent = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, int(e / grid_mm + 0.5)) for e in extent]
    bspline = sitk.BSplineTransformInitializer(image1=fixed, transformDomainMeshSize=mesh, order=3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(_sampling_percentage(fixed), SEED)
    reg.SetMetricFixedMask(mask)
    reg.SetShrinkFactorsPerLevel(SHRINK)
    reg.SetSmoothingSigmasPerLevel(SIGMAS_MM)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=100)
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bspline, inPlace=True)
    deformable = reg.Execute(fixed, moving)
    tx = sitk.CompositeTransform(
        [affine, deformable]
    )  # applied right to left: B-spline, then affine
    sitk.Resample(moving, fixed, tx, sitk.sitkLinear, -1000.0)
    return MethodOutput(_points(tx), _dense(sitk, tx, fixed))
