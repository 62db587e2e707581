"""`localmodel watch DIR`: the file-watch daemon."""

from __future__ import annotations

import argparse

from controller.standalone.defaults import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL, DEFAULT_WATCH_PERIOD

DESCRIPTION = """\
Keep every LocalModel in DIR applied to a Docker Model Runner engine, forever.

DIR is watched recursively for *.yaml and *.yml files (LocalModel documents and docker-agent
configurations). On every change, and on a drift pass every --interval seconds, the engine is
observed once (GET /models, /engines/_configure, /engines/ps) and each model that differs is
pulled, configured, verified by reading back and, with preload: true, loaded.

Between passes, the engine watch looks at the engine's stored configs every --watch-period seconds
(one GET /engines/_configure, shared by every model): an engine restart, a declared config unloaded
or overwritten by another client is repaired at once, for just the models it touched (configured in
parallel, then preloaded where declared). A runner busy with a request is never cut: its config is
applied once the request ends.

A broken file (YAML error, invalid spec, a name declared twice) is reported with its file and line
and removes nothing: the last good version of its models stays applied. A LocalModel that is gone
from the files is handled per its deletionPolicy (Unload, Delete or Retain) once a second read has
confirmed it is gone (editors' temp files and renames cause no deletes). A directory that cannot
be read (DIR unmounted or removed for a re-clone, permission denied) is logged as a file error and
deletes nothing below it until it can be read again.
"""

EPILOG = """\
examples:
  localmodel watch examples --emulator                  # try it: an embedded DMR emulator, no Docker needed
  localmodel watch ~/localmodels                        # the engine is discovered (MODEL_RUNNER_HOST,
                                                        #   docker model status, 127.0.0.1:12434)
  localmodel watch ~/localmodels --engine http://127.0.0.1:12434 --status-addr 127.0.0.1:9464
  curl -s 127.0.0.1:9464/status                         # every model's conditions and detail (JSON)
  localmodel status --daemon 127.0.0.1:9464             # the same, as a table

endpoints (with --status-addr):
  GET /status    engine, every LocalModel's conditions, per-engine detail and source file, file errors
  GET /metrics   Prometheus: localmodel_reconciles_total{result}, localmodel_reconcile_errors_total{reason},
                 localmodel_reconcile_duration_seconds, localmodel_engine_up, localmodel_models(_ready),
                 localmodel_file_errors, localmodel_engine_requests_total
  GET /healthz   200 while the reconcile loop runs

Logs go to stderr, one line per event (applied, pulled, drift repaired, stalled, file error, engine
down/up, file watcher failed and restarted): text on a terminal, JSON lines otherwise (--log-format).
A failed file watcher (e.g. the inotify watch limit) is restarted after a growing delay; until then,
changes are picked up on the drift pass. SIGINT or SIGTERM stops it within a second; a restart
re-derives everything from the files and the engine.

exit codes:
  0  stopped by SIGINT or SIGTERM
  1  the status address cannot be served (e.g. in use) or the loop failed: worth a restart
  2  usage error (a bad argument or engine URL): a restart would not help
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="keep a directory of LocalModel files applied (the daemon)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="directory to watch (recursively)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--engine", metavar="URL", help="engine root URL, e.g. http://127.0.0.1:12434 (default: discovered)"
    )
    where.add_argument(
        "--emulator",
        action="store_true",
        help="start the built-in DMR emulator in this process and use it (for trying localmodel out)",
    )
    parser.add_argument(
        "--interval",
        type=_positive,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"drift pass: how often the engine is re-checked (default: {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--watch-period",
        type=_not_negative,
        default=DEFAULT_WATCH_PERIOD,
        metavar="SECONDS",
        help="engine watch: how often the engine's stored configs are looked at, to repair a restart, an "
        f"unload or an overwrite at once; 0 turns it off (drift passes only) (default: {DEFAULT_WATCH_PERIOD:g})",
    )
    parser.add_argument(
        "--status-addr",
        metavar="HOST:PORT",
        help="serve /status, /metrics and /healthz here, e.g. 127.0.0.1:9464 (default: off)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"models reconciled at the same time (default: {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="log line format (default: text on a terminal, json otherwise)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("must be 0 (off) or more seconds")
    return value


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys
    from pathlib import Path

    from controller.logs import setup_logging
    from controller.standalone.run import run_daemon
    from controller.standalone.server import parse_addr

    root = Path(args.directory)
    if not root.is_dir():
        print(
            f"localmodel watch: {root} is not a directory (give the directory that holds your LocalModel files)",
            file=sys.stderr,
        )
        return 2
    try:
        status_addr = parse_addr(args.status_addr) if args.status_addr else None
    except ValueError as exc:
        print(f"localmodel watch: --status-addr: {exc}", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("localmodel watch: --concurrency must be at least 1", file=sys.stderr)
        return 2
    setup_logging(args.log_format, level=logging.DEBUG if args.verbose else logging.INFO)
    return asyncio.run(
        run_daemon(
            root,
            engine=args.engine,
            emulator=args.emulator,
            interval=args.interval,
            status_addr=status_addr,
            concurrency=args.concurrency,
            watch_period=args.watch_period or None,
        )
    )
