"""The job store: one SQLite database (WAL) in the service's data folder.

Every state change is one short transaction, so that several HTTP threads submitting at once,
the dispatcher claiming jobs and the monitors finishing them never see or leave a half-updated
job, and a server killed at any moment restarts from a consistent table:

    QUEUING --claim--> PROCESSING --finish--> PROCESS_SUCCESS | PROCESS_FAILED | TIMEOUT_FAILED
       ^                   |
       +--- requeue -------+   (restart after a crash, or a graceful stop, while it ran)

A finished job keeps its row until its results expire; it is then marked ``expired`` (its files
are removed by the server) so that ``GetAsyncJobResult`` can still say what happened to it.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .codes import ErrorCode, Status

__all__ = ["Job", "JobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    org_id        TEXT NOT NULL,
    org_name      TEXT NOT NULL,
    request_json  TEXT NOT NULL,
    token         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_s     REAL NOT NULL,
    started_s     REAL,
    finished_s    REAL,
    expired_s     REAL,
    error_code    TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created_s);
"""


@dataclass(frozen=True)
class Job:
    """One row of the job table."""

    job_id: str
    status: str
    org_id: str
    org_name: str
    reference_urls: tuple[str, ...]
    floating_urls: tuple[str, ...]
    token: str
    attempts: int
    created_s: float
    started_s: float | None
    finished_s: float | None
    expired_s: float | None
    error_code: str | None
    error_message: str | None

    @property
    def finished(self) -> bool:
        return self.status in Status.FINISHED

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "Job":
        request = json.loads(row["request_json"])
        return cls(
            job_id=row["job_id"],
            status=row["status"],
            org_id=row["org_id"],
            org_name=row["org_name"],
            reference_urls=tuple(request["reference_urls"]),
            floating_urls=tuple(request["floating_urls"]),
            token=row["token"],
            attempts=int(row["attempts"]),
            created_s=row["created_s"],
            started_s=row["started_s"],
            finished_s=row["finished_s"],
            expired_s=row["expired_s"],
            error_code=row["error_code"],
            error_message=row["error_message"],
        )


class JobStore:
    """Jobs of one service, persisted in ``path`` (a SQLite file, created when missing).

    Thread-safe: each call opens its own short-lived connection (SQLite serialises writers;
    ``BEGIN IMMEDIATE`` takes the write lock up front so that claims never race).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = float(busy_timeout_s)
        with contextlib.closing(self._connect()) as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); commits itself
        self.journal_mode = str(mode).lower()

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with contextlib.closing(self._connect()) as db:
            return db.execute(sql, args).fetchall()

    # -- jobs -------------------------------------------------------------------------------
    def create(
        self,
        *,
        org_id: str,
        org_name: str,
        reference_urls,
        floating_urls,
        now_s: float | None = None,
    ) -> Job:
        """Insert a new QUEUING job and return it (its id is a fresh UUID)."""
        job_id = str(uuid.uuid4()).upper()
        request = {"reference_urls": list(reference_urls), "floating_urls": list(floating_urls)}
        now = time.time() if now_s is None else now_s
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job_id, status, org_id, org_name, request_json, token, "
                "created_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    Status.QUEUING,
                    org_id,
                    org_name,
                    json.dumps(request),
                    secrets.token_urlsafe(18),
                    now,
                ),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return Job._from_row(rows[0]) if rows else None

    def list(self, status: str | None = None) -> list[Job]:
        """All jobs (or those with ``status``), oldest first."""
        if status is None:
            rows = self._read("SELECT * FROM jobs ORDER BY created_s, job_id")
        else:
            rows = self._read(
                "SELECT * FROM jobs WHERE status = ? ORDER BY created_s, job_id", (status,)
            )
        return [Job._from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (expired ones included)."""
        rows = self._read("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def claim_next(self, now_s: float | None = None) -> Job | None:
        """Move the oldest QUEUING job to PROCESSING (attempts + 1) and return it, or None."""
        now = time.time() if now_s is None else now_s
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id FROM jobs WHERE status = ? ORDER BY created_s, job_id LIMIT 1",
                (Status.QUEUING,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, attempts = attempts + 1, started_s = ? "
                "WHERE job_id = ?",
                (Status.PROCESSING, now, row["job_id"]),
            )
            claimed = db.execute("SELECT * FROM jobs WHERE job_id = ?", (row["job_id"],)).fetchone()
        return Job._from_row(claimed)

    def finish(
        self,
        job_id: str,
        attempt: int,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        now_s: float | None = None,
    ) -> bool:
        """End attempt ``attempt`` of a PROCESSING job with a final ``status``.

        Returns False (and changes nothing) when the job is no longer in that attempt (it was
        re-queued, timed out or finished meanwhile): a late answer never overwrites a newer state.
        """
        if status not in Status.FINISHED:
            raise ValueError(f"status must be one of {Status.FINISHED}, got {status!r}")
        now = time.time() if now_s is None else now_s
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, finished_s = ?, error_code = ?, error_message = ? "
                "WHERE job_id = ? AND status = ? AND attempts = ?",
                (status, now, error_code, error_message, job_id, Status.PROCESSING, attempt),
            )
            return cur.rowcount == 1

    def requeue(self, job_id: str, attempt: int, *, count_attempt: bool = False) -> bool:
        """Put a PROCESSING job back in the queue (a graceful stop: the attempt is not counted
        unless ``count_attempt``)."""
        delta = 0 if count_attempt else 1
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, attempts = attempts - ?, started_s = NULL "
                "WHERE job_id = ? AND status = ? AND attempts = ?",
                (Status.QUEUING, delta, job_id, Status.PROCESSING, attempt),
            )
            return cur.rowcount == 1

    def recover_interrupted(
        self, max_attempts: int, now_s: float | None = None
    ) -> tuple[builtins.list[str], builtins.list[str]]:
        """After a crash: re-queue PROCESSING jobs with attempts left; fail the others.

        Returns (re-queued ids, failed ids).
        """
        now = time.time() if now_s is None else now_s
        with self._transaction() as db:
            rows = db.execute(
                "SELECT job_id, attempts FROM jobs WHERE status = ?", (Status.PROCESSING,)
            ).fetchall()
            requeued, failed = [], []
            for row in rows:
                if int(row["attempts"]) < max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = ?, started_s = NULL WHERE job_id = ?",
                        (Status.QUEUING, row["job_id"]),
                    )
                    requeued.append(row["job_id"])
                else:
                    db.execute(
                        "UPDATE jobs SET status = ?, finished_s = ?, error_code = ?, "
                        "error_message = ? WHERE job_id = ?",
                        (
                            Status.PROCESS_FAILED,
                            now,
                            ErrorCode.INTERRUPTED,
                            f"the server stopped while this job ran, {row['attempts']} time(s) "
                            f"(at most {max_attempts} attempts); submit it again, and if it keeps "
                            "failing check the server's memory and log",
                            row["job_id"],
                        ),
                    )
                    failed.append(row["job_id"])
        return requeued, failed

    def mark_expired(self, older_than_s: float, now_s: float | None = None) -> builtins.list[str]:
        """Mark finished jobs whose ``finished_s`` is before ``older_than_s`` as expired;
        return their ids (the caller removes their files)."""
        now = time.time() if now_s is None else now_s
        placeholders = ", ".join("?" for _ in Status.FINISHED)
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT job_id FROM jobs WHERE status IN ({placeholders}) AND expired_s IS NULL "
                "AND finished_s < ?",
                (*Status.FINISHED, older_than_s),
            ).fetchall()
            ids = [r["job_id"] for r in rows]
            db.executemany(
                "UPDATE jobs SET expired_s = ? WHERE job_id = ?", [(now, i) for i in ids]
            )
        return ids

    def purge_expired(self, expired_before_s: float) -> int:
        """Delete the rows of jobs that expired before ``expired_before_s``; return how many."""
        with self._transaction() as db:
            cur = db.execute(
                "DELETE FROM jobs WHERE expired_s IS NOT NULL AND expired_s < ?",
                (expired_before_s,),
            )
            return int(cur.rowcount)
