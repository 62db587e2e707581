"""The pure core imports no I/O library, directly or through a package's __init__ (read from the source, not run).

Only module-level imports count: an import inside a function, or under `if TYPE_CHECKING:`, does not
run when the module is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_CORE = (
    "controller.spec",
    "controller.desired",
    "controller.plan",
    "controller.status",
    "controller.policy",
    "controller.backoff",
    "controller.fleet",
    "controller.deletion",
)
IO_MODULES = ("httpx", "aiohttp", "kopf", "kubernetes", "watchfiles", "subprocess", "socket", "prometheus_client")


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt], package: str) -> list[str]:
    names: list[str] = []
    for node in body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                names += _module_level_imports(node.body, package)
            names += _module_level_imports(node.orelse, package)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                names += _module_level_imports(block, package)
    return names


def imported_on_import(start: str) -> set[str]:
    """Every module that `import start` runs: project modules are followed, others are recorded."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            path = module_file(prefix) if parts[0] == "controller" else None
            if parts[0] == "controller" and path is None:
                continue  # `from package import name` where name is not a module
            seen.add(prefix)
            if path is not None:
                package = prefix if path.name == "__init__.py" else prefix.rpartition(".")[0]
                todo += _module_level_imports(ast.parse(path.read_text()).body, package)
    return seen


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_imports_no_io_library(module: str) -> None:
    imported = imported_on_import(module)
    assert {m for m in imported if m.split(".")[0] in IO_MODULES} == set()


def test_the_engine_package_init_imports_none_of_its_modules() -> None:
    """`from controller.engine import compare` must not also run discovery (subprocess) or the client."""
    assert {m for m in imported_on_import("controller.engine") if m.startswith("controller.engine.")} == set()


def test_the_walker_follows_package_inits() -> None:
    """The check above can fail: the operator's handlers do import kopf, through their own imports."""
    assert "kopf" in imported_on_import("controller.operator.handlers")
