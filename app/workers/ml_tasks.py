"""``ml`` queue tasks: style learning, apply and ``.cube`` export.

Thin: each task runs its job through :func:`app.services.job_service.run_job` (status, attempts,
heartbeat, retries) with a handler from :mod:`app.services.style_jobs`. Messages carry the job id
only. Learning gets the ``on_fail`` hook that sets the style back when the job fails or is
cancelled, so a style is never left in ``training``. Name and retry policy come from
:func:`app.workers.dispatch.job_task_options`; time limits apply under the prefork pool.
"""

from __future__ import annotations

from celery import Task

from app.models import JobType
from app.services import job_service, style_jobs
from app.workers import context
from app.workers.celery_app import MODEL_REGISTRY, celery_app
from app.workers.dispatch import job_task_options

_LEARN_BUDGET = int(context.settings().ml_learn_time_budget_seconds)


@celery_app.task(
    **job_task_options(
        JobType.learn_style,
        soft_time_limit=2 * _LEARN_BUDGET + 120,
        time_limit=2 * _LEARN_BUDGET + 180,
    )
)
def learn_style(self: Task, job_id: str) -> None:
    """Learn a style (a ``learn_style`` job)."""
    init = MODEL_REGISTRY.get("adaptive_3dlut_init")
    job_service.run_job(
        self,
        context.db(),
        context.settings(),
        job_id,
        lambda ctx: style_jobs.learn(ctx, init_weights=init),
        style_jobs.on_learn_fail,
    )


@celery_app.task(
    **job_task_options(
        JobType.apply_style,
        soft_time_limit=300,
        time_limit=360,
    )
)
def apply_style(self: Task, job_id: str) -> None:
    """Apply a style to one image at full resolution (an ``apply_style`` job)."""
    job_service.run_job(self, context.db(), context.settings(), job_id, style_jobs.apply)


@celery_app.task(
    **job_task_options(
        JobType.export_cube,
        soft_time_limit=120,
        time_limit=180,
    )
)
def export_cube(self: Task, job_id: str) -> None:
    """Bake a style to a ``.cube`` file (an ``export_cube`` job)."""
    job_service.run_job(self, context.db(), context.settings(), job_id, style_jobs.export)
