"""DICOM CT series: read and validate by the RunCTRegistration service's rules; write a series.

Input rules (each broken rule raises :class:`~ctreg.errors.DicomSeriesError` naming the file,
tag and value and saying what is accepted):

* every file is DICOM (hidden files and ``DICOMDIR`` are skipped), complete, CT Image Storage
  or Enhanced CT Image Storage (SOP Class UID from the dataset, else from the file meta),
  Modality ``CT``, one grey sample per pixel;
* one series (several: the error lists them; choose one with ``series_uid``);
* axial: the slice normal within :data:`AXIAL_TOLERANCE_DEG` of the patient z axis;
* :data:`MIN_FRAMES` to :data:`MAX_FRAMES` frames, all with the same rows, columns, pixel
  spacing and orientation;
* slices sorted by their position along the normal (never by file name or InstanceNumber), at
  an even step: float jitter up to :data:`SLICE_POSITION_TOLERANCE` of the step is accepted,
  missing or duplicated slices are refused;
* HU = stored × RescaleSlope + RescaleIntercept per slice, float32;
* padding outside the field of view — the PixelPaddingValue (and range), or any value
  ≤ :data:`PADDING_HU` — is marked ``Volume.valid = False`` and set to :data:`AIR_HU` in the
  array, so that nothing downstream mistakes -3024 for tissue.

``Volume.meta`` keys of a volume read here:

=================== ==========================================================================
``dicom``           pydicom Dataset: every element of the first sorted slice except pixel data
                    and per-frame functional groups (patient, study, series, equipment tags)
``series_uid``      SeriesInstanceUID (``""`` when the files leave it empty)
``series_description`` SeriesDescription (``""`` when absent)
``transfer_syntax`` TransferSyntaxUID of the first file
``sop_class_uid``   CT Image Storage or Enhanced CT Image Storage
``n_files``         number of files of the series; ``n_frames``: number of slices
``files``           list of file paths in slice order (temporary for archives and URLs)
``padding_fraction`` fraction of voxels marked invalid (padding)
``source``          what was read: a folder, archive, file list or URL list, as text
``format``          ``"dicom"``
=================== ==========================================================================
"""

from __future__ import annotations

# One module per topic (each re-exported here, so ``ctreg.io.dicom.read_dicom_series`` etc. keep
# working): rules (constants, DicomRuleError), sources (folders, archives, URLs), headers
# (per-file parsing, series grouping), geometry (validation, sorting, affine), pixels (decoding
# to HU), read (the public readers), write (write_dicom_series).
from .read import _read_series_files  # noqa: F401 (re-exported; one name a line for ruff format)
from .read import describe_volume, inspect_dicom, list_series, read_dicom_series
from .rules import (
    AIR_HU,
    AXIAL_TOLERANCE_DEG,
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    INPLANE_DRIFT_TOLERANCE,
    LEGACY_ENHANCED_CT_IMAGE_STORAGE,
    MAX_FRAMES,
    MIN_FRAMES,
    PADDING_HU,
    SLICE_POSITION_TOLERANCE,
    DicomRuleError,
)
from .sources import dicom_source_files
from .write import _SliceEncoder, write_dicom_series  # noqa: F401

__all__ = [
    "DicomRuleError",
    "AXIAL_TOLERANCE_DEG",
    "MIN_FRAMES",
    "MAX_FRAMES",
    "PADDING_HU",
    "AIR_HU",
    "SLICE_POSITION_TOLERANCE",
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "read_dicom_series",
    "list_series",
    "inspect_dicom",
    "describe_volume",
    "write_dicom_series",
    "dicom_source_files",
    "INPLANE_DRIFT_TOLERANCE",
    "LEGACY_ENHANCED_CT_IMAGE_STORAGE",
]
