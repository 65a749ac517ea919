"""The local RunCTRegistration service through a real server on 127.0.0.1 (DICOM files served by
a second local HTTP server, the ``files`` fixture): request validation, the specific codes of
failing inputs, concurrent submissions, results only through their URLs, and the end-to-end flow
with the real ctreg.register.  The job machinery (timeout, expiry, stop and restart, Dask) is in
test_service_jobs.py; the helpers and ``quick_job``, the test double of the registration, in
service_helpers.py.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ctreg import client
from ctreg.io.dicom import read_dicom_series
from ctreg.io.nifti import read_nifti
from ctreg.service import ErrorCode, Server, Status
from ctreg.volume import Volume
from service_helpers import (
    check_outputs,
    quick_job,
    raw_request,
    service_options,
    submit_params,
    volume,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A real server (local process pool, 2 workers) running quick_job."""
    opts = service_options(tmp_path_factory.mktemp("service"), max_download_bytes=400_000)
    with Server(opts, job_fn=quick_job) as server:
        yield server


# -- request validation -----------------------------------------------------------------------
BAD_REQUESTS = [
    ({"Action": None}, "Action"),
    ({"Action": "RunSomethingElse"}, "Action"),
    ({"DataFormat": None}, "DataFormat"),
    ({"DataFormat": "NIFTI"}, "DataFormat"),
    ({"DataSourceType": "OSS"}, "DataSourceType"),
    ({"OrgId": ""}, "OrgId"),
    ({"OrgName": None}, "OrgName"),
    (
        {"ReferenceList.1.ReferenceURL": None, "ReferenceList.2.ReferenceURL": None},
        "ReferenceList.1.ReferenceURL",
    ),
    ({"FloatingList.2.FloatingURL": None}, "FloatingList.2.FloatingURL"),  # a gap at N = 2
    ({"FloatingList.0.FloatingURL": "http://h/x"}, "FloatingList.0.FloatingURL"),
    ({"FloatingList.1.ReferenceURL": "http://h/x"}, "FloatingList.1.ReferenceURL"),
    ({"ReferenceList.1.ReferenceURL": "ftp://h/a.dcm"}, "ReferenceList.1.ReferenceURL"),
    ({"ReferenceList.1.ReferenceURL": "file:///etc/passwd"}, "ReferenceList.1.ReferenceURL"),
    ({"ReferenceList.1.ReferenceURL": "http:///nohost"}, "ReferenceList.1.ReferenceURL"),
    ({"ReferenceList.1.ReferenceURL": "not a url"}, "ReferenceList.1.ReferenceURL"),
]


@pytest.mark.parametrize(
    "override, names", BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))]
)
def test_invalid_parameter_gives_400_naming_it(service, override, names):
    refs = [f"http://127.0.0.1:9/r{i}.dcm" for i in range(2)]
    flos = [f"http://127.0.0.1:9/f{i}.dcm" for i in range(3)]
    query = urllib.parse.urlencode(submit_params(refs, flos, **override))
    before = len(service.store.list())
    status, body = raw_request(f"{service.url}/?{query}")
    assert status == 400, body
    assert body["Code"] == "InvalidParameter"
    assert names in body["Message"]
    assert len(service.store.list()) == before  # nothing was queued


def test_duplicate_parameter_and_bad_body_are_refused(service):
    status, body = raw_request(f"{service.url}/?Action=GetAsyncJobResult&JobId=A&JobId=B")
    assert status == 400 and "JobId" in body["Message"] and "more than once" in body["Message"]
    req = urllib.request.Request(
        f"{service.url}/", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and "Content-Type" in json.loads(err.value.read())["Message"]


def test_unknown_job_id(service):
    with pytest.raises(client.ServiceError) as err:
        client.get_async_job_result("0F0F0F0F-0000-4000-8000-000000000000", endpoint=service.url)
    assert err.value.http_status == 404 and err.value.code == ErrorCode.JOB_NOT_FOUND
    assert "0F0F0F0F-0000-4000-8000-000000000000" in err.value.message
    with pytest.raises(client.ServiceError) as err:
        client.get_async_job_result("../../etc", endpoint=service.url)
    assert err.value.http_status == 400 and "JobId" in err.value.message
    status, body = raw_request(f"{service.url}/?Action=GetAsyncJobResult")
    assert status == 400 and "JobId" in body["Message"]


# -- jobs ---------------------------------------------------------------------------------------
def test_bad_inputs_fail_with_specific_codes(service, files):
    good = files.series("good", volume())
    cases = {
        ErrorCode.DOWNLOAD: (good, good[:-1] + [f"{files.url}/missing/IM9.dcm"]),
        ErrorCode.NOT_DICOM: (good, good[:-1] + [files.put("notes.dcm", b"just text " * 100)]),
        ErrorCode.FRAME_COUNT: (good, files.series("five", volume(n=5))),
        ErrorCode.NOT_AXIAL: (files.series("oblique", volume(direction=_oblique())), good),
        ErrorCode.TOO_LARGE: (good, [files.put("big.dcm", os.urandom(500_000))]),
        ErrorCode.GEOMETRY: (good, files.series("twelve", volume(n=12))),  # raised by the job fn
    }
    jobs = {
        code: client.run_ct_registration(r, f, endpoint=service.url)["RequestId"]
        for code, (r, f) in cases.items()
    }
    for code, job_id in jobs.items():
        data = client.wait(job_id, 60, endpoint=service.url, poll_s=0.2)
        assert data["Status"] == Status.PROCESS_FAILED, (code, data)
        assert data["ErrorCode"] == code, data
        assert data["Result"] is None
        if code == ErrorCode.GEOMETRY:
            assert "quick_job needs equal shapes" in data["ErrorMessage"], data
            continue
        label = "FloatingList" if code != ErrorCode.NOT_AXIAL else "ReferenceList"
        assert data["ErrorMessage"].startswith(label), data
        assert str(service.data_dir) not in data["ErrorMessage"]  # no server paths leak
    assert (
        "8"
        in client.get_async_job_result(jobs[ErrorCode.FRAME_COUNT], endpoint=service.url)["Data"][
            "ErrorMessage"
        ]
    )
    # the root cause, naming the URL that failed (not another download stopped because of it)
    message = client.get_async_job_result(jobs[ErrorCode.DOWNLOAD], endpoint=service.url)["Data"][
        "ErrorMessage"
    ]
    assert message.startswith("FloatingList.10.FloatingURL: downloading"), message
    assert "missing/IM9.dcm" in message and "404" in message, message
    assert (
        "FloatingList.10.FloatingURL"
        in client.get_async_job_result(jobs[ErrorCode.NOT_DICOM], endpoint=service.url)["Data"][
            "ErrorMessage"
        ]
    )
    assert not any((service.data_dir / "work").iterdir())  # attempt folders removed


def _oblique():
    """Direction columns (world x, y, z of the z, y, x array axes): rotated 30 deg about x."""
    a = np.deg2rad(30.0)
    return np.column_stack(
        [(0.0, -np.sin(a), np.cos(a)), (0.0, np.cos(a), np.sin(a)), (1.0, 0.0, 0.0)]
    )


def test_eight_concurrent_submissions_no_cross_talk(service, files, tmp_path):
    inputs = []
    for i in range(8):
        reference = volume(0.0, origin=(-10.0 + 3 * i, -20.0, 30.0 - 7 * i))
        floating = volume(100.0 * (i + 1))
        inputs.append(
            (
                reference,
                floating,
                files.series(f"c{i}r", reference),
                files.series(f"c{i}f", floating),
            )
        )
    ids: list[str | None] = [None] * 8
    barrier = threading.Barrier(8)

    def submit(i):
        barrier.wait()
        _, _, r, f = inputs[i]
        ids[i] = client.run_ct_registration(
            r, f, endpoint=service.url, org_id=f"org{i}", method="POST" if i % 2 else "GET"
        )["RequestId"]

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == 8 and None not in ids
    for i, job_id in enumerate(ids):
        data = client.wait(job_id, 90, endpoint=service.url, poll_s=0.2)
        assert data["Status"] == Status.PROCESS_SUCCESS, data
        assert data["JobId"] == job_id and data["ErrorCode"] is None
        urls = json.loads(data["Result"])
        assert urls["NUrl"].startswith(service.url + "/results/" + job_id + "/")
        reference, floating, _, _ = inputs[i]
        check_outputs(data, reference, floating, tmp_path / f"out{i}")
        assert service.store.get(job_id).org_id == f"org{i}"


def test_results_only_through_their_urls(service, files, tmp_path):
    vol = volume(5.0)
    urls = files.series("paths", vol)
    job_id = client.run_ct_registration(urls, urls, endpoint=service.url)["RequestId"]
    data = client.wait(job_id, 60, endpoint=service.url, poll_s=0.2)
    nurl = json.loads(data["Result"])["NUrl"]
    status, body = raw_request(nurl)
    assert status == 200 and body[:2] == b"\x1f\x8b"  # gzip
    token_name = nurl.rsplit("/", 1)[1]
    for bad in (
        f"/results/{job_id}/registered.nii.gz",  # the name without its token
        f"/results/{job_id}/x{token_name}",
        f"/results/{job_id}/..%2f..%2fjobs.sqlite3",
        f"/results/{job_id}/../../jobs.sqlite3",
        f"/results/{job_id}/{token_name}/extra",
        "/results/../jobs.sqlite3",
        "/jobs.sqlite3",
        "/results/",
    ):
        status, body = raw_request(service.url + bad)
        assert status == 404, (bad, status)
    # another job's token does not open this job's files
    other = client.run_ct_registration(urls, urls, endpoint=service.url)["RequestId"]
    client.wait(other, 60, endpoint=service.url, poll_s=0.2)
    status, _ = raw_request(f"{service.url}/results/{other}/{token_name}")
    assert status == 404


# -- end to end with the real registration --------------------------------------------------------
def test_end_to_end_real_registration(tmp_path, files):
    try:
        from ctreg.pipeline import register  # noqa: F401 - what the service's job function calls
    except ImportError as exc:
        pytest.skip(f"ctreg.register is not available yet ({exc})")
    from ctreg.samples import ct64_dicom_path

    src = Path(ct64_dicom_path())
    names = sorted(p.name for p in src.iterdir() if p.is_file() and p.suffix.lower() != ".txt")
    dest = files.folder / "ct64"
    dest.mkdir(exist_ok=True)
    for name in names:
        (dest / name).write_bytes((src / name).read_bytes())
    urls = [f"{files.url}/ct64/{urllib.parse.quote(n)}" for n in names]
    reference = read_dicom_series(src)
    # the floating scan: the same anatomy with the table moved by (8, -5, 0) mm (header only), so
    # a correct registration maps every reference voxel onto the same voxel of the floating array
    shifted = reference.affine.copy()
    shifted[:3, 3] += (8.0, -5.0, 0.0)
    floating_urls = files.series("ct64-shifted", Volume(reference.array, shifted))
    opts = service_options(tmp_path / "svc", workers=1, preset="fast", job_timeout_s=300)
    with Server(opts) as server:
        job_id = client.run_ct_registration(urls, floating_urls, endpoint=server.url)["RequestId"]
        data = client.wait(job_id, 300, endpoint=server.url, poll_s=0.5)
        assert data["Status"] == Status.PROCESS_SUCCESS, data
        paths = client.download_results(data, tmp_path / "out")
    nii = read_nifti(paths["NUrl"])
    assert nii.shape == reference.shape == (79, 64, 64)
    np.testing.assert_allclose(nii.affine, reference.affine, atol=1e-2)
    with tarfile.open(paths["DUrl"]) as tf:
        tf.extractall(tmp_path / "dicom", filter="data")
    series = read_dicom_series(tmp_path / "dicom")
    assert series.shape == reference.shape
    np.testing.assert_allclose(series.affine, reference.affine, atol=1e-2)
    # registered: the warped floating is the reference anatomy again (median 0 HU measured);
    # without registration the 8 mm shift leaves a median of ~63 HU inside the body
    inside = reference.array > -900
    for warped in (nii, series):
        assert np.median(np.abs(warped.array[inside] - reference.array[inside])) < 20
