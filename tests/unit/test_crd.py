"""The LocalModel CRD and the pydantic spec must accept and reject the same objects.

One table of specs runs through both validators:
- `controller.spec.validate_spec` (what the daemon, the CLI and the operator use);
- the CRD's structural schema (as JSON Schema, with unknown fields rejected the way
  `kubectl apply` does with strict field validation) plus its CEL rules (cel-python, RE2 regexes).

A case may mark the CRD's verdict as different from pydantic's: these are the divergences that
controller/crd.py documents, each with its reason. Whether the real API server accepts the CRD
(structural rules, CEL cost budget) is checked by the operator's e2e tests against kube-apiserver.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from celpy import celtypes

from controller import crd, spec, status

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "localmodels.localmodel.io.yaml"
CHART_CRD_FILE = ROOT / "deploy" / "helm" / "localmodel" / "crds" / "localmodels.localmodel.io.yaml"
REGENERATE = (
    "regenerate it: python -m controller.crd > crds/localmodels.localmodel.io.yaml && "
    "cp crds/localmodels.localmodel.io.yaml deploy/helm/localmodel/crds/"
)


# --------------------------------------------------------------------------------------------
# The CRD as a validator


def _openapi() -> dict[str, Any]:
    return crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema as JSON Schema: int-or-string becomes anyOf, objects with
    declared properties reject unknown fields (kubectl's strict field validation), `x-kubernetes-*`
    keys go."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default", "format"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


_CEL = celpy.Environment()


def cel_errors(node: dict[str, Any], value: Any, path: str) -> list[str]:
    """Evaluate every `x-kubernetes-validations` rule that applies to `value`, depth first."""
    errors: list[str] = []
    if isinstance(value, dict):
        for name, sub in node.get("properties", {}).items():
            if name in value:
                errors += cel_errors(sub, value[name], f"{path}.{name}")
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            errors += cel_errors(node["items"], item, f"{path}[{i}]")
    for rule in node.get("x-kubernetes-validations", []):
        program = _CEL.program(_CEL.compile(rule["rule"]))
        try:
            result = program.evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError:  # e.g. a float where the schema says integer: the API server rejects it too
            result = None
        if not isinstance(result, celtypes.BoolType) or not result:
            errors.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    return errors


SPEC_SCHEMA = _openapi()["properties"]["spec"]
SPEC_VALIDATOR = jsonschema.Draft202012Validator(to_json_schema(SPEC_SCHEMA))
STATUS_VALIDATOR = jsonschema.Draft202012Validator(to_json_schema(_openapi()["properties"]["status"]))


def crd_errors(data: dict[str, Any]) -> list[str]:
    schema_errors = [f"spec.{'.'.join(map(str, e.path))}: {e.message}" for e in SPEC_VALIDATOR.iter_errors(data)]
    if schema_errors:
        return schema_errors  # the API server stops too: CEL rules assume the types are right
    return cel_errors(SPEC_SCHEMA, data, "spec")


def pydantic_errors(data: dict[str, Any]) -> list[str]:
    try:
        spec.validate_spec(copy.deepcopy(data), "case")
    except spec.SpecInvalid as exc:
        return [str(e) for e in exc.errors]
    return []


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    id: str
    spec: dict[str, Any]
    valid: bool
    crd_valid: bool | None = None  # the CRD's verdict where it differs from pydantic's
    why: str = ""  # the documented reason for a difference

    @property
    def crd_expected(self) -> bool:
        return self.valid if self.crd_valid is None else self.crd_valid


def ok(id: str, **fields: Any) -> Case:
    return Case(id, {"model": "ai/smollm2", **fields}, True)


def bad(id: str, **fields: Any) -> Case:
    return Case(id, {"model": "ai/smollm2", **fields}, False)


CASES: list[Case] = [
    ok("minimal"),
    ok(
        "everything-llamacpp",
        backend="llama.cpp",
        mode="completion",
        contextSize=8192,
        runtimeFlags=["--threads", "4", "--temp=0.7"],
        keepAlive="10m",
        thinkingBudget="medium",
        speculative={"draftModel": "ai/smollm2:135M", "numTokens": 16, "acceptanceRate": 0.8},
        preload=True,
        pullPolicy="Always",
        deletionPolicy="Retain",
        nodeSelector={"gpu": "nvidia"},
    ),
    ok(
        "everything-vllm",
        backend="vllm",
        contextSize=4096,
        rawRuntimeFlags="--max-num-seqs 8",
        vllm={"gpuMemoryUtilization": 0.5, "hfOverrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}},
    ),
    ok("vllm-options-without-backend", vllm={"gpuMemoryUtilization": 1}),
    Case("empty-vllm-block-on-llamacpp", {"model": "m", "backend": "llama.cpp", "vllm": {}}, False),
    Case("missing-model", {"contextSize": 8192}, False),
    bad("empty-model", model=""),
    bad("model-with-space", model="ai/qwen3 14B"),
    bad("model-not-a-string", model=5),
    bad("unknown-field", contextsize=8192),
    bad("unknown-field-snake-case", context_size=8192),
    bad("unknown-nested-field", speculative={"draft_model": "ai/x"}),
    bad("unknown-backend", backend="llamacpp"),
    bad("unknown-mode", mode="chat"),
    *[ok(f"backend-{b}", backend=b) for b in ("llama.cpp", "vllm", "mlx", "sglang", "diffusers")],
    *[ok(f"mode-{m}", mode=m) for m in ("completion", "embedding", "reranking")],
    ok("image-generation-on-diffusers", mode="image-generation", backend="diffusers"),
    ok("image-generation-without-backend", mode="image-generation"),
    bad("image-generation-on-llamacpp", mode="image-generation", backend="llama.cpp"),
    bad("image-generation-on-vllm", mode="image-generation", backend="vllm"),
    ok("context-unlimited", contextSize=-1),
    ok("context-one", contextSize=1),
    ok("context-int32-max", contextSize=2147483647),
    bad("context-zero", contextSize=0),
    bad("context-minus-two", contextSize=-2),
    bad("context-over-int32", contextSize=2147483648),
    bad("context-quoted", contextSize="8192"),
    bad("context-bool", contextSize=True),
    bad("context-fraction", contextSize=8192.5),
    bad("context-whole-float", contextSize=8192.0),
    ok("flags-list", runtimeFlags=["--ctx-size", "4096"]),
    ok("flags-empty-list", runtimeFlags=[]),
    Case(
        "flags-one-string",
        {"model": "m", "runtimeFlags": "--threads 4"},
        True,
        crd_valid=False,
        why="a structural schema cannot be list-or-string; on Kubernetes use rawRuntimeFlags",
    ),
    bad("flags-empty-item", runtimeFlags=["--threads", ""]),
    bad("flags-not-strings", runtimeFlags=["--threads", 4]),
    ok("raw-flags", rawRuntimeFlags="--threads 4"),
    ok("raw-flags-quoted", rawRuntimeFlags="--chat-template-kwargs '{\"a\": 1}' --temp 0.7"),
    *[
        Case(
            f"raw-flags-unsplittable-{i}",
            {"model": "m", "rawRuntimeFlags": raw},
            False,
            crd_valid=True,
            why="CEL has no shell-word splitter; the controller refuses it before anything is sent",
        )
        for i, raw in enumerate(("--chat-template 'x", '--temp "0.7', "--threads 4 \\"))
    ],
    bad("both-flag-forms", runtimeFlags=["--threads", "4"], rawRuntimeFlags="--threads 4"),
    bad("both-flag-forms-empty-list", runtimeFlags=[], rawRuntimeFlags="--threads 4"),
    *[bad(f"flags-on-{b}", backend=b, runtimeFlags=["--threads", "4"]) for b in ("mlx", "sglang", "diffusers")],
    bad("raw-flags-on-mlx", backend="mlx", rawRuntimeFlags="--threads 4"),
    ok("empty-flags-on-mlx", backend="mlx", runtimeFlags=[]),
    ok("empty-raw-flags-on-sglang", backend="sglang", rawRuntimeFlags=""),
    *[
        ok(f"keep-alive-{v}", keepAlive=v)
        for v in ("0", "-1", "30s", "5m", "1h", "2h30m", "1.5h", "500ms", "10µs", "+1h", ".5s")
    ],
    *[
        bad(f"keep-alive-{v or 'empty'}", keepAlive=v)
        for v in ("", "300", "5", "-0", "+0", "1.5", "5 m", "5min", "forever", "1d", "h", "m5")
    ],
    # A negative duration is "never" to the engine, reported back as -1: written -1 (issue 10).
    *[bad(f"keep-alive-negative-{v}", keepAlive=v) for v in ("-5m", "-1s", "-1h30m", "-0s", "-.5s")],
    bad("keep-alive-number", keepAlive=300),
    bad("keep-alive-zero-number", keepAlive=0),
    *[ok(f"thinking-{v}", thinkingBudget=v) for v in (-1, 0, 1, 2048, 2147483647)],
    *[
        ok(f"thinking-{v}", thinkingBudget=v)
        for v in (
            "none",
            "minimal",
            "low",
            "medium",
            "high",
            "xhigh",
            "max",
            "adaptive",
            "adaptive/low",
            "HIGH",
            "Adaptive/Medium",
        )
    ],
    *[bad(f"thinking-{v}", thinkingBudget=v) for v in (-2, 2147483648)],
    *[
        bad(f"thinking-{v or 'empty'}", thinkingBudget=v)
        for v in ("", "extreme", "adaptive/adaptive", "adaptive/", "low/high", "unlimited")
    ],
    bad("thinking-quoted-number", thinkingBudget="2048"),
    bad("thinking-bool", thinkingBudget=True),
    bad("thinking-float", thinkingBudget=1.5),
    ok("gpu-zero", vllm={"gpuMemoryUtilization": 0}),
    ok("gpu-one", vllm={"gpuMemoryUtilization": 1.0}),
    bad("gpu-over-one", vllm={"gpuMemoryUtilization": 1.01}),
    bad("gpu-negative", vllm={"gpuMemoryUtilization": -0.1}),
    bad("gpu-quoted", vllm={"gpuMemoryUtilization": "0.5"}),
    bad("vllm-options-on-llamacpp", backend="llama.cpp", vllm={"gpuMemoryUtilization": 0.5}),
    bad("hf-overrides-on-mlx", backend="mlx", vllm={"hfOverrides": {"a": 1}}),
    ok(
        "hf-overrides-values",
        vllm={"hfOverrides": {"a": "s", "b": True, "c": 1, "d": 1.5, "e": None, "f": [1, "x"], "_g": {"h": {"i": []}}}},
    ),
    ok("hf-overrides-empty", vllm={"hfOverrides": {}}),
    bad("hf-overrides-not-a-mapping", vllm={"hfOverrides": ["rope_scaling"]}),
    bad("hf-overrides-scalar", vllm={"hfOverrides": "rope_scaling=yarn"}),
    Case(
        "hf-overrides-bad-top-level-key",
        {"model": "m", "vllm": {"hfOverrides": {"rope-scaling": 1}}},
        False,
        crd_valid=True,
        why="CEL cannot see inside x-kubernetes-preserve-unknown-fields; the controller checks keys",
    ),
    Case(
        "hf-overrides-bad-nested-key",
        {"model": "m", "vllm": {"hfOverrides": {"a": {"--b": 1}}}},
        False,
        crd_valid=True,
        why="CEL cannot see inside x-kubernetes-preserve-unknown-fields; the controller checks keys",
    ),
    ok("speculative", speculative={"draftModel": "ai/smollm2:135M", "numTokens": 1, "acceptanceRate": 0}),
    bad("speculative-zero-tokens", speculative={"numTokens": 0}),
    bad("speculative-rate-over-one", speculative={"acceptanceRate": 2}),
    bad("speculative-empty-draft", speculative={"draftModel": ""}),
    bad("speculative-draft-with-space", speculative={"draftModel": "ai/a b"}),
    bad("preload-string", preload="true"),
    bad("pull-policy-lowercase", pullPolicy="always"),
    bad("deletion-policy-unknown", deletionPolicy="Purge"),
    ok("node-selector", nodeSelector={"kubernetes.io/hostname": "gpu-1"}),
    bad("node-selector-non-string", nodeSelector={"gpu": True}),
    bad("node-selector-list", nodeSelector=["gpu"]),
]


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_divergence_has_a_reason() -> None:
    for case in CASES:
        assert (case.crd_valid is None) == (case.why == ""), case.id


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pydantic_verdict(case: Case) -> None:
    errors = pydantic_errors(case.spec)
    assert (not errors) == case.valid, errors or "accepted"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_crd_verdict(case: Case) -> None:
    errors = crd_errors(case.spec)
    assert (not errors) == case.crd_expected, errors or "accepted"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"model": "m", "runtimeFlags": ["-t"], "rawRuntimeFlags": "-t 1"}, "rawRuntimeFlags"),
        ({"model": "m", "backend": "mlx", "runtimeFlags": ["-t"]}, "runtimeFlags"),
        ({"model": "m", "backend": "vllm", "mode": "image-generation"}, "diffusers"),
        ({"model": "m", "backend": "llama.cpp", "vllm": {"gpuMemoryUtilization": 0.5}}, "backend: vllm"),
        ({"model": "m", "keepAlive": "300"}, "Go duration"),
        ({"model": "m", "thinkingBudget": "extreme"}, "adaptive/<effort>"),
        ({"model": "m", "contextSize": 0}, "omit contextSize"),
    ],
)
def test_cel_messages_name_the_field_and_the_fix(data: dict[str, Any], field: str) -> None:
    errors = crd_errors(data)
    assert errors
    assert any(field in e for e in errors), errors


# --------------------------------------------------------------------------------------------
# Same fields, same defaults


def _aliases(model: type[Any]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


@pytest.mark.parametrize(
    ("model", "path"),
    [(spec.LocalModelSpec, ()), (spec.VllmOptions, ("vllm",)), (spec.SpeculativeOptions, ("speculative",))],
)
def test_crd_declares_exactly_the_pydantic_fields(model: type[Any], path: tuple[str, ...]) -> None:
    node = SPEC_SCHEMA
    for part in path:
        node = node["properties"][part]
    assert set(node["properties"]) == _aliases(model)


def test_crd_defaults_are_the_pydantic_defaults() -> None:
    fields = {info.alias or name: info for name, info in spec.LocalModelSpec.model_fields.items()}
    defaulted = {name: prop["default"] for name, prop in SPEC_SCHEMA["properties"].items() if "default" in prop}
    assert defaulted == {
        name: info.default for name, info in fields.items() if not info.is_required() and info.default is not None
    }


def test_required_fields_agree() -> None:
    required = {info.alias or name for name, info in spec.LocalModelSpec.model_fields.items() if info.is_required()}
    assert set(SPEC_SCHEMA["required"]) == required


# --------------------------------------------------------------------------------------------
# The status the controller writes fits the status schema (nothing would be pruned)


def test_status_written_by_the_controller_fits_the_schema() -> None:
    now = datetime(2026, 7, 22, 10, 0, tzinfo=UTC)
    engines = [
        status.EngineStatus(
            engine="gpu-1",
            phase=status.Phase.READY,
            reason=status.Reason.APPLIED,
            message="applied",
            ready=True,
            backend="llama.cpp",
            model_id="sha256:abc",
            applied_config={"context-size": 8192, "keep_alive": "10m0s"},
            loaded=True,
            pull=status.PullProgressInfo(completed_bytes=10, total_bytes=100),
            last_error="runner already active",
            last_applied_time=now,
            notes=("vllm options not sent",),
            observed_generation=3,
        ),
        status.EngineStatus(
            engine="gpu-2",
            phase=status.Phase.PULLING,
            reason=status.Reason.PULLING,
            message="pulling",
            pull=status.PullProgressInfo(completed_bytes=5, total_bytes=None),
        ),
    ]
    conditions = status.summarize(engines, 3, [], now)
    body = {
        "observedGeneration": 3,
        "conditions": [c.to_k8s() for c in conditions],
        "engines": [e.to_dict() for e in engines],
    }
    errors = [f"{list(e.path)}: {e.message}" for e in STATUS_VALIDATOR.iter_errors(body)]
    assert not errors


# --------------------------------------------------------------------------------------------
# The CRD object itself


def test_committed_crd_is_generated_from_code() -> None:
    assert CRD_FILE.read_text() == crd.render(), f"{CRD_FILE} is stale; {REGENERATE}"


def test_helm_chart_crd_is_the_same_file() -> None:
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes(), f"{CHART_CRD_FILE} differs; {REGENERATE}"


def test_committed_localmodelnode_crd_is_generated_from_code_and_in_the_chart() -> None:
    committed = ROOT / "crds" / "localmodelnodes.localmodel.io.yaml"
    chart = ROOT / "deploy" / "helm" / "localmodel" / "crds" / "localmodelnodes.localmodel.io.yaml"
    regenerate = (
        "python -m controller.crd localmodelnodes > crds/localmodelnodes.localmodel.io.yaml && cp it to the chart"
    )
    assert committed.read_text() == crd.render(crd.NODE_PLURAL), f"{committed} is stale; {regenerate}"
    assert chart.read_bytes() == committed.read_bytes(), f"{chart} differs; {regenerate}"


def test_localmodelnode_entries_are_one_atomic_list_per_node() -> None:
    schema = crd.node_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    models = schema["properties"]["status"]["properties"]["models"]
    assert models["x-kubernetes-list-type"] == "atomic"  # one managedFields entry, whatever the entry count
    assert models["items"]["required"] == ["namespace", "name", "uid"]
    assert crd.node_crd()["spec"]["scope"] == "Cluster"


def test_crd_main_refuses_an_unknown_crd_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["widgets"]) == 2
    assert "usage: python -m controller.crd" in capsys.readouterr().err


def test_crd_identity() -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert doc["metadata"]["name"] == "localmodels.localmodel.io"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        "LocalModel",
        "localmodels",
        "localmodel",
        ["lm"],
    )
    assert doc["spec"]["scope"] == "Namespaced"
    [version] = doc["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert f"{doc['spec']['group']}/{version['name']}" == spec.API_VERSION


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.lstrip(".").split("."):
        name, _, index = part.partition("[")
        node = node["properties"][name]
        if index:
            node = node["items"]
    return node


@pytest.mark.parametrize("column", crd.printer_columns(), ids=lambda c: c["name"])
def test_printer_columns_point_at_declared_fields(column: dict[str, Any]) -> None:
    path = column["jsonPath"]
    if path == ".metadata.creationTimestamp":
        return
    if "?(@.type==" in path:
        assert path.startswith('.status.conditions[?(@.type=="Ready")].')
        field = path.rsplit(".", 1)[1]
        assert field in _openapi()["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
        return
    node = _resolve(_openapi(), path)
    assert node["type"] == column["type"]


def test_rules_that_iterate_or_match_are_bounded() -> None:
    """The API server rejects a CRD whose estimated CEL cost is too high: every string a regex
    runs over has a maxLength."""

    def walk(node: dict[str, Any], path: str) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            if ".matches(" in rule["rule"]:
                assert "maxLength" in node, f"{path}: a regex rule needs maxLength"
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_openapi(), "")
