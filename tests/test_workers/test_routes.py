"""Each job type's task and queue are declared once (``app.models.job.JOB_ROUTES``): the tasks
the worker registers and the Celery routing follow that table."""

from __future__ import annotations

from app.models import JobType
from app.models.job import JOB_ROUTES


def test_every_job_type_has_a_registered_task_routed_to_its_queue() -> None:
    from app.workers import io_tasks, ml_tasks  # noqa: F401  (register the tasks)
    from app.workers.celery_app import celery_app

    assert set(JOB_ROUTES) == set(JobType)
    router = celery_app.amqp.router
    for job_type, route in JOB_ROUTES.items():
        task = celery_app.tasks[route.task]
        assert task.name == route.task
        assert router.route({}, route.task)["queue"].name == route.queue, job_type
    queues = {q.name for q in celery_app.conf.task_queues}
    assert queues == {r.queue for r in JOB_ROUTES.values()}
