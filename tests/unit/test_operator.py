"""Unit tests of the operator's pure parts: names, engine lists, targeting, status composition and
the kstatus verdicts it leads to."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.operator.engines import (
    EngineListError,
    EngineRef,
    configured_engines,
    engines_from_configmap,
    node_engine,
    parse_engine_list,
)
from controller.operator.identity import Identity, short_label
from controller.operator.statuses import compose_status, entry_status, invalid_spec_status
from controller.operator.targeting import matching_nodes, parse_selector, raw_node_selector, selector_matches
from controller.spec import SpecInvalid, validate_spec
from controller.status import EngineStatus, Phase, Reason
from tests.support.gitops import argocd_health, kstatus_of
from tests.support.kstatus import ready_verdict
from tests.support.peers import PeerBinaries

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QUALIFIED_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


# ---- identity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["kind-worker", "ip-10-0-0-7.eu-west-1.compute.internal", "N" * 253, "gpu_1"])
def test_agent_finalizers_are_valid_qualified_names(node: str) -> None:
    finalizer = Identity("node-agent", node).finalizer
    prefix, name = finalizer.split("/")
    assert QUALIFIED_NAME.match(finalizer), finalizer
    assert prefix == "localmodel.io"
    assert len(name) <= 63


def test_every_agent_writes_under_its_own_names() -> None:
    a, b, central = Identity("node-agent", "a"), Identity("node-agent", "b"), Identity("central")
    assert len({a.finalizer, b.finalizer, central.finalizer}) == 3
    assert len({a.field_manager, b.field_manager, central.field_manager}) == 3
    assert len({a.annotation_prefix, b.annotation_prefix, central.annotation_prefix}) == 3
    assert central.finalizer == "localmodel.io/finalizer"
    assert a.finalizer == "localmodel.io/agent-a"


def test_short_labels_of_different_long_names_differ() -> None:
    first, second = short_label("agent-" + "x" * 80 + "1"), short_label("agent-" + "x" * 80 + "2")
    assert first != second
    assert len(first) <= 63
    assert len(second) <= 63
    assert short_label("agent-a.b") != short_label("agent-a-b")  # changed names carry a hash


# ---- engine lists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["http://10.0.0.7:12434"], [EngineRef("10.0.0.7:12434", "http://10.0.0.7:12434")]),
        (["gpu1=http://10.0.0.7:12434/v1/"], [EngineRef("gpu1", "http://10.0.0.7:12434")]),
        (["dmr.ai.svc:80"], [EngineRef("dmr.ai.svc:80", "http://dmr.ai.svc:80")]),
        (
            ["a=http://h1:1, b=http://h2:2", "c=http://h3:3"],
            [EngineRef("a", "http://h1:1"), EngineRef("b", "http://h2:2"), EngineRef("c", "http://h3:3")],
        ),
        (["http://h/?x=1=2"], None),
        (["a=http://h1:1", "a=http://h2:2"], None),
        (["bad name=http://h:1"], None),
        (["ftp://h:1"], None),
    ],
)
def test_engine_list_items(items: list[str], expected: list[EngineRef] | None) -> None:
    if expected is None:
        with pytest.raises(EngineListError, match="--engine"):
            parse_engine_list(items, "--engine")
    else:
        assert parse_engine_list(items, "--engine") == expected


def test_flags_win_over_the_environment() -> None:
    env = {"LOCALMODEL_ENGINES": "env=http://e:1"}
    assert configured_engines(["flag=http://f:1"], env) == [EngineRef("flag", "http://f:1")]
    assert configured_engines([], env) == [EngineRef("env", "http://e:1")]
    assert configured_engines([], {}) == []


def test_engines_from_a_configmap() -> None:
    data = {"engines": "# the GPU boxes\ngpu1=http://10.0.0.7:12434\ngpu2=http://10.0.0.8:12434\n"}
    assert [e.name for e in engines_from_configmap(data, "engines")] == ["gpu1", "gpu2"]
    assert engines_from_configmap({"LOCALMODEL_ENGINES": "http://a:1"}, "cm") == [EngineRef("a:1", "http://a:1")]
    with pytest.raises(EngineListError, match="ConfigMap cm has no engine list"):
        engines_from_configmap({"other": "x"}, "cm")


def test_node_engines_are_named_after_the_node() -> None:
    assert node_engine("n1", "10.0.0.7") == EngineRef("n1", "http://10.0.0.7:12434")
    assert node_engine("n1", "fd00::7", 8080).url == "http://[fd00::7]:8080"


# ---- targeting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (None, {"a": "1"}, True),
        ({}, None, True),
        ({"gpu": "nvidia"}, {"gpu": "nvidia", "zone": "a"}, True),
        ({"gpu": "nvidia"}, {"gpu": "amd"}, False),
        ({"gpu": "nvidia", "zone": "a"}, {"gpu": "nvidia"}, False),
        ({"gpu": ""}, {}, False),
    ],
)
def test_node_selector(selector: dict[str, str] | None, labels: dict[str, str] | None, matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


def test_matching_nodes_apply_both_selectors() -> None:
    nodes = {"a": {"gpu": "1", "agent": "yes"}, "b": {"gpu": "1"}, "c": {"agent": "yes"}}
    assert matching_nodes(nodes, {"gpu": "1"}) == ["a", "b"]
    assert matching_nodes(nodes, {"gpu": "1"}, {"agent": "yes"}) == ["a"]
    assert matching_nodes(nodes, {}) == ["a", "b", "c"]


def test_raw_node_selector_survives_an_invalid_spec() -> None:
    assert raw_node_selector({"keepAlive": 5, "nodeSelector": {"gpu": "1", "n": 2}}) == {"gpu": "1"}
    assert raw_node_selector({"nodeSelector": "gpu=1"}) == {}
    assert raw_node_selector(None) == {}


def test_selector_flag() -> None:
    assert parse_selector("gpu=nvidia, zone=a", "--x") == {"gpu": "nvidia", "zone": "a"}
    with pytest.raises(ValueError, match="--x: 'gpu' is not key=value"):
        parse_selector("gpu", "--x")


# ---- status composition ------------------------------------------------------------------------


def ready(engine: str, generation: int = 1) -> EngineStatus:
    return EngineStatus(
        engine,
        Phase.READY,
        Reason.APPLIED,
        f"applied on {engine}",
        ready=True,
        backend="llama.cpp",
        applied_config={"context-size": 8192},
        observed_generation=generation,
    )


def retrying(engine: str, generation: int = 1) -> EngineStatus:
    return EngineStatus(
        engine,
        Phase.RETRYING,
        Reason.ENGINE_UNREACHABLE,
        "engine unreachable (retrying in 2s)",
        observed_generation=generation,
    )


def stalled(engine: str, generation: int = 1) -> EngineStatus:
    return EngineStatus(
        engine,
        Phase.STALLED,
        Reason.FLAG_REJECTED,
        "the engine rejected --foo",
        stalled=True,
        observed_generation=generation,
    )


def central(
    current: dict[str, Any] | None,
    own: list[EngineStatus],
    generation: int = 1,
    now: datetime = T0,
    expected: list[str] | None = None,
) -> Any:
    names = [s.engine for s in own] if expected is None else expected
    return compose_status(current, own, generation=generation, expected=names, now=now)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_status_is_written_once_then_left_alone() -> None:
    first = central(None, [ready("e")])
    assert first.changed
    assert first.ready
    assert conditions(first.status) == {
        "Ready": ("True", "Applied"),
        "Reconciling": ("False", "Applied"),
        "Stalled": ("False", "Applied"),
    }
    assert all(c["observedGeneration"] == 1 for c in first.status["conditions"])
    assert first.status["engines"] == [ready("e").to_dict()]
    again = central(first.status, [ready("e")], now=T0 + timedelta(minutes=5))
    assert not again.changed  # nothing differs: no write, and lastTransitionTime did not move


def test_last_transition_time_moves_only_when_a_condition_flips() -> None:
    first = central(None, [retrying("e")])
    later = T0 + timedelta(minutes=1)
    second = central(first.status, [retrying("e", 1)], now=later)
    assert not second.changed
    flipped = central(first.status, [ready("e")], now=later)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped.status["conditions"]}
    assert times == {
        "Ready": "2026-01-01T00:01:00Z",
        "Reconciling": "2026-01-01T00:01:00Z",
        "Stalled": "2026-01-01T00:00:00Z",
    }


def test_central_writes_the_whole_status_and_drops_engines_it_no_longer_has() -> None:
    first = central(None, [ready("a"), ready("b")])
    second = central(first.status, [ready("a")])
    assert second.changed
    assert [e["name"] for e in second.status["engines"]] == ["a"]


def test_the_ready_column_counts_engines_ready_of_those_expected() -> None:
    update = central(None, [ready("a"), retrying("b")])
    assert update.status["ready"] == "1/2"
    assert not update.ready


def test_entries_of_an_older_generation_are_work_in_progress() -> None:
    old = central(None, [ready("a", 1), ready("b", 1)], generation=1).status
    update = central(old, [ready("a", 2)], generation=2, expected=["a", "b"])
    assert not update.ready
    assert conditions(update.status)["Reconciling"] == ("True", "Pending")


def test_a_progress_write_keeps_the_entries_not_reported_now() -> None:
    first = central(None, [ready("a"), ready("b")])
    progress = compose_status(first.status, [retrying("a")], generation=1, expected=["a", "b"], now=T0, keep_own=True)
    assert [e["name"] for e in progress.status["engines"]] == ["a", "b"]


def test_no_targeted_engine_is_stalled() -> None:
    update = central(None, [])
    assert conditions(update.status) == {
        "Ready": ("False", "NoEngines"),
        "Reconciling": ("False", "NoEngines"),
        "Stalled": ("True", "NoEngines"),
    }


def test_invalid_spec_names_the_field_and_stalls() -> None:
    with pytest.raises(SpecInvalid) as error:
        validate_spec({"model": "ai/smollm2", "vllm": {"gpuMemoryUtilization": 1.5}}, "m")
    update = central(None, [invalid_spec_status("e", error.value, 1)])
    stalled_condition = next(c for c in update.status["conditions"] if c["type"] == "Stalled")
    assert stalled_condition["status"] == "True"
    assert stalled_condition["reason"] == "InvalidSpec"
    assert stalled_condition["message"].startswith("spec.vllm.gpuMemoryUtilization: 1.5 is out of range")


def test_entries_read_back_from_the_object() -> None:
    assert entry_status(stalled("e").to_dict()).stalled
    assert entry_status(ready("e").to_dict()).ready
    unknown = entry_status({"name": "e", "phase": "Exploding", "reason": "FromTheFuture"})
    assert (unknown.phase, unknown.reason, unknown.ready) == (Phase.PENDING, Reason.ENGINE_ERROR, False)


# ---- kstatus and Argo CD, the real ones (tests/peers/kstatus, tests/peers/argocd-lua) ------------


def obj(status: dict[str, Any] | None, generation: int = 1, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "m", "namespace": "ns", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    base = {"apiVersion": "localmodel.io/v1alpha1", "kind": "LocalModel", "metadata": meta}
    return {**base, "status": status} if status is not None else base


@pytest.mark.peers
@pytest.mark.parametrize(
    ("own", "verdict", "health", "is_ready"),
    [
        ([ready("e")], "Current", "Healthy", True),
        ([retrying("e")], "InProgress", "Progressing", False),
        (
            [EngineStatus("e", Phase.PULLING, Reason.PULLING, "pulling", observed_generation=1)],
            "InProgress",
            "Progressing",
            False,
        ),
        ([stalled("e")], "Failed", "Degraded", False),
        ([ready("e"), stalled("f")], "Failed", "Degraded", False),
        ([ready("e"), retrying("f")], "InProgress", "Progressing", False),
        ([], "Failed", "Degraded", False),  # no engine: Stalled NoEngines
    ],
)
def test_kstatus_and_argocd_of_each_state(
    peer_binaries: PeerBinaries, own: list[EngineStatus], verdict: str, health: str, is_ready: bool
) -> None:
    status = central(None, own).status
    assert kstatus_of(peer_binaries, obj(status)) == verdict
    assert argocd_health(peer_binaries, obj(status))[0]["status"] == health
    assert ready_verdict(obj(status)) is is_ready


@pytest.mark.peers
def test_kstatus_sees_a_spec_the_controller_has_not_observed(peer_binaries: PeerBinaries) -> None:
    status = central(None, [ready("e")], generation=1).status
    assert kstatus_of(peer_binaries, obj(status, generation=2)) == "InProgress"
    assert not ready_verdict(obj(status, generation=2))  # Ready=True, but for generation 1
    assert kstatus_of(peer_binaries, obj(status, deleting=True)) == "Terminating"
    # kstatus' own rule for a custom resource without status is Current: hence the CRD's status default,
    # which a new object reads back with until the controller's first write.
    assert kstatus_of(peer_binaries, obj(None)) == "Current"
    assert kstatus_of(peer_binaries, obj({"observedGeneration": 0})) == "InProgress"


class ConfigMapKube:
    def __init__(self, data: dict[str, str] | None) -> None:
        self.data = data

    async def get_configmap(self, namespace: str, name: str) -> dict:
        from controller.operator.kube import KubeError

        if self.data is None:
            raise KubeError(403, f'configmaps "{name}" is forbidden')
        return {"data": self.data}


async def test_an_explicit_engines_configmap_wins_over_the_environment() -> None:
    from controller.operator.bootstrap import StartupError, central_engines
    from controller.operator.config import OperatorConfig

    env = {"LOCALMODEL_ENGINES": "env=http://e:1"}
    config = OperatorConfig(engines_configmap="engines", operator_namespace="ops")
    kube = ConfigMapKube({"engines": "gpu=http://g:1"})
    assert await central_engines(config, kube, env) == [EngineRef("gpu", "http://g:1")]  # type: ignore[arg-type]
    assert await central_engines(OperatorConfig(), kube, env) == [EngineRef("env", "http://e:1")]  # type: ignore[arg-type]
    with pytest.raises(StartupError, match="needs `get` on it"):
        await central_engines(config, ConfigMapKube(None), env)  # type: ignore[arg-type]
