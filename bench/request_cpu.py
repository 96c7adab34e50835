"""CPU per request of the hot read endpoints, in-process: ``python -m bench request_cpu``.

What ``python -m bench load`` reports as one figure (server CPU per request), per endpoint and
without a load tool competing for the cores: the app (``create_app``, production settings,
rate limiting on) runs in this process against a fresh PostgreSQL database seeded as
``bench.gallery`` does (``BENCH_PG_URL``) and Redis (``BENCH_REDIS_URL``, sessions and rate
limits under a key prefix of its own, removed at the end); requests go through
``httpx.ASGITransport`` one at a time (``BENCH_REQUESTS``, default 400, after 30 to warm up).

Per endpoint: the CPU time of this process (the app, its middlewares, SQLAlchemy, Redis client
and the in-process HTTP client: the ``healthz`` row is that floor) and of the PostgreSQL backends
of the bench database (``/proc``), per request. Each endpoint is measured ``BENCH_ROUNDS``
times (default 3) and the cheapest round is printed: on a shared machine a round only gets
slower, never cheaper, than what the code costs. Presigned preview URLs are signed by boto3
(S3 settings, no S3 server needed: signing is local). Benchmarks measure, they never assert.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.gallery import (
    PASSWORD,
    PG_URL,
    REDIS_URL,
    SEARCH_WORD,
    _drop_redis_keys,
    _redis_ok,
    fresh_database,
    migrate,
    production_env,
    seed,
)

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP = 30


def _pg_cpu(db_name: str) -> float:
    """CPU seconds used so far by the backends connected to ``db_name`` (Linux /proc)."""
    import psycopg

    tick = os.sysconf("SC_CLK_TCK")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (db_name,),
        ).fetchall()
    total = 0.0
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _measure(db_name: str, env: dict[str, str], seeded: object) -> dict[str, list[float]]:
    import httpx

    from app.config import Settings
    from app.main import create_app

    os.environ.update(env)
    app = create_app(Settings())
    results: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            emails = seeded.emails  # type: ignore[attr-defined]
            r = await client.post(
                "/api/v1/auth/login", json={"email": emails[0], "password": PASSWORD}
            )
            r.raise_for_status()
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            rng = random.Random(1)
            public = seeded.public_ids[:2000]  # type: ignore[attr-defined]
            hot = seeded.hot_ids  # type: ignore[attr-defined]
            cases: dict[str, Callable[[], tuple[str, dict[str, str]]]] = {
                "gallery newest": lambda: ("/api/v1/styles?sort=newest&limit=20", {}),
                "gallery top_rated": lambda: ("/api/v1/styles?sort=top_rated&limit=20", {}),
                "gallery signed in": lambda: ("/api/v1/styles?sort=newest&limit=20", auth),
                "gallery search": lambda: (f"/api/v1/styles?q={SEARCH_WORD}&limit=20", {}),
                "gallery tag": lambda: ("/api/v1/styles?tag=film&limit=20", {}),
                "read style": lambda: (f"/api/v1/styles/{rng.choice(public)}", {}),
                "style comments": lambda: (
                    f"/api/v1/styles/{rng.choice(hot)}/comments?limit=20",
                    {},
                ),
                "poll jobs": lambda: ("/api/v1/jobs?limit=10", auth),
                "healthz (floor)": lambda: ("/healthz", {}),
            }
            for _ in range(ROUNDS):
                for name, make in cases.items():
                    for _ in range(WARMUP):
                        path, headers = make()
                        r = await client.get(path, headers=headers)
                        if r.status_code != 200:
                            raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
                    pg_before, cpu_before = _pg_cpu(db_name), time.process_time()
                    for _ in range(REQUESTS):
                        path, headers = make()
                        await client.get(path, headers=headers)
                    app_ms = (time.process_time() - cpu_before) / REQUESTS * 1000
                    pg_ms = (_pg_cpu(db_name) - pg_before) / REQUESTS * 1000
                    best = results.get(name)
                    if best is None or app_ms + pg_ms < best[0] + best[1]:
                        results[name] = [app_ms, pg_ms]
    return results


def run() -> None:
    started = time.perf_counter()
    if not _redis_ok():
        raise SystemExit(f"Redis at {REDIS_URL} does not answer: this bench needs it")
    load_before = os.getloadavg()[0]
    with fresh_database() as db_name, tempfile.TemporaryDirectory() as tmp:
        env = production_env(
            db_name,
            tmp,
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_DEFAULT="1000000/minute",
            REDIS_URL=REDIS_URL,
            REDIS_KEY_PREFIX=f"bench-{db_name}:",
            STORAGE_BACKEND="s3",
            S3_ENDPOINT="http://127.0.0.1:9",
            S3_ACCESS_KEY="bench",
            S3_SECRET_KEY="bench",
            S3_BUCKET="picfilter-bench",
        )
        for key in ("CELERY_BROKER_URL", "CDN_BASE_URL", "BCRYPT_ROUNDS"):
            os.environ.pop(key, None)
        migrate({**os.environ, **env})
        seeded = seed(db_name)
        try:
            results = asyncio.run(_measure(db_name, env, seeded))
        finally:
            _drop_redis_keys(env["REDIS_KEY_PREFIX"])
    print(f"| {'endpoint':<20} | {'app ms':>7} | {'PG ms':>6} | {'CPU ms/req':>10} |")
    print(f"|{'-' * 22}|{'-' * 9}|{'-' * 8}|{'-' * 12}|")
    for name, (app_ms, pg_ms) in results.items():
        print(f"| {name:<20} | {app_ms:>7.2f} | {pg_ms:>6.2f} | {app_ms + pg_ms:>10.2f} |")
    print(
        f"{REQUESTS} sequential requests per endpoint through httpx.ASGITransport, cheapest of "
        f"{ROUNDS} rounds; app = this process (app + in-process client), PG = the bench "
        f"database's backends; rate limiting on (Redis), production settings, pages of 20; "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; total {time.perf_counter() - started:.0f} s"
    )
