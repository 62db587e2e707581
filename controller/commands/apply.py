"""`localmodel apply FILE...`: reconcile LocalModel files against an engine once (or until Ready)."""

from __future__ import annotations

import argparse

from controller.commands import add_engine_options
from controller.commands.validate import INPUT_FORMS

DESCRIPTION = """\
Apply LocalModel files to a Docker Model Runner engine: pull each model (per pullPolicy), send its
_configure request to the backend that serves it, verify by reading the config back, and preload it
when preload: true. One reconcile pass; with --wait, keep retrying (busy runners, an engine that is
restarting) until every model is Ready.

Nothing is sent when a file is invalid. Pull progress is shown on stderr: an updating line per model
on a terminal, a line every few seconds otherwise. To keep the settings applied after the engine
restarts or another client changes them, run the daemon instead: localmodel watch DIR.
"""

EPILOG = (
    INPUT_FORMS
    + """

examples:
  localmodel apply examples/smollm2.yaml
  localmodel apply examples/ --wait --timeout 600
  localmodel apply my-models/ --engine http://127.0.0.1:12434 --wait
  localmodel apply examples/ --emulator --wait          # against the built-in emulator
  localmodel apply examples/ --emulator --emulator-version 1.0   # ... emulating model-runner v1.0.10

exit codes:
  0  every model is applied and verified (Ready)
  1  a model is Stalled (why is printed), the engine is unreachable, --wait timed out, a model
     is still being retried after one pass without --wait, or the input is invalid (nothing sent)
  2  usage error
"""
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="apply LocalModel files to an engine once",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="FILE", help="files or directories to apply")
    add_engine_options(
        parser,
        engine_help="engine root URL (default: discovered)",
        emulator_help="apply to a throwaway built-in emulator (checks that the files apply cleanly)",
    )
    parser.add_argument("--wait", action="store_true", help="keep reconciling until every model is Ready")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="with --wait: give up after S seconds, cancelling a pull or load still in progress (default: 300)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from controller.commands import load_or_report
    from controller.standalone.connect import connect
    from controller.standalone.oneshot import Applied, apply_models
    from controller.standalone.terminal import Progress, table

    loaded = load_or_report(args.paths)
    if loaded is None:
        print("nothing applied: fix the problems above (localmodel validate shows them too)", file=sys.stderr)
        return 1
    if not loaded.models:
        print("no LocalModels found in the given files", file=sys.stderr)
        return 1
    progress = Progress(sys.stderr)
    pulling: set[str] = set()

    def on_progress(name: str, status: object) -> None:
        pulling.add(name)
        progress.update(name, status)  # type: ignore[arg-type]

    def on_event(name: str, kind: str, reason: str, message: str) -> None:
        if name in pulling and reason == "Pulled":
            progress.done(name)
            pulling.discard(name)
        prefix = "warning: " if kind == "Warning" else ""
        progress.print(f"{prefix}{name}: {reason}: {message}")

    async def main() -> tuple[list[Applied], bool]:
        async with connect(
            args.engine, emulator=args.emulator, quiet=True, emulator_version=args.emulator_version
        ) as client:
            return await apply_models(
                client, loaded.models, wait=args.wait, timeout=args.timeout, on_event=on_event, on_progress=on_progress
            )

    try:
        results, timed_out = asyncio.run(main())
    except ValueError as exc:
        print(f"localmodel apply: {exc}", file=sys.stderr)
        return 2
    for name in sorted(pulling):  # a pull cut short by --timeout: leave its last progress line on screen
        progress.done(name)
    rows = [[r.name, r.status.phase.value, r.status.reason.value, r.status.message] for r in results]
    print(table(["NAME", "PHASE", "REASON", "MESSAGE"], rows))
    failed = [r for r in results if not r.status.ready]
    if not failed:
        return 0
    for r in failed:
        why = "stalled until the spec changes" if r.status.stalled else "not ready"
        if r.status.reason.value == "EngineUnsupported":
            why = "stalled until the spec changes or the engine is upgraded"
        print(f"{r.name}: {why}: {r.status.reason.value}: {r.status.message}", file=sys.stderr)
    if timed_out:
        print(f"timed out after {args.timeout:g}s", file=sys.stderr)
    elif not args.wait and not any(r.status.stalled for r in failed):
        print("run again, or add --wait to keep retrying", file=sys.stderr)
    return 1
