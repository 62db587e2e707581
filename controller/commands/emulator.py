"""`localmodel emulator`: serve a Docker Model Runner emulator for tests, CI and trying localmodel out."""

from __future__ import annotations

import argparse
import os

from controller.commands import ENGINE_VERSIONS

DESCRIPTION = """\
Serve an emulated Docker Model Runner engine over HTTP: pulls (from a built-in catalog, no network),
_configure with DMR's validation and status codes, the read-back views, runners with keep-alive
eviction, and canned inference answers. Point localmodel (or any DMR client) at the printed URL.
A control API under /_emulator/ (restart, busy, loading, fail-next-pull, latency, conflicts,
advance, state) lets tests provoke what a real engine does rarely.
"""

EPILOG = """\
examples:
  localmodel emulator
  localmodel emulator --port 0 --preload-models ai/smollm2,ai/qwen3:0.6B-F16
  localmodel emulator --catalog my-models.yaml --load-seconds 2
  localmodel emulator --engine-version 1.0    # behave as model-runner v1.0.10 (no keep_alive, no /version)
  curl -s http://127.0.0.1:12434/engines/status

The first line printed is "emulator listening on URL". SIGINT or SIGTERM stops it.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="serve an emulated Docker Model Runner engine",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=port_number,
        default=12434,
        help="port to listen on, 0 to 65535; 0 picks a free one (default: 12434)",
    )
    parser.add_argument(
        "--load-seconds",
        type=seconds,
        default=0.05,
        metavar="S",
        help="how long a runner takes to load (default: 0.05)",
    )
    parser.add_argument(
        "--pull-seconds",
        type=seconds,
        default=0.0,
        metavar="S",
        help="how long a pull's progress stream takes (default: 0)",
    )
    parser.add_argument(
        "--preload-models",
        default="",
        metavar="REFS",
        help="comma-separated references to have in the store at start, e.g. ai/smollm2,ai/llama3.2",
    )
    parser.add_argument(
        "--catalog",
        metavar="FILE",
        help="JSON or YAML list of extra pullable models ({name, tags, format, context_size, size_bytes, ...})",
    )
    parser.add_argument(
        "--engine-version",
        choices=ENGINE_VERSIONS,
        default=ENGINE_VERSIONS[0],
        help="the model-runner release to emulate: 1.2 (v1.2.9, the default) or 1.0 (v1.0.10: no /version, "
        "keep_alive dropped, no runtime-flag allowlist, no background load after a configure; "
        "docs/compatibility.md lists every difference)",
    )
    parser.add_argument(
        "--origins",
        default=os.environ.get("DMR_ORIGINS", ""),
        metavar="LIST",
        help="comma-separated extra CORS origins (default: $DMR_ORIGINS); http(s)://localhost, 127.0.0.1 "
        "and 0.0.0.0 without a port are always allowed, any other Origin gets 403",
    )
    parser.set_defaults(func=run)


def seconds(text: str) -> float:
    """A duration for argparse: a finite number of seconds from 0 to 3600 (`inf` and `nan` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:  # NaN fails every comparison
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds from 0 to 3600")
    return value


def port_number(text: str) -> int:
    """A TCP port for argparse: an integer from 0 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys

    from controller.emulator import Catalog, EmulatorState, load_artifacts, serve
    from controller.emulator.catalog import DEFAULT_ARTIFACTS
    from controller.emulator.state import EMULATED_RELEASES

    try:
        extra = load_artifacts(args.catalog) if args.catalog else []
        state = EmulatorState(
            catalog=Catalog([*DEFAULT_ARTIFACTS, *extra]),
            preload_models=[ref.strip() for ref in args.preload_models.split(",") if ref.strip()],
            load_seconds=args.load_seconds,
            pull_seconds=args.pull_seconds,
            allowed_origins=args.origins.split(","),
            release=EMULATED_RELEASES[args.engine_version],
        )
    except (OSError, ValueError) as exc:
        print(f"localmodel emulator: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            runner, url = await serve(args.host, args.port, state)
        except OSError as exc:
            print(f"localmodel emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        print(f"emulator listening on {url}", flush=True)
        await stop.wait()
        await runner.cleanup()
        return 0

    return asyncio.run(main())
