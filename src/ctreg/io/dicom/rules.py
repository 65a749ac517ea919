"""The input rules' constants and their error (DicomRuleError, with the service's code)."""

from __future__ import annotations

import logging
import os

from pydicom.uid import UID

from ...errors import DicomSeriesError


log = logging.getLogger("ctreg")


class DicomRuleError(DicomSeriesError):
    """A broken input rule; ``code`` names the rule in the service's terms:
    ``InvalidFile.NotDicom``, ``InvalidFile.FrameCount``, ``InvalidFile.NotAxial`` or
    ``InvalidFile.Series`` (every other rule)."""

    code = "InvalidFile.Series"
    codes = (
        "InvalidFile.Series",
        "InvalidFile.NotDicom",
        "InvalidFile.FrameCount",
        "InvalidFile.NotAxial",
    )

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message, code=code)


#: largest accepted angle (degrees) between the slice normal and the patient z axis.
AXIAL_TOLERANCE_DEG = 5.0


_NOT_DICOM = "InvalidFile.NotDicom"


#: accepted number of frames (slices) of a series, inclusive.
MIN_FRAMES = 8


MAX_FRAMES = 600


#: stored values at or below this many HU are scanner padding (-2048, -3024), not tissue.
PADDING_HU = -1500.0


#: value written into the array where the scan has no data (air).
AIR_HU = -1024.0


#: largest accepted deviation of a slice from the even grid, as a fraction of the step.
SLICE_POSITION_TOLERANCE = 0.1


#: largest accepted in-plane drift of slice positions (gantry tilt), as a fraction of the
#: smallest pixel spacing.
INPLANE_DRIFT_TOLERANCE = 0.1


CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")


ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")


LEGACY_ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.2")


_ACCEPTED_SOP = {
    CT_IMAGE_STORAGE: "CT Image Storage",
    ENHANCED_CT_IMAGE_STORAGE: "Enhanced CT Image Storage",
    LEGACY_ENHANCED_CT_IMAGE_STORAGE: "Legacy Converted Enhanced CT Image Storage",
}


_UNCOMPRESSED = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
}


_SKIP_NAMES = {"DICOMDIR"}


_IO_THREADS = min(8, (os.cpu_count() or 2) + 2)
