"""`localmodel adopt`: write one LocalModel file per config the engine holds now."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Turn what the engine holds into LocalModel files: one file per stored config (GET /engines/_configure:
one per model, backend and mode), every setting carried over (contextSize, runtimeFlags, keepAlive,
thinkingBudget, speculative, vllm; backend and mode where the engine would not choose them by itself).
Settings tuned by hand with `docker model configure`, by Compose or by docker-agent become files that
localmodel keeps applied; `localmodel plan` on them reports nothing to change.

Each file is named from the model (ai/qwen3:14B -> qwen3-14b.yaml; a mode other than completion is added:
embeddinggemma-embedding.yaml). Existing files are never overwritten without --force: if one exists, no
file is written at all.
"""

EPILOG = """\
examples:
  localmodel adopt --output models/                  # the discovered engine
  localmodel adopt --engine http://127.0.0.1:12434 --output models/ --force
  localmodel adopt --output -                        # all documents on stdout, nothing written
  localmodel adopt --output models/ && localmodel plan models/ --exit-code

exit codes:
  0  files written (or nothing stored on the engine)
  1  the engine is unreachable or answered with an error, a file cannot be written, or a config cannot
     be expressed as a LocalModel (the others are still written)
  2  usage error
  3  a file to write already exists: nothing written (use --force to overwrite)
"""

EXIT_EXISTS = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "adopt",
        help="write LocalModel files for what the engine holds now",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine", metavar="URL", help="engine root URL (default: discovered)")
    parser.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        default=".",
        help="directory for the files, created if missing (default: the current directory); - prints them",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that already exist")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from pathlib import Path

    from controller.adopt import Adopted, Refused, adopt_configs
    from controller.engine.errors import EngineError
    from controller.standalone.connect import connect

    async def observe() -> tuple[str, list[Adopted | Refused]]:
        async with connect(args.engine, quiet=True) as client:
            configs, models = await asyncio.gather(client.stored_configs(), client.list_models())
            return client.endpoint.shown, adopt_configs(configs, models)

    try:
        url, results = asyncio.run(observe())
    except ValueError as exc:
        print(f"localmodel adopt: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"localmodel adopt: {exc}", file=sys.stderr)
        return 1
    url = _redacted(url)
    adopted = [r for r in results if isinstance(r, Adopted)]
    refused = [r for r in results if isinstance(r, Refused)]
    for refusal in refused:
        held = refusal.entry
        print(
            f"localmodel adopt: cannot adopt {held.model or held.model_id} ({held.backend}, {held.mode}): "
            f"{refusal.reason}",
            file=sys.stderr,
        )
    if not results:
        print(f"localmodel adopt: the engine at {url} holds no stored config; nothing to adopt", file=sys.stderr)
        return 0
    if args.output == "-":
        sys.stdout.write("---\n".join(render_file(item, url) for item in adopted))
        return 1 if refused else 0

    directory = Path(args.output)
    targets = [(item, directory / f"{item.name}.yaml") for item in adopted]
    existing = [path for _, path in targets if path.exists() or path.is_symlink()]
    if existing and not args.force:
        for path in existing:
            print(
                f"localmodel adopt: {path} already exists; not overwritten (use --force to overwrite)", file=sys.stderr
            )
        print(f"localmodel adopt: nothing written ({len(existing)} of {len(targets)} files exist)", file=sys.stderr)
        return EXIT_EXISTS
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for item, path in targets:
            write_file(path, render_file(item, url), overwrite=args.force)
            entry = item.entry
            print(f"{path}: {item.name} ({entry.model or entry.model_id}, {entry.backend}, {entry.mode})")
            for note in item.notes:
                print(f"note: {path}: {note}", file=sys.stderr)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"localmodel adopt: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{len(targets)} LocalModel file(s) written to {directory} from {url}", file=sys.stderr)
    return 1 if refused else 0


def render_file(item: object, url: str) -> str:
    """The YAML text of one adopted LocalModel, with a comment saying where it came from."""
    import yaml

    from controller.adopt import Adopted

    assert isinstance(item, Adopted)
    entry = item.entry
    lines = [
        f"# Adopted by `localmodel adopt` from the engine at {url}: the config it held for",
        f"# {entry.model or entry.model_id} (backend {entry.backend}, mode {entry.mode}).",
        *(f"# note: {note}" for note in item.notes),
    ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(item.document, sort_keys=False, allow_unicode=True)


def write_file(path: object, text: str, *, overwrite: bool) -> None:
    """Write `text` to `path`: atomically (a temporary file renamed) with `overwrite`, else only if absent."""
    import os
    import tempfile
    from pathlib import Path

    target = Path(str(path))
    if not overwrite:
        with target.open("x", encoding="utf-8") as handle:
            handle.write(text)
        return
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _redacted(url: str) -> str:
    """The URL without a password (`http://user:secret@host` -> `http://user:***@host`)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
