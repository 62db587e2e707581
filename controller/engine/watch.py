"""The engine watch: one light request per engine every `period` (about a second), shared by every
model on the engine, that notices what makes declared settings lapse and says which models to repair.

What it notices, on the engine's stored configs (`GET /engines/_configure`, docs/engine-contract.md):
- a restart: the engine stops answering, or its keep-alive connection is gone, and its configs are gone;
- a declared config overwritten by another client (`docker model configure`, Compose, an
  Ollama-style call with `num_ctx`): the stored config differs from the declared one;
- a declared config unloaded (`docker model unload --backend`, `unload all`): it is missing.

Two looks, one request per period either way:
- the listing, `GET /engines/_configure`: the only answer that shows stored configs. On the real
  model-runner (v1.2.9) it is not cheap: for every stored config the engine reads its model from the
  store (and logs a line), so its cost grows faster than the number of configs (measured with
  bench/watch_signals.py: 23 ms of engine CPU at 10 configs, 0.28 s at 25, 11 s at 100). The
  `?model=` filter costs the same (the engine builds the whole list, then filters).
- the probe, `GET /engines/ps`: a few hundred bytes whatever the number of models (one entry per
  loaded runner, at most 8), on a connection of the watch's own. The engine's HTTP server never
  closes an idle keep-alive connection, so a new connection means the engine process restarted; a
  change in the loaded runners means a load, an eviction (a configure or an unload evicts the
  runner of a loaded model) or a restart. Either is followed at once by a listing.
The watch lists when the probe saw a change, and otherwise at most as often as keeps the engine's
cost of listing under LISTING_BUDGET of the time and LISTING_BYTES_PER_SECOND (every period on a
small engine), probing in between. See docs/engine-watch.md for the figures.

The comparison is pure (`listing_digest`, `find_disturbances`, `runner_signature`) and table-tested;
`EngineWatch` is the I/O loop. An idle engine costs one request per period, a digest of its answer,
and nothing else: the listing is parsed and compared only when its digest changed (the engine lists
entries in Go map order, so the digest is of a canonical form, not of the raw bytes), or when the
set of declared models changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller import wire
from controller.engine.compare import config_differences
from controller.engine.errors import EngineError, ServerError
from controller.engine.types import RunnerInfo, StoredConfig
from controller.refs import canonical_ref

if TYPE_CHECKING:
    from controller.engine.client import EngineClient

log = logging.getLogger("localmodel.watch")

DEFAULT_WATCH_PERIOD = 1.0  # seconds between two looks at an engine
PROBE_FIRST_DELAY = 0.1  # while the engine is down, probe after this, doubling up to the period
LISTING_BUDGET = 0.05  # list at most as often as keeps listing under this share of the time...
LISTING_BYTES_PER_SECOND = 16 * 1024  # ...and its answers under this many bytes a second
EVENT_LISTING_BUDGET = 0.25  # a listing for a change the probe saw may come sooner: up to this share
RESTARTED = "engine restarted"
ALL_GONE = "every stored config gone (engine restarted, or another client unloaded everything)"
UNLOADED = "config removed by another client (unload)"
OVERWRITTEN = "config overwritten by another client"


@dataclass(frozen=True)
class Expected:
    """A declared model whose config was verified on the engine: what the watch expects to find."""

    name: str  # the LocalModel's key in its front-end
    backend: str
    model_id: str  # sha256:..., as the engine reports it
    mode: str
    body: Mapping[str, Any]  # the `_configure` body that was verified

    @property
    def key(self) -> tuple[str, str, str]:
        return self.backend, self.model_id, self.mode


@dataclass(frozen=True)
class Disturbance:
    """A declared model whose config is no longer on the engine as declared, and what happened."""

    name: str
    what: str  # RESTARTED, ALL_GONE, UNLOADED, or OVERWRITTEN plus the differences


# ---- pure comparison ---------------------------------------------------------------------------


def canonical_entries(data: Any) -> list[dict[str, Any]]:
    """The entries of a `GET /engines/_configure` answer in a fixed order (by backend, model ID, mode),
    whatever order the engine iterated its map in. Raises ValueError on an answer of another shape."""
    if data is None:
        return []  # Go encodes a nil slice as null
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"expected a list of objects, got {str(data)[:200]!r}")
    return sorted(data, key=_entry_sort_key)


def _entry_sort_key(item: dict[str, Any]) -> tuple[str, str, str]:
    return (
        str(item.get(wire.ENTRY_BACKEND, "")),
        str(item.get(wire.ENTRY_MODEL_ID, "")),
        str(item.get(wire.ENTRY_MODE, "")),
    )


def listing_digest(body: bytes) -> str:
    """A digest of the listing that does not change with the order of its entries, nor with the order
    of keys inside them. Raises ValueError when the body is not a JSON list of objects."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc}): {body[:200]!r}") from exc
    canonical = json.dumps(canonical_entries(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_disturbances(
    expected: Iterable[Expected], configs: Sequence[StoredConfig], *, came_back: bool = False
) -> list[Disturbance]:
    """The declared models whose stored config is missing or differs from the declared one.

    `came_back`: the engine did not answer at some look since the last good one, so a missing config
    means it restarted. Without that, every declared config missing at once reads as a restart or an
    `unload all` (indistinguishable on the wire); one missing among others present is an unload.
    """
    wanted = list(expected)
    stored = {(c.backend, c.model_id, c.mode): c for c in configs}
    missing = [e for e in wanted if e.key not in stored]
    all_gone = bool(wanted) and len(missing) == len(wanted)
    found: list[Disturbance] = []
    for entry in wanted:
        config = stored.get(entry.key)
        if config is None:
            what = RESTARTED if came_back else ALL_GONE if all_gone else UNLOADED
            found.append(Disturbance(entry.name, what))
            continue
        differences = config_differences(entry.body, config.config, backend=entry.backend)
        if differences:
            found.append(Disturbance(entry.name, f"{OVERWRITTEN}: " + "; ".join(differences)))
    return found


def probe_delay(failures: int, period: float) -> float:
    """How long to wait before probing an engine that failed `failures` looks in a row: doubling from
    PROBE_FIRST_DELAY, never more than the watch period."""
    return min(period, PROBE_FIRST_DELAY * 2 ** max(0, failures - 1))


def runner_signature(runners: Iterable[RunnerInfo]) -> tuple[tuple[str, str, str, bool, str], ...]:
    """What of `GET /engines/ps` the probe compares: which runners exist, whether they are loading, and
    when they were last used (an evicted and reloaded runner has a new time); not whether they are busy
    (`last_used` then reads as the zero time, which the client maps to None)."""
    return tuple(sorted({(r.backend, canonical_ref(r.model), r.mode, r.loading, r.last_used or "") for r in runners}))


def listing_interval(period: float, took: float, size: int = 0) -> float:
    """Seconds until the next listing after one that took `took` seconds and `size` bytes: at least one
    period, and long enough that listing takes at most LISTING_BUDGET of the time and
    LISTING_BYTES_PER_SECOND (a listing of 10 configs, 2 KB, every period; of 1,000, 200 KB, every 12 s)."""
    return max(period, took / LISTING_BUDGET, size / LISTING_BYTES_PER_SECOND)


def parse_listing(body: bytes) -> list[StoredConfig]:
    """StoredConfig values from a listing body (the client's own parser, on bytes already read)."""
    from controller.engine.client import parse_stored_configs  # httpx stays out of the pure import path

    return parse_stored_configs(body)


# ---- the loop ------------------------------------------------------------------------------------


DisturbedSink = Callable[[list[Disturbance], float], None]  # (disturbances, monotonic time noticed)
DownSink = Callable[[EngineError], None]
UpSink = Callable[[float], None]  # monotonic time the engine answered again


@dataclass
class WatchStats:
    looks: int = 0
    listings: int = 0  # looks that were listings (the rest were probes)
    changes: int = 0  # listings whose digest differed from the previous one
    bytes: int = 0  # of every answer, listings and probes
    last_size: int = 0  # bytes of the last listing
    last_listing_seconds: float = 0.0


@dataclass
class EngineWatch:
    """Looks at one engine every `period` and reports disturbances of the expected configs.

    `client` should be the watch's own (`EngineClient.sibling()`): the probe compares connections.
    Front-ends keep `expect()`/`forget()` current (a model is expected once its config was verified,
    and forgotten while it is being worked on or gone) and get called back:
    `on_disturbed(disturbances, noticed_at)`, `on_down(error)` once when the engine stops answering,
    `on_up(answered_at)` once when it answers again. A callback never blocks the loop.
    """

    client: EngineClient
    period: float = DEFAULT_WATCH_PERIOD
    on_disturbed: DisturbedSink = lambda _d, _t: None  # noqa: E731 - a default that does nothing
    on_down: DownSink = lambda _e: None  # noqa: E731
    on_up: UpSink = lambda _t: None  # noqa: E731
    clock: Callable[[], float] = time.monotonic
    timer: Callable[[], float] = time.perf_counter  # measures how long a listing took
    stats: WatchStats = field(default_factory=WatchStats)
    up: bool | None = None  # None until the first look
    failures: int = 0
    _expected: dict[str, Expected] = field(default_factory=dict)
    _version: int = 0  # bumped when the expectations change
    _seen: tuple[str, int] | None = None  # (digest, version) of the last listing that was compared
    _raw: bytes | None = None  # the last body, to skip even the canonical digest when it is byte-equal
    _raw_digest: str = ""
    _was_down: bool = False  # a look failed, or the connection was new, since the last listing
    _must_list: bool = True  # the probe saw a change: list at once
    _next_listing: float = float("-inf")
    _stream: object | None = None  # the connection of the last look
    _runners: tuple[tuple[str, str, str, bool, str], ...] | None = None  # runner_signature of the last probe
    _last_listing: float = float("-inf")
    _last_took: float = 0.0

    # ---- expectations ----------------------------------------------------------------------

    def expect(self, entry: Expected) -> None:
        if self._expected.get(entry.name) != entry:
            self._expected[entry.name] = entry
            self._version += 1

    def forget(self, name: str) -> None:
        if self._expected.pop(name, None) is not None:
            self._version += 1

    def expected(self) -> dict[str, Expected]:
        return dict(self._expected)

    # ---- looking ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = await self.look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def look(self) -> float:
        """One look at the engine (a listing or a probe); returns the seconds until the next one."""
        self.stats.looks += 1
        listing = self._must_list or self.up is not True or self.clock() >= self._next_listing
        try:
            if listing:
                started = self.timer()
                body, stream = await self.client.stored_configs_probe()
                took = self.timer() - started
                digest = self._digest(body)
            else:
                runners, stream, size = await self.client.ps_probe()
        except (EngineError, ValueError) as exc:
            error = exc if isinstance(exc, EngineError) else ServerError(f"malformed stored config listing: {exc}")
            self.failures += 1
            self._was_down = True
            self._stream = None
            if self.up is not False:
                self.up = False
                self.on_down(error)
            return probe_delay(self.failures, self.period)
        now = self.clock()
        if self.up is False:
            self.on_up(now)
        self.up, self.failures = True, 0
        if self._stream is not None and stream is not self._stream:
            self._was_down = True  # a new connection: the engine went away and came back
            self._must_list = True
        self._stream = stream
        if not listing:
            self.stats.bytes += size
            signature = runner_signature(runners)
            if self._runners is not None and signature != self._runners:
                # A load, an eviction (another client's configure or unload of a loaded model) or a restart:
                # list as soon as the engine's cost allows (EVENT_LISTING_BUDGET, a looser budget).
                soonest = self._last_listing + max(self.period, self._last_took / EVENT_LISTING_BUDGET)
                self._next_listing = min(self._next_listing, soonest)
                self._must_list = now >= soonest
            self._runners = signature
            return 0.0 if self._must_list else self.period
        return self._compare(body, digest, took, now)

    def _compare(self, body: bytes, digest: str, took: float, now: float) -> float:
        self.stats.listings += 1
        self.stats.bytes += len(body)
        self.stats.last_size = len(body)
        self.stats.last_listing_seconds = took
        self._must_list = False
        self._last_listing, self._last_took = now, took
        self._next_listing = now + listing_interval(self.period, took, len(body))
        came_back, self._was_down = self._was_down, False
        if self._seen is not None and self._seen[0] != digest:
            self.stats.changes += 1
        if not came_back and self._seen == (digest, self._version):
            return self.period  # idle: nothing changed on either side
        self._seen = (digest, self._version)
        if not self._expected:
            return self.period
        disturbances = find_disturbances(self._expected.values(), parse_listing(body), came_back=came_back)
        if disturbances:
            for disturbance in disturbances:  # reported once: the front-end re-expects it once repaired
                self._expected.pop(disturbance.name, None)
            self._version += 1
            self._seen = (digest, self._version)
            self.on_disturbed(disturbances, now)
        return self.period

    def _digest(self, body: bytes) -> str:
        if body == self._raw:
            return self._raw_digest
        digest = listing_digest(body)
        self._raw, self._raw_digest = body, digest
        return digest
