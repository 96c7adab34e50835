"""Refuse ``NaN``, ``Infinity`` and ``-Infinity`` in JSON request bodies (422 in the API's
error shape), for every route at once.

Python's ``json`` (which Starlette's ``Request.json()`` and so FastAPI use) accepts those three
literals although RFC 8259 JSON has no such numbers, and a ``dict[str, Any]`` field (learn
``options``) or a float field without bounds would then carry NaN or infinity into the service.
FastAPI has no setting for the JSON parser, and a custom route class would have to be set on
every router, so this is a pure ASGI middleware (hand-written: a few lines, no library does it):
for a request whose content type is JSON (``application/json`` or ``*+json``) it reads the body
(up to :data:`MAX_CHECKED_BYTES`), looks for one of the literals with ``json.loads(...,
parse_constant=...)`` and answers 422 if there is one; otherwise it hands the body on unchanged.
Larger bodies are passed through unchecked (the API's JSON bodies are small; uploads are not
JSON), so a client cannot make the server buffer an unbounded body here.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body

MAX_CHECKED_BYTES = 1 << 20
_LITERALS = (b"NaN", b"Infinity")


class _NonFinite(Exception):
    pass


def _raise(name: str) -> Any:
    raise _NonFinite(name)


def non_finite_literal(body: bytes) -> str | None:
    """The first ``NaN`` / ``Infinity`` / ``-Infinity`` literal that ``json.loads`` would accept
    in ``body``, or None (also None for a body that is not JSON at all: the route reports that).

    >>> non_finite_literal(b'{"a": [1, -Infinity]}'), non_finite_literal(b'{"a": "NaN"}')
    ('-Infinity', None)
    """
    if not any(lit in body for lit in _LITERALS):
        return None
    try:
        json.loads(body, parse_constant=_raise)
    except _NonFinite as exc:
        return str(exc.args[0])
    except ValueError:  # not JSON (or not UTF-8): not ours to judge
        return None
    return None


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers") or []:
        if key.lower() == b"content-type":
            mime = value.split(b";", 1)[0].strip().lower()
            return mime == b"application/json" or (
                mime.startswith(b"application/") and mime.endswith(b"+json")
            )
    return False


class RejectNonFiniteJSON:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        size = 0
        complete = False
        while size <= MAX_CHECKED_BYTES:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                complete = True
                break
        if complete:
            body = b"".join(m.get("body", b"") for m in buffered)
            literal = non_finite_literal(body)
            if literal is not None:
                text = f"body: {literal} is not valid JSON (JSON numbers are finite)"
                details = {"errors": [{"field": "body", "message": text, "type": "json_invalid"}]}
                response = JSONResponse(
                    error_body("validation_error", text, details), status_code=422
                )
                await response(scope, receive, send)
                return

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        await self.app(scope, replay, send)
