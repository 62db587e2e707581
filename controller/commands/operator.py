"""`localmodel operator`: the Kubernetes operator (central Deployment or per-node agent)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = """\
Reconcile LocalModel objects (localmodel.io/v1alpha1) on a Kubernetes cluster: pull each model, apply
its settings with _configure, verify what the engine reports, re-apply on drift, and write the
Ready/Reconciling/Stalled conditions that kubectl wait, Flux, Helm and Argo CD read.

modes:
  central     one Deployment reconciles every LocalModel on a list of engines: --engine (repeatable),
              else --engines-configmap, else LOCALMODEL_ENGINES, else whichever of the in-cluster
              docker-model-runner Service (in the operator's namespace) and the host's DMR (kind,
              minikube) answers.
  node-agent  a DaemonSet, one agent per node: the node's own engine (its address, --engine-port),
              for the LocalModels whose spec.nodeSelector matches the node's labels. Each agent
              reports in its node's LocalModelNode (kubectl get lmn) and renews a Lease
              (localmodel-agent-<node>, operator's namespace). One agent, elected on the Lease
              localmodel-aggregator, writes each LocalModel's summary (READY 37/40) and holds its
              one finalizer: a matching node without a live agent is named in the status but does
              not hold Ready back, nor a deletion.

central mode runs two replicas in the shipped manifests: they elect a leader on a Lease; the standby
replica reconciles nothing and writes nothing until it takes over (its /readyz answers 200: it is
healthy and ready to lead; the localmodel_operator_leader metric says which replica leads).
"""

EPILOG = """\
examples:
  localmodel operator --engine http://127.0.0.1:12434 --kubeconfig ~/.kube/config
  localmodel operator --engine gpu1=http://10.0.0.7:12434 --engine gpu2=http://10.0.0.8:12434
  localmodel operator --mode node-agent --node-name "$NODE_NAME"          # in a DaemonSet
  kubectl wait --for=condition=Ready localmodel/qwen3 --timeout=10m

Probes and metrics on --health-addr: /healthz, /readyz, /metrics; /readyz answers 503 naming a
permission the API server refuses (`missing permission: patch localmodels/status ...`). Logs: one JSON
object per line off a terminal (--log-format); an API-server outage is one line when it starts and one
when it ends. SIGINT or SIGTERM stops it.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (central or node-agent mode)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode", choices=("central", "node-agent"), default="central", help="central (default) or node-agent"
    )
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="an engine to reconcile on (repeatable). node-agent: the node's engine URL instead of the node's address",
    )
    parser.add_argument(
        "--engines-configmap",
        metavar="NAME",
        help="central: read the engine list from this ConfigMap in the operator's namespace "
        "(key 'engines': one [NAME=]URL per line; needs `get` on it, which the shipped "
        "RBAC does not grant)",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        metavar="NODE",
        help="node-agent: this agent's node (default: $NODE_NAME from the downward API)",
    )
    parser.add_argument(
        "--node-ip",
        default=os.environ.get("NODE_IP"),
        metavar="IP",
        help="node-agent: the node's address (default: $NODE_IP, else the Node's InternalIP)",
    )
    parser.add_argument(
        "--engine-port",
        type=int,
        default=12434,
        metavar="PORT",
        help="node-agent: DMR's port on the node (default: 12434)",
    )
    parser.add_argument(
        "--agent-node-selector",
        default="",
        metavar="K=V,...",
        help="node-agent: the labels of the nodes that run an agent (the DaemonSet's "
        "nodeSelector); only those nodes are expected to report",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch LocalModels in this namespace only (repeatable)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch LocalModels in every namespace (the default)"
    )
    parser.add_argument(
        "--operator-namespace",
        metavar="NS",
        help="the operator's own namespace, for --engines-configmap and discovery "
        "(default: $POD_NAMESPACE, the service account's namespace, else default)",
    )
    parser.add_argument(
        "--drift-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often each LocalModel is checked against its engines when nothing happens (default: 30)",
    )
    parser.add_argument(
        "--watch-period",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="engine watch: how often each engine's stored configs are looked at (one request per engine, "
        "shared by every LocalModel), to repair a restart, an unload or an overwrite at once; 0 turns it off "
        "(default: 1)",
    )
    parser.add_argument(
        "--workers", type=int, default=16, metavar="N", help="LocalModels reconciled at the same time (default: 16)"
    )
    parser.add_argument(
        "--finalize-attempts",
        type=int,
        default=5,
        metavar="N",
        help="tries to apply deletionPolicy on an engine before the finalizer is released "
        "with a Warning event (default: 5, with backoff 1s, 2s, 4s, ...); what is still owed is kept in the "
        "ConfigMap localmodel-cleanups of the operator's namespace and applied when the engine answers again",
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="central: replicas elect a leader on the Lease localmodel-leader in the operator's namespace; only "
        "the leader reconciles and writes status, the others stand by and take over within the lease duration "
        "(default: on; --no-leader-election for a single replica without Lease access)",
    )
    parser.add_argument(
        "--leader-lease-seconds",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="central: the leader lease's duration; a standby takes over this long after the leader's last "
        "renewal (default: 15, renewed every 2)",
    )
    parser.add_argument(
        "--agent-lease-seconds",
        type=float,
        default=40.0,
        metavar="SECONDS",
        help="node-agent: each agent's presence Lease duration, renewed every quarter of it (default: 40, as "
        "the kubelet's node lease); a matching node without a live agent is named in the status, not waited for. "
        "Also the timing of the Lease localmodel-aggregator, whose holder writes the LocalModels' summaries",
    )
    parser.add_argument(
        "--health-addr",
        default=":8080",
        metavar="HOST:PORT",
        help="where /healthz, /readyz and /metrics are served (default: :8080)",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig to use outside a cluster (default: $KUBECONFIG, ~/.kube/config)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), help="text on a terminal, json otherwise (default)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import kopf

    from controller.listen import parse_addr
    from controller.logs import setup_logging
    from controller.operator.config import OperatorConfig
    from controller.operator.handlers import build_registry
    from controller.operator.targeting import parse_selector

    setup_logging(args.log_format, level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = OperatorConfig(
            mode=args.mode,
            node_name=args.node_name if args.mode == "node-agent" else None,
            node_ip=args.node_ip,
            engine_port=args.engine_port,
            engines=tuple(args.engine),
            engines_configmap=args.engines_configmap,
            operator_namespace=args.operator_namespace or operator_namespace(),
            namespaces=tuple(args.namespace),
            agent_node_selector=parse_selector(args.agent_node_selector, "--agent-node-selector"),
            drift_interval=args.drift_interval,
            watch_period=args.watch_period or None,
            worker_limit=args.workers,
            finalize_attempts=args.finalize_attempts,
            health_addr=args.health_addr,
            leader_election=args.leader_election,
            leader_lease_seconds=args.leader_lease_seconds,
            agent_lease_seconds=args.agent_lease_seconds,
        )
    except ValueError as exc:
        print(f"localmodel operator: {exc}", file=sys.stderr)
        return 2
    try:
        parse_addr(config.health_addr)
    except ValueError as exc:
        print(f"localmodel operator: --health-addr: {exc}", file=sys.stderr)
        return 2
    if config.mode == "node-agent" and not config.node_name:
        print(
            "localmodel operator: node-agent mode needs --node-name (or NODE_NAME from the downward API)",
            file=sys.stderr,
        )
        return 2
    if args.watch_period < 0 or args.watch_period != args.watch_period:
        print("localmodel operator: --watch-period must be 0 (off) or more seconds", file=sys.stderr)
        return 2
    if not args.leader_lease_seconds >= 1 or not args.agent_lease_seconds >= 1:
        print(
            "localmodel operator: --leader-lease-seconds and --agent-lease-seconds must be 1 or more", file=sys.stderr
        )
        return 2
    if args.drift_interval <= 0 or args.workers < 1 or args.finalize_attempts < 1:
        print(
            "localmodel operator: --drift-interval, --workers and --finalize-attempts must be positive", file=sys.stderr
        )
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).expanduser())
    kopf.run(
        registry=build_registry(config),
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
    )
    return 0


def operator_namespace() -> str:
    """$POD_NAMESPACE, else the service account's namespace, else `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if path.is_file():
        return path.read_text().strip() or "default"
    return "default"
