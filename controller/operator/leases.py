"""coordination.k8s.io/v1 Leases as plain values (pure: no I/O, no clock reads).

Two uses, both in the operator's namespace:
- agent presence (presence.py): one Lease per node agent, renewed as the kubelet renews its node
  lease; the nodes expected to report on a LocalModel are those that match and hold a fresh lease;
- leader election (election.py): one Lease the central replicas compete for.

Whether a Lease is fresh is judged as client-go's leader elector and the node lifecycle controller
judge it: by when *this* process saw `renewTime` change (its own monotonic clock), not by comparing
the writer's wall clock with its own, so that clock skew between nodes cannot make a live holder look
expired. A Lease seen for the first time is credited with the age its `renewTime` shows, at most.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

API_VERSION: Final = "coordination.k8s.io/v1"
ROLE_LABEL: Final = "localmodel.io/lease"  # agent | leader
AGENT_ROLE: Final = "agent"
LEADER_ROLE: Final = "leader"
MANAGED_BY: Final = {"app.kubernetes.io/name": "localmodel"}
# On an election Lease: how many candidates the leader knows of (the standbys spread their reads by it).
CANDIDATES_ANNOTATION: Final = "localmodel.io/candidates"


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says: who holds it, for how long, when it was last renewed."""

    name: str
    holder: str = ""
    duration: float = 0.0  # leaseDurationSeconds
    renewed: datetime | None = None
    acquired: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None
    candidates: int | None = None  # CANDIDATES_ANNOTATION, when the leader says

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> LeaseRecord:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        candidates = (meta.get("annotations") or {}).get(CANDIDATES_ANNOTATION)
        return cls(
            name=str(meta.get("name", "")),
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(duration) if isinstance(duration, int | float) and duration > 0 else 0.0,
            renewed=parse_micro_time(spec.get("renewTime")),
            acquired=parse_micro_time(spec.get("acquireTime")),
            transitions=transitions if isinstance(transitions, int) and transitions >= 0 else 0,
            resource_version=meta.get("resourceVersion"),
            candidates=_count(candidates),
        )

    def to_k8s(self, namespace: str, role: str) -> dict[str, Any]:
        """The Lease object (for create, or for replace with `resource_version` as the precondition)."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, ROLE_LABEL: role},
        }
        if self.resource_version:
            metadata["resourceVersion"] = self.resource_version
        if self.candidates is not None:
            metadata["annotations"] = {CANDIDATES_ANNOTATION: str(self.candidates)}
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "leaseTransitions": self.transitions,
        }
        if self.renewed is not None:
            spec["renewTime"] = format_micro_time(self.renewed)
        if self.acquired is not None:
            spec["acquireTime"] = format_micro_time(self.acquired)
        return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}


def _count(value: Any) -> int | None:
    """A count written by another process: ASCII digits, at most 9 of them; None otherwise."""
    if isinstance(value, str) and 0 < len(value) <= 9 and value.isascii() and value.isdigit():
        return int(value)
    return None


def parse_micro_time(value: Any) -> datetime | None:
    """A metav1.MicroTime (`2026-01-02T03:04:05.123456Z`) or Time; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Sighting:
    """When this process last saw a Lease's renewTime change (monotonic seconds)."""

    holder: str
    renewed: datetime | None
    seen_at: float  # monotonic time at which this renewTime is taken to have been written
    duration: float

    def fresh(self, now: float) -> bool:
        """Whether the holder is alive at monotonic time `now`: renewed less than a duration ago."""
        return (
            bool(self.holder) and self.renewed is not None and self.duration > 0 and now - self.seen_at < self.duration
        )


def sight(record: LeaseRecord, previous: Sighting | None, *, now: float, wall_now: datetime) -> Sighting:
    """The sighting of `record` at monotonic `now`, given the previous one of the same Lease.

    Unchanged holder and renewTime: the previous sighting stands (its age grows with our clock).
    Changed: renewed just now. First seen: credited with the age its renewTime shows (never negative,
    so a writer whose clock runs ahead gets no extra life)."""
    if previous is not None and previous.holder == record.holder and previous.renewed == record.renewed:
        return Sighting(record.holder, record.renewed, previous.seen_at, record.duration)
    if previous is None and record.renewed is not None:
        age = max(0.0, (wall_now - record.renewed).total_seconds())
        return Sighting(record.holder, record.renewed, now - age, record.duration)
    return Sighting(record.holder, record.renewed, now, record.duration)
