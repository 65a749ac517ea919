"""Helpers of the service tests (test_service.py, test_service_jobs.py; the ``files`` fixture in
conftest.py serves their inputs): the test double of the registration, generated inputs, the
input file server and HTTP helpers.

``quick_job`` is a deterministic job function that receives the series that the worker
downloaded and read with ``read_dicom_series`` and writes real .nii.gz / .tar.gz outputs with
ctreg's writers, but does not register (the floating array is put on the reference grid): that
makes every output checkable voxel by voxel against its own inputs.  Servers started by the
tests run it as ``service_helpers:quick_job``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tarfile
import threading
import time
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

import ctreg
from ctreg import client
from ctreg.io.dicom import read_dicom_series, write_dicom_series
from ctreg.io.nifti import read_nifti, write_nifti
from ctreg.service import ServiceOptions
from ctreg.volume import Volume, affine_from_geometry

SHAPE = (10, 12, 14)  # z, y, x of the generated series
SPACING = (2.5, 1.5, 1.25)


# -- the test double of the registration ------------------------------------------------------
def quick_job(
    reference: Volume,
    floating: Volume,
    out_dir: Path,
    *,
    preset: str = "default",
    slow_frames: int | None = None,
    slow_s: float = 0.0,
    block_flag: str | None = None,
) -> None:
    """Writes registered.nii.gz/.tar.gz = the floating voxels on the reference grid.

    ``slow_frames``/``slow_s``: sleep when the floating series has that many slices (timeouts).
    ``block_flag`` (or $CTREG_TEST_BLOCK_FLAG): wait while that file exists (restart test).
    """
    flag = block_flag or os.environ.get("CTREG_TEST_BLOCK_FLAG")
    t0 = time.monotonic()
    if flag and os.path.exists(flag):
        Path(flag + ".pid").write_text(str(os.getpid()))
    while flag and os.path.exists(flag) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    if slow_frames is not None and floating.shape[0] == slow_frames:
        time.sleep(slow_s)
    if reference.shape != floating.shape:
        raise ctreg.GeometryError(
            f"quick_job needs equal shapes, got {reference.shape} and {floating.shape}"
        )
    warped = Volume(floating.array, reference.affine)
    write_nifti(warped, out_dir / "registered.nii.gz")
    write_dicom_series(
        warped, out_dir / "registered.tar.gz", reference=reference, floating=floating
    )
    (out_dir / "report.json").write_text(json.dumps({"preset": preset}))


# -- inputs -----------------------------------------------------------------------------------
def volume(
    offset_hu: float = 0.0, *, n: int = SHAPE[0], origin=(-10.0, -20.0, 30.0), direction=None
) -> Volume:
    z, y, x = np.meshgrid(*[np.arange(s) for s in (n,) + SHAPE[1:]], indexing="ij")
    hu = -800.0 + 40.0 * x + 25.0 * y + 10.0 * z + offset_hu
    return Volume(hu.astype(np.float32), affine_from_geometry(origin, SPACING, direction))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_files(root: Path):
    """A second HTTP server on 127.0.0.1 serving ``root``; ``files.series(name, volume)`` writes
    a DICOM series there and returns its URLs, ``files.put(name, bytes)`` one file's URL."""
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    class Files:
        url = base
        folder = root

        @staticmethod
        def series(name: str, vol: Volume) -> list[str]:
            write_dicom_series(vol, root / name)
            return [f"{base}/{name}/{p.name}" for p in sorted((root / name).iterdir())]

        @staticmethod
        def put(name: str, data: bytes) -> str:
            (root / name).write_bytes(data)
            return f"{base}/{name}"

    try:
        yield Files
    finally:
        httpd.shutdown()
        httpd.server_close()


def service_options(data_dir, **kw) -> ServiceOptions:
    kw.setdefault("workers", 2)
    return ServiceOptions(data_dir=data_dir, port=0, **kw)


def raw_request(url: str, *, data: bytes | None = None, method: str | None = None):
    """(HTTP status, parsed JSON or bytes) without raising on 4xx."""
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, body, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, body, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, (json.loads(body) if ctype.startswith("application/json") else body)


def submit_params(ref_urls, flo_urls, **override) -> dict:
    params = {
        "Action": "RunCTRegistration",
        "DataFormat": "DICOM",
        "DataSourceType": "HTTP_FILES",
        "OrgId": "org-1",
        "OrgName": "Test Org",
    }
    params.update({f"ReferenceList.{n}.ReferenceURL": u for n, u in enumerate(ref_urls, 1)})
    params.update({f"FloatingList.{n}.FloatingURL": u for n, u in enumerate(flo_urls, 1)})
    params.update(override)
    return {k: v for k, v in params.items() if v is not None}


def check_outputs(data: dict, reference: Volume, floating: Volume, dest: Path) -> None:
    """Download NUrl and DUrl; both must hold the floating voxels on the reference grid."""
    paths = client.download_results(data, dest)
    nii = read_nifti(paths["NUrl"])
    assert nii.shape == reference.shape
    np.testing.assert_allclose(nii.affine, reference.affine, atol=1e-3)
    np.testing.assert_allclose(nii.array, floating.array, atol=0.51)
    with tarfile.open(paths["DUrl"]) as tf:
        tf.extractall(dest / "dicom", filter="data")
    series = read_dicom_series(dest / "dicom")
    assert series.shape == reference.shape
    np.testing.assert_allclose(series.affine, reference.affine, atol=1e-3)
    np.testing.assert_allclose(series.array, floating.array, atol=0.51)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie has exited)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no /proc (macOS) or gone
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return "State:\tZ" not in state  # a zombie has exited
