"""The SimpleITK pieces that sitk_methods.py, sitk_pipeline.py and bench_empire10.py share: the
affine registration and the pyramid resampling of SimpleITK's notebooks.  Imports nothing but
numpy (SimpleITK comes in as an argument), so that sitk_pipeline.py, which runs as a user's
script would (SimpleITK only, no ctreg or SciPy), can import it too."""

from __future__ import annotations

import numpy as np

SEED = 20240
SHRINK = [4, 2, 1]
SIGMAS_MM = [2.0, 1.0, 0.0]


def sampling_percentage(image) -> float:
    n = float(np.prod(image.GetSize()))
    return float(min(1.0, max(0.01, 50000.0 / n)))


def affine(sitk, fixed, moving, mask):
    """Mean-squares affine (regular-step gradient descent, 3 levels), geometry-centred start."""
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling_percentage(fixed), SEED)
    reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(SHRINK)
    reg.SetSmoothingSigmasPerLevel(SIGMAS_MM)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    return reg.Execute(fixed, moving)


def smooth_and_shrink(sitk, image, shrink: int, sigma_mm: float):
    """``image`` Gaussian-smoothed (sigma in mm) and resampled on a grid ``shrink`` times coarser
    covering the same extent."""
    smoothed = sitk.SmoothingRecursiveGaussian(image, [sigma_mm] * 3)
    size = [max(2, int(n / float(shrink) + 0.5)) for n in image.GetSize()]
    spacing = [(n - 1) * s / (m - 1) for n, s, m in zip(image.GetSize(), image.GetSpacing(), size)]
    return sitk.Resample(
        smoothed,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def same_grid(sitk, fixed, moving):
    """``moving`` on ``fixed``'s grid when the grids differ (ITK's demons filters need one grid):
    resampled at the same world points (identity, linear, air outside), so nothing moves; parts of
    the floating scan outside the reference's field of view are lost to the demons stage."""
    same = (
        fixed.GetSize() == moving.GetSize()
        and np.allclose(fixed.GetSpacing(), moving.GetSpacing(), atol=1e-6)
        and np.allclose(fixed.GetOrigin(), moving.GetOrigin(), atol=1e-4)
        and np.allclose(fixed.GetDirection(), moving.GetDirection(), atol=1e-6)
    )
    if same:
        return moving
    return sitk.Resample(
        moving, fixed, sitk.Transform(), sitk.sitkLinear, -1000.0, moving.GetPixelID()
    )
