"""Domain errors and the one error shape of ``API.md``.

Every error leaves the API as ``{"error": {"code", "message", "details"}}``: domain errors carry
their status and code; validation errors, unknown routes and unexpected faults are mapped by
the handlers registered in :func:`install_error_handlers`. A 500 never carries a stack trace:
the trace goes to the log with the request id, which the body and ``X-Request-ID`` repeat.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.request_context import get_request_id, set_request_id

log = logging.getLogger("picfilter.errors")


class AppError(Exception):
    status_code = 500
    code = "internal_error"
    message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class BadRequest(AppError):
    status_code, code, message = 400, "bad_request", "Malformed request"


class NotAuthenticated(AppError):
    status_code, code, message = 401, "not_authenticated", "Not authenticated"

    def __init__(self, message: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(AppError):
    status_code, code, message = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status_code, code, message = 404, "not_found", "Not found"


class Conflict(AppError):
    status_code, code, message = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status_code, code, message = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(AppError):
    status_code, code, message = 415, "unsupported_media_type", "Unsupported media type"


class InvalidInput(AppError):
    status_code, code, message = 422, "invalid_input", "Invalid input"


class RateLimited(AppError):
    status_code, code, message = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(AppError):
    status_code, code, message = 503, "service_unavailable", "A dependency is unavailable"


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


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


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append(
            {"field": ".".join(loc), "message": err.get("msg", ""), "type": err.get("type")}
        )
    first = errors[0] if errors else {"field": "", "message": "invalid"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return _response(422, "validation_error", message, {"errors": errors})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    return _response(exc.status_code, code, message, None, getattr(exc, "headers", None))


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
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
