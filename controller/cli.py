"""The `localmodel` command line: one subcommand per module under controller/commands/.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments and returning the exit code.
Heavy imports happen inside those callables so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from controller import __version__

COMMANDS = (
    "validate",
    "render",
    "plan",
    "apply",
    "status",
    "adopt",
    "watch",
    "operator",
    "emulator",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localmodel",
        description=(
            "Declarative engine settings for Docker Model Runner. "
            "LocalModel files declare a model and its engine settings; localmodel pulls the model, "
            "applies the settings with _configure, verifies what the engine reports, and re-applies on drift."
        ),
    )
    parser.add_argument("--version", action="version", version=f"localmodel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"controller.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
