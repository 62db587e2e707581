"""The few Kubernetes API calls the operator makes itself (kopf does the watching, the central
operator's finalizer and most Events): read a LocalModel, write its status and finalizers, a node
agent's LocalModelNode and the aggregator's watch of them, Nodes, a ConfigMap, Leases.

Status is written with server-side apply on the status subresource, under this process's own field
manager (the central operator's with the resourceVersion it was computed from as a precondition: a
write computed from a stale object gets 409, re-reads and recomputes).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from controller.crd import GROUP, NODE_PLURAL, PLURAL, VERSION
from controller.spec import API_VERSION, KIND

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APPLY_CONTENT_TYPE: Final = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE: Final = "application/json-patch+json"
LEASE_GROUP: Final = "coordination.k8s.io"
WATCH_SECONDS: Final = 300
MAX_WATCH_EVENT_BYTES: Final = 8 * 1024 * 1024  # a LocalModelNode of a few hundred models is tens of kB


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class Conflict(KubeError):
    """409: the object changed since it was read (or a field is owned by another manager)."""


class Gone(KubeError):
    """404: the object does not exist (any more)."""


class Forbidden(KubeError):
    """403: this process's account lacks a permission. `verb`, `resource` (`localmodels/status`),
    `group` and `namespace` name it, for the Warning event and /readyz."""

    def __init__(self, status: int, message: str, *, verb: str, group: str, resource: str, namespace: str | None):
        super().__init__(status, message)
        self.verb, self.group, self.resource, self.namespace = verb, group, resource, namespace

    @property
    def permission(self) -> str:
        """`patch localmodels/status (localmodel.io) in namespace ns`."""
        where = f" in namespace {self.namespace}" if self.namespace else ""
        group = f" ({self.group})" if self.group else ""
        return f"{self.verb} {self.resource}{group}{where}"


@dataclass(frozen=True)
class Permission:
    """One verb on one resource: what a SelfSubjectAccessReview asks."""

    verb: str
    group: str
    resource: str  # with its subresource: `localmodels/status`
    namespace: str | None = None


class KubeClient:
    """An async client for one API server. Build it with `from_connection_info`."""

    def __init__(
        self,
        server: str,
        *,
        token: Callable[[], str | None] = lambda: None,
        headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = token
        self._http = httpx.AsyncClient(
            base_url=server.rstrip("/"), headers=dict(headers or {}), verify=verify, transport=transport, timeout=30.0
        )
        self.requests_sent = 0

    @classmethod
    def from_connection_info(cls, info: Any, token_file: Path | None = None) -> KubeClient:
        """From a kopf `ConnectionInfo` (kubeconfig or in-cluster service account), with its TLS
        settings and credentials. `token_file`: re-read the bearer token from this file on every
        request (the in-cluster projected token, which the kubelet rotates before it expires)."""
        headers = info.as_http_headers()

        def token() -> str | None:
            if token_file is not None and token_file.is_file():
                return token_file.read_text().strip() or info.token
            return None

        return cls(info.server, token=token, headers=headers, verify=info.as_ssl_context())

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- LocalModels ---------------------------------------------------------------------------

    async def get_localmodel(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._request("GET", _localmodel_path(namespace, name))

    async def apply_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str | None, field_manager: str
    ) -> dict[str, Any]:
        """Server-side apply `status` (only the fields this manager owns) with a resourceVersion
        precondition; raises Conflict when the object changed since it was read."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "status": dict(status)}
        return await self._request(
            "PATCH",
            _localmodel_path(namespace, name) + "/status",
            content=json.dumps(body),
            params={"fieldManager": field_manager, "force": "true"},
            headers={"Content-Type": APPLY_CONTENT_TYPE},
            permission=Permission("patch", GROUP, f"{PLURAL}/status", namespace),
        )

    async def update_finalizers(
        self,
        namespace: str,
        name: str,
        current: Mapping[str, Any],
        *,
        add: str | None = None,
        remove: Collection[str] = (),
    ) -> dict[str, Any]:
        """Add one finalizer and remove others in one JSON patch, guarded by the object's resourceVersion
        and each removed finalizer's value (Conflict, or 422 from a failed test, when it moved)."""
        rv = (current.get("metadata") or {}).get("resourceVersion")
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
        finalizers = list((current.get("metadata") or {}).get("finalizers") or [])
        for index in sorted((i for i, f in enumerate(finalizers) if f in remove), reverse=True):
            ops.append({"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizers[index]})
            ops.append({"op": "remove", "path": f"/metadata/finalizers/{index}"})
        if add is not None and add not in finalizers:
            if (current.get("metadata") or {}).get("finalizers") is None:
                ops.append({"op": "add", "path": "/metadata/finalizers", "value": [add]})
            else:
                ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": add})
        return await self._request(
            "PATCH",
            _localmodel_path(namespace, name),
            content=json.dumps(ops),
            headers={"Content-Type": JSON_PATCH_CONTENT_TYPE},
            permission=Permission("patch", GROUP, PLURAL, namespace),
        )

    async def remove_status_field(self, namespace: str, name: str, current: Mapping[str, Any], field: str) -> None:
        """Remove `status.<field>` (the per-node `engines[]` of the layout before LocalModelNodes), guarded
        by the object's resourceVersion."""
        rv = (current.get("metadata") or {}).get("resourceVersion")
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "remove", "path": f"/status/{field}"},
        ]
        await self._request(
            "PATCH",
            _localmodel_path(namespace, name) + "/status",
            content=json.dumps(ops),
            headers={"Content-Type": JSON_PATCH_CONTENT_TYPE},
            permission=Permission("patch", GROUP, f"{PLURAL}/status", namespace),
        )

    # ---- LocalModelNodes (a node agent's report: nodereport.py) --------------------------------

    async def get_localmodelnode(self, name: str) -> dict[str, Any]:
        return await self._request(
            "GET", _node_report_path(name), permission=Permission("get", GROUP, NODE_PLURAL, None)
        )

    async def apply_localmodelnode(self, body: Mapping[str, Any], *, field_manager: str) -> dict[str, Any]:
        """Create or update a LocalModelNode with server-side apply (its agent is its only writer)."""
        return await self._request(
            "PATCH",
            _node_report_path(body["metadata"]["name"]),
            content=json.dumps(body),
            params={"fieldManager": field_manager, "force": "true"},
            headers={"Content-Type": APPLY_CONTENT_TYPE},
            permission=Permission("patch", GROUP, NODE_PLURAL, None),
        )

    async def list_localmodelnodes(self, label_selector: str) -> tuple[list[dict[str, Any]], str]:
        """The LocalModelNodes with these labels and the list's resourceVersion (to watch from)."""
        answer = await self._request(
            "GET",
            _node_report_path(),
            params={"labelSelector": label_selector},
            permission=Permission("list", GROUP, NODE_PLURAL, None),
        )
        return list(answer.get("items") or []), str((answer.get("metadata") or {}).get("resourceVersion") or "")

    async def watch_localmodelnodes(
        self, label_selector: str, resource_version: str, *, timeout_seconds: int = WATCH_SECONDS
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events of LocalModelNodes after `resource_version` (BOOKMARKs included), until the
        server ends the watch (about `timeout_seconds`). Gone (410 in the stream or as the answer): list again."""
        params = {
            "watch": "1",
            "labelSelector": label_selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        timeout = httpx.Timeout(30.0, read=timeout_seconds + 30.0)
        self.requests_sent += 1
        try:
            async with self._http.stream(
                "GET", _node_report_path(), params=params, headers=self._auth(), timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = {404: Gone, 410: Gone, 409: Conflict}.get(response.status_code, KubeError)
                    raise error(response.status_code, f"watch localmodelnodes: {_api_message(response)}")
                async for line in response.aiter_lines():
                    if len(line) > MAX_WATCH_EVENT_BYTES:
                        raise KubeError(0, f"watch localmodelnodes: an event of {len(line)} bytes; restarting")
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        error = Gone if status.get("code") == 410 else KubeError
                        raise error(int(status.get("code") or 0), f"watch localmodelnodes: {status.get('message')}")
                    yield event
        except httpx.HTTPError as exc:
            raise KubeError(0, f"watch localmodelnodes: {exc!r}") from exc
        except ValueError as exc:
            raise KubeError(0, f"watch localmodelnodes: not JSON: {exc}") from exc

    # ---- Nodes and ConfigMaps ------------------------------------------------------------------

    async def list_nodes(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "/api/v1/nodes")).get("items") or [])

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(
            "GET",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            permission=Permission("get", "", "configmaps", namespace),
        )

    async def apply_configmap_key(
        self, namespace: str, name: str, key: str, value: str, *, field_manager: str
    ) -> dict[str, Any]:
        """Server-side apply one key of a ConfigMap's data, owned by `field_manager` (other keys stay)."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
        body["data"] = {key: value}
        return await self._request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            content=json.dumps(body),
            params={"fieldManager": field_manager, "force": "true"},
            headers={"Content-Type": APPLY_CONTENT_TYPE},
            permission=Permission("patch", "", "configmaps", namespace),
        )

    async def list_localmodels(self, namespace: str | None = None) -> list[dict[str, Any]]:
        path = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
            if namespace
            else f"/apis/{GROUP}/{VERSION}/{PLURAL}"
        )
        return list((await self._request("GET", path)).get("items") or [])

    # ---- Events --------------------------------------------------------------------------------

    async def create_event(
        self, obj: Mapping[str, Any], kind: str, reason: str, message: str, *, component: str, instance: str
    ) -> dict[str, Any]:
        """A core/v1 Event about `obj` (kopf posts the others; this is for code outside its handlers)."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"  # a cluster-scoped object's Events (a Node's) live there
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        }
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'localmodel')}.", "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": instance,
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "eventTime": now,
            "action": reason,
            "count": 1,
        }
        return await self._request(
            "POST",
            f"/api/v1/namespaces/{namespace}/events",
            content=json.dumps(event),
            headers={"Content-Type": "application/json"},
            permission=Permission("create", "", "events", namespace),
        )

    # ---- Leases (agent presence, leader election: leases.py) -----------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(
            "GET", _lease_path(namespace, name), permission=Permission("get", LEASE_GROUP, "leases", namespace)
        )

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Lease; Conflict (409) when another process created it first."""
        return await self._request(
            "POST",
            _lease_path(namespace),
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
            permission=Permission("create", LEASE_GROUP, "leases", namespace),
        )

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a Lease; `body.metadata.resourceVersion` is the precondition (Conflict when it moved)."""
        return await self._request(
            "PUT",
            _lease_path(namespace, body["metadata"]["name"]),
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
            permission=Permission("update", LEASE_GROUP, "leases", namespace),
        )

    async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The Leases with these labels, from the API server's watch cache (resourceVersion=0)."""
        answer = await self._request(
            "GET",
            _lease_path(namespace),
            params={"labelSelector": label_selector, "resourceVersion": "0"},
            permission=Permission("list", LEASE_GROUP, "leases", namespace),
        )
        return list(answer.get("items") or [])

    async def api_ready(self) -> bool:
        """Whether the API server says it is ready (`GET /readyz`, open to every account): the probe of
        an outage (outage.py)."""
        try:
            response = await self._http.get("/readyz", headers=self._auth(), timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _auth(self) -> dict[str, str]:
        token = self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    # ---- permissions ---------------------------------------------------------------------------

    async def allowed(self, permission: Permission) -> bool:
        """Whether this account has `permission` (a SelfSubjectAccessReview, which every authenticated
        account may create)."""
        resource, _, subresource = permission.resource.partition("/")
        attributes: dict[str, Any] = {"verb": permission.verb, "group": permission.group, "resource": resource}
        if subresource:
            attributes["subresource"] = subresource
        if permission.namespace:
            attributes["namespace"] = permission.namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = await self._request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            content=json.dumps(review),
            headers={"Content-Type": "application/json"},
        )
        return (answer.get("status") or {}).get("allowed") is True

    # ---- plumbing ------------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, permission: Permission | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        headers = dict(kwargs.pop("headers", {}) or {})
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.requests_sent += 1
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeError(0, f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 400:
            message = _api_message(response)
            if response.status_code == 403 and permission is not None:
                raise Forbidden(
                    403,
                    f"{method} {path}: {message}",
                    verb=permission.verb,
                    group=permission.group,
                    resource=permission.resource,
                    namespace=permission.namespace,
                )
            error = {409: Conflict, 404: Gone}.get(response.status_code, KubeError)
            raise error(response.status_code, f"{method} {path}: {message}")
        return response.json() if response.content else {}


def _localmodel_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def _node_report_path(name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/{NODE_PLURAL}"
    return f"{base}/{name}" if name else base


def _lease_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{LEASE_GROUP}/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def _api_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return response.text.strip()


def node_labels(node: Mapping[str, Any]) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def node_internal_ip(node: Mapping[str, Any]) -> str | None:
    """The node's InternalIP (else its first address), where a node's DMR listens."""
    addresses = (node.get("status") or {}).get("addresses") or []
    for kind in ("InternalIP", "ExternalIP", "Hostname"):
        for address in addresses:
            if address.get("type") == kind and address.get("address"):
                return str(address["address"])
    return None
