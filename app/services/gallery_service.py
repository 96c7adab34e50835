"""The public gallery: ``GET /api/v1/styles`` (listing, search, filters, sorts, pagination).

Who sees what: without a token, the ``public`` styles; with one, the caller's own styles too
(any visibility). Other users' ``unlisted`` and ``private`` styles are never listed.
``owner=me`` lists only the caller's styles; ``owner=<username>`` that user's public styles.

Sorts and keyset pagination. Every sort has a unique key ending with the id (ties are broken by
id rather than by ``created_at``, so that the key is exactly the tail of an existing index), and
a page is one index range scan whatever its depth:

======================  =============================  ===================================
``sort``                order                          index
======================  =============================  ===================================
``newest`` (default)    ``created_at DESC, id DESC``   ``ix_styles_visibility_created``
``top_rated``           ``rating_score DESC, id DESC`` ``ix_styles_visibility_rating``
``most_used``           ``apply_count DESC, id DESC``  ``ix_styles_visibility_apply_count``
======================  =============================  ===================================

The cursor holds the sort name and the last row's key; the next page continues strictly after it
with a row-value comparison (``(key, id) < (:key, :id)``), which both PostgreSQL and SQLite
evaluate as an index range. A signed-in caller's page merges two such scans (public styles;
the caller's non-public ones) of at most ``limit + 1`` rows each.

``top_rated`` ranks by a Bayesian average kept in ``styles.rating_score`` by
:mod:`app.services.community_service` in the same UPDATE as the rating counters::

    score = (C * m + rating_sum) / (C + rating_count)      m = 3.0 (prior mean), C = 5 (weight)

so one 5-star vote (score 3.33) does not beat a hundred 4.8s (4.71). Unrated styles have score 0
and come last. ``rating_avg`` in the response stays the plain mean.

Search (``q``): on PostgreSQL, full-text search of name, description and tags
(``websearch_to_tsquery('english', q)``: words are stemmed and all must match; "quoted phrases",
``or`` and ``-word`` work) through the GIN expression index ``ix_styles_search`` of migration
0002; the expression below must stay identical to the indexed one (a test checks that the index
serves it). The matches are collected through that index and then sorted (an ``OFFSET 0``
fence): otherwise the planner may walk the sort index and compute ``to_tsvector()`` for every
row it passes, which measured 4-10 ms instead of under 1 ms for two-word queries. On
SQLite, a portable fallback: every word must occur (case-insensitive substring) in the name, the
description or one of the tags. ``tag`` filters on an exact tag: ``tags @> '["x"]'`` (GIN
``ix_styles_tags``) on PostgreSQL, ``EXISTS (... json_each(tags) ...)`` on SQLite.

Owner usernames come from a join in the page query: a page is one SQL statement, whatever its
size (a test counts them).

Preview URLs: presigning one with boto3 costs ~0.3 ms of CPU (measured by ``bench.gallery``),
6 ms for a page of 20, more than the rest of the request. The gallery therefore reuses a preview's
presigned URL while it has at least half of its validity left (:class:`PreviewUrlCache`, per
process): listed URLs stay valid for 150..300 s instead of exactly 300 s (the default), and the
same URL across requests also lets browsers and CDNs cache the image.
"""

from __future__ import annotations

import functools
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import type_coerce

from app.errors import BadRequest, InvalidInput, NotAuthenticated
from app.models import Style, StyleModelKind, User, Visibility
from app.schemas.style import StyleOut
from app.services.pagination import decode_cursor, encode_cursor, parse_datetime
from app.services.style_service import style_out

if TYPE_CHECKING:
    from app.storage import Storage

SORTS = ("newest", "top_rated", "most_used")
# For the OpenAPI description of GET /api/v1/styles.
GALLERY_DESCRIPTION = (
    "(public) Public styles, plus the caller's own (any visibility) when authenticated; other "
    "users' unlisted and private styles are never listed. `q` searches name, description and "
    "tags (all words must match), `tag` is an exact tag, `owner=me` the caller's styles only. "
    "Sorts: `newest` (default), `most_used` (apply_count), `top_rated`: a Bayesian average "
    "`(C*m + sum) / (C + n)` with prior mean m = 3.0 and weight C = 5, so that one 5-star vote "
    "does not outrank a hundred 4.8s (unrated styles last; `rating_avg` stays the plain mean). "
    "Keyset pagination: pass `next_cursor` back as `cursor` with the same sort and filters."
)
MAX_QUERY_LENGTH = 200
MAX_QUERY_WORDS = 10
# Text-search configuration of the search index (migration 0002); inlined, never a bind
# parameter, so that the planner can match the indexed expression.
TS_CONFIG = "english"

_SORT_KEYS: dict[str, Any] = {
    "newest": Style.created_at,
    "top_rated": Style.rating_score,
    "most_used": Style.apply_count,
}


class PreviewUrlCache:
    """Presigned GET URLs of one storage, reused while they have half their validity left."""

    def __init__(self, storage: Storage, max_entries: int = 50_000) -> None:
        self._storage = storage
        self._ttl = float(getattr(storage, "get_expires_in", 300)) / 2
        self._max_entries = max_entries
        self._urls: dict[str, tuple[str, float]] = {}

    def presign_get(
        self, key: str, expires_in: int | None = None, filename: str | None = None
    ) -> str:
        if expires_in is not None or filename is not None:
            return self._storage.presign_get(key, expires_in, filename)
        now = time.monotonic()
        hit = self._urls.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        if len(self._urls) >= self._max_entries:
            self._urls = {k: v for k, v in self._urls.items() if v[1] > now}
            if len(self._urls) >= self._max_entries:
                self._urls.clear()
        url = self._storage.presign_get(key)
        self._urls[key] = (url, now + self._ttl)
        return url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


_caches: weakref.WeakKeyDictionary[Any, PreviewUrlCache] = weakref.WeakKeyDictionary()


def cached_storage(storage: Storage) -> Storage:
    """``storage`` with :meth:`PreviewUrlCache.presign_get` (one cache per storage object)."""
    cache = _caches.get(storage)
    if cache is None:
        cache = _caches[storage] = PreviewUrlCache(storage)
    return cast("Storage", cache)


def search_document() -> ColumnElement[Any]:
    """The tsvector of a style, exactly as indexed by ``ix_styles_search`` (PostgreSQL)::

    to_tsvector('english', name || ' ' || description) || to_tsvector('english', tags)
    """
    config: ColumnElement[Any] = literal_column(f"'{TS_CONFIG}'::regconfig")
    text = Style.name.op("||")(literal_column("' '")).op("||")(Style.description)
    return func.to_tsvector(config, text).op("||")(func.to_tsvector(config, Style.tags))


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_clause(dialect: str, words: int = 1) -> ColumnElement[bool]:
    """The search condition, with bind parameters: ``q`` (the query, PostgreSQL) or ``w0`` ..
    ``w{words-1}`` (one LIKE pattern per word, SQLite); see :func:`search_params`."""
    if dialect == "postgresql":
        config: ColumnElement[Any] = literal_column(f"'{TS_CONFIG}'::regconfig")
        query = func.websearch_to_tsquery(config, bindparam("q", type_=String()))
        return search_document().op("@@")(query).self_group()
    clauses = []
    for i in range(words):
        pattern = bindparam(f"w{i}", type_=String())
        tags = func.json_each(Style.tags).table_valued("value")
        clauses.append(
            or_(
                func.lower(Style.name).like(pattern, escape="\\"),
                func.lower(Style.description).like(pattern, escape="\\"),
                exists(
                    select(1)
                    .select_from(tags)
                    .where(func.lower(tags.c.value).like(pattern, escape="\\"))
                ),
            )
        )
    return and_(*clauses)


def search_params(dialect: str, query: str) -> dict[str, Any]:
    if dialect == "postgresql":
        return {"q": query}
    words = query.lower().split()[:MAX_QUERY_WORDS]
    return {f"w{i}": f"%{_escape_like(word)}%" for i, word in enumerate(words)}


def tag_clause(dialect: str) -> ColumnElement[bool]:
    """The exact-tag condition, with the bind parameter ``tag`` (see :func:`tag_params`)."""
    if dialect == "postgresql":
        return type_coerce(Style.tags, JSONB).contains(bindparam("tag", type_=JSONB()))
    tags = func.json_each(Style.tags).table_valued("value")
    return exists(select(1).select_from(tags).where(tags.c.value == bindparam("tag")))


def tag_params(dialect: str, tag: str) -> dict[str, Any]:
    return {"tag": [tag] if dialect == "postgresql" else tag}


def _normalize_tag(tag: str) -> str:
    # Tags are stored trimmed and lower-cased (style_service.normalize_tags).
    return " ".join(tag.split()).lower()


def _cursor_params(sort: str, cursor: str) -> dict[str, Any]:
    """The cursor's key and id: the page continues strictly after that row."""
    name, raw_key, raw_id = decode_cursor(cursor, 3)
    if name != sort:
        raise BadRequest("The cursor belongs to another sort order", code="invalid_cursor")
    try:
        key: Any
        if sort == "newest":
            key = parse_datetime(raw_key)
        elif sort == "top_rated":
            key = float(raw_key)
        else:
            key = int(raw_key)
        return {"cursor_key": key, "cursor_id": uuid.UUID(str(raw_id))}
    except (TypeError, ValueError) as exc:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from exc


@dataclass(frozen=True)
class _Shape:
    """Everything that changes the SQL text of a page query (values are bind parameters)."""

    dialect: str
    sort: str
    audience: str  # "anonymous", "signed_in", "own" (owner=me) or "owner_name"
    model: bool
    tag: bool
    words: int  # 0 without search; PostgreSQL: 1; SQLite: one LIKE pattern per word
    cursor: bool


def _branches(audience: str) -> list[ColumnElement[bool]]:
    """Disjoint visibility conditions; their union is what the caller may list."""
    public = Style.visibility == Visibility.public
    viewer = bindparam("viewer_id", type_=Style.owner_id.type)
    if audience == "own":
        return [Style.owner_id == viewer]
    if audience == "owner_name":
        name = bindparam("owner_name", type_=String())
        owner_id = select(User.id).where(User.username == name).scalar_subquery()
        return [and_(public, Style.owner_id == owner_id)]
    if audience == "anonymous":
        return [public]
    return [public, and_(Style.owner_id == viewer, Style.visibility != Visibility.public)]


@functools.lru_cache(maxsize=512)
def _statement(shape: _Shape) -> Select[Style, User]:
    """The page query of a shape, built once per process: building the SQLAlchemy expression
    costs 0.2-0.8 ms, as much as running the query."""
    key_col = _SORT_KEYS[shape.sort]
    filters: list[ColumnElement[bool]] = []
    if shape.model:
        filters.append(Style.model == bindparam("model", type_=Style.model.type))
    if shape.tag:
        filters.append(tag_clause(shape.dialect))
    if shape.words:
        filters.append(search_clause(shape.dialect, shape.words))
    if shape.cursor:
        last = tuple_(
            bindparam("cursor_key", type_=key_col.type),
            bindparam("cursor_id", type_=Style.id.type),
        )
        filters.append(tuple_(key_col, Style.id) < last)
    rows_wanted = bindparam("rows_wanted", type_=Integer())

    branches = _branches(shape.audience)
    # PostgreSQL search: collect the matches through the GIN index, then sort them. Without the
    # fence (OFFSET 0) the planner tends to walk the sort index and compute to_tsvector() for
    # every row it passes: 4-10 ms instead of under 1 ms for two-word queries (bench).
    fence = bool(shape.words) and shape.dialect == "postgresql"
    stmt = select(Style, User).join(User, User.id == Style.owner_id)
    if len(branches) == 1 and not fence:
        stmt = stmt.where(branches[0], *filters)
    else:
        # One limited scan per branch; the union is at most 2 * (limit + 1) ids.
        parts = []
        for branch in branches:
            found = select(Style.id, key_col.label("key")).where(branch, *filters)
            if fence:
                found = found.offset(literal_column("0"))
            rows = found.subquery()
            parts.append(
                select(rows.c.id)
                .order_by(rows.c.key.desc(), rows.c.id.desc())
                .limit(rows_wanted)
                .subquery()
            )
        page = parts[0] if len(parts) == 1 else union_all(*map(select, parts)).subquery()
        stmt = stmt.join(page, page.c.id == Style.id)
    return stmt.order_by(key_col.desc(), Style.id.desc()).limit(rows_wanted)


def page_query(
    dialect: str,
    user: User | None,
    *,
    q: str | None = None,
    tag: str | None = None,
    owner: str | None = None,
    model: str | None = None,
    sort: str = "newest",
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[Select[Style, User], dict[str, Any]]:
    """The page query (``limit + 1`` rows of ``(Style, owner)`` in the sort order) and its
    parameters; 422 for a bad sort, model or query, 400 for a bad cursor."""
    if sort not in SORTS:
        raise InvalidInput(
            f"sort must be one of {', '.join(SORTS)}",
            code="invalid_sort",
            details={"field": "sort"},
        )
    params: dict[str, Any] = {"rows_wanted": limit + 1}
    if model:
        try:
            params["model"] = StyleModelKind(model)
        except ValueError as exc:
            kinds = ", ".join(k.value for k in StyleModelKind)
            raise InvalidInput(
                f"model must be one of {kinds}", code="invalid_model", details={"field": "model"}
            ) from exc
    tag = _normalize_tag(tag or "")
    if tag:
        params |= tag_params(dialect, tag)
    query = " ".join((q or "").split())
    if len(query) > MAX_QUERY_LENGTH:
        raise InvalidInput(
            f"q is longer than {MAX_QUERY_LENGTH} characters",
            code="query_too_long",
            details={"field": "q"},
        )
    words = 0
    if query:
        search = search_params(dialect, query)
        params |= search
        words = len(search)
    if cursor:
        params |= _cursor_params(sort, cursor)

    if owner == "me" or (owner is not None and user is not None and owner == user.username):
        if user is None:
            raise NotAuthenticated("owner=me needs a bearer token")
        audience = "own"
    elif owner is not None:
        audience = "owner_name"
        params["owner_name"] = owner
    else:
        audience = "anonymous" if user is None else "signed_in"
    if user is not None:
        params["viewer_id"] = user.id
    shape = _Shape(dialect, sort, audience, bool(model), bool(tag), words, bool(cursor))
    return _statement(shape), params


def build_query(dialect: str, user: User | None, **filters: Any) -> Select[Style, User]:
    """:func:`page_query` with its parameters bound (for EXPLAIN and tests)."""
    stmt, params = page_query(dialect, user, **filters)
    return stmt.params(**params)


def _cursor_of(sort: str, style: Style) -> str:
    key = {
        "newest": style.created_at,
        "top_rated": repr(float(style.rating_score)),
        "most_used": style.apply_count,
    }[sort]
    return encode_cursor([sort, key, style.id])


async def list_styles(
    session: AsyncSession,
    user: User | None,
    *,
    q: str | None = None,
    tag: str | None = None,
    owner: str | None = None,
    model: str | None = None,
    sort: str = "newest",
    limit: int = 20,
    cursor: str | None = None,
    storage: Storage,
) -> tuple[list[StyleOut], str | None]:
    """One page of the gallery and the cursor of the next one (None on the last page)."""
    dialect = session.get_bind().dialect.name
    stmt, params = page_query(
        dialect, user, q=q, tag=tag, owner=owner, model=model, sort=sort, limit=limit, cursor=cursor
    )
    rows: Sequence[Any] = (await session.execute(stmt, params)).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _cursor_of(sort, rows[-1][0])
    signer = cached_storage(storage)
    return [style_out(style, owner_row, signer) for style, owner_row in rows], next_cursor
