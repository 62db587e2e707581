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
from typing import Any

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
    summary = [_summary_entry(name, entries.get(name), generation) for name in expected]
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
