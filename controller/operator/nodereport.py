"""A node agent's report: one `LocalModelNode` object per node, holding that node's entry for every
LocalModel it works on (pure: no I/O, no clock reads).

Why a per-node object (docs/scale.md): when every agent wrote its entry into the LocalModel's own
`status.engines[]`, the object grew with the node count and every write was sent to every agent's
LocalModel watch (nodes² transfers for one change on every node), and the agents' writes to the same
object conflicted (409) with each other. Here each agent writes only its own `LocalModelNode`, named
after its node: one writer per object, no conflicts, and a write costs O(models on the node). The
LocalModel keeps a summary written by one agent, the aggregator (aggregator.py, summary.py).

The object (cluster-scoped, kind `LocalModelNode`, the CRD in crd.py):

    metadata.name: the node's name (`<node>.<scope>` for agents that watch only some namespaces)
    metadata.labels: localmodel.io/node (the node), localmodel.io/scope (`cluster`, or the namespaces)
    status.ready:  "18/20" (entries ready / entries)
    status.models: one entry per LocalModel: namespace, name, uid, and the engine detail that
                   `status.engines[]` carried (phase, reason, message, ready, backend, appliedConfig,
                   observedGeneration, lastAppliedTime, pullProgress, ...)

`status.models` is an atomic list: the agent is its only writer and sends it whole, so the server
keeps one managedFields entry for it instead of one per field of every entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from controller.crd import GROUP, NODE_KIND, VERSION
from controller.operator.identity import short_label
from controller.status import EngineStatus, inherit_persisted

NODE_API_VERSION: Final = f"{GROUP}/{VERSION}"
NODE_FIELD_MANAGER: Final = "localmodel-agent"
NODE_LABEL: Final = f"{GROUP}/node"
SCOPE_LABEL: Final = f"{GROUP}/scope"  # which installation: the agents that watch every namespace, or these


def report_scope(namespaces: tuple[str, ...]) -> str:
    """`cluster` for agents that watch every namespace; a label for one set of watched namespaces (two
    installations on the same nodes that watch different namespaces keep separate reports)."""
    return "cluster" if not namespaces else short_label("ns-" + "-".join(sorted(namespaces)))


def report_name(node: str, scope: str) -> str:
    """The node's name (agents that watch every namespace), else `<node>.<scope>`."""
    return node if scope == "cluster" else f"{node}.{scope}"


def report_node(body: Mapping[str, Any]) -> str | None:
    """The node a LocalModelNode reports on (its label; its name for objects without one)."""
    meta = body.get("metadata") or {}
    node = (meta.get("labels") or {}).get(NODE_LABEL) or meta.get("name")
    return str(node) if node else None


def model_entry(namespace: str, name: str, uid: str, status: EngineStatus) -> dict[str, Any]:
    """One LocalModel's entry on a node: which object (namespace, name, uid), then the engine detail."""
    detail = {k: v for k, v in status.to_dict().items() if k != "name"}  # the engine's name is the node's
    return {"namespace": namespace, "name": name, "uid": uid, **detail}


def entry_engine_status(node: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry read back as a `status.engines[]`-shaped dict (named after its node), which
    statuses.entry_status turns into an EngineStatus."""
    return {**{k: v for k, v in entry.items() if k not in ("namespace", "name", "uid")}, "name": node}


@dataclass
class NodeReport:
    """What this agent reports on its node, by LocalModel uid, and whether it changed since the last
    write. The agent writes the whole object (`body`) after a pass that changed it."""

    node: str
    scope: str = "cluster"
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: dict[str, dict[str, Any]] | None = None  # the entries as last written (None: never, this run)

    def load(self, body: Mapping[str, Any] | None) -> None:
        """Start from the object as the server holds it (an agent restarting keeps its entries' history,
        such as lastAppliedTime, and is not rewritten needlessly)."""
        models = ((body or {}).get("status") or {}).get("models") or ()
        self.entries = {
            str(e["uid"]): dict(e) for e in models if isinstance(e, Mapping) and isinstance(e.get("uid"), str)
        }
        self.written = {uid: dict(e) for uid, e in self.entries.items()} if body is not None else None

    def report(self, namespace: str, name: str, uid: str, status: EngineStatus) -> None:
        """This node's result for one LocalModel, inheriting what the entry held (lastAppliedTime...)."""
        before = self.entries.get(uid)
        persisted = entry_engine_status(self.node, before) if before is not None else None
        self.entries[uid] = model_entry(namespace, name, uid, inherit_persisted(status, persisted))

    def drop(self, uid: str) -> None:
        """The LocalModel is gone from this node (deleted and finalized, or no longer targeting it)."""
        self.entries.pop(uid, None)

    def keep_only(self, uids: Iterable[str]) -> list[str]:
        """Drop the entries of LocalModels that no longer exist; returns their uids."""
        keep = set(uids)
        gone = [uid for uid in self.entries if uid not in keep]
        for uid in gone:
            del self.entries[uid]
        return gone

    def entry(self, uid: str) -> dict[str, Any] | None:
        return self.entries.get(uid)

    @property
    def changed(self) -> bool:
        return self.written != self.entries

    def body(self) -> dict[str, Any]:
        """The whole object, for server-side apply (entries sorted by namespace/name: stable diffs)."""
        models = sorted(self.entries.values(), key=lambda e: (e["namespace"], e["name"], e["uid"]))
        ready = sum(1 for e in models if e.get("ready") is True)
        return {
            "apiVersion": NODE_API_VERSION,
            "kind": NODE_KIND,
            "metadata": {
                "name": report_name(self.node, self.scope),
                "labels": {NODE_LABEL: self.node, SCOPE_LABEL: self.scope},
            },
            "status": {"ready": f"{ready}/{len(models)}", "models": models},
        }

    def mark_written(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self.written = {uid: dict(e) for uid, e in entries.items()}


def node_entries(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A LocalModelNode's entries by LocalModel uid (entries without a uid are ignored)."""
    models = (body.get("status") or {}).get("models") or ()
    return {str(e["uid"]): dict(e) for e in models if isinstance(e, Mapping) and isinstance(e.get("uid"), str)}
