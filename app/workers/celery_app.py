"""The Celery app: queues ``ml`` and ``io``, late acks, prefetch 1, models loaded at worker_init.

A job task's name and queue are declared once, in :data:`app.models.job.JOB_ROUTES`.

Broker: Redis in production (``REDIS_URL``), kombu's filesystem transport under ``DATA_DIR`` in
the embedded default (no server). With Redis, a message whose worker died unacknowledged comes
back after ``CELERY_VISIBILITY_TIMEOUT`` seconds; with the filesystem transport it does not, and
the periodic sweep (:func:`app.services.job_service.sweep_stuck_jobs`) re-queues the job from
its row instead. Results are not stored by Celery: job rows are the truth.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Queue

from app.config import Settings, get_settings
from app.models.job import JOB_ROUTES
from app.workers.broker_fs import broker_url

log = logging.getLogger("picfilter.worker")

MODEL_REGISTRY: dict[str, Any] = {}


def transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # the exchange tables (fanout, pidbox); unset, kombu writes ./control in the cwd
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # kombu polls the folder once a second by default: a tenth keeps short jobs short.
            "polling_interval": 0.1,
        }
    timeout = settings.celery_visibility_timeout
    return {
        "visibility_timeout": timeout,
        "global_keyprefix": f"{settings.redis_key_prefix}celery:",
        # Look for unacknowledged messages to restore about as often as they can expire
        # (kombu's default sweep runs every ~100 s, far too rarely for a short timeout).
        "unacked_restore_interval": max(1, min(10, timeout // 3)),
        "unacked_restore_throttle": 1 if timeout < 300 else 10,
    }


def make_celery(settings: Settings) -> Celery:
    app = Celery(
        "picfilter",
        broker=broker_url(settings.broker_url),
        include=["app.workers.io_tasks", "app.workers.ml_tasks"],
    )
    app.conf.update(
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q) for q in dict.fromkeys(r.queue for r in JOB_ROUTES.values())],
        task_default_queue="io",  # the sweep and the cleanup
        task_routes={r.task: {"queue": r.queue} for r in JOB_ROUTES.values()},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule={
            "sweep-stuck-jobs": {
                "task": "picfilter.sweep_stuck_jobs",
                "schedule": float(settings.job_sweep_interval_seconds),
                "options": {"queue": "io"},
            },
            "cleanup-expired-uploads": {
                "task": "picfilter.cleanup_expired_uploads",
                "schedule": 3600.0,
                "options": {"queue": "io"},
            },
        },
        beat_schedule_filename=str(settings.resolved_data_dir / "celerybeat-schedule"),
    )
    return app


celery_app = make_celery(get_settings())


def load_models() -> dict[str, Any]:
    """Load what the ML tasks reuse across jobs (once per worker process)."""
    from app.workers.registry import load_model_registry

    return load_model_registry(get_settings())


@worker_init.connect
def _on_worker_init(**_: Any) -> None:
    MODEL_REGISTRY.update(load_models())
    log.info("worker models loaded: %s", sorted(MODEL_REGISTRY))


@worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # Prefork children inherit the registry; engines must not be shared across fork.
    from app.workers import context

    context.reset_after_fork()
