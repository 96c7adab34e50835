"""Batch apply and the job-submission limit (issue 9, item 6).

``{"image_ids": [same id x 100]}`` used to queue 100 full-resolution jobs and count once against
the job limit. Now a repeated id is applied once, and a batch counts as its number of jobs: one
that does not fit in what is left of the window is a 429 with ``Retry-After`` and queues nothing.

The suite runs with rate limiting off (conftest); the limit tests build a second app on the same
database, storage and Redis with ``RATE_LIMIT_JOBS=5/minute``, a real limiter (memory embedded,
Redis under the run's key prefix on the PostgreSQL stack).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.models import Job, JobType
from tests.conftest import Account
from tests.helpers import import_cube, synthetic_photo, upload_image

TINY_CUBE = b"LUT_3D_SIZE 2\n" + b"0 0 0\n1 0 0\n0 1 0\n1 1 0\n0 0 1\n1 0 1\n0 1 1\n1 1 1\n"
JOB_LIMIT = 5


async def _style(client: httpx.AsyncClient, account: Account) -> str:
    r = await import_cube(client, account, TINY_CUBE)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _images(client: httpx.AsyncClient, account: Account, n: int) -> list[str]:
    return [
        (await upload_image(client, account, synthetic_photo(32, 24, seed=i)))["id"]
        for i in range(n)
    ]


async def _job_count(app: Any, account: Account) -> int:
    """The account's apply jobs (uploads queue thumbnail jobs of their own)."""
    async with app.state.db.sessionmaker() as session:
        n = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == uuid.UUID(account.id), Job.type == JobType.apply_style)
        )
    return int(n or 0)


@pytest.fixture
async def limited(migrated: Any, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose job limit is ``JOB_LIMIT`` a minute. It shares the suite app's
    session store (as API processes share Redis), so the suite's signed-in accounts are signed
    in here too; its rate-limit keys are its own."""
    from app.main import create_app

    settings = migrated.model_copy(
        update={
            "rate_limit_enabled": True,
            "rate_limit_jobs": f"{JOB_LIMIT}/minute",
            "redis_key_prefix": f"{migrated.redis_key_prefix}batch-{uuid.uuid4().hex[:6]}:",
        }
    )
    limited_app = create_app(settings)
    async with limited_app.router.lifespan_context(limited_app):
        own_store = limited_app.state.store
        limited_app.state.store = app.state.store
        transport = httpx.ASGITransport(app=limited_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
        limited_app.state.store = own_store  # closed by its lifespan, not the suite's store


async def test_repeated_ids_make_one_job_each(client, app, user: Account) -> None:
    sid = await _style(client, user)
    a, b = await _images(client, user, 2)
    url = f"/api/v1/styles/{sid}/apply"
    r = await client.post(url, json={"image_ids": [a] * 100}, headers=user.headers)
    assert r.status_code == 202, r.text
    assert [j["image_id"] for j in r.json()["jobs"]] == [a]
    r = await client.post(url, json={"image_ids": [b, a, b, a, b]}, headers=user.headers)
    assert r.status_code == 202, r.text
    assert [j["image_id"] for j in r.json()["jobs"]] == [b, a]
    assert await _job_count(app, user) == 3


async def test_a_batch_counts_its_jobs(client, app, limited, user: Account) -> None:
    sid = await _style(client, user)  # set up through the unlimited app
    images = await _images(client, user, 3)
    url = f"/api/v1/styles/{sid}/apply"

    r = await limited.post(url, json={"image_ids": images}, headers=user.headers)
    assert r.status_code == 202, r.text
    assert len(r.json()["jobs"]) == 3  # 2 of 5 left

    r = await limited.post(url, json={"image_ids": images}, headers=user.headers)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "rate_limited", error
    assert (error["details"]["cost"], error["details"]["remaining"]) == (3, 2), error
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert await _job_count(app, user) == 3  # the refused batch queued nothing

    # repeated ids count once: 2 distinct images fit in the 2 left
    body = {"image_ids": [images[0], images[1], images[0], images[1]]}
    r = await limited.post(url, json=body, headers=user.headers)
    assert r.status_code == 202, r.text
    assert len(r.json()["jobs"]) == 2

    r = await limited.post(url, json={"image_id": images[2]}, headers=user.headers)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert "retry-after" in r.headers
    assert await _job_count(app, user) == 5


async def test_a_batch_over_the_whole_limit_is_refused(client, app, limited, user: Account) -> None:
    """More jobs than the limit allows in any window: no wait would help, so a 422 (not a 429
    whose Retry-After would be a lie), and nothing is counted or queued."""
    sid = await _style(client, user)
    images = await _images(client, user, JOB_LIMIT + 1)
    url = f"/api/v1/styles/{sid}/apply"
    r = await limited.post(url, json={"image_ids": images}, headers=user.headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "over_rate_limit", error
    assert error["details"]["cost"] == JOB_LIMIT + 1, error
    assert await _job_count(app, user) == 0
    r = await limited.post(url, json={"image_ids": images[:JOB_LIMIT]}, headers=user.headers)
    assert r.status_code == 202, r.text
    assert await _job_count(app, user) == JOB_LIMIT
