"""The job machinery of the local RunCTRegistration service, each test with a server of its own
(inputs served by the ``files`` fixture): job timeout, result expiry, graceful stop, one server
per data folder, restart after a kill (``ctreg serve`` processes) and the Dask runner.  The
helpers and ``quick_job`` are in service_helpers.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ctreg
from ctreg import client
from ctreg.service import ErrorCode, Server, Status
from service_helpers import (
    alive,
    check_outputs,
    quick_job,
    raw_request,
    service_options,
    volume,
)


def test_job_timeout_kills_the_attempt(tmp_path, files):
    slow = files.series("slow", volume(n=11))  # quick_job sleeps 60 s on 11 slices
    fast = files.series("fast", volume(n=12))
    opts = service_options(
        tmp_path / "svc",
        workers=1,
        job_timeout_s=3.0,
        extra_job_options={"slow_frames": 11, "slow_s": 60.0},
    )
    with Server(opts, job_fn=quick_job) as server:
        t0 = time.monotonic()
        job_id = client.run_ct_registration(slow, slow, endpoint=server.url)["RequestId"]
        after = client.run_ct_registration(fast, fast, endpoint=server.url)["RequestId"]
        data = client.wait(job_id, 40, endpoint=server.url, poll_s=0.2)
        assert data["Status"] == Status.TIMEOUT_FAILED, data
        assert data["ErrorCode"] == ErrorCode.TIMEOUT and "3 s" in data["ErrorMessage"]
        assert data["Result"] is None
        # the single worker slot was freed: the next job runs long before the slow one would end
        assert (
            client.wait(after, 40, endpoint=server.url, poll_s=0.2)["Status"]
            == Status.PROCESS_SUCCESS
        )
        assert time.monotonic() - t0 < 30
        assert not (server.results_dir / job_id).exists()


def test_results_expire_and_are_removed(tmp_path, files):
    urls = files.series("expire", volume(7.0))
    with Server(
        service_options(tmp_path / "svc", workers=1, result_ttl_s=1.0), job_fn=quick_job
    ) as server:
        job_id = client.run_ct_registration(urls, urls, endpoint=server.url)["RequestId"]
        data = client.wait(job_id, 60, endpoint=server.url, poll_s=0.1)
        assert data["Status"] == Status.PROCESS_SUCCESS
        assert (server.results_dir / job_id / "registered.nii.gz").is_file()
        nurl = json.loads(data["Result"])["NUrl"]
        deadline = time.monotonic() + 15
        while (server.results_dir / job_id).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (server.results_dir / job_id).exists()
        with pytest.raises(client.ServiceError) as err:
            client.get_async_job_result(job_id, endpoint=server.url)
        assert err.value.http_status == 410 and err.value.code == ErrorCode.JOB_EXPIRED
        assert raw_request(nurl)[0] == 410


def test_graceful_stop_requeues_the_running_job(tmp_path, files):
    reference, floating = volume(0.0), volume(-40.0)
    r_urls, f_urls = files.series("gr", reference), files.series("gf", floating)
    flag = tmp_path / "block"
    flag.touch()
    opts = service_options(tmp_path / "svc", workers=1, extra_job_options={"block_flag": str(flag)})
    server = Server(opts, job_fn=quick_job).start()
    try:
        job_id = client.run_ct_registration(r_urls, f_urls, endpoint=server.url)["RequestId"]
        deadline = time.monotonic() + 30
        while not Path(str(flag) + ".pid").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.stop()
    pid = int(Path(str(flag) + ".pid").read_text())
    assert not alive(pid)  # the attempt was killed
    job = server.store.get(job_id)
    assert job.status == Status.QUEUING and job.attempts == 0  # back in the queue, not counted
    flag.unlink()
    with Server(opts, job_fn=quick_job) as again:
        data = client.wait(job_id, 60, endpoint=again.url, poll_s=0.1)
        assert data["Status"] == Status.PROCESS_SUCCESS
        check_outputs(data, reference, floating, tmp_path / "out")
        assert again.store.get(job_id).attempts == 1


def test_one_server_per_data_dir(tmp_path):
    with Server(service_options(tmp_path, workers=1), job_fn=quick_job):
        with pytest.raises(ctreg.CTRegError, match="in use by another ctreg server"):
            Server(service_options(tmp_path, workers=1), job_fn=quick_job).start()


# -- restart after a kill -----------------------------------------------------------------------
def _start_cli_server(data_dir: Path, env: dict) -> tuple[subprocess.Popen, str]:
    (data_dir / "server.json").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ctreg",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--workers",
            "1",
            "--job-fn",
            "service_helpers:quick_job",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ctreg serve exited: {proc.stderr.read().decode()}")
        try:
            info = json.loads((data_dir / "server.json").read_text())
            if info["pid"] == proc.pid:
                return proc, info["url"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("ctreg serve did not start in 60 s")


def test_restart_after_kill_keeps_every_job(tmp_path, files):
    data_dir = tmp_path / "svc"
    data_dir.mkdir()
    flag = tmp_path / "block"
    env = {
        **os.environ,
        "CTREG_TEST_BLOCK_FLAG": str(flag),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    vols = [(volume(0.0, origin=(i, 0.0, 0.0)), volume(50.0 * i)) for i in range(3)]
    urls = [(files.series(f"k{i}r", r), files.series(f"k{i}f", f)) for i, (r, f) in enumerate(vols)]
    proc, url = _start_cli_server(data_dir, env)
    try:
        done = client.run_ct_registration(*urls[0], endpoint=url)["RequestId"]
        assert client.wait(done, 60, endpoint=url, poll_s=0.1)["Status"] == Status.PROCESS_SUCCESS
        flag.touch()  # the next job blocks inside its worker until the flag goes away
        running = client.run_ct_registration(*urls[1], endpoint=url)["RequestId"]
        queued = client.run_ct_registration(*urls[2], endpoint=url)["RequestId"]
        deadline = time.monotonic() + 30
        while not Path(str(flag) + ".pid").exists():  # the job function is running
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (
            client.get_async_job_result(running, endpoint=url)["Data"]["Status"]
            == Status.PROCESSING
        )
        assert client.get_async_job_result(queued, endpoint=url)["Data"]["Status"] == Status.QUEUING
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
    # the killed server's job process (blocked on the flag) must not outlive it
    blocked_pid = int(Path(str(flag) + ".pid").read_text())
    deadline = time.monotonic() + 10
    while alive(blocked_pid):
        assert time.monotonic() < deadline, f"job process {blocked_pid} outlived its server"
        time.sleep(0.1)
    flag.unlink()
    proc2, url2 = _start_cli_server(data_dir, env)
    try:
        statuses = {}
        for job_id in (done, running, queued):
            statuses[job_id] = client.wait(job_id, 60, endpoint=url2, poll_s=0.1)
        assert all(d["Status"] == Status.PROCESS_SUCCESS for d in statuses.values()), statuses
        for (reference, floating), job_id in zip(vols, (done, running, queued)):
            assert json.loads(statuses[job_id]["Result"])["NUrl"].startswith(url2 + "/results/")
            check_outputs(statuses[job_id], reference, floating, tmp_path / job_id)
    finally:
        proc2.send_signal(signal.SIGTERM)  # graceful stop
        assert proc2.wait(30) == 0
        proc2.stderr.close()
    assert not (data_dir / "server.json").exists()


# -- Dask ---------------------------------------------------------------------------------------
def test_dask_local_cluster(tmp_path, files):
    distributed = pytest.importorskip("distributed")
    reference, floating = volume(0.0, origin=(4.0, 5.0, 6.0)), volume(300.0)
    r_urls, f_urls = files.series("dr", reference), files.series("df", floating)
    bad = files.series("dbad", volume(n=5))
    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        opts = service_options(
            tmp_path / "svc", workers=None, dask_scheduler=cluster.scheduler_address
        )
        with Server(opts, job_fn=quick_job) as server:
            assert server.runner.kind == "dask" and server.runner.capacity == 2
            ok = client.run_ct_registration(r_urls, f_urls, endpoint=server.url)["RequestId"]
            failed = client.run_ct_registration(r_urls, bad, endpoint=server.url)["RequestId"]
            data = client.wait(ok, 60, endpoint=server.url, poll_s=0.1)
            assert data["Status"] == Status.PROCESS_SUCCESS, data
            check_outputs(data, reference, floating, tmp_path / "out")
            data = client.wait(failed, 60, endpoint=server.url, poll_s=0.1)
            assert data["Status"] == Status.PROCESS_FAILED
            assert data["ErrorCode"] == ErrorCode.FRAME_COUNT
