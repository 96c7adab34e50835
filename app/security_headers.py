"""Security headers set by the app itself (not only by nginx), and CORS refusals in the error shape.

:class:`SecurityHeadersMiddleware` (pure ASGI, so streaming and SSE responses pass untouched)
adds to every response that does not set them itself:

* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``
  (signed storage URLs carry their signature in the query string: it must not leak in a
  ``Referer``), ``Cross-Origin-Opener-Policy: same-origin``;
* ``Content-Security-Policy``: for HTML, the web client's policy (:func:`web_csp`: scripts and
  styles from this origin only, images and fetches also from the storage origins it is given)
  or, on ``/docs`` and ``/redoc``, the policy FastAPI's Swagger UI / ReDoc pages need; for
  everything else (JSON, images, files) ``default-src 'none'; frame-ancestors 'none'``;
* ``Strict-Transport-Security`` when the request came over TLS: ``scope["scheme"] == "https"``,
  which uvicorn also sets from ``X-Forwarded-Proto`` when the peer is a trusted proxy
  (``FORWARDED_ALLOW_IPS``). Over plain HTTP it is never sent (RFC 6797 section 7.2).

The ``server: uvicorn`` banner is not an ASGI header: ``picfilter serve`` turns it off with
``server_header=False``.

:class:`ErrorShapeCORSMiddleware` is Starlette's ``CORSMiddleware`` whose refused preflight (a
``text/plain`` 400 there) answers in the API's JSON error shape, code ``cors_refused``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import error_body

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# FastAPI's /docs and /redoc pages: their JS and CSS from jsDelivr, an inline bootstrap script,
# the FastAPI logo, ReDoc's blob: web worker, and this origin's OpenAPI document.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HSTS_DEFAULT_MAX_AGE = 31_536_000  # one year
#: Sent on every response that does not set them itself.
STATIC_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, else None."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def web_csp(extra_origins: Iterable[str | None] = ()) -> str:
    """The web client's policy: code from this origin only; photos (``<img>``, ``fetch``, the
    upload ``PUT``) also from ``extra_origins`` (object storage, a CDN)."""
    origins = sorted({o for o in (origin_of(u) for u in extra_origins) if o})
    media = " ".join(["'self'", *origins])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {media} data: blob:; connect-src {media}; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def media_origins(settings: Settings) -> list[str]:
    """Where the web client's photos come from besides this origin: the public base URL (local
    storage's signed URLs), the S3 endpoint browsers see (or AWS's bucket hosts), and a CDN."""
    urls: list[str | None] = [settings.public_base_url]
    if settings.use_s3:
        endpoint = settings.s3_public_endpoint or settings.s3_endpoint
        if endpoint:
            urls.append(endpoint)
        else:
            bucket, region = settings.s3_bucket, settings.s3_region
            urls += [
                f"https://{bucket}.s3.amazonaws.com",
                f"https://{bucket}.s3.{region}.amazonaws.com",
            ]
    urls.append(settings.cdn_base_url)
    return [o for o in (origin_of(u) for u in urls) if o]


class SecurityHeadersMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        web_policy: str,
        docs_paths: Iterable[str] = ("/docs", "/redoc"),
        hsts_max_age: int = HSTS_DEFAULT_MAX_AGE,
    ) -> None:
        self.app = app
        self.docs_paths = tuple(p for p in docs_paths if p)
        self.hsts = (
            f"max-age={hsts_max_age}; includeSubDomains".encode("latin-1")
            if hsts_max_age > 0
            else None
        )
        self.csp = {p: v.encode("latin-1") for p, v in (("api", API_CSP), ("docs", DOCS_CSP))}
        self.csp["web"] = web_policy.encode("latin-1")

    def _csp(self, path: str, content_type: str) -> bytes:
        if not content_type.startswith("text/html"):
            return self.csp["api"]
        if any(path == p or path.startswith(p + "/") for p in self.docs_paths):
            return self.csp["docs"]
        return self.csp["web"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"
        path = str(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                content_type = Headers(raw=headers).get("content-type", "").lower()
                wanted = [
                    *STATIC_HEADERS,
                    (b"content-security-policy", self._csp(path, content_type)),
                ]
                if tls and self.hsts:
                    wanted.append((b"strict-transport-security", self.hsts))
                headers += [(k, v) for k, v in wanted if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ErrorShapeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight in the API's error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace") or "Disallowed CORS request"
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        return JSONResponse(
            error_body(
                "cors_refused",
                f"{reason}: this origin, method or header is not allowed by CORS_ORIGINS",
            ),
            status_code=response.status_code,
            headers=headers,
        )
