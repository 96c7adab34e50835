"""The API's exception handlers: every error leaves as the one error shape of ``API.md``.

* :class:`app.errors.AppError` (domain errors): their own status, code, message and details.
* :class:`app.storage.StorageError`: mapped here (:data:`STORAGE_STATUS`), code and message kept.
* Validation errors: 422 ``validation_error`` listing each field; a NUL character (the ``Text``
  pattern) reads "must not contain NUL characters" (:func:`field_message`).
* Starlette's HTTP errors (unknown route, wrong method...): their status with a code.
* Anything else: 500 without a stack trace; the trace goes to the log with the request id, which
  the body and ``X-Request-ID`` repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.conformance import allowed_methods
from app.errors import AppError, error_body
from app.request_context import get_request_id, set_request_id
from app.schemas.common import NO_NUL
from app.storage import (
    InvalidStorageKey,
    ObjectExists,
    SignatureError,
    StorageError,
    StorageObjectNotFound,
)

log = logging.getLogger("picfilter.errors")

#: HTTP status of each storage error (the most specific class in the MRO wins)
STORAGE_STATUS: dict[type[StorageError], int] = {
    StorageObjectNotFound: 404,
    InvalidStorageKey: 400,
    SignatureError: 403,  # UrlExpired too
    ObjectExists: 412,  # as S3's PreconditionFailed
    StorageError: 503,
}

NUL_MESSAGE = "must not contain NUL characters"


def _response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "service_unavailable",
}


def field_message(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error, with the ``Text`` (no NUL) pattern in words."""
    ctx = err.get("ctx") or {}
    if err.get("type") == "string_pattern_mismatch" and ctx.get("pattern") == NO_NUL:
        return NUL_MESSAGE
    return str(err.get("msg", ""))


def storage_status(exc: StorageError) -> int:
    for cls in type(exc).__mro__:
        if cls in STORAGE_STATUS:
            return STORAGE_STATUS[cls]
    return 503


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _storage_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageError)
    return _response(storage_status(exc), exc.code, exc.message)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append(
            {"field": ".".join(loc), "message": field_message(err), "type": err.get("type")}
        )
    first = errors[0] if errors else {"field": "", "message": "invalid"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return _response(422, "validation_error", message, {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:  # every route of the path, not only the first one matched
        methods = allowed_methods(request.app.router.routes, request.scope["path"])
        headers["Allow"] = ", ".join(sorted(methods))
    return _response(exc.status_code, code, message, None, headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = str(getattr(request.state, "request_id", get_request_id()))
    set_request_id(request_id)
    log.exception(
        "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
    )
    return _response(
        500,
        "internal_error",
        "Internal server error; the request id identifies it in the logs",
        {"request_id": request_id},
        {"X-Request-ID": request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
