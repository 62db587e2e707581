"""Settings shared by every test level."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

# Every `localmodel watch` a test starts saves its status (controller/standalone/state.py) under the
# state directory: one of this run's own, never the user's ~/.local/state (set before the test modules
# are imported: their process environments are built then).
_STATE_HOME = tempfile.mkdtemp(prefix="localmodel-test-state-")
atexit.register(shutil.rmtree, _STATE_HOME, True)
os.environ["XDG_STATE_HOME"] = _STATE_HOME
os.environ.pop("STATE_DIRECTORY", None)

# Shared CI machines are slow and noisy: no per-example deadline. The `ci` profile (.ci/run) is
# derandomized so that a landing never depends on luck; locally every run explores new examples.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Fixtures for the real peers (kube-apiserver + etcd, Docker Model Runner): tests/support/peers.py; the
# LocalModel CRD and RBAC installed on that API server, and an admin client: tests/support/kube.py.
pytest_plugins = ["tests.support.peers", "tests.support.kube"]
