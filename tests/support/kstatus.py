"""`kubectl wait --for=condition=Ready`'s view of a LocalModel (pure), for the tests and the benchmark
that poll objects many times a second.

What kstatus (Helm 4's `--wait`, Flux) concludes is not modelled here: the tests run the real
`status.Compute` (tests/support/gitops.py, tests/peers/kstatus). The Python model of it that was here
agreed with us by construction: it said kstatus ignores `Ready` (github.com/fluxcd/cli-utils v1.2.2, which
Helm 4.3 uses, falls back to it: `Ready=False` alone is InProgress), and only ever read objects that tests
built, never a new one before the operator's first write (which kstatus read as Current).
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
