"""An S3 protocol server for the tests: moto on 127.0.0.1 behind a SigV4 presigned-URL check.

moto 5 checks nothing about presigned URLs (not the signature, not the expiry, not the signed
``Content-Type``/``Content-Length``), so :class:`SigV4QueryVerifier`, written from AWS's
specification, recomputes the canonical request from what actually arrives and refuses a
mismatch or an expired URL with S3's 403 errors before moto sees the request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

ACCESS_KEY, SECRET_KEY = "storage-test-key", "storage-test-secret"


# ---- a moto server that verifies SigV4 presigned URLs like S3 does ---------------------------
def _s3_error(start_response: Callable[..., Any], code: str, message: str) -> list[bytes]:
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml")])
    return [body]


def _uri_encode(value: str, safe: str = "~") -> str:
    return quote(value, safe=safe)


class SigV4QueryVerifier:
    """WSGI middleware: verify ``X-Amz-Signature`` query auth (AWS SigV4 spec), then pass on."""

    def __init__(self, app: Any, credentials: dict[str, str]) -> None:
        self.app = app
        self.credentials = credentials

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        raw_path, _, raw_query = raw.partition("?")
        params = parse_qsl(raw_query, keep_blank_values=True)
        query = dict(params)
        if "X-Amz-Signature" not in query:
            return self.app(environ, start_response)  # SDK calls (Authorization header)
        try:
            access_key, date, region, service, _ = query["X-Amz-Credential"].split("/")
            amz_date = query["X-Amz-Date"]
            expires = int(query["X-Amz-Expires"])
            signed = query["X-Amz-SignedHeaders"].split(";")
            secret = self.credentials[access_key]
        except (KeyError, ValueError):
            return _s3_error(start_response, "AuthorizationQueryParametersError", "bad query")
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        if "CONTENT_LENGTH" in environ:
            headers["content-length"] = environ["CONTENT_LENGTH"]
        canonical_query = "&".join(
            f"{_uri_encode(k)}={_uri_encode(v)}"
            for k, v in sorted(params)
            if k != "X-Amz-Signature"
        )
        canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
        canonical_request = "\n".join(
            [
                environ["REQUEST_METHOD"],
                _uri_encode(unquote(raw_path), safe="/~"),
                canonical_query,
                canonical_headers,
                ";".join(signed),
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = f"{date}/{region}/{service}/aws4_request"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + secret).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
            return _s3_error(
                start_response,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if datetime.now(UTC) > signed_at + timedelta(seconds=expires):
            return _s3_error(start_response, "AccessDenied", "Request has expired")
        return self.app(environ, start_response)


class VerifyingMotoServer(ThreadedMotoServer):
    """moto's threaded server on a free port of ``ip_address`` (loopback unless a test gives
    another local address), optionally behind the SigV4 check."""

    def __init__(self, *, verify: bool = True, ip_address: str = "127.0.0.1") -> None:
        super().__init__(ip_address=ip_address, port=0, verbose=False)
        self.verify = verify

    def _server_entry(self) -> None:
        app: Any = DomainDispatcherApplication(create_backend_app)
        if self.verify:
            app = SigV4QueryVerifier(app, {ACCESS_KEY: SECRET_KEY})
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
