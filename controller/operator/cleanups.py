"""Clean-ups still owed to engines after a finalizer was released.

When an engine does not answer while a LocalModel is deleted, the finalizer is released after
`--finalize-attempts` (the user's `kubectl delete` must not hang on an engine that may never come
back), so the object is gone but its config (and, for `deletionPolicy: Delete`, its model) may still be
on the engine. This module remembers each such clean-up until the engine answers again, then applies
the deletionPolicy and reports it (a log line, a Normal `CleanedUp` Event on the deleted object, the
`localmodel_operator_pending_cleanups` gauge).

Where the record lives, and why there: a ConfigMap in the operator's namespace
(`localmodel-cleanups`, shipped empty by deploy/; the operator may only `get` and `patch` that one
name), one key per writer (`central`, `agent-<node>`) written by server-side apply under the writer's
own field manager, so node agents never overwrite each other. It survives the released finalizer and
the process. The engine itself cannot be the record: it does not say who stored a config, so "a config
of a model no LocalModel declares" would also take the configs that Compose, a person or another tool
set; only what this operator owed is removed. A clean-up is dropped unapplied when a LocalModel again
declares the same model (it owns the engine's config now). Without the ConfigMap (not created, not
permitted) the record is kept in memory only, and the log says how to fix it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from controller.backoff import Retries

log = logging.getLogger("localmodel.operator")

CONFIGMAP_NAME: Final = "localmodel-cleanups"
MAX_ENTRIES: Final = 2000  # a ConfigMap holds 1 MiB; older entries beyond this are dropped with a warning
RETRIES: Final = Retries(first=2.0, cap=30.0)  # an engine that owes a clean-up is tried again this often


@dataclass(frozen=True)
class Cleanup:
    """One deletionPolicy still to apply on one engine, for a LocalModel that is gone."""

    key: str  # namespace/name of the deleted object
    uid: str
    engine: str
    spec: dict[str, Any]  # the object's spec, as it was when deleted
    released: str  # when the finalizer was released (RFC 3339)
    reason: str  # why it could not be applied then

    @property
    def id(self) -> str:
        return f"{self.uid}@{self.engine}"

    @property
    def model(self) -> str:
        return str(self.spec.get("model", ""))

    def involved_object(self, api_version: str, kind: str) -> dict[str, Any]:
        """A body to post Events on (the object is gone; the Event still names it)."""
        namespace, _, name = self.key.partition("/")
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"namespace": namespace, "name": name, "uid": self.uid},
        }


def encode(entries: Mapping[str, Cleanup]) -> str:
    return json.dumps([asdict(entry) for entry in entries.values()], sort_keys=True, separators=(",", ":"))


def decode(text: str | None) -> dict[str, Cleanup]:
    """The entries held in a ConfigMap value; entries that do not parse are skipped with a warning."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        log.warning("ConfigMap %s: unreadable record of pending clean-ups (%s); starting empty", CONFIGMAP_NAME, exc)
        return {}
    entries: dict[str, Cleanup] = {}
    for item in raw if isinstance(raw, list) else ():
        try:
            entry = Cleanup(**{k: item[k] for k in ("key", "uid", "engine", "spec", "released", "reason")})
        except (KeyError, TypeError) as exc:
            log.warning("ConfigMap %s: skipping a pending clean-up that does not parse: %s", CONFIGMAP_NAME, exc)
            continue
        entries[entry.id] = entry
    return entries


def bounded(entries: dict[str, Cleanup]) -> dict[str, Cleanup]:
    """At most MAX_ENTRIES, the newest kept."""
    if len(entries) <= MAX_ENTRIES:
        return entries
    ordered = sorted(entries.values(), key=lambda e: e.released)
    dropped = ordered[: len(ordered) - MAX_ENTRIES]
    log.warning(
        "more than %d pending clean-ups: forgetting the %d oldest (their configs stay on the engines)",
        MAX_ENTRIES,
        len(dropped),
    )
    return {e.id: e for e in ordered[len(dropped) :]}
