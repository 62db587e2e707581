"""When each LocalModel is reconciled next (pure: time comes in as an argument).

Every name has a due time: an explicit moment (a change to apply now, a backoff, a requeue) or
`None`, "on the next drift pass". The drift pass comes every `interval` seconds and makes every
waiting name due at once, so an idle pass observes the engine once for all of them instead of
once per model. Names being worked on (`busy`) are never handed out twice; they get their next
due time when their work finishes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Wake:
    """What one wake-up has to do: the names that are due, and whether this is a drift pass."""

    names: tuple[str, ...]
    drift: bool

    def __bool__(self) -> bool:
        return bool(self.names) or self.drift


@dataclass
class Schedule:
    interval: float
    next_drift: float
    _due: dict[str, float | None] = field(default_factory=dict)

    def due_at(self, name: str, when: float) -> None:
        """Reconcile `name` at `when` (or on the drift pass, if that comes first)."""
        self._due[name] = when

    def due_now(self, names: Iterable[str], now: float) -> None:
        for name in names:
            self._due[name] = now

    def on_drift(self, name: str) -> None:
        """Reconcile `name` on the next drift pass."""
        self._due[name] = None

    def remove(self, name: str) -> None:
        self._due.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._due

    def when(self, name: str) -> float | None:
        return self._due.get(name)

    def next_wake(self, busy: Collection[str] = ()) -> float:
        """The earliest moment something is due: an explicit due time or the drift pass."""
        times = [t for name, t in self._due.items() if t is not None and name not in busy]
        return min([self.next_drift, *times])

    def take(self, now: float, busy: Collection[str] = ()) -> Wake:
        """The names due at `now` (not busy), marked as waiting for the drift pass until they are
        rescheduled. A drift pass also moves the next one `interval` ahead."""
        drift = now >= self.next_drift
        if drift:
            self.next_drift = now + self.interval
        names = [
            name
            for name, when in self._due.items()
            if name not in busy and ((when is not None and when <= now) or (drift and when is None))
        ]
        for name in names:
            self._due[name] = None
        return Wake(tuple(names), drift)
