# Fixtures for the peer smoke tests. Other test directories get them from
# `pytest_plugins = ["tests.support.peers"]` in tests/conftest.py.
from tests.support.peers import (  # noqa: F401
    dmr_server,
    dmr_server_factory,
    kube_apiserver,
    kube_namespace,
    model_registry,
    peer_binaries,
)
