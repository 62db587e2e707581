"""The fault suite: the real processes (the operator against the real kube-apiserver and etcd, the
daemon against the emulator) driven through faults, with the invariants checked after each.

Short form (runs in `make test`): the faults that take seconds. Full form, on demand:
`LOCALMODEL_FAULTS=full pytest -m faults` (adds the long outages: the API server down 90 s, etcd
down, a frozen engine during a deletion until the finalizer is released). The figures, side by
side, come from `bench/faults.py`.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("LOCALMODEL_FAULTS", "short") == "full"

full_only = pytest.mark.skipif(not FULL, reason="long fault: run with LOCALMODEL_FAULTS=full")
