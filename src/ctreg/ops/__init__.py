"""Thin, checked façades over the native kernels (ctreg._native) and the Numba kernels.

This is the only package that imports ``ctreg._native``.  Every function here:

* validates its arguments once (dtype float32, C order, shapes), raising ``TypeError`` or
  ``ValueError`` that name the argument;
* documents shapes and units; arrays are (z, y, x), spacings (z, y, x) mm;
* never copies a large array silently.

One module per topic, every public name re-exported here (``ops.resample_displacement``); the
argument checks are shared with the rest of the package (``ctreg._checks``):

==================  ===========================================================================
``runtime``         thread count, BLAS threads, gc pause, malloc thresholds, kernel preloading
``resample``        resampling through affine maps / displacement fields, affine moments
``smoothing``       image gradient, Gaussian smoothing
``prep``            smoothing on a subsampling lattice, clip with no-data fill (pyramid levels)
``bspline``         cubic B-spline FFD evaluation, adjoint, bending energy
``metrics``         SSD, NCC, LNCC, Mattes MI with gradients; demons forces
``fields``          field composition, exponential, Jacobian, inversion, affine maps of fields
==================  ===========================================================================
"""

from __future__ import annotations

from .. import _native  # noqa: F401  (ops._native: the raw bindings, for tests)
from .bspline import bending_energy, bspline_adjoint, bspline_grid_shape, bspline_to_dense
from .fields import (
    affine_field,
    compose_fields,
    exp_field,
    invert_field,
    jacobian_determinant,
    jacobian_statistics,
    jacobian_statistics_pair,
    JacobianStatistics,
)
from .metrics import demons_forces, lncc, mattes_mi, ncc, ssd
from .resample import (
    AFFINE_MOMENTS,
    affine_moments,
    resample_affine,
    resample_composed,
    resample_displacement,
    resample_field,
    warp_with_gradient,
)
from .runtime import (
    MMAP_THRESHOLD_BYTES,
    TRIM_THRESHOLD_BYTES,
    gc_paused,
    get_num_threads,
    keep_freed_memory,
    no_huge_pages,
    preload_kernels,
    release_spare_arrays,
    reuse_freed_arrays,
    run_concurrently,
    serial_blas,
    set_num_threads,
    thread_limit,
)
from .prep import (
    ball_reach,
    clip_fill,
    dilate_ball,
    fullres_slab,
    itk_field_chunk,
    map_piecewise_linear,
    smooth_subsample,
    smooth_subsample_source,
)
from .smoothing import gradient, smooth

__all__ = [
    "set_num_threads",
    "get_num_threads",
    "thread_limit",
    "serial_blas",
    "gc_paused",
    "reuse_freed_arrays",
    "release_spare_arrays",
    "run_concurrently",
    "keep_freed_memory",
    "no_huge_pages",
    "preload_kernels",
    "resample_affine",
    "resample_displacement",
    "gradient",
    "smooth",
    "resample_composed",
    "warp_with_gradient",
    "affine_moments",
    "bspline_grid_shape",
    "bspline_to_dense",
    "bspline_adjoint",
    "bending_energy",
    "ssd",
    "ncc",
    "lncc",
    "mattes_mi",
    "compose_fields",
    "demons_forces",
    "exp_field",
    "invert_field",
    "jacobian_determinant",
    "resample_field",
    "jacobian_statistics",
    "jacobian_statistics_pair",
    "JacobianStatistics",
    "affine_field",
    "AFFINE_MOMENTS",
    "MMAP_THRESHOLD_BYTES",
    "TRIM_THRESHOLD_BYTES",
    "smooth_subsample",
    "smooth_subsample_source",
    "fullres_slab",
    "clip_fill",
    "map_piecewise_linear",
    "ball_reach",
    "dilate_ball",
    "itk_field_chunk",
]
