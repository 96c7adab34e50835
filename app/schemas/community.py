"""Community payloads: comments and ratings.

Comment bodies are plain text: trimmed at both ends, 1..2000 characters, stored and returned
verbatim (a JSON string; nothing is rendered as HTML or escaped by the API: clients display it
as text). NUL characters are refused (:data:`app.schemas.common.Text`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.auth import UserPublic
from app.schemas.common import Text

COMMENT_MAX_LENGTH = 2000


CommentBody = Annotated[
    Text,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=COMMENT_MAX_LENGTH),
    Field(
        description="Plain text, 1..2000 characters after trimming; returned verbatim.",
        examples=["Lovely warm tones, works great on my sunset shots."],
    ),
]


class CommentIn(BaseModel):
    body: CommentBody


class CommentOut(BaseModel):
    id: uuid.UUID
    style_id: uuid.UUID
    author: UserPublic
    body: str
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None = Field(description="when the author last edited it; null if never")


class RatingIn(BaseModel):
    score: int = Field(ge=1, le=5, description="1 (worst) to 5 (best)")


class RatingOut(BaseModel):
    rating_avg: float | None = Field(
        description="plain mean of the style's ratings, 2 decimals; null when unrated"
    )
    rating_count: int
    my_score: int | None = Field(description="the caller's score; null when they have none")
