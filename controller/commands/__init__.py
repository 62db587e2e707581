"""One module per `localmodel` subcommand; each exposes `register(subparsers)`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.documents import LoadResult


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
