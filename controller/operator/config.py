"""How one operator process is configured (built from the command line by `localmodel operator`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.operator.identity import CENTRAL, Identity


@dataclass(frozen=True)
class OperatorConfig:
    mode: str = CENTRAL
    node_name: str | None = None  # node-agent mode
    node_ip: str | None = None  # node-agent mode: the node's address (else its InternalIP)
    engine_port: int = 12434  # node-agent mode: DMR's port on the node
    engines: tuple[str, ...] = ()  # central: `[NAME=]URL` items; node-agent: at most one URL
    engines_configmap: str | None = None
    operator_namespace: str = "default"
    namespaces: tuple[str, ...] = ()  # watched namespaces; empty: all of them
    agent_node_selector: dict[str, str] = field(default_factory=dict)
    drift_interval: float = 30.0
    watch_period: float | None = 1.0  # the engine watch (controller.engine.watch); None: drift passes only
    worker_limit: int = 16  # concurrent passes (and kopf workers)
    finalize_attempts: int = 5
    finalize_backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    health_addr: str = ":8080"
    leader_election: bool = True  # central: replicas elect a leader on a Lease (election.py)
    leader_lease_seconds: float = 15.0
    agent_lease_seconds: float = 40.0  # node-agent: presence Lease duration (presence.py)

    @property
    def identity(self) -> Identity:
        return Identity(self.mode, self.node_name if self.mode != CENTRAL else None)
