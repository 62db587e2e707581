"""Model references: DMR's normalisation, so that `ai/x`, `ai/x:latest` and `docker.io/ai/x:latest` compare equal.

DMR adds the `ai/` namespace and the `:latest` tag and lowercases names (normalizeModelName in
pkg/distribution/distribution/client.go); since its containerd store (PR #536) stored tags also carry
the registry (`docker.io/ai/smollm2:latest`). Compare references only through `canonical_ref`.
"""

from __future__ import annotations

DEFAULT_NAMESPACE = "ai"
DEFAULT_TAG = "latest"
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def _has_registry(name: str) -> bool:
    first, sep, _ = name.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def canonical_ref(ref: str) -> str:
    """Normalise a model reference for comparison (not for display): lowercase, Hub prefix dropped,
    `ai/` namespace and `:latest` tag added. Digests (`sha256:...`) are returned lowercased."""
    name = ref.strip().lower()
    if name.startswith("sha256:"):
        return name
    for prefix in _DOCKER_HUB:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith("library/"):
        name = name[len("library/"):]
    if "@" in name:
        return name if "/" in name or _has_registry(name) else f"{DEFAULT_NAMESPACE}/{name}"
    if "/" not in name:
        name = f"{DEFAULT_NAMESPACE}/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name = f"{name}:{DEFAULT_TAG}"
    return name


def same_model(a: str, b: str) -> bool:
    return canonical_ref(a) == canonical_ref(b)


def qualified_ref(ref: str) -> str:
    """The fully qualified tag current DMR stores (`docker.io/ai/smollm2:latest`), keeping the user's case."""
    name = ref.strip()
    if name.lower().startswith("sha256:"):
        return name
    lowered = name.lower()
    for prefix in _DOCKER_HUB:
        if lowered.startswith(prefix):
            name = name[len(prefix):]
            break
    if "/" not in name:
        name = f"{DEFAULT_NAMESPACE}/{name}"
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name = f"{name}:{DEFAULT_TAG}"
    if _has_registry(name):
        return name
    return f"docker.io/{name}"
