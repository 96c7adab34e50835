from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.models import JobStatus, JobType
from app.schemas.common import ORMModel


class JobOut(ORMModel):
    id: uuid.UUID
    type: JobType
    status: JobStatus
    progress: int
    attempts: int
    error: str | None
    result: dict[str, Any] | None
    style_id: uuid.UUID | None = None
    image_id: uuid.UUID | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ResultsZipRequest(BaseModel):
    job_ids: list[uuid.UUID] = Field(min_length=1, max_length=100)
