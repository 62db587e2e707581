"""`localmodel render FILE...`: print the `_configure` requests the files ask for, without sending them."""

from __future__ import annotations

import argparse
import json
import sys

from controller.commands.validate import INPUT_FORMS
from controller.wire import BACKENDS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the _configure requests as JSON",
        description=(
            "Render each LocalModel into the exact _configure request localmodel would send: "
            'a JSON array of {"name", "backend", "path", "body", "notes"} on stdout. Options that do not '
            "apply to the backend are left out and listed in notes."
        ),
        epilog=INPUT_FORMS
        + "\n\nexit codes:\n  0  rendered\n  1  invalid input (errors on stderr, nothing on stdout)\n  2  usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="FILE", help="files or directories to render")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help=(
            "the backend the engine selects for these models (from their format: vllm for safetensors); "
            "a LocalModel's own spec.backend wins. Default: the default route, or vllm when vllm options are set"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from controller.commands import load_or_report
    from controller.desired import RenderError, render_all

    result = load_or_report(args.paths)
    if result is None:
        return 1
    try:
        rendered = render_all(result.models, args.backend)
    except RenderError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(rendered, indent=2))
    return 0
