"""The `status` a LocalModel should have after this process's pass, and whether it must be written
(pure: no I/O, no clock reads).

Who writes what:
- central mode: one writer; it owns the whole status (every `status.engines[]` entry).
- node-agent mode: each agent owns only the entry named after its node. Whoever writes recomputes
  `observedGeneration` and the three conditions from ALL the entries of the engines that should be
  there (the matching nodes), so the last write always summarises everything the object holds.
  An entry of another agent is removed only when its node is gone.

An entry written for an older generation, and a matching node without an entry yet, count as work in
progress (`Reconciling`): the object is Ready only when every targeted engine reports the current spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from controller.spec import SpecInvalid
from controller.status import Condition, EngineStatus, Phase, Reason, inherit_persisted, summarize


@dataclass(frozen=True)
class StatusUpdate:
    """What one writer sends: `apply` (the status fields it owns, for server-side apply), the other
    writers' entries to remove (their nodes are gone), and the whole status the object will then hold."""

    apply: dict[str, Any]
    prune: tuple[str, ...]
    desired: dict[str, Any]
    changed: bool
    ready: bool


def compose_status(
    current: Mapping[str, Any] | None,
    own: Sequence[EngineStatus],
    *,
    generation: int | None,
    expected: Sequence[str],
    owns: Callable[[str], bool],
    existing_engine: Callable[[str], bool],
    now: datetime,
    keep_own: bool = False,
    absent: Sequence[str] = (),
) -> StatusUpdate:
    """The status after this writer's pass.

    `own`: the entries this writer reports now. `owns(name)`: whether an entry is this writer's (its
    own entries it does not report now are dropped). `expected`: the engines that should have an entry.
    `existing_engine(name)`: False for an engine that is gone (its entry is pruned). `keep_own`: own
    entries not reported now stay as they are (a pull-progress write in the middle of a pass). `absent`:
    matching nodes without a live agent, named in the Ready message but not waited for.
    """
    current = current or {}
    persisted = {e.get("name"): e for e in current.get("engines") or () if isinstance(e, Mapping)}
    own_entries = {status.engine: inherit_persisted(status, persisted.get(status.engine)).to_dict() for status in own}
    kept: dict[str, dict[str, Any]] = {}
    prune: list[str] = []
    for entry in current.get("engines") or ():
        name = entry.get("name")
        if not isinstance(name, str) or name in own_entries:
            continue
        if owns(name):
            if keep_own:
                own_entries[name] = dict(entry)
            continue
        if existing_engine(name):
            kept[name] = dict(entry)
        else:
            prune.append(name)
    entries = {**kept, **own_entries}
    summary = [_summary_entry(name, entries.get(name), generation) for name in expected]
    previous = [Condition.from_k8s(c) for c in current.get("conditions") or ()]
    conditions = summarize(summary, generation, previous, now)
    if absent:
        note = absent_note(absent)
        conditions = [replace(c, message=f"{c.message}; {note}") if c.type == "Ready" else c for c in conditions]
    desired: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [c.to_k8s() for c in conditions],
        "engines": [entries[name] for name in sorted(entries)],
        "ready": f"{sum(1 for s in summary if s.ready)}/{len(summary)}",  # the READY column
    }
    backend = next((entries[s.engine].get("backend") for s in summary if s.ready and s.engine in entries), None)
    if backend:
        desired["backend"] = backend
    if generation is None:
        del desired["observedGeneration"]
    applied = {k: v for k, v in desired.items() if k != "engines"}
    if own_entries:
        applied["engines"] = [own_entries[name] for name in sorted(own_entries)]
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return StatusUpdate(applied, tuple(sorted(prune)), desired, not same_status(current, desired), ready)


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


def same_status(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the object already holds `desired` (entries compared by name, in any order)."""

    def engines(status: Mapping[str, Any]) -> dict[str, Any]:
        return {e.get("name"): e for e in status.get("engines") or ()}

    def conditions(status: Mapping[str, Any]) -> dict[str, Any]:
        return {c.get("type"): c for c in status.get("conditions") or ()}

    return (
        current.get("observedGeneration") == desired.get("observedGeneration")
        and conditions(current) == conditions(desired)
        and engines(current) == engines(desired)
        and current.get("ready") == desired.get("ready")
        and current.get("backend") == desired.get("backend")
    )


def entry_status(entry: Mapping[str, Any]) -> EngineStatus:
    """An EngineStatus from a `status.engines[]` entry (another writer's), enough to summarise it."""
    try:
        reason = Reason(entry.get("reason") or "")
    except ValueError:
        reason = Reason.ENGINE_ERROR
    try:
        phase = Phase(entry.get("phase") or "")
    except ValueError:
        phase = Phase.PENDING
    return EngineStatus(
        engine=str(entry.get("name", "")),
        phase=phase,
        reason=reason,
        message=str(entry.get("message", "")),
        ready=entry.get("ready") is True,
        stalled=phase is Phase.STALLED,
        observed_generation=entry.get("observedGeneration"),
    )


def _summary_entry(name: str, entry: Mapping[str, Any] | None, generation: int | None) -> EngineStatus:
    if entry is None:
        return EngineStatus(name, Phase.PENDING, Reason.PENDING, f"waiting for the engine of {name} to report")
    status = entry_status(entry)
    if generation is not None and status.observed_generation != generation:
        return EngineStatus(
            name, Phase.PENDING, Reason.PENDING, f"the engine of {name} has not reconciled generation {generation} yet"
        )
    return status


def invalid_spec_status(engine: str, error: SpecInvalid, generation: int | None) -> EngineStatus:
    """The entry of an engine for a spec that does not validate: Stalled until the spec changes."""
    return EngineStatus(
        engine,
        Phase.STALLED,
        Reason.INVALID_SPEC,
        spec_error_message(error),
        stalled=True,
        observed_generation=generation,
    )


def spec_error_message(error: SpecInvalid) -> str:
    """`spec.keepAlive: '5 minutes' is not a duration ...; spec.vllm: ...` (field path first)."""
    return "; ".join(f"{e.path}: {e.message}" if e.path else e.message for e in error.errors)
