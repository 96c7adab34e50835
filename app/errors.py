"""Domain errors and the one error shape of ``API.md``, as plain data (no web framework here).

Every error leaves the API as ``{"error": {"code", "message", "details"}}``: a domain error
carries its status and code as class attributes; the exception handlers that turn it (and
validation errors, unknown routes, storage errors and unexpected faults) into a response live in
:mod:`app.api.errors`.
"""

from __future__ import annotations

from typing import Any


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
    """A dependency (database, broker, cache, storage) cannot be reached: 503 with a
    ``Retry-After``, so that clients wait and retry instead of failing."""

    status_code, code, message = 503, "service_unavailable", "Service temporarily unavailable"
    retry_after = 5

    def __init__(self, message: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(self.retry_after)})
        super().__init__(message, **kw)


class BrokerUnavailable(ServiceUnavailable):
    code = "broker_unavailable"
    message = "The job queue is unavailable; nothing was submitted. Retry shortly"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "The database is unavailable; retry shortly"


class CacheUnavailable(ServiceUnavailable):
    code = "cache_unavailable"
    message = "The session store is unavailable; retry shortly"


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}
