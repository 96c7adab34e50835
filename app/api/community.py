"""``/api/v1`` community routes: comments and ratings of styles (rules in
:mod:`app.services.community_service`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.conformance import error_responses
from app.dependencies import CurrentUser, OptionalUser, SessionDep
from app.schemas.common import Page, Text
from app.schemas.community import CommentIn, CommentOut, RatingIn, RatingOut
from app.services import community_service

router = APIRouter(tags=["community"])


@router.get("/styles/{style_id}/comments", response_model=Page[CommentOut])
async def list_comments(
    style_id: uuid.UUID,
    session: SessionDep,
    user: OptionalUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Text | None = None,
) -> Page[CommentOut]:
    """(public) The comments of a public or unlisted style (or of the caller's own), oldest
    first. Bodies are plain text, returned verbatim: display them as text, never as HTML."""
    items, next_cursor = await community_service.list_comments(
        session, style_id, user, limit=limit, cursor=cursor
    )
    return Page[CommentOut](items=items, next_cursor=next_cursor)


@router.post(
    "/styles/{style_id}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentOut,
)
async def create_comment(
    style_id: uuid.UUID, data: CommentIn, session: SessionDep, user: CurrentUser
) -> CommentOut:
    """Comment on a public or unlisted style (or on one's own). Another user's private style
    is a 404."""
    return await community_service.create_comment(session, style_id, user, data.body)


@router.patch("/comments/{comment_id}", response_model=CommentOut, responses=error_responses(403))
async def update_comment(
    comment_id: uuid.UUID, data: CommentIn, session: SessionDep, user: CurrentUser
) -> CommentOut:
    """Edit a comment (its author only: 403 otherwise); sets ``edited_at``."""
    return await community_service.update_comment(session, comment_id, user, data.body)


@router.delete(
    "/comments/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403),
)
async def delete_comment(comment_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    """Delete a comment (its author or the style's owner: 403 otherwise)."""
    await community_service.delete_comment(session, comment_id, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/styles/{style_id}/rating", response_model=RatingOut)
async def get_rating(style_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RatingOut:
    """The style's rating summary and the caller's own score (null if they have none)."""
    return await community_service.get_rating(session, style_id, user)


@router.put("/styles/{style_id}/rating", response_model=RatingOut, responses=error_responses(403))
async def put_rating(
    style_id: uuid.UUID, data: RatingIn, session: SessionDep, user: CurrentUser
) -> RatingOut:
    """Rate a public or unlisted style 1..5; PUT again replaces the caller's rating (one per
    user and style). Owners cannot rate their own style (403).

    ``rating_avg`` is the plain mean. The gallery's ``sort=top_rated`` uses a Bayesian average
    instead, ``(C*m + sum) / (C + n)`` with prior mean m = 3.0 and weight C = 5, so that one
    5-star vote does not outrank a hundred 4.8s.
    """
    return await community_service.put_rating(session, style_id, user, data.score)


@router.delete("/styles/{style_id}/rating", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rating(style_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    """Withdraw the caller's rating (204 also when there was none)."""
    await community_service.delete_rating(session, style_id, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
