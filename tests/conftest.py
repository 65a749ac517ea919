"""Shared fixtures.  Real CT data lives in ../shared/data beside the checkout; tests that need it
skip cleanly where it is absent (as on a user's machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CTREG_SHARED_DATA", _ROOT.parent / "shared" / "data"))

# the service tests' helper module asserts like a test module: pytest's messages for its asserts
pytest.register_assert_rewrite("service_helpers")


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


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The service tests' input server (service_helpers.serve_files): a second HTTP server on
    127.0.0.1; ``files.series(name, volume)`` writes a DICOM series and returns its URLs,
    ``files.put(name, bytes)`` one file's URL.  One server per test module."""
    from service_helpers import serve_files  # imported here: only the service tests need it

    with serve_files(tmp_path_factory.mktemp("served")) as served:
        yield served
