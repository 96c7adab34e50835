"""The API's exception handlers: every error leaves as the one error shape of ``API.md``.

* :class:`app.errors.AppError` (domain errors): their own status, code, message and details.
* :class:`app.storage.StorageError`: mapped here (:data:`STORAGE_STATUS`), code and message kept.
* Validation errors: 422 ``validation_error`` listing each field; a NUL character (the ``Text``
  pattern) reads "must not contain NUL characters" (:func:`field_message`).
* Starlette's HTTP errors (unknown route, wrong method...): their status with a code.
* A dependency that cannot be reached (:func:`unavailable_dependency`): 503 with ``Retry-After``
  and a code naming it: ``database_unavailable`` (SQLAlchemy/asyncpg connection errors),
  ``cache_unavailable`` (Redis), ``broker_unavailable`` (the Celery broker); the cause goes to the
  log, never to the client.
* Anything else: 500 without a stack trace; the trace goes to the log with the request id, which
  the body and ``X-Request-ID`` repeat.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.conformance import allowed_methods
from app.errors import (
    AppError,
    BrokerUnavailable,
    CacheUnavailable,
    DatabaseUnavailable,
    ServiceUnavailable,
    error_body,
)
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


# What asyncpg raises, unwrapped by SQLAlchemy, when a *new* connection fails (SQLAlchemy wraps
# only DB-API errors; a refused TCP connection surfaces as a plain ConnectionRefusedError).
_ASYNCPG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up / shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,  # e.g. the connection closed mid-query
)
_DRIVER_PACKAGES = (f"{os.sep}asyncpg{os.sep}", f"{os.sep}sqlalchemy{os.sep}")


def _raised_by_database_driver(exc: BaseException) -> bool:
    """A plain ``OSError`` (refused, reset, timed out, unknown host) raised while SQLAlchemy or
    asyncpg was connecting: the database cannot be reached."""
    tb = exc.__traceback__
    while tb is not None:
        if any(p in tb.tb_frame.f_code.co_filename for p in _DRIVER_PACKAGES):
            return True
        tb = tb.tb_next
    return False


def unavailable_dependency(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 for ``exc`` when it (or an exception it was raised from) says that the database,
    Redis or the broker cannot be reached; None for any other error."""
    import kombu.exceptions
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (
            isinstance(
                current,
                (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
                + _ASYNCPG_UNAVAILABLE,
            )
            or (isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated)
            or (isinstance(current, OSError) and _raised_by_database_driver(current))
        ):
            return DatabaseUnavailable()
        if isinstance(current, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return CacheUnavailable()
        if isinstance(current, kombu.exceptions.OperationalError):
            return BrokerUnavailable()
        current = current.__cause__ or current.__context__
    return None


def _unavailable_response(
    request: Request, error: ServiceUnavailable, exc: Exception
) -> JSONResponse:
    log.warning(
        "%s on %s %s: %s: %s",
        error.code,
        request.method,
        request.url.path,
        type(exc).__name__,
        str(exc).splitlines()[0][:300] if str(exc) else "",
    )
    return _response(error.status_code, error.code, error.message, None, error.headers)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _storage_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageError)
    status = storage_status(exc)
    headers = {"Retry-After": str(ServiceUnavailable.retry_after)} if status == 503 else None
    return _response(status, exc.code, exc.message, None, headers)


async def _dependency_error(request: Request, exc: Exception) -> JSONResponse:
    """A connection error of the database, Redis or the broker: 503; other errors of those
    libraries (a constraint, a bad query) stay unexpected."""
    error = unavailable_dependency(exc)
    if error is None:
        return await _unexpected(request, exc)
    return _unavailable_response(request, error, exc)


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
    error = unavailable_dependency(exc)
    if error is not None:  # e.g. wrapped in an ExceptionGroup or another library's error
        return _unavailable_response(request, error, exc)
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
    import kombu.exceptions
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    for cls in (
        sa_exc.DBAPIError,  # OperationalError, InterfaceError...
        sa_exc.TimeoutError,  # the pool's
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        kombu.exceptions.OperationalError,
        asyncpg.exceptions.PostgresError,  # those of _ASYNCPG_UNAVAILABLE, others stay 500s
        asyncpg.exceptions.InterfaceError,
        OSError,  # ConnectionRefusedError of a new database connection, others stay 500s
    ):
        app.add_exception_handler(cls, _dependency_error)
    app.add_exception_handler(Exception, _unexpected)
