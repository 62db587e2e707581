"""`localmodel validate FILE...`: check LocalModel and docker-agent files without touching an engine."""

from __future__ import annotations

import argparse
import sys

INPUT_FORMS = """\
input forms:
  LocalModel documents   apiVersion: localmodel.io/v1alpha1, kind: LocalModel (several per file,
                         separated by ---, or a kind: List as printed by kubectl get -o yaml)
  docker-agent configs   models: <name>: {provider: dmr, model: ..., provider_opts: {...}} and
                         agents: <name>: {model: dmr/<ref>}; other providers are skipped with a note
  Compose files          compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml: one
                         LocalModel per entry of models: (model, context_size, runtime_flags, and
                         other LocalModel fields under x-localmodel:); ${VAR} interpolated from the
                         environment and a .env file beside it; services and the rest ignored
  directories            every *.yaml and *.yml below them, sorted; hidden and editor files and
                         Helm charts (a directory holding Chart.yaml) skipped
  Other documents (a ConfigMap, a Deployment) are skipped with a note."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check LocalModel files (no engine needed)",
        description=(
            "Validate LocalModel, docker-agent and Compose files: every field, range and combination the engine "
            "would reject or silently ignore. Problems are printed on stdout, one per line "
            "(file:line: object: field path: message); notes and the summary go to stderr."
        ),
        epilog=INPUT_FORMS
        + "\n\nexit codes:\n  0  every LocalModel is valid (warnings, on stderr, do not count without --strict)"
        + "\n  1  problems found (or a file cannot be read; with --strict: or warnings)\n  2  usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="FILE", help="files or directories to check")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (a key nobody reads, an unset Compose variable) as problems: exit 1 (for CI)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from controller.documents import load_paths

    result = load_paths(args.paths)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for error in result.errors:
        print(error)
    for warning in result.warnings:
        if args.strict:
            print(f"{warning} (a warning; --strict)")
        else:
            print(f"warning: {warning}", file=sys.stderr)
    files = len(result.files)
    problems = len(result.errors) + (len(result.warnings) if args.strict else 0)
    if problems:
        print(f"{_count(problems, 'problem')} found in {_count(files, 'file')}", file=sys.stderr)
        return 1
    print(f"{_count(len(result.models), 'LocalModel')} valid in {_count(files, 'file')}", file=sys.stderr)
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
