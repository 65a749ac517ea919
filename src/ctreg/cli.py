"""`ctreg` command line.  ``main(argv) -> int`` is testable without a subprocess.

Each subcommand has an ``_add_<name>(subparsers)`` that declares its arguments and a
``_cmd_<name>(args) -> int`` that runs it.  Progress and errors go to stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._version import __version__
from .cli_reuse import (
    add_apply,
    add_mask_options,
    add_register_options,
    read_mask_files,
    save_result_folder,
)
from .errors import CTRegError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctreg", description="Register two chest CT scans of one patient."
    )
    p.add_argument("--version", action="version", version=f"ctreg {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return p


_SUBCOMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="ctreg: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except CTRegError as exc:
        print(f"ctreg {args.command}: error: {exc} [{exc.code}]", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ctreg {args.command}: interrupted", file=sys.stderr)
        return 130


# -- ctreg register -------------------------------------------------------------------------------
def _add_register(sub) -> None:
    p = sub.add_parser(
        "register",
        help="register FLOATING onto REFERENCE and write the results",
        description="Register the floating scan onto the reference scan. Writes "
        "OUT_DIR/registered.nii.gz, registered.tar.gz (DICOM series), "
        "displacement.nii.gz, transform.h5 (ITK), report.json, report.html "
        "(quality report) and result.json; "
        "OUT_DIR appears only when complete.",
    )
    p.add_argument("reference", help="reference scan: DICOM folder, archive, or NIfTI file")
    p.add_argument("floating", help="floating scan: DICOM folder, archive, or NIfTI file")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="OUT_DIR",
        help="output folder (must not exist, or be empty); optional with --save-result",
    )
    p.add_argument("--preset", default="default", choices=["fast", "default", "accurate"])
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="threads (default: all cores)"
    )
    p.add_argument("--name", default="registered", help="base name of the image outputs")
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM .tar.gz output")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument(
        "--profile",
        action="store_true",
        help="print wall seconds and peak memory per phase (read, masks, affine, "
        "bspline, demons, resample, write) on stderr",
    )
    add_register_options(p)  # --save-result, --no-progress (cli_reuse.py)
    add_mask_options(p)  # --reference-lungs, --floating-lungs, --*-mask, --sliding (cli_reuse.py)
    p.add_argument(
        "--no-report",
        action="store_true",
        help="skip report.html (the quality report with pictures; see docs/report.md)",
    )
    p.set_defaults(func=_cmd_register)


def _cmd_register(args) -> int:
    from .progress import ProgressBar, progress_enabled

    with ProgressBar(enabled=not args.no_progress and progress_enabled()):
        return _run_register(args)


def _run_register(args) -> int:
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from . import _timing
    from .io import read_volume
    from .io.atomic import atomic_dir
    from .ops import keep_freed_memory, no_huge_pages, set_num_threads
    from .pipeline import KEEP_FREED_MEMORY_MAX_VOXELS, register

    if args.output is None and args.save_result is None:
        raise CTRegError("give -o OUT_DIR, --save-result DIR, or both")
    out = Path(args.output) if args.output is not None else None
    for folder in (out, args.save_result):
        if (
            folder is not None
            and Path(folder).exists()
            and (not Path(folder).is_dir() or any(Path(folder).iterdir()))
        ):
            raise CTRegError(f"output folder {folder} exists and is not empty; choose a new folder")
    if args.threads is not None:
        if args.threads < 1:
            raise CTRegError(f"--threads must be a positive integer, got {args.threads}")
        set_num_threads(args.threads)
    log = logging.getLogger("ctreg")
    t0 = time.perf_counter()
    log.info("reading reference %s", args.reference)
    reference = read_volume(args.reference)
    log.info("reading floating %s", args.floating)
    floating = read_volume(args.floating)
    masks = read_mask_files(args, reference, floating)
    t_read, read_memory = time.perf_counter() - t0, _timing.snapshot()
    if reference.array.size + floating.array.size <= KEEP_FREED_MEMORY_MAX_VOXELS:
        keep_freed_memory()  # process-wide malloc setting: the CLI owns its process
    thp_off = no_huge_pages()  # for register() only (ops.runtime): the CLI owns its process
    extra = {} if args.sliding is None else {"sliding": args.sliding}
    result = register(reference, floating, preset=args.preset, **masks, **extra)
    if thp_off:
        no_huge_pages(False)  # writing was faster with huge pages (docs/performance.md)
    _timing.record(result.report, "read", t_read, read_memory)
    log.info("writing outputs")
    paths = {}
    if out is not None:
        with atomic_dir(out) as tmp, ThreadPoolExecutor(1, "ctreg-report") as pool:
            # report.html's pictures and similarity figures are made while the other outputs are
            # written (they only read the result); a failed report is a warning, not a failed run.
            # What they need of the floating scan is taken first, and the scan is let go: its
            # voxels are freed before the outputs are written (the run's memory peak).
            from .report_html import before_parts_kept, report_for_run, report_parts

            parts = None
            if not args.no_report:
                before = before_parts_kept(result)
                parts = pool.submit(lambda: report_parts(result, before.result()))
            result.release_floating()
            del floating, masks
            written = result.save(tmp, name=args.name, dicom=not args.no_dicom)
            if parts is not None:
                written.update(report_for_run(result, tmp / "report.html", parts))
        paths = {k: str(out / Path(v).name) for k, v in written.items()}
    if args.save_result is not None:
        paths["result"] = str(save_result_folder(result, args.save_result))
    j = result.report["jacobian"]
    log.info(
        "wrote %s (Jacobian min %.3f, %.4f %% <= 0)",
        out or args.save_result,
        j.get("min", float("nan")),
        j.get("percent_nonpositive", float("nan")),
    )
    if args.profile:
        print(
            _timing.format_profile(result.report, wall_s=_timing.process_age_s()), file=sys.stderr
        )
    if args.json:
        print(json.dumps({"outputs": paths, "report": result.report}, indent=2, default=str))
    else:
        for v in paths.values():
            print(v)
    return 0


_SUBCOMMANDS.append(_add_register)
_SUBCOMMANDS.append(add_apply)  # ctreg apply RESULT_DIR IMAGE -o OUT [--labels] (cli_reuse.py)


# -- ctreg sample ---------------------------------------------------------------------------------
def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="write a sample pair (bundled real chest CT + known deformation)",
        description="Write OUT_DIR/reference (the bundled 64x64x79 chest CT, DICOM), "
        "OUT_DIR/floating (the same anatomy under a known breathing-like motion, DICOM) "
        "and OUT_DIR/landmarks.csv (reference x,y,z -> floating x,y,z, LPS mm).",
    )
    p.add_argument("output", metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args) -> int:
    from .samples import write_sample_pair

    written = write_sample_pair(args.output, seed=args.seed)
    for v in written.values():
        print(v)
    return 0


_SUBCOMMANDS.append(_add_sample)


# -- ctreg serve ----------------------------------------------------------------------------------
def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the local RunCTRegistration HTTP service",
        description="Serve the RunCTRegistration API (Action=RunCTRegistration, "
        "Action=GetAsyncJobResult) with jobs kept in DATA_DIR/jobs.sqlite3; jobs "
        "run in local processes or, with --dask-scheduler, on a Dask cluster. "
        "Stop with Ctrl-C or SIGTERM (running jobs are re-queued).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--data-dir",
        default="ctreg-service",
        metavar="DIR",
        help="job database, downloads and results (default ./ctreg-service)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="jobs run at once (default 1; with Dask: the cluster's threads)",
    )
    p.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run jobs on this Dask scheduler (e.g. tcp://host:8786); workers must see "
        "DATA_DIR at the same path",
    )
    p.add_argument(
        "--allow-file-urls",
        action="store_true",
        help="accept file:// input URLs (only for a trusted local setup)",
    )
    p.add_argument(
        "--result-ttl-s",
        type=float,
        default=24 * 3600.0,
        metavar="S",
        help="remove results this long after a job finished (default 86400)",
    )
    p.add_argument(
        "--job-timeout-s",
        type=float,
        default=3600.0,
        metavar="S",
        help="an attempt running longer ends TIMEOUT_FAILED (default 3600)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="runs of a job interrupted by crashes before it fails (default 3)",
    )
    p.add_argument(
        "--download-timeout-s",
        type=float,
        default=60.0,
        metavar="S",
        help="timeout of each connection/read while fetching inputs (default 60)",
    )
    p.add_argument(
        "--max-download-mb",
        type=float,
        default=4096.0,
        metavar="MB",
        help="cap on the total size of one input list (default 4096)",
    )
    p.add_argument(
        "--preset",
        default="default",
        choices=["fast", "default", "accurate"],
        help="registration preset of every job (default: default)",
    )
    p.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="base URL of result links (behind a proxy); default: the request's Host",
    )
    p.add_argument(
        "--job-fn",
        default=None,
        metavar="MODULE:FUNCTION",
        help="run this function instead of ctreg.register (custom pipelines, tests)",
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    import signal

    from .service import Server, ServiceOptions
    from .service.jobs import DEFAULT_JOB_FN

    try:
        options = ServiceOptions(
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            workers=args.workers,
            dask_scheduler=args.dask_scheduler,
            allow_file_urls=args.allow_file_urls,
            result_ttl_s=args.result_ttl_s,
            job_timeout_s=args.job_timeout_s,
            max_attempts=args.max_attempts,
            download_timeout_s=args.download_timeout_s,
            max_download_bytes=max(1, int(args.max_download_mb * 1024**2)),
            preset=args.preset,
            public_url=args.public_url,
            job_fn=args.job_fn or DEFAULT_JOB_FN,
        )
    except ValueError as exc:
        raise CTRegError(f"invalid serve option: {exc}") from None

    def _terminate(signum, frame):  # SIGTERM: stop like Ctrl-C (jobs re-queued)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    server = Server(options).start()  # logs "serving on URL ..."; DATA_DIR/server.json has the URL
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the normal way to stop; jobs were re-queued
        logging.getLogger("ctreg").info("stopped")
    return 0


_SUBCOMMANDS.append(_add_serve)


# -- ctreg batch (ctreg/batch.py) -----------------------------------------------------------------
def _add_batch(sub) -> None:
    from .batch import add_batch_parser

    add_batch_parser(sub)


_SUBCOMMANDS.append(_add_batch)


# -- ctreg inspect --------------------------------------------------------------------------------
def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a DICOM folder/archive or image file holds and "
        "whether it passes the input rules",
        description="Read PATH (DICOM folder, .zip/.tar/.tar.gz archive, DICOM file, "
        ".nii/.nii.gz, or .nrrd/.mha with SimpleITK) and print the series found, frames, "
        "size, spacing, orientation, HU range, transfer syntax, padding fraction and the "
        "verdict against the service's input rules. Exit status 0 when valid, 1 otherwise.",
    )
    p.add_argument("path", nargs="?", help="what to inspect")
    p.add_argument(
        "--sample", action="store_true", help="inspect the bundled 64x64x79 chest CT series"
    )
    p.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="the series to check when PATH holds several",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=_cmd_inspect)


def _inspect_report(path, series_uid):
    from pathlib import Path

    from .io import read_volume
    from .io.dicom import describe_volume, inspect_dicom

    name = str(path).lower()
    if (
        name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"))
        and Path(path).is_file()
    ):
        report = {
            "source": str(path),
            "format": None,
            "series": [],
            "valid": False,
            "error": None,
            "error_code": None,
            "volume": None,
        }
        try:
            vol = read_volume(path)
        except CTRegError as exc:
            report["error"], report["error_code"] = str(exc), exc.code
            return report
        report.update(
            valid=True,
            format=vol.meta.get("format"),
            volume=describe_volume(vol),
            note="the DICOM input rules apply to DICOM input only",
        )
        return report
    return inspect_dicom(path, series_uid=series_uid)


def _print_inspect(report) -> None:
    out = sys.stdout
    print(f"source: {report['source']}", file=out)
    series = report.get("series") or []
    if series:
        print(f"series found: {len(series)}", file=out)
        for s in series:
            print(
                f"  {s['series_uid'] or '(empty SeriesInstanceUID)'}: {s['description']!r}, "
                f"modality {s['modality'] or '?'}, {s['n_frames']} frame(s) in {s['n_files']} "
                "file(s)",
                file=out,
            )
    v = report.get("volume")
    if v:
        sx, sy, sz = v["size_xyz"]
        spz, spy, spx = v["spacing_zyx_mm"]
        print(f"size (x, y, z): {sx} x {sy} x {sz} voxels", file=out)
        print(f"spacing (x, y, z): {spx:.4g} x {spy:.4g} x {spz:.4g} mm", file=out)
        print(
            "origin (x, y, z): ({:.2f}, {:.2f}, {:.2f}) mm LPS".format(*v["origin_xyz_mm"]),
            file=out,
        )
        print(
            f"orientation: {v['orientation']} (slice normal "
            f"{v['slice_normal_angle_from_z_deg']:.1f} degrees from z)",
            file=out,
        )
        if v["hu_min"] is not None:
            print(f"HU range: {v['hu_min']:.0f} to {v['hu_max']:.0f}", file=out)
        if v.get("transfer_syntax"):
            print(
                f"transfer syntax: {v['transfer_syntax_name']} ({v['transfer_syntax']})", file=out
            )
        print(
            f"padding: {100 * v['padding_fraction']:.2f} % of voxels outside the field of view",
            file=out,
        )
    if report["valid"]:
        verdict = (
            "VALID: passes the service's input rules"
            if report["format"] == "dicom"
            else f"READABLE ({report.get('note', '')})"
        )
        print(f"verdict: {verdict}", file=out)
    else:
        print(f"verdict: INVALID: {report['error']}", file=out)


def _cmd_inspect(args) -> int:
    import json

    if args.sample:
        if args.path:
            raise CTRegError("give either PATH or --sample, not both")
        from .samples import ct64_dicom_path

        path = ct64_dicom_path()
    elif args.path:
        path = args.path
    else:
        print("ctreg inspect: error: give PATH or --sample", file=sys.stderr)
        return 2
    report = _inspect_report(path, args.series_uid)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_inspect(report)
    if not report["valid"]:
        print(f"ctreg inspect: error: {report['error']}", file=sys.stderr)
        return 1
    return 0


_SUBCOMMANDS.append(_add_inspect)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
