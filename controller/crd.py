"""The LocalModel CustomResourceDefinition, built from the constants that controller/spec.py validates with.

The CRD and the pydantic model must agree (tests/unit/test_crd.py runs one table of specs through
both), so the enums, ranges, effort names and defaults below are taken from `controller.spec` and
`controller.wire` rather than typed twice. The committed copies are regenerated with:

    python -m controller.crd > crds/localmodels.localmodel.io.yaml
    python -m controller.crd localmodelnodes > crds/localmodelnodes.localmodel.io.yaml
    cp crds/*.localmodel.io.yaml deploy/helm/localmodel/crds/

Where the two validators cannot agree, the CRD is the looser one and the controller reports the
rest (`Stalled`, reason `InvalidSpec`) before anything is sent to an engine:

- `runtimeFlags` is a list only. A structural schema allows one type per field, and list-or-string
  is not one of the unions Kubernetes offers; the one-string form is for files read by the daemon
  and the CLI. On Kubernetes, `rawRuntimeFlags` takes a single string.
- `vllm.hfOverrides` holds arbitrary JSON (`x-kubernetes-preserve-unknown-fields`), which CEL cannot
  see at all, so its key names (top-level and nested) are checked by the controller only. Typing it
  as a map of untyped values so that a rule could read the keys does not work either: kube-apiserver
  v1.37 rejects the CRD ("unable to convert structural schema to CEL declarations"). For the
  same reason the "vllm options need the vllm backend" rule rejects any `vllm` block, even `{}`,
  next to an explicit non-vLLM backend.

Every CEL rule is bounded (`maxLength`, `maxItems`) so that the API server's cost estimate stays
within its per-CRD budget.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import yaml

from controller import spec, wire
from controller.status import READY, Phase

GROUP: Final = spec.API_VERSION.split("/")[0]
VERSION: Final = spec.API_VERSION.split("/")[1]
PLURAL: Final = "localmodels"
SINGULAR: Final = "localmodel"
NAME: Final = f"{PLURAL}.{GROUP}"
NODE_KIND: Final = "LocalModelNode"
NODE_PLURAL: Final = "localmodelnodes"
NODE_NAME: Final = f"{NODE_PLURAL}.{GROUP}"

#: Bounds that keep CEL cost estimates small; generous for real use.
MAX_FLAGS: Final = 256
MAX_FLAG_LENGTH: Final = 1024
MAX_RAW_FLAGS_LENGTH: Final = 16384
MAX_KEEP_ALIVE_LENGTH: Final = 64
MAX_THINKING_LENGTH: Final = 64
MAX_MODEL_REF_LENGTH: Final = 512
MAX_HF_OVERRIDES: Final = 128

_NO_WHITESPACE: Final = r"^\S+$"
_DIGITS: Final = r"([0-9]+([.][0-9]*)?|[.][0-9]+)"
_GO_UNITS: Final = "ns|us|µs|μs|ms|s|m|h"
# No minus sign except on -1: the engine takes any negative duration as "never" (the spec says "write -1").
KEEP_ALIVE_PATTERN: Final = rf"^(0|-1|[+]?({_DIGITS}({_GO_UNITS}))+)$"


def _effort_pattern() -> str:
    efforts = [e for e in spec.THINKING_EFFORTS if e != spec.ADAPTIVE]
    alternatives = "|".join(efforts)
    return rf"(?i)^\s*({alternatives}|{spec.ADAPTIVE}(/({alternatives}))?)\s*$"


def _cel_quote(text: str) -> str:
    """A CEL single-quoted string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_cel_quote(i) for i in items) + "]"


def _rule(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _model_ref(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": MAX_MODEL_REF_LENGTH,
        "pattern": _NO_WHITESPACE,
    }


def _fraction(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description, "minimum": 0, "maximum": 1}


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `spec`, with CEL rules for what a schema cannot say."""
    flagless = _cel_list(list(spec.FLAGLESS_BACKENDS))
    no_images = _cel_list([wire.LLAMA_CPP, wire.VLLM_BACKEND])
    efforts = ", ".join([*spec.THINKING_EFFORTS, f"{spec.ADAPTIVE}/<effort>"])
    return {
        "type": "object",
        "description": "The model and the engine settings it should run with. Absent fields are left to the engine.",
        "required": ["model"],
        "properties": {
            "model": _model_ref(
                "Model reference to pull and configure, e.g. ai/smollm2, ai/qwen3:14B or hf.co/<org>/<repo>."
            ),
            "backend": {
                "type": "string",
                "enum": list(wire.BACKENDS),
                "description": (
                    "Engine backend to configure. Usually omitted: the engine picks it from the model format "
                    "(GGUF: llama.cpp, safetensors: vllm, DDUF: diffusers)."
                ),
            },
            "mode": {
                "type": "string",
                "enum": list(wire.MODES),
                "description": (
                    "What the model serves. Omitted: completion (embedding when the flags are exactly --embeddings)."
                ),
            },
            "contextSize": {
                "type": "integer",
                "format": "int32",
                "minimum": spec.UNLIMITED_CONTEXT,
                "maximum": wire.INT32_MAX,
                "description": (
                    "Total context window in tokens (prompt plus output), -1 for unlimited on llama.cpp. "
                    "Omit it to use the model's packaged default; 0 is rejected."
                ),
                "x-kubernetes-validations": [
                    _rule(
                        "self != 0",
                        "contextSize 0 is not a size: omit contextSize to use the model's default, "
                        "or use -1 (unlimited) or a positive token count",
                    ),
                ],
            },
            "runtimeFlags": {
                "type": "array",
                "maxItems": MAX_FLAGS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_FLAG_LENGTH},
                "description": (
                    'Engine command-line flags, one list item per argument, e.g. [--threads, "4", --temp=0.7]. '
                    "The engine checks them against its allowlist; mlx, sglang and diffusers take none. "
                    "On Kubernetes this is a list; use rawRuntimeFlags for a single shell-style string."
                ),
            },
            "rawRuntimeFlags": {
                "type": "string",
                "maxLength": MAX_RAW_FLAGS_LENGTH,
                "description": (
                    "Engine flags as one shell-style string, split by the engine. Exclusive with runtimeFlags."
                ),
            },
            "keepAlive": {
                "type": "string",
                "maxLength": MAX_KEEP_ALIVE_LENGTH,
                "description": (
                    "How long the engine keeps the model loaded when idle: a Go duration (30s, 5m, 2h30m), "
                    '"0" to unload as soon as idle or "-1" to never unload. Omitted: the engine default (5m).'
                ),
                "x-kubernetes-validations": [
                    _rule(
                        f"self.matches({_cel_quote(KEEP_ALIVE_PATTERN)})",
                        'keepAlive must be a Go duration such as 30s, 5m or 2h30m, "0" (unload when idle) '
                        'or "-1" (never unload); a bare number is not a duration, and a negative one is '
                        "written -1",
                    ),
                ],
            },
            "thinkingBudget": {
                "x-kubernetes-int-or-string": True,
                "maxLength": MAX_THINKING_LENGTH,
                "description": (
                    "Reasoning budget: a token count (-1 unlimited, 0 off) or an effort, case-insensitive: "
                    f"{efforts}. Sent to llama.cpp; not applicable to other backends."
                ),
                "x-kubernetes-validations": [
                    _rule(
                        f"type(self) == int ? (self >= -1 && self <= {wire.INT32_MAX}) "
                        f": self.matches({_cel_quote(_effort_pattern())})",
                        f"thinkingBudget must be an integer from -1 (unlimited) to {wire.INT32_MAX}, "
                        f"or one of the efforts {efforts}",
                    ),
                ],
            },
            "vllm": {
                "type": "object",
                "description": "vLLM-only settings. Rejected next to an explicit non-vLLM backend.",
                "properties": {
                    "gpuMemoryUtilization": _fraction("Fraction of GPU memory vLLM may use, 0.0 to 1.0 inclusive."),
                    "hfOverrides": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        "maxProperties": MAX_HF_OVERRIDES,
                        "description": (
                            "Hugging Face model config overrides, e.g. {rope_scaling: {rope_type: yarn, factor: 4.0}}. "
                            "Every key, nested ones included, must match ^[a-zA-Z_][a-zA-Z0-9_]*$; "
                            "the controller checks the keys before anything is sent."
                        ),
                    },
                },
            },
            "speculative": {
                "type": "object",
                "description": (
                    "Speculative decoding: a smaller draft model (which is pulled too) predicts tokens ahead."
                ),
                "properties": {
                    "draftModel": _model_ref("Draft model reference, e.g. ai/qwen3:0.6B-F16."),
                    "numTokens": {
                        "type": "integer",
                        "format": "int32",
                        "minimum": 1,
                        "maximum": wire.INT32_MAX,
                        "description": "Tokens the draft model predicts per step, e.g. 16.",
                    },
                    "acceptanceRate": _fraction("Minimum acceptance rate of draft tokens, 0.0 to 1.0 inclusive."),
                },
            },
            "preload": {
                "type": "boolean",
                "default": spec.LocalModelSpec.model_fields["preload"].default,
                "description": "Load the model after configuring it, so that the first request does not wait.",
            },
            "pullPolicy": {
                "type": "string",
                "enum": list(spec.PULL_POLICIES),
                "default": spec.PULL_IF_NOT_PRESENT,
                "description": (
                    "IfNotPresent pulls when the engine lacks the model; Always asks the registry on every "
                    "spec change; Never expects the model to be there already."
                ),
            },
            "deletionPolicy": {
                "type": "string",
                "enum": list(spec.DELETION_POLICIES),
                "default": spec.DELETION_UNLOAD,
                "description": (
                    "What deleting the LocalModel does on the engines: Unload evicts the model and forgets its "
                    "config, Delete also removes the model files, Retain leaves everything as it is."
                ),
            },
            "nodeSelector": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Node-agent mode: only the engines on nodes with these labels serve this model.",
            },
        },
        "x-kubernetes-validations": [
            _rule(
                "!(has(self.runtimeFlags) && has(self.rawRuntimeFlags))",
                "runtimeFlags and rawRuntimeFlags are both set; the engine would silently ignore rawRuntimeFlags: "
                "keep only one of them",
                ".rawRuntimeFlags",
                "FieldValueForbidden",
            ),
            _rule(
                f"!has(self.backend) || self.backend == {_cel_quote(wire.VLLM_BACKEND)} || !has(self.vllm)",
                "vllm options apply only to the vllm backend: remove the vllm block or set backend: vllm",
                ".vllm",
                "FieldValueForbidden",
            ),
            _rule(
                f"!has(self.backend) || !(self.backend in {flagless}) || "
                "((!has(self.runtimeFlags) || size(self.runtimeFlags) == 0) && "
                "(!has(self.rawRuntimeFlags) || size(self.rawRuntimeFlags) == 0))",
                "the mlx, sglang and diffusers backends reject every runtime flag: "
                "remove runtimeFlags and rawRuntimeFlags",
                ".backend",
                "FieldValueForbidden",
            ),
            _rule(
                f"!has(self.mode) || self.mode != {_cel_quote(wire.IMAGE_GENERATION)} || "
                f"!has(self.backend) || !(self.backend in {no_images})",
                "llama.cpp and vllm cannot generate images: use backend: diffusers or remove backend",
                ".mode",
                "FieldValueForbidden",
            ),
        ],
    }


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "A metav1.Condition: Ready (summary), Reconciling (work in progress), Stalled (needs a spec change)."
        ),
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "maxLength": 316, "description": "Ready, Reconciling or Stalled."},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "The .metadata.generation the condition was computed for.",
            },
            "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When status last changed."},
            "reason": {
                "type": "string",
                "maxLength": 1024,
                "description": "CamelCase cause, e.g. Applied, FlagRejected.",
            },
            "message": {"type": "string", "maxLength": 32768, "description": "What happened and what to do."},
        },
    }


def _engine_schema() -> dict[str, Any]:
    phases = ", ".join(p.value for p in Phase)
    return {
        "type": "object",
        "description": "This model on one engine (on Kubernetes node-agent mode, the engine is named after its node).",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "description": "Engine name."},
            "phase": {"type": "string", "description": f"Where the model stands on this engine: {phases}."},
            "ready": {"type": "boolean", "description": "The engine reports the desired config."},
            "reason": {"type": "string", "description": "CamelCase cause of the phase."},
            "message": {"type": "string", "description": "What happened on this engine."},
            "backend": {"type": "string", "description": "Backend that serves the model on this engine."},
            "modelID": {"type": "string", "description": "Digest of the pulled model (sha256:...)."},
            "appliedConfig": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "description": "The config as the engine reports it back (GET /engines/_configure), engine spelling.",
            },
            "loaded": {"type": "boolean", "description": "A runner for the model is loaded."},
            "pullProgress": {
                "type": "object",
                "description": "Progress of a pull in progress.",
                "properties": {
                    "percent": {"type": "integer", "minimum": 0, "maximum": 100},
                    "completedBytes": {"type": "integer", "format": "int64", "minimum": 0},
                    "totalBytes": {"type": "integer", "format": "int64", "minimum": 0},
                },
            },
            "lastError": {"type": "string", "description": "The last error the engine returned, verbatim."},
            "lastAppliedTime": {
                "type": "string",
                "format": "date-time",
                "description": "When the config was last applied to this engine.",
            },
            "notes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Settings that do not apply here and were not sent, and similar remarks.",
            },
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    }


def status_schema() -> dict[str, Any]:
    """The status the controller writes (kstatus shape), detail per engine keyed by name.

    The default makes a new object read back with `status.observedGeneration: 0`, below its
    generation (1), until the controller's first status write: kstatus (Helm 4 `--wait`, Flux)
    then reports InProgress (LatestGenerationNotObserved). Without it an object has no status until
    the controller writes one, and kstatus reads a custom resource without status as Current.
    """
    return {
        "type": "object",
        "description": "Written by the controller; never edit it.",
        "default": {"observedGeneration": 0},
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "The .metadata.generation last reconciled.",
            },
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "engines": {
                "type": "array",
                "description": (
                    "Detail per engine (central mode). Node agents report per node in LocalModelNode objects "
                    "instead; entries left by agents of earlier versions are removed by the aggregator."
                ),
                "items": _engine_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "ready": {"type": "string", "description": "Engines (or nodes) ready / expected, as `37/40`."},
            "readyNodes": {"type": "integer", "minimum": 0, "description": "Nodes (node-agent mode) ready."},
            "targetNodes": {
                "type": "integer",
                "minimum": 0,
                "description": "Nodes (node-agent mode) expected to report: matching, with a live agent.",
            },
            "backend": {"type": "string", "description": "Backend that serves the model."},
            "failingNodes": {
                "type": "array",
                "maxItems": 16,
                "description": "At most a handful of nodes that are not ready and not merely pending, by name.",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }


def _condition_column(name: str, field: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{READY}")].{field}',
        "description": description,
    }


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {
            "name": "Backend",
            "type": "string",
            "jsonPath": ".status.backend",
            "description": "Backend serving the model (every engine picks the same one from the model format).",
        },
        {"name": "Context", "type": "integer", "jsonPath": ".spec.contextSize"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": ".status.ready",
            "description": "Engines (nodes) with the declared config / engines (nodes) expected.",
        },
        _condition_column("Status", "status", "The Ready condition."),
        _condition_column("Reason", "reason", "Why the model is or is not ready."),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": spec.KIND,
                "listKind": f"{spec.KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": ["lm"],
                "categories": ["ai"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A model that Docker Model Runner engines should have pulled and configured "
                                "with these settings. The controller applies them, verifies what the engines "
                                "report, and re-applies them when they drift."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def node_crd() -> dict[str, Any]:
    """The LocalModelNode CRD: one cluster-scoped object per node, written by that node's agent only
    (controller/operator/nodereport.py), holding the node's entry for every LocalModel."""
    entry = _engine_schema()
    entry["description"] = "One LocalModel on this node."
    entry["required"] = ["namespace", "name", "uid"]
    entry["properties"] = {
        "namespace": {"type": "string"},
        "name": {"type": "string", "description": "The LocalModel's name."},
        "uid": {"type": "string", "description": "The LocalModel's uid."},
        **{k: v for k, v in entry["properties"].items() if k != "name"},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NODE_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": NODE_KIND,
                "listKind": f"{NODE_KIND}List",
                "plural": NODE_PLURAL,
                "singular": NODE_KIND.lower(),
                "shortNames": ["lmn"],
                "categories": ["ai"],
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "What the localmodel agent on one node (the object's name) reports for every "
                                "LocalModel it works on. Written by that agent only; never edit it."
                            ),
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "status": {
                                    "type": "object",
                                    "properties": {
                                        "ready": {"type": "string", "description": "Entries ready / entries."},
                                        "models": {
                                            "type": "array",
                                            "items": entry,
                                            "x-kubernetes-list-type": "atomic",
                                        },
                                    },
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER: Final = (
    "# Generated by `python -m controller.crd` from controller/crd.py and controller/spec.py: do not edit.\n"
)


def render(which: str = PLURAL) -> str:
    """A CRD as the YAML text committed under crds/ (`localmodels` or `localmodelnodes`)."""
    body = yaml.safe_dump(node_crd() if which == NODE_PLURAL else crd(), sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] not in (PLURAL, NODE_PLURAL):
        sys.stderr.write(f"usage: python -m controller.crd [{PLURAL}|{NODE_PLURAL}]\n")
        return 2
    sys.stdout.write(render(args[0] if args else PLURAL))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
