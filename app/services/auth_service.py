"""Accounts, passwords and tokens.

* Passwords: bcrypt (cost from settings, 12 by default), run in a thread so that hashing never
  blocks the event loop; passwords over bcrypt's 72 bytes are refused by the schema.
* Tokens: PyJWT, HS256 only (``algorithms=["HS256"]`` on decode, so ``alg: none`` and algorithm
  confusion are refused), claims ``sub``, ``typ`` (``access`` / ``refresh``), ``exp``, ``iat``,
  ``jti``; refresh tokens also carry ``sid``, their session.
* Refresh sessions (key-value store, Redis in production): ``session:{sid}`` holds the ``jti`` of
  the one refresh token currently valid for that session. Refresh swaps it atomically
  (compare-and-set); a token whose ``jti`` is no longer the current one is a reuse, and revokes
  the whole session.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import bcrypt
import jwt
from anyio import to_thread
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, NotAuthenticated
from app.models import User
from app.models.base import utcnow
from app.schemas.auth import RegisterRequest, TokenPair
from app.storage.kv import KeyValueStore

INVALID_CREDENTIALS = "Incorrect email or password"
# A real hash to check against when the email is unknown, so both failures take the same time.
_DUMMY_HASH: dict[int, bytes] = {}


def _hash_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def _check_sync(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


async def hash_password(password: str, rounds: int) -> str:
    return await to_thread.run_sync(_hash_sync, password, rounds)


async def verify_password(password: str, hashed: str) -> bool:
    return await to_thread.run_sync(_check_sync, password, hashed)


async def register(session: AsyncSession, data: RegisterRequest, settings: Settings) -> User:
    email = data.email.lower()
    taken = (
        await session.execute(
            select(User.email, User.username).where(
                or_(
                    func.lower(User.email) == email,
                    func.lower(User.username) == data.username.lower(),
                )
            )
        )
    ).first()
    if taken is not None:
        field = "email" if taken.email == email else "username"
        raise Conflict(f"This {field} is already registered", code=f"{field}_taken")
    user = User(
        email=email,
        username=data.username,
        password_hash=await hash_password(data.password, settings.bcrypt_rounds),
    )
    session.add(user)
    await session.flush()
    return user


async def authenticate(
    session: AsyncSession, email: str, password: str, settings: Settings
) -> User:
    user = (
        await session.execute(select(User).where(User.email == email.lower()))
    ).scalar_one_or_none()
    if user is None or not user.is_active:
        rounds = settings.bcrypt_rounds
        if rounds not in _DUMMY_HASH:
            _DUMMY_HASH[rounds] = (await hash_password(secrets.token_hex(8), rounds)).encode()
        await verify_password(password, _DUMMY_HASH[rounds].decode())
        raise NotAuthenticated(INVALID_CREDENTIALS, code="invalid_credentials")
    if not await verify_password(password, user.password_hash):
        raise NotAuthenticated(INVALID_CREDENTIALS, code="invalid_credentials")
    return user


# ---- tokens ---------------------------------------------------------------------------------
def _encode(claims: dict[str, Any], settings: Settings) -> str:
    return jwt.encode(claims, settings.jwt_secret_key, algorithm=settings.jwt_algorithm)


def decode_token(token: str, expected_typ: str, settings: Settings) -> dict[str, Any]:
    """Verify signature, expiry and type; any failure is a 401."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret_key,
            algorithms=[settings.jwt_algorithm],
            options={"require": ["exp", "iat", "jti", "sub", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise NotAuthenticated("Token expired", code="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise NotAuthenticated("Invalid token", code="invalid_token") from exc
    if claims.get("typ") != expected_typ:
        raise NotAuthenticated(f"Expected an {expected_typ} token", code="invalid_token")
    return claims


def _access_token(user_id: uuid.UUID, settings: Settings, now: datetime) -> str:
    return _encode(
        {
            "sub": str(user_id),
            "typ": "access",
            "iat": now,
            "exp": now + timedelta(minutes=settings.jwt_access_token_expire_minutes),
            "jti": uuid.uuid4().hex,
        },
        settings,
    )


def _refresh_token(
    user_id: uuid.UUID, sid: str, jti: str, settings: Settings, now: datetime
) -> str:
    return _encode(
        {
            "sub": str(user_id),
            "typ": "refresh",
            "sid": sid,
            "iat": now,
            "exp": now + timedelta(days=settings.jwt_refresh_token_expire_days),
            "jti": jti,
        },
        settings,
    )


def _refresh_ttl(settings: Settings) -> int:
    return settings.jwt_refresh_token_expire_days * 86400


def _pair(user_id: uuid.UUID, sid: str, jti: str, settings: Settings) -> TokenPair:
    now = utcnow()
    return TokenPair(
        access_token=_access_token(user_id, settings, now),
        refresh_token=_refresh_token(user_id, sid, jti, settings, now),
        expires_in=settings.jwt_access_token_expire_minutes * 60,
    )


async def start_session(user: User, store: KeyValueStore, settings: Settings) -> TokenPair:
    sid, jti = uuid.uuid4().hex, uuid.uuid4().hex
    await store.set(f"session:{sid}", jti, _refresh_ttl(settings))
    return _pair(user.id, sid, jti, settings)


async def refresh(token: str, store: KeyValueStore, settings: Settings) -> TokenPair:
    claims = decode_token(token, "refresh", settings)
    sid = claims.get("sid")
    if not isinstance(sid, str):
        raise NotAuthenticated("Invalid token", code="invalid_token")
    key = f"session:{sid}"
    new_jti = uuid.uuid4().hex
    if await store.compare_and_set(key, claims["jti"], new_jti, _refresh_ttl(settings)):
        return _pair(uuid.UUID(claims["sub"]), sid, new_jti, settings)
    # Either the session is gone (logged out / revoked) or this token was already used:
    # a replayed refresh token means it may be stolen, so the whole session ends.
    if await store.delete(key):
        raise NotAuthenticated(
            "Refresh token reuse detected; the session is revoked", code="token_reused"
        )
    raise NotAuthenticated("Session revoked or expired", code="session_revoked")


async def logout(token: str, store: KeyValueStore, settings: Settings) -> None:
    claims = decode_token(token, "refresh", settings)
    sid = claims.get("sid")
    if isinstance(sid, str):
        await store.delete(f"session:{sid}")


async def user_from_access_token(session: AsyncSession, token: str, settings: Settings) -> User:
    claims = decode_token(token, "access", settings)
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError as exc:
        raise NotAuthenticated("Invalid token", code="invalid_token") from exc
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise NotAuthenticated("User no longer exists", code="invalid_token")
    return user
