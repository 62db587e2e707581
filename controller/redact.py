"""Credentials in URLs never leave the process: one helper for everything that prints or serves a URL.

`--engine http://user:password@host:12434` (or `MODEL_RUNNER_HOST`) is accepted: the engine may sit
behind a proxy that wants basic auth. The credentials are split off when the URL is parsed
(`split_credentials`, used by discovery and the engine client) and sent as an `Authorization`
header; the URL kept and shown everywhere is the one without them. `redact` is the safety net for
text that may still hold such a URL (an exception from a library, a log line): the log formatters,
engine errors and the CLI's messages pass their text through it.

    >>> redact("cannot reach http://bob:hunter2@10.0.0.5:12434/models")
    'cannot reach http://***@10.0.0.5:12434/models'
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

# scheme://userinfo@ : the userinfo runs to the last `@` before the path, query, fragment or the end of
# the URL (a password with a raw `@` is still hidden whole). Whitespace and quotes end a URL in text.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s'\"<>]*)@")


def redact(text: str) -> str:
    """`text` with the user and password of every `scheme://user:password@host` in it replaced by `***`."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(the URL without `user:password@`, (user, password) or None). Percent-escapes in them are decoded,
    as a browser does; a user without a password gets an empty password."""
    if "@" not in url or "://" not in url:
        return url, None
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, (unquote(user), unquote(password))
