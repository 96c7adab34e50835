"""Security headers set by the app, CORS refusals in the error shape, and the OpenAPI document
matching behaviour (405 ``Allow``, ``/openapi.json``, documented statuses and limits).

The banner and HSTS behind a trusted proxy are checked on a real ``picfilter serve`` (uvicorn
writes the ``server`` header and believes ``X-Forwarded-Proto`` itself)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import free_port, running_server

BASELINE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def _assert_baseline(r: httpx.Response) -> None:
    for name, value in BASELINE.items():
        assert r.headers.get(name) == value, (name, dict(r.headers))
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


async def test_api_responses_carry_the_security_headers(client, user) -> None:
    for r in (
        await client.get("/api/v1/auth/me", headers=user.headers),  # 200 JSON
        await client.get("/api/v1/auth/me"),  # 401 from a dependency
        await client.get("/api/v1/nowhere"),  # 404 from the router
        await client.post(
            "/api/v1/auth/login", content=b"{", headers={"content-type": "application/json"}
        ),
    ):
        _assert_baseline(r)
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "strict-transport-security" not in r.headers  # plain HTTP: never


async def test_web_pages_get_the_web_client_policy(client) -> None:
    r = await client.get("/")
    assert r.headers["content-type"].startswith("text/html")
    _assert_baseline(r)
    csp = dict(
        part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["object-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"].startswith("'self'")
    # the docs pages load Swagger UI / ReDoc from their CDN: a policy of their own
    docs = await client.get("/docs")
    _assert_baseline(docs)
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "cdn.jsdelivr.net" not in r.headers["content-security-policy"]


def test_web_policy_lists_the_storage_origins(settings) -> None:
    from app.security_headers import media_origins, web_csp

    s3 = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint": "http://minio:9000",
            "s3_public_endpoint": "https://photos.example.com/bucket",
            "public_base_url": "https://picfilter.example.com",
        }
    )
    policy = web_csp(media_origins(s3))
    assert "img-src 'self' https://photos.example.com https://picfilter.example.com" in policy
    assert "connect-src 'self' https://photos.example.com https://picfilter.example.com" in policy
    assert "minio" not in policy  # browsers are sent to the public endpoint only


async def test_hsts_only_over_tls(app) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as tls:
        r = await tls.get("/healthz")
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_cors_refusal_is_in_the_error_shape(migrated) -> None:
    from app.main import create_app

    cors = create_app(migrated.model_copy(update={"cors_origins": ["https://ok.example"]}))
    transport = httpx.ASGITransport(app=cors)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        preflight = {"Access-Control-Request-Method": "POST"}
        r = await c.options(
            "/api/v1/styles", headers={"Origin": "https://evil.example", **preflight}
        )
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["error"]["code"] == "cors_refused"
        assert "Disallowed CORS origin" in body["error"]["message"]
        _assert_baseline(r)
        r = await c.options("/api/v1/styles", headers={"Origin": "https://ok.example", **preflight})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://ok.example"


# ---- the document and the behaviour agree ---------------------------------------------------
ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("method", "path", "template", "allow"),
    [
        ("PUT", "/api/v1/styles", None, "GET, POST"),
        ("DELETE", "/api/v1/styles", None, "GET, POST"),
        ("GET", "/api/v1/images/upload", None, "POST"),
        ("DELETE", "/api/v1/images/upload", None, "POST"),
        ("GET", "/api/v1/styles/import", None, "POST"),
        ("GET", "/api/v1/jobs/results.zip", None, "POST"),
        ("POST", "/api/v1/jobs", None, "GET"),
        ("POST", f"/api/v1/styles/{ZERO}", "/api/v1/styles/{style_id}", "DELETE, GET, PATCH"),
        ("PUT", f"/api/v1/images/{ZERO}", "/api/v1/images/{image_id}", "DELETE, GET"),
    ],
)
async def test_405_allows_every_method_of_the_path(
    client, user, method, path, template, allow
) -> None:
    r = await client.request(method, path, headers=user.headers)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert r.json()["error"]["code"] == "method_not_allowed"
    # and Allow is exactly what the document lists for that path
    spec = (await client.get("/openapi.json")).json()
    assert {m.upper() for m in spec["paths"][template or path]} == set(allow.split(", "))


async def test_the_document_is_also_at_the_root(client) -> None:
    root = await client.get("/openapi.json")
    versioned = await client.get("/api/v1/openapi.json")
    assert root.status_code == versioned.status_code == 200
    assert root.json() == versioned.json()
    assert "/openapi.json" not in root.json()["paths"]


async def test_documented_statuses_and_limits(client, settings) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert "409" in statuses("/api/v1/auth/register", "post")
    assert "403" in statuses("/api/v1/styles/{style_id}/rating", "put")
    assert "403" in statuses("/api/v1/comments/{comment_id}", "patch")
    assert "403" in statuses("/api/v1/comments/{comment_id}", "delete")
    assert "409" in statuses("/api/v1/jobs/{job_id}/cancel", "post")
    assert "503" in statuses("/api/v1/images/{image_id}/confirm", "post")
    learn = spec["components"]["schemas"]["LearnRequest"]["properties"]
    assert learn["pairs"]["maxItems"] == settings.max_learn_items == 16
    assert learn["reference_image_ids"]["maxItems"] == settings.max_learn_items


async def test_learn_over_the_documented_max_items_is_refused(client, user) -> None:
    import uuid

    r = await client.post("/api/v1/styles", json={"name": "limits"}, headers=user.headers)
    ids = [str(uuid.uuid4()) for _ in range(17)]
    r = await client.post(
        f"/api/v1/styles/{r.json()['id']}/learn",
        json={"reference_image_ids": ids},
        headers=user.headers,
    )
    assert r.status_code == 422, r.text


# ---- a real server: no banner, HSTS behind a trusted proxy only -----------------------------
def _serve(tmp_path: Path, name: str, **env: str) -> Any:
    port = free_port()
    full = {**os.environ, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
    cmd = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--no-migrate"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    return running_server(cmd, full, port, log_path=tmp_path / f"{name}.log", timeout=120)


@pytest.mark.slow
def test_served_without_banner_and_hsts_behind_a_trusted_proxy(migrated, tmp_path) -> None:
    https = {"X-Forwarded-Proto": "https"}
    with _serve(tmp_path, "trusted") as (base, _pid):  # FORWARDED_ALLOW_IPS: loopback
        plain = httpx.get(f"{base}/healthz")
        assert "server" not in plain.headers, dict(plain.headers)
        assert "strict-transport-security" not in plain.headers
        _assert_baseline(plain)
        proxied = httpx.get(f"{base}/healthz", headers=https)
        assert proxied.headers["strict-transport-security"].startswith("max-age=31536000")
    # a peer that is not a trusted proxy cannot claim TLS
    with _serve(tmp_path, "untrusted", FORWARDED_ALLOW_IPS="192.0.2.1") as (base, _pid):
        r = httpx.get(f"{base}/healthz", headers=https)
        assert "strict-transport-security" not in r.headers
        assert "server" not in r.headers
