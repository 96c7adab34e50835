"""Job tasks: their Celery options, and sending them (the only place domain code reaches Celery;
messages carry the job id only).

A job type's task name and queue come from :data:`app.models.job.JOB_ROUTES`, the one table
that the job service (the row's ``queue``), :func:`send_job`, the Celery routing
(``task_routes`` in :mod:`app.workers.celery_app`) and the task declarations
(:func:`job_task_options`) read.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.config import get_settings
from app.models.job import JOB_ROUTES, JobType


def job_task_options(job_type: JobType, **limits: Any) -> dict[str, Any]:
    """The ``@celery_app.task(...)`` options of a job type's task: its name (the queue is routed
    from the same table; Celery deprecates ``queue`` on a task) and its retry policy
    (:func:`app.services.job_service.run_job` retries a failure ``max_retries`` times,
    ``CELERY_RETRY_DELAY`` seconds apart). ``limits``: time limits and the like."""
    route = JOB_ROUTES[job_type]
    return {
        "bind": True,
        "name": route.task,
        "max_retries": get_settings().celery_max_retries,
        **limits,
    }


def send_job(job_id: uuid.UUID, job_type: JobType, queue: str | None = None) -> None:
    """Send a job's task (to ``queue``, the job row's, else the job type's queue)."""
    from app.workers.celery_app import celery_app

    route = JOB_ROUTES[job_type]
    celery_app.send_task(route.task, args=[str(job_id)], queue=queue or route.queue)


def check_broker() -> None:
    """Raise ``kombu.exceptions.OperationalError`` when the broker cannot be reached.

    The API calls it before committing a transaction that adds jobs (their tasks are sent after
    the commit): with the broker down the request then answers 503 ``broker_unavailable`` and
    nothing is written, instead of a job row whose task can never be sent. One quick attempt
    (milliseconds when the connection is refused): the caller is a request."""
    from app.workers.celery_app import celery_app

    if get_settings().broker_url.startswith("filesystem"):
        return  # a local folder: nothing to reach
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=2
        )
