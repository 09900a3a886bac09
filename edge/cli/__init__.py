"""The thin CLI: each subcommand is a module with ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

Every subcommand is also a Python call with the same name and arguments; these modules only parse
and print. User errors (``EdgeError``) print one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings

from edge.errors import EdgeError

SUBCOMMANDS = ("models", "export", "verify", "bench", "parse", "devices", "claims", "report", "check")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Mobile vision networks from PyTorch to phones.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and library warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"edge.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"edge.cli.{name}":
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _quiet_libraries() -> None:
    """Converters print pages of warnings; users see them with --debug."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("coremltools", "torch", "onnxscript", "absl", "tensorflow", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if not debug:
        _quiet_libraries()
    try:
        return int(args._run(args) or 0)
    except EdgeError as e:
        if debug:
            traceback.print_exc()
        print(f"edge {args.command}: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"edge {args.command}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141


def main_export() -> int:
    return main(["export", *sys.argv[1:]])


def main_bench() -> int:
    return main(["bench", *sys.argv[1:]])


def _entry(fn) -> None:  # pragma: no cover - console-script shim
    sys.exit(fn())


def edge_entry() -> None:
    _entry(main)


def export_entry() -> None:
    _entry(main_export)


def bench_entry() -> None:
    _entry(main_bench)
