"""The test-only job: a tiny real task for the job-system tests, registered by the tests.

Production knows nothing of it. The test worker (:mod:`tests.worker`) imports this module, so
the task ``tests.selftest`` is registered beside the real ones; :func:`submit_selftest` writes
the job row the way the API does (queued, on the task's queue) and sends the task after the
commit. The row's type is ``thumbnail`` (an ``io`` job type that exists; the column holds only
real job types): nothing but this task ever runs these rows, since the test worker has no beat
and the tests that sweep them re-send them with :func:`resend`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from celery import Task

from app.models import Job, JobStatus, JobType
from app.models.job import JOB_ROUTES
from app.schemas.job import JobOut
from app.services import job_service
from app.services.job_service import JobContext, PermanentJobError
from app.workers import context
from app.workers.celery_app import celery_app

SELFTEST_TYPE = JobType.thumbnail
SELFTEST_QUEUE = JOB_ROUTES[SELFTEST_TYPE].queue
DEFAULTS: dict[str, Any] = {
    "steps": 3,
    "sleep": 0.05,
    "fail_attempts": 0,
    "fail_permanently": False,
}


def run_selftest(ctx: JobContext) -> dict[str, Any]:
    """Sleeps in steps, reporting progress; can fail on purpose (for a few attempts or for good)."""
    steps = int(ctx.params.get("steps", 3))
    delay = float(ctx.params.get("sleep", 0.05))
    if ctx.params.get("fail_permanently"):
        raise PermanentJobError("self-test asked to fail permanently")
    fail_attempts = int(ctx.params.get("fail_attempts", 0))
    for i in range(steps):
        time.sleep(delay)
        ctx.progress(100 * (i + 1) / (steps + 1), f"step {i + 1}/{steps}")
    if ctx.attempts <= fail_attempts:
        raise RuntimeError(f"self-test failure on attempt {ctx.attempts}")
    return {"steps": steps, "attempts": ctx.attempts}


@celery_app.task(
    bind=True,
    name="tests.selftest",
    max_retries=context.settings().celery_max_retries,
)
def selftest(self: Task, job_id: str) -> None:
    job_service.run_job(self, context.db(), context.settings(), job_id, run_selftest)


def send(job_id: uuid.UUID | str, queue: str = SELFTEST_QUEUE) -> None:
    selftest.apply_async(args=[str(job_id)], queue=queue)


def resend(job: Job) -> None:
    """Send a self-test job's task again (what the stuck-job sweep does for real jobs)."""
    send(job.id, job.queue)


def _create(owner_id: str, params: dict[str, Any]) -> dict[str, Any]:
    with context.db().session() as s:
        job = Job(
            id=uuid.uuid4(),
            owner_id=uuid.UUID(owner_id),
            type=SELFTEST_TYPE,
            status=JobStatus.queued,
            progress=0,
            attempts=0,
            params=params,
            queue=SELFTEST_QUEUE,
        )
        s.add(job)
        s.flush()
        out = JobOut.model_validate(job).model_dump(mode="json")
    send(out["id"])  # after the commit, like the API
    return out


async def submit_selftest(account: Any, **params: Any) -> dict[str, Any]:
    """Queue a self-test job owned by ``account``; returns the job as the API shows it."""
    unknown = set(params) - set(DEFAULTS)
    assert not unknown, f"unknown self-test params {unknown}"
    return await anyio.to_thread.run_sync(_create, account.id, {**DEFAULTS, **params})
