"""The `status` a LocalModel should have after a central operator's pass, and whether it must be written
(pure: no I/O, no clock reads).

Central mode has one writer (the elected replica): it owns the whole status, `status.engines[]` entry by
entry, and recomputes `observedGeneration`, the three conditions and `ready` from the entries of every
engine it reconciles on. (Node agents write no LocalModel status: each reports in its LocalModelNode,
and the aggregator writes a summary: nodereport.py, summary.py.)

An entry written for an older generation, and an engine without an entry yet, count as work in
progress (`Reconciling`): the object is Ready only when every engine reports the current spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from controller.spec import SpecInvalid
from controller.status import Condition, EngineStatus, Phase, Reason, inherit_persisted, summarize


@dataclass(frozen=True)
class StatusUpdate:
    """What the writer sends (`status`, by server-side apply), whether it differs from what the object
    holds, and whether the object is Ready with it."""

    status: dict[str, Any]
    changed: bool
    ready: bool


def compose_status(
    current: Mapping[str, Any] | None,
    own: Sequence[EngineStatus],
    *,
    generation: int | None,
    expected: Sequence[str],
    now: datetime,
    keep_own: bool = False,
) -> StatusUpdate:
    """The status after this pass.

    `own`: the entries reported now; an entry not reported now is dropped, unless `keep_own` (a
    pull-progress write in the middle of a pass: the others stay as they are). `expected`: the engines
    that should have an entry.
    """
    current = current or {}
    persisted = {e.get("name"): e for e in current.get("engines") or () if isinstance(e, Mapping)}
    entries = {status.engine: inherit_persisted(status, persisted.get(status.engine)).to_dict() for status in own}
    if keep_own:
        for name, entry in persisted.items():
            if isinstance(name, str) and name not in entries:
                entries[name] = dict(entry)
    summary = [expected_entry(n, entries.get(n), generation, who=f"the engine of {n}") for n in expected]
    previous = [Condition.from_k8s(c) for c in current.get("conditions") or ()]
    conditions = summarize(summary, generation, previous, now)
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
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return StatusUpdate(desired, not same_status(current, desired), ready)


STATUS_FIELDS: Final = ("observedGeneration", "conditions", "engines", "ready", "backend")
_LIST_KEYS: Final = {"conditions": "type", "engines": "name"}  # lists compared by key, in any order


def same_status(current: Mapping[str, Any], desired: Mapping[str, Any], fields: Sequence[str] = STATUS_FIELDS) -> bool:
    """Whether the object already holds `desired` in `fields` (conditions by type, entries by name)."""

    def value(status: Mapping[str, Any], field: str) -> Any:
        key = _LIST_KEYS.get(field)
        if key is None:
            return status.get(field)
        return {item.get(key): item for item in status.get(field) or () if isinstance(item, Mapping)}

    return all(value(current, field) == value(desired, field) for field in fields)


def entry_status(entry: Mapping[str, Any]) -> EngineStatus:
    """An EngineStatus from a `status.engines[]`-shaped entry (a node's entry in its LocalModelNode, for the
    aggregator's summary), enough to summarise it."""
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


def expected_entry(name: str, entry: Mapping[str, Any] | None, generation: int | None, *, who: str) -> EngineStatus:
    """One expected engine's (or node's) part in the conditions: its entry, or Pending while it has none
    yet or has not reconciled this generation. `who`: how messages name it (`the engine of gpu-1`)."""
    if entry is None:
        return EngineStatus(name, Phase.PENDING, Reason.PENDING, f"waiting for {who} to report")
    status = entry_status(entry)
    if generation is not None and status.observed_generation != generation:
        return EngineStatus(
            name, Phase.PENDING, Reason.PENDING, f"{who} has not reconciled generation {generation} yet"
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
