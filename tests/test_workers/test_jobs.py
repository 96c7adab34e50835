"""The job system end to end: API -> database -> broker -> a real Celery worker process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Account, WorkerProcess, create_user, wait_for_job
from tests.selftest_job import SELFTEST_TYPE, resend, submit_selftest


async def _submit(client: Any, account: Account, **params: Any) -> dict[str, Any]:
    body = await submit_selftest(account, **params)
    assert body["status"] == "queued"
    assert body["type"] == SELFTEST_TYPE.value
    return body


async def test_job_runs_to_completion(client, user, live_worker: WorkerProcess) -> None:
    job = await _submit(client, user, steps=3, sleep=0.05)
    done = await wait_for_job(client, user, job["id"], worker=live_worker)
    assert done["status"] == "completed", done
    assert done["progress"] == 100
    assert done["attempts"] == 1
    assert done["result"] == {"steps": 3, "attempts": 1}
    assert done["started_at"]
    assert done["finished_at"]
    assert done["error"] is None


async def test_failing_job_is_retried_then_fails(client, user, live_worker: WorkerProcess) -> None:
    # Fails on every attempt: 1 try + 3 retries, then `failed` with the error.
    job = await _submit(client, user, steps=1, sleep=0, fail_attempts=10)
    done = await wait_for_job(client, user, job["id"], timeout=180, worker=live_worker)
    assert done["status"] == "failed", done
    assert done["attempts"] == 4
    assert "failed after 4 attempts" in done["error"]
    assert "self-test failure on attempt 4" in done["error"]


async def test_job_succeeds_after_a_retry(client, user, live_worker: WorkerProcess) -> None:
    job = await _submit(client, user, steps=1, sleep=0, fail_attempts=1)
    done = await wait_for_job(client, user, job["id"], timeout=60, worker=live_worker)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2


async def test_permanent_failure_is_not_retried(client, user, live_worker: WorkerProcess) -> None:
    job = await _submit(client, user, fail_permanently=True)
    done = await wait_for_job(client, user, job["id"], worker=live_worker)
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert done["error"] == "self-test asked to fail permanently"


async def test_cancel_processing_job(client, user, live_worker: WorkerProcess) -> None:
    job = await _submit(client, user, steps=200, sleep=0.1)
    await wait_for_job(client, user, job["id"], until=("processing",), worker=live_worker)
    r = await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    await asyncio.sleep(1.0)
    r = await client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.json()["status"] == "cancelled"
    assert r.json()["progress"] < 100
    # cancelling again is a conflict
    r = await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "job_not_cancellable"


async def test_jobs_are_private_and_listed(client, user, live_worker: WorkerProcess) -> None:
    other = await create_user(client)
    job = await _submit(client, user, steps=0)
    for path in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/events"):
        r = await client.get(path, headers=other.headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "job_not_found"
    r = await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=other.headers)
    assert r.status_code == 404
    await wait_for_job(client, user, job["id"], worker=live_worker)
    second = await _submit(client, user, steps=0)
    r = await client.get("/api/v1/jobs", params={"limit": 1}, headers=user.headers)
    page = r.json()
    assert [j["id"] for j in page["items"]] == [second["id"]]
    assert page["next_cursor"]
    r = await client.get(
        "/api/v1/jobs", params={"limit": 1, "cursor": page["next_cursor"]}, headers=user.headers
    )
    assert [j["id"] for j in r.json()["items"]] == [job["id"]]
    r = await client.get("/api/v1/jobs", params={"status": "completed"}, headers=user.headers)
    assert all(j["status"] == "completed" for j in r.json()["items"])
    r = await client.get("/api/v1/jobs", headers=other.headers)
    assert r.json()["items"] == []


async def test_sse_streams_progress_until_done(client, user, live_worker: WorkerProcess) -> None:
    job = await _submit(client, user, steps=3, sleep=0.2)
    statuses = []
    async with client.stream(
        "GET", f"/api/v1/jobs/{job['id']}/events", headers=user.headers, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                import json

                statuses.append(json.loads(line[6:])["status"])
                if statuses[-1] in ("completed", "failed"):
                    break
    assert statuses[-1] == "completed"


async def test_worker_killed_mid_job_does_not_lose_it(
    client, user, live_worker: WorkerProcess, settings
) -> None:
    job = await _submit(client, user, steps=30, sleep=0.2)
    await wait_for_job(client, user, job["id"], until=("processing",), worker=live_worker)
    await asyncio.sleep(0.5)
    live_worker.kill()  # SIGKILL: the message is never acknowledged
    r = await client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.json()["status"] == "processing"
    if settings.redis_url:
        # The Redis broker hands an unacknowledged message back after the visibility timeout;
        # the new worker runs with a short one so that this test does not wait an hour.
        # A re-delivered job runs again only once its heartbeat is stale (older than
        # JOB_STUCK_AFTER_SECONDS): else another worker may still be running it.
        live_worker.start(
            extra_env={"CELERY_VISIBILITY_TIMEOUT": "3", "JOB_STUCK_AFTER_SECONDS": "1"}
        )
    else:
        # The filesystem broker cannot re-deliver: the sweep re-queues from the job row.
        from app.config import Settings
        from app.db import SyncDatabase
        from app.services.job_service import sweep_stuck_jobs

        live_worker.start()
        short = Settings(**{"job_stuck_after_seconds": 1}, _env_file=None)  # type: ignore[call-arg]
        assert short.async_database_url == settings.async_database_url
        await asyncio.sleep(1.5)
        db = SyncDatabase(short)
        counts = await asyncio.to_thread(sweep_stuck_jobs, db, short, resend)
        db.dispose()
        assert counts == {"requeued": 1, "failed": 0, "resent": 0}
    done = await wait_for_job(client, user, job["id"], timeout=180, worker=live_worker)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    # restore the normal worker for the tests that follow
    live_worker.stop()
    live_worker.start()


async def test_a_long_silent_job_keeps_beating_and_is_not_swept(
    client, user, live_worker: WorkerProcess, settings
) -> None:
    """A job that reports no progress for longer than the stale age still has a fresh
    heartbeat (the heartbeat thread), so the sweep leaves it alone and it runs once."""
    from app.config import Settings
    from app.db import SyncDatabase
    from app.services.job_service import sweep_stuck_jobs

    live_worker.stop()
    live_worker.start(extra_env={"JOB_HEARTBEAT_SECONDS": "0.5"})
    try:
        job = await _submit(client, user, steps=1, sleep=6)  # 6 s without progress
        await wait_for_job(client, user, job["id"], until=("processing",), worker=live_worker)
        short = Settings(**{"job_stuck_after_seconds": 2}, _env_file=None)  # type: ignore[call-arg]
        db = SyncDatabase(short)
        swept = []
        for _ in range(4):  # sweeps at 1, 2, 3 and 4 s into the silence
            await asyncio.sleep(1)
            swept.append(await asyncio.to_thread(sweep_stuck_jobs, db, short, resend))
        db.dispose()
        assert all(c["requeued"] == 0 for c in swept), swept
        done = await wait_for_job(client, user, job["id"], timeout=60, worker=live_worker)
        assert done["status"] == "completed", done
        assert done["attempts"] == 1
    finally:
        live_worker.stop()
        live_worker.start()


async def test_sweep_resends_a_queued_job_whose_message_was_lost(
    client, user, live_worker: WorkerProcess
) -> None:
    """A job row committed whose task never reached the broker (a send that failed after the
    commit): the sweep sends it again once it has been queued too long, and it runs once."""
    import uuid
    from datetime import UTC, datetime

    from app.config import Settings
    from app.db import SyncDatabase
    from app.models import Job, JobStatus
    from app.services.job_service import sweep_stuck_jobs
    from tests.selftest_job import DEFAULTS, SELFTEST_QUEUE

    # Only rows older than 2001 count here, so other tests' rows are never touched.
    ages = 365 * 86400 * (datetime.now(UTC).year - 2001)
    short = Settings(  # type: ignore[call-arg]
        **{"job_resend_queued_after_seconds": ages, "job_stuck_after_seconds": ages},
        _env_file=None,
    )
    db = SyncDatabase(short)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)

    def arrange() -> uuid.UUID:
        with db.session() as s:
            job = Job(
                id=uuid.uuid4(),
                owner_id=uuid.UUID(user.id),
                type=SELFTEST_TYPE,
                status=JobStatus.queued,
                progress=0,
                attempts=0,
                params={**DEFAULTS, "steps": 1},
                queue=SELFTEST_QUEUE,
                created_at=long_ago,
                updated_at=long_ago,
            )
            s.add(job)  # and no task is sent
            return job.id

    job_id = await asyncio.to_thread(arrange)
    counts = await asyncio.to_thread(sweep_stuck_jobs, db, short, resend)
    again = await asyncio.to_thread(sweep_stuck_jobs, db, short, resend)
    db.dispose()
    assert counts == {"requeued": 0, "failed": 0, "resent": 1}
    assert again["resent"] == 0  # re-sent once: its clock restarted
    done = await wait_for_job(client, user, str(job_id), timeout=60, worker=live_worker)
    assert done["status"] == "completed", done
    assert done["attempts"] == 1


async def test_sweep_fails_a_learn_job_out_of_attempts_and_settles_its_style(
    client, user, settings
) -> None:
    """A learn job whose worker died on its last attempt: the sweep fails it and the style
    leaves `training` at once (nobody has to read it first)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from app.models import Job, JobStatus, JobType, Style, StyleStatus
    from app.workers import context, io_tasks

    r = await client.post("/api/v1/styles", json={"name": "swept"}, headers=user.headers)
    style_id = uuid.UUID(r.json()["id"])
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.job_stuck_after_seconds + 60)

    def arrange_and_sweep() -> tuple[Job, Style]:
        db = context.db()
        with db.session() as s:
            style = s.get(Style, style_id)
            assert style is not None
            style.status, style.model_version = StyleStatus.training, 1
            job = Job(
                owner_id=uuid.UUID(user.id),
                type=JobType.learn_style,
                status=JobStatus.processing,
                attempts=settings.celery_max_retries + 1,
                params={"style_id": str(style_id), "model_version": 1},
                style_id=style_id,
                queue="ml",
                started_at=long_ago,
                heartbeat_at=long_ago,
            )
            s.add(job)
        counts = io_tasks.sweep_stuck_jobs()
        assert counts["failed"] >= 1
        with db.session() as s:
            return (
                s.execute(select(Job).where(Job.id == job.id)).scalar_one(),
                s.execute(select(Style).where(Style.id == style_id)).scalar_one(),
            )

    job, style = await asyncio.to_thread(arrange_and_sweep)
    assert job.status == JobStatus.failed
    assert job.error == "worker lost after 4 attempts"
    assert style.status == StyleStatus.failed
    assert style.error == "worker lost after 4 attempts"


@pytest.mark.parametrize(
    "cursor", ["%%%", "WyJ4Il0", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgIm5vdC1hLXV1aWQiXQ"]
)
async def test_a_bad_cursor_is_a_400(client, user, cursor) -> None:
    for path in ("/api/v1/jobs", "/api/v1/images"):
        r = await client.get(path, params={"cursor": cursor}, headers=user.headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_cursor"
