"""One module per `localmodel` subcommand; each exposes `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.documents import LoadResult

# The keys of controller.emulator.state.EMULATED_RELEASES (not imported here: --help stays fast).
ENGINE_VERSIONS = ("1.2", "1.0")


def add_engine_options(parser: argparse.ArgumentParser, *, engine_help: str, emulator_help: str) -> None:
    """`--engine URL` or `--emulator` (not both), and `--emulator-version`, for a command that talks to one engine."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--engine", metavar="URL", help=engine_help)
    where.add_argument("--emulator", action="store_true", help=emulator_help)
    parser.add_argument(
        "--emulator-version",
        choices=ENGINE_VERSIONS,
        default=ENGINE_VERSIONS[0],
        help="with --emulator: the model-runner release it emulates (default 1.2; 1.0 is v1.0.10, which "
        "cannot keep keepAlive: see docs/compatibility.md)",
    )


def load_or_report(paths: Sequence[str]) -> LoadResult | None:
    """Load LocalModel files for a command that sends or renders them: notes and errors go to stderr,
    and any error means None (nothing is sent for a partly broken input)."""
    from controller.documents import load_paths

    result = load_paths(paths)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(error, file=sys.stderr)
    return None if result.errors else result
