"""`localmodel status`: a table of what a daemon reports, or of what an engine holds."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Show LocalModels and engine settings as a table: model, backend, context size, keep-alive, loaded,
ready, message.

With --daemon HOST:PORT, the table comes from a running `localmodel watch` (its GET /status): every
LocalModel in its directory with its Ready condition, and file errors. Otherwise it comes straight
from the engine (--engine URL, or the discovered one): every stored config (GET /engines/_configure),
loaded runner (GET /engines/ps) and pulled model (GET /models), whether or not a LocalModel declares it.

Both end with the engine's release as localmodel detected it (GET /version, or a probe on releases
before v1.0.30) and the features it lacks, e.g. keepAlive before v1.0.15 (docs/compatibility.md).
"""

EPILOG = """\
examples:
  localmodel status --daemon 127.0.0.1:9464
  localmodel status                                  # the discovered engine
  localmodel status --engine http://127.0.0.1:12434 --output json

exit codes:
  0  shown (from a daemon: every LocalModel is Ready)
  1  the daemon or engine is unreachable, or (from a daemon) a LocalModel is not Ready or a file has errors
  2  usage error
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show models and their engine settings",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--engine", metavar="URL", help="read the engine at URL (default: discovered)")
    source.add_argument(
        "--daemon", metavar="HOST:PORT", help="read a running `localmodel watch --status-addr HOST:PORT`"
    )
    parser.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from controller.standalone.status_view import show_daemon, show_engine

    if args.daemon:
        return show_daemon(args.daemon, args.output, sys.stdout, sys.stderr)
    return show_engine(args.engine, args.output, sys.stdout, sys.stderr)
