"""SimpleITK's end-to-end recipe, as a user's script would do it, for bench_register.py:
read both DICOM series (or NIfTI files), register (affine, then multi-resolution fast symmetric
forces demons, SimpleITK notebook 66 -- the best of the SimpleITK recipes in
benchmarks/methods/sitk_methods.py on accuracy; or B-spline, notebook 65), and write the same
outputs as ``ctreg register``: registered.nii.gz, displacement.nii.gz, registered.tar.gz (a DICOM
series written slice by slice with SimpleITK's writer, then tarred and gzipped) and report.json.

    python benchmarks/methods/sitk_pipeline.py REF FLT OUT [--threads 2] [--method fsf-demons]

Prints one JSON line with per-phase seconds.  Run in a fresh process per measurement.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

import SimpleITK as sitk

# The recipe of sitk_methods.py, from the module next to this script (sitk_recipe.py imports
# only numpy), so that this process imports SimpleITK only (as a user's script would), not ctreg
# or SciPy.
from sitk_recipe import SEED, SHRINK, SIGMAS_MM
from sitk_recipe import affine as _affine
from sitk_recipe import same_grid as _same_grid
from sitk_recipe import sampling_percentage as _sampling_percentage
from sitk_recipe import smooth_and_shrink as _smooth_and_shrink


def _multiscale_demons(
    sitk, demons, fixed, moving, initial_transform, shrink=(4, 2), sigmas_mm=(8.0, 4.0)
):
    moving = _same_grid(sitk, fixed, moving)  # the demons filters need one grid
    fixed_levels = [fixed] + [
        _smooth_and_shrink(sitk, fixed, s, g) for s, g in zip(shrink, sigmas_mm)
    ]
    moving_levels = [moving] + [
        _smooth_and_shrink(sitk, moving, s, g) for s, g in zip(shrink, sigmas_mm)
    ]
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


def read(path: str):
    p = Path(path)
    if p.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p)))
        return sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    return sitk.ReadImage(str(p), sitk.sitkFloat32)


def body_mask(image):
    """The recipe's mask: tissue > -500 HU, largest component, holes filled (SimpleITK only)."""
    m = sitk.BinaryThreshold(image, -500.0, 1e9, 1, 0)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(m), sortByObjectSize=True)
    m = sitk.BinaryThreshold(cc, 1, 1, 1, 0)
    return sitk.BinaryFillhole(m)


def register(fixed, moving, method: str):
    mask = body_mask(fixed)
    affine = _affine(sitk, fixed, moving, mask)
    if method == "affine":
        return affine
    if method == "bspline":
        grid_mm = 50.0
        extent = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
        mesh = [max(1, int(e / grid_mm + 0.5)) for e in extent]
        bspline = sitk.BSplineTransformInitializer(
            image1=fixed, transformDomainMeshSize=mesh, order=3
        )
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
        return sitk.CompositeTransform([affine, reg.Execute(fixed, moving)])
    demons = (
        sitk.DiffeomorphicDemonsRegistrationFilter()
        if method == "diffeo-demons"
        else sitk.FastSymmetricForcesDemonsRegistrationFilter()
    )
    demons.SetNumberOfIterations(20)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(2.0)
    field = _multiscale_demons(sitk, demons, fixed, moving, affine)
    return sitk.DisplacementFieldTransform(field)


def write_dicom_tar(image, out: Path) -> None:
    """One CT file per slice (SimpleITK's writer, the notebook 'DICOM series from array' way),
    then a .tar.gz of the folder (Python's tarfile, default gzip level 9)."""
    folder = out.parent / "registered"
    folder.mkdir()
    img16 = sitk.Cast(sitk.Clamp(image, sitk.sitkFloat32, -32768, 32767), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125." + str(int(time.time() * 1e3))
    direction = img16.GetDirection()
    for k in range(img16.GetDepth()):
        sl = img16[:, :, k]
        pos = img16.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in [
            ("0008|0060", "CT"),
            ("0020|000e", series_uid),
            ("0008|103e", "SimpleITK registered"),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(map(str, pos))),
            ("0020|0037", "\\".join(map(str, direction[0:3] + direction[3:6]))),
            ("0028|1052", "0"),
            ("0028|1053", "1"),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(sl)
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname="registered")
    shutil.rmtree(folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("floating")
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--method",
        default="fsf-demons",
        choices=["fsf-demons", "diffeo-demons", "bspline", "affine"],
    )
    args = ap.parse_args(argv)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    seconds = {}
    t = time.perf_counter()
    fixed, moving = read(args.reference), read(args.floating)
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    tx = register(fixed, moving, args.method)
    seconds["register"] = time.perf_counter() - t
    t = time.perf_counter()
    warped = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, -1000.0)
    field = sitk.TransformToDisplacementField(
        tx,
        sitk.sitkVectorFloat32,
        fixed.GetSize(),
        fixed.GetOrigin(),
        fixed.GetSpacing(),
        fixed.GetDirection(),
    )
    seconds["resample"] = time.perf_counter() - t
    t = time.perf_counter()
    args.out.mkdir(parents=True)
    sitk.WriteImage(
        sitk.Cast(warped, sitk.sitkInt16), str(args.out / "registered.nii.gz"), useCompression=True
    )
    sitk.WriteImage(field, str(args.out / "displacement.nii.gz"), useCompression=True)
    write_dicom_tar(warped, args.out / "registered.tar.gz")
    seconds["write"] = time.perf_counter() - t
    (args.out / "report.json").write_text(json.dumps({"seconds": seconds, "method": args.method}))
    print(json.dumps({"seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
