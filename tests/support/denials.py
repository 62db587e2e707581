"""Permission errors for tests that run as root (root ignores permission bits, so `chmod 000` proves
nothing): os.stat, os.lstat, os.scandir and os.open raise EACCES for chosen paths and everything below
them, which is what the kernel answers a non-root process.

    with denied(root / "sub"):                 # fixed paths for a block
        ...
    denials = Denials()                        # paths that change while it is installed
    with denials.installed():
        denials.paths.add(root / "a.yaml")
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CALLS = ("stat", "lstat", "scandir", "open")


class Denials:
    """os.<call> for each of `calls` raises EACCES on the denied paths and below them."""

    def __init__(self, paths: Iterable[Path] = (), calls: tuple[str, ...] = CALLS) -> None:
        self.paths: set[Path] = {Path(p) for p in paths}
        self.calls = calls

    def hit(self, target: Any) -> bool:
        if isinstance(target, int) or not self.paths:
            return False
        candidate = Path(os.fsdecode(target))
        return any(candidate == p or candidate.is_relative_to(p) for p in self.paths)

    @contextmanager
    def installed(self) -> Iterator[None]:
        real = {name: getattr(os, name) for name in self.calls}

        def wrap(name: str) -> Callable[..., Any]:
            def call(target: Any = ".", *args: Any, **kwargs: Any) -> Any:
                if self.hit(target):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(target))
                return real[name](target, *args, **kwargs)

            return call

        for name in real:
            setattr(os, name, wrap(name))
        try:
            yield
        finally:
            for name, function in real.items():
                setattr(os, name, function)


@contextmanager
def denied(*paths: Path, calls: tuple[str, ...] = CALLS) -> Iterator[None]:
    """os.<call> on each of `paths` (and below them) raises EACCES, as for a non-root user."""
    with Denials(paths, calls).installed():
        yield
