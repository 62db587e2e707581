"""The adapter to Docker Model Runner: an async HTTP client, semantic config comparison, endpoint discovery.

Import what you need from its modules (`controller.engine.client`, `.compare`, `.types`, `.errors`,
`.discovery`, `.watch`, `.capabilities`). This package imports none of them, so that the pure core can
import `compare` and `types` without pulling in httpx or subprocess (tests/unit/test_layers.py).
"""
