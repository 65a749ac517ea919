"""``ctreg batch``: register many pairs listed in a CSV, resumable, locally or on a Dask cluster.

PAIRS.csv has the columns ``reference,floating[,name]``: with a header row naming them (any
order, other columns ignored) or without one (in that order).  Relative paths are taken from
the CSV's own folder.  Names (default ``pair001``, ``pair002``... by row) must be unique and
made of letters, digits, ``.``, ``_`` and ``-``: each pair gets the folder ``OUT/<name>/``.

Layout of ``OUT``::

    OUT/summary.csv               one row per pair (rewritten, atomically, after every pair)
    OUT/<name>/registered.nii.gz  the outputs of ``ctreg register`` (report.json, report.html ...)
    OUT/<name>/DONE.json          written last: the pair is finished (status, seconds, figures)
    OUT/<name>/error.json         instead, when the pair failed (code, message)

Resuming: a pair whose folder holds ``DONE.json`` is skipped on a re-run.  The outputs are
written into a temporary folder that is renamed to ``OUT/<name>`` only once ``DONE.json`` is in
it, so a run killed half-way leaves no ``OUT/<name>``; anything there without ``DONE.json`` (a
failed attempt, a folder from elsewhere) is removed and the pair is redone.  One batch run per
OUT at a time (a lock file, ``OUT/.batch.lock``, refuses a second).

A failed pair is reported (summary line, ``summary.csv``, ``error.json``) and the others go on;
the exit status of ``ctreg batch`` is 1 when any pair failed, else 0.

With ``scheduler=`` (``--scheduler tcp://host:8786``) every pair is a Dask task
(``dask[distributed]``); the workers must see the input paths and OUT at the same paths.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .batch_pairs import BatchError, PairSpec, read_pairs

__all__ = [
    "BatchError",
    "PairSpec",
    "read_pairs",
    "run_pair",
    "run_batch",
    "BatchSummary",
    "DONE_FILE",
    "ERROR_FILE",
    "SUMMARY_FILE",
]

log = logging.getLogger("ctreg")

DONE_FILE = "DONE.json"
ERROR_FILE = "error.json"
SUMMARY_FILE = "summary.csv"
LOCK_FILE = ".batch.lock"
SUMMARY_COLUMNS = (
    "name",
    "status",
    "seconds",
    "jacobian_min",
    "jacobian_percent_nonpositive",
    "error_code",
    "error",
    "reference",
    "floating",
    "output",
)


# -- one pair ------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    from .io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def read_done(folder) -> dict | None:
    """The completion record of a finished pair, or None when the pair is not finished."""
    p = Path(folder) / DONE_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _clean_leftovers(out_root: Path, name: str) -> None:
    """Remove temporary folders of an earlier, killed attempt at this pair."""
    for tmp in out_root.glob(f".{name}.*.part"):
        shutil.rmtree(tmp, ignore_errors=True)


def _error_code(exc: BaseException, stage: str) -> str:
    from .service.codes import classify_error

    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    return classify_error(exc, stage)


def run_pair(
    pair: PairSpec,
    out_root,
    *,
    preset: str = "default",
    dicom: bool = True,
    report: bool = True,
    threads: int | None = None,
    register_fn: Callable | None = None,
) -> dict[str, Any]:
    """Register one pair into ``out_root/<name>`` unless it is finished already; never raises
    for a failed pair (the returned row says ``status`` "failed" with ``error_code``).

    Returns the summary row: name, status ("ok", "done" = finished by an earlier run,
    "failed"), seconds, Jacobian figures, error code and message, inputs and output folder.
    """
    from .io.atomic import atomic_dir

    out_root = Path(out_root)
    folder = out_root / pair.name
    row: dict[str, Any] = {
        "name": pair.name,
        "reference": pair.reference,
        "floating": pair.floating,
        "output": str(folder),
    }
    done = read_done(folder)
    if done is not None:
        return {
            **row,
            **{k: done.get(k) for k in ("seconds", "jacobian_min", "jacobian_percent_nonpositive")},
            "status": "done",
        }
    _clean_leftovers(out_root, pair.name)
    if folder.exists() or folder.is_symlink():  # half done or failed before: redo it
        log.info("%s: redoing (no %s in %s)", pair.name, DONE_FILE, folder)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    t0 = time.perf_counter()
    stage = "read"
    try:
        from .io import read_volume

        for what, src in (("reference", pair.reference), ("floating", pair.floating)):
            if "://" not in src and not Path(src).exists():
                raise BatchError(
                    f"{what} {src} does not exist (line {pair.row} of the pairs file)",
                    code="Batch.MissingInput",
                )
        reference = read_volume(pair.reference)
        floating = read_volume(pair.floating)
        stage = "process"
        if register_fn is None:
            from .pipeline import register

            register_fn = register
        result = register_fn(reference, floating, preset=preset, threads=threads)
        jac = result.report.get("jacobian", {})
        before = None
        if report:  # taken while the result holds the floating scan, which then goes (memory)
            from .report_html import before_parts_kept, report_for_run

            before = before_parts_kept(result)
        result.release_floating()
        del floating
        with atomic_dir(folder) as tmp:
            result.save(tmp, dicom=dicom)
            if before is not None:
                report_for_run(result, tmp / "report.html", before=before)
            seconds = time.perf_counter() - t0
            record = {
                "status": "ok",
                "name": pair.name,
                "reference": pair.reference,
                "floating": pair.floating,
                "preset": preset,
                "seconds": round(seconds, 3),
                "register_seconds": result.report.get("seconds_total"),
                "jacobian_min": jac.get("min"),
                "jacobian_percent_nonpositive": jac.get("percent_nonpositive"),
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": sorted(p.name for p in tmp.iterdir()) + [DONE_FILE],
            }
            _write_json(tmp / DONE_FILE, record)  # last: the pair is finished
        return {
            **row,
            "status": "ok",
            "seconds": record["seconds"],
            "jacobian_min": record["jacobian_min"],
            "jacobian_percent_nonpositive": record["jacobian_percent_nonpositive"],
        }
    except Exception as exc:  # noqa: BLE001 - one pair's failure must not stop the batch
        seconds = time.perf_counter() - t0
        code = _error_code(exc, stage)
        message = str(exc) or type(exc).__name__
        err = {
            "status": "failed",
            "name": pair.name,
            "error_code": code,
            "error": message,
            "stage": stage,
            "exception": type(exc).__name__,
            "seconds": round(seconds, 3),
            "traceback": traceback.format_exc(limit=8)[-4000:],
            "reference": pair.reference,
            "floating": pair.floating,
        }
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(folder / ERROR_FILE, err)
        except OSError as write_exc:  # the error must still reach the summary
            log.warning("%s: cannot write %s: %s", pair.name, ERROR_FILE, write_exc)
        return {
            **row,
            "status": "failed",
            "seconds": err["seconds"],
            "error_code": code,
            "error": message,
        }


# -- the batch -----------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    rows: list[dict] = dataclasses.field(default_factory=list)
    summary_csv: Path | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "failed"]

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def summary_line(row: dict) -> str:
    """One line per pair, as ``ctreg batch`` prints it."""
    name, status = row["name"], row["status"]
    if status == "failed":
        return f"FAILED  {name}: [{row.get('error_code')}] {row.get('error')}"
    sec = row.get("seconds")
    jmin = row.get("jacobian_min")
    fold = row.get("jacobian_percent_nonpositive")
    figs = (
        (f"{sec:.1f} s" if isinstance(sec, (int, float)) else "? s")
        + (f", Jacobian min {jmin:.3f}" if isinstance(jmin, (int, float)) else "")
        + (f", {fold:.4f} % folded" if isinstance(fold, (int, float)) else "")
    )
    label = "ok     " if status == "ok" else "done   "
    suffix = "" if status == "ok" else " (finished by an earlier run)"
    return f"{label} {name}: {figs} -> {row['output']}{suffix}"


def write_summary(out_root: Path, rows: list[dict]) -> Path:
    from .io.atomic import atomic_path

    path = out_root / SUMMARY_FILE
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SUMMARY_COLUMNS})
    return path


@contextlib.contextmanager
def _locked(out_root: Path) -> Iterator[None]:
    import fcntl

    fh = open(out_root / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BatchError(
                f"another ctreg batch is running on {out_root} (it holds "
                f"{out_root / LOCK_FILE}); wait for it or choose another folder",
                code="Batch.Locked",
            ) from None
        yield
    finally:
        fh.close()


def run_batch(
    pairs_csv,
    out_root,
    *,
    preset: str = "default",
    dicom: bool = True,
    report: bool = True,
    threads: int | None = None,
    scheduler: str | None = None,
    on_row: Callable[[dict], None] | None = None,
    connect_timeout_s: float = 30.0,
) -> BatchSummary:
    """Run every pair of ``pairs_csv`` into ``out_root`` (see the module docstring); ``on_row``
    is called with each pair's summary row as it finishes (pairs finished earlier first)."""
    pairs = read_pairs(pairs_csv)
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise BatchError(f"output {out_root} exists and is not a folder", code="Batch.Output")
    out_root.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary()
    by_name: dict[str, dict] = {}

    def finished(row: dict) -> None:
        by_name[row["name"]] = row
        summary.rows = [by_name[p.name] for p in pairs if p.name in by_name]
        summary.summary_csv = write_summary(out_root, summary.rows)
        if on_row is not None:
            on_row(row)

    kw: dict[str, Any] = dict(preset=preset, dicom=dicom, report=report, threads=threads)
    with _locked(out_root):
        todo = []
        for p in pairs:  # finished pairs are skipped before anything is submitted
            done = read_done(out_root / p.name)
            if done is not None:
                finished(run_pair(p, out_root, **kw))
            else:
                todo.append(p)
        log.info(
            "batch: %d pair(s), %d finished earlier, %d to run%s",
            len(pairs),
            len(pairs) - len(todo),
            len(todo),
            f" on {scheduler}" if scheduler else "",
        )
        if scheduler:
            _run_dask(todo, out_root, scheduler, kw, finished, connect_timeout_s)
        else:
            for n, p in enumerate(todo):
                log.info(
                    "batch: %s (%d/%d): %s -> %s", p.name, n + 1, len(todo), p.floating, p.reference
                )
                finished(run_pair(p, out_root, **kw))
    if not summary.rows:  # nothing at all (cannot happen: read_pairs needs a row)
        summary.summary_csv = write_summary(out_root, [])
    return summary


def _run_dask(
    todo: list[PairSpec],
    out_root: Path,
    scheduler: str,
    kw: dict,
    finished,
    connect_timeout_s: float,
) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise BatchError(
            '--scheduler needs dask.distributed: pip install "ctreg[service]"', code="Batch.Dask"
        ) from None
    try:
        client = Client(scheduler, timeout=connect_timeout_s)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError (bad address)
        raise BatchError(
            f"cannot reach the Dask scheduler {scheduler}: {exc}", code="Batch.Dask"
        ) from None
    try:
        futures = {
            client.submit(
                run_pair,
                p,
                str(out_root),
                key=f"ctreg-batch-{p.name}-{os.getpid()}",
                pure=False,
                **kw,
            ): p
            for p in todo
        }
        for fut in as_completed(futures):
            p = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died or the task could not run
                row = {
                    "name": p.name,
                    "reference": p.reference,
                    "floating": p.floating,
                    "output": str(out_root / p.name),
                    "status": "failed",
                    "error_code": "Batch.Worker",
                    "error": f"{type(exc).__name__}: {exc}",
                }
            finished(row)
    finally:
        client.close()


# -- command line (ctreg batch) --------------------------------------------------------------------


def add_batch_parser(sub) -> None:
    """Declare ``ctreg batch`` on the CLI's subparsers."""
    p = sub.add_parser(
        "batch",
        help="register many pairs listed in a CSV (resumable; local or Dask)",
        description="Register every pair of PAIRS.csv (columns reference,floating[,name]; header "
        "optional; relative paths from the CSV's folder) into OUT/<name>/ with the outputs of "
        "'ctreg register' and a completion file DONE.json written last. A re-run skips finished "
        "pairs and redoes half-done or failed ones. One summary line per pair on stdout and "
        "OUT/summary.csv. Exit status 1 when any pair failed.",
    )
    p.add_argument("pairs", metavar="PAIRS.csv", help="CSV: reference,floating[,name] per row")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created; reused on re-runs)"
    )
    p.add_argument("--preset", default="default", choices=["fast", "default", "accurate"])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads per registration (default: all cores)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the pairs as tasks on this Dask scheduler (e.g. tcp://host:8786); "
        "workers must see the inputs and DIR at the same paths",
    )
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM .tar.gz outputs")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    import sys

    if args.threads is not None and args.threads < 1:
        raise BatchError(
            f"--threads must be a positive integer, got {args.threads}", code="Batch.Arguments"
        )

    def show(row: dict) -> None:
        print(summary_line(row), flush=True)

    summary = run_batch(
        args.pairs,
        args.out,
        preset=args.preset,
        dicom=not args.no_dicom,
        report=not args.no_report,
        threads=args.threads,
        scheduler=args.scheduler,
        on_row=show,
    )
    counts = summary.counts
    print(
        f"batch: {len(summary.rows)} pair(s): {counts.get('ok', 0)} registered, "
        f"{counts.get('done', 0)} finished earlier, {counts.get('failed', 0)} failed; "
        f"summary: {summary.summary_csv}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0
