"""Accounts, passwords and tokens.

* New passwords: 8+ characters (the schema) and a zxcvbn score of at least
  :data:`MIN_PASSWORD_SCORE` (Dropbox's estimator: common-password and word lists, keyboard
  patterns, repeats, sequences, dates, the user's own email and username), else 422
  ``weak_password`` with zxcvbn's reason. Only registration checks it: existing accounts with
  weaker passwords still log in.
* Passwords: bcrypt (cost from settings, 12 by default), run in a thread so that hashing never
  blocks the event loop; passwords over bcrypt's 72 bytes are refused by the schema.
* Tokens: PyJWT, HS256 only (``algorithms=["HS256"]`` on decode, so ``alg: none`` and algorithm
  confusion are refused), claims ``sub``, ``typ`` (``access`` / ``refresh``), ``exp``, ``iat``,
  ``jti`` and ``sid``, the session both tokens belong to.
* Sessions (key-value store, Redis in production): ``session:{sid}`` holds the state of one login
  (:class:`SessionState`: the ``jti`` of the one refresh token currently valid, and the one it
  replaced with the time until which it may still be presented). Every request with an access
  token reads it: a session that is gone (logout, reuse detected) rejects its access tokens at
  once, not when they expire.
* Refresh swaps the state atomically (compare-and-set on the whole value). The token just
  replaced stays usable for ``JWT_REFRESH_REUSE_GRACE_SECONDS`` (two tabs refreshing at once both
  succeed: the later one gets the current refresh token); any other token of the session, or the
  replaced one after that window, is a reuse and revokes the whole session.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import bcrypt
import jwt
import zxcvbn
from anyio import to_thread
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, InvalidInput, NotAuthenticated
from app.models import User
from app.models.base import utcnow
from app.schemas.auth import RegisterRequest, TokenPair
from app.storage.kv import STORE_UNAVAILABLE, KeyValueStore

log = logging.getLogger("picfilter.auth")

INVALID_CREDENTIALS = "Incorrect email or password"
#: zxcvbn's 0-4 scale: 2 is "somewhat guessable" (over 10^6 guesses, safe against online
#: guessing behind the rate limit); 0-1 are the common passwords, repeats and sequences.
MIN_PASSWORD_SCORE = 2
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


def _strength_sync(password: str, user_inputs: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = zxcvbn.zxcvbn(password, user_inputs=user_inputs)
    return result


async def check_password_strength(password: str, user_inputs: list[str]) -> None:
    """Refuse (422 ``weak_password``) a password zxcvbn scores under MIN_PASSWORD_SCORE."""
    result = await to_thread.run_sync(_strength_sync, password, user_inputs)
    if result["score"] >= MIN_PASSWORD_SCORE:
        return
    feedback = result.get("feedback") or {}
    reason = feedback.get("warning") or "It is easy to guess."
    hints = " ".join(feedback.get("suggestions") or [])
    message = f"too easy to guess. {reason.rstrip('.')}.{' ' + hints if hints else ''}"
    raise InvalidInput(
        f"password: {message}",
        code="weak_password",
        details={"errors": [{"field": "body.password", "message": message, "type": "weak"}]},
    )


async def register(session: AsyncSession, data: RegisterRequest, settings: Settings) -> User:
    email = data.email  # NFKC + case-folded by the schema
    local = email.rpartition("@")[0]
    await check_password_strength(data.password, [email, local, data.username])
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
    try:
        await session.flush()
    except IntegrityError as exc:  # registered by a concurrent request since the check above
        raise Conflict(
            "This email or username is already registered", code="identity_taken"
        ) from exc
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


def _access_token(user_id: uuid.UUID, sid: str, settings: Settings, now: datetime) -> str:
    return _encode(
        {
            "sub": str(user_id),
            "typ": "access",
            "sid": sid,
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
        access_token=_access_token(user_id, sid, settings, now),
        refresh_token=_refresh_token(user_id, sid, jti, settings, now),
        expires_in=settings.jwt_access_token_expire_minutes * 60,
    )


@dataclass(frozen=True)
class SessionState:
    """What ``session:{sid}`` holds: the current refresh ``jti``; the one it replaced and the
    wall-clock time (``time.time()``, shared by every API process) until which that one may
    still be presented."""

    jti: str
    prev: str | None = None
    prev_until: float = 0.0

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, raw: str) -> SessionState:
        if not raw.startswith("{"):  # written before the grace window: the bare jti
            return cls(jti=raw)
        data = json.loads(raw)
        return cls(str(data["jti"]), data.get("prev"), float(data.get("prev_until", 0.0)))


def _session_key(sid: str) -> str:
    return f"session:{sid}"


def _sid(claims: dict[str, Any]) -> str:
    sid = claims.get("sid")
    if not isinstance(sid, str) or not sid:
        raise NotAuthenticated("Invalid token", code="invalid_token")
    return sid


async def start_session(user: User, store: KeyValueStore, settings: Settings) -> TokenPair:
    sid, jti = uuid.uuid4().hex, uuid.uuid4().hex
    await store.set(_session_key(sid), SessionState(jti).dump(), _refresh_ttl(settings))
    return _pair(user.id, sid, jti, settings)


async def refresh(token: str, store: KeyValueStore, settings: Settings) -> TokenPair:
    claims = decode_token(token, "refresh", settings)
    sid, jti = _sid(claims), claims["jti"]
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError as exc:
        raise NotAuthenticated("Invalid token", code="invalid_token") from exc
    key = _session_key(sid)
    for _ in range(5):  # another refresh of this session may win the compare-and-set: re-read
        raw = await store.get(key)
        if raw is None:
            raise NotAuthenticated("Session revoked or expired", code="session_revoked")
        state = SessionState.load(raw)
        if jti == state.jti:
            grace = settings.jwt_refresh_reuse_grace_seconds
            new = SessionState(uuid.uuid4().hex, jti, time.time() + grace)
            if await store.compare_and_set(key, raw, new.dump(), _refresh_ttl(settings)):
                return _pair(user_id, sid, new.jti, settings)
            continue
        if jti == state.prev and time.time() < state.prev_until:
            # A concurrent refresh (another tab) rotated this token a moment ago: hand out the
            # session's current refresh token rather than logging the user out.
            return _pair(user_id, sid, state.jti, settings)
        break
    else:  # lost the compare-and-set every time: not a reuse, so the session stays
        raise Conflict("The session is being refreshed elsewhere; try again", code="refresh_busy")
    # This token was already used (outside the grace window): a replayed refresh token means
    # it may be stolen, so the whole session ends, its access tokens included.
    if await store.delete(key):
        raise NotAuthenticated(
            "Refresh token reuse detected; the session is revoked", code="token_reused"
        )
    raise NotAuthenticated("Session revoked or expired", code="session_revoked")


async def logout(token: str, store: KeyValueStore, settings: Settings) -> None:
    """End the session of ``token`` (a refresh token): its access tokens stop working too."""
    claims = decode_token(token, "refresh", settings)
    await store.delete(_session_key(_sid(claims)))


async def user_from_access_token(
    session: AsyncSession, store: KeyValueStore, token: str, settings: Settings
) -> User:
    """The user of a valid access token whose session is still open (one store read).

    When the session store cannot be reached (a Redis outage) the check is skipped and logged:
    the token's signature and expiry are still verified, so a revoked session's token keeps
    working at most until the store is back or the token expires (``JWT_ACCESS_TTL_SECONDS``),
    while every signed-in read keeps working through the outage (the hardening issue's rule:
    reads keep working when Redis is down). Logins and refreshes, which must write the store,
    still answer 503 ``cache_unavailable``.
    """
    claims = decode_token(token, "access", settings)
    try:
        open_session = await store.get(_session_key(_sid(claims)))
    except STORE_UNAVAILABLE as exc:
        log.warning("session store unreachable, session check skipped: %s", type(exc).__name__)
    else:
        if open_session is None:
            raise NotAuthenticated("Session revoked or expired", code="session_revoked")
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError as exc:
        raise NotAuthenticated("Invalid token", code="invalid_token") from exc
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise NotAuthenticated("User no longer exists", code="invalid_token")
    return user
