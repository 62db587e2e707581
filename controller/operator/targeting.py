"""Which engines a LocalModel targets (pure: no I/O).

Central mode: every configured engine. Node-agent mode: the engines of the nodes whose labels match
the LocalModel's `spec.nodeSelector` (all labels present with equal values, as a Pod's nodeSelector)
and the agents' own `--agent-node-selector` (the nodes the agent DaemonSet runs on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A nodeSelector matches when every one of its labels is present with the same value.
    An empty or absent selector matches every node."""
    present = labels or {}
    return all(present.get(key) == value for key, value in (selector or {}).items())


def raw_node_selector(spec: Mapping[str, Any] | None) -> dict[str, str]:
    """`spec.nodeSelector` as the object holds it, read without validating the rest of the spec (an
    invalid spec still targets the nodes it names, so that each of them reports the error). Entries
    that are not strings are ignored; the API server's schema does not let them in anyway."""
    selector = (spec or {}).get("nodeSelector")
    if not isinstance(selector, Mapping):
        return {}
    return {k: v for k, v in selector.items() if isinstance(k, str) and isinstance(v, str)}


def matching_nodes(
    nodes: Mapping[str, Mapping[str, str]], selector: Mapping[str, str], agent_selector: Mapping[str, str] | None = None
) -> list[str]:
    """Names of the nodes (name -> labels) that both selectors match, sorted."""
    return sorted(
        name
        for name, labels in nodes.items()
        if selector_matches(selector, labels) and selector_matches(agent_selector, labels)
    )


def parse_selector(text: str, source: str) -> dict[str, str]:
    """`key=value,key2=value2` (the `kubectl --selector` equality form)."""
    selector: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{source}: {part.strip()!r} is not key=value (e.g. gpu=nvidia,zone=a)")
        selector[key.strip()] = value.strip()
    return selector
