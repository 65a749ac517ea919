"""The service's job function: register the floating series onto the reference series.

A job function is called on a worker as ``job_fn(reference, floating, out_dir, **job_options)``
with the two :class:`~ctreg.volume.Volume` objects read (and validated) from the downloaded
DICOM files, and must write at least ``registered.nii.gz`` and ``registered.tar.gz`` into
``out_dir`` (a fresh temporary folder that appears under its final name only if the function
returns).  Any module-level function with that signature can replace it
(``Server(..., job_fn=...)``, ``ctreg serve --job-fn module:function``).
"""

from __future__ import annotations

from pathlib import Path

from ..volume import Volume

__all__ = ["register_job", "DEFAULT_JOB_FN"]

#: the job function of ``ctreg serve`` unless told otherwise.
DEFAULT_JOB_FN = "ctreg.service.jobs:register_job"


def register_job(
    reference: Volume, floating: Volume, out_dir: Path, *, preset: str = "default"
) -> None:
    """``ctreg.register(reference, floating, preset=preset).save(out_dir, name="registered")``:
    writes registered.nii.gz, registered.tar.gz (DICOM series), displacement.nii.gz and
    report.json."""
    from ..pipeline import register

    result = register(reference, floating, preset=preset)
    result.save(out_dir, name="registered")
