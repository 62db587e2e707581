"""The engine behind the contract tests: one fixture, `engine`, parametrised over engine kinds.

Every test talks to the engine through `engine.client` (an EngineClient over real HTTP on loopback)
and names models through the `Engine` fields, never by hard-coded references, so that the same test
runs against every kind:

- `emulator`: controller.emulator on a free loopback port, with its control API (`engine.control`).
- `dmr`: the real Docker Model Runner (tests/support/peers.py `dmr_server_factory`: model-runner built
  from github.com/docker/model-runner, a fake llama-server, a local registry mirror), a fresh process
  per test. No control API and no vLLM. Its parametrisation carries the `peers` marker, so
  `pytest -m 'not peers'` runs the emulator half alone.
- `emulator-1.0`: the emulator emulating v1.0.10 (`localmodel emulator --engine-version 1.0`), checked
  by the same tests as the real v1.0.10.
- `dmr-1.0`: the same with the older release model-runner v1.0.10 (`release="1.0"`), marked `peers` and
  `dmr_1_0`. Its differences from v1.2.9 are either handled by localmodel (capability detection,
  controller/engine/capabilities.py) or an explicit expectation of the test: `engine.has(feature)` names
  the feature (a `capabilities.FEATURES` name) a test's expectation depends on.

Busy and loading runners work on both kinds through `engine.holds` (`RunnerHolds`): the emulator's
control API, or on the real engine a request held in flight / a load held unready by the fake
llama-server. Tests that need the rest of the control API (failing pulls, latency, forced 409s,
request counters) carry `@pytest.mark.emulator_only("why")` and are skipped with that reason on
kinds without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from controller.emulator import running_emulator
from controller.emulator.state import EMULATED_RELEASES
from controller.engine import capabilities
from controller.engine.client import EngineClient
from controller.engine.types import RunnerInfo
from controller.refs import same_model


class EmulatorControl:
    """The emulator's control API under /_emulator/ (see controller.emulator for the routes)."""

    def __init__(self, url: str) -> None:
        self._http = httpx.AsyncClient(base_url=f"{url}/_emulator/", timeout=10.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self._http.request(method, route, json=body)
        assert response.status_code == 200, f"control {route}: {response.status_code} {response.text}"
        return response.json()

    async def restart(self) -> None:
        await self._call("POST", "restart")

    async def busy(self, model: str, busy: bool = True, *, backend: str | None = None) -> None:
        await self._call("POST", "busy", _without_none({"model": model, "busy": busy, "backend": backend}))

    async def loading(self, model: str, loading: bool = True, *, backend: str | None = None) -> None:
        await self._call("POST", "loading", _without_none({"model": model, "loading": loading, "backend": backend}))

    async def fail_next_pull(self, message: str, *, after_bytes: int | None = None) -> None:
        await self._call("POST", "fail-next-pull", _without_none({"message": message, "after_bytes": after_bytes}))

    async def latency(self, seconds: float) -> None:
        await self._call("POST", "latency", {"seconds": seconds})

    async def conflicts(self, count: int) -> None:
        await self._call("POST", "conflicts", {"count": count})

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "state")


class RunnerHolds(Protocol):
    """Hold a model's runner busy (a request in flight) or loading (not ready yet), then let it go."""

    async def busy(self, model: str, busy: bool = True) -> None: ...

    async def loading(self, model: str, loading: bool = True) -> None: ...


@dataclass(frozen=True)
class HoldFiles:
    """The fake llama-server's hold files (tests/peers/fake-llama-server): while `busy` exists its
    completions do not answer; while `loading` exists its /health answers 503."""

    busy: Path
    loading: Path

    @classmethod
    def under(cls, workdir: Path) -> HoldFiles:
        return cls(workdir / "hold-busy", workdir / "hold-loading")

    @property
    def env(self) -> dict[str, str]:
        return {"FAKE_LLAMA_BUSY_WHILE": str(self.busy), "FAKE_LLAMA_LOADING_WHILE": str(self.loading)}


class FakeLlamaHolds:
    """RunnerHolds on the real engine: a chat request held in flight keeps the runner in use, a preload
    held unready keeps it loading (the server must run with `files.env`)."""

    def __init__(self, url: str, client: EngineClient, files: HoldFiles) -> None:
        self.busy_file = files.busy
        self.loading_file = files.loading
        self._client = client
        self._http = httpx.AsyncClient(base_url=url, timeout=120.0)
        self._held: dict[tuple[str, str], asyncio.Future[httpx.Response]] = {}

    async def busy(self, model: str, busy: bool = True) -> None:
        if busy:
            chat = {"model": model, "messages": [{"role": "user", "content": "hold"}]}
            await self._hold("busy", model, self.busy_file, {}, chat)
            await self._until(model, lambda runner: runner.in_use)
        else:
            await self._release("busy", model, self.busy_file)

    async def loading(self, model: str, loading: bool = True) -> None:
        if loading:
            await self._hold("loading", model, self.loading_file, {"X-Preload-Only": "true"}, {"model": model})
            await self._until(model, lambda runner: runner.loading)
        else:
            await self._release("loading", model, self.loading_file)

    async def aclose(self) -> None:
        self.busy_file.unlink(missing_ok=True)
        self.loading_file.unlink(missing_ok=True)
        for task in self._held.values():
            task.cancel()
        await asyncio.gather(*self._held.values(), return_exceptions=True)
        await self._http.aclose()

    async def _hold(self, what: str, model: str, file: Path, headers: dict[str, str], body: dict[str, Any]) -> None:
        file.touch()  # noqa: ASYNC240 a marker file in a local temporary directory: microseconds
        request = self._http.post("/engines/v1/chat/completions", json=body, headers=headers)
        self._held[(what, model)] = asyncio.ensure_future(request)

    async def _release(self, what: str, model: str, file: Path) -> None:
        file.unlink(missing_ok=True)  # noqa: ASYNC240 a marker file in a local temporary directory
        response = await self._held.pop((what, model))
        assert response.status_code == 200, (
            f"the held {what} request for {model}: {response.status_code} {response.text}"
        )

    async def _until(self, model: str, held: Callable[[RunnerInfo], bool], timeout: float = 30.0) -> None:
        await runners_when(
            self._client, model, lambda runners: any(map(held, runners)), timeout, f"the runner of {model} was not held"
        )


async def runners_when(
    client: EngineClient, model: str, done: Callable[[list[RunnerInfo]], bool], timeout: float, failure: str
) -> list[RunnerInfo]:
    """The runners of `model` (GET /engines/ps, every 20 ms) once `done` says so; `failure` after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        runners = [r for r in await client.ps() if same_model(r.model, model)]
        if done(runners):
            return runners
        assert loop.time() < deadline, f"{failure} in {timeout}s: {runners}"
        await asyncio.sleep(0.02)


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class Engine:
    """A running engine and the models it offers. Pulled at start: `model`, `draft_model`, `vllm_model`."""

    kind: str
    url: str
    client: EngineClient
    control: EmulatorControl | None
    holds: RunnerHolds  # busy and loading runners, on every kind
    restart: Callable[[], Awaitable[None]]  # restart the engine process: stored configs are lost
    model: str  # GGUF
    draft_model: str  # a smaller GGUF model, for speculative decoding
    fresh_model: str  # pullable, not pulled at start
    second_tag: str | None  # another tag of `model`'s artifact, not pulled at start
    vllm_model: str | None  # safetensors, served by vLLM; None when the engine has no vLLM
    release: str = "v1.2.9"  # the model-runner release the engine is (or emulates)

    def has(self, feature: str) -> bool:
        """Whether this engine's release has `feature` (a name of controller.engine.capabilities.FEATURES)."""
        return feature in capabilities.features_of(self.release)

    def needs(self, feature: str) -> None:
        """Skip, saying what the release does instead, when a test exercises a feature the release lacks."""
        if not self.has(feature):
            found = capabilities.feature(feature)
            pytest.skip(f"model-runner {self.release} lacks {feature} (since {found.since}): {found.before}")

    @property
    def ctl(self) -> EmulatorControl:
        """The control API, for tests marked emulator_only."""
        assert self.control is not None, "this test needs @pytest.mark.emulator_only"
        return self.control

    async def wait_loaded(self, model: str, timeout: float = 30.0) -> None:
        """Wait until `model` has a loaded (not loading) runner: a configure starts a background load
        that the real engine finishes some 0.5 s later (its readiness poll runs every 500 ms)."""
        await runners_when(
            self.client,
            model,
            lambda runners: any(not r.loading for r in runners),
            timeout,
            f"{model} did not finish loading on the {self.kind} engine",
        )

    async def settled_runner(self, model: str, timeout: float = 10.0) -> RunnerInfo:
        """The runner of `model` once it is loaded and nothing uses it: the engine's own background load
        after a configure waits for the same runner and holds it for a moment once it is ready."""
        (runner,) = await runners_when(
            self.client,
            model,
            lambda runners: len(runners) == 1 and not runners[0].loading and not runners[0].in_use,
            timeout,
            f"{model}: no single idle runner on the {self.kind} engine",
        )
        return runner

    def needs_vllm(self) -> str:
        if self.vllm_model is None:
            pytest.skip(f"the {self.kind} engine has no vLLM model")
        return self.vllm_model


@asynccontextmanager
async def _start_emulator(request: pytest.FixtureRequest, version: str = "1.2") -> AsyncIterator[Engine]:
    model, draft, vllm = "ai/smollm2:latest", "ai/smollm2:135M-Q4_0", "ai/smollm2-vllm"
    release = EMULATED_RELEASES[version]
    kind = "emulator" if version == "1.2" else f"emulator-{version}"
    async with (
        running_emulator(load_seconds=0, preload_models=[model, draft, vllm], release=release) as emulator,
        EngineClient(emulator.url, name=kind) as client,
    ):
        control = EmulatorControl(emulator.url)
        try:
            yield Engine(
                kind=kind,
                url=emulator.url,
                client=client,
                control=control,
                holds=control,
                restart=control.restart,
                model=model,
                draft_model=draft,
                fresh_model="ai/embeddinggemma",
                second_tag="ai/smollm2:360M-Q4_K_M",
                vllm_model=vllm,
                release=release,
            )
        finally:
            await control.aclose()


@asynccontextmanager
async def _start_dmr(request: pytest.FixtureRequest, release: str = "1.2") -> AsyncIterator[Engine]:
    files = HoldFiles.under(request.getfixturevalue("tmp_path"))
    # models pulled; stopped by the fixture
    server = request.getfixturevalue("dmr_server_factory")(env=files.env, release=release)
    kind = "dmr" if release == "1.2" else f"dmr-{release}"
    async with EngineClient(server.url, name=kind) as client:
        holds = FakeLlamaHolds(server.url, client, files)

        async def restart() -> None:
            await asyncio.to_thread(server.restart)

        try:
            yield Engine(
                kind=kind,
                url=server.url,
                client=client,
                control=None,
                holds=holds,
                restart=restart,
                model=server.model,
                draft_model=server.draft_model,
                fresh_model=server.fresh_model,
                second_tag=server.second_tag,
                vllm_model=None,  # built with -tags=novllm, and there is no vLLM to run
                release=server.version,
            )
        finally:
            await holds.aclose()


ENGINE_KINDS: dict[str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Engine]]] = {
    "emulator": _start_emulator,
    "emulator-1.0": lambda request: _start_emulator(request, "1.0"),
    "dmr": _start_dmr,
    "dmr-1.0": lambda request: _start_dmr(request, "1.0"),
}
_KIND_MARKS = {"dmr": [pytest.mark.peers], "dmr-1.0": [pytest.mark.peers, pytest.mark.dmr_1_0]}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator_only(reason): needs the emulator's control API; skipped on a real engine"
    )


@pytest.fixture(params=[pytest.param(kind, marks=_KIND_MARKS.get(kind, [])) for kind in sorted(ENGINE_KINDS)])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    marker = request.node.get_closest_marker("emulator_only")
    if marker is not None and not request.param.startswith("emulator"):
        pytest.skip(f"needs the emulator control API: {marker.args[0] if marker.args else 'no reason given'}")
    async with ENGINE_KINDS[request.param](request) as started:
        yield started
