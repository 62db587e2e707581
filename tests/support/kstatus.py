"""`kubectl wait --for=condition=Ready`'s view of a LocalModel (pure), for the tests and the benchmark
that poll objects many times a second.

What kstatus (Helm 4's `--wait`, Flux) concludes is not modelled here: the tests run the real
`status.Compute` (tests/support/gitops.py, tests/peers/kstatus). A Python model of it agreed with us by
construction and was wrong twice: it said kstatus ignores `Ready` (github.com/fluxcd/cli-utils v1.2.2,
which Helm 4.3 uses, falls back to it: `Ready=False` is InProgress), and it could not show that a new
object without status reads as Current.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def ready_verdict(obj: Mapping[str, Any]) -> bool:
    """True when `kubectl wait --for=condition=Ready` (which checks the condition's status; our
    conditions also carry observedGeneration) would be right to return for the current spec."""
    generation = (obj.get("metadata") or {}).get("generation")
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True" and condition.get("observedGeneration") == generation
    return False
