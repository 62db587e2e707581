"""The emulated engine's model store and the registry it pulls from (the distribution client's side).

It holds the pulled models and their tags, and answers what the store answers: the lookups of
`GetModel`/`ResolveID` (full, `sha256:`-prefixed or 12-digit ID, `name@digest`, a tag compared after
DMR's normalisation), `DeleteModel`'s untagging rules, `df`, and which artifact a pull fetches. The
registry is the `Catalog` (no network). A pull's slots and the control API's armed failure live here
too: they are the pull's, and nothing else reads them.

It knows nothing of configs or runners (deleting a model unloads nothing, as on the engine), so the
config and runner modules can depend on it and not the other way round.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller import wire
from controller.emulator.catalog import CREATED, Artifact, Catalog
from controller.engine.errors import BadRequest, EngineError, NotFound
from controller.refs import canonical_ref

BACKEND_DISK_USAGE = 52_428_800
PULL_SLOTS = 2  # pulls at once; a third waits

_HEX_ID = re.compile(r"^(?:sha256:)?([0-9a-f]{12}|[0-9a-f]{64})$")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$")


@dataclass
class StoredModel:
    """A model in the local store: one artifact under one or more tags."""

    id: str
    tags: list[str]
    artifact: Artifact

    def to_json(self) -> dict[str, Any]:
        """One entry of GET /models (Model: tags omitempty)."""
        out: dict[str, Any] = {wire.MODEL_ID: self.id}
        if self.tags:
            out[wire.MODEL_TAGS] = list(self.tags)
        out[wire.MODEL_CREATED] = CREATED
        out[wire.MODEL_CONFIG] = self.artifact.config_json()
        return out

    def backend_for(self, backend: str) -> str:
        """selectBackendForModel on Linux: safetensors -> vLLM, DDUF/diffusers -> diffusers, else `backend`."""
        if self.artifact.format == wire.FORMAT_SAFETENSORS:
            return wire.VLLM_BACKEND
        if self.artifact.format in (wire.FORMAT_DDUF, wire.FORMAT_DIFFUSERS):
            return wire.DIFFUSERS
        return backend


@dataclass
class PullFailure:
    """`POST /_emulator/fail-next-pull`: the next downloading pull stops after `after_bytes` (None: half)."""

    after_bytes: int | None
    message: str


class ModelStore:
    """Pulled models by ID (in pull order), their tags, and the registry (`catalog`) pulls come from."""

    def __init__(self, catalog: Catalog | None = None, *, pull_seconds: float = 0.0) -> None:
        self.catalog = catalog or Catalog()
        self.pull_seconds = pull_seconds  # how long a pull's progress stream takes
        self.pull_slots = asyncio.Semaphore(PULL_SLOTS)
        self.pull_failure: PullFailure | None = None
        self.models: dict[str, StoredModel] = {}  # by ID, in pull order
        self._tags: dict[str, str] = {}  # canonical_ref(tag) -> ID (as DMR compares tags)
        self._short_ids: dict[str, str] = {}  # first 12 hex digits -> ID

    def preload(self, refs: Iterable[str]) -> None:
        """Store catalog models as if pulled before the engine started; an unknown reference is a ValueError."""
        for ref in refs:
            found = self.catalog.lookup(ref)
            if found is None:
                raise ValueError(
                    f"cannot preload {ref!r}: not in the catalog (known: {', '.join(self.catalog.refs())})"
                )
            self.add_model(*found)

    def add_model(self, artifact: Artifact, tag: str) -> tuple[StoredModel, bool]:
        """Store an artifact under a tag. Returns the model and whether it was already stored."""
        model = self.models.get(artifact.digest)
        cached = model is not None
        if model is None:
            model = StoredModel(artifact.digest, [], artifact)
            self.models[model.id] = model
            self._short_ids[model.id.removeprefix("sha256:")[:12]] = model.id
        previous = self._tags.get(canonical_ref(tag))
        if previous is not None and previous != model.id:
            self._untag(self.models[previous], tag)
        if previous != model.id:
            model.tags.append(tag)
            self._tags[canonical_ref(tag)] = model.id
        return model, cached

    def lookup(self, ref: str) -> StoredModel | None:
        """The distribution client's GetModel: an ID (full, `sha256:`-prefixed or 12-digit), `name@digest`, or a tag."""
        ref = ref.strip()
        if not ref:
            return None
        lowered = ref.lower()
        match = _HEX_ID.match(lowered)
        if match:
            hexid = match.group(1)
            found = (
                self.models.get("sha256:" + hexid)
                if len(hexid) == 64
                else self.models.get(self._short_ids.get(hexid, ""))
            )
            if found is not None:
                return found
        if "@sha256:" in lowered:
            return self.models.get(lowered.split("@", 1)[1])
        model_id = self._tags.get(canonical_ref(ref))
        return self.models.get(model_id) if model_id else None

    def resolve_id(self, ref: str) -> str:
        """ResolveID: the store ID when the model is local, otherwise the reference as sent."""
        model = self.lookup(ref)
        return model.id if model else ref

    def local_model(self, ref: str) -> StoredModel:
        """The stored model `ref` names, or the engine's 404 for a model it does not have."""
        model = self.lookup(ref)
        if model is None:
            raise NotFound(f"error while getting model: get model '\"{ref}\"': model not found", status=404)
        return model

    def find_by_short_name(self, name: str) -> StoredModel | None:
        """GET /models/{name} fallback: `smollm2` matches a tag whose last path element is `smollm2`."""
        for model in self.models.values():
            for tag in model.tags:
                repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
                if repo.rsplit("/", 1)[-1] == name:
                    return model
        return None

    def delete_model(self, ref: str, force: bool) -> list[dict[str, str]]:
        """DeleteModel: untag a tag (deleting the model with its last tag); an ID with several tags needs force.
        Runners are not unloaded (as in the engine)."""
        model = self.lookup(ref)
        if model is None:
            raise NotFound("error while deleting model: model not found", status=404)
        is_tag = not _HEX_ID.match(ref.strip().lower()) and "@" not in ref
        actions: list[dict[str, str]] = []
        if is_tag:
            tag = next(t for t in model.tags if canonical_ref(t) == canonical_ref(ref))
            self._untag(model, tag)
            actions.append({"Untagged": tag})
            if model.tags:
                return actions
        elif len(model.tags) > 1 and not force:
            raise EngineError(
                f'error while deleting model: unable to delete "{ref}" (must be forced) due to multiple tag '
                "references: resource conflict",
                status=409,
            )
        for tag in list(model.tags):
            self._untag(model, tag)
            actions.append({"Untagged": tag})
        del self.models[model.id]
        self._short_ids.pop(model.id.removeprefix("sha256:")[:12], None)
        actions.append({"Deleted": model.id})
        return actions

    def _untag(self, model: StoredModel, tag: str) -> None:
        model.tags.remove(tag)
        self._tags.pop(canonical_ref(tag), None)

    def disk_usage(self) -> dict[str, int]:
        """GET /engines/df."""
        return {
            "models_disk_usage": sum(m.artifact.size_bytes for m in self.models.values()),
            "default_backend_disk_usage": BACKEND_DISK_USAGE,
        }

    def pull_target(self, ref: str) -> tuple[Artifact, str]:
        """What a pull of `ref` fetches, or the error the engine answers before streaming."""
        if not valid_reference(ref):
            raise BadRequest("Invalid model reference", status=400)
        found = self.catalog.lookup(ref)
        if found is None:
            raise NotFound("Model not found", status=404)
        return found

    def take_pull_failure(self) -> PullFailure | None:
        """The armed failure, disarmed: it applies to one pull only."""
        failure, self.pull_failure = self.pull_failure, None
        return failure


def valid_reference(ref: str) -> bool:
    """Whether a pull reference parses as an OCI reference after DMR's normalisation (ai/ and :latest added,
    name lowercased); `hf.co/...` and `huggingface.co/...` follow the same grammar."""
    ref = ref.strip()
    if not ref:
        return False
    name, tag = ref, ""
    if "@" not in ref:
        slash, colon = ref.rfind("/"), ref.rfind(":")
        if colon > slash:
            name, tag = ref[:colon], ref[colon:]
    if "/" not in name:
        name = "ai/" + name
    return bool(_REFERENCE.match(name.lower() + tag))
