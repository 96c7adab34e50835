"""Outages of Redis, PostgreSQL and S3 against the real API process (issue 14's fault table).

Each test drives a mix of traffic (anonymous gallery reads, a public style, the owner's job
list, job submissions, logins, ``/readyz``) at the private stack's API while it stops one
dependency for a few seconds, then starts it again, and counts what every request answered.
The counts are printed (``-s`` shows them) and asserted: no 500 ever; what degrades answers 503
in the error shape with ``Retry-After``; everything works again after the restart without
restarting the API.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.faults import FaultStack, User, import_style, login, register, upload
from tests.helpers import encode, synthetic_photo

OUTAGE_SECONDS = 8


@pytest.fixture(scope="module")
def client(stack: FaultStack) -> Any:
    with httpx.Client(base_url=stack.api_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def owner(client: httpx.Client) -> User:
    return register(client)


@pytest.fixture(scope="module")
def style(client: httpx.Client, owner: User) -> dict[str, Any]:
    return import_style(client, owner)


class Tally:
    """``(request, status, error code)`` counts, and the 503s' ``Retry-After`` check."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int, str]] = Counter()
        self.missing_retry_after: list[str] = []
        self.bodies: list[str] = []

    def record(self, name: str, r: httpx.Response) -> httpx.Response:
        code = ""
        if r.status_code >= 400:
            try:
                code = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "<not the error shape>"
            self.bodies.append(r.text)
        if r.status_code == 503 and "retry-after" not in r.headers:
            self.missing_retry_after.append(name)
        self.counts[(name, r.status_code, code)] += 1
        return r

    def statuses(self, name: str) -> Counter[tuple[int, str]]:
        return Counter({(s, c): n for (k, s, c), n in self.counts.items() if k == name})

    def total(self, status: int | None = None) -> int:
        return sum(n for (_, s, _), n in self.counts.items() if status is None or s == status)

    def fivehundreds(self) -> int:
        return sum(n for (_, s, _), n in self.counts.items() if s >= 500 and s != 503)

    def __str__(self) -> str:
        return ", ".join(f"{k} {s} {c}: {n}" for (k, s, c), n in sorted(self.counts.items()))


def traffic_round(client: httpx.Client, tally: Tally, owner: User, style: dict[str, Any]) -> None:
    """One of each request of the mix."""
    tally.record("gallery", client.get("/api/v1/styles", params={"limit": 5}))
    tally.record("style", client.get(f"/api/v1/styles/{style['id']}"))
    tally.record("jobs", client.get("/api/v1/jobs", headers=owner.headers))
    export = f"/api/v1/styles/{style['id']}/export"
    tally.record("submit", client.post(export, json={}, headers=owner.headers))
    tally.record(
        "login",
        client.post("/api/v1/auth/login", json={"email": owner.email, "password": owner.password}),
    )
    tally.record("readyz", client.get("/readyz"))


def run_for(seconds: float, step: Callable[[], None]) -> int:
    rounds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        step()
        rounds += 1
    return rounds


def test_redis_outage_reads_work_submissions_503_no_stale_connection(
    stack: FaultStack, client: httpx.Client, owner: User, style: dict[str, Any]
) -> None:
    before = Tally()
    traffic_round(client, before, owner, style)
    assert before.total() == before.total(200) + before.statuses("submit")[(202, "")], before
    assert stack.redis.count_keys("pffault:rl*") > 0  # the limiter counts in Redis

    job_id = client.get("/api/v1/jobs", headers=owner.headers).json()["items"][0]["id"]

    stack.redis.stop()
    during = Tally()
    rounds = run_for(OUTAGE_SECONDS, lambda: traffic_round(client, during, owner, style))
    # a job's event stream falls back to following the job row
    events = []
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=owner.headers) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 2:
                break
    stack.redis.start()
    print(f"\nRedis stopped ({rounds} rounds): {during}; job events: {len(events)} read")

    assert during.fivehundreds() == 0, (during, stack.api_log_tail())
    assert during.missing_retry_after == []
    for read in ("gallery", "style", "jobs"):
        assert during.statuses(read) == Counter({(200, ""): rounds}), during
    assert during.statuses("submit") == Counter({(503, "broker_unavailable"): rounds}), during
    # logging in writes the refresh session to Redis: it cannot succeed, it must say why
    assert set(during.statuses("login")) == {(503, "cache_unavailable")}, during
    assert during.statuses("readyz") == Counter({(200, ""): rounds}), during
    r = client.get("/readyz")
    assert r.json()["status"] == "ready" or r.json()["checks"]["cache"] == "ok"
    log = stack.api.log_text() if stack.api else ""
    assert "rate-limit store unavailable" in log
    # no job row was written for the refused submissions
    jobs = client.get("/api/v1/jobs", params={"limit": 100}, headers=owner.headers).json()
    assert len(jobs["items"]) == before.statuses("submit")[(202, "")]

    # back: everything works at once (the limiter's pause is 5 s: wait it out, then count)
    after = Tally()
    time.sleep(5.5)
    rounds_after = run_for(4, lambda: traffic_round(client, after, owner, style))
    print(f"Redis back ({rounds_after} rounds): {after}")
    assert after.total(200) + after.statuses("submit")[(202, "")] == after.total(), after
    assert stack.redis.count_keys("pffault:rl*") > 0  # the limiter counts again
    r = client.get("/readyz")
    assert r.json()["status"] == "ready", r.text

    # a quick restart while the pools hold connections to the old server: the next requests
    # must not fail on a dead pooled connection (health check + retry on a fresh one)
    stack.redis.stop()
    stack.redis.start()
    stale = Tally()
    traffic_round(client, stale, owner, style)
    traffic_round(client, stale, owner, style)
    print(f"Redis restarted under idle pools: {stale}")
    assert stale.total(200) + stale.statuses("submit")[(202, "")] == stale.total(), stale


def test_postgres_outage_is_503_database_unavailable_and_heals(
    stack: FaultStack, client: httpx.Client, owner: User, style: dict[str, Any]
) -> None:
    traffic_round(client, Tally(), owner, style)  # the pool holds connections
    stack.pg.stop()
    during = Tally()
    rounds = run_for(
        OUTAGE_SECONDS,
        lambda: (
            traffic_round(client, during, owner, style),
            during.record("healthz", client.get("/healthz")),
        ),
    )
    stopped_at = time.monotonic()
    stack.pg.start()
    print(f"\nPostgreSQL stopped ({rounds} rounds): {during}")
    assert during.fivehundreds() == 0, (during, stack.api_log_tail())
    assert during.missing_retry_after == []
    for name in ("gallery", "style", "jobs", "submit", "login"):
        assert during.statuses(name) == Counter({(503, "database_unavailable"): rounds}), during
    assert during.statuses("readyz") == Counter({(503, "service_unavailable"): rounds}), during
    assert during.statuses("healthz") == Counter({(200, ""): rounds})
    for body in during.bodies:
        assert "127.0.0.1" not in body, body
        assert "postgres" not in body.lower(), body

    # recovery without restarting the API: the first request after the start already works
    started = time.monotonic()
    after = Tally()
    traffic_round(client, after, owner, style)
    first_ok = time.monotonic() - started
    print(
        f"PostgreSQL back (start took {started - stopped_at:.1f} s, then {first_ok:.2f} s to a "
        f"full round): {after}"
    )
    assert after.total(200) + after.statuses("submit")[(202, "")] == after.total(), after


def test_s3_outage_is_503_naming_no_endpoint_bucket_or_key(
    stack: FaultStack, client: httpx.Client, owner: User, style: dict[str, Any]
) -> None:
    png = encode(synthetic_photo(64, 48))
    pending = [upload(client, owner, png) for _ in range(3)]
    stack.s3.stop()
    during = Tally()
    try:
        for image_id in pending:
            during.record(
                "confirm", client.post(f"/api/v1/images/{image_id}/confirm", headers=owner.headers)
            )
            during.record(
                "import",
                client.post(
                    "/api/v1/styles/import",
                    files={"file": ("look.cube", b"LUT_3D_SIZE 2\n" + b"0 0 0\n" * 8)},
                    data={"name": "during the outage"},
                    headers=owner.headers,
                ),
            )
            traffic_round(client, during, owner, style)
    finally:
        stack.s3.start()
    print(f"\nS3 stopped: {during}")
    assert during.fivehundreds() == 0, (during, stack.api_log_tail())
    assert during.missing_retry_after == []
    assert during.statuses("confirm") == Counter({(503, "storage_unavailable"): 3}), during
    assert during.statuses("import") == Counter({(503, "storage_unavailable"): 3}), during
    for read in ("gallery", "style", "jobs"):
        assert during.statuses(read) == Counter({(200, ""): 3}), during
    leaks = [stack.s3.url, "127.0.0.1", "picfilter-faults", "originals/", owner.email]
    for body in during.bodies:
        for leak in leaks:
            assert leak not in body, (leak, body)
    # back: the same uploads confirm
    for image_id in pending:
        r = client.post(f"/api/v1/images/{image_id}/confirm", headers=owner.headers)
        assert r.status_code == 200, r.text
    # logins still work afterwards (nothing in the API was left broken)
    assert login(client, owner.email, owner.password)
