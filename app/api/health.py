"""``/healthz`` (process alive) and ``/readyz`` (database, broker/cache and storage answer).

``/readyz``: 200 ``ready`` when every dependency answers; 200 ``degraded`` (with the checks) when
only Redis (cache, broker) or the storage is down, since reads still work then (rate limits fail
open, job submissions answer 503 ``broker_unavailable``) and a load balancer must not take every
API process out at once; 503 when the database is down, without which nothing works.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.errors import error_body

router = APIRouter(tags=["health"])
log = logging.getLogger("picfilter.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _broker_ok(broker_url: str) -> bool:
    from app.workers.dispatch import check_broker

    check_broker()  # the quick check that job submissions make
    return True


@router.get("/readyz")
async def readyz(request: Request) -> Any:
    state = request.app.state
    checks: dict[str, str] = {}

    async def check(name: str, coro: Any) -> None:
        try:
            if await asyncio.wait_for(coro, timeout=3) is False:
                raise RuntimeError(f"{name} answered not ok")
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %r", name, exc)
            checks[name] = "unavailable"

    async def db_check() -> None:
        async with state.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    await check("database", db_check())
    await check("cache", state.store.ping())
    await check("broker", to_thread.run_sync(_broker_ok, state.settings.broker_url))
    await check("storage", to_thread.run_sync(state.storage.ping))
    down = [k for k, v in checks.items() if v != "ok"]
    if "database" in down:
        body = error_body(
            "service_unavailable", f"Not ready: {', '.join(down)} unavailable", {"checks": checks}
        )
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    if down:
        return {"status": "degraded", "checks": checks, "unavailable": down}
    return {"status": "ready", "checks": checks}
