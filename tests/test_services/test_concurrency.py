"""Counters stay exact when many requests change the same style at once.

The requests go through the real API (the ASGI app in this process, its engine's pool of
10 + 20 connections on PostgreSQL), fired together with ``asyncio.gather``. On SQLite the same
tests run too: there, writers are serialized by the database's single write lock.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from app.models import Comment
from tests.conftest import Account, create_user
from tests.test_api.test_community import (
    assert_counters_match_rows,
    create_style,
    get_style,
    post_comment,
    rate,
)


async def test_fifty_users_rate_the_same_style_at_once(client, app, user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    raters = await asyncio.gather(*(create_user(client) for _ in range(50)))
    scores = [1 + (i * 7) % 5 for i in range(50)]

    responses = await asyncio.gather(
        *(rate(client, rater, sid, score) for rater, score in zip(raters, scores, strict=True))
    )
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses][:3]
    assert sorted(r.json()["rating_count"] for r in responses) == list(range(1, 51))

    style = await get_style(client, sid, user)
    assert style["rating_count"] == 50
    assert style["rating_avg"] == round(sum(scores) / 50, 2)
    row = await assert_counters_match_rows(app, sid)
    assert row.rating_sum == sum(scores)

    # and again, everyone changing or withdrawing their vote at once
    changed = [(s % 5) + 1 for s in scores]
    ops = [
        rate(client, rater, sid, score)
        if i % 3
        else client.delete(f"/api/v1/styles/{sid}/rating", headers=rater.headers)
        for i, (rater, score) in enumerate(zip(raters, changed, strict=True))
    ]
    responses = await asyncio.gather(*ops)
    assert all(r.status_code in (200, 204) for r in responses), [r.text for r in responses][:3]
    kept = [score for i, score in enumerate(changed) if i % 3]
    row = await assert_counters_match_rows(app, sid)
    assert (row.rating_count, row.rating_sum) == (len(kept), sum(kept))


async def test_one_user_racing_with_themselves(client, app, user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    rater = await create_user(client)
    for _ in range(3):
        responses = await asyncio.gather(
            *(rate(client, rater, sid, score) for score in (1, 5, 3, 4, 2, 5, 1, 3))
        )
        assert all(r.status_code == 200 for r in responses)
        row = await assert_counters_match_rows(app, sid)
        assert row.rating_count == 1
        responses = await asyncio.gather(
            *(
                client.delete(f"/api/v1/styles/{sid}/rating", headers=rater.headers)
                for _ in range(4)
            )
        )
        assert all(r.status_code == 204 for r in responses)
        row = await assert_counters_match_rows(app, sid)
        assert (row.rating_count, row.rating_sum) == (0, 0)


async def test_twenty_parallel_comments(client, app, user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    authors = await asyncio.gather(*(create_user(client) for _ in range(5)))
    responses = await asyncio.gather(
        *(post_comment(client, authors[i % 5], sid, f"comment {i}") for i in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses][:3]
    assert (await get_style(client, sid, user))["comment_count"] == 20
    async with app.state.db.sessionmaker() as session:
        rows = await session.scalar(
            select(func.count()).select_from(Comment).where(Comment.style_id == uuid.UUID(sid))
        )
    assert rows == 20
    r = await client.get(f"/api/v1/styles/{sid}/comments", params={"limit": 100})
    assert len(r.json()["items"]) == 20

    # everyone deletes at once, some twice: each comment is counted down exactly once
    deletes = [
        client.delete(f"/api/v1/comments/{resp.json()['id']}", headers=user.headers)
        for resp in responses[:10]
        for _ in range(2)
    ]
    results = await asyncio.gather(*deletes)
    assert sorted(r.status_code for r in results) == [204] * 10 + [404] * 10
    row = await assert_counters_match_rows(app, sid)
    assert row.comment_count == 10
