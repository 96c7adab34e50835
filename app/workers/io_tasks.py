"""``io`` queue tasks: thumbnails, upload cleanup and the stuck-job sweep."""

from __future__ import annotations

from celery import Task

from app.models import Job, JobType
from app.services import image_service, job_service, style_jobs
from app.storage import Storage, make_storage
from app.workers import context
from app.workers.celery_app import celery_app
from app.workers.dispatch import job_task_options, send_job

_storage: Storage | None = None


def storage() -> Storage:
    """This worker process's storage client (made on first use, i.e. after the prefork)."""
    global _storage
    if _storage is None:
        _storage = make_storage(context.settings())
    return _storage


@celery_app.task(name="picfilter.sweep_stuck_jobs")
def sweep_stuck_jobs() -> dict[str, int]:
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


@celery_app.task(**job_task_options(JobType.thumbnail, soft_time_limit=120, time_limit=180))
def thumbnail(self: Task, job_id: str) -> None:
    """Make an image's 400x400 WebP thumbnail (a ``thumbnail`` job)."""
    job_service.run_job(
        self,
        context.db(),
        context.settings(),
        job_id,
        lambda ctx: image_service.generate_thumbnail(ctx, storage()),
    )


@celery_app.task(name="picfilter.cleanup_expired_uploads", soft_time_limit=600)
def cleanup_expired_uploads() -> dict[str, int]:
    """Hourly (beat): remove pending images whose upload URL expired more than a day ago."""
    return image_service.cleanup_expired_uploads(context.db(), storage())
