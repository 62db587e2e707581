"""A node agent's own pass loops (passloops.py) and the writer of its LocalModelNode (reporter.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any

from controller.operator.kube import KubeError
from controller.operator.nodereport import NodeReport
from controller.operator.passloops import PassLoops
from controller.operator.reporter import WRITE_SPACING, ReportWriter
from controller.status import EngineStatus, Phase, Reason


def body(uid: str, generation: int = 1, *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": uid, "namespace": "ns", "uid": uid, "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T12:00:00Z"
    return {"metadata": meta, "spec": {"model": "ai/smollm2"}}


class Recorder:
    def __init__(self, fail_first: int = 0) -> None:
        self.passes: list[tuple[str, int]] = []
        self.finalized: list[str] = []
        self.wakes: dict[str, asyncio.Event] = {}
        self.fail_first = fail_first

    async def run_pass(self, obj: Mapping[str, Any]) -> float | None:
        meta = obj["metadata"]
        self.passes.append((meta["uid"], meta["generation"]))
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("an unexpected answer")
        return None

    async def wait(self, uid: str, delay: float | None, stopped: Awaitable[Any]) -> None:
        wake = self.wakes.setdefault(uid, asyncio.Event())
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped)]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        wake.clear()

    async def finalize(self, obj: Mapping[str, Any]) -> None:
        self.finalized.append(obj["metadata"]["uid"])


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_one_loop_per_object_and_a_wake_runs_the_next_pass_with_the_latest_body() -> None:
    rec = Recorder()
    loops = PassLoops(rec.run_pass, rec.wait, rec.finalize)
    loops.changed("ADDED", body("a"))
    loops.changed("MODIFIED", body("a"))  # the same object again: no second loop
    await settle()
    assert rec.passes == [("a", 1)]
    loops.changed("MODIFIED", body("a", 2))
    rec.wakes["a"].set()
    await settle()
    assert rec.passes == [("a", 1), ("a", 2)]
    await loops.aclose()


async def test_a_deletion_stops_the_passes_and_finalizes_once() -> None:
    rec = Recorder()
    loops = PassLoops(rec.run_pass, rec.wait, rec.finalize)
    loops.changed("ADDED", body("a"))
    await settle()
    loops.changed("MODIFIED", body("a", deleting=True))
    loops.changed("MODIFIED", body("a", deleting=True))
    await settle()
    assert rec.finalized == ["a"]
    assert rec.passes == [("a", 1)]
    await loops.aclose()


async def test_an_object_gone_without_a_deletion_seen_first_is_finalized_once() -> None:
    """Deleted before the aggregator's finalizer was on it: the DELETED event is all the agent sees."""
    rec = Recorder()
    loops = PassLoops(rec.run_pass, rec.wait, rec.finalize)
    loops.changed("ADDED", body("a"))
    await settle()
    loops.changed("DELETED", body("a"))
    await settle()
    assert rec.finalized == ["a"]
    await loops.aclose()


async def test_a_deletion_then_its_deleted_event_finalize_once_and_an_unknown_object_not_at_all() -> None:
    rec = Recorder()
    loops = PassLoops(rec.run_pass, rec.wait, rec.finalize)
    loops.changed("ADDED", body("a"))
    await settle()
    loops.changed("MODIFIED", body("a", deleting=True))
    await settle()
    loops.changed("DELETED", body("a", deleting=True))
    loops.changed("DELETED", body("never-seen"))
    await settle()
    assert rec.finalized == ["a"]
    await loops.aclose()


async def test_a_failing_pass_is_logged_and_tried_again_not_the_end_of_the_loop() -> None:
    rec = Recorder(fail_first=1)
    loops = PassLoops(rec.run_pass, rec.wait, rec.finalize)
    loops.changed("ADDED", body("a"))
    await settle()
    rec.wakes["a"].set()
    await settle()
    assert rec.passes == [("a", 1), ("a", 1)]
    await loops.aclose()


class FakeNodes:
    def __init__(self, failures: int = 0) -> None:
        self.applied: list[dict[str, Any]] = []
        self.failures = failures

    async def apply_localmodelnode(self, body: Mapping[str, Any], *, field_manager: str) -> dict[str, Any]:
        if self.failures:
            self.failures -= 1
            raise KubeError(0, "connection refused")
        self.applied.append(dict(body))
        return dict(body)


def status(ready: bool) -> EngineStatus:
    return EngineStatus("n1", Phase.READY if ready else Phase.PENDING, Reason.APPLIED, "ok", ready=ready)


async def test_the_report_is_written_once_per_change_and_not_when_unchanged() -> None:
    kube, report = FakeNodes(), NodeReport("n1")
    writer = ReportWriter(kube, report)  # type: ignore[arg-type]
    report.report("ns", "a", "u1", status(True))
    report.report("ns", "b", "u2", status(True))
    assert await writer.write()
    assert await writer.write()
    assert len(kube.applied) == 1
    assert kube.applied[0]["status"]["ready"] == "2/2"


async def test_a_refused_write_is_tried_again_with_backoff() -> None:
    kube, report = FakeNodes(failures=2), NodeReport("n1")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    writer = ReportWriter(kube, report, sleep=sleep)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    report.report("ns", "a", "u1", status(True))
    writer.changed()
    for _ in range(50):
        await asyncio.sleep(0)
        if kube.applied:
            break
    stop.set()
    writer.changed()
    await asyncio.wait_for(task, 1)
    assert len(kube.applied) == 1
    assert slept[:2] == [1.0, 2.0]  # WRITE_RETRIES: 1 s, then doubling


async def test_passes_that_finish_within_a_second_share_one_write() -> None:
    """A rollout finishes the passes of one node one after another: the first result is written at once,
    the ones after it within WRITE_SPACING together, not one write each."""
    kube, report = FakeNodes(), NodeReport("n1")
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        for _ in range(20):  # the other passes finish meanwhile
            await asyncio.sleep(0)
        clock[0] += seconds

    writer = ReportWriter(kube, report, monotonic=lambda: clock[0], sleep=sleep)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    for index in range(20):
        report.report("ns", f"m{index}", f"u{index}", status(True))
        writer.changed()
        clock[0] += 0.05
        await asyncio.sleep(0)
    for _ in range(50):
        await asyncio.sleep(0)
    stop.set()
    writer.changed()
    await asyncio.wait_for(task, 1)
    assert [a["status"]["ready"] for a in kube.applied][-1] == "20/20"
    assert len(kube.applied) <= 2, [a["status"]["ready"] for a in kube.applied]
    assert slept
    assert all(s <= WRITE_SPACING for s in slept)


async def test_a_result_during_a_progress_wait_is_written_within_the_spacing() -> None:
    """Pull progress is written at most every PROGRESS_WRITE_SECONDS; a pass's result that comes during that
    wait does not wait for it (before, it waited the whole 5 s)."""
    kube, report = FakeNodes(), NodeReport("n1")
    clock = [0.0]
    progress_wait_started = asyncio.Event()
    release = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds > WRITE_SPACING:  # the progress wait: ends only when cut short
            progress_wait_started.set()
            await release.wait()
        clock[0] += seconds

    writer = ReportWriter(kube, report, monotonic=lambda: clock[0], sleep=sleep)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    report.report("ns", "a", "u1", status(False))
    writer.changed(urgent=False)  # first progress: written at once
    await settle()
    report.report("ns", "a", "u1", replace(status(False), message="pulling 50%"))
    writer.changed(urgent=False)
    await asyncio.wait_for(progress_wait_started.wait(), 1)
    report.report("ns", "a", "u1", status(True))
    writer.changed()
    for _ in range(50):
        await asyncio.sleep(0)
        if len(kube.applied) == 2:
            break
    stop.set()
    release.set()
    writer.changed()
    await asyncio.wait_for(task, 1)
    assert [a["status"]["ready"] for a in kube.applied] == ["0/1", "1/1"]
    assert clock[0] <= WRITE_SPACING
