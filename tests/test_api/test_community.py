"""Comments and ratings through the API: the contract of API.md (Community) and issue 6."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from app.models import Comment, Rating, Style, User
from app.services import community_service
from tests import helpers
from tests.conftest import Account, create_user


# ---- helpers (also used by the gallery and concurrency tests) --------------------------------
async def create_style(
    client: httpx.AsyncClient, owner: Account, *, visibility: str = "public", **fields: Any
) -> dict[str, Any]:
    """A style through the API, public unless asked otherwise (rated and commented on)."""
    return await helpers.create_style(client, owner, visibility=visibility, **fields)


async def get_style(client: httpx.AsyncClient, style_id: str, account: Account) -> dict[str, Any]:
    r = await client.get(f"/api/v1/styles/{style_id}", headers=account.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def post_comment(
    client: httpx.AsyncClient, account: Account, style_id: str, body: str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/styles/{style_id}/comments", json={"body": body}, headers=account.headers
    )


async def rate(
    client: httpx.AsyncClient, account: Account, style_id: str, score: Any
) -> httpx.Response:
    return await client.put(
        f"/api/v1/styles/{style_id}/rating", json={"score": score}, headers=account.headers
    )


async def style_row(app: Any, style_id: str) -> Style:
    async with app.state.db.sessionmaker() as session:
        style = await session.get(Style, uuid.UUID(style_id))
        assert style is not None
        return style


async def assert_counters_match_rows(app: Any, style_id: str) -> Style:
    """The denormalised counters equal what the comment and rating rows say."""
    sid = uuid.UUID(style_id)
    async with app.state.db.sessionmaker() as session:
        style = await session.get(Style, sid)
        assert style is not None
        n_comments = await session.scalar(
            select(func.count()).select_from(Comment).where(Comment.style_id == sid)
        )
        n_ratings, total = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Rating.score), 0)).where(
                    Rating.style_id == sid
                )
            )
        ).one()
    assert style.comment_count == n_comments
    assert (style.rating_count, style.rating_sum) == (n_ratings, total)
    assert style.rating_score == pytest.approx(community_service.bayesian_score(total, n_ratings))
    return style


# ---- comments ---------------------------------------------------------------------------------
async def test_comment_lifecycle(client, app, user: Account, other_user: Account) -> None:
    style = await create_style(client, user)
    sid = style["id"]
    raw = '  <script>alert("x")</script> & <b>bold</b>\n second line  '

    r = await post_comment(client, other_user, sid, raw)
    assert r.status_code == 201, r.text
    comment = r.json()
    assert set(comment) == {
        "id",
        "style_id",
        "author",
        "body",
        "created_at",
        "updated_at",
        "edited_at",
    }
    assert comment["style_id"] == sid
    assert comment["author"] == {"id": other_user.id, "username": other_user.username}
    assert comment["body"] == raw.strip()  # trimmed, otherwise verbatim: no escaping, no HTML
    assert comment["edited_at"] is None
    assert (await get_style(client, sid, user))["comment_count"] == 1

    # public read, no token
    r = await client.get(f"/api/v1/styles/{sid}/comments")
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [comment], "next_cursor": None}

    # only the author edits
    r = await client.patch(
        f"/api/v1/comments/{comment['id']}", json={"body": "edited"}, headers=user.headers
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "not_comment_author"
    r = await client.patch(
        f"/api/v1/comments/{comment['id']}", json={"body": " edited "}, headers=other_user.headers
    )
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["body"] == "edited"
    assert edited["edited_at"] is not None
    assert edited["created_at"] == comment["created_at"]
    assert edited["updated_at"] >= comment["updated_at"]

    # a third user may neither edit nor delete
    third = await create_user(client)
    r = await client.delete(f"/api/v1/comments/{comment['id']}", headers=third.headers)
    assert r.status_code == 403
    # the style's owner may delete
    r = await client.delete(f"/api/v1/comments/{comment['id']}", headers=user.headers)
    assert r.status_code == 204
    assert r.content == b""
    r = await client.delete(f"/api/v1/comments/{comment['id']}", headers=user.headers)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "comment_not_found"
    assert (await get_style(client, sid, user))["comment_count"] == 0
    await assert_counters_match_rows(app, sid)


async def test_author_deletes_own_comment(client, app, user: Account, other_user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    first = (await post_comment(client, other_user, sid, "one")).json()
    await post_comment(client, other_user, sid, "two")
    r = await client.delete(f"/api/v1/comments/{first['id']}", headers=other_user.headers)
    assert r.status_code == 204
    r = await client.get(f"/api/v1/styles/{sid}/comments")
    assert [c["body"] for c in r.json()["items"]] == ["two"]
    assert (await assert_counters_match_rows(app, sid)).comment_count == 1


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ("", False),
        ("   \n\t ", False),
        ("x" * 2001, False),
        ("  " + "x" * 2000 + "\n", True),  # 2000 after trimming
        ("é" * 2000, True),  # characters, not bytes
        ("bad\x00byte", False),
        (None, False),
        (123, False),
    ],
)
async def test_comment_body_rules(client, user: Account, body: Any, ok: bool) -> None:
    sid = (await create_style(client, user))["id"]
    r = await client.post(
        f"/api/v1/styles/{sid}/comments", json={"body": body}, headers=user.headers
    )
    if ok:
        assert r.status_code == 201, r.text
        assert r.json()["body"] == body.strip()
    else:
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"


async def test_comment_edit_is_validated(client, user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    cid = (await post_comment(client, user, sid, "fine")).json()["id"]
    for bad in ("  ", "y" * 2001):
        r = await client.patch(f"/api/v1/comments/{cid}", json={"body": bad}, headers=user.headers)
        assert r.status_code == 422


async def test_comment_auth_and_missing(client, user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    r = await client.post(f"/api/v1/styles/{sid}/comments", json={"body": "hi"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_authenticated"
    missing = uuid.uuid4()
    r = await post_comment(client, user, str(missing), "hi")
    assert r.status_code == 404
    r = await client.get(f"/api/v1/styles/{missing}/comments")
    assert r.status_code == 404
    for method in ("PATCH", "DELETE"):
        r = await client.request(
            method, f"/api/v1/comments/{missing}", json={"body": "x"}, headers=user.headers
        )
        assert r.status_code == 404, method
    r = await client.get("/api/v1/styles/not-a-uuid/comments")
    assert r.status_code == 422


async def test_private_style_comments_are_404(client, user: Account, other_user: Account) -> None:
    sid = (await create_style(client, user, visibility="private"))["id"]
    # the owner comments on their own private style
    r = await post_comment(client, user, sid, "note to self")
    assert r.status_code == 201
    cid = r.json()["id"]
    r = await client.get(f"/api/v1/styles/{sid}/comments", headers=user.headers)
    assert len(r.json()["items"]) == 1
    # everyone else: as if it did not exist
    for headers in ({}, other_user.headers):
        r = await client.get(f"/api/v1/styles/{sid}/comments", headers=headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "style_not_found"
    assert (await post_comment(client, other_user, sid, "hi")).status_code == 404
    r = await client.patch(
        f"/api/v1/comments/{cid}", json={"body": "x"}, headers=other_user.headers
    )
    assert r.status_code == 404
    r = await client.delete(f"/api/v1/comments/{cid}", headers=other_user.headers)
    assert r.status_code == 404


async def test_unlisted_style_is_open_to_comments(
    client, user: Account, other_user: Account
) -> None:
    sid = (await create_style(client, user, visibility="unlisted"))["id"]
    assert (await post_comment(client, other_user, sid, "found it")).status_code == 201
    r = await client.get(f"/api/v1/styles/{sid}/comments")
    assert r.status_code == 200
    assert [c["body"] for c in r.json()["items"]] == ["found it"]


async def test_style_turned_private_hides_comments(
    client, user: Account, other_user: Account
) -> None:
    sid = (await create_style(client, user))["id"]
    cid = (await post_comment(client, other_user, sid, "mine")).json()["id"]
    r = await client.patch(
        f"/api/v1/styles/{sid}", json={"visibility": "private"}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    r = await client.patch(
        f"/api/v1/comments/{cid}", json={"body": "x"}, headers=other_user.headers
    )
    assert r.status_code == 404
    r = await client.get(f"/api/v1/styles/{sid}/comments", headers=other_user.headers)
    assert r.status_code == 404
    # the owner still moderates
    r = await client.delete(f"/api/v1/comments/{cid}", headers=user.headers)
    assert r.status_code == 204


async def test_comments_oldest_first_with_cursor(
    client, user: Account, other_user: Account
) -> None:
    sid = (await create_style(client, user))["id"]
    bodies = [f"comment {i}" for i in range(7)]
    for i, body in enumerate(bodies):
        r = await post_comment(client, user if i % 2 else other_user, sid, body)
        assert r.status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"/api/v1/styles/{sid}/comments", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        seen += [c["body"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == bodies
    assert pages == 3
    r = await client.get(f"/api/v1/styles/{sid}/comments", params={"cursor": "garbage!"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_cursor"
    for limit in (0, 101):
        r = await client.get(f"/api/v1/styles/{sid}/comments", params={"limit": limit})
        assert r.status_code == 422


# ---- ratings ----------------------------------------------------------------------------------
async def test_rating_put_replace_delete(client, app, user: Account, other_user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    third = await create_user(client)

    r = await rate(client, other_user, sid, 4)
    assert r.status_code == 200, r.text
    assert r.json() == {"rating_avg": 4.0, "rating_count": 1, "my_score": 4}
    r = await rate(client, other_user, sid, 2)  # replaces
    assert r.json() == {"rating_avg": 2.0, "rating_count": 1, "my_score": 2}
    r = await rate(client, other_user, sid, 2)  # same again: nothing changes
    assert r.json() == {"rating_avg": 2.0, "rating_count": 1, "my_score": 2}
    r = await rate(client, third, sid, 5)
    assert r.json() == {"rating_avg": 3.5, "rating_count": 2, "my_score": 5}

    style = await get_style(client, sid, user)
    assert (style["rating_avg"], style["rating_count"]) == (3.5, 2)
    r = await client.get(f"/api/v1/styles/{sid}/rating", headers=other_user.headers)
    assert r.json() == {"rating_avg": 3.5, "rating_count": 2, "my_score": 2}
    row = await assert_counters_match_rows(app, sid)
    assert row.rating_score == pytest.approx((5 * 3.0 + 7) / (5 + 2))

    r = await client.delete(f"/api/v1/styles/{sid}/rating", headers=other_user.headers)
    assert r.status_code == 204
    r = await client.delete(f"/api/v1/styles/{sid}/rating", headers=other_user.headers)
    assert r.status_code == 204  # nothing left to withdraw: still fine
    r = await client.get(f"/api/v1/styles/{sid}/rating", headers=other_user.headers)
    assert r.json() == {"rating_avg": 5.0, "rating_count": 1, "my_score": None}
    r = await client.delete(f"/api/v1/styles/{sid}/rating", headers=third.headers)
    assert r.status_code == 204
    style = await get_style(client, sid, user)
    assert (style["rating_avg"], style["rating_count"]) == (None, 0)
    row = await assert_counters_match_rows(app, sid)
    assert row.rating_score == 0.0


async def test_owner_cannot_rate_own_style(client, user: Account) -> None:
    sid = (await create_style(client, user))["id"]
    r = await rate(client, user, sid, 5)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "own_style"
    assert (await get_style(client, sid, user))["rating_count"] == 0


@pytest.mark.parametrize("score", [0, 6, -1, 4.5, "x", None])
async def test_rating_score_range(client, user: Account, other_user: Account, score: Any) -> None:
    sid = (await create_style(client, user))["id"]
    r = await rate(client, other_user, sid, score)
    assert r.status_code == 422, r.text
    r = await client.put(f"/api/v1/styles/{sid}/rating", json={}, headers=other_user.headers)
    assert r.status_code == 422


async def test_rating_visibility_and_auth(client, user: Account, other_user: Account) -> None:
    private = (await create_style(client, user, visibility="private"))["id"]
    unlisted = (await create_style(client, user, visibility="unlisted"))["id"]
    for method in ("PUT", "DELETE", "GET"):
        r = await client.request(
            method,
            f"/api/v1/styles/{private}/rating",
            json={"score": 3},
            headers=other_user.headers,
        )
        assert r.status_code == 404, method
        assert r.json()["error"]["code"] == "style_not_found"
    r = await rate(client, other_user, str(uuid.uuid4()), 3)
    assert r.status_code == 404
    assert (await rate(client, other_user, unlisted, 3)).status_code == 200
    r = await client.put(f"/api/v1/styles/{unlisted}/rating", json={"score": 3})
    assert r.status_code == 401


async def test_deleting_a_style_takes_its_comments_and_ratings(
    client, app, user: Account, other_user: Account
) -> None:
    sid = (await create_style(client, user))["id"]
    cid = (await post_comment(client, other_user, sid, "bye")).json()["id"]
    assert (await rate(client, other_user, sid, 4)).status_code == 200
    r = await client.delete(f"/api/v1/styles/{sid}", headers=user.headers)
    assert r.status_code == 204, r.text
    assert (await client.get(f"/api/v1/styles/{sid}/comments")).status_code == 404
    r = await client.delete(f"/api/v1/comments/{cid}", headers=other_user.headers)
    assert r.status_code == 404
    async with app.state.db.sessionmaker() as session:
        left = await session.scalar(
            select(func.count()).select_from(Rating).where(Rating.style_id == uuid.UUID(sid))
        )
    assert left == 0


async def test_before_user_delete_fixes_counters_of_other_styles(client, app) -> None:
    owner = await create_user(client)
    leaving = await create_user(client)
    staying = await create_user(client)
    s1 = (await create_style(client, owner))["id"]
    s2 = (await create_style(client, owner, visibility="unlisted"))["id"]
    own = (await create_style(client, leaving))["id"]
    assert (await rate(client, leaving, s1, 5)).status_code == 200
    assert (await rate(client, staying, s1, 2)).status_code == 200
    assert (await rate(client, leaving, s2, 1)).status_code == 200
    assert (await rate(client, staying, own, 4)).status_code == 200
    for sid, who in ((s1, leaving), (s1, leaving), (s1, staying), (s2, leaving), (own, staying)):
        assert (await post_comment(client, who, sid, "hello")).status_code == 201

    async with app.state.db.sessionmaker() as session:
        await community_service.before_user_delete(session, uuid.UUID(leaving.id))
        await session.execute(delete(User).where(User.id == uuid.UUID(leaving.id)))
        await session.commit()

    row1 = await assert_counters_match_rows(app, s1)
    assert (row1.rating_count, row1.rating_sum, row1.comment_count) == (1, 2, 1)
    row2 = await assert_counters_match_rows(app, s2)
    assert (row2.rating_count, row2.rating_sum, row2.comment_count) == (0, 0, 0)
    assert row2.rating_score == 0.0
    assert (await get_style(client, s1, owner))["rating_avg"] == 2.0
    # the leaving user's own style went with them (cascade), its counters with it
    assert (await client.get(f"/api/v1/styles/{own}", headers=staying.headers)).status_code == 404


async def test_before_user_delete_without_activity_is_a_no_op(client, app) -> None:
    from sqlalchemy import event

    quiet = await create_user(client)
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.split()[0].upper())

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with app.state.db.sessionmaker() as session:
            await community_service.before_user_delete(session, uuid.UUID(quiet.id))
            await session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # two DELETE ... RETURNING that find nothing, and no counter UPDATE
    assert statements.count("DELETE") == 2
    assert "UPDATE" not in statements


async def test_openapi_documents_the_community_routes(client) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/v1/styles/{style_id}/comments"]) == {"get", "post"}
    assert set(paths["/api/v1/comments/{comment_id}"]) == {"patch", "delete"}
    assert set(paths["/api/v1/styles/{style_id}/rating"]) == {"get", "put", "delete"}
    put = paths["/api/v1/styles/{style_id}/rating"]["put"]
    assert "(C*m + sum) / (C + n)" in put["description"]
