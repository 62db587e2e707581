"""The engine watch: the pure comparison (tables) and the look loop against a scripted client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from controller.engine import watch as watch_module
from controller.engine.errors import EngineError, EngineUnreachable
from controller.engine.types import RunnerInfo, StoredConfig
from controller.engine.watch import (
    ALL_GONE,
    OVERWRITTEN,
    RESTARTED,
    UNLOADED,
    Disturbance,
    EngineWatch,
    Expected,
    find_disturbances,
    listing_digest,
    listing_interval,
    probe_delay,
    runner_signature,
)

A = Expected("a", "llama.cpp", "sha256:aaa", "completion", {"model": "ai/a", "context-size": 8192})
B = Expected("b", "llama.cpp", "sha256:bbb", "completion", {"model": "ai/b", "keep_alive": "10m"})
E = Expected("e", "llama.cpp", "sha256:aaa", "embedding", {"model": "ai/a", "mode": "embedding"})


def entry(
    model_id: str, config: dict[str, Any], mode: str = "completion", backend: str = "llama.cpp"
) -> dict[str, Any]:
    return {"Backend": backend, "Model": "", "ModelID": model_id, "Mode": mode, "Config": config}


def stored(model_id: str, config: dict[str, Any], mode: str = "completion") -> StoredConfig:
    return StoredConfig("llama.cpp", "", model_id, mode, config)


def body(*entries: dict[str, Any]) -> bytes:
    return (json.dumps(list(entries), separators=(",", ":")) + "\n").encode()


# ---- digest ------------------------------------------------------------------------------------


def test_digest_ignores_the_order_of_entries_and_keys() -> None:
    one = entry("sha256:aaa", {"context-size": 8192, "keep_alive": "10m0s"})
    two = entry("sha256:bbb", {"keep_alive": "10m0s"})
    two_keys_swapped = {"Config": {"keep_alive": "10m0s"}, "Mode": "completion", "ModelID": "sha256:bbb"}
    two_keys_swapped |= {"Backend": "llama.cpp", "Model": ""}
    assert listing_digest(body(one, two)) == listing_digest(body(two, one))
    assert listing_digest(body(one, two)) == listing_digest(body(two_keys_swapped, one))


@pytest.mark.parametrize(
    "changed",
    [
        entry("sha256:aaa", {"context-size": 4096, "keep_alive": "10m0s"}),  # same length, other value
        entry("sha256:aaa", {"context-size": 8192}),  # a field dropped
        entry("sha256:aaa", {"context-size": 8192, "keep_alive": "10m0s"}, mode="embedding"),  # other key
    ],
)
def test_digest_changes_with_any_config_change(changed: dict[str, Any]) -> None:
    original = entry("sha256:aaa", {"context-size": 8192, "keep_alive": "10m0s"})
    assert listing_digest(body(original)) != listing_digest(body(changed))


@pytest.mark.parametrize("raw", [b"[]\n", b"null\n"])
def test_digest_of_an_empty_listing(raw: bytes) -> None:
    assert listing_digest(raw) == listing_digest(b"[]")


@pytest.mark.parametrize("raw", [b"", b"{}", b"[1]", b"not json"])
def test_digest_of_a_malformed_listing_raises(raw: bytes) -> None:
    with pytest.raises(ValueError, match="JSON|expected"):
        listing_digest(raw)


# ---- which declared models are disturbed -------------------------------------------------------

CASES = [
    # (name, expected, stored, came_back, disturbances)
    (
        "all in place",
        [A, B],
        [stored("sha256:aaa", {"context-size": 8192}), stored("sha256:bbb", {"keep_alive": "10m0s"})],
        False,
        [],
    ),
    ("stored form differs only in spelling", [B], [stored("sha256:bbb", {"keep_alive": "10m0s"})], False, []),
    ("nothing declared", [], [], False, []),
    ("restart seen as an outage", [A, B], [], True, [("a", RESTARTED), ("b", RESTARTED)]),
    ("restart quicker than a period", [A, B], [], False, [("a", ALL_GONE), ("b", ALL_GONE)]),
    ("one unloaded", [A, B], [stored("sha256:bbb", {"keep_alive": "10m0s"})], False, [("a", UNLOADED)]),
    (
        "overwritten",
        [A, B],
        [stored("sha256:aaa", {"context-size": 4096}), stored("sha256:bbb", {"keep_alive": "10m0s"})],
        False,
        [("a", f"{OVERWRITTEN}: context-size: want 8192, engine has 4096")],
    ),
    (
        "another mode of the same model is another key",
        [A, E],
        [stored("sha256:aaa", {"context-size": 8192})],
        False,
        [("e", UNLOADED)],
    ),
    (
        "back from an outage with the configs still there (a network blip)",
        [A],
        [stored("sha256:aaa", {"context-size": 8192})],
        True,
        [],
    ),
    (
        "undeclared entries are not ours",
        [A],
        [stored("sha256:aaa", {"context-size": 8192}), stored("sha256:zzz", {})],
        False,
        [],
    ),
]


@pytest.mark.parametrize(
    ("expected", "configs", "came_back", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_find_disturbances(
    expected: list[Expected], configs: list[StoredConfig], came_back: bool, want: list[tuple[str, str]]
) -> None:
    got = find_disturbances(expected, configs, came_back=came_back)
    assert [(d.name, d.what) for d in got] == want


@pytest.mark.parametrize(
    ("failures", "period", "delay"),
    [(1, 1.0, 0.1), (2, 1.0, 0.2), (3, 1.0, 0.4), (4, 1.0, 0.8), (5, 1.0, 1.0), (30, 1.0, 1.0), (9, 5.0, 5.0)],
)
def test_probe_delay_doubles_up_to_the_period(failures: int, period: float, delay: float) -> None:
    assert probe_delay(failures, period) == pytest.approx(delay)


# ---- the look loop -----------------------------------------------------------------------------


class ScriptedEngine:
    """Answers the watch's two looks: `answer` for the listing (bytes, or an EngineError to raise),
    `runners` for the probe; `stream` stands for the connection (a new object: a new connection)."""

    def __init__(self) -> None:
        self.answer: bytes | EngineError = b"[]\n"
        self.runners: list[RunnerInfo] = []
        self.stream = object()
        self.calls: list[str] = []

    async def stored_configs_probe(self) -> tuple[bytes, object]:
        self.calls.append("listing")
        if isinstance(self.answer, EngineError):
            raise self.answer
        return self.answer, self.stream

    async def ps_probe(self) -> tuple[list[RunnerInfo], object, int]:
        self.calls.append("probe")
        if isinstance(self.answer, EngineError):
            raise self.answer
        return list(self.runners), self.stream, 3


class Recorder:
    def __init__(self) -> None:
        self.disturbed: list[list[Disturbance]] = []
        self.down: list[str] = []
        self.up: list[float] = []


def make_watch(
    engine: ScriptedEngine, recorder: Recorder, now: list[float], listing_seconds: float = 0.0
) -> EngineWatch:
    timer = iter(x * listing_seconds for x in range(10**6))  # each listing takes `listing_seconds`
    return EngineWatch(
        engine,  # type: ignore[arg-type]
        period=1.0,
        on_disturbed=lambda d, _t: recorder.disturbed.append(d),
        on_down=lambda e: recorder.down.append(str(e)),
        on_up=recorder.up.append,
        clock=lambda: now[0],
        timer=lambda: next(timer),
    )


GOOD = body(entry("sha256:aaa", {"context-size": 8192}), entry("sha256:bbb", {"keep_alive": "10m0s"}))
GOOD_REORDERED = body(entry("sha256:bbb", {"keep_alive": "10m0s"}), entry("sha256:aaa", {"context-size": 8192}))


def watching_a_and_b(listing_seconds: float = 0.0) -> tuple[ScriptedEngine, Recorder, list[float], EngineWatch]:
    """A watch that expects A and B, on an engine that stores both (GOOD); nothing looked at yet."""
    engine, recorder, now = ScriptedEngine(), Recorder(), [0.0]
    watch = make_watch(engine, recorder, now, listing_seconds)
    watch.expect(A)
    watch.expect(B)
    engine.answer = GOOD
    return engine, recorder, now, watch


def tick(watch: EngineWatch, now: list[float]) -> float:
    """One look, then the clock moves on by the delay it asked for (at least a moment)."""
    delay = asyncio.run(watch.look())
    now[0] += max(delay, 0.001)
    return delay


def test_idle_looks_parse_nothing_and_report_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    engine, recorder, now, watch = watching_a_and_b()
    assert tick(watch, now) == 1.0  # the first look compares
    parses: list[bytes] = []
    monkeypatch.setattr(watch_module, "parse_listing", lambda raw: parses.append(raw) or [])
    for answer in [GOOD_REORDERED, GOOD] * 5:
        engine.answer = answer
        assert tick(watch, now) == 1.0
    assert parses == []  # the same configs in another order are not a change
    assert recorder.disturbed == []
    assert recorder.down == []
    assert recorder.up == []
    assert watch.stats.changes == 0


def test_an_overwrite_is_reported_once_until_expected_again() -> None:
    engine, recorder, now, watch = watching_a_and_b()
    tick(watch, now)
    engine.answer = body(entry("sha256:aaa", {"context-size": 4096}), entry("sha256:bbb", {"keep_alive": "10m0s"}))
    tick(watch, now)
    tick(watch, now)
    assert [[(d.name, d.what.split(":")[0]) for d in batch] for batch in recorder.disturbed] == [[("a", OVERWRITTEN)]]
    assert "a" not in watch.expected()  # being repaired: the front-end expects it again once verified
    engine.answer = GOOD
    watch.expect(A)
    tick(watch, now)
    assert len(recorder.disturbed) == 1


def test_an_outage_is_reported_once_down_once_up_then_every_config_restarted() -> None:
    engine, recorder, now, watch = watching_a_and_b()
    tick(watch, now)
    engine.answer = EngineUnreachable("cannot reach the engine at http://x: refused", url="http://x")
    delays = [tick(watch, now) for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert len(recorder.down) == 1
    assert "refused" in recorder.down[0]
    engine.answer = b"[]\n"
    back_at = now[0]
    tick(watch, now)
    tick(watch, now)
    assert recorder.up == [back_at]
    assert [[(d.name, d.what) for d in batch] for batch in recorder.disturbed] == [[("a", RESTARTED), ("b", RESTARTED)]]


def test_a_malformed_answer_counts_as_a_failed_look() -> None:
    engine, recorder, now = ScriptedEngine(), Recorder(), [0.0]
    watch = make_watch(engine, recorder, now)
    engine.answer = b"<html>proxy error</html>"
    assert tick(watch, now) == pytest.approx(0.1)
    assert len(recorder.down) == 1
    assert "malformed" in recorder.down[0]


def test_a_new_expectation_is_checked_even_when_the_listing_did_not_change() -> None:
    engine, recorder, now = ScriptedEngine(), Recorder(), [0.0]
    watch = make_watch(engine, recorder, now)
    engine.answer = body(entry("sha256:aaa", {"context-size": 8192}))
    tick(watch, now)
    watch.expect(B)  # verified a moment ago, and unloaded before this look
    tick(watch, now)
    assert [[(d.name, d.what) for d in batch] for batch in recorder.disturbed] == [[("b", ALL_GONE)]]


def runner(model: str, *, in_use: bool = False) -> RunnerInfo:
    return RunnerInfo("llama.cpp", model, "completion", in_use, False, None, None)


@pytest.mark.parametrize(
    ("period", "took", "size", "interval"),
    [
        (1.0, 0.0, 2_000, 1.0),  # 10 configs on a quick engine: every period
        (1.0, 0.02, 2_000, 1.0),
        (1.0, 0.3, 5_000, 6.0),  # 25 configs on model-runner v1.2.9: its CPU decides
        (1.0, 11.0, 20_000, 220.0),  # 100 configs on model-runner v1.2.9
        (1.0, 0.01, 203_000, 203_000 / 16_384),  # 1,000 configs on a quick engine: the bytes decide
        (5.0, 0.0, 0, 5.0),
    ],
)
def test_listing_interval_keeps_the_engine_cost_within_budget(
    period: float, took: float, size: int, interval: float
) -> None:
    assert listing_interval(period, took, size) == pytest.approx(interval)


def test_runner_signature_ignores_busy_and_spelling() -> None:
    assert runner_signature([runner("ai/a", in_use=True)]) == runner_signature([runner("docker.io/ai/a:latest")])
    assert runner_signature([runner("ai/a")]) != runner_signature([])
    reloaded = RunnerInfo("llama.cpp", "ai/a", "completion", False, False, None, "2026-01-01T00:00:01.5Z")
    assert runner_signature([reloaded]) != runner_signature([runner("ai/a")])
    loading = RunnerInfo("llama.cpp", "ai/a", "completion", False, True, None, None)
    assert runner_signature([loading]) != runner_signature([runner("ai/a")])


def slow_engine_watch() -> tuple[ScriptedEngine, Recorder, list[float], EngineWatch]:
    """An engine whose listing takes 0.5 s: the watch lists every 10 s and probes in between."""
    engine, recorder, now, watch = watching_a_and_b(listing_seconds=0.5)
    engine.runners = [runner("ai/a")]
    return engine, recorder, now, watch


def looks(watch: EngineWatch, now: list[float], count: int) -> list[float]:
    delays = []
    for _ in range(count):
        delays.append(asyncio.run(watch.look()))
        now[0] += delays[-1]
    return delays


def test_a_slow_listing_is_spaced_out_and_probes_fill_the_periods() -> None:
    engine, recorder, now, watch = slow_engine_watch()
    looks(watch, now, 25)
    assert engine.calls.count("listing") == 3  # at 0, 10 and 20 s
    assert engine.calls.count("probe") == 22
    assert recorder.disturbed == []


def test_a_new_connection_is_a_restart_listed_at_once() -> None:
    engine, recorder, now, watch = slow_engine_watch()
    looks(watch, now, 3)
    engine.stream = object()  # the engine process was replaced: its connection with it
    engine.answer = b"[]\n"
    engine.runners = []
    delays = looks(watch, now, 2)
    assert engine.calls[-2:] == ["probe", "listing"]
    assert delays[0] == 0.0
    assert [[(d.name, d.what) for d in batch] for batch in recorder.disturbed] == [[("a", RESTARTED), ("b", RESTARTED)]]


def test_an_evicted_runner_makes_the_probe_list_at_once() -> None:
    engine, recorder, now, watch = slow_engine_watch()
    looks(watch, now, 3)
    # another client's configure evicted the loaded runner and stored its own config
    engine.runners = []
    engine.answer = body(entry("sha256:aaa", {"context-size": 4096}), entry("sha256:bbb", {"keep_alive": "10m0s"}))
    looks(watch, now, 2)
    assert engine.calls[-2:] == ["probe", "listing"]
    assert [[d.name for d in batch] for batch in recorder.disturbed] == [["a"]]
    assert recorder.disturbed[0][0].what.startswith(OVERWRITTEN)


def test_a_runner_change_lists_no_sooner_than_the_event_budget() -> None:
    engine, recorder, now = ScriptedEngine(), Recorder(), [0.0]
    watch = make_watch(engine, recorder, now, listing_seconds=1.0)  # a listing takes 1 s: event gap 4 s
    engine.runners = [runner("ai/a")]
    looks(watch, now, 2)  # t=0 listing, t=1 probe (its runners are the baseline)
    engine.runners = []
    looks(watch, now, 3)  # t=2 and t=3 probes see the change; t=4 lists
    assert engine.calls == ["listing", "probe", "probe", "probe", "listing"]


def test_a_busy_runner_is_no_change() -> None:
    engine, _recorder, now, watch = slow_engine_watch()
    looks(watch, now, 3)
    engine.runners = [runner("ai/a", in_use=True)]
    looks(watch, now, 3)
    assert engine.calls.count("listing") == 1
