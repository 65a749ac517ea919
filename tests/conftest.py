"""Shared fixtures.  Real CT data lives in ../shared/data beside the checkout; tests that need it
skip cleanly where it is absent (as on a user's machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CTREG_SHARED_DATA", _ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or pytest.skip when it is not there."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real CT data not available: {p}")
    return p


@pytest.fixture
def shared_data():
    """Callable fixture: shared_data('popi-00-dicom') -> Path, skipping when absent."""
    return shared_path
