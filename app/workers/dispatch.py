"""Sending job tasks: the only place domain code reaches Celery (ids only in messages)."""

from __future__ import annotations

import uuid

from app.models import JobType

TASK_OF: dict[JobType, str] = {
    JobType.learn_style: "picfilter.learn_style",
    JobType.apply_style: "picfilter.apply_style",
    JobType.export_cube: "picfilter.export_cube",
    JobType.thumbnail: "picfilter.thumbnail",
    JobType.selftest: "picfilter.selftest",
}


def send_job(job_id: uuid.UUID, job_type: JobType, queue: str) -> None:
    from app.workers.celery_app import celery_app

    celery_app.send_task(TASK_OF[job_type], args=[str(job_id)], queue=queue)
