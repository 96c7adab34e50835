"""A worker's PostgreSQL session left inside a transaction is ended by the server.

Why it matters (``app.db._worker_session_args``): a worker host whose network drops between a
job's ``SELECT ... FOR UPDATE`` and its commit leaves the session, and its row lock, on the
server until TCP keepalive gives up (hours); the job's re-delivery to another worker blocks on
that lock. Here session A takes a transaction-level lock and goes silent, as a cut-off host
would; session B, bounded by a 10 s ``lock_timeout``, must get the lock once the server has
ended A (``db_worker_idle_in_transaction_seconds`` = 1), where before it waited forever.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import SyncDatabase

LOCK = 732_104  # an advisory lock id no other code takes


def _settings(seconds: int) -> Settings:
    return Settings(db_worker_idle_in_transaction_seconds=seconds, _env_file=None)  # type: ignore[call-arg]


def test_a_silent_session_inside_a_transaction_is_ended_and_its_lock_freed(settings) -> None:
    if not settings.sync_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has no server-side sessions")
    short = _settings(1)
    assert short.sync_database_url == settings.sync_database_url
    silent, other = SyncDatabase(short), SyncDatabase(short)
    try:
        a = silent.engine.connect()
        a.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})  # then nothing more
        start = time.monotonic()
        with other.engine.connect() as b:
            b.execute(text("SET lock_timeout = '10s'"))
            b.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
            waited = time.monotonic() - start
            b.rollback()
        assert waited < 9, waited  # the server ended A: B did not wait out its lock_timeout
        with pytest.raises(DBAPIError):  # A's session is gone
            a.execute(text("SELECT 1"))
        a.invalidate()
        a.close()
    finally:
        silent.dispose()
        other.dispose()


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0"), (60, "1min")])
def test_the_timeout_reaches_the_server(settings, seconds: int, shown: str) -> None:
    """Each worker session carries the setting; ``0`` leaves PostgreSQL's default (no limit)."""
    if not settings.sync_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    db = SyncDatabase(_settings(seconds))
    try:
        with db.engine.connect() as c:
            assert c.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == shown
    finally:
        db.dispose()
