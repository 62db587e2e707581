"""What kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) concludes about a LocalModel (pure), for tests.

The tests that need the real kstatus run it (tests/support/gitops.py); this model is for the tests and the
benchmark that only read conditions.

Helm 4 `--wait`, Flux `wait: true` and `kpt live status` compute a verdict with these generic rules,
which apply to every custom resource without resource-specific rules (`checkGenericProperties`, then
the fallback of `Compute`):

1. `metadata.deletionTimestamp` set                        -> Terminating
2. `status.observedGeneration` present and != generation   -> InProgress
3. a `Reconciling` condition with status True              -> InProgress
4. a `Stalled` condition with status True                  -> Failed
5. otherwise                                               -> Current

kstatus itself ignores `Ready`, so `Ready` must agree with the others: the controller writes
`Reconciling=True` for as long as `Ready` is not yet True and no permanent error is known. `ready_verdict`
is the `kubectl wait --for=condition=Ready` view: the Ready condition is True and was computed for the
current generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    CURRENT = "Current"
    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    TERMINATING = "Terminating"


def kstatus_verdict(obj: Mapping[str, Any]) -> Verdict:
    """The kstatus status of an object (a dict as the API server returns it)."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return Verdict.TERMINATING
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return Verdict.IN_PROGRESS
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return Verdict.IN_PROGRESS
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return Verdict.FAILED
    return Verdict.CURRENT


def ready_verdict(obj: Mapping[str, Any]) -> bool:
    """True when `kubectl wait --for=condition=Ready` (which checks the condition's status; our
    conditions also carry observedGeneration) would be right to return for the current spec."""
    generation = (obj.get("metadata") or {}).get("generation")
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True" and condition.get("observedGeneration") == generation
    return False
