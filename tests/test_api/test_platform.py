"""Health, the one error shape, request ids, rate limits and the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter

from app.config import PLACEHOLDER_SECRET, Settings


async def test_healthz(client) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_checks_every_dependency(client) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {
        "database": "ok",
        "cache": "ok",
        "broker": "ok",
        "storage": "ok",
    }


async def test_readyz_names_the_dependency_that_is_down(migrated) -> None:
    from app.main import create_app

    broken = migrated.model_copy(
        update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}
    )
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.get("/readyz")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "service_unavailable"
    assert "database" in err["message"]
    assert err["details"]["checks"]["database"] == "unavailable"


async def test_redis_down_is_degraded_and_the_rate_limiter_fails_open(migrated, caplog) -> None:
    """Redis unreachable (a closed port): reads still answer (the limiter lets them through and
    says so in the log) and /readyz is 200 "degraded", naming the cache. The full outage, with a
    real Redis stopped and started again, is tests/test_faults/test_outages.py."""
    from app.main import create_app

    broken = migrated.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "rate_limit_enabled": True}
    )
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            reads = [(await c.get("/api/v1/styles")).status_code for _ in range(3)]
            r = await c.get("/readyz")
    assert reads == [200, 200, 200]
    assert "rate-limit store unavailable" in caplog.text
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "degraded"
    assert r.json()["checks"]["cache"] == "unavailable"
    assert r.json()["checks"]["database"] == "ok"


async def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    r = await client.get("/api/v1/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = await client.delete("/api/v1/auth/me")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


async def test_unexpected_error_is_a_clean_500_with_request_id(migrated, caplog) -> None:
    from app.main import create_app

    app = create_app(migrated)
    boom = APIRouter()

    @boom.get("/boom")
    async def _boom() -> None:
        raise RuntimeError("secret internal detail")

    app.include_router(boom)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.get("/boom", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["details"] == {"request_id": "req-123"}
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text
    assert r.headers["x-request-id"] == "req-123"
    assert any("req-123" in rec.getMessage() and rec.exc_info for rec in caplog.records)


async def test_every_response_has_a_request_id(client) -> None:
    r = await client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 32


async def test_openapi_lists_auth_and_job_endpoints(client) -> None:
    r = await client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/me",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/events",
    ):
        assert path in paths, path
    r = await client.get("/docs")
    assert r.status_code == 200
    assert "swagger" in r.text.lower()


async def test_rate_limit_answers_429_with_retry_after(migrated) -> None:
    from app.main import create_app

    limited: Settings = migrated.model_copy(
        update={
            "rate_limit_enabled": True,
            "rate_limit_auth": "3/minute",
            "redis_key_prefix": "rl-test-" + migrated.redis_key_prefix,
        }
    )
    app = create_app(limited)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            codes = []
            for _ in range(4):
                r = await c.post(
                    "/api/v1/auth/login", json={"email": "x@example.com", "password": "p"}
                )
                codes.append(r.status_code)
    assert codes == [401, 401, 401, 429]
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_production_refuses_the_placeholder_secret() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET_KEY"):
        Settings(environment="production", jwt_secret_key=PLACEHOLDER_SECRET)
