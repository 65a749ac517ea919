"""Speed of ctreg's DICOM / NIfTI I/O against SimpleITK on a full-size CT series (not a test).

    python benchmarks/bench_io.py                       # ../shared/data/popi-00-dicom, best of 3
    python benchmarks/bench_io.py --series DIR --repeat 5

Timed, best wall time of ``--repeat`` runs (files are in the page cache after the warm-up):

* read: ``ctreg.read_dicom_series(folder)`` (finds, validates, sorts, decodes) against
  SimpleITK ``ImageSeriesReader`` with ``GetGDCMSeriesFileNames`` (finds, sorts, decodes);
* write .nii.gz: ``ctreg.write_nifti`` (int16) against ``sitk.WriteImage`` of the int16 image;
* write DICOM .tar.gz: ``ctreg.write_dicom_series(..., "x.tar.gz")`` against SimpleITK writing one
  file per slice (``WriteImage`` of each 2-D slice with position tags) and Python's tarfile
  packing them at gzip level 1;
* both outputs (.nii.gz + .tar.gz), the service's deliverable; target <= 3 s.

Ratios are SimpleITK time / ctreg time (> 1: ctreg is faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import ctreg
from ctreg.io.dicom import read_dicom_series, write_dicom_series
from ctreg.io.nifti import write_nifti

try:  # SimpleITK is optional (extra "bench")
    import SimpleITK as sitk
except ImportError:  # pragma: no cover
    sitk = None

ROOT = Path(__file__).resolve().parents[1]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def sitk_read(folder: Path):
    r = sitk.ImageSeriesReader()
    r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


def sitk_write_series_tgz(img, out_tgz: Path, work: Path) -> None:
    folder = work / "sitk_series"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1." + str(int(time.time()))
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        origin = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|000e", series_uid)
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in origin))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(sl)
    with tarfile.open(out_tgz, "w:gz", compresslevel=1) as tf:
        tf.add(folder, arcname="sitk_series")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--series", type=Path, default=ROOT.parent / "shared" / "data" / "popi-00-dicom"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.series.is_dir():
        print(f"bench_io: no series folder at {args.series}", file=sys.stderr)
        return 2
    print(
        f"ctreg {ctreg.__version__}, "
        f"SimpleITK {sitk.Version_VersionString() if sitk else 'absent'}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    vol = read_dicom_series(args.series)  # warm-up (page cache, imports)
    nz, ny, nx = vol.shape
    print(f"series: {args.series} ({vol.meta['n_files']} files, {nx}x{ny}x{nz} voxels)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctreg-bench-io-") as tmp:
        work = Path(tmp)
        counter = iter(range(10**6))

        def fresh(name):
            return work / f"{next(counter)}_{name}"

        t_read = best(lambda: read_dicom_series(args.series), args.repeat)
        t_nii = best(lambda: write_nifti(vol, fresh("out.nii.gz")), args.repeat)
        t_tgz = best(
            lambda: write_dicom_series(vol, fresh("out.tar.gz"), reference=vol, floating=vol),
            args.repeat,
        )

        def both():
            write_nifti(vol, fresh("registered.nii.gz"))
            write_dicom_series(vol, fresh("registered.tar.gz"), reference=vol, floating=vol)

        t_both = best(both, args.repeat)
        s_read = s_nii = s_tgz = None
        if sitk is not None:
            img = sitk_read(args.series)
            img16 = sitk.Cast(img, sitk.sitkInt16)
            s_read = best(lambda: sitk_read(args.series), args.repeat)
            s_nii = best(
                lambda: sitk.WriteImage(img16, str(fresh("sitk.nii.gz")), True), args.repeat
            )
            s_tgz = best(
                lambda: sitk_write_series_tgz(img16, fresh("sitk.tar.gz"), work), args.repeat
            )
        rows = [
            ("read DICOM series", t_read, s_read),
            ("write .nii.gz (int16)", t_nii, s_nii),
            ("write DICOM .tar.gz", t_tgz, s_tgz),
            (
                "write .nii.gz + .tar.gz",
                t_both,
                (s_nii + s_tgz) if s_nii is not None and s_tgz is not None else None,
            ),
        ]
    print(f"{'operation':28s} {'ctreg s':>9s} {'SimpleITK s':>12s} {'ratio':>7s}")
    for name, t, s in rows:
        ratio = f"{s / t:7.2f}" if s is not None else "      -"
        s_txt = f"{s:12.3f}" if s is not None else "           -"
        print(f"{name:28s} {t:9.3f} {s_txt} {ratio}")
    print(
        f"target: both outputs <= 3 s -> {'met' if t_both <= 3.0 else 'NOT met'} ({t_both:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
