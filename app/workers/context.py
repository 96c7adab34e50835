"""Per-process worker state: the settings and the sync database (created lazily, reset on fork)."""

from __future__ import annotations

from app.config import Settings, get_settings
from app.db import SyncDatabase

_db: SyncDatabase | None = None


def settings() -> Settings:
    return get_settings()


def db() -> SyncDatabase:
    global _db
    if _db is None:
        _db = SyncDatabase(get_settings())
    return _db


def reset_after_fork() -> None:
    global _db
    if _db is not None:
        _db.engine.dispose(close=False)
    _db = None
