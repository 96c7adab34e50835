"""The auth contract of API.md, every rejection included (runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.conftest import create_user


def _assert_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


async def test_register_login_me(client) -> None:
    name = f"ansel{uuid.uuid4().hex[:6]}"
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@Example.com", "username": name, "password": "zone system 1"},
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert set(user) == {"id", "email", "username", "created_at"}
    assert user["email"] == f"{name}@example.com"
    r = await client.post(
        "/api/v1/auth/login", json={"email": f"{name}@EXAMPLE.com", "password": "zone system 1"}
    )
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 3600
    r = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert r.status_code == 200
    assert r.json() == user


async def test_login_with_oauth2_form(client, user) -> None:
    r = await client.post(
        "/api/v1/auth/login", data={"username": user.email, "password": user.password}
    )
    assert r.status_code == 200, r.text
    assert r.json()["access_token"]


async def test_duplicate_email_or_username_conflicts(client, user) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "email": user.email.upper(),
            "username": "someoneelse1",
            "password": "Lisbon tram 28",
        },
    )
    _assert_error(r, 409, "email_taken")
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "email": "new-" + user.email,
            "username": user.username,
            "password": "Lisbon tram 28",
        },
    )
    _assert_error(r, 409, "username_taken")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "username": "okname", "password": "Lisbon tram 28"}, "email"),
        ({"email": "a@example.com", "username": "x", "password": "Lisbon tram 28"}, "username"),
        ({"email": "a@example.com", "username": "okname", "password": "short"}, "password"),
        ({"email": "a@example.com", "username": "okname", "password": "é" * 40}, "password"),
        ({"email": "a@example.com", "username": "okname"}, "password"),
    ],
)
async def test_register_validation(client, payload, field) -> None:
    r = await client.post("/api/v1/auth/register", json=payload)
    err = _assert_error(r, 422, "validation_error")
    assert any(e["field"].endswith(field) for e in err["details"]["errors"]), err


async def test_long_password_is_refused_not_truncated(client) -> None:
    # 80 bytes: bcrypt would silently use only the first 72.
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": "long@example.com", "username": "longpw", "password": "a" * 80},
    )
    err = _assert_error(r, 422)
    assert "72 bytes" in err["message"]


async def test_unknown_email_and_wrong_password_look_the_same(client, user) -> None:
    r1 = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "wrong-pass"}
    )
    r2 = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong-pass"}
    )
    e1, e2 = _assert_error(r1, 401), _assert_error(r2, 401)
    assert e1 == e2
    assert r1.headers.get("www-authenticate") == "Bearer"


async def test_malformed_login_body(client) -> None:
    r = await client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    _assert_error(r, 400, "bad_request")
    r = await client.post("/api/v1/auth/login", json={"email": "a@example.com"})
    _assert_error(r, 422, "validation_error")


@pytest.fixture
def no_grace(settings, monkeypatch):
    """Reuse of a rotated refresh token is detected at once (no concurrent-refresh window)."""
    monkeypatch.setattr(settings, "jwt_refresh_reuse_grace_seconds", 0)


async def test_refresh_rotates_and_reuse_revokes_the_session(client, user, no_grace) -> None:
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != user.refresh_token
    # the old token is now used: presenting it again is a reuse and revokes the session
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    _assert_error(r, 401, "token_reused")
    # ... so the newest refresh token of that session no longer works either
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    _assert_error(r, 401, "session_revoked")


async def test_sessions_are_independent(client, user, no_grace) -> None:
    r = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    other_session = r.json()
    await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})  # reuse
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other_session["refresh_token"]}
    )
    assert r.status_code == 200


async def test_logout_revokes_the_session(client, user) -> None:
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": user.refresh_token})
    assert r.status_code == 204
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    _assert_error(r, 401, "session_revoked")


async def test_access_token_is_not_a_refresh_token(client, user) -> None:
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.access_token})
    _assert_error(r, 401, "invalid_token")
    r = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {user.refresh_token}"}
    )
    _assert_error(r, 401, "invalid_token")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_rejected_access_tokens(client, user, settings) -> None:
    now = datetime.now(UTC)
    sid = jwt.decode(user.access_token, settings.jwt_secret_key, algorithms=["HS256"])["sid"]
    claims = {
        "sub": user.id,
        "typ": "access",
        "sid": sid,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    bad_signature = jwt.encode(claims, "another-secret-another-secret-00", algorithm="HS256")
    expired = jwt.encode(
        {**claims, "exp": int((now - timedelta(seconds=5)).timestamp())},
        settings.jwt_secret_key,
        algorithm="HS256",
    )
    wrong_typ = jwt.encode({**claims, "typ": "refresh"}, settings.jwt_secret_key, algorithm="HS256")
    no_jti = jwt.encode(
        {k: v for k, v in claims.items() if k != "jti"}, settings.jwt_secret_key, algorithm="HS256"
    )
    no_sid = jwt.encode(
        {k: v for k, v in claims.items() if k != "sid"}, settings.jwt_secret_key, algorithm="HS256"
    )
    unknown_sid = jwt.encode(
        {**claims, "sid": uuid.uuid4().hex}, settings.jwt_secret_key, algorithm="HS256"
    )
    for token, code in [
        (alg_none, "invalid_token"),
        (bad_signature, "invalid_token"),
        (expired, "token_expired"),
        (wrong_typ, "invalid_token"),
        (no_jti, "invalid_token"),
        (no_sid, "invalid_token"),
        (unknown_sid, "session_revoked"),
        ("garbage", "invalid_token"),
    ]:
        r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        _assert_error(r, 401, code)
    good = jwt.encode(claims, settings.jwt_secret_key, algorithm="HS256")
    r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200


async def test_me_requires_auth(client) -> None:
    _assert_error(await client.get("/api/v1/auth/me"), 401, "not_authenticated")


async def test_token_claims(client, user, settings) -> None:
    claims = jwt.decode(user.access_token, settings.jwt_secret_key, algorithms=["HS256"])
    assert claims["typ"] == "access"
    assert claims["sub"] == user.id
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60
    refresh = jwt.decode(user.refresh_token, settings.jwt_secret_key, algorithms=["HS256"])
    assert refresh["typ"] == "refresh"
    assert refresh["exp"] - refresh["iat"] == 7 * 86400
    assert refresh["jti"] != claims["jti"]
    assert refresh["sid"] == claims["sid"]


async def test_two_users_get_distinct_ids(client) -> None:
    a, b = await create_user(client), await create_user(client)
    assert a.id != b.id


# ---- sessions: revocation reaches access tokens; concurrent refreshes ------------------------
def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_logout_rejects_the_sessions_access_tokens_at_once(client, user) -> None:
    assert (await client.get("/api/v1/auth/me", headers=user.headers)).status_code == 200
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    newer = r.json()
    other = (
        await client.post(
            "/api/v1/auth/login", json={"email": user.email, "password": user.password}
        )
    ).json()
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": newer["refresh_token"]})
    assert r.status_code == 204
    # both access tokens of the session (before and after the rotation) stop at once
    for token in (user.access_token, newer["access_token"]):
        _assert_error(
            await client.get("/api/v1/auth/me", headers=_bearer(token)), 401, "session_revoked"
        )
        # also on a route where a token is optional: a revoked one is refused, not ignored
        r = await client.get("/api/v1/styles", headers=_bearer(token))
        _assert_error(r, 401, "session_revoked")
    # another login of the same user is another session: untouched
    r = await client.get("/api/v1/auth/me", headers=_bearer(other["access_token"]))
    assert r.status_code == 200


async def test_reuse_revokes_the_sessions_access_tokens(client, user, no_grace) -> None:
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    newer = r.json()
    assert (await client.get("/api/v1/auth/me", headers=_bearer(newer["access_token"]))).is_success
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    _assert_error(r, 401, "token_reused")
    for token in (user.access_token, newer["access_token"]):
        r = await client.get("/api/v1/auth/me", headers=_bearer(token))
        _assert_error(r, 401, "session_revoked")


async def test_two_tabs_refreshing_at_once_both_stay_logged_in(client, user) -> None:
    import asyncio

    body = {"refresh_token": user.refresh_token}
    first, second = await asyncio.gather(
        client.post("/api/v1/auth/refresh", json=body),
        client.post("/api/v1/auth/refresh", json=body),
    )
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    pairs = [first.json(), second.json()]
    # one rotation happened: both tabs now hold the session's one current refresh token
    assert pairs[0]["refresh_token"] == pairs[1]["refresh_token"]
    for pair in pairs:
        r = await client.get("/api/v1/auth/me", headers=_bearer(pair["access_token"]))
        assert r.status_code == 200, r.text
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": pairs[0]["refresh_token"]})
    assert r.status_code == 200, r.text


async def test_reuse_after_the_grace_window_revokes(client, user, settings, monkeypatch) -> None:
    import asyncio

    monkeypatch.setattr(settings, "jwt_refresh_reuse_grace_seconds", 1)
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    newer = r.json()
    # inside the window: the replayed token gets the current refresh token, no rotation
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code == 200, r.text
    assert r.json()["refresh_token"] == newer["refresh_token"]
    await asyncio.sleep(1.2)
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    _assert_error(r, 401, "token_reused")
    r = await client.get("/api/v1/auth/me", headers=_bearer(newer["access_token"]))
    _assert_error(r, 401, "session_revoked")
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": newer["refresh_token"]})
    _assert_error(r, 401, "session_revoked")


async def test_a_session_stored_before_the_grace_window_still_refreshes(
    app, client, user, settings
) -> None:
    """Sessions written by the previous release hold the bare jti: they keep working."""
    refresh = jwt.decode(user.refresh_token, settings.jwt_secret_key, algorithms=["HS256"])
    await app.state.store.set(f"session:{refresh['sid']}", refresh["jti"], 3600)
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code == 200, r.text
    assert (
        await client.get("/api/v1/auth/me", headers=_bearer(r.json()["access_token"]))
    ).is_success


# ---- registration: password strength, normalized identities ---------------------------------
@pytest.mark.parametrize(
    "password", ["password", "12345678", " " * 8, "password123", "qwertyuiop", "aaaaaaaaaaaa"]
)
async def test_weak_passwords_are_refused_with_a_reason(client, password) -> None:
    name = f"weak{uuid.uuid4().hex[:8]}"
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@example.com", "username": name, "password": password},
    )
    err = _assert_error(r, 422, "weak_password")
    assert err["message"].startswith("password: too easy to guess"), err
    assert err["details"]["errors"][0]["field"] == "body.password"
    # nothing was created: a good password registers the same identity
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@example.com", "username": name, "password": "Lisbon tram 28"},
    )
    assert r.status_code == 201, r.text


async def test_password_made_of_the_username_is_weak(client) -> None:
    name = f"heliotrope{uuid.uuid4().hex[:4]}"
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@example.com", "username": name, "password": name},
    )
    _assert_error(r, 422, "weak_password")


async def test_existing_accounts_with_weak_passwords_still_log_in(app, client, settings) -> None:
    from app.models import User
    from app.services.auth_service import hash_password

    name = f"old{uuid.uuid4().hex[:8]}"
    async with app.state.db.sessionmaker() as session:
        session.add(
            User(
                email=f"{name}@example.com",
                username=name,
                password_hash=await hash_password("password", settings.bcrypt_rounds),
            )
        )
        await session.commit()
    r = await client.post(
        "/api/v1/auth/login", json={"email": f"{name}@example.com", "password": "password"}
    )
    assert r.status_code == 200, r.text


async def test_full_width_and_case_variants_are_one_identity(client) -> None:
    name = f"alice{uuid.uuid4().hex[:6]}"
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@example.com", "username": name, "password": "Lisbon tram 28"},
    )
    assert r.status_code == 201, r.text
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name)
    for email, username in [
        (f"{wide}@ｅｘａｍｐｌｅ.com", "someone-new1"),
        (f"{name.upper()}@EXAMPLE.COM", "someone-new2"),
    ]:
        r = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "username": username, "password": "Lisbon tram 28"},
        )
        _assert_error(r, 409, "email_taken")
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"x{name}@example.com", "username": wide, "password": "Lisbon tram 28"},
    )
    _assert_error(r, 409, "username_taken")
    # and the full-width spelling logs in to the one account
    r = await client.post(
        "/api/v1/auth/login", json={"email": f"{wide}@example.com", "password": "Lisbon tram 28"}
    )
    assert r.status_code == 200, r.text


async def test_case_folding_goes_beyond_lower_case(client) -> None:
    tag = uuid.uuid4().hex[:6]
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "email": f"STRASSE{tag}@example.com",
            "username": f"s{tag}",
            "password": "Lisbon tram 28",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == f"strasse{tag}@example.com"
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "email": f"Straße{tag}@example.com",
            "username": f"t{tag}",
            "password": "Lisbon tram 28",
        },
    )
    _assert_error(r, 409, "email_taken")


async def test_mixed_script_lookalike_email_is_refused(client) -> None:
    name = f"paypal{uuid.uuid4().hex[:6]}"
    lookalike = "p\u0430" + name[2:]  # Cyrillic a
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{lookalike}@example.com", "username": name, "password": "Lisbon tram 28"},
    )
    err = _assert_error(r, 422, "validation_error")
    assert err["details"]["errors"][0]["field"] == "body.email"
    assert "scripts" in err["message"]
    # the same in a look-alike domain label
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@ex\u0430mple.com", "username": name, "password": "Lisbon tram 28"},
    )
    _assert_error(r, 422, "validation_error")
    # a username is ASCII after NFKC: a Cyrillic letter is refused there too
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": f"{name}@example.com", "username": lookalike, "password": "Lisbon tram 28"},
    )
    _assert_error(r, 422, "validation_error")
