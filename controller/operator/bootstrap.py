"""Start-up: find this process's engines (and, for a node agent, its node), then build the Operator."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from controller.engine.client import EngineClient
from controller.operator.agent import NodeAgent, aggregator_elector
from controller.operator.config import OperatorConfig
from controller.operator.election import ElectionTiming, LeaderElector, leader_lease_name
from controller.operator.engines import (
    EngineListError,
    EngineRef,
    configured_engines,
    discover_engines,
    discovery_candidates,
    engines_from_configmap,
    node_engine,
    parse_engine,
)
from controller.operator.identity import CENTRAL
from controller.operator.kube import KubeClient, KubeError, node_internal_ip, node_labels
from controller.operator.metrics import Metrics
from controller.operator.presence import AgentPresence
from controller.operator.runtime import EventPoster, Operator

log = logging.getLogger("localmodel.operator")

PROBE_TIMEOUT = 3.0


class StartupError(Exception):
    """The operator cannot start; the message says what to fix."""


async def build_operator(
    config: OperatorConfig,
    kube: KubeClient,
    *,
    metrics: Metrics,
    post_event: EventPoster,
    env: Mapping[str, str] = os.environ,
) -> Operator | NodeAgent:
    """Central mode: the Operator. Node-agent mode: the NodeAgent around it (agent.py)."""
    if config.mode == CENTRAL:
        engines = await central_engines(config, kube, env)
        log.info("central mode: reconciling on %s", ", ".join(f"{e.name} ({e.url})" for e in engines))
        operator = Operator(
            config, kube, engines, metrics=metrics, post_event=post_event, elector=leader_elector(config, kube)
        )
        await operator.load_cleanups()
        return operator
    nodes = await node_index(kube)
    engine = agent_engine(config, nodes)
    log.info("node-agent mode on node %s: engine %s", config.node_name, engine.url)
    operator = Operator(
        config,
        kube,
        [engine],
        metrics=metrics,
        post_event=post_event,
        nodes={name: node_labels(node) for name, node in nodes.items()},
    )
    presence = await agent_presence(config, kube)
    agent = NodeAgent(operator, kube, presence=presence, elector=aggregator_elector(config, kube, presence))
    await operator.load_cleanups()
    await agent.load()
    return agent


def leader_elector(config: OperatorConfig, kube: KubeClient) -> LeaderElector | None:
    """Central mode: the elector of the replicas (one leads), unless --no-leader-election."""
    if not config.leader_election:
        return None
    name = leader_lease_name(config.namespaces)
    log.info("leader election on lease %s/%s", config.operator_namespace, name)
    return LeaderElector(
        kube, config.operator_namespace, name, timing=ElectionTiming.for_duration(config.leader_lease_seconds)
    )


async def agent_presence(config: OperatorConfig, kube: KubeClient) -> AgentPresence:
    """Node-agent mode: this agent's Lease, renewed and listed once before the first pass."""
    assert config.node_name is not None
    presence = AgentPresence(kube, config.operator_namespace, config.node_name, duration=config.agent_lease_seconds)
    await presence.start()
    return presence


async def central_engines(config: OperatorConfig, kube: KubeClient, env: Mapping[str, str]) -> list[EngineRef]:
    try:
        # An explicit --engines-configmap wins over LOCALMODEL_ENGINES (which the shipped manifests set).
        engines = configured_engines(config.engines, {} if config.engines_configmap else env)
        if not engines and config.engines_configmap:
            try:
                configmap = await kube.get_configmap(config.operator_namespace, config.engines_configmap)
            except KubeError as exc:
                raise StartupError(
                    f"cannot read ConfigMap {config.operator_namespace}/{config.engines_configmap} "
                    f"(--engines-configmap): {exc}; the operator needs `get` on it (a Role in "
                    f"{config.operator_namespace}: the shipped RBAC grants no ConfigMap access)"
                ) from None
            engines = engines_from_configmap(configmap.get("data"), config.engines_configmap)
    except EngineListError as exc:
        raise StartupError(str(exc)) from None
    if engines:
        return engines
    candidates = discovery_candidates(config.operator_namespace)
    found = await discover_engines(candidates, engine_answers)
    if not found:
        tried = ", ".join(c.url for c in candidates)
        raise StartupError(
            f"no engine given and none found (tried {tried}): list engines with --engine URL, "
            "LOCALMODEL_ENGINES or --engines-configmap"
        )
    return found


async def engine_answers(engine: EngineRef) -> bool:
    """Whether a DMR answers at `engine.url` (GET /engines/status)."""
    async with EngineClient(engine.url, timeout=PROBE_TIMEOUT) as client:
        try:
            await client.status()
        except Exception as exc:  # noqa: BLE001 - any failure means "not here"
            log.debug("no engine at %s: %s", engine.url, exc)
            return False
    return True


async def node_index(kube: KubeClient) -> dict[str, dict]:
    try:
        return {n["metadata"]["name"]: n for n in await kube.list_nodes()}
    except KubeError as exc:
        raise StartupError(f"cannot list Nodes (node-agent mode needs get/list/watch on nodes): {exc}") from None


def agent_engine(config: OperatorConfig, nodes: Mapping[str, Mapping]) -> EngineRef:
    """The node's engine: `--engine URL` if given, else the node's address (`--node-ip`/NODE_IP, else
    its InternalIP) on `--engine-port`. The engine is named after the node in any case."""
    node = config.node_name
    if not node:
        raise StartupError(
            "node-agent mode needs the node name: --node-name, or NODE_NAME from the downward "
            "API (fieldRef: spec.nodeName)"
        )
    if node not in nodes:
        raise StartupError(f"node {node!r} (--node-name) does not exist")
    if config.engines:
        if len(config.engines) > 1:
            raise StartupError("node-agent mode serves one engine: give --engine at most once")
        try:
            return EngineRef(node, parse_engine(config.engines[0], "--engine").url)
        except EngineListError as exc:
            raise StartupError(str(exc)) from None
    address = config.node_ip or node_internal_ip(nodes[node])
    if not address:
        raise StartupError(f"node {node} reports no address: give --node-ip (NODE_IP from status.hostIP)")
    return node_engine(node, address, config.engine_port)
