"""The LocalModel status the aggregator writes in node-agent mode: a summary of the nodes' reports whose
size does not depend on the node count (pure: no I/O, no clock reads).

    status:
      observedGeneration: 3
      conditions: [Ready, Reconciling, Stalled]     # kstatus, from every expected node's entry
      ready: "37/40"                                # `kubectl get lm` READY column
      readyNodes: 37
      targetNodes: 40
      backend: llama.cpp                            # the first ready node's (every node picks the same)
      failingNodes:                                 # at most MAX_FAILING_NODES, by node name
      - {name: gpu-7, reason: PullFailed, message: ...}

The expected nodes are the ones that match the object and have a live agent (presence.py); a matching
node without one is named in the Ready message and not waited for. An expected node without an entry
for the current generation is work in progress (Reconciling), as with `status.engines[]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from controller.operator.nodereport import entry_engine_status
from controller.operator.statuses import expected_entry, same_status
from controller.status import Condition, Phase, summarize

MAX_FAILING_NODES: Final = 5
SUMMARY_FIELDS: Final = (
    "observedGeneration",
    "conditions",
    "ready",
    "readyNodes",
    "targetNodes",
    "backend",
    "failingNodes",
)


MAX_NAMED_NODES = 5


def absent_note(nodes: Sequence[str]) -> str:
    """`no agent on node gpu-3 (...)`: at most MAX_NAMED_NODES names, then a count."""
    names = ", ".join(nodes[:MAX_NAMED_NODES])
    more = f" and {len(nodes) - MAX_NAMED_NODES} more" if len(nodes) > MAX_NAMED_NODES else ""
    plural = "s" if len(nodes) > 1 else ""
    return (
        f"no agent on node{plural} {names}{more} (not waited for: no live agent lease; the agent DaemonSet "
        "does not run there or its agent is down)"
    )


def summarize_nodes(
    current: Mapping[str, Any] | None,
    reports: Mapping[str, Mapping[str, Any]],
    *,
    generation: int | None,
    expected: Sequence[str],
    absent: Sequence[str] = (),
    now: datetime,
) -> dict[str, Any]:
    """The summary status from the expected nodes' entries for this object (`reports`: node -> entry).

    `current`: the status the object holds (its conditions keep their lastTransitionTime when unchanged)."""
    current = current or {}
    statuses = [
        expected_entry(node, _engine_entry(node, reports.get(node)), generation, who=f"the agent on node {node}")
        for node in sorted(expected)
    ]
    previous = [Condition.from_k8s(dict(c)) for c in current.get("conditions") or () if isinstance(c, Mapping)]
    conditions = summarize(statuses, generation, previous, now)
    if absent:
        note = absent_note(sorted(absent))
        conditions = [replace(c, message=f"{c.message}; {note}") if c.type == "Ready" else c for c in conditions]
    ready_nodes = sum(1 for s in statuses if s.ready)
    failing = [s for s in statuses if not s.ready and s.phase is not Phase.PENDING]
    backend = next(
        (str(reports[s.engine]["backend"]) for s in statuses if s.ready and reports[s.engine].get("backend")), None
    )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [c.to_k8s() for c in conditions],
        "ready": f"{ready_nodes}/{len(statuses)}",
        "readyNodes": ready_nodes,
        "targetNodes": len(statuses),
        "failingNodes": [
            {"name": s.engine, "reason": s.reason.value, "message": s.message} for s in failing[:MAX_FAILING_NODES]
        ],
    }
    if backend:
        status["backend"] = backend
    if generation is None:
        del status["observedGeneration"]
    return status


def same_summary(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the object already holds `desired` and nothing of the old per-node layout
    (`status.engines[]`, which the aggregator removes on its first write: docs/scale.md, upgrade)."""
    current = current or {}
    return not current.get("engines") and same_status(current, desired, SUMMARY_FIELDS)


def _engine_entry(node: str, entry: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if entry is None else entry_engine_status(node, entry)
