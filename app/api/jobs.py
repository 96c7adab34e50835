"""``/api/v1/jobs``: get, list, cancel, and an SSE stream of progress events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.api.conformance import error_responses
from app.dependencies import CurrentUser, SessionDep, SettingsDep
from app.models import Job, JobStatus, JobType
from app.schemas.common import Page
from app.schemas.job import JobOut
from app.services import events, job_service, style_service

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=Page[JobOut])
async def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    type_: Annotated[JobType | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> Any:
    """The caller's jobs, newest first."""
    items, next_cursor = await job_service.list_jobs(
        session, user, status=status_, job_type=type_, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """Poll a job: learning every 5 s, apply/export every 1 s."""
    return await job_service.get_job(session, user, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(409))
async def cancel_job(job_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """Cancel a queued or processing job (409 if it already finished). Cancelling a learn job
    puts its style back as it was (ready with its previous model, or failed)."""
    job = await job_service.cancel_job(session, user, job_id)
    await style_service.settle_after_cancel(session, job)
    return job


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, default=str)}\n\n"


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def job_events(
    job_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    request: Request,
    settings: SettingsDep,
) -> StreamingResponse:
    """Server-sent events: the job's progress until it finishes (Redis pub/sub in production;
    the embedded default follows the job row)."""
    job = await job_service.get_job(session, user, job_id)
    first = JobOut.model_validate(job).model_dump(mode="json")
    db = request.app.state.db

    async def from_rows() -> AsyncIterator[str]:
        last: dict[str, Any] | None = None
        while True:
            async with db.sessionmaker() as s:
                row = await s.get(Job, job_id)
                if row is None:
                    return
                now = JobOut.model_validate(row).model_dump(mode="json")
            if now != last:
                yield _sse(now)
                last = now
            if JobStatus(now["status"]).finished or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    async def from_pubsub() -> AsyncIterator[str]:
        yield _sse(first)
        if JobStatus(first["status"]).finished:
            return
        try:
            async for event in events.subscribe(settings, job_id):
                if await request.is_disconnected():
                    return
                if not event:
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(event)
                if event.get("status") in ("completed", "failed", "cancelled"):
                    return
        except events.EventsUnavailable:  # Redis is down: the job row still tells the story
            async for chunk in from_rows():
                yield chunk

    stream = from_pubsub() if settings.redis_url else from_rows()
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
