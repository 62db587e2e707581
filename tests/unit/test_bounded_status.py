"""Bounded status in node-agent mode (issue 15): each agent reports in its own LocalModelNode
(nodereport.py); the elected aggregator writes a summary whose size does not depend on the node count
(summary.py), holds the one finalizer and upgrades the old layout (aggregator.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from controller.operator.aggregator import FINALIZER, Aggregator
from controller.operator.kube import Conflict, Gone
from controller.operator.nodereport import NodeReport, node_entries, report_node, report_scope
from controller.operator.summary import MAX_FAILING_NODES, same_summary, summarize_nodes
from controller.status import EngineStatus, Phase, Reason

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def ready(node: str, generation: int = 1) -> EngineStatus:
    return EngineStatus(
        node, Phase.READY, Reason.APPLIED, "applied and verified", ready=True, backend="llama.cpp",
        observed_generation=generation,
    )  # fmt: skip


def failing(node: str, generation: int = 1) -> EngineStatus:
    return EngineStatus(
        node, Phase.STALLED, Reason.PULL_FAILED, "pull failed: not found", stalled=True, observed_generation=generation
    )


def entry(status: EngineStatus, uid: str = "u1") -> dict[str, Any]:
    report = NodeReport(status.engine)
    report.report("ns", "m", uid, status)
    found = report.entry(uid)
    assert found is not None
    return found


# ---- the node report --------------------------------------------------------------------------


def test_a_node_report_holds_one_entry_per_localmodel_and_counts_ready() -> None:
    report = NodeReport("gpu-1")
    report.report("ns", "a", "u1", ready("gpu-1"))
    report.report("ns", "b", "u2", failing("gpu-1"))
    body = report.body()
    assert body["kind"] == "LocalModelNode"
    assert body["metadata"]["name"] == "gpu-1"
    assert body["metadata"]["labels"] == {"localmodel.io/node": "gpu-1", "localmodel.io/scope": "cluster"}
    assert body["status"]["ready"] == "1/2"
    assert [(e["name"], e["uid"], e["reason"]) for e in body["status"]["models"]] == [
        ("a", "u1", "Applied"),
        ("b", "u2", "PullFailed"),
    ]


def test_agents_that_watch_some_namespaces_keep_a_report_of_their_own_on_the_node() -> None:
    body = NodeReport("gpu-1", report_scope(("team-b", "team-a"))).body()
    assert body["metadata"]["name"] == "gpu-1.ns-team-a-team-b"
    assert body["metadata"]["labels"]["localmodel.io/node"] == "gpu-1"
    assert report_node(body) == "gpu-1"


def test_a_node_report_changes_only_when_an_entry_changes() -> None:
    report = NodeReport("gpu-1")
    report.report("ns", "a", "u1", ready("gpu-1"))
    assert report.changed
    report.mark_written(report.entries)
    report.report("ns", "a", "u1", ready("gpu-1"))
    assert not report.changed
    report.drop("u1")
    assert report.changed


def test_a_restarted_agent_keeps_its_entries_history_and_writes_nothing_new() -> None:
    before = NodeReport("gpu-1")
    applied = EngineStatus(
        "gpu-1", Phase.READY, Reason.APPLIED, "ok", ready=True, observed_generation=1, last_applied_time=NOW
    )
    before.report("ns", "a", "u1", applied)
    after = NodeReport("gpu-1")
    after.load(json.loads(json.dumps(before.body())))
    after.report("ns", "a", "u1", replace(applied, last_applied_time=None))  # a restarted agent does not know when
    assert after.entries["u1"]["lastAppliedTime"] == "2026-12-04T12:00:00Z"
    assert not after.changed


def test_entries_of_deleted_localmodels_are_dropped_on_start() -> None:
    report = NodeReport("gpu-1")
    report.report("ns", "a", "u1", ready("gpu-1"))
    report.report("ns", "b", "u2", ready("gpu-1"))
    assert report.keep_only({"u2"}) == ["u1"]
    assert set(report.entries) == {"u2"}


# ---- the summary ------------------------------------------------------------------------------


def test_the_summary_counts_ready_nodes_for_the_ready_column() -> None:
    reports = {f"n{i}": entry(ready(f"n{i}")) for i in range(37)}
    expected = [f"n{i}" for i in range(40)]
    status = summarize_nodes(None, reports, generation=1, expected=expected, now=NOW)
    assert status["ready"] == "37/40"
    assert (status["readyNodes"], status["targetNodes"]) == (37, 40)
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "False"
    assert ready_condition["reason"] == "Pending"


def test_the_summary_size_does_not_depend_on_the_node_count() -> None:
    def size(nodes: int) -> int:
        reports = {f"node-{i:05d}": entry(failing(f"node-{i:05d}")) for i in range(nodes)}
        status = summarize_nodes(None, reports, generation=1, expected=sorted(reports), now=NOW)
        return len(json.dumps(status))

    assert size(5000) - size(6) < 16  # only the digits of the counts grow


def test_the_summary_names_at_most_a_handful_of_failing_nodes() -> None:
    reports = {f"n{i}": entry(failing(f"n{i}")) for i in range(20)}
    status = summarize_nodes(None, reports, generation=1, expected=sorted(reports), now=NOW)
    assert len(status["failingNodes"]) == MAX_FAILING_NODES
    assert status["failingNodes"][0] == {"name": "n0", "reason": "PullFailed", "message": "pull failed: not found"}


def test_an_entry_of_an_older_generation_is_pending_not_ready() -> None:
    status = summarize_nodes(None, {"n1": entry(ready("n1", 1))}, generation=2, expected=["n1"], now=NOW)
    assert status["ready"] == "0/1"
    assert status["failingNodes"] == []


def test_all_nodes_ready_is_ready_and_names_absent_agents() -> None:
    status = summarize_nodes(
        None, {"n1": entry(ready("n1"))}, generation=1, expected=["n1"], absent=["control-plane"], now=NOW
    )
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "True"
    assert "no agent on node control-plane" in ready_condition["message"]
    assert status["backend"] == "llama.cpp"


def test_a_summary_over_the_old_layout_is_never_the_same() -> None:
    status = summarize_nodes(None, {"n1": entry(ready("n1"))}, generation=1, expected=["n1"], now=NOW)
    assert same_summary(status, status)
    assert not same_summary({**status, "engines": [{"name": "n1"}]}, status)


# ---- the aggregator ---------------------------------------------------------------------------


class RecordingKube:
    """The calls the aggregator makes, recorded; `refuse` makes the next call answer 409."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse = False

    def _call(self, name: str, detail: Any) -> None:
        if self.refuse:
            self.refuse = False
            raise Conflict(409, "the object has been modified")
        self.calls.append((name, detail))

    async def update_finalizers(self, namespace: str, name: str, current: Any, *, add: Any = None, remove: Any = ()):
        self._call("finalizers", (add, sorted(remove)))
        return {}

    async def apply_status(self, namespace: str, name: str, status: Any, **_: Any) -> dict[str, Any]:
        self._call("status", status)
        return {}

    async def remove_status_field(self, namespace: str, name: str, current: Any, field: str) -> None:
        self._call("remove", field)


class Presence:
    def __init__(self, alive: set[str], expired: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self._alive, self._expired = alive, set(expired)

    def alive(self) -> set[str]:
        return set(self._alive)

    def expired(self) -> set[str]:
        return set(self._expired)


def localmodel(uid: str = "u1", *, finalizers: list[str] | None = None, deleting: bool = False, **status: Any):
    meta: dict[str, Any] = {"name": "m", "namespace": "ns", "uid": uid, "generation": 1, "resourceVersion": "7"}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T12:00:00Z"
    return {"metadata": meta, "spec": {"model": "ai/smollm2"}, "status": status}


def node_object(node: str, *entries: EngineStatus, uid: str = "u1") -> dict[str, Any]:
    report = NodeReport(node)
    for status in entries:
        report.report("ns", "m", uid, status)
    return report.body()


def aggregator(kube: RecordingKube, nodes: list[str], presence: Presence | None = None) -> Aggregator:
    index = {n: {} for n in nodes}
    return Aggregator(kube, nodes=lambda: index, presence=presence, clock=lambda: NOW)  # type: ignore[arg-type]


def test_the_aggregator_adds_its_finalizer_and_releases_the_old_per_agent_ones() -> None:
    kube = RecordingKube()
    agg = aggregator(kube, ["n1", "n2"])
    agg.node_report("ADDED", node_object("n1", ready("n1")))
    agg.object_changed("ADDED", localmodel(finalizers=["localmodel.io/agent-n1"]))
    asyncio.run(agg.settle("u1"))
    # n1 reports in its LocalModelNode now; n2's agent has not moved yet, its finalizer stays
    assert kube.calls == [("finalizers", (FINALIZER, ["localmodel.io/agent-n1"]))]


def test_the_aggregator_writes_the_summary_and_drops_the_old_engines_list_first() -> None:
    kube = RecordingKube()
    agg = aggregator(kube, ["n1"])
    agg.node_report("ADDED", node_object("n1", ready("n1")))
    agg.object_changed("ADDED", localmodel(finalizers=[FINALIZER], engines=[{"name": "n1"}], observedGeneration=1))
    asyncio.run(agg.settle("u1"))
    assert [name for name, _ in kube.calls] == ["remove", "status"]
    assert kube.calls[1][1]["ready"] == "1/1"


def test_the_aggregator_does_not_rewrite_a_summary_it_wrote_before_the_object_comes_back() -> None:
    kube = RecordingKube()
    agg = aggregator(kube, ["n1"])
    agg.node_report("ADDED", node_object("n1", ready("n1")))
    agg.object_changed("ADDED", localmodel(finalizers=[FINALIZER]))
    asyncio.run(agg.settle("u1"))
    asyncio.run(agg.settle("u1"))  # the same (stale) copy of the object
    assert [name for name, _ in kube.calls] == ["status"]


def test_a_deleted_localmodel_keeps_its_finalizer_while_a_live_agent_reports_it() -> None:
    kube = RecordingKube()
    agg = aggregator(kube, ["n1", "n2"], Presence({"n1", "n2"}))
    agg.node_report("ADDED", node_object("n1", ready("n1")))
    agg.object_changed("MODIFIED", localmodel(finalizers=[FINALIZER], deleting=True))
    asyncio.run(agg.settle("u1"))
    assert kube.calls == []
    agg.node_report("MODIFIED", node_object("n1"))  # n1 applied deletionPolicy and dropped the entry
    asyncio.run(agg.settle("u1"))
    assert kube.calls == [("finalizers", (None, [FINALIZER]))]


def test_an_agent_whose_lease_expired_is_not_waited_for_on_deletion() -> None:
    kube = RecordingKube()
    agg = aggregator(kube, ["n1"], Presence(set(), expired={"n1"}))
    agg.node_report("ADDED", node_object("n1", ready("n1")))
    agg.object_changed("MODIFIED", localmodel(finalizers=[FINALIZER, "localmodel.io/agent-n1"], deleting=True))
    asyncio.run(agg.settle("u1"))
    assert kube.calls == [("finalizers", (None, sorted([FINALIZER, "localmodel.io/agent-n1"])))]


def test_a_matching_node_without_a_live_agent_is_named_not_expected() -> None:
    kube = RecordingKube()
    agg = aggregator(kube, ["control-plane", "n1"], Presence({"n1"}))
    agg.node_report("ADDED", node_object("n1", ready("n1")))
    agg.object_changed("ADDED", localmodel(finalizers=[FINALIZER]))
    asyncio.run(agg.settle("u1"))
    status = kube.calls[-1][1]
    assert status["ready"] == "1/1"
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "no agent on node control-plane" in ready_condition["message"]


def test_a_refused_finalizer_patch_waits_for_the_next_watch_event() -> None:
    kube = RecordingKube()
    kube.refuse = True
    agg = aggregator(kube, ["n1"])
    agg.object_changed("ADDED", localmodel())
    asyncio.run(agg.settle("u1"))  # 409: no exception, nothing recorded
    assert kube.calls == []


def test_only_the_objects_whose_entry_changed_are_marked() -> None:
    agg = aggregator(RecordingKube(), ["n1"])
    agg.node_report("ADDED", node_object("n1", ready("n1"), uid="u1"))
    agg._dirty.clear()
    body = node_object("n1", ready("n1"), uid="u1")
    agg.node_report("MODIFIED", body)
    assert agg._dirty == set()
    body["status"]["models"].append({**node_entries(body)["u1"], "uid": "u2", "name": "other"})
    agg.node_report("MODIFIED", body)
    assert agg._dirty == {"u2"}


class WatchingKube(RecordingKube):
    """LocalModelNodes: a list, then watches that each yield some events and end as the server says."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]] | Exception]) -> None:
        super().__init__()
        self.lists, self.watches = lists, watches
        self.listed = 0
        self.watched_from: list[str] = []

    async def list_localmodelnodes(self, label_selector: str) -> tuple[list[dict[str, Any]], str]:
        assert label_selector == "localmodel.io/scope=cluster"
        self.listed += 1
        return self.lists.pop(0), f"rv{self.listed}"

    async def watch_localmodelnodes(self, label_selector: str, resource_version: str):  # type: ignore[no-untyped-def]
        self.watched_from.append(resource_version)
        if not self.watches:
            await asyncio.Event().wait()  # the last watch stays open
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event


def event(kind: str, body: dict[str, Any], rv: str) -> dict[str, Any]:
    return {"type": kind, "object": {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}}


async def test_the_aggregator_follows_the_reports_resumes_its_watch_and_lists_again_when_it_expired() -> None:
    first, second = node_object("n1", ready("n1")), node_object("n2", ready("n2"))
    kube = WatchingKube(
        lists=[[first], [first, second]],
        watches=[
            [event("BOOKMARK", {"metadata": {}}, "rv5")],  # the server ends the watch after a bookmark
            [event("ADDED", second, "rv6")],
            Gone(410, "too old resource version"),  # expired: list again
        ],
    )
    agg = aggregator(kube, ["n1", "n2"])  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(agg._follow(stop))
    for _ in range(50):
        await asyncio.sleep(0)
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert kube.watched_from == ["rv1", "rv5", "rv6", "rv2"]  # resumed from the bookmark, then from a new list
    assert kube.listed == 2
    assert sorted(agg.reports) == ["n1", "n2"]
