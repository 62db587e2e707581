"""The engines an operator reconciles against: where the list comes from.

Central mode reads a list of engines, first found wins:

1. `--engine [NAME=]URL` flags (repeatable);
2. `LOCALMODEL_ENGINES` (comma-separated `[NAME=]URL` items);
3. a ConfigMap in the operator's namespace (`--engines-configmap NAME`): key `engines`, one
   `[NAME=]URL` per line (or comma-separated), or key `LOCALMODEL_ENGINES`;
4. discovery: the in-cluster `docker-model-runner` Service (DMR's Helm chart: port 80 -> 12434) and
   the host's DMR as kind and minikube show it to pods; every candidate that answers is used.

Node-agent mode has exactly one engine, named after the node, on the node's address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from controller.engine.discovery import engine_root

ENV_ENGINES: Final = "LOCALMODEL_ENGINES"
CONFIGMAP_KEYS: Final = ("engines", ENV_ENGINES)
DMR_PORT: Final = 12434
IN_CLUSTER_SERVICE: Final = "docker-model-runner"
HOST_CANDIDATES: Final = (
    ("host-kind", f"http://host.docker.internal:{DMR_PORT}"),
    ("host-minikube", f"http://host.minikube.internal:{DMR_PORT}"),
)


@dataclass(frozen=True)
class EngineRef:
    """One engine: the name its `status.engines[]` entry carries, and its root URL."""

    name: str
    url: str


class EngineListError(ValueError):
    """An engine list item that is not `[NAME=]URL`; the message names the source and the item."""


def parse_engine(item: str, source: str) -> EngineRef:
    """`http://host:port`, `host:port` or `name=http://host:port`. The default name is `host:port`
    (`host` alone for the scheme's default port)."""
    text = item.strip()
    name, sep, url = text.partition("=")
    if not sep or "://" in name:
        name, url = "", text
    try:
        root = engine_root(url)
    except ValueError as exc:
        raise EngineListError(f"{source}: {exc}") from None
    name = name.strip() or urlsplit(root).netloc.rpartition("@")[2]  # never the credentials of user:pass@host
    if not name or any(ch.isspace() for ch in name):
        raise EngineListError(f"{source}: engine name {name!r} in {item!r}: use NAME=URL with a name without spaces")
    return EngineRef(name, root)


def parse_engine_list(items: Iterable[str], source: str) -> list[EngineRef]:
    """Parse `[NAME=]URL` items (each may itself be comma- or newline-separated); names must be unique."""
    engines: list[EngineRef] = []
    for item in items:
        for part in item.replace("\n", ",").split(","):
            if part.strip() and not part.strip().startswith("#"):
                engines.append(parse_engine(part, source))
    seen: set[str] = set()
    for engine in engines:
        if engine.name in seen:
            raise EngineListError(
                f"{source}: engine name {engine.name!r} appears twice; give each engine its own name with NAME=URL"
            )
        seen.add(engine.name)
    return engines


def engines_from_configmap(data: Mapping[str, str] | None, name: str) -> list[EngineRef]:
    """The engine list held by ConfigMap `name` (its `data`)."""
    source = f"ConfigMap {name}"
    for key in CONFIGMAP_KEYS:
        if data and data.get(key, "").strip():
            return parse_engine_list([data[key]], f"{source}, key {key}")
    raise EngineListError(
        f"{source} has no engine list: put `[NAME=]URL` items in its key "
        f"{CONFIGMAP_KEYS[0]!r} (one per line or comma-separated)"
    )


def configured_engines(flags: Sequence[str], env: Mapping[str, str]) -> list[EngineRef]:
    """The engines given on the command line, else in `LOCALMODEL_ENGINES`; empty when neither is set
    (then the ConfigMap or discovery decides)."""
    if flags:
        return parse_engine_list(flags, "--engine")
    if env.get(ENV_ENGINES, "").strip():
        return parse_engine_list([env[ENV_ENGINES]], ENV_ENGINES)
    return []


def discovery_candidates(namespace: str) -> list[EngineRef]:
    """Where a DMR usually is, seen from a pod: the in-cluster Service of DMR's Helm chart (in the
    operator's namespace) and the host's DMR on kind (Docker Desktop) and minikube."""
    service = EngineRef(f"{IN_CLUSTER_SERVICE}.{namespace}", f"http://{IN_CLUSTER_SERVICE}.{namespace}.svc")
    return [service, *(EngineRef(name, url) for name, url in HOST_CANDIDATES)]


async def discover_engines(
    candidates: Sequence[EngineRef], answers: Callable[[EngineRef], Awaitable[bool]]
) -> list[EngineRef]:
    """The candidates that answer (probed concurrently), in candidate order."""
    results = await asyncio.gather(*(answers(candidate) for candidate in candidates))
    return [candidate for candidate, ok in zip(candidates, results, strict=True) if ok]


def node_engine(node: str, address: str, port: int = DMR_PORT) -> EngineRef:
    """The engine of a node agent: named after the node, on the node's address."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return EngineRef(node, f"http://{host}:{port}")
