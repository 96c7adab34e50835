from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.models import StyleModelKind, StyleStatus, Visibility
from app.schemas.auth import UserPublic


class StyleOut(BaseModel):
    """A style as every endpoint returns it (lists included)."""

    id: uuid.UUID
    owner: UserPublic
    name: str
    description: str
    tags: list[str]
    visibility: Visibility
    status: StyleStatus
    model: StyleModelKind | None
    preview_url: str | None
    metrics: dict[str, Any] | None
    error: str | None = None
    rating_avg: float | None = Field(description="plain mean of the ratings; null when unrated")
    rating_count: int
    comment_count: int
    apply_count: int
    forked_from: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
