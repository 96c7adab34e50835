from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin, JSONType, TimestampMixin


class JobType(enum.StrEnum):
    learn_style = "learn_style"
    apply_style = "apply_style"
    export_cube = "export_cube"
    thumbnail = "thumbnail"


@dataclass(frozen=True)
class JobRoute:
    """Where a job type runs: its Celery task's name and queue."""

    task: str
    queue: str


# The one table of job tasks and their queues: the job service stores the queue on the row,
# dispatch sends the task there, and each task in app/workers declares its name and queue from
# here (the workers' routing). ``ml``: learning and applying styles; ``io``: everything else.
JOB_ROUTES: dict[JobType, JobRoute] = {
    JobType.learn_style: JobRoute("picfilter.learn_style", "ml"),
    JobType.apply_style: JobRoute("picfilter.apply_style", "ml"),
    JobType.export_cube: JobRoute("picfilter.export_cube", "ml"),
    JobType.thumbnail: JobRoute("picfilter.thumbnail", "io"),
}


class JobStatus(enum.StrEnum):
    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.completed, JobStatus.failed, JobStatus.cancelled)


class Job(IdMixin, TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[JobType] = mapped_column(Enum(JobType, native_enum=False, length=30))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=20), default=JobStatus.queued
    )
    progress: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    style_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("styles.id", ondelete="SET NULL"), index=True
    )
    image_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    queue: Mapped[str] = mapped_column(String(20), default="ml")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
