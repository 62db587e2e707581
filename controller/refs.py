"""Model references: DMR's normalisation, so that `ai/x`, `ai/x:latest` and `docker.io/ai/x:latest` compare equal.

DMR adds the `ai/` namespace and the `:latest` tag and lowercases repository names (normalizeModelName in
pkg/distribution/distribution/client.go); since its containerd store (PR #536) stored tags also carry
the registry (`docker.io/ai/smollm2:latest`). Compare references only through `canonical_ref`.
"""

from __future__ import annotations

DEFAULT_NAMESPACE = "ai"
DEFAULT_TAG = "latest"
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")
_HF_SHORT = "hf.co/"
_HF_LONG = "huggingface.co/"


def _has_registry(name: str) -> bool:
    first, sep, _ = name.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _split_tag(name: str) -> tuple[str, str]:
    """`repo[:tag]` into (repo, `:tag` or ""); a colon before the last `/` is a registry port, not a tag."""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon:]
    return name, ""


def _strip_prefixes(ref: str) -> str:
    """Whitespace, the Docker Hub registry and `library/` dropped; `hf.co/` spelled `huggingface.co/` (DMR
    treats them as one registry)."""
    name = ref.strip()
    lowered = name.lower()
    if lowered.startswith(_HF_SHORT):
        return _HF_LONG + name[len(_HF_SHORT) :]
    for prefix in _DOCKER_HUB:
        if lowered.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name.lower().startswith("library/"):
        name = name[len("library/") :]
    return name


def canonical_ref(ref: str) -> str:
    """Normalise a model reference for comparison (not for display): repository lowercased, Hub prefix
    dropped, `ai/` namespace and `:latest` tag added. The tag keeps its case, as in DMR (`ai/x:LATEST`
    is not `ai/x:latest`). Digests (`sha256:...`, `name@sha256:...`) are lowercased whole."""
    name = _strip_prefixes(ref)
    if "@" in name or name.lower().startswith("sha256:"):
        name = name.lower()
        if name.startswith("sha256:") or "/" in name:
            return name
        return f"{DEFAULT_NAMESPACE}/{name}"
    repo, tag = _split_tag(name)
    repo = repo.lower()
    if "/" not in repo:
        repo = f"{DEFAULT_NAMESPACE}/{repo}"
    return repo + (tag or f":{DEFAULT_TAG}")


def same_model(a: str, b: str) -> bool:
    return canonical_ref(a) == canonical_ref(b)


def qualified_ref(ref: str) -> str:
    """The fully qualified tag current DMR stores: `docker.io/ai/smollm2:latest` for `ai/smollm2`, the
    repository lowercased and the tag as written."""
    name = canonical_ref(ref)
    if name.startswith("sha256:") or _has_registry(name):
        return name
    return f"docker.io/{name}"
