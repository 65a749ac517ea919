"""Sample data shipped inside the package (small enough for a wheel)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ct64_dicom_path", "ct64_volume", "sample_pair", "write_sample_pair", "SAMPLE_MOTION"]


def ct64_dicom_path() -> Path:
    """Folder of the bundled CT series: 79 single-frame DICOM files, 64 x 64 x 79 voxels,
    4.17 x 4.17 x 3.99 mm (COPDGene inspiration chest CT downsampled x0.125; Chest Imaging
    Platform test data, BSD-style licence; see ``ctreg/data/CREDIT.txt``)."""
    path = Path(str(resources.files("ctreg") / "data" / "ct64-dicom"))
    if not path.is_dir():  # pragma: no cover - a broken install
        raise FileNotFoundError(f"bundled sample series missing: {path} (reinstall ctreg)")
    return path


#: The known motion of the bundled sample pair: breathing-like (diaphragm 15 mm), a rigid
#: offset of about 8 mm and 6 degrees.
SAMPLE_MOTION: dict[str, Any] = dict(
    diaphragm_mm=15.0, translation_mm=(5.0, -4.0, 4.0), rotation_deg=(2.0, -2.0, 5.0)
)


def ct64_volume():
    """The bundled series read as a :class:`ctreg.Volume`."""
    from .io import read_dicom_series

    return read_dicom_series(ct64_dicom_path())


def sample_pair(*, seed: int = 0, n_landmarks: int = 200):
    """A synthetic pair from the bundled scan: the scan itself as the reference and the same
    anatomy under a known breathing-like motion as the floating scan
    (:class:`ctreg.synthetic.SyntheticPair`, with exact landmark pairs)."""
    from .synthetic import BreathingMotion, make_breathing_pair

    return make_breathing_pair(
        ct64_volume(), BreathingMotion(**SAMPLE_MOTION, seed=seed), n_landmarks=n_landmarks
    )


def write_sample_pair(out_dir, *, seed: int = 0) -> dict[str, Path]:
    """Write ``reference/`` and ``floating/`` (DICOM series) and ``landmarks.csv`` into
    ``out_dir`` (created; it must not hold them already).  Returns the paths."""
    import numpy as np

    from .errors import CTRegError
    from .io import write_dicom_series
    from .io.atomic import atomic_path

    out = Path(out_dir)
    paths = {
        "reference": out / "reference",
        "floating": out / "floating",
        "landmarks": out / "landmarks.csv",
    }
    for p in paths.values():
        if p.exists():
            raise CTRegError(f"{p} exists already; choose another output folder")
    pair = sample_pair(seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    write_dicom_series(
        pair.reference, paths["reference"], series_description="ctreg sample reference"
    )
    # same patient, same frame of reference: patient and study tags from the reference series
    write_dicom_series(
        pair.floating,
        paths["floating"],
        reference=pair.reference,
        floating=pair.reference,
        series_description="ctreg sample floating (known breathing motion)",
    )
    with atomic_path(paths["landmarks"]) as tmp:
        rows = np.hstack([pair.reference_points, pair.floating_points])
        np.savetxt(
            tmp,
            rows,
            delimiter=",",
            fmt="%.4f",
            header="ref_x,ref_y,ref_z,flo_x,flo_y,flo_z",
            comments="",
        )
    return paths
