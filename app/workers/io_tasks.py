"""``io`` queue tasks: thumbnails, upload cleanup, the stuck-job sweep, and the self-test job."""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from app.models import Job, JobType
from app.services import image_service, job_service, style_jobs
from app.services.job_service import JobContext, PermanentJobError
from app.storage import Storage, make_storage
from app.workers import context
from app.workers.celery_app import celery_app

_storage: Storage | None = None


def storage() -> Storage:
    """This worker process's storage client (made on first use, i.e. after the prefork)."""
    global _storage
    if _storage is None:
        _storage = make_storage(context.settings())
    return _storage


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
        context.db(),
        context.settings(),
        lambda job: send_job(job.id, job.type, job.queue),
        on_failed=settle_failed_job,
    )


def settle_failed_job(job: Job) -> None:
    """What a job the sweep gave up on leaves behind: a learn job's style goes back."""
    if job.type == JobType.learn_style:
        style_jobs.settle_learn(context.db(), job.params, job.error or "worker lost")


@celery_app.task(
    bind=True,
    name="picfilter.thumbnail",
    queue="io",
    max_retries=None,  # run_job retries settings.celery_max_retries times
    soft_time_limit=120,
    time_limit=180,
)
def thumbnail(self: Task, job_id: str) -> None:
    """Make an image's 400x400 WebP thumbnail (a ``thumbnail`` job)."""
    job_service.run_job(
        self,
        context.db(),
        context.settings(),
        job_id,
        lambda ctx: image_service.generate_thumbnail(ctx, storage()),
    )


@celery_app.task(name="picfilter.cleanup_expired_uploads", queue="io", soft_time_limit=600)
def cleanup_expired_uploads() -> dict[str, int]:
    """Hourly (beat): remove pending images whose upload URL expired more than a day ago."""
    return image_service.cleanup_expired_uploads(context.db(), storage())
