"""The release table (controller/engine/capabilities.py) and the planner's decision for fields an engine
cannot keep (controller/plan.py `fit_to_engine`, `plan_model`): pure, no engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.engine import capabilities as caps
from controller.engine.capabilities import Capabilities, capabilities_for, parse_version
from controller.engine.types import ModelInfo, StoredConfig
from controller.plan import Configure, Observation, plan_model
from controller.spec import parse_localmodel
from controller.status import Reason

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
MODEL_ID = "sha256:" + "1" * 64
V1_0_10 = capabilities_for(
    None, probed={caps.KEEP_ALIVE: False, caps.IMAGE_GENERATION: False}, detected_by="no GET /version"
)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("v1.2.9", (1, 2, 9)),
        ("1.0.10", (1, 0, 10)),
        ("v1.2.6-18-g642c7211", (1, 2, 6)),
        ("v1.2.9-emulator", (1, 2, 9)),
        ("dev", None),
        ("", None),
        (None, None),
    ],
)
def test_versions_parse_to_tuples(text: str | None, parsed: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("version", "keeps_keep_alive", "has_version_route"),
    [
        ("v1.0.10", False, False),
        ("v1.0.14", False, False),
        ("v1.0.15", True, False),
        ("v1.0.29", True, False),
        ("v1.0.30", True, True),
        ("v1.2.9", True, True),
        ("dev", True, True),  # an unversioned build is taken as the newest
    ],
)
def test_a_release_has_what_its_version_says(version: str, keeps_keep_alive: bool, has_version_route: bool) -> None:
    found = capabilities_for(version)
    assert found.has(caps.KEEP_ALIVE) is keeps_keep_alive
    assert found.has(caps.VERSION_ROUTE) is has_version_route
    assert found.version == version


def test_an_engine_without_version_that_drops_keep_alive_is_older_than_the_release_that_added_it() -> None:
    only_keep_alive = capabilities_for(None, probed={caps.KEEP_ALIVE: False})
    assert only_keep_alive.older_than == "v1.0.15"
    assert not only_keep_alive.has(caps.KEEP_ALIVE)
    assert only_keep_alive.has(caps.IMAGE_GENERATION)  # not asked, older than v1.0.15: assumed
    assert V1_0_10.older_than == "v1.0.12"
    assert V1_0_10.features == frozenset()
    assert V1_0_10.release == "older than v1.0.12 (it has no GET /version)"


def test_an_engine_without_version_that_keeps_keep_alive_has_everything_before_the_version_route() -> None:
    found = capabilities_for(None, probed={caps.KEEP_ALIVE: True})
    assert found.has(caps.KEEP_ALIVE)
    assert not found.has(caps.VERSION_ROUTE)
    assert found.older_than == "v1.0.30"


def test_the_unsupported_message_names_the_field_the_release_and_the_fix() -> None:
    assert capabilities_for("v1.0.12").unsupported(caps.KEEP_ALIVE) == (
        "keepAlive needs model-runner >= v1.0.15; this engine is v1.0.12 "
        "— upgrade Docker Model Runner or remove keepAlive"
    )
    assert V1_0_10.unsupported(caps.IMAGE_GENERATION) == (
        "mode image-generation needs model-runner >= v1.0.12; this engine is older than v1.0.12 "
        "(it has no GET /version) — upgrade Docker Model Runner or set another mode"
    )


def test_status_shape_lists_what_the_engine_lacks() -> None:
    shown = V1_0_10.to_dict()
    assert shown["version"] is None
    assert shown["olderThan"] == "v1.0.12"
    assert caps.KEEP_ALIVE in shown["lacks"]
    assert caps.VERSION_ROUTE in shown["lacks"]
    assert capabilities_for("v1.2.9").to_dict()["lacks"] == []
    assert "lacks" in V1_0_10.summary()


# ---- the planner ---------------------------------------------------------------------------------


def spec(**fields: object):  # noqa: ANN201 - a LocalModelSpec
    body = {"apiVersion": "localmodel.io/v1alpha1", "kind": "LocalModel", "metadata": {"name": "m"}}
    return parse_localmodel({**body, "spec": {"model": "ai/smollm2", **fields}}).spec


def observation(capabilities: Capabilities | None, stored: dict[str, object] | None = None) -> Observation:
    model = ModelInfo(MODEL_ID, ("docker.io/ai/smollm2:latest",), "gguf", 8192)
    configs = (
        (StoredConfig("llama.cpp", "docker.io/ai/smollm2:latest", MODEL_ID, "completion", stored),)
        if stored is not None
        else ()
    )
    return Observation("e", (model,), configs, (), capabilities=capabilities)


def test_keep_alive_is_not_sent_to_an_engine_that_drops_it_and_the_rest_is_configured() -> None:
    plan = plan_model(spec(contextSize=4096, keepAlive="15m"), observation(V1_0_10))
    (action,) = plan.actions
    assert isinstance(action, Configure)
    assert action.request.body == {"model": "ai/smollm2", "context-size": 4096}
    assert plan.blocked is None  # not yet: first the fields the engine can keep


def test_once_the_rest_is_in_place_the_model_is_stalled_engine_unsupported() -> None:
    plan = plan_model(spec(contextSize=4096, keepAlive="15m"), observation(V1_0_10, {"context-size": 4096}))
    assert plan.actions == ()
    assert plan.blocked is not None
    assert plan.blocked.reason is Reason.ENGINE_UNSUPPORTED
    assert not plan.blocked.retryable
    assert plan.blocked.message.startswith("keepAlive needs model-runner >= v1.0.15; this engine is older than")
    assert plan.blocked.message.endswith("upgrade Docker Model Runner or remove keepAlive")


def test_drift_of_the_other_fields_is_still_repaired() -> None:
    plan = plan_model(spec(contextSize=4096, keepAlive="15m"), observation(V1_0_10, {"context-size": 2048}))
    (action,) = plan.actions
    assert isinstance(action, Configure)
    assert action.why == "drift"
    assert "keep_alive" not in action.request.body


@pytest.mark.parametrize("capabilities", [None, capabilities_for("v1.2.9"), capabilities_for("v1.0.15")])
def test_an_engine_that_keeps_keep_alive_gets_it(capabilities: Capabilities | None) -> None:
    plan = plan_model(spec(keepAlive="15m"), observation(capabilities, {"keep_alive": "15m0s"}))
    assert plan.up_to_date, plan
    (action,) = plan_model(spec(keepAlive="15m"), observation(capabilities)).actions
    assert isinstance(action, Configure)
    assert action.request.body["keep_alive"] == "15m"


def test_a_mode_the_engine_cannot_decode_sends_nothing() -> None:
    plan = plan_model(spec(mode="image-generation"), observation(V1_0_10))
    assert plan.actions == ()
    assert plan.blocked is not None
    assert plan.blocked.reason is Reason.ENGINE_UNSUPPORTED
    assert "mode image-generation needs model-runner >= v1.0.12" in plan.blocked.message


def test_a_spec_without_unsupported_fields_is_ready_on_an_old_engine() -> None:
    assert plan_model(spec(contextSize=4096), observation(V1_0_10, {"context-size": 4096})).up_to_date


# ---- the compatibility table ---------------------------------------------------------------------


def test_docs_compatibility_table_is_generated_from_the_release_table() -> None:
    """docs/compatibility.md is `compatibility_table(TABLE_RELEASES)`; LOCALMODEL_WRITE_DOCS=1 rewrites it."""
    expected = caps.compatibility_table(caps.TABLE_RELEASES)
    if os.environ.get("LOCALMODEL_WRITE_DOCS") == "1":
        DOC.write_text(expected)
    assert DOC.read_text() == expected, "docs/compatibility.md is stale: run with LOCALMODEL_WRITE_DOCS=1"


def test_the_table_has_a_column_per_release_and_a_row_per_feature() -> None:
    table = caps.compatibility_table(caps.TABLE_RELEASES)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(caps.FEATURES)
    keep_alive = next(row for row in rows if row.startswith("| keepAlive |"))
    cells = [cell.strip() for cell in keep_alive.strip("|").split("|")]
    by_release = dict(zip(caps.TABLE_RELEASES, cells[3:], strict=False))
    assert by_release["v1.0.10"] == "no"
    assert by_release["v1.0.15"] == "yes"
    assert by_release["v1.2.9"] == "yes"


README = DOC.parents[1] / "README.md"
README_BEGIN = "<!-- compatibility table: generated by tests/unit/test_capabilities.py (LOCALMODEL_WRITE_DOCS=1) -->\n"
README_END = "\n<!-- end of the compatibility table -->"


def test_readme_compatibility_table_is_generated_from_the_release_table() -> None:
    table = "\n".join(
        line for line in caps.compatibility_table(caps.TABLE_RELEASES).splitlines() if line.startswith("|")
    )
    text = README.read_text()
    assert README_BEGIN in text, "README.md lost its compatibility table markers"
    assert README_END in text, "README.md lost its compatibility table markers"
    before, rest = text.split(README_BEGIN, 1)
    block, after = rest.split(README_END, 1)
    if os.environ.get("LOCALMODEL_WRITE_DOCS") == "1":
        README.write_text(before + README_BEGIN + table + README_END + after)
        block = table
    assert block == table, "README.md's compatibility table is stale: run with LOCALMODEL_WRITE_DOCS=1"
