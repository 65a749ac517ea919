"""Other libraries, run when importable (their packages are not dependencies of ctreg):
itk-elastix, ANTsPy, DIPY.  Each is a black box that warps images, so the displacement (and the
landmark map) comes from warping coordinate images (common.field_from_warped_coordinates), which
needs no knowledge of each library's point-transform conventions.  Default settings of each
library's documented entry point; threads are set where the library allows.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .common import MethodOutput, Pair, field_from_warped_coordinates, field_transform_points


def _output(pair: Pair, warp_image) -> MethodOutput:
    u = field_from_warped_coordinates(pair.reference, pair.floating, warp_image)
    return MethodOutput(field_transform_points(pair.reference, u), u)


# -- itk-elastix -----------------------------------------------------------------------------------


def _itk_image(itk, volume, array=None):
    img = itk.image_from_array(
        np.ascontiguousarray(volume.array if array is None else array, dtype=np.float32)
    )
    img.SetSpacing([float(s) for s in volume.spacing[::-1]])
    img.SetOrigin([float(o) for o in volume.origin])
    img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(volume.direction[:, ::-1])))
    return img


def elastix(pair: Pair, threads: int) -> MethodOutput:
    import itk

    fixed = _itk_image(itk, pair.reference)
    moving = _itk_image(itk, pair.floating)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("affine"))
    params.AddParameterMap(params.GetDefaultParameterMap("bspline"))
    # Threads through ITK's global default: itk-elastix 0.25.4 crashes (SIGSEGV in the B-spline
    # stage) when number_of_threads= is passed to elastix_registration_method.
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    _, result_params = itk.elastix_registration_method(
        fixed, moving, parameter_object=params, log_to_console=False
    )

    def warp_image(array):
        img = _itk_image(itk, pair.floating, array)
        for i in range(result_params.GetNumberOfParameterMaps()):
            result_params.SetParameter(i, "FinalBSplineInterpolationOrder", "1")
            result_params.SetParameter(i, "DefaultPixelValue", "0")
        out = itk.transformix_filter(img, result_params, log_to_console=False)
        return np.asarray(itk.array_from_image(out), dtype=np.float32)

    return _output(pair, warp_image)


# -- ANTsPy ----------------------------------------------------------------------------------------


def _ants_image(ants, volume, array=None):
    arr = np.ascontiguousarray(
        (volume.array if array is None else array).transpose(2, 1, 0), dtype=np.float32
    )
    return ants.from_numpy(
        arr,
        origin=[float(o) for o in volume.origin],
        spacing=[float(s) for s in volume.spacing[::-1]],
        direction=np.ascontiguousarray(volume.direction[:, ::-1]),
    )


def ants_syn(pair: Pair, threads: int) -> MethodOutput:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import ants

    fixed = _ants_image(ants, pair.reference)
    moving = _ants_image(ants, pair.floating)
    with tempfile.TemporaryDirectory() as tmp:
        reg = ants.registration(
            fixed, moving, type_of_transform="SyN", outprefix=os.path.join(tmp, "r")
        )
        transforms = reg["fwdtransforms"]

        def warp_image(array):
            out = ants.apply_transforms(
                fixed,
                _ants_image(ants, pair.floating, array),
                transforms,
                interpolator="linear",
                defaultvalue=0,
            )
            return np.ascontiguousarray(out.numpy().transpose(2, 1, 0), dtype=np.float32)

        return _output(pair, warp_image)


# -- DIPY ------------------------------------------------------------------------------------------


def dipy_syn(pair: Pair, threads: int) -> MethodOutput:
    """DIPY's documented recipe: centre of mass, translation, rigid, affine (MI), then SyN (CC)."""
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    static, static_aff = pair.reference.array, pair.reference.affine
    moving, moving_aff = pair.floating.array, pair.floating.affine
    com = transform_centers_of_mass(static, static_aff, moving, moving_aff)
    affreg = AffineRegistration(
        metric=MutualInformationMetric(32, None),
        level_iters=[1000, 100, 10],
        sigmas=[3.0, 1.0, 0.0],
        factors=[4, 2, 1],
    )
    starting = com.affine
    for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
        starting = affreg.optimize(
            static, moving, transform, None, static_aff, moving_aff, starting_affine=starting
        ).affine
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(3), [10, 10, 5])
    mapping = sdr.optimize(static, moving, static_aff, moving_aff, starting)

    def warp_image(array):
        return np.asarray(
            mapping.transform(np.asarray(array, np.float64), interpolation="linear"),
            dtype=np.float32,
        )

    return _output(pair, warp_image)
