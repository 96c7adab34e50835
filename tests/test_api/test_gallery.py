"""``GET /api/v1/styles``: who sees what, sorts, keyset pagination, search, filters, and a
constant number of SQL statements per page.

The test database is shared by the whole run, so each test isolates its styles with a unique
tag (or a fresh user) instead of assuming an empty gallery.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from app.models import Style, User
from tests.conftest import BACKEND, Account, create_user
from tests.test_api.test_community import create_style, rate

pg_only = pytest.mark.skipif(
    BACKEND != "postgres", reason="PostgreSQL query plans (the SQLite run has no GIN indexes)"
)


def new_tag() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def gallery(
    client: httpx.AsyncClient, account: Account | None = None, **params: Any
) -> dict[str, Any]:
    headers = account.headers if account else {}
    r = await client.get("/api/v1/styles", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def all_pages(
    client: httpx.AsyncClient, account: Account | None = None, **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = await gallery(client, account, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not end")


async def set_columns(app: Any, style_id: str, **values: Any) -> None:
    async with app.state.db.sessionmaker() as session:
        await session.execute(update(Style).where(Style.id == uuid.UUID(style_id)).values(**values))
        await session.commit()


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for s in items]


# ---- who sees what --------------------------------------------------------------------------
async def test_visibility_rules(client, user: Account, other_user: Account) -> None:
    tag = new_tag()
    public = await create_style(client, user, visibility="public", tags=[tag])
    unlisted = await create_style(client, user, visibility="unlisted", tags=[tag])
    private = await create_style(client, user, visibility="private", tags=[tag])
    theirs_public = await create_style(client, other_user, visibility="public", tags=[tag])
    theirs_unlisted = await create_style(client, other_user, visibility="unlisted", tags=[tag])

    anonymous = await gallery(client, tag=tag)
    assert set(ids(anonymous["items"])) == {public["id"], theirs_public["id"]}
    mine = await gallery(client, user, tag=tag)
    assert set(ids(mine["items"])) == {
        public["id"],
        unlisted["id"],
        private["id"],
        theirs_public["id"],
    }
    assert theirs_unlisted["id"] not in ids(mine["items"])
    only_mine = await gallery(client, user, tag=tag, owner="me")
    assert set(ids(only_mine["items"])) == {public["id"], unlisted["id"], private["id"]}

    r = await client.get("/api/v1/styles", params={"owner": "me"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_authenticated"


async def test_items_carry_owner_preview_and_counters(
    client, app, user: Account, other_user: Account
) -> None:
    tag = new_tag()
    style = await create_style(client, user, tags=[tag], description="with a preview")
    key = f"styles/{style['id']}/v1/preview.webp"
    await set_columns(app, style["id"], preview_key=key, apply_count=7)
    assert (await rate(client, other_user, style["id"], 4)).status_code == 200
    r = await client.post(
        f"/api/v1/styles/{style['id']}/comments", json={"body": "nice"}, headers=other_user.headers
    )
    assert r.status_code == 201

    [item] = (await gallery(client, tag=tag))["items"]
    assert item["owner"] == {"id": user.id, "username": user.username}
    assert item["preview_url"]
    assert "preview.webp" in item["preview_url"]
    assert (item["rating_avg"], item["rating_count"]) == (4.0, 1)
    assert (item["comment_count"], item["apply_count"]) == (1, 7)
    # the same representation as GET /styles/{id}
    single = (await client.get(f"/api/v1/styles/{style['id']}")).json()
    assert {k: v for k, v in item.items() if k != "preview_url"} == {
        k: v for k, v in single.items() if k != "preview_url"
    }


# ---- sorts and pagination -------------------------------------------------------------------
async def test_newest_first_with_keyset_pagination(
    client, user: Account, other_user: Account
) -> None:
    tag = new_tag()
    created = []
    for i in range(7):
        owner = user if i % 2 else other_user
        created.append(await create_style(client, owner, tags=[tag], visibility="public"))
    # the caller's private styles interleave with the public ones of others
    created.append(await create_style(client, user, tags=[tag], visibility="private"))
    created.append(await create_style(client, other_user, tags=[tag], visibility="public"))
    expected = [s["id"] for s in reversed(created)]

    page = await gallery(client, user, tag=tag, limit=3)
    assert len(page["items"]) == 3
    assert page["next_cursor"]
    assert ids(await all_pages(client, user, tag=tag, limit=3)) == expected
    assert ids(await all_pages(client, user, tag=tag, limit=4, sort="newest")) == expected
    anonymous = [s for s in expected if s != created[7]["id"]]
    assert ids(await all_pages(client, tag=tag, limit=2)) == anonymous
    # a page that ends exactly at the last row has no next cursor
    assert (await gallery(client, tag=tag, limit=len(anonymous)))["next_cursor"] is None


async def test_most_used_sort_breaks_ties_by_id(client, app, user: Account) -> None:
    tag = new_tag()
    styles = [await create_style(client, user, tags=[tag]) for _ in range(6)]
    counts = [5, 0, 5, 12, 0, 5]
    for style, n in zip(styles, counts, strict=True):
        await set_columns(app, style["id"], apply_count=n)
    got = await all_pages(client, tag=tag, sort="most_used", limit=2)
    expected = sorted(
        zip(counts, (s["id"] for s in styles), strict=True), key=lambda p: (p[0], uuid.UUID(p[1]))
    )
    assert ids(got) == [sid for _, sid in reversed(expected)]
    assert [s["apply_count"] for s in got] == sorted(counts, reverse=True)


async def test_top_rated_is_a_bayesian_average(client, user: Account) -> None:
    tag = new_tag()
    voters = [await create_user(client) for _ in range(5)]
    one_five = await create_style(client, user, tags=[tag], name="one five-star vote")
    many_good = await create_style(client, user, tags=[tag], name="five votes averaging 4.8")
    one_bad = await create_style(client, user, tags=[tag], name="one two-star vote")
    unrated = await create_style(client, user, tags=[tag], name="unrated")
    assert (await rate(client, voters[0], one_five["id"], 5)).status_code == 200
    for voter, score in zip(voters, [5, 5, 5, 5, 4], strict=True):
        assert (await rate(client, voter, many_good["id"], score)).status_code == 200
    assert (await rate(client, voters[1], one_bad["id"], 2)).status_code == 200

    got = await all_pages(client, tag=tag, sort="top_rated", limit=2)
    # (5*3 + 24) / 10 = 3.9 > (5*3 + 5) / 6 = 3.33 > (5*3 + 2) / 6 = 2.83 > unrated (0)
    assert ids(got) == [many_good["id"], one_five["id"], one_bad["id"], unrated["id"]]
    assert [s["rating_avg"] for s in got] == [4.8, 5.0, 2.0, None]

    # moving a vote moves the style
    for voter in voters[1:4]:
        assert (await rate(client, voter, one_bad["id"], 5)).status_code == 200
    got = await all_pages(client, tag=tag, sort="top_rated", limit=3)
    assert ids(got)[0] == many_good["id"]
    assert ids(got)[1] == one_bad["id"]  # (15 + 2 + 15) / 9 = 3.56


async def test_cursor_is_checked(client, user: Account) -> None:
    tag = new_tag()
    for _ in range(3):
        await create_style(client, user, tags=[tag])
    cursor = (await gallery(client, tag=tag, limit=1))["next_cursor"]
    r = await client.get(
        "/api/v1/styles", params={"tag": tag, "cursor": cursor, "sort": "top_rated"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_cursor"
    for bad in ("%%%", "WyJ4Il0", "WyJuZXdlc3QiLCJ4IiwieSJd"):  # junk, ["x"], ["newest","x","y"]
        r = await client.get("/api/v1/styles", params={"tag": tag, "cursor": bad})
        assert r.status_code == 400, bad
    for params in ({"sort": "oldest"}, {"limit": 0}, {"limit": 101}, {"model": "nope"}):
        r = await client.get("/api/v1/styles", params=params)
        assert r.status_code == 422, params


# ---- search and filters ---------------------------------------------------------------------
async def test_search_by_tag_description_and_name(
    client, user: Account, other_user: Account
) -> None:
    marker = uuid.uuid4().hex[:8]
    word = f"zq{marker}"  # a word that nothing else in the database contains
    by_tag = await create_style(client, user, tags=[f"{word}tag", "film"], name=f"A {marker}")
    by_description = await create_style(
        client,
        other_user,
        name=f"B {marker}",
        description=f"Warm tones for golden {word}desc evenings by the sea.",
    )
    by_name = await create_style(client, user, name=f"The {word}name look")
    hidden = await create_style(
        client, other_user, visibility="unlisted", description=f"{word}desc too"
    )

    assert ids((await gallery(client, q=f"{word}tag"))["items"]) == [by_tag["id"]]
    assert ids((await gallery(client, q=f"{word}desc"))["items"]) == [by_description["id"]]
    assert ids((await gallery(client, q=f"{word}NAME"))["items"]) == [by_name["id"]]
    assert hidden["id"] not in ids((await gallery(client, q=f"{word}desc"))["items"])
    # every word must match
    both = (await gallery(client, q=f"{word}desc golden"))["items"]
    assert ids(both) == [by_description["id"]]
    assert (await gallery(client, q=f"{word}desc {word}tag"))["items"] == []
    assert (await gallery(client, q=f"nothing{marker}"))["items"] == []
    # search combines with the tag filter and the sorts
    got = await gallery(client, q=marker, sort="top_rated")
    assert set(ids(got["items"])) >= {by_tag["id"], by_description["id"]}
    assert ids((await gallery(client, q=marker, tag="film"))["items"]) == [by_tag["id"]]
    # special characters are just text
    for q in ("%", "_", "'", "\\", '"unbalanced', "a & | ! b", "-"):
        r = await client.get("/api/v1/styles", params={"q": q, "limit": 1})
        assert r.status_code == 200, (q, r.text)


async def test_tag_filter_is_exact_and_case_insensitive(client, user: Account) -> None:
    tag = new_tag()
    tagged = await create_style(client, user, tags=[tag, "portrait"])
    await create_style(client, user, tags=[tag + "x"])  # a longer tag is another tag
    assert ids((await gallery(client, tag=tag))["items"]) == [tagged["id"]]
    assert ids((await gallery(client, tag=tag.upper()))["items"]) == [tagged["id"]]


async def test_model_filter(client, app, user: Account) -> None:
    tag = new_tag()
    dlut = await create_style(client, user, tags=[tag])
    nilut = await create_style(client, user, tags=[tag])
    await create_style(client, user, tags=[tag])  # a draft: no model yet
    await set_columns(app, dlut["id"], model="dlut")
    await set_columns(app, nilut["id"], model="nilut")
    assert ids((await gallery(client, tag=tag, model="dlut"))["items"]) == [dlut["id"]]
    assert ids((await gallery(client, tag=tag, model="nilut"))["items"]) == [nilut["id"]]
    assert (await gallery(client, tag=tag, model="imported"))["items"] == []


# ---- no N+1 ---------------------------------------------------------------------------------
@contextmanager
def count_statements(app: Any) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def test_page_size_does_not_change_the_number_of_queries(client, app) -> None:
    owners = [await create_user(client) for _ in range(4)]
    tag = new_tag()
    for i in range(24):
        style = await create_style(
            client, owners[i % 4], tags=[tag], visibility="private" if i % 5 == 0 else "public"
        )
        await set_columns(app, style["id"], preview_key=f"styles/{style['id']}/v1/preview.webp")
    caller = owners[0]
    counts = {}
    for limit in (5, 20):
        for sort in ("newest", "top_rated", "most_used"):
            with count_statements(app) as statements:
                page = await gallery(client, caller, tag=tag, limit=limit, sort=sort)
            assert len(page["items"]) == limit
            assert all(item["preview_url"] for item in page["items"])
            assert len({item["owner"]["username"] for item in page["items"]}) > 1
            counts[limit, sort] = len(statements)
    assert len(set(counts.values())) == 1, counts
    # the token's user, then the page (plus transaction statements such as BEGIN)
    assert counts[20, "newest"] <= 3, counts

    with count_statements(app) as statements:
        page = await gallery(client, tag=tag, limit=20, q=tag)
    assert len(page["items"]) == 19  # anonymous: the 19 public ones (search finds the tag)
    assert len(statements) <= 2, statements


# ---- PostgreSQL plans -----------------------------------------------------------------------
class Explain(Executable, ClauseElement):
    """``EXPLAIN <statement>`` with the statement's bind parameters (and their types)."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain)
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


async def explain(app: Any, stmt: Any) -> str:
    async with app.state.db.sessionmaker() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        rows = (await session.execute(Explain(stmt))).scalars().all()
        await session.rollback()
    return "\n".join(rows)


@pg_only
async def test_search_and_tag_filter_match_the_gin_indexes(app) -> None:
    # An expression index serves only an identical expression: the gallery's clauses alone
    # (on a table this small the planner would otherwise prefer the sort index).
    from app.services.gallery_service import search_clause, tag_clause

    search = select(Style.id).where(search_clause("postgresql")).params(q="golden hour")
    plan = await explain(app, search)
    assert "ix_styles_search" in plan, plan
    plan = await explain(app, select(Style.id).where(tag_clause("postgresql")).params(tag=["film"]))
    assert "ix_styles_tags" in plan, plan


@pg_only
@pytest.mark.parametrize(
    ("sort", "index", "key"),
    [
        ("newest", "ix_styles_visibility_created", "2026-01-01T00:00:00+00:00"),
        ("top_rated", "ix_styles_visibility_rating", "3.5"),
        ("most_used", "ix_styles_visibility_apply_count", "12"),
    ],
)
async def test_sorts_scan_their_index(app, sort: str, index: str, key: str) -> None:
    from app.services.gallery_service import build_query
    from app.services.pagination import encode_cursor

    plan = await explain(app, build_query("postgresql", None, sort=sort, limit=20))
    assert f"Index Scan Backward using {index}" in plan, plan
    assert "Sort" not in plan.split("Index Scan")[0], plan
    # a later page starts inside the index (row-value comparison in the index condition)
    cursor = encode_cursor([sort, key, uuid.uuid4()])
    plan = await explain(app, build_query("postgresql", None, sort=sort, limit=20, cursor=cursor))
    assert f"Index Scan Backward using {index}" in plan, plan
    assert "ROW(" in plan.split("Filter")[0], plan


@pg_only
async def test_signed_in_pages_merge_two_index_scans(app) -> None:
    from app.services.gallery_service import build_query

    caller = User(id=uuid.uuid4(), username="caller")
    plan = await explain(app, build_query("postgresql", caller, sort="newest", limit=20))
    assert "Index Only Scan Backward using ix_styles_visibility_created" in plan, plan
    assert "ix_styles_owner_created" in plan, plan


# ---- preview URLs ---------------------------------------------------------------------------
async def test_preview_urls_are_reused_across_pages(client, app, user: Account) -> None:
    tag = new_tag()
    style = await create_style(client, user, tags=[tag])
    await set_columns(app, style["id"], preview_key=f"styles/{style['id']}/v1/preview.webp")
    first = (await gallery(client, tag=tag))["items"][0]["preview_url"]
    second = (await gallery(client, user, tag=tag))["items"][0]["preview_url"]
    assert first == second  # one presigned URL per preview while it is fresh: cacheable image
    # and it is a working URL of the real storage
    if BACKEND == "embedded":
        r = await client.get(first)
        assert r.status_code in (200, 404), r.text  # signature accepted (no object stored)


def test_preview_url_cache_is_bounded(app) -> None:
    from app.services.gallery_service import PreviewUrlCache

    storage = app.state.storage
    cache = PreviewUrlCache(storage, max_entries=3)
    keys = [f"styles/{uuid.uuid4()}/v1/preview.webp" for _ in range(7)]
    urls = [cache.presign_get(key) for key in keys]
    assert all(key in url for key, url in zip(keys, urls, strict=True))
    assert len(cache._urls) <= 3
    assert cache.presign_get(keys[-1]) == urls[-1]
