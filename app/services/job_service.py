"""Jobs: the rows clients poll are the truth; Celery is only the transport.

API side (async): create a job row and send its task only after the request's transaction
commits; get/list/cancel for the owner. Worker side (sync): :func:`run_job` moves a job through
``queued -> processing -> completed | failed | cancelled``, counts attempts, keeps a heartbeat,
retries failures (the task's ``max_retries``, ``CELERY_RETRY_DELAY`` apart) and records a
readable error after the last one. :func:`sweep_stuck_jobs` re-queues or fails jobs whose worker
died. A job type's queue is in :data:`app.models.job.JOB_ROUTES`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import SyncDatabase, on_commit
from app.errors import Conflict, NotFound
from app.models import Job, JobStatus, JobType, User
from app.models.base import utcnow
from app.models.job import JOB_ROUTES
from app.services import events
from app.services.pagination import newest_first

log = logging.getLogger("picfilter.jobs")

#: ``session.info`` flag: this transaction adds jobs, so the broker must be reachable before it
#: commits (see :func:`app.dependencies.get_session`)
SENDS_JOBS = "sends_jobs"


# ---- API side -------------------------------------------------------------------------------
def create_job(
    session: AsyncSession | Session,
    owner_id: uuid.UUID,
    job_type: JobType,
    *,
    params: dict[str, Any] | None = None,
    style_id: uuid.UUID | None = None,
    image_id: uuid.UUID | None = None,
) -> Job:
    """Add a queued job; its task is sent once the surrounding transaction commits."""
    job = Job(
        id=uuid.uuid4(),
        owner_id=owner_id,
        type=job_type,
        status=JobStatus.queued,
        progress=0,
        attempts=0,
        params=params or {},
        style_id=style_id,
        image_id=image_id,
        queue=JOB_ROUTES[job_type].queue,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(job)
    job_id, queue = job.id, job.queue

    def _send() -> None:
        from app.workers.dispatch import send_job  # workers layer; imported late on purpose

        send_job(job_id, job_type, queue)

    session.info[SENDS_JOBS] = True
    on_commit(session, _send)
    return job


async def get_job(session: AsyncSession, user: User, job_id: uuid.UUID) -> Job:
    job = await session.get(Job, job_id)
    if job is None or job.owner_id != user.id:
        raise NotFound("Job not found", code="job_not_found")
    return job


async def list_jobs(
    session: AsyncSession,
    user: User,
    *,
    status: JobStatus | None,
    job_type: JobType | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    stmt = select(Job).where(Job.owner_id == user.id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if job_type is not None:
        stmt = stmt.where(Job.type == job_type)
    return await newest_first(session, stmt, Job.created_at, Job.id, limit=limit, cursor=cursor)


async def cancel_job(session: AsyncSession, user: User, job_id: uuid.UUID) -> Job:
    job = await get_job(session, user, job_id)
    result = await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_([JobStatus.queued, JobStatus.processing]))
        .values(status=JobStatus.cancelled, finished_at=utcnow(), updated_at=utcnow())
    )
    if getattr(result, "rowcount", 0) != 1:
        await session.refresh(job)
        raise Conflict(f"Job is already {job.status.value}", code="job_not_cancellable")
    await session.refresh(job)
    return job


# ---- worker side ----------------------------------------------------------------------------
class JobCancelled(Exception):
    """Raised inside a running job once its row says ``cancelled``."""


class JobSuperseded(JobCancelled):
    """Raised inside a running job whose row another delivery took over: the sweep re-queued it
    (this worker's heartbeats had stopped reaching the database) and another attempt runs it.
    This attempt stops and touches nothing: the job belongs to the new one."""


class PermanentJobError(Exception):
    """A failure that retrying cannot fix (bad input, deleted style): the job fails at once."""


class RetryableTask(Protocol):
    max_retries: int | None

    @property
    def request(self) -> Any: ...

    def retry(self, *args: Any, **kwargs: Any) -> Exception: ...


@dataclass
class JobContext:
    """What a job handler sees: its job's ids and params, and a progress reporter."""

    db: SyncDatabase
    settings: Settings
    job_id: uuid.UUID
    job_type: JobType
    owner_id: uuid.UUID
    params: dict[str, Any]
    style_id: uuid.UUID | None
    image_id: uuid.UUID | None
    attempts: int
    _last_progress: int = field(default=-1, repr=False)

    def progress(self, percent: float, message: str | None = None) -> None:
        """Record progress (0..100) and a heartbeat; raise :class:`JobCancelled` if cancelled."""
        pct = max(0, min(99, int(percent)))
        with self.db.session() as s:
            self._check(s)
            s.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.attempts == self.attempts)
                .values(progress=max(pct, self._last_progress), heartbeat_at=utcnow())
            )
        if pct != self._last_progress:
            self._last_progress = max(pct, self._last_progress)
            events.publish_job_event(
                self.settings,
                self.job_id,
                {"status": "processing", "progress": self._last_progress, "message": message},
            )

    def check_cancelled(self) -> None:
        with self.db.session() as s:
            self._check(s)

    def _check(self, s: Session) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled (or deleted), and
        :class:`JobSuperseded` if another attempt owns it now."""
        row = s.execute(select(Job.status, Job.attempts).where(Job.id == self.job_id)).one_or_none()
        if row is None or row.status == JobStatus.cancelled:
            raise JobCancelled(str(self.job_id))
        if row.status != JobStatus.processing or row.attempts != self.attempts:
            raise JobSuperseded(str(self.job_id))


JobHandler = Callable[[JobContext], dict[str, Any]]
FailureHook = Callable[[JobContext, str], None]


class Heartbeat:
    """Beats for a running job: every ``interval`` seconds a daemon thread sets the row's
    ``heartbeat_at``, for as long as the handler runs, whatever it is doing (a long model fit
    reports progress rarely). The sweep re-queues a ``processing`` job whose heartbeat is older
    than ``JOB_STUCK_AFTER_SECONDS``: its worker died (SIGKILL, OOM, a lost host).

    Only the attempt that owns the row beats (``WHERE attempts = n``), so a worker that was
    presumed dead and comes back cannot keep a re-queued job looking alive. Written here because
    Celery has no per-job liveness that our job rows could follow (its worker heartbeats are per
    process and go to the broker, not to the job)."""

    def __init__(self, db: SyncDatabase, job_id: uuid.UUID, attempt: int, interval: float):
        self.db, self.job_id, self.attempt, self.interval = db, job_id, attempt, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self) -> bool:
        """One heartbeat; False when this attempt no longer owns a processing row."""
        with self.db.session() as s:
            res = s.execute(
                update(Job)
                .where(
                    Job.id == self.job_id,
                    Job.status == JobStatus.processing,
                    Job.attempts == self.attempt,
                )
                .values(heartbeat_at=utcnow())
            )
            return getattr(res, "rowcount", 0) == 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.beat():
                    return  # finished, cancelled or taken over: nothing left to keep alive
            except Exception:  # the database may be back at the next beat
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)


def _finish(
    db: SyncDatabase,
    settings: Settings,
    job_id: uuid.UUID,
    status: JobStatus,
    attempt: int | None = None,
    **values: Any,
) -> bool:
    """Move a processing job to a final or re-queued state; False if it was cancelled meanwhile
    or (``attempt`` given) another attempt owns it now, so a job's result is written once."""
    owned = [Job.id == job_id, Job.status == JobStatus.processing]
    if attempt is not None:
        owned.append(Job.attempts == attempt)
    with db.session() as s:
        res = s.execute(
            update(Job).where(*owned).values(status=status, updated_at=utcnow(), **values)
        )
        changed = getattr(res, "rowcount", 0) == 1
    if changed:
        payload = {
            "status": status.value,
            **{k: v for k, v in values.items() if k in ("progress", "error", "result")},
        }
        events.publish_job_event(settings, job_id, payload)
    return changed


def _aware(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (they are stored in UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def readable_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def run_job(
    task: RetryableTask,
    db: SyncDatabase,
    settings: Settings,
    job_id: str,
    handler: JobHandler,
    on_fail: FailureHook | None = None,
) -> None:
    """Run one delivery of a job's task. Safe to run twice: finished jobs are left alone, and so
    is a job that another worker is running (``processing`` with a fresh heartbeat: a duplicate
    delivery, e.g. the sweep's re-send of a job that was only slow to start)."""
    jid = uuid.UUID(job_id)
    with db.session() as s:
        job = s.execute(select(Job).where(Job.id == jid).with_for_update()).scalar_one_or_none()
        if job is None or job.status.finished:
            log.info("job %s: nothing to do (%s)", job_id, job.status.value if job else "missing")
            return
        fresh = utcnow() - timedelta(seconds=settings.job_stuck_after_seconds)
        if (
            job.status == JobStatus.processing
            and job.heartbeat_at is not None
            and _aware(job.heartbeat_at) > fresh
        ):
            log.info("job %s: already running elsewhere (attempt %d)", job_id, job.attempts)
            return
        job.status = JobStatus.processing
        job.attempts += 1
        job.started_at = job.started_at or utcnow()
        job.heartbeat_at = utcnow()
        ctx = JobContext(
            db=db,
            settings=settings,
            job_id=jid,
            job_type=job.type,
            owner_id=job.owner_id,
            params=dict(job.params or {}),
            style_id=job.style_id,
            image_id=job.image_id,
            attempts=job.attempts,
        )
    events.publish_job_event(settings, jid, {"status": "processing", "progress": 0})

    attempt = ctx.attempts

    def fail(message: str) -> None:
        if (
            _finish(
                db, settings, jid, JobStatus.failed, attempt, error=message, finished_at=utcnow()
            )
            and on_fail
        ):
            on_fail(ctx, message)

    try:
        with Heartbeat(db, jid, attempt, settings.job_heartbeat_seconds):
            result = handler(ctx)
    except JobSuperseded:
        log.warning("job %s attempt %d: another attempt took it over; stopping", job_id, attempt)
        return
    except JobCancelled:
        log.info("job %s cancelled while running", job_id)
        if on_fail:
            on_fail(ctx, "cancelled")
        return
    except PermanentJobError as exc:
        fail(readable_error(exc))
        return
    except Exception as exc:
        retries = int(task.request.retries or 0)
        max_retries = (
            task.max_retries if task.max_retries is not None else settings.celery_max_retries
        )
        log.warning("job %s attempt %d failed: %r", job_id, ctx.attempts, exc, exc_info=True)
        if retries < max_retries:
            message = f"attempt {ctx.attempts} failed: {readable_error(exc)}; retrying"
            if _finish(db, settings, jid, JobStatus.queued, attempt, error=message):
                raise task.retry(exc=exc, countdown=settings.celery_retry_delay) from exc
            return
        fail(f"failed after {ctx.attempts} attempts: {readable_error(exc)}")
        return
    _finish(
        db,
        settings,
        jid,
        JobStatus.completed,
        attempt,
        result=result,
        progress=100,
        error=None,
        finished_at=utcnow(),
    )


def _resender(callback: Callable[[Job], None], job: Job) -> Callable[[], None]:
    return lambda: callback(job)


def sweep_stuck_jobs(
    db: SyncDatabase,
    settings: Settings,
    resend: Callable[[Job], None],
    on_failed: Callable[[Job], None] | None = None,
) -> dict[str, int]:
    """Re-queue (or fail, once out of attempts) jobs whose worker stopped sending heartbeats.

    ``resend`` sends a re-queued job's task again and ``on_failed`` lets the job's owner domain
    settle what the job left behind (a style in ``training``); both run after the commit."""
    deadline = utcnow() - timedelta(seconds=settings.job_stuck_after_seconds)
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    with db.session() as s:
        stuck = list(
            s.execute(
                select(Job)
                .where(Job.status == JobStatus.processing, Job.heartbeat_at < deadline)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        for job in stuck:
            if job.attempts > settings.celery_max_retries:
                job.status = JobStatus.failed
                job.error = f"worker lost after {job.attempts} attempts"
                job.finished_at = utcnow()
                counts["failed"] += 1
                if on_failed is not None:
                    on_commit(s, _resender(on_failed, job))
            else:
                job.status = JobStatus.queued
                job.error = f"worker lost during attempt {job.attempts}; re-queued"
                counts["requeued"] += 1
                on_commit(s, _resender(resend, job))
        # queued for long without being picked up: their task was lost (a send that failed
        # after the commit, a purged queue). Sending again is safe: run_job runs a job once.
        lost_before = utcnow() - timedelta(seconds=settings.job_resend_queued_after_seconds)
        lost = list(
            s.execute(
                select(Job)
                .where(Job.status == JobStatus.queued, Job.updated_at < lost_before)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        for job in lost:
            job.updated_at = utcnow()
            counts["resent"] += 1
            on_commit(s, _resender(resend, job))
    if any(counts.values()):
        log.warning("swept stuck jobs: %s", counts)
    return counts
