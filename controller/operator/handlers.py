"""The kopf handlers: when a pass runs. What a pass does is in runtime.py.

Triggers, all level-based (the pass compares the spec with what the engines report now, whatever
woke it):

- central mode: a daemon per LocalModel (`reconcile`) runs the passes: the first when the object
  appears (on creation, and for every existing object when the operator starts: that is "resume"),
  then again after the delay the reconciler asks for (a runner loading, a retry with backoff) or after
  the drift interval; the drift pass is what repairs an engine that restarted or was reconfigured by
  hand. A daemon rather than `@kopf.timer` because the next pass's time varies with the outcome;
  `finalize` (`@kopf.on.delete`, which makes kopf hold the finalizer) applies `deletionPolicy`;
- `wake` (every watch event of a LocalModel) cuts the sleep short when the spec changed (the update
  trigger) and forgets the object once it is gone;
- node-agent mode: no daemon and no delete handler (kopf would add one finalizer per agent to every
  object): `wake` relays the events to the agent (agent.py), which runs the same passes itself
  (passloops.py), reports in its LocalModelNode, and, when elected, writes the summaries and holds the
  one finalizer (aggregator.py); `node-labels` re-runs every pass when nodes or their labels change.

kopf keeps no state on the objects for these handlers: the diff-base storage is a no-op (there are
no on.create/on.update handlers to diff for) and progress annotations, written only while kopf itself
retries the delete handler, use this process's own prefix. Peering is off (`standalone`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import kopf

from controller.crd import GROUP, PLURAL, VERSION
from controller.listen import parse_addr
from controller.operator.bootstrap import StartupError, build_operator
from controller.operator.config import OperatorConfig
from controller.operator.identity import NODE_AGENT, Identity
from controller.operator.kube import SERVICE_ACCOUNT_DIR, KubeClient
from controller.operator.metrics import HealthServer, Metrics
from controller.operator.outage import ApiOutage, RetryForever
from controller.operator.runtime import Operator

log = logging.getLogger("localmodel.operator")

RESOURCE = (GROUP, VERSION, PLURAL)
WORKER_IDLE_SECONDS = 0.5


class StatelessDiffBase(kopf.DiffBaseStorage):
    """Stores no "last handled configuration" on the objects: every handler here is level-based, so
    nothing needs a diff, and N node agents must not write N copies of every spec into annotations."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT_DIR / "token").is_file()


def login(settings: kopf.OperatorSettings) -> tuple[Any, Path | None]:
    """Credentials: the pod's service account in-cluster, else the kubeconfig ($KUBECONFIG)."""
    if in_cluster():
        return kopf.login_with_service_account(settings=settings), SERVICE_ACCOUNT_DIR / "token"
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise StartupError("no credentials: run in a pod with a service account, or give --kubeconfig")
    return info, None


def event_poster(kube: KubeClient, identity: Identity) -> Callable[[Mapping[str, Any], str, str, str], None]:
    """Events go through kopf's queue; code running outside kopf's handlers (the retries of pending
    clean-ups, started at start-up) has no queue, and posts with the operator's own client."""

    def post_event(obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        try:
            # kopf types its bodies as a TypedDict; it reads only apiVersion, kind and metadata through Mapping.
            kopf.event(kopf.Body(cast(kopf.RawBody, obj)), type=kind, reason=reason, message=message[:1024])
        except LookupError:
            task = asyncio.ensure_future(
                kube.create_event(
                    obj, kind, reason, message, component=identity.reporting_component, instance=identity.agent_id
                )
            )
            task.add_done_callback(_log_event_failure)

    return post_event


def _log_event_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not post an Event: %s", task.exception())


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """The handlers of one operator process, in a registry of their own."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def credentials(settings: kopf.OperatorSettings, **_: Any) -> Any:
        return login(settings)[0]

    @kopf.on.startup(registry=registry, id="configure")
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        identity = config.identity
        settings.persistence.finalizer = identity.finalizer
        settings.persistence.diffbase_storage = StatelessDiffBase()
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=identity.annotation_prefix)
        settings.queueing.worker_limit = config.worker_limit
        # A kopf worker lingers this long after an object's last event while holding one of the
        # worker_limit slots: at kopf's default (5 s) 16 slots handle 3 objects a second, so 500 new
        # objects would wait minutes for their finalizer, and live bodies would lag behind the
        # status writes (each stale write costs a 409 and a re-read). The passes themselves are
        # bounded separately (Operator's semaphore), so workers can come and go quickly.
        settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
        settings.posting.level = logging.WARNING  # kopf's own handler chatter; our Events go explicitly
        settings.posting.reporting_component = identity.reporting_component
        settings.posting.reporting_instance = identity.agent_id
        settings.scanning.disabled = True
        settings.peering.standalone = True
        # API-server outages (outage.py): requests and watches are retried without end, at most 5 s
        # apart (kopf's default gives up after 54 s and restarts the sequence), with one log line when
        # the outage starts and one when it ends instead of one per attempt.
        settings.networking.error_backoffs = RetryForever()
        memo.metrics = Metrics()
        memo.health = HealthServer(memo.metrics, *parse_addr(config.health_addr))
        await memo.health.start()
        try:
            info, token_file = login(settings)
            memo.kube = KubeClient.from_connection_info(info, token_file)
            memo.outage = ApiOutage(memo.kube.api_ready)
            memo.outage.install(asyncio.get_running_loop())
            memo.operator = await build_operator(
                config, memo.kube, metrics=memo.metrics, post_event=event_poster(memo.kube, identity)
            )
            if isinstance(memo.operator, Operator):
                # Leadership lost (election.py): stop at once; the pod restarts as a standby replica.
                memo.operator.on_lost_leadership = lambda: os.kill(os.getpid(), signal.SIGTERM)
            memo.operator.start_watches()
        except StartupError as exc:
            raise kopf.PermanentError(str(exc)) from None
        memo.health.problems = memo.operator.problems
        memo.operator.outage = memo.outage
        memo.health.ready = True

    @kopf.on.cleanup(registry=registry, id="close")
    async def close(memo: kopf.Memo, **_: Any) -> None:
        if memo.get("outage") is not None:
            memo.outage.uninstall()
        if memo.get("operator") is not None:
            await memo.operator.aclose()
        if memo.get("kube") is not None:
            await memo.kube.aclose()
        if memo.get("health") is not None:
            await memo.health.stop()

    # async: kopf runs sync handlers in a thread pool, and the wake-ups are asyncio Events of this loop.
    @kopf.on.event(*RESOURCE, registry=registry, id="wake")
    async def wake(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.operator.object_changed(event.get("type"), body)

    if config.mode != NODE_AGENT:
        # Central mode: kopf runs the passes (a daemon per object) and holds the finalizer. A node agent
        # runs its passes itself (passloops.py) and holds no finalizer: kopf would add one per agent.

        @kopf.daemon(*RESOURCE, registry=registry, id="reconcile", cancellation_backoff=5.0, cancellation_timeout=10.0)
        async def keep_reconciled(
            body: kopf.Body, uid: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
        ) -> None:
            while not stopped and not memo.operator.closed:
                delay = await memo.operator.reconcile_object(body, live=True)
                await memo.operator.wait_for_next_pass(uid, delay, stopped.wait())

        @kopf.on.delete(*RESOURCE, registry=registry, id="finalize")
        async def finalize(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
            await memo.operator.finalize_object(body)

    else:

        @kopf.on.event("", "v1", "nodes", registry=registry, id="node-labels")
        async def node_labels(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
            memo.operator.node_changed(event.get("type"), body)

    return registry
