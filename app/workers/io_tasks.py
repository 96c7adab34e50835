"""``io`` queue tasks: thumbnails, upload cleanup, the stuck-job sweep, and the self-test job."""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from app.services import job_service
from app.services.job_service import JobContext, PermanentJobError
from app.workers import context
from app.workers.celery_app import celery_app


def _selftest(ctx: JobContext) -> dict[str, Any]:
    """A tiny real job for the job-system tests: sleeps in steps, can fail on purpose."""
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


@celery_app.task(bind=True, name="picfilter.selftest", max_retries=None)
def selftest(self: Task, job_id: str) -> None:
    job_service.run_job(self, context.db(), context.settings(), job_id, _selftest)


@celery_app.task(name="picfilter.sweep_stuck_jobs")
def sweep_stuck_jobs() -> dict[str, int]:
    from app.workers.dispatch import send_job

    return job_service.sweep_stuck_jobs(
        context.db(), context.settings(), lambda job: send_job(job.id, job.type, job.queue)
    )
