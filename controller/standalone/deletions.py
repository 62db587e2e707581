"""The daemon's deletions: a LocalModel gone from the files for the grace period has its deletionPolicy applied.

When a declared LocalModel leaves the files (controller/standalone/files.py waits out the grace period),
`Deletions.start` decides whether the engine is to be touched at all (a Conflict never was; a model that
another LocalModel still declares stays) and schedules the deletion; `finalize` runs it in the pass loop,
after an observation the engine answered, and follows the shared rule (controller/deletion.py) to try again
or give up, logging the commands that would clean up by hand. A deletion waits for an engine that is down
without using up a try (`waiting`). What is pending shows in /status (`report`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.deletion import deletion_retries, gave_up_message, next_step
from controller.documents import ModelSource
from controller.engine.errors import EngineError
from controller.fleet import Event
from controller.logs import log_event
from controller.plan import Observation
from controller.reconcile import EngineReconciler
from controller.refs import canonical_ref
from controller.spec import LocalModel, LocalModelSpec
from controller.standalone.schedule import Schedule
from controller.standalone.snapshot import Record

log = logging.getLogger("localmodel.daemon")

# A deletionPolicy's tries (controller/deletion.py), spread: many files removed at once fail at once. None is
# used up while the engine is down: a finalize runs only after an observation the engine answered.
DELETE_RETRIES = deletion_retries(jittered=True)


def model_refs(spec: LocalModelSpec) -> set[str]:
    """The references a spec keeps in the engine's store (the model and its draft model)."""
    refs = {canonical_ref(spec.model)}
    if spec.speculative is not None and spec.speculative.draft_model:
        refs.add(canonical_ref(spec.speculative.draft_model))
    return refs


def cleanup_commands(spec: LocalModelSpec) -> str:
    """What to run by hand to do what the spec's deletionPolicy would have done."""
    commands = [f"docker model unload {spec.model}"]
    if spec.deletion_policy == "Delete":
        commands.append(f"docker model rm {spec.model}")
    return " && ".join(commands)


@dataclass
class Deletion:
    """A LocalModel that disappeared from the files and whose deletionPolicy is still to be applied."""

    model: LocalModel
    source: ModelSource
    attempts: int = 0
    last_error: str | None = None


class Deletions:
    """The deletions to run, by name. `records` is the daemon's declared models (read only): a model they
    still reference stays on the engine, and a name declared again ends its deletion."""

    def __init__(
        self,
        reconciler: EngineReconciler,
        schedule: Schedule,
        records: Mapping[str, Record],
        *,
        grace: float,
        monotonic: Callable[[], float],
        jitter: Callable[[], float],
    ) -> None:
        self.pending: dict[str, Deletion] = {}
        self._reconciler = reconciler
        self._schedule = schedule
        self._records = records
        self._grace = grace
        self._monotonic = monotonic
        self._jitter = jitter

    def __contains__(self, name: object) -> bool:
        return name in self.pending

    def cancel(self, name: str) -> None:
        """`name` is declared again before its deletion ran: nothing to delete."""
        self.pending.pop(name, None)

    def start(self, record: Record, now: float) -> None:
        """`record` left the files (its grace period is over): forget it, and delete what it applied unless
        another declared LocalModel still uses the model."""
        name = record.model.name
        self._reconciler.forget(name)
        self._schedule.remove(name)
        if record.conflict is not None:
            return  # it never touched the engine
        refs = model_refs(record.model.spec)
        users = sorted(
            other.model.name
            for other in self._records.values()
            if other.conflict is None and refs & model_refs(other.model.spec)
        )
        if users:
            log_event(
                log,
                Event.REMOVED,
                f"{record.model.spec.model} stays on the engine: {', '.join(users)} still declares it",
                model=name,
                file=str(record.source),
            )
            return
        log_event(
            log,
            Event.REMOVED,
            f"gone from the files for the deletion grace period ({self._grace:g}s); "
            f"applying deletionPolicy {record.model.spec.deletion_policy}",
            model=name,
            file=str(record.source),
        )
        self.pending[name] = Deletion(record.model, record.source)
        self._schedule.due_at(name, now)

    def waiting(self, name: str, error: EngineError | str) -> None:
        """The engine did not answer: the deletion waits for it, without using up a try (a file removed
        during an engine restart is finalized when the engine answers again: every name is then due)."""
        self.pending[name].last_error = f"waiting for the engine: {error}"

    async def finalize(self, name: str, observation: Observation) -> None:
        """Apply `name`'s deletionPolicy once; then done, due again after the backoff, or given up."""
        deletion = self.pending[name]
        outcome = await self._reconciler.finalize(name, deletion.model, observation)
        now = self._monotonic()
        if self.pending.get(name) is not deletion:
            if name in self._records:  # declared again while we were deleting it
                self._schedule.due_at(name, now)
            return
        step = next_step(DELETE_RETRIES, deletion.attempts, outcome, self._jitter())
        if step.retry_in is not None:
            deletion.last_error, deletion.attempts = step.message, step.failures
            self._schedule.due_at(name, now + step.retry_in)
            return
        del self.pending[name]
        self._schedule.remove(name)
        if step.done:
            log_event(log, Event.DELETION_APPLIED, step.message, model=name)
            return
        spec = deletion.model.spec
        log_event(
            log,
            Event.DELETION_ABANDONED,
            f"{gave_up_message(spec.deletion_policy, step.failures, step.message)}; "
            f"clean up by hand ({cleanup_commands(spec)})",
            level=logging.WARNING,
            model=name,
        )

    def report(self) -> list[dict[str, Any]]:
        """The deletions pending, for /status."""
        return [
            {
                "name": name,
                "model": d.model.spec.model,
                "deletionPolicy": d.model.spec.deletion_policy,
                "attempts": d.attempts,
                "lastError": d.last_error,
                "source": str(d.source),
            }
            for name, d in sorted(self.pending.items())
        ]
