"""Runtime-flag and hf-overrides validation, as DMR does it at `_configure` time.

See docs/engine-contract.md §3.2, §5.1 and §5.2.

The allowlists are those of the pinned peer server, docker/model-runner v1.2.9
(pkg/inference/runtime_flags_allowlist.go). That version allows `--reasoning` (added after
v1.2.6: docs/engine-contract.md §5.1); `--reasoning-preserve`, every file-path flag, `--host`,
`--port` and `-ot/--override-tensor` stay disallowed. Only llama.cpp and vLLM have allowlists:
every flag is rejected for the other backends.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from controller import wire

LLAMA_CPP_FLAGS: frozenset[str] = frozenset(
    (
        # Threading and CPU control
        "-t",
        "--threads",
        "-tb",
        "--threads-batch",
        "-C",
        "--cpu-mask",
        "-Cr",
        "--cpu-range",
        "--cpu-strict",
        "--prio",
        "--poll",
        "-Cb",
        "--cpu-mask-batch",
        "-Crb",
        "--cpu-range-batch",
        "--cpu-strict-batch",
        "--prio-batch",
        "--poll-batch",
        # Context and prediction
        "-c",
        "--ctx-size",
        "-n",
        "--predict",
        "--n-predict",
        "--keep",
        # Batching and performance
        "-b",
        "--batch-size",
        "-ub",
        "--ubatch-size",
        "--swa-full",
        "-fa",
        "--flash-attn",
        "--perf",
        "--no-perf",
        # Sampling parameters
        "--samplers",
        "-s",
        "--seed",
        "--temp",
        "--temperature",
        "--top-k",
        "--top-p",
        "--min-p",
        "--top-nsigma",
        "--xtc-probability",
        "--xtc-threshold",
        "--typical",
        "--repeat-last-n",
        "--repeat-penalty",
        "--presence-penalty",
        "--frequency-penalty",
        "--dry-multiplier",
        "--dry-base",
        "--dry-allowed-length",
        "--dry-penalty-last-n",
        "--mirostat",
        "--mirostat-lr",
        "--mirostat-ent",
        "--ignore-eos",
        "--dynatemp-range",
        "--dynatemp-exp",
        # GPU and device management
        "-dev",
        "--device",
        "-ngl",
        "--gpu-layers",
        "--n-gpu-layers",
        "-sm",
        "--split-mode",
        "-ts",
        "--tensor-split",
        "-mg",
        "--main-gpu",
        "-fit",
        "--fit",
        "-fitt",
        "--fit-target",
        "-fitc",
        "--fit-ctx",
        # Memory and caching
        "-kvo",
        "--kv-offload",
        "-nkvo",
        "--no-kv-offload",
        "--repack",
        "-nr",
        "--no-repack",
        "--no-host",
        "-ctk",
        "--cache-type-k",
        "-ctv",
        "--cache-type-v",
        "--mlock",
        "--mmap",
        "--no-mmap",
        "-dio",
        "--direct-io",
        "-ndio",
        "--no-direct-io",
        "-cram",
        "--cache-ram",
        "-kvu",
        "--kv-unified",
        "--context-shift",
        "--no-context-shift",
        # RoPE scaling
        "--rope-scaling",
        "--rope-scale",
        "--rope-freq-base",
        "--rope-freq-scale",
        "--yarn-orig-ctx",
        "--yarn-ext-factor",
        "--yarn-attn-factor",
        "--yarn-beta-slow",
        "--yarn-beta-fast",
        # Server configuration
        "-np",
        "--parallel",
        "-cb",
        "--cont-batching",
        "-nocb",
        "--no-cont-batching",
        "--warmup",
        "--no-warmup",
        "-to",
        "--timeout",
        "--threads-http",
        "--cache-prompt",
        "--no-cache-prompt",
        "--cache-reuse",
        "--sleep-idle-seconds",
        # Multimodal (safe flags only - no file paths)
        "--mmproj-auto",
        "--no-mmproj",
        "--no-mmproj-auto",
        "--mmproj-offload",
        "--no-mmproj-offload",
        "--image-min-tokens",
        "--image-max-tokens",
        "--spm-infill",
        # Speculative decoding (safe flags only - no file paths)
        "--spec-draft-threads",
        "-td",
        "--threads-draft",
        "--spec-draft-threads-batch",
        "-tbd",
        "--threads-batch-draft",
        "--spec-draft-cpu-mask",
        "-Cd",
        "--cpu-mask-draft",
        "--spec-draft-cpu-range",
        "-Crd",
        "--cpu-range-draft",
        "--spec-draft-cpu-strict",
        "--cpu-strict-draft",
        "--spec-draft-prio",
        "--prio-draft",
        "--spec-draft-poll",
        "--poll-draft",
        "--spec-draft-cpu-mask-batch",
        "-Cbd",
        "--cpu-mask-batch-draft",
        "--spec-draft-cpu-strict-batch",
        "--cpu-strict-batch-draft",
        "--spec-draft-prio-batch",
        "--prio-batch-draft",
        "--spec-draft-poll-batch",
        "--poll-batch-draft",
        "--spec-draft-override-tensor",
        "-otd",
        "--override-tensor-draft",
        "--spec-draft-cpu-moe",
        "-cmoed",
        "--cpu-moe-draft",
        "--spec-draft-n-cpu-moe",
        "--spec-draft-ncmoe",
        "-ncmoed",
        "--n-cpu-moe-draft",
        "--spec-draft-n-max",
        "--draft-n-max",
        "--draft-max",
        "--spec-draft-n-min",
        "--draft-n-min",
        "--draft-min",
        "--spec-draft-p-split",
        "--draft-p-split",
        "--spec-draft-p-min",
        "--draft-p-min",
        "--spec-draft-backend-sampling",
        "--no-spec-draft-backend-sampling",
        "--spec-draft-device",
        "-devd",
        "--device-draft",
        "--spec-draft-ngl",
        "-ngld",
        "--gpu-layers-draft",
        "--n-gpu-layers-draft",
        "--spec-type",
        "--spec-ngram-mod-n-min",
        "--spec-ngram-mod-n-max",
        "--spec-ngram-mod-n-match",
        "--spec-ngram-simple-size-n",
        "--spec-ngram-simple-size-m",
        "--spec-ngram-simple-min-hits",
        "--spec-ngram-map-k-size-n",
        "--spec-ngram-map-k-size-m",
        "--spec-ngram-map-k-min-hits",
        "--spec-ngram-map-k4v-size-n",
        "--spec-ngram-map-k4v-size-m",
        "--spec-ngram-map-k4v-min-hits",
        "--spec-draft-type-k",
        "-ctkd",
        "--cache-type-k-draft",
        "--spec-draft-type-v",
        "-ctvd",
        "--cache-type-v-draft",
        "-cd",
        "--ctx-size-draft",
        # LoRA (safe flags only - no file paths)
        "--lora-init-without-apply",
        # Control vectors (safe flags only - no file paths)
        "--control-vector-layer-range",
        # Grammar and constraints (safe flags only - no file paths)
        "--grammar",
        "-j",
        "--json-schema",
        "-bs",
        "--backend-sampling",
        # Template and format control (safe flags only - no file paths)
        "--chat-template",
        "--chat-template-kwargs",
        "--jinja",
        "--no-jinja",
        "--pooling",
        "--reasoning",
        "--reasoning-format",
        "--reasoning-budget",
        "--prefill-assistant",
        "--no-prefill-assistant",
        # Web interface and API (safe flags only - no file paths)
        "--api-prefix",
        "--webui",
        "--no-webui",
        "--webui-config",
        "--api-key",
        "--metrics",
        "--no-metrics",
        "--props",
        "--slots",
        "--no-slots",
        # Embedding and specialized
        "--embedding",
        "--embeddings",
        "--rerank",
        "--reranking",
        "-sps",
        "--slot-prompt-similarity",
        # Tensor and computation (safe flags only)
        "-cmoe",
        "--cpu-moe",
        "-ncmoe",
        "--n-cpu-moe",
        "--check-tensors",
        "--op-offload",
        "--no-op-offload",
        # Verbose/debug
        "-v",
        "--verbose",
    )
)

VLLM_FLAGS: frozenset[str] = frozenset(
    (
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--max-model-len",
        "--max-num-batched-tokens",
        "--max-num-seqs",
        "--block-size",
        "--swap-space",
        "--seed",
        "--dtype",
        "--quantization",
        "-q",
        "--kv-cache-dtype",
        "--enforce-eager",
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
        "--disable-custom-all-reduce",
        "--use-v2-block-manager",
        "--tokenizer-mode",
        "--max-logprobs",
        "--revision",
        "--load-format",
        "--disable-log-stats",
        "--served-model-name",
        "--gpu-memory-utilization",
    )
)

ALLOWED_FLAGS: Mapping[str, frozenset[str]] = {wire.LLAMA_CPP: LLAMA_CPP_FLAGS, wire.VLLM_BACKEND: VLLM_FLAGS}

_HF_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class FlagError(ValueError):
    """A validation failure; `str()` is the engine's exact message (answered as a 500)."""


def split_raw_flags(raw: str) -> list[str]:
    """Split `raw-runtime-flags` with shell-word rules (go-shellwords; POSIX shlex here)."""
    try:
        return shlex.split(raw, posix=True)
    except ValueError:
        raise FlagError("invalid runtime flags: invalid command line string") from None


def flag_key(flag: str) -> str:
    """ParseFlagKey: `--threads=4` -> `--threads`, `-t` -> `-t`, `4` -> `` (a value)."""
    if not flag.startswith("-"):
        return ""
    return flag.split("=", 1)[0]


def validate_runtime_flags(backend: str, flags: Sequence[str]) -> None:
    """ValidateRuntimeFlags: allowlist of `backend`, then flag injection, then path characters."""
    allowed = ALLOWED_FLAGS.get(backend, frozenset())
    for flag in flags:
        key = flag_key(flag)
        if key and key not in allowed:
            raise FlagError(f"runtime flag {_go_quote(key)} is not allowed for backend {_go_quote(backend)}")
    for flag in flags:
        _, sep, value = flag.partition("=")
        if sep and value.startswith("-") and not (len(value) >= 2 and value[1].isascii() and value[1].isdigit()):
            raise FlagError(f"invalid flag {_go_quote(flag)}: value cannot start with '-' unless followed by a digit")
    validate_flag_paths(flags)


def validate_flag_paths(flags: Sequence[str]) -> None:
    """The path check alone: all that model-runner before v1.0.15 (no allowlist) does."""
    for flag in flags:
        if "/" in flag or "\\" in flag:
            raise FlagError(f"invalid runtime flag {_go_quote(flag)}: paths are not allowed (contains '/' or '\\\\')")


def validate_hf_overrides(overrides: Mapping[str, Any]) -> None:
    """HFOverrides.Validate: keys (nested too) match `^[a-zA-Z_][a-zA-Z0-9_]*$`; values are JSON values."""
    for key, value in overrides.items():
        if not _HF_KEY.match(key):
            raise FlagError(
                f"invalid hf_overrides key {_go_quote(key)}: must contain only alphanumeric characters and "
                "underscores, and start with a letter or underscore"
            )
        _validate_hf_value(key, value)


def _validate_hf_value(path: str, value: Any) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _validate_hf_value(f"{path}[{index}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not _HF_KEY.match(key):
                raise FlagError(
                    f"invalid hf_overrides nested key {_go_quote(key)} in {_go_quote(path)}: must contain only "
                    "alphanumeric characters and underscores, and start with a letter or underscore"
                )
            _validate_hf_value(f"{path}.{key}", item)
    elif not (value is None or isinstance(value, (str, bool, int, float))):
        raise FlagError(
            f"invalid hf_overrides value for key {_go_quote(path)}: unsupported type {type(value).__name__}"
        )


def _go_quote(text: str) -> str:
    """Go's %q for the printable ASCII strings these messages carry: double quotes, `\\` and `"` escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'
