"""Keyset (cursor) pagination shared by every list endpoint.

A cursor is an opaque, url-safe base64 JSON list of the sort key values of the last item
returned; the next page continues strictly after it. Ordering always ends with the id, so keys
are unique and pages never repeat or skip rows when new rows arrive.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BadRequest


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [
        v.isoformat() if isinstance(v, datetime) else str(v) if v is not None else None
        for v in values
    ]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from exc
    if not isinstance(values, list) or len(values) != n:
        raise BadRequest("Invalid cursor", code="invalid_cursor")
    return values


def after(columns: Sequence[Any], values: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the (all ascending or all descending) column order."""
    clauses = []
    for i, col in enumerate(columns):
        eq = [columns[j] == values[j] for j in range(i)]
        cmp = col < values[i] if descending else col > values[i]
        clauses.append(and_(*eq, cmp))
    return or_(*clauses)


def parse_uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from exc


async def newest_first(
    session: AsyncSession,
    stmt: Select[Any],
    created: Any,
    ident: Any,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of ``stmt`` newest first (keyset on ``created``, ``ident``) and the next cursor."""
    if cursor:
        last_created, last_id = decode_cursor(cursor, 2)
        stmt = stmt.where(
            after([created, ident], [parse_datetime(last_created), parse_uuid(last_id)], True)
        )
    stmt = stmt.order_by(created.desc(), ident.desc()).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at, rows[-1].id])
    return rows, next_cursor


def parse_datetime(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from exc
