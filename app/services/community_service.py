"""Comments and ratings, and the style counters they keep (``comment_count``, ``rating_sum``,
``rating_count``, ``rating_score``).

Rules (API.md, Community): anyone may read the comments of a public or unlisted style; signed-in
users comment on and rate them; another user's private style is a 404 for all of it. Only the
author edits a comment; the author or the style's owner deletes it. Owners cannot rate their own
style (403). One rating per user and style (unique ``(style_id, user_id)``); PUT replaces it.

Counters are exact under concurrency. They are never recomputed from a read; each change applies
a delta with one atomic ``UPDATE styles SET x = x + :delta`` in the transaction that inserts or
deletes the row, and the delta comes from what the row statement really did:

* comments: the INSERT; ``DELETE ... RETURNING`` (a concurrent second delete returns nothing and
  changes nothing).
* ratings: the style row is locked first (PostgreSQL ``SELECT ... FOR NO KEY UPDATE``; SQLite
  takes its single write lock with a no-op UPDATE), so the rating changes of one style are
  serialized: they queue on that row anyway, for their counter UPDATE. Then one upsert
  (PostgreSQL: ``INSERT ... ON CONFLICT (style_id, user_id) DO UPDATE ... RETURNING
  (xmax = 0) AS inserted`` with the previous score from a CTE read in the same statement; SQLite:
  the previous score, then ``INSERT ... ON CONFLICT DO UPDATE``) gives ``inserted`` and the old
  score, hence the deltas. ``FOR NO KEY UPDATE`` does not block the ``FOR KEY SHARE`` lock that
  comment inserts take on the style for their foreign key.

``rating_score`` is the Bayesian average that ``sort=top_rated`` uses (see
:mod:`app.services.gallery_service`)::

    rating_score = (C * m + rating_sum) / (C + rating_count)    if rating_count > 0, else 0

with the prior mean ``m = 3.0`` and weight ``C = 5``, computed in the same UPDATE from the new
counters. Deleting a user cascades their comments and ratings in the database;
:func:`before_user_delete` deletes them first, correcting the counters of the styles they were
on. Deleting a style takes its comments and ratings (and its counters) with it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    bindparam,
    case,
    delete,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BadRequest, Forbidden, NotFound
from app.models import Comment, Rating, Style, User, Visibility
from app.models.base import utcnow
from app.schemas.auth import UserPublic
from app.schemas.community import CommentOut, RatingOut
from app.services.pagination import decode_cursor, encode_cursor, parse_datetime
from app.services.style_rules import rating_average
from app.services.style_service import get_visible_style, style_not_found

PRIOR_MEAN = 3.0  # m: the score an unknown style is assumed to have
PRIOR_WEIGHT = 5  # C: how many votes the prior is worth


def bayesian_score(rating_sum: int, rating_count: int) -> float:
    """``(C*m + sum) / (C + n)``, 0 for an unrated style (the same formula as the SQL)."""
    if rating_count <= 0:
        return 0.0
    return (PRIOR_WEIGHT * PRIOR_MEAN + rating_sum) / (PRIOR_WEIGHT + rating_count)


def _counter_values(delta_sum: Any, delta_count: Any) -> dict[str, Any]:
    """SET clauses applying rating deltas (plain values or bind parameters) to a style row.

    Every right-hand side reads the row as it was before the UPDATE, on both databases.
    """
    new_sum = Style.rating_sum + delta_sum
    new_count = Style.rating_count + delta_count
    return {
        "rating_sum": new_sum,
        "rating_count": new_count,
        "rating_score": case(
            (
                new_count > 0,
                (literal(PRIOR_WEIGHT * PRIOR_MEAN, Float()) + new_sum)
                / (literal(float(PRIOR_WEIGHT), Float()) + new_count),
            ),
            else_=literal(0.0, Float()),
        ),
        # Counters are not an edit of the style: keep updated_at (its onupdate would bump it).
        "updated_at": Style.updated_at,
    }


# ---- comments -------------------------------------------------------------------------------
def comment_not_found() -> NotFound:
    return NotFound("Comment not found", code="comment_not_found")


def _comment_out(comment: Comment, author: User) -> CommentOut:
    return CommentOut(
        id=comment.id,
        style_id=comment.style_id,
        author=UserPublic(id=author.id, username=author.username),
        body=comment.body,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
        edited_at=comment.edited_at,
    )


async def list_comments(
    session: AsyncSession,
    style_id: uuid.UUID,
    user: User | None,
    *,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[CommentOut], str | None]:
    """A visible style's comments, oldest first, with their authors (two statements a page)."""
    await get_visible_style(session, style_id, user)
    stmt = (
        select(Comment, User)
        .join(User, User.id == Comment.author_id)
        .where(Comment.style_id == style_id)
    )
    if cursor:
        raw_created, raw_id = decode_cursor(cursor, 2)
        try:
            last_id = uuid.UUID(str(raw_id))
        except ValueError as exc:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from exc
        last = tuple_(
            bindparam(None, parse_datetime(raw_created), type_=Comment.created_at.type),
            bindparam(None, last_id, type_=Comment.id.type),
        )
        stmt = stmt.where(tuple_(Comment.created_at, Comment.id) > last)
    stmt = stmt.order_by(Comment.created_at, Comment.id).limit(limit + 1)
    rows: Sequence[Any] = (await session.execute(stmt)).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last_comment = rows[-1][0]
        next_cursor = encode_cursor([last_comment.created_at, last_comment.id])
    return [_comment_out(comment, author) for comment, author in rows], next_cursor


async def create_comment(
    session: AsyncSession, style_id: uuid.UUID, user: User, body: str
) -> CommentOut:
    """Comment on a visible style (the body is already trimmed and validated)."""
    await get_visible_style(session, style_id, user)
    now = utcnow()
    comment = Comment(
        id=uuid.uuid4(),
        style_id=style_id,
        author_id=user.id,
        body=body,
        edited_at=None,
        created_at=now,
        updated_at=now,
    )
    session.add(comment)
    await session.flush()
    await session.execute(
        update(Style)
        .where(Style.id == style_id)
        .values(comment_count=Style.comment_count + 1, updated_at=Style.updated_at)
        .execution_options(synchronize_session=False)
    )
    return _comment_out(comment, user)


async def _load_comment(
    session: AsyncSession, comment_id: uuid.UUID, user: User
) -> tuple[Comment, User, uuid.UUID]:
    """The comment, its author and its style's owner; 404 when the caller cannot see it."""
    stmt = (
        select(Comment, User, Style.owner_id, Style.visibility)
        .join(User, User.id == Comment.author_id)
        .join(Style, Style.id == Comment.style_id)
        .where(Comment.id == comment_id)
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise comment_not_found()
    comment, author, style_owner_id, visibility = row
    if visibility == Visibility.private and style_owner_id != user.id:
        raise comment_not_found()
    return comment, author, style_owner_id


async def update_comment(
    session: AsyncSession, comment_id: uuid.UUID, user: User, body: str
) -> CommentOut:
    """Edit a comment (its author only); ``edited_at`` records when."""
    comment, author, _ = await _load_comment(session, comment_id, user)
    if comment.author_id != user.id:
        raise Forbidden("Only the comment's author can edit it", code="not_comment_author")
    now = utcnow()
    comment.body = body
    comment.edited_at = now
    comment.updated_at = now
    await session.flush()
    return _comment_out(comment, author)


async def delete_comment(session: AsyncSession, comment_id: uuid.UUID, user: User) -> None:
    """Delete a comment (its author or the style's owner) and decrement the style's count."""
    comment, _, style_owner_id = await _load_comment(session, comment_id, user)
    if user.id not in (comment.author_id, style_owner_id):
        raise Forbidden(
            "Only the comment's author or the style's owner can delete it",
            code="not_comment_author",
        )
    deleted = await session.execute(
        delete(Comment)
        .where(Comment.id == comment_id)
        .returning(Comment.style_id)
        .execution_options(synchronize_session=False)
    )
    style_id = deleted.scalar_one_or_none()
    if style_id is None:  # a concurrent delete got there first; it decremented the count
        raise comment_not_found()
    session.expunge(comment)
    await session.execute(
        update(Style)
        .where(Style.id == style_id)
        .values(comment_count=Style.comment_count - 1, updated_at=Style.updated_at)
        .execution_options(synchronize_session=False)
    )


# ---- ratings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Locked:
    owner_id: uuid.UUID
    visibility: Visibility


async def _lock_style_for_rating(session: AsyncSession, style_id: uuid.UUID, user: User) -> _Locked:
    """Lock the style row against other rating changes (see the module docstring); 404 for a
    missing or another user's private style."""
    if session.get_bind().dialect.name == "postgresql":
        stmt: Any = (
            select(Style.owner_id, Style.visibility)
            .where(Style.id == style_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
    else:
        # SQLite: a first write takes the database's single write lock until commit.
        stmt = (
            update(Style)
            .where(Style.id == style_id)
            .values(rating_count=Style.rating_count, updated_at=Style.updated_at)
            .returning(Style.owner_id, Style.visibility)
            .execution_options(synchronize_session=False)
        )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise style_not_found()
    locked = _Locked(owner_id=row[0], visibility=Visibility(row[1]))
    if locked.visibility == Visibility.private and locked.owner_id != user.id:
        raise style_not_found()
    return locked


# ``old`` is a plain read on purpose: it sees the statement's snapshot, i.e. the row before the
# upsert changed it (a ``FOR UPDATE`` there would skip a row that the same statement updated).
# The snapshot is taken after the style row was locked, so no other change of this rating can
# be in flight.
_PG_UPSERT = text(
    """
    WITH old AS (
        SELECT score FROM ratings WHERE style_id = :style_id AND user_id = :user_id
    )
    INSERT INTO ratings (id, style_id, user_id, score, created_at, updated_at)
    VALUES (:id, :style_id, :user_id, :score, :now, :now)
    ON CONFLICT (style_id, user_id) DO UPDATE
        SET score = EXCLUDED.score, updated_at = EXCLUDED.updated_at
    RETURNING (xmax = 0) AS inserted, (SELECT score FROM old) AS old_score
    """
).bindparams(
    bindparam("id", type_=Rating.id.type),
    bindparam("style_id", type_=Rating.style_id.type),
    bindparam("user_id", type_=Rating.user_id.type),
    bindparam("score", type_=Rating.score.type),
    bindparam("now", type_=Rating.created_at.type),
)


async def _upsert_rating(
    session: AsyncSession, style_id: uuid.UUID, user_id: uuid.UUID, score: int
) -> int | None:
    """Insert or replace the rating; the previous score (None when it was inserted)."""
    params = {
        "id": uuid.uuid4(),
        "style_id": style_id,
        "user_id": user_id,
        "score": score,
        "now": utcnow(),
    }
    if session.get_bind().dialect.name == "postgresql":
        inserted, old_score = (await session.execute(_PG_UPSERT, params)).one()
        if inserted != (old_score is None):  # impossible while the style row is locked
            raise RuntimeError(f"rating upsert out of step: {inserted=} {old_score=}")
        return None if inserted else int(old_score)
    old = (
        await session.execute(
            select(Rating.score).where(Rating.style_id == style_id, Rating.user_id == user_id)
        )
    ).scalar_one_or_none()
    stmt = sqlite_insert(Rating).values(
        id=params["id"],
        style_id=style_id,
        user_id=user_id,
        score=score,
        created_at=params["now"],
        updated_at=params["now"],
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Rating.style_id, Rating.user_id],
        set_={"score": stmt.excluded.score, "updated_at": stmt.excluded.updated_at},
    )
    await session.execute(stmt.execution_options(synchronize_session=False))
    return old


async def _apply_rating_delta(
    session: AsyncSession, style_id: uuid.UUID, delta_sum: int, delta_count: int
) -> tuple[int, int]:
    """Apply the deltas atomically; the new ``(rating_sum, rating_count)``."""
    if delta_sum == 0 and delta_count == 0:
        stmt: Any = select(Style.rating_sum, Style.rating_count).where(Style.id == style_id)
    else:
        stmt = (
            update(Style)
            .where(Style.id == style_id)
            .values(**_counter_values(delta_sum, delta_count))
            .returning(Style.rating_sum, Style.rating_count)
            .execution_options(synchronize_session=False)
        )
    total, count = (await session.execute(stmt)).one()
    return int(total), int(count)


async def put_rating(
    session: AsyncSession, style_id: uuid.UUID, user: User, score: int
) -> RatingOut:
    """Rate a visible style 1..5, or replace the caller's rating; not one's own style (403)."""
    locked = await _lock_style_for_rating(session, style_id, user)
    if locked.owner_id == user.id:
        raise Forbidden("You cannot rate your own style", code="own_style")
    old = await _upsert_rating(session, style_id, user.id, score)
    total, count = await _apply_rating_delta(
        session, style_id, score - (old or 0), 1 if old is None else 0
    )
    return RatingOut(rating_avg=rating_average(total, count), rating_count=count, my_score=score)


async def delete_rating(session: AsyncSession, style_id: uuid.UUID, user: User) -> None:
    """Withdraw the caller's rating of a visible style (nothing to do when there is none)."""
    await _lock_style_for_rating(session, style_id, user)
    removed = await session.execute(
        delete(Rating)
        .where(Rating.style_id == style_id, Rating.user_id == user.id)
        .returning(Rating.score)
        .execution_options(synchronize_session=False)
    )
    old = removed.scalar_one_or_none()
    if old is not None:
        await _apply_rating_delta(session, style_id, -int(old), -1)


async def get_rating(session: AsyncSession, style_id: uuid.UUID, user: User) -> RatingOut:
    """A visible style's rating summary and the caller's own score."""
    stmt = select(
        Style.owner_id,
        Style.visibility,
        Style.rating_sum,
        Style.rating_count,
        select(Rating.score)
        .where(Rating.style_id == Style.id, Rating.user_id == user.id)
        .scalar_subquery(),
    ).where(Style.id == style_id)
    row = (await session.execute(stmt)).one_or_none()
    if row is None or (row[1] == Visibility.private and row[0] != user.id):
        raise style_not_found()
    _, _, total, count, mine = row
    return RatingOut(rating_avg=rating_average(total, count), rating_count=count, my_score=mine)


# ---- account deletion -----------------------------------------------------------------------
async def before_user_delete(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete the user's ratings and comments and correct the counters of the styles they
    were on. Call it in the transaction that deletes the user, before the DELETE (whose
    cascade would remove these rows without touching the counters).

    The deltas come from ``DELETE ... RETURNING``, so they match exactly the rows removed.
    """
    ratings = await session.execute(
        delete(Rating)
        .where(Rating.user_id == user_id)
        .returning(Rating.style_id, Rating.score)
        .execution_options(synchronize_session=False)
    )
    sums: Counter[uuid.UUID] = Counter()
    counts: Counter[uuid.UUID] = Counter()
    for style_id, score in ratings.all():
        sums[style_id] += score
        counts[style_id] += 1
    comments = await session.execute(
        delete(Comment)
        .where(Comment.author_id == user_id)
        .returning(Comment.style_id)
        .execution_options(synchronize_session=False)
    )
    comment_counts: Counter[uuid.UUID] = Counter(comments.scalars().all())

    # Sorted, so that two concurrent account deletions lock shared styles in the same order.
    conn = await session.connection()
    if counts:
        stmt = (
            update(Style)
            .where(Style.id == bindparam("b_id"))
            .values(
                **_counter_values(
                    bindparam("b_sum", type_=Style.rating_sum.type),
                    bindparam("b_count", type_=Style.rating_count.type),
                )
            )
        )
        await conn.execute(
            stmt,
            [{"b_id": sid, "b_sum": -sums[sid], "b_count": -counts[sid]} for sid in sorted(counts)],
        )
    if comment_counts:
        stmt = (
            update(Style)
            .where(Style.id == bindparam("b_id"))
            .values(
                comment_count=Style.comment_count + bindparam("b_count"),
                updated_at=Style.updated_at,
            )
        )
        await conn.execute(
            stmt,
            [{"b_id": sid, "b_count": -n} for sid, n in sorted(comment_counts.items())],
        )
