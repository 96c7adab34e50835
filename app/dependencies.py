"""Dependency injection: ``Annotated`` aliases used by every router.

* ``SessionDep``: one async session per request; services ``flush()``; this dependency commits
  when the route returns (before the response is sent: ``scope="function"``) or rolls back on
  error, then runs the session's on-commit hooks (that is where Celery tasks are sent).
* ``CurrentUser`` / ``OptionalUser``: the user of a valid access token.
* ``SettingsDep``, ``StoreDep``, ``StorageDep``: the process-wide objects on ``app.state``.
* ``rate_limit(bucket)``: a dependency counting the request in a rate-limit bucket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database, run_on_commit
from app.errors import NotAuthenticated
from app.models import User
from app.services import auth_service
from app.services.job_service import SENDS_JOBS
from app.services.ratelimit import RateLimiter
from app.storage import Storage
from app.storage.kv import KeyValueStore
from app.workers.dispatch import check_broker

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> KeyValueStore:
    store: KeyValueStore = request.app.state.store
    return store


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.sessionmaker() as session:
        try:
            yield session
            if session.info.get(SENDS_JOBS):
                # the jobs' tasks are sent after the commit: no rows without a reachable broker
                await to_thread.run_sync(check_broker)
            await session.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a dead connection cannot roll back either
                await session.rollback()
            session.info.clear()
            raise
        run_on_commit(session)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[KeyValueStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


async def get_optional_user(
    session: SessionDep, store: StoreDep, token: TokenDep, settings: SettingsDep
) -> User | None:
    if not token:
        return None
    return await auth_service.user_from_access_token(session, store, token, settings)


async def get_current_user(user: Annotated[User | None, Depends(get_optional_user)]) -> User:
    if user is None:
        raise NotAuthenticated()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def count_rate_limit(request: Request, bucket: str, cost: int = 1) -> None:
    """Count ``cost`` units of ``bucket`` per user (token subject) or per client IP (a batch
    route counts its number of jobs)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    if not limiter.enabled:
        return
    identity = f"ip:{client_ip(request)}"
    auth = request.headers.get("authorization", "")
    if bucket != "auth" and auth.lower().startswith("bearer "):
        try:
            claims = auth_service.decode_token(auth[7:], "access", request.app.state.settings)
            identity = f"user:{claims['sub']}"
        except NotAuthenticated:
            pass
    await limiter.hit(bucket, identity, cost=cost)


def rate_limit(bucket: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency counting the request once in ``bucket`` (see :func:`count_rate_limit`)."""

    async def _limit(request: Request) -> None:
        await count_rate_limit(request, bucket)

    return _limit
