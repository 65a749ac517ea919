"""The cases of bench_kernels.py, part 2: the B-spline FFD and similarity-metric kernels (the
inputs, :class:`~kernel_cases.Case` and the other cases are in kernel_cases.py)."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from ctreg import ops

from kernel_cases import Case, demons_inputs, sitk

# --- B-spline FFD and similarity metrics (cpp/include/ctreg/{bspline,metrics}.hpp) -------------
# Metrics: ctreg computes value + dcost/dW over all voxels.  numpy/scipy columns compute the same
# (vectorised numpy; scipy.ndimage.uniform_filter for local NCC; np.bincount for the MI
# histogram).  SimpleITK columns are ImageRegistrationMethod.MetricEvaluate with an identity
# transform and no sampling (value only, but it also interpolates the moving image).
BSPLINE_T = (5, 5, 5)
MI_BINS, MI_RANGE = 32, (-1000.0, 400.0)


def _metric_images(d):
    return d.get("metric_images", lambda d: demons_inputs(d)[:2])


def _ct_ssd(d):
    return ops.ssd(*_metric_images(d))


def _np_ssd(d):
    r, w = _metric_images(d)
    diff = w - r
    return float(np.mean(diff.astype(np.float64) ** 2)), (2.0 / diff.size) * diff


def _ct_ncc(d):
    return ops.ncc(*_metric_images(d))


def _np_ncc(d):
    r, w = (a.astype(np.float64) for a in _metric_images(d))
    rc, wc = r - r.mean(), w - w.mean()
    sr, sw = np.sqrt(np.mean(rc * rc)), np.sqrt(np.mean(wc * wc))
    c = float(np.mean(rc * wc) / (sr * sw))
    return -c, ((-rc / (sr * sw) + c * wc / (sw * sw)) / r.size).astype(np.float32)


def _ct_lncc(d):
    return ops.lncc(*_metric_images(d), radius_vox=(2, 2, 2))


def _sp_lncc(d):
    r, w = (a.astype(np.float64) for a in _metric_images(d))
    box = lambda x: ndi.uniform_filter(x, 5, mode="constant") * 125.0  # noqa: E731
    n = box(np.ones_like(r))
    sr, sw = box(r), box(w)
    cross = box(r * w) - sr * sw / n
    vr, vw = box(r * r) - sr * sr / n, box(w * w) - sw * sw / n
    den = vr * vw
    ok = den > 1e-5
    a = np.where(ok, cross / np.where(ok, den, 1), 0)
    b = np.where(ok, a * cross / np.where(ok, vw, 1), 0)
    g = -2.0 / r.size * (r * box(a) - box(a * sr / n) - w * box(b) + box(b * sw / n))
    return -float(np.mean(a * cross)), g.astype(np.float32)


def _ct_mi(d):
    return ops.mattes_mi(
        *_metric_images(d), bins=MI_BINS, ref_range=MI_RANGE, warped_range=MI_RANGE
    )


def _np_mi(d):
    r, w = _metric_images(d)
    nb, (lo, hi) = MI_BINS, MI_RANGE
    a = np.minimum(((np.clip(r, lo, hi) - lo) * (nb / (hi - lo))).astype(np.int64), nb - 1).ravel()
    x = (1.0 + (np.clip(w, lo, hi) - lo) * ((nb - 3) / (hi - lo))).ravel()
    i0 = np.minimum(x.astype(np.int64), nb - 3)
    f = x - i0
    wts = [
        (1 - f) ** 3 / 6,
        (3 * f**3 - 6 * f**2 + 4) / 6,
        (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6,
        f**3 / 6,
    ]
    joint = (
        sum(np.bincount(a * nb + i0 - 1 + l, wts[l], nb * nb) for l in range(4)).reshape(nb, nb)
        / a.size
    )
    pr, pw = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = float(np.nansum(joint * np.log(joint / (pr * pw))))
        dlog = np.where(joint > 0, np.log(joint / pw), 0.0).ravel()
    dw = [-0.5 * (1 - f) ** 2, 1.5 * f**2 - 2 * f, -1.5 * f**2 + f + 0.5, 0.5 * f**2]
    g = sum(dlog[a * nb + i0 - 1 + l] * dw[l] for l in range(4)) * (-(nb - 3) / (hi - lo) / a.size)
    inside = ((w > lo) & (w < hi)).ravel()
    return -mi, np.where(inside, g, 0.0).reshape(r.shape).astype(np.float32)


def _sk_metric(setter):
    def run(d):
        r, w = _metric_images(d)
        fixed = d.sitk_image("metric_ref", lambda d: r)
        moving = d.sitk_image("metric_warped", lambda d: w)
        reg = sitk.ImageRegistrationMethod()
        setter(reg)
        reg.SetMetricSamplingStrategy(reg.NONE)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetInitialTransform(sitk.TranslationTransform(3))
        return reg.MetricEvaluate(fixed, moving)

    return run


def _bspline_coeffs(d):
    def make(d):
        grid = ops.bspline_grid_shape(d.shape, BSPLINE_T)
        return (d.rng.standard_normal(grid + (3,)) * 3.0).astype(np.float32)

    return d.get("bspline_coeffs", make)


def _ct_bspline_dense(d):
    return ops.bspline_to_dense(_bspline_coeffs(d), BSPLINE_T, d.shape)


def _sk_bspline_dense(d):
    def make(d):  # ITK's mesh over the voxel-centre extent: the same number of control points
        c = _bspline_coeffs(d).astype(np.float64)
        img = d.sitk_image()
        tr = sitk.BSplineTransform(3, 3)
        tr.SetTransformDomainOrigin(img.GetOrigin())
        tr.SetTransformDomainDirection(img.GetDirection())
        tr.SetTransformDomainPhysicalDimensions(
            [(n - 1) * s for n, s in zip(img.GetSize(), img.GetSpacing())]
        )
        tr.SetTransformDomainMeshSize([g - 3 for g in c.shape[:3][::-1]])
        tr.SetParameters(tuple(np.concatenate([c[..., comp].ravel() for comp in range(3)])))
        return tr

    tr = d.get("sitk_bspline", make)
    img = d.sitk_image()
    return sitk.TransformToDisplacementField(
        tr,
        sitk.sitkVectorFloat32,
        img.GetSize(),
        img.GetOrigin(),
        img.GetSpacing(),
        img.GetDirection(),
    )


def _ct_bspline_adjoint(d):
    return ops.bspline_adjoint(d.displacement, BSPLINE_T, _bspline_coeffs(d).shape[:3])


CASES: list[Case] = [
    Case("ssd value+gradient", _ct_ssd, _np_ssd, _sk_metric(lambda m: m.SetMetricAsMeanSquares())),
    Case("ncc value+gradient", _ct_ncc, _np_ncc, _sk_metric(lambda m: m.SetMetricAsCorrelation())),
    Case(
        "lncc value+gradient (r=2)",
        _ct_lncc,
        _sp_lncc,
        _sk_metric(lambda m: m.SetMetricAsANTSNeighborhoodCorrelation(2)),
    ),
    Case(
        "mattes_mi value+gradient (32 bins)",
        _ct_mi,
        _np_mi,
        _sk_metric(lambda m: m.SetMetricAsMattesMutualInformation(MI_BINS)),
    ),
    Case("bspline_to_dense (t=5)", _ct_bspline_dense, None, _sk_bspline_dense),
    Case("bspline_adjoint (t=5)", _ct_bspline_adjoint, None, None),
]
