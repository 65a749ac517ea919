"""`ctreg` command line.  ``main(argv) -> int`` is testable without a subprocess.

Each subcommand has an ``_add_<name>(subparsers)`` that declares its arguments and a
``_cmd_<name>(args) -> int`` that runs it.  Progress and errors go to stderr; results to stdout.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import CTRegError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctreg", description="Register two chest CT scans of one patient.")
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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="ctreg: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except CTRegError as exc:
        print(f"ctreg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ctreg {args.command}: interrupted", file=sys.stderr)
        return 130


# -- ctreg register -------------------------------------------------------------------------------
def _add_register(sub) -> None:
    p = sub.add_parser("register", help="register FLOATING onto REFERENCE and write the results",
                       description="Register the floating scan onto the reference scan. Writes "
                       "OUT_DIR/registered.nii.gz, registered.tar.gz (DICOM series), "
                       "displacement.nii.gz and report.json; OUT_DIR appears only when complete.")
    p.add_argument("reference", help="reference scan: DICOM folder, archive, or NIfTI file")
    p.add_argument("floating", help="floating scan: DICOM folder, archive, or NIfTI file")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="output folder (must not exist, or be empty)")
    p.add_argument("--preset", default="default", choices=["fast", "default", "accurate"])
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads (default: all cores)")
    p.add_argument("--name", default="registered", help="base name of the image outputs")
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM .tar.gz output")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=_cmd_register)


def _cmd_register(args) -> int:
    import json
    from pathlib import Path

    from . import set_num_threads
    from .io import read_volume
    from .io.atomic import atomic_dir
    from .pipeline import register

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CTRegError(f"output folder {out} exists and is not empty; choose a new folder")
    if args.threads is not None:
        if args.threads < 1:
            raise CTRegError(f"--threads must be a positive integer, got {args.threads}")
        set_num_threads(args.threads)
    log = logging.getLogger("ctreg")
    log.info("reading reference %s", args.reference)
    reference = read_volume(args.reference)
    log.info("reading floating %s", args.floating)
    floating = read_volume(args.floating)
    result = register(reference, floating, preset=args.preset)
    with atomic_dir(out) as tmp:
        written = result.save(tmp, name=args.name, dicom=not args.no_dicom)
    paths = {k: str(out / Path(v).name) for k, v in written.items()}
    j = result.report["jacobian"]
    log.info("wrote %s (Jacobian min %.3f, %.4f %% <= 0)", out, j.get("min", float("nan")),
             j.get("percent_nonpositive", float("nan")))
    if args.json:
        print(json.dumps({"outputs": paths, "report": result.report}, indent=2, default=str))
    else:
        for v in paths.values():
            print(v)
    return 0


_SUBCOMMANDS.append(_add_register)


# -- ctreg sample ---------------------------------------------------------------------------------
def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a sample pair (bundled real chest CT + known deformation)",
                       description="Write OUT_DIR/reference (the bundled 64x64x79 chest CT, DICOM), "
                       "OUT_DIR/floating (the same anatomy under a known breathing-like motion, DICOM) "
                       "and OUT_DIR/landmarks.csv (reference x,y,z -> floating x,y,z, LPS mm).")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
