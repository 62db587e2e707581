"""The emulated engine's stored runner configs: what `POST /engines/_configure` keeps, and what reads it back.

A config is keyed by (backend, model ID, mode) and replaced wholesale, under the raw reference when
the model is not pulled yet (`ResolveID`). This module holds that table and the steps of a configure
that need no runner: the body decoded as Go decodes it (config.py), the runtime flags and
`hf_overrides` checked as the release checks them (flags.py), the backend the model's format forces
and the mode `--embeddings` implies. It also answers the table's readers: `GET /engines/_configure`,
the config a new runner starts with (`loader.load`), and a runner's keep-alive.

Whether a runner may take the new config (an idle one is evicted, a busy one answers 409) is the
loader's rule and lives with the runners (runners.py), which call into this table, never the reverse.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from controller import wire
from controller.durations import SECOND
from controller.emulator.config import BackendConfig, DecodeError, decode_configure
from controller.emulator.flags import (
    FlagError,
    split_raw_flags,
    validate_flag_paths,
    validate_hf_overrides,
    validate_runtime_flags,
)
from controller.emulator.store import ModelStore
from controller.engine import capabilities as caps
from controller.engine.errors import BadRequest, EngineRejected, NotFound

DEFAULT_KEEP_ALIVE_NS = 5 * 60 * SECOND

ConfigKey = tuple[str, str]  # (backend, mode) within one model ID


@dataclass(frozen=True)
class Configure:
    """A `_configure` request that passed validation: where its config goes, and the model as sent."""

    backend: str
    model_ref: str
    model_id: str  # the store ID, or the reference as sent when the model is not pulled
    mode: str
    config: BackendConfig


class ConfigStore:
    """Stored configs by model ID (or raw reference), then (backend, mode). `features`: the emulated release's."""

    def __init__(self, store: ModelStore, features: Collection[str]) -> None:
        self._store = store
        self._features = features
        self.by_model: dict[str, dict[ConfigKey, BackendConfig]] = {}

    def validate(self, path_backend: str | None, body: bytes) -> Configure:
        """The checks of `POST /engines[/{backend}]/_configure` before the loader sees it, with the engine's errors."""
        backend = path_backend or wire.DEFAULT_BACKEND
        if backend not in wire.BACKENDS:
            raise NotFound("backend not found", status=404)
        try:
            request = decode_configure(
                body,
                keep_alive=caps.KEEP_ALIVE in self._features,
                image_generation=caps.IMAGE_GENERATION in self._features,
            )
        except DecodeError:
            raise BadRequest("invalid request", status=400) from None
        config = request.config
        flags = config.runtime_flags if config.runtime_flags else None
        try:
            if flags is None and request.raw_runtime_flags:
                flags = tuple(split_raw_flags(request.raw_runtime_flags))
            if caps.FLAG_ALLOWLIST in self._features:
                validate_runtime_flags(backend, flags or ())
            else:
                validate_flag_paths(flags or ())
            if config.vllm is not None and config.vllm.hf_overrides is not None:
                validate_hf_overrides(config.vllm.hf_overrides)
        except FlagError as exc:
            raise EngineRejected(str(exc), status=500) from None
        config = replace(config, runtime_flags=flags)
        mode = request.mode or (wire.EMBEDDING if flags and "--embeddings" in flags else wire.COMPLETION)
        model = self._store.lookup(request.model)
        if model is not None:
            backend = model.backend_for(backend)
        return Configure(backend, request.model, model.id if model else request.model, mode, config)

    def get(self, model_id: str, backend: str, mode: str) -> BackendConfig | None:
        return self.by_model.get(model_id, {}).get((backend, mode))

    def put(self, model_id: str, backend: str, mode: str, config: BackendConfig) -> None:
        self.by_model.setdefault(model_id, {})[(backend, mode)] = config

    def drop(self, model_id: str, backend: str) -> None:
        """`POST /engines/unload` with models and a backend: that backend's configs of the model go."""
        stored = self.by_model.get(model_id)
        if stored:
            for key in [k for k in stored if k[0] == backend]:
                del stored[key]
            if not stored:
                del self.by_model[model_id]

    def clear(self) -> None:
        self.by_model.clear()

    def keep_alive_ns(self, model_id: str, backend: str, mode: str) -> int:
        """The stored `keep_alive` of (backend, model, mode), or the engine's default of five minutes."""
        config = self.get(model_id, backend, mode)
        if config is not None and config.keep_alive_ns is not None:
            return config.keep_alive_ns
        return DEFAULT_KEEP_ALIVE_NS

    def for_load(self, backend: str, model_id: str, mode: str) -> tuple[BackendConfig, str]:
        """The config a new runner starts with, and its draft model ID (loader.load)."""
        stored = self.by_model.get(model_id, {})
        config = stored.get((backend, mode))
        if config is None and mode in (wire.RERANKING, wire.IMAGE_GENERATION):
            config = stored.get((backend, wire.COMPLETION))
        if config is None:
            model = self._store.lookup(model_id)
            packaged = model.artifact.context_size if model else None
            return BackendConfig(context_size=packaged if caps.PACKAGED_CONTEXT in self._features else None), ""
        return config, self.draft_id(config)

    def draft_id(self, config: BackendConfig) -> str:
        """The draft model's ID as the runner key holds it ("" without a draft model)."""
        return self._store.resolve_id(config.draft_model) if config.draft_model else ""

    def entries(self, model: str | None = None) -> list[dict[str, Any]]:
        """GET /engines/_configure[?model=]: entries whose model ID is in the store (others are omitted).

        A config stored before the pull sits under the raw reference: it is omitted until the model is
        pulled, then listed with ModelID = that raw reference (GetLocal finds the model by it), and
        `?model=` never finds it because the filter compares with the resolved `sha256:` ID. This is
        what getAllRunnerConfigs does, and it reconciles docs/engine-contract.md §3.4 with §4.1
        ("entries whose model is no longer in the store are left out")."""
        if model:
            model_id = self._store.resolve_id(model)
            groups = [(model_id, self.by_model.get(model_id, {}))]
        else:
            groups = list(self.by_model.items())
        entries = []
        for model_id, configs in groups:
            stored = self._store.lookup(model_id) if configs else None
            if stored is None:
                continue
            for (backend, mode), config in configs.items():
                entries.append(
                    {
                        wire.ENTRY_BACKEND: backend,
                        wire.ENTRY_MODEL: stored.tags[0] if stored.tags else "",
                        wire.ENTRY_MODEL_ID: model_id,
                        wire.ENTRY_MODE: mode,
                        wire.ENTRY_CONFIG: config.to_json(),
                    }
                )
        random.shuffle(entries)  # Go map order: two listings need not agree (docs/engine-contract.md §4.1)
        return entries

    def to_json(self) -> list[dict[str, Any]]:
        """Every stored config, also those the engine would not list (`GET /_emulator/state`)."""
        return [
            {"backend": backend, "model_id": model_id, "mode": mode, "config": config.to_json()}
            for model_id, configs in self.by_model.items()
            for (backend, mode), config in configs.items()
        ]
