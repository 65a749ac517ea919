"""The service's SQLite job store, error classification and options (no server, no processes)."""

from __future__ import annotations

import threading

import pytest

from ctreg.errors import DicomSeriesError, GeometryError
from ctreg.io.dicom import DicomRuleError
from ctreg.io.fetch import DownloadError
from ctreg.service import ErrorCode, JobStore, ServiceOptions, Status
from ctreg.service.codes import classify_error


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "jobs.sqlite3")


def _new(store, i=0, now=None):
    return store.create(
        org_id=f"o{i}",
        org_name="n",
        reference_urls=[f"http://h/r{i}"],
        floating_urls=[f"http://h/f{i}", f"http://h/g{i}"],
        now_s=now,
    )


def test_create_get_and_wal(store):
    job = _new(store, 3)
    assert store.journal_mode == "wal"
    got = store.get(job.job_id)
    assert got == job
    assert got.status == Status.QUEUING and got.attempts == 0
    assert got.floating_urls == ("http://h/f3", "http://h/g3")
    assert len(got.token) >= 20 and got.token != _new(store, 4).token
    assert store.get("NOPE") is None


def test_claims_are_fifo_and_counted(store):
    jobs = [_new(store, i, now=100.0 + i) for i in range(3)]
    claimed = [store.claim_next() for _ in range(3)]
    assert [c.job_id for c in claimed] == [j.job_id for j in jobs]
    assert all(c.status == Status.PROCESSING and c.attempts == 1 for c in claimed)
    assert store.claim_next() is None


def test_concurrent_claims_never_share_a_job(store):
    ids = {_new(store, i).job_id for i in range(40)}
    got: list[str] = []
    lock = threading.Lock()

    def worker():
        while (job := store.claim_next()) is not None:
            with lock:
                got.append(job.job_id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == sorted(ids)  # each claimed exactly once


def test_late_answer_never_overwrites_a_newer_state(store):
    job = _new(store)
    first = store.claim_next()
    assert store.requeue(job.job_id, first.attempts, count_attempt=True)
    second = store.claim_next()
    assert second.attempts == 2
    assert not store.finish(job.job_id, 1, Status.PROCESS_SUCCESS)  # attempt 1 is stale
    assert store.get(job.job_id).status == Status.PROCESSING
    assert store.finish(job.job_id, 2, Status.PROCESS_FAILED, error_code="X", error_message="m")
    done = store.get(job.job_id)
    assert (done.status, done.error_code, done.error_message) == (Status.PROCESS_FAILED, "X", "m")
    assert not store.finish(job.job_id, 2, Status.PROCESS_SUCCESS)  # finished stays finished
    with pytest.raises(ValueError, match="status"):
        store.finish(job.job_id, 2, Status.QUEUING)


def test_graceful_requeue_does_not_count_the_attempt(store):
    job = _new(store)
    store.claim_next()
    assert store.requeue(job.job_id, 1)
    again = store.get(job.job_id)
    assert again.status == Status.QUEUING and again.attempts == 0


def test_recover_interrupted_requeues_then_fails(store):
    a, b, c = (_new(store, i, now=10.0 + i) for i in range(3))
    for _ in range(2):
        store.claim_next()  # a and b are PROCESSING (attempt 1) when the server "dies"
    requeued, failed = store.recover_interrupted(max_attempts=2)
    assert sorted(requeued) == sorted([a.job_id, b.job_id]) and failed == []
    assert store.get(c.job_id).status == Status.QUEUING
    for _ in range(3):
        store.claim_next()  # a, b on attempt 2, c on attempt 1
    requeued, failed = store.recover_interrupted(max_attempts=2)
    assert requeued == [c.job_id] and sorted(failed) == sorted([a.job_id, b.job_id])
    dead = store.get(a.job_id)
    assert dead.status == Status.PROCESS_FAILED and dead.error_code == ErrorCode.INTERRUPTED
    assert "2 time(s)" in dead.error_message
    # a new store object on the same file (a restart) sees the same table
    again = JobStore(store.path)
    assert {j.job_id: j.status for j in again.list()} == {j.job_id: j.status for j in store.list()}


def test_expiry_marks_then_purges(store):
    old, new, queued = _new(store, 0, now=1.0), _new(store, 1, now=2.0), _new(store, 2, now=3.0)
    store.claim_next(), store.claim_next()
    store.finish(old.job_id, 1, Status.PROCESS_SUCCESS, now_s=100.0)
    store.finish(new.job_id, 1, Status.PROCESS_FAILED, now_s=200.0)
    assert store.mark_expired(150.0, now_s=300.0) == [old.job_id]
    assert store.mark_expired(150.0, now_s=301.0) == []  # once
    assert store.get(old.job_id).expired_s == 300.0 and store.get(new.job_id).expired_s is None
    assert store.mark_expired(1e9, now_s=400.0) == [new.job_id]  # queued jobs never expire
    assert store.purge_expired(350.0) == 1
    assert store.get(old.job_id) is None and store.get(new.job_id) is not None
    assert store.get(queued.job_id).status == Status.QUEUING


def test_classify_error():
    """Codes come from the exception's ``code`` (or class), never from its message."""
    assert (
        classify_error(DownloadError("x", url="u", code="InvalidFile.TooLarge"), "download")
        == ErrorCode.TOO_LARGE
    )
    assert (
        classify_error(DownloadError("x", url="u", code="InvalidFile.URL"), "download")
        == ErrorCode.URL
    )
    assert classify_error(OSError("connection reset"), "download") == ErrorCode.DOWNLOAD
    assert (
        classify_error(OSError("file too large: at most 10 bytes"), "download")
        == ErrorCode.DOWNLOAD
    )
    frames = DicomRuleError("/a/IM1.dcm: the series has 2 frame(s)", code="InvalidFile.FrameCount")
    assert classify_error(frames, "read") == ErrorCode.FRAME_COUNT
    axial = DicomRuleError("/a/IM1.dcm: the series is not axial", code="InvalidFile.NotAxial")
    assert classify_error(axial, "read") == ErrorCode.NOT_AXIAL
    not_dicom = DicomRuleError("/a/x is not a DICOM file", code="InvalidFile.NotDicom")
    assert classify_error(not_dicom, "read") == ErrorCode.NOT_DICOM
    # the message is never read: wording that used to be matched gives the class's code
    assert (
        classify_error(DicomSeriesError("/a/x is not a DICOM file (bad)"), "read")
        == ErrorCode.SERIES
    )
    assert classify_error(DicomSeriesError("the series is not axial"), "read") == ErrorCode.SERIES
    several = DicomSeriesError(
        "folder holds 2 series; accepted: one series\n  1.2: 'a', 10 frame(s)"
    )
    assert classify_error(several, "read") == ErrorCode.SERIES
    assert classify_error(GeometryError("uneven spacing"), "read") == ErrorCode.SERIES
    assert classify_error(GeometryError("no overlap"), "process") == ErrorCode.GEOMETRY
    coded = DicomSeriesError("whatever")
    coded.code = "InvalidFile.NotAxial"
    assert classify_error(coded, "read") == ErrorCode.NOT_AXIAL
    assert classify_error(RuntimeError("bug"), "process") == ErrorCode.INTERNAL
    assert classify_error(KeyError("bug"), "read") == ErrorCode.INTERNAL
    plain = RuntimeError("bug")
    plain.code = "InvalidFile.NotAxial"  # only ctreg's own errors carry codes that count
    assert classify_error(plain, "read") == ErrorCode.INTERNAL


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"port": 70000}, "port"),
        ({"workers": 0}, "workers"),
        ({"result_ttl_s": -1}, "result_ttl_s"),
        ({"job_timeout_s": float("nan")}, "job_timeout_s"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"job_fn": "nocolon"}, "job_fn"),
        ({"public_url": "ftp://x"}, "public_url"),
        ({"start_method": "fork"}, "start_method"),
        ({"dask_scheduler": " "}, "dask_scheduler"),
    ],
)
def test_options_validation(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        ServiceOptions(data_dir=tmp_path, **kw)


def test_cli_serve_rejects_bad_options(tmp_path, capsys):
    from ctreg.cli import main

    assert main(["serve", "--data-dir", str(tmp_path), "--port", "70000"]) == 1
    assert "port" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(tmp_path), "--result-ttl-s", "0"]) == 1
    assert "result_ttl_s" in capsys.readouterr().err
    assert not (tmp_path / "jobs.sqlite3").exists()  # nothing was started
