"""A Docker Model Runner emulator: the engine's HTTP API (docs/engine-contract.md) without models, GPUs or Docker.

It keeps what a controller can observe: the model store (pull, inspect, delete), stored configs
keyed by (backend, model ID, mode) and replaced wholesale, runners that load, serve, go busy and are
evicted after their keep-alive, the read-back views (`GET /engines/_configure`, `/engines/requests`,
`/engines/ps`), the exact status codes and plain-text error bodies. Inference answers are canned.

Use it from Python:

    async with running_emulator(load_seconds=0, preload_models=["ai/smollm2"]) as emu:
        ...  # emu.url, emu.state

    with EmulatorThread() as emu:  # its own loop in a thread, for synchronous code
        ...

or as a process: `localmodel emulator --port 12434`.

Layout (imports go down this list, never up): `catalog` (the registry's artifacts), `config` and
`flags` (Go's decoding of a `_configure` body, the release's flag checks), `store` (pulled models
and tags), `configs` (the stored configs), `runners` (the loader, `/engines/ps`,
`/engines/requests`), `state` (the engine: the parts above, its clock and release), `render`
(Go's way of answering), `control` (the routes under /_emulator/), `app` (the engine's routes and
middlewares), `server` (serving it). An engine fact usually lands in one of store/configs/runners
and in the route of app.py that shows it.

`EmulatorState(release="v1.0.10")` (`localmodel emulator --engine-version 1.0`) behaves as that older
release where localmodel can tell (controller/engine/capabilities.py, checked by the contract tests
against the real v1.0.10): no `/version`, `keep_alive` an unknown key (ignored, any value), no flag
allowlist (only paths refused), no `image-generation` mode, no background load after a configure,
`X-Preload-Only` ignored (a real inference), ps without loading runners or `keep_alive`, `{}` as the
start config of an unconfigured runner. Not emulated: its pull progress spells the layer's keys `ID`,
`Size`, `Current`, and its `/engines/status` says `running llama.cpp version: ...`.

Where the emulator deliberately differs from a real engine:
- A pull of a reference the catalog does not have answers 404 `Model not found` (a registry that
  answers 404); Docker Hub makes the real engine answer 500 instead.
- The registry is the catalog (`Catalog`, `--catalog FILE`): pulls never touch the network.
- `GET /engines/status` reports vLLM as `Running: vllm emulated`, so safetensors models can be used.
- Runner slots are a fixed 8 (the engine uses min(NumCPU, 8): 2 on a 2-core machine, where a third
  runner evicts an idle one).
- A pull from a registry that cannot be reached answers 404 `Model not found` here; the engine
  answers 500 `error while pulling model: ...` with the resolver's error.
- A request's runner is always the one released. model-runner v1.2.9's `loader.release` looks the
  slot up by (backend, model, mode) without the draft model, so when a speculative config changes
  and two runners of one model and mode exist, a release can decrement the other runner's count:
  both then stay `in_use` for good (unload cannot evict them, configure answers 409 until the
  engine restarts). It depends on Go's map order, so it is not emulated.

Control API (JSON in, JSON out; not part of DMR). Requests to it are not counted in `counters`.
Like the engine routes, it answers 403 `Origin not allowed` to a request whose `Origin` is not allowed
(a web page cannot restart the emulator). Numbers must be finite and in range (`latency` 0-3600 s,
`advance` 0-1e10 s, `count` a whole number up to 1,000,000); `Infinity`, `NaN` and any other malformed
body answer 400 with `{"error": ...}` naming the field, never 500.

| Route | Body | Effect |
|---|---|---|
| `POST /_emulator/restart` | - | forget configs, runners and recorded requests, as an engine restart does; models stay; `boot_id` changes |
| `POST /_emulator/busy` | `{"model": REF, "busy": true, "backend"?, "mode"?}` | mark the runner in use (started, ready, if absent); `"busy": false` releases the mark |
| `POST /_emulator/loading` | `{"model": REF, "loading": true, "backend"?, "mode"?}` | start a runner that stays loading with the config stored now; `"loading": false` finishes it |
| `POST /_emulator/fail-next-pull` | `{"after_bytes"?: N, "message"?: TEXT}` | the next downloading pull stops after N bytes (default: half) with an error line and no success line |
| `POST /_emulator/latency` | `{"seconds": X}` | delay every engine request by X seconds (0 turns it off) |
| `POST /_emulator/conflicts` | `{"count": N}` | the next N configures that pass validation answer 409 `runner already active` |
| `POST /_emulator/advance` | `{"seconds": N}` | move the emulator's clock forward and evict idle runners whose keep-alive ran out -> `{"evicted", "now"}` |
| `GET /_emulator/state` | - | boot_id, now, models, every stored config (also those the engine would not list), runners, `counters` of requests per route (`"POST /engines/_configure": 3`), pending conflicts, latency |
| `POST /_emulator/reset-counters` | - | zero the request counters |
| `POST /_emulator/catalog` | an `Artifact` (`{"name": "ai/x", "tags": [...], "format"?, "context_size"?, ...}`) plus `"pulled"?: true` | add a pullable model (and store it when `pulled`) |

"Another client overwrites the config" needs no control route: post to `/engines/_configure` as that client would.
"""

from controller.emulator.app import VERSION, create_app
from controller.emulator.catalog import DEFAULT_ARTIFACTS, Artifact, Catalog, load_artifacts
from controller.emulator.server import EmulatorThread, RunningEmulator, running_emulator, serve
from controller.emulator.state import EmulatorState

__all__ = [
    "DEFAULT_ARTIFACTS",
    "VERSION",
    "Artifact",
    "Catalog",
    "EmulatorState",
    "EmulatorThread",
    "RunningEmulator",
    "create_app",
    "load_artifacts",
    "running_emulator",
    "serve",
]
