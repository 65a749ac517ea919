"""Loaders for downloadable real datasets (never shipped with ctreg).

``load_empire10(path=None)`` reads EMPIRE10 pair 01 as fetched by ``get-empire10-01.sh`` (see
``../shared/data`` in the development checkout; DEST defaults to ``$CTREG_DATA`` or
``~/.cache/ctreg-data``).  The files are *lung-only* images: inside the lung mask they hold
HU + 1000, outside it 0 ("no data").  The loader turns them into chest-like HU volumes in one
place, so that tests and benchmarks agree:

* inside the lung mask: ``HU = value - 1000``;
* outside it: 0 HU (soft tissue), so the lungs sit in tissue as in a real chest scan.

The NIfTI geometry is read by :func:`ctreg.io.nifti.read_nifti` (RAS -> LPS, (k, j, i) index
order).  Both scans have origin (0, 0, 0) and different sizes: they are not aligned in world space.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CTRegError
from .volume import Volume

__all__ = [
    "DatasetMissingError",
    "Empire10Pair",
    "empire10_available",
    "empire10_dir",
    "load_empire10",
    "EMPIRE10_DOWNLOAD_HINT",
]

EMPIRE10_DOWNLOAD_HINT = (
    "download it with `bash ../shared/data/get-empire10-01.sh` from the "
    "ctreg checkout (about 92 MB, one minute; DEST defaults to $CTREG_DATA "
    "or ~/.cache/ctreg-data)"
)
_FILES = ("reference.nii.gz", "floating.nii.gz", "reference_lungs.nii.gz", "floating_lungs.nii.gz")


class DatasetMissingError(CTRegError, FileNotFoundError):
    """A downloadable dataset is not on this machine; the message says how to fetch it."""

    code = "Dataset.Missing"
    codes = ("Dataset.Missing",)


def empire10_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of EMPIRE10 pair 01: ``path``, else ``$CTREG_DATA/empire10-01``, else
    ``~/.cache/ctreg-data/empire10-01`` (whether or not it exists)."""
    if path is not None:
        return Path(path)
    root = os.environ.get("CTREG_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "ctreg-data"
    )
    return Path(root) / "empire10-01"


def empire10_available(path: str | os.PathLike | None = None) -> bool:
    d = empire10_dir(path)
    return all((d / f).is_file() for f in _FILES)


@dataclass(eq=False)
class Empire10Pair:
    """EMPIRE10 pair 01 in HU: ``reference`` (exhale) and ``floating`` (inhale), each with its
    expert lung mask ((z, y, x) bool on the scan's own grid)."""

    reference: Volume
    floating: Volume
    reference_lungs: np.ndarray
    floating_lungs: np.ndarray


def lung_only_to_hu(values: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """EMPIRE10's lung-only encoding (HU + 1000 inside the lungs, 0 outside) -> float32 HU with
    0 HU (soft tissue) outside the lungs."""
    out = np.zeros(values.shape, np.float32)
    np.subtract(values, np.float32(1000.0), out=out, where=lungs, casting="unsafe")
    return out


def load_empire10(path: str | os.PathLike | None = None) -> Empire10Pair:
    """Read EMPIRE10 pair 01 (see the module docstring) as two HU Volumes and two lung masks.

    Raises :class:`DatasetMissingError` (code ``Dataset.Missing``) when a file is absent.
    """
    from .io.nifti import read_nifti

    d = empire10_dir(path)
    missing = [f for f in _FILES if not (d / f).is_file()]
    if missing:
        raise DatasetMissingError(
            f"EMPIRE10 pair 01 not found in {d} (missing {', '.join(missing)}): "
            f"{EMPIRE10_DOWNLOAD_HINT}"
        )
    out: dict[str, Any] = {}  # Volumes and boolean lung masks
    for side in ("reference", "floating"):
        img = read_nifti(d / f"{side}.nii.gz")
        lab = read_nifti(d / f"{side}_lungs.nii.gz")
        if lab.shape != img.shape or not np.allclose(lab.affine, img.affine, atol=1e-3):
            raise CTRegError(f"{d}: {side}_lungs.nii.gz is not on the grid of {side}.nii.gz")
        lungs = lab.array > 0.5
        hu = lung_only_to_hu(img.array, lungs)
        out[side] = Volume(
            hu, img.affine, None, {"source": str(d / f"{side}.nii.gz"), "dataset": "EMPIRE10-01"}
        )
        out[side + "_lungs"] = lungs
    return Empire10Pair(
        out["reference"], out["floating"], out["reference_lungs"], out["floating_lungs"]
    )
