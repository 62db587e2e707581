"""Conditions and per-engine detail, computed from what happened (pure: no clock reads, no I/O).

The shape follows kstatus (sigs.k8s.io/cli-utils) and metav1.Condition, so that `kubectl wait
--for=condition=Ready`, Flux, Helm 4 and Argo CD all read it the same way:

- `Ready` is the summary: True only when every targeted engine reports the desired config.
- `Reconciling` is present and True only while work is in progress (or being retried).
- `Stalled` is True only on an error that needs a change to the spec (or the engine) to clear.
- `lastTransitionTime` changes only when a condition's status flips (`set_condition`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class Phase(StrEnum):
    """Where one model stands on one engine. Detail for people; tools read the conditions."""

    PENDING = "Pending"
    PULLING = "Pulling"
    CONFIGURING = "Configuring"
    READY = "Ready"
    RETRYING = "Retrying"
    STALLED = "Stalled"
    DELETING = "Deleting"


class Reason(StrEnum):
    """CamelCase condition reasons. The message says what to do."""

    APPLIED = "Applied"
    PENDING = "Pending"
    PULLING = "Pulling"
    CONFIGURING = "Configuring"
    DRIFT_REPAIRED = "DriftRepaired"
    ENGINE_UNREACHABLE = "EngineUnreachable"
    RUNNER_BUSY = "RunnerBusy"
    RUNNER_STALE = "RunnerStale"
    LOAD_FAILED = "LoadFailed"
    PULL_FAILED = "PullFailed"
    VERIFY_FAILED = "VerifyFailed"
    ENGINE_ERROR = "EngineError"
    INVALID_SPEC = "InvalidSpec"
    FLAG_REJECTED = "FlagRejected"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_NOT_PRESENT = "ModelNotPresent"
    BACKEND_MISMATCH = "BackendMismatch"
    CONFLICT = "Conflict"
    NO_ENGINES = "NoEngines"
    ENGINE_UNSUPPORTED = "EngineUnsupported"  # the engine's release cannot keep a field: upgrade it or drop the field


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int | None = None
    last_transition_time: datetime | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message[:32768],
        }
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        if self.last_transition_time is not None:
            out["lastTransitionTime"] = rfc3339(self.last_transition_time)
        return out

    @classmethod
    def from_k8s(cls, data: dict[str, Any]) -> Condition:
        ltt = data.get("lastTransitionTime")
        return cls(
            type=str(data.get("type", "")),
            status=str(data.get("status", UNKNOWN)),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            observed_generation=data.get("observedGeneration"),
            last_transition_time=datetime.fromisoformat(ltt.replace("Z", "+00:00")) if ltt else None,
        )


@dataclass(frozen=True)
class PullProgressInfo:
    completed_bytes: int
    total_bytes: int | None

    @property
    def percent(self) -> int | None:
        if not self.total_bytes:
            return None
        return min(100, int(self.completed_bytes * 100 / self.total_bytes))


@dataclass(frozen=True)
class EngineStatus:
    """One model on one engine, as the last reconcile left it."""

    engine: str
    phase: Phase
    reason: Reason
    message: str
    ready: bool = False
    stalled: bool = False
    backend: str | None = None
    model_id: str | None = None
    applied_config: dict[str, Any] | None = None  # as the engine reports it back
    loaded: bool = False
    pull: PullProgressInfo | None = None
    last_error: str | None = None
    last_applied_time: datetime | None = None
    notes: tuple[str, ...] = ()
    observed_generation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """camelCase detail, as `status.engines[]` (Kubernetes) and `GET /status` (daemon) show it."""
        out: dict[str, Any] = {
            "name": self.engine,
            "phase": self.phase.value,
            "ready": self.ready,
            "reason": self.reason.value,
            "message": self.message,
            "loaded": self.loaded,
        }
        optional = {
            "backend": self.backend,
            "modelID": self.model_id,
            "appliedConfig": self.applied_config,
            "lastError": self.last_error,
            "lastAppliedTime": rfc3339(self.last_applied_time) if self.last_applied_time else None,
            "notes": list(self.notes) or None,
            "observedGeneration": self.observed_generation,
        }
        if self.pull is not None:
            pull: dict[str, Any] = {"completedBytes": self.pull.completed_bytes}
            if self.pull.total_bytes:
                pull["totalBytes"] = self.pull.total_bytes
                pull["percent"] = self.pull.percent
            optional["pullProgress"] = pull
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def inherit_persisted(status: EngineStatus, persisted: Mapping[str, Any] | None) -> EngineStatus:
    """`status` completed with what only a previous process knew, as the persisted entry recorded it
    (the object's own `status.engines[]` entry, or the daemon's saved status).

    A process that has not applied the config itself (it was restarted, and the engine still holds the
    config) cannot know when it was applied, nor whether that apply was a drift repair: it keeps the
    persisted `lastAppliedTime` and, for the same generation, the persisted ready reason. So a restart
    changes nothing in the status of an object whose engine did not change, and writes nothing.
    """
    if persisted is None or status.engine != persisted.get("name") or status.last_applied_time is not None:
        return status
    applied = parse_rfc3339(persisted.get("lastAppliedTime"))
    if applied is None:
        return status
    inherited = replace(status, last_applied_time=applied)
    if (
        status.ready
        and status.reason is Reason.APPLIED
        and persisted.get("ready") is True
        and persisted.get("reason") == Reason.DRIFT_REPAIRED.value
        and persisted.get("observedGeneration") == status.observed_generation
    ):
        inherited = replace(inherited, reason=Reason.DRIFT_REPAIRED)
    return inherited


def set_condition(conditions: Sequence[Condition], new: Condition, now: datetime) -> list[Condition]:
    """Insert or update a condition, as apimachinery's meta.SetStatusCondition does:
    `lastTransitionTime` moves only when the status flips."""
    out: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.type != new.type:
            out.append(existing)
            continue
        found = True
        flipped = existing.status != new.status or existing.last_transition_time is None
        out.append(replace(new, last_transition_time=now if flipped else existing.last_transition_time))
    if not found:
        out.append(replace(new, last_transition_time=now))
    return out


def summarize(
    engines: Sequence[EngineStatus],
    generation: int | None,
    previous: Sequence[Condition],
    now: datetime,
) -> list[Condition]:
    """The three kstatus conditions from the per-engine results.

    Ready needs every engine ready; Stalled wins over Reconciling when any engine is stalled
    (the object will not progress without a change); otherwise Reconciling while any engine works.
    """
    if not engines:
        ready = Condition(
            READY,
            FALSE,
            Reason.NO_ENGINES.value,
            "no engine targets this model (check nodeSelector and the engine list)",
            generation,
        )
        reconciling = Condition(RECONCILING, FALSE, Reason.NO_ENGINES.value, "nothing to do", generation)
        stalled = Condition(STALLED, TRUE, Reason.NO_ENGINES.value, ready.message, generation)
    else:
        not_ready = [e for e in engines if not e.ready]
        stalled_engines = [e for e in engines if e.stalled]
        if not not_ready:
            ready = Condition(READY, TRUE, Reason.APPLIED.value, _ready_message(engines), generation)
        else:
            first = stalled_engines[0] if stalled_engines else not_ready[0]
            ready = Condition(READY, FALSE, first.reason.value, _engine_message(first, len(engines)), generation)
        if stalled_engines:
            first = stalled_engines[0]
            stalled = Condition(STALLED, TRUE, first.reason.value, _engine_message(first, len(engines)), generation)
        else:
            stalled = Condition(
                STALLED,
                FALSE,
                Reason.APPLIED.value if not not_ready else ready.reason,
                "no permanent error",
                generation,
            )
        working = [e for e in not_ready if not e.stalled]
        if working:
            first = working[0]
            reconciling = Condition(
                RECONCILING, TRUE, first.reason.value, _engine_message(first, len(engines)), generation
            )
        else:
            reconciling = Condition(
                RECONCILING,
                FALSE,
                ready.reason,
                "up to date" if not not_ready else "waiting for a spec change",
                generation,
            )
    conditions = list(previous)
    for condition in (ready, reconciling, stalled):
        conditions = set_condition(conditions, condition, now)
    order = {READY: 0, RECONCILING: 1, STALLED: 2}
    return sorted(conditions, key=lambda c: order.get(c.type, 3))


def _engine_message(status: EngineStatus, engine_count: int) -> str:
    return status.message if engine_count == 1 else f"engine {status.engine}: {status.message}"


def _ready_message(engines: Sequence[EngineStatus]) -> str:
    if len(engines) == 1:
        return engines[0].message
    return f"applied and verified on {len(engines)} engines"


def condition_map(conditions: Iterable[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


@dataclass(frozen=True)
class ModelStatus:
    """Everything one front-end shows for one LocalModel."""

    name: str
    model: str
    generation: int | None
    conditions: tuple[Condition, ...]
    engines: tuple[EngineStatus, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> bool:
        c = condition_map(self.conditions).get(READY)
        return c is not None and c.status == TRUE

    @property
    def stalled(self) -> bool:
        c = condition_map(self.conditions).get(STALLED)
        return c is not None and c.status == TRUE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "observedGeneration": self.generation,
            "conditions": [c.to_k8s() for c in self.conditions],
            "engines": [e.to_dict() for e in self.engines],
        }
