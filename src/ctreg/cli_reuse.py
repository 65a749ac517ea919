"""``ctreg apply``, ``ctreg register --save-result`` (reuse a saved registration from the
command line) and ``ctreg register``'s mask-file options (kept out of cli.py so that each
command stays a small hook there)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .errors import CTRegError, GeometryError

__all__ = ["add_apply", "cmd_apply", "add_register_options", "save_result_folder"]

log = logging.getLogger("ctreg")


def add_apply(sub) -> None:
    p = sub.add_parser(
        "apply",
        help="warp another image or a label map with a saved registration",
        description="Resample IMAGE (a scan or label map in the floating scan's world: DICOM "
        "folder/archive or NIfTI) onto the reference grid of the registration saved in "
        "RESULT_DIR (a folder written by `ctreg register -o` or `--save-result`), and write it "
        "as NIfTI. With --labels: nearest neighbour, the label values and their integer type "
        "kept exactly.",
    )
    p.add_argument("result", metavar="RESULT_DIR", help="saved result folder")
    p.add_argument("image", metavar="IMAGE", help="DICOM folder/archive/file or .nii/.nii.gz")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output .nii.gz (or .nii); written atomically",
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="IMAGE is a label map: nearest neighbour, exact integer values",
    )
    p.add_argument(
        "--interpolation",
        choices=["linear", "nearest", "bspline"],
        default=None,
        help="default: linear (nearest with --labels)",
    )
    p.add_argument(
        "--default",
        type=float,
        default=None,
        metavar="VALUE",
        help="value where IMAGE has no data (default: -1024, or 0 with --labels)",
    )
    p.add_argument(
        "--float32",
        action="store_true",
        help="write float32 (default: int16 for integer-valued scans)",
    )
    p.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="the DICOM series to read when IMAGE holds several",
    )
    p.set_defaults(func=cmd_apply)


def cmd_apply(args) -> int:
    import numpy as np

    from .io import read_volume
    from .io.labels import read_labels, write_labels_nifti
    from .io.nifti import NIFTI_SUFFIXES, write_nifti
    from .result_io import load_result
    from .volume import Volume

    out = Path(args.output)
    if not out.name.lower().endswith(NIFTI_SUFFIXES):
        raise CTRegError(f"-o {out}: the output is NIfTI; give a name ending in .nii.gz or .nii")
    interpolation = args.interpolation or ("nearest" if args.labels else "linear")
    if args.labels and interpolation != "nearest":
        raise CTRegError(
            f"--labels keeps label values exactly and needs nearest neighbour; "
            f"got --interpolation {interpolation}"
        )
    kw = {"series_uid": args.series_uid} if args.series_uid else {}
    result = load_result(args.result, warped=False)
    log.info("reading %s", args.image)
    if args.labels:
        labels, affine = read_labels(args.image, **kw)
        default = 0 if args.default is None else args.default
        warped = result.warp(labels, interpolation="nearest", default=default, affine=affine)
        inside = None
    else:
        vol = read_volume(args.image, **kw)
        default = -1024.0 if args.default is None else args.default
        warped_vol = result.warp(vol, interpolation=interpolation, default=default)
        warped, inside = warped_vol.array, warped_vol.valid
    if inside is None:
        mapped = result.warp(
            np.ones(labels.shape, np.uint8), interpolation="nearest", affine=affine
        )
        inside = mapped == 1
    if not inside.any():
        raise GeometryError(
            f"{args.image}: no voxel of the reference grid maps into this image; "
            "is it an image of the floating scan's patient and position?"
        )
    log.info("%.1f %% of the reference grid maps into the image", 100.0 * float(inside.mean()))
    if args.labels:
        write_labels_nifti(warped, result.grid_affine, out, description="warped by ctreg apply")
        values = np.unique(warped)
        log.info("wrote %s (%s, %d label value(s))", out, warped.dtype, values.size)
    else:
        as_float = args.float32 or (
            vol.meta.get("format") == "nifti" and _float_on_disk(args.image)
        )
        write_nifti(
            Volume(
                warped, result.grid_affine, None, {"series_description": "warped by ctreg apply"}
            ),
            out,
            dtype="float32" if as_float else "int16",
        )
        log.info("wrote %s (%s)", out, "float32" if as_float else "int16")
    print(out)
    return 0


def _float_on_disk(path) -> bool:
    """True for a NIfTI stored as floats (kept float32); integers and scaled integers -> int16."""
    import nibabel as nib

    img: Any = nib.load(str(path))  # typed FileBasedImage, which has no get_data_dtype
    return img.get_data_dtype().kind == "f"


# -- ctreg register --save-result --------------------------------------------------------------
def add_register_options(p) -> None:
    p.add_argument(
        "--save-result",
        default=None,
        metavar="DIR",
        help="also write the reusable result (displacement.nii.gz, transform.h5, "
        "report.json, result.json; no images) into DIR, for `ctreg apply` and "
        "ctreg.load_result",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is shown only when stderr is a terminal)",
    )


MASK_OPTIONS = (
    ("reference_lungs", "reference"),
    ("floating_lungs", "floating"),
    ("reference_mask", "reference"),
    ("floating_mask", "floating"),
)


def add_mask_options(p) -> None:
    """--reference-lungs / --floating-lungs / --reference-mask / --floating-mask FILE and
    --[no-]sliding."""
    p.add_argument(
        "--reference-lungs",
        default=None,
        metavar="FILE",
        help="lung mask of the reference (NIfTI or DICOM label image on the reference's "
        "grid, non-zero = lung); default: found automatically",
    )
    p.add_argument(
        "--floating-lungs",
        default=None,
        metavar="FILE",
        help="lung mask of the floating scan, on its grid (default: automatic)",
    )
    p.add_argument(
        "--reference-mask",
        default=None,
        metavar="FILE",
        help="body mask of the reference, on its grid (default: automatic)",
    )
    p.add_argument(
        "--floating-mask",
        default=None,
        metavar="FILE",
        help="body mask of the floating scan, on its grid (default: automatic)",
    )
    p.add_argument(
        "--sliding",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="estimate the motion outside the lungs separately (docs/sliding.md; "
        "default: on, off with --preset fast)",
    )


def read_mask_files(args, reference, floating) -> dict:
    """The register() keyword arguments of the mask options: each file read as a label map
    and checked to lie on its scan's grid (same shape, affine within 1e-3 mm), else
    ``LungMaskError`` with code ``LungMask.GridMismatch``."""
    import numpy as np

    from .io.labels import read_labels
    from .lungs import LungMaskError

    out = {}
    for key, which in MASK_OPTIONS:
        path = getattr(args, key, None)
        if path is None:
            continue
        image = reference if which == "reference" else floating
        arr, aff = read_labels(path)
        flag = "--" + key.replace("_", "-")
        if arr.shape != image.shape or not np.allclose(aff, image.affine, atol=1e-3):
            raise LungMaskError(
                f"{flag} {path}: grid {arr.shape} does not match the {which} scan's {image.shape} "
                "(shape and affine must be equal: segment the scan itself, or resample the mask "
                "onto its grid first)",
                "LungMask.GridMismatch",
            )
        out[key] = arr != 0
    return out


def save_result_folder(result, folder) -> Path:
    """The reusable part of ``result`` into a new folder (appears only when complete)."""
    from .io.atomic import atomic_dir

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CTRegError(f"--save-result {folder} exists and is not empty; choose a new folder")
    with atomic_dir(folder) as tmp:
        result.save(tmp, dicom=False, images=False)
    return folder
