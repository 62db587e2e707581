"""What a Docker Model Runner release can keep and answer, and how to tell which release an engine is.

Users run whatever their Docker Desktop or docker-model-plugin ships, so an engine may be older than
the fields a LocalModel sets. Two parts:

- **Pure** (`FEATURES`, `capabilities_for`, `parse_version`): the release table. Each feature names
  the first model-runner release that has it, established from the upstream tags (docker/model-runner)
  and checked against the real v1.0.10 and v1.2.9 by the contract tests (`tests/contract`, `-m peers`).
  The planner (controller/plan.py) takes a `Capabilities` and decides what to send and what to report.
- **Detection** (`detect`): once per engine connection. `GET /version` when the engine has it (since
  v1.0.30); an engine without it is older than v1.0.30, and whether it keeps `keep_alive` (since
  v1.0.15) is asked with one `_configure` that every release refuses without storing anything: an
  unparsable `keep_alive` next to a path in `runtime-flags`. A release that knows `keep_alive` fails to
  decode the body (400 `invalid request`); an older one ignores the unknown key and refuses the path
  (500 `... paths are not allowed`). Only then a second such body asks for `mode: image-generation`
  (since v1.0.12), which an older release fails to decode. v1.0.10 thus shows as "older than v1.0.12".

The compatibility table in docs/compatibility.md is generated from `FEATURES`
(tests/unit/test_capabilities.py fails when they disagree).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.engine.client import EngineClient

Version = tuple[int, int, int]

# The oldest release localmodel works with: the first with `GET /engines/_configure` (the read-back).
OLDEST_SUPPORTED = "v1.0.10"
# Releases the contract tests run against (tests/peers/build builds them from the Go module proxy).
TESTED_RELEASES = ("v1.0.10", "v1.2.9")

FIELD = "field"
ROUTE = "route"
BEHAVIOUR = "behaviour"


@dataclass(frozen=True)
class Feature:
    """Something a release has or lacks. `name` is what users see: a LocalModel field (`keepAlive`), a
    route (`GET /version`) or a behaviour. `since` is the first release that has it."""

    name: str
    kind: str  # FIELD | ROUTE | BEHAVIOUR
    since: str
    wire: str  # how it shows on the wire
    before: str  # what an older release does instead


# Keep sorted by kind, then by `since`. Everything localmodel uses that is not listed here is in every
# supported release (v1.0.10 on): the fields contextSize, runtimeFlags, rawRuntimeFlags, speculative,
# thinkingBudget, vllm and modes completion/embedding/reranking; the routes /, /models, /models/create,
# /engines/status, /engines/ps, /engines/_configure (GET and POST), /engines/requests, /engines/unload.
FEATURES: tuple[Feature, ...] = (
    Feature(
        "mode: image-generation",
        FIELD,
        "v1.0.12",
        '"mode": "image-generation" in _configure',
        "400 invalid request (unknown backend mode)",
    ),
    Feature(
        "packaged context for unconfigured runners",
        BEHAVIOUR,
        "v1.0.14",
        'a runner started without a stored config shows {"context-size": <packaged>} in GET /engines/requests',
        "it shows {}",
    ),
    Feature(
        "keepAlive",
        FIELD,
        "v1.0.15",
        "keep_alive in _configure, read back by GET /engines/_configure and /engines/ps",
        "dropped silently: 202, and the read-back has no keep_alive (an invalid value also answers 202)",
    ),
    Feature(
        "GET /version",
        ROUTE,
        "v1.0.30",
        '{"version": "v1.2.9"}',
        "404 page not found",
    ),
    Feature(
        "runtime-flag allowlist",
        BEHAVIOUR,
        "v1.0.15",
        "a flag outside the backend's allowlist (--host, a value that carries another flag) answers 500",
        "only flags containing / or \\ are refused; --host 0.0.0.0 is stored with 202",
    ),
    Feature(
        "preload without inference",
        BEHAVIOUR,
        "v1.0.15",
        "X-Preload-Only: true loads the runner and answers 200 with no body; a 202 configure starts a background load",
        "the header is ignored: the preload is a real (empty) chat completion, and a configure loads nothing",
    ),
    Feature(
        "runner loading state",
        BEHAVIOUR,
        "v1.1.13",
        '"loading": true in GET /engines/ps while a runner starts',
        "a runner shows in /engines/ps only once it is ready, without loading or keep_alive",
    ),
)

# Differences localmodel absorbs without a capability (found by the contract tests on v1.0.10).
ABSORBED: tuple[str, ...] = (
    "pull progress lines spell the layer's keys as Go field names (`ID`, `Size`, `Current`) and add "
    "`pulled`: the client reads both spellings",
    "`GET /engines/status` says `running llama.cpp version: ...` instead of `Running: llama.cpp ...`: "
    "localmodel does not parse it",
    "a model pulled from a registry set with `DEFAULT_REGISTRY` (there is no registry-mirror setting) is "
    "tagged `ai/x:tag`, without `docker.io/`: references are compared canonically",
    "the runner binary is `com.docker.llama-server` (later `llama-server`): the engine's concern, not localmodel's",
)

KEEP_ALIVE = "keepAlive"
IMAGE_GENERATION = "mode: image-generation"
VERSION_ROUTE = "GET /version"
FLAG_ALLOWLIST = "runtime-flag allowlist"
PRELOAD_ONLY = "preload without inference"
LOADING_STATE = "runner loading state"
PACKAGED_CONTEXT = "packaged context for unconfigured runners"

_BY_NAME = {feature.name: feature for feature in FEATURES}
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str | None) -> Version | None:
    """`v1.2.9`, `1.2.9`, `v1.2.6-18-g642c7211`, `v1.2.9-emulator` -> (1, 2, 9); `dev` or junk -> None."""
    if not text:
        return None
    match = _VERSION_RE.match(text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def feature(name: str) -> Feature:
    return _BY_NAME[name]


# The columns of docs/compatibility.md: the oldest supported release, each release that added a
# feature, and the newest tested one.
TABLE_RELEASES: tuple[str, ...] = tuple(
    sorted(
        {OLDEST_SUPPORTED, TESTED_RELEASES[-1], *(f.since for f in FEATURES)},
        key=lambda v: parse_version(v) or (0, 0, 0),
    )
)


@dataclass(frozen=True)
class Capabilities:
    """One engine's release and what it has.

    `version` is what `GET /version` said (None when the engine has no such route); `older_than` is the
    release the engine is known to predate when its exact version is unknown; `features` are the names
    of `FEATURES` it has; `detected_by` says how this was learned."""

    version: str | None
    features: frozenset[str]
    detected_by: str
    older_than: str | None = None

    def has(self, name: str) -> bool:
        return name in self.features

    @property
    def release(self) -> str:
        """The engine's release for messages: `v1.2.9`, or `older than v1.0.15 (no GET /version)`."""
        if self.version:
            return self.version
        if self.older_than:
            return f"older than {self.older_than} (it has no GET /version)"
        return "of unknown version"

    def unsupported(self, name: str) -> str:
        """The message for a LocalModel field this engine cannot keep: what, which release, what to do."""
        needed = _BY_NAME[name]
        field = name.removeprefix("mode: ")
        what = f"mode {field}" if name.startswith("mode: ") else field
        remove = "set another mode" if name.startswith("mode: ") else f"remove {field}"
        return (
            f"{what} needs model-runner >= {needed.since}; this engine is {self.release} "
            f"— upgrade Docker Model Runner or {remove}"
        )

    def keeps(self) -> list[str]:
        return sorted(f.name for f in FEATURES if f.kind == FIELD and f.name in self.features)

    def lacks(self) -> list[str]:
        return sorted(f.name for f in FEATURES if f.name not in self.features)

    def routes(self) -> list[str]:
        return sorted(f.name for f in FEATURES if f.kind == ROUTE and f.name in self.features)

    def to_dict(self) -> dict[str, Any]:
        """camelCase, as the daemon's GET /status and `localmodel status -o json` show it."""
        out: dict[str, Any] = {
            "version": self.version,
            "detectedBy": self.detected_by,
            "supports": sorted(self.features),
            "lacks": self.lacks(),
        }
        if self.older_than:
            out["olderThan"] = self.older_than
        return out

    def summary(self) -> str:
        """One line for `localmodel status`."""
        lacks = self.lacks()
        missing = f"; lacks {', '.join(lacks)}" if lacks else "; has every feature localmodel uses"
        return f"model-runner {self.release} (from {self.detected_by}){missing}"


def capabilities_for(
    version: str | None, *, probed: Mapping[str, bool] | None = None, detected_by: str = "GET /version"
) -> Capabilities:
    """The capability table applied to a release (pure).

    `version` from `GET /version`; None means the engine has no such route, so it predates it. A version
    that does not parse (`dev`, a local build) is taken as the newest: it has everything. For an engine
    without `/version`, `probed` holds what the probe learned (feature name -> has it); a feature found
    missing also rules out every later one (releases only add features). Features neither probed nor
    ruled out are assumed present."""
    parsed = parse_version(version)
    if version is not None:
        have = {f.name for f in FEATURES if parsed is None or parsed >= _since(f)}
        return Capabilities(version, frozenset(have), detected_by)
    older_than = _BY_NAME[VERSION_ROUTE]
    for name, present in (probed or {}).items():
        if not present and _since(_BY_NAME[name]) < _since(older_than):
            older_than = _BY_NAME[name]
    have = {f.name for f in FEATURES if _since(f) < _since(older_than)}
    return Capabilities(None, frozenset(have), detected_by, older_than.since)


def all_capabilities(detected_by: str = "assumed") -> Capabilities:
    """An engine assumed to have everything (before detection, or when it failed)."""
    return Capabilities(None, frozenset(f.name for f in FEATURES), detected_by)


def _since(feature: Feature) -> Version:
    parsed = parse_version(feature.since)
    assert parsed is not None, feature
    return parsed


def features_of(version: str) -> frozenset[str]:
    """The features of a known release (for the compatibility table)."""
    return capabilities_for(version).features


def compatibility_table(releases: Iterable[str]) -> str:
    """docs/compatibility.md: one row per feature, one column per release (pure)."""
    releases = list(releases)
    lines = [
        "# Compatibility: model-runner releases",
        "",
        "<!-- Generated from controller/engine/capabilities.py by tests/unit/test_capabilities.py"
        " (LOCALMODEL_WRITE_DOCS=1 rewrites it). Do not edit by hand. -->",
        "",
        f"localmodel needs model-runner {OLDEST_SUPPORTED} or newer (the first release with "
        "`GET /engines/_configure`, which it reads back to verify). Every release from there on keeps "
        "`contextSize`, `runtimeFlags`, `rawRuntimeFlags`, `speculative`, `thinkingBudget`, `vllm` and the "
        "modes completion, embedding and reranking, and answers `/`, `/models`, `/models/create`, "
        "`/engines/status`, `/engines/ps`, `/engines/_configure` (GET and POST), `/engines/requests` and "
        "`/engines/unload`. What differs:",
        "",
        "| feature | kind | since | "
        + " | ".join(f"{r} (tested)" if r in TESTED_RELEASES else r for r in releases)
        + " | before it |",
        "|---|---|---|" + "---|" * len(releases) + "---|",
    ]
    for f in FEATURES:
        cells = ["yes" if f.name in features_of(r) else "no" for r in releases]
        lines.append(f"| {f.name} | {f.kind} | {f.since} | " + " | ".join(cells) + f" | {_cell(f.before)} |")
    lines += ["", "Other differences of v1.0.10 that localmodel absorbs:", ""]
    lines += [f"- {item}" for item in ABSORBED]
    lines += [
        "",
        "Releases marked tested run the whole contract suite (`pytest -m peers`, built by `tests/peers/build`): "
        + ", ".join(TESTED_RELEASES)
        + ".",
        "",
        "A LocalModel field the engine cannot keep is not sent; the model is `Stalled` with reason "
        "`EngineUnsupported` and a message naming the field, the engine's release and the first release "
        "that has it, while every other field is applied and verified. `localmodel status` shows what "
        "the engine was detected to have.",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# ---- detection (I/O) ---------------------------------------------------------------------------

# Bodies every release refuses without storing anything (see the module docstring), newest feature
# first. keep_alive: an unparsable value fails to decode where the field exists (400), and is ignored
# where it does not (then the path: 500). image-generation: an unknown mode fails to decode (400),
# a known one gets to the path (500).
PROBE_MODEL = "localmodel.invalid/capability-probe"
PROBES: tuple[tuple[str, dict[str, Any]], ...] = (
    (KEEP_ALIVE, {"model": PROBE_MODEL, "keep_alive": "localmodel-capability-probe", "runtime-flags": ["/"]}),
    (IMAGE_GENERATION, {"model": PROBE_MODEL, "mode": "image-generation", "runtime-flags": ["/"]}),
)


async def detect(client: EngineClient) -> Capabilities:
    """The engine's capabilities: `GET /version`, else one or two refused `_configure`s (module docstring).

    Raises EngineError when the engine cannot be asked (unreachable, an unexpected answer to /version)."""
    from controller.engine.errors import BadRequest, EngineError, EngineRejected, EngineUnreachable

    try:
        version: str | None = await client.version()
    except EngineUnreachable:
        raise
    except EngineError:  # 404 (before v1.0.30), or an answer that is not a version: ask the engine instead
        version = None
    if version is not None:
        return capabilities_for(version)
    probed: dict[str, bool] = {}
    for name, body in PROBES:
        try:
            await client.configure(dict(body))
        except BadRequest:  # the body did not decode: the field is known (keep_alive) or unknown (the mode)
            probed[name] = name == KEEP_ALIVE
        except EngineRejected:  # decoded, then the path was refused
            probed[name] = name != KEEP_ALIVE
        # Any other answer (a 202 would mean the engine stored the probe) tells nothing: not recorded.
        if probed.get(name, True):
            break  # releases only add features: what is older than this one is there too
    return capabilities_for(None, probed=probed, detected_by="no GET /version; _configure probe")
