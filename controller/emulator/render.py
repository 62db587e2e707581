"""What every HTTP handler of the emulator shares: Go's way of writing answers, and where the state is.

The engine's routes (app.py) and the control API (control.py) both answer through these, so an error
body, a JSON encoding or the lookup of the emulator's state is written once.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from controller.emulator.state import EmulatorState

STATE_KEY = web.AppKey("state", EmulatorState)
# The connections engine requests came on: a restart closes them, as the real engine's process exit does
# (the engine watch takes a new connection for a restart).
CONNECTIONS_KEY = web.AppKey("connections", set)


def state_of(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def go_error(status: int, message: str) -> web.Response:
    """Go's http.Error: plain text, the message plus a newline."""
    response = web.Response(status=status, text=message + "\n", content_type="text/plain", charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def go_json_text(value: Any) -> str:
    """json.Encoder output: compact, `<`, `>`, `&` escaped, newline-terminated."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def go_json(value: Any, status: int = 200) -> web.Response:
    """A JSON answer. `Content-Type: application/json` without a charset, as the engine sets it."""
    return web.Response(status=status, body=go_json_text(value).encode(), content_type="application/json")


def html_escape(text: str) -> str:
    """Go's html.EscapeString."""
    return (
        text.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    )
