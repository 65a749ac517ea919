"""Big outputs go to disk as they are written (ctreg.io.atomic.Writeback): the file's bytes
are unaffected, the page cache it holds is dropped window by window, and descriptors that
cannot be written back (pipes) or CTREG_WRITEBACK=0 turn it off."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from ctreg.io import atomic
from ctreg.io.atomic import Writeback, open_streamed

linux_only = pytest.mark.skipif(
    atomic._sync_file_range is None, reason="sync_file_range is Linux-only"
)


def _pieces(seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 300_000, 60)  # odd sizes: windows never fall on a write's edge
    return [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in sizes]


def test_streamed_file_holds_exactly_what_was_written(tmp_path):
    pieces = _pieces()
    path = tmp_path / "out.bin"
    with open_streamed(path) as fh:
        raw = fh.raw
        raw._writeback.window = 1 << 16  # many windows in a few MiB
        for p in pieces:
            assert fh.write(p) == len(p)
    assert path.read_bytes() == b"".join(pieces)
    if atomic._sync_file_range is not None and os.environ.get("CTREG_WRITEBACK") != "0":
        wb = raw._writeback
        assert wb.enabled
        # every window but the last two has been waited for and dropped
        assert wb.dropped > 0 and wb.dropped <= wb.started <= sum(map(len, pieces))


@linux_only
def test_writeback_advances_in_windows(tmp_path, monkeypatch):
    monkeypatch.delenv("CTREG_WRITEBACK", raising=False)
    path = tmp_path / "w.bin"
    with open(path, "wb", buffering=0) as fh:
        wb = Writeback(fh.fileno(), window=1000)
        fh.write(b"a" * 999)
        wb.advance(999)  # less than a window: nothing started
        assert (wb.started, wb.dropped) == (0, 0)
        fh.write(b"b" * 1500)
        wb.advance(2499)  # writeback of [0, 2499) started, nothing older to drop
        assert (wb.started, wb.dropped) == (2499, 0)
        fh.write(b"c" * 1000)
        wb.advance(3499)  # [2499, 3499) started; [0, 2499) waited for and dropped
        assert (wb.started, wb.dropped) == (3499, 2499)
    assert path.read_bytes() == b"a" * 999 + b"b" * 1500 + b"c" * 1000


@linux_only
def test_writeback_turns_itself_off_on_a_pipe(monkeypatch):
    monkeypatch.delenv("CTREG_WRITEBACK", raising=False)
    r, w = os.pipe()
    try:
        wb = Writeback(w, window=10)
        os.write(w, b"x" * 20)
        wb.advance(20)  # sync_file_range fails on a pipe (ESPIPE): off, no error
        assert not wb.enabled
        assert os.read(r, 100) == b"x" * 20
    finally:
        os.close(r)
        os.close(w)


def test_writeback_off_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CTREG_WRITEBACK", "0")
    with open(tmp_path / "off.bin", "wb", buffering=0) as fh:
        wb = Writeback(fh.fileno(), window=10)
        fh.write(b"y" * 100)
        wb.advance(100)
    assert not wb.enabled and (wb.started, wb.dropped) == (0, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux check")
def test_linux_has_sync_file_range():
    assert atomic._sync_file_range is not None
