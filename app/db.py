"""Engines and sessions: async for the API (asyncpg / aiosqlite), sync for workers (psycopg).

Engines are made once per process (``Database`` lives on ``app.state`` in the API and in the
worker module); sessions use ``expire_on_commit=False``. SQLite gets WAL, a busy timeout and
foreign keys so that the embedded default behaves like PostgreSQL for cascades and concurrency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from app.config import Settings

ON_COMMIT_KEY = "on_commit"
#: a pooled API connection idle for longer than this is pinged before use (see :func:`_ping_idle`)
PING_IDLE_AFTER = 1.0
_IDLE_SINCE = "idle_since"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_async_engine(settings: Settings) -> AsyncEngine:
    url = settings.async_database_url
    if url.startswith("sqlite"):
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    _ping_idle(engine.sync_engine)
    return engine


def _ping_idle(engine: Engine) -> None:
    """Pre-ping, but only connections that have been idle in the pool for more than
    :data:`PING_IDLE_AFTER` seconds.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout; with asyncpg a ping is three round
    trips (BEGIN, ``;``, ROLLBACK), more than the one query of a typical read and ~1 ms of API
    and PostgreSQL CPU per request (measured). A connection that served a request a moment ago
    is as good as one that a ping just checked; one that sat idle through a PostgreSQL restart
    is pinged, and a failed ping invalidates the whole pool (as ``pool_pre_ping`` does), so the
    first request after a restart still works."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _mark_idle(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) <= PING_IDLE_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            raise exc.InvalidatePoolError(f"pre-ping failed: {error}") from error


def make_sync_engine(settings: Settings, *, pool: bool = True) -> Engine:
    url = settings.sync_database_url
    if url.startswith("sqlite"):
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    args = _worker_session_args(settings)
    if not pool:
        return create_engine(url, poolclass=NullPool, connect_args=args)
    return create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True, connect_args=args)


def _worker_session_args(settings: Settings) -> dict[str, Any]:
    """psycopg connect arguments of a worker's PostgreSQL sessions: the server ends one left
    idle inside a transaction for ``db_worker_idle_in_transaction_seconds``. Why: a job's claim
    is ``SELECT ... FOR UPDATE`` then ``UPDATE``; a worker host whose network drops between the
    two leaves its session open on the server, row lock held, until TCP keepalive gives up
    (hours), and the job's re-delivery to another worker blocks on that lock (seen in
    ``tests/test_scale_out.py``: one of 20 jobs stayed ``queued`` past the test's 240 s).
    Worker transactions are short (no job work runs inside one), so a minute is ample."""
    seconds = settings.db_worker_idle_in_transaction_seconds
    if seconds <= 0:
        return {}
    return {"options": f"-c idle_in_transaction_session_timeout={seconds * 1000}"}


class Database:
    """The API's async engine and session factory."""

    def __init__(self, settings: Settings) -> None:
        self.engine = make_async_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    async def dispose(self) -> None:
        await self.engine.dispose()


class SyncDatabase:
    """The workers' sync engine and session factory (psycopg / pysqlite)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = make_sync_engine(settings)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error, then runs on-commit hooks."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
            run_on_commit(session)
        except BaseException:
            session.rollback()
            session.info.pop(ON_COMMIT_KEY, None)
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def on_commit(session: Session | AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the session's transaction commits (never if it rolls back).

    Used to send Celery tasks only once the rows they refer to are visible to workers.
    """
    session.info.setdefault(ON_COMMIT_KEY, []).append(callback)


def run_on_commit(session: Session | AsyncSession) -> None:
    for callback in session.info.pop(ON_COMMIT_KEY, []):
        callback()
