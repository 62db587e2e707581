"""`localmodel watch DIR`: the file-watch daemon."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from controller.commands import add_engine_options
from controller.inputs import MAX_FILE_BYTES
from controller.standalone.defaults import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DELETION_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_WATCH_PERIOD,
)

N = TypeVar("N", int, float)

DESCRIPTION = """\
Keep every LocalModel in DIR applied to a Docker Model Runner engine, forever.

DIR is watched recursively for *.yaml and *.yml files (LocalModel documents and docker-agent
configurations). On every change, and on a drift pass every --interval seconds, the engine is
observed once (GET /models, /engines/_configure, /engines/ps) and each model that differs is
pulled, configured, verified by reading back and, with preload: true, loaded.

Between passes, the engine watch sends one request every --watch-period seconds, shared by every
model: the stored configs (GET /engines/_configure), or, when listing them costs the engine too much,
a constant-size probe of its runners (GET /engines/ps) that still tells a restart. An engine restart,
a declared config unloaded or overwritten by another client is repaired at once, for just the models
it touched (configured in parallel, then preloaded where declared). A runner busy with a request is
never cut: its config is applied once the request ends. See docs/engine-watch.md.

A LocalModel is removed only on positive evidence: its file is gone (absent from a directory that
could be read) or no longer declares it, and that has held for --deletion-grace seconds (default
30: a re-clone, an editor's truncate-then-write or a rename deletes nothing); then its
deletionPolicy (Unload, Delete or Retain) runs. Meanwhile /status shows it as "pending removal in
N s". Any error keeps what was last read and is reported with its file and line: a YAML error, an
invalid spec, a name declared twice, a file or directory that cannot be read (permission denied,
DIR unmounted or removed, too many open files), a file that now declares no LocalModel at all (an
emptied file, `modles:` for `models:`; remove the file to remove its models).

Only regular files of at most --max-file-size bytes are read (links resolved; a FIFO, a device or
a link loop is a file error); YAML aliases, nesting and integer sizes are bounded, and YAML 1.1
number forms (2:16:32, 0x2000, 8_192, 010) are errors that say what to write. Files are read off
the event loop: /healthz and signals answer whatever a file holds.
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
                 and savedStatus (the state file, its writes and last error)
  GET /metrics   Prometheus: localmodel_reconciles_total{result}, localmodel_reconcile_errors_total{reason},
                 localmodel_reconcile_duration_seconds, localmodel_engine_up, localmodel_models(_ready),
                 localmodel_file_errors, localmodel_engine_requests_total
  GET /healthz   200 while the reconcile loop runs
  A client has 10 s to send its request; at most 256 connections are open at once (the oldest that
  sent nothing is closed first), so clients that never finish cannot stop /healthz answering.

Logs go to stderr, one line per event (applied, pulled, drift repaired, stalled, file error, engine
down/up, file watcher failed and restarted): text on a terminal, JSON lines otherwise (--log-format).
A failed file watcher (e.g. the inotify watch limit) is restarted after a growing delay; until then,
changes are picked up on the drift pass. SIGINT or SIGTERM stops it within a second; a restart
re-derives everything from the files and the engine.

A restart keeps what it cannot re-derive, from the saved status (--state-file): each model's
lastAppliedTime, its conditions' lastTransitionTime, a DriftRepaired reason and the generation count.
The file is written (atomically) only when one of those changes, never on an idle pass; a file that
is corrupt, too large (over 4 MiB), unreadable, of another version or for another directory is
logged once and ignored. Correctness never depends on it: the engine is observed every pass.

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
    add_engine_options(
        parser,
        engine_help="engine root URL, e.g. http://127.0.0.1:12434 (default: discovered)",
        emulator_help="start the built-in DMR emulator in this process and use it (for trying localmodel out)",
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
        "--deletion-grace",
        type=_not_negative,
        default=DEFAULT_DELETION_GRACE,
        metavar="SECONDS",
        help="how long a LocalModel must stay gone from the files before its deletionPolicy runs "
        f"(default: {DEFAULT_DELETION_GRACE:g}; long enough for a re-clone)",
    )
    parser.add_argument(
        "--max-file-size",
        type=_byte_count,
        default=MAX_FILE_BYTES,
        metavar="BYTES",
        help=f"larger files are a file error, not read (default: {MAX_FILE_BYTES}, 1 MiB)",
    )
    parser.add_argument(
        "--state-file",
        metavar="PATH",
        help="where the status a restart cannot re-derive is saved (lastAppliedTime, the conditions' "
        "lastTransitionTime, the generation count); '' saves nothing (default: "
        "$STATE_DIRECTORY/status-HASH.json under systemd, else $XDG_STATE_HOME/localmodel/status-HASH.json, "
        "~/.local/state/localmodel/ when unset; HASH names DIR)",
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


def _number(text: str, convert: Callable[[str], N], unit: str) -> N:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
    if not math.isfinite(value):  # float("nan") and float("inf") parse, and would stall or spin the loops
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of {unit}")
    return value


def _positive(text: str) -> float:
    value = _number(text, float, "seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _byte_count(text: str) -> int:
    value = _number(text, int, "bytes")
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def _not_negative(text: str) -> float:
    value = _number(text, float, "seconds")
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (off) or more seconds")
    return value


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys
    from pathlib import Path

    from controller.listen import parse_addr
    from controller.logs import setup_logging
    from controller.standalone.run import run_daemon
    from controller.standalone.state import default_state_file

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
    if args.state_file is None:
        state_file: Path | None = default_state_file(root)
    else:
        state_file = Path(args.state_file).expanduser() if args.state_file else None
    return asyncio.run(
        run_daemon(
            root,
            engine=args.engine,
            emulator=args.emulator,
            emulator_version=args.emulator_version,
            interval=args.interval,
            status_addr=status_addr,
            concurrency=args.concurrency,
            watch_period=args.watch_period or None,
            deletion_grace=args.deletion_grace,
            max_file_bytes=args.max_file_size,
            state_file=state_file,
        )
    )
