"""``/api/v1/auth``: register, login (JSON or OAuth2 form), refresh, logout, me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, status
from pydantic import ValidationError

from app.api.conformance import error_responses
from app.api.errors import field_message
from app.dependencies import CurrentUser, SessionDep, SettingsDep, StoreDep, rate_limit
from app.errors import BadRequest, InvalidInput
from app.schemas.auth import LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserOut
from app.services import auth_service

router = APIRouter(prefix="/auth", tags=["auth"])
auth_limit = [Depends(rate_limit("auth"))]


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    dependencies=auth_limit,
    responses=error_responses(409),
)
async def register(data: RegisterRequest, session: SessionDep, settings: SettingsDep) -> Any:
    """Create an account. Duplicate email or username -> 409; a password that is easy to guess
    -> 422 `weak_password`. Emails are NFKC-normalized and case-folded; an email mixing
    look-alike letters of different scripts is refused (422)."""
    return await auth_service.register(session, data, settings)


_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "description": "your email"},
                        "password": {"type": "string"},
                    },
                }
            },
        },
    }
}


async def _login_data(request: Request) -> LoginRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            raw: Any = {
                "email": form.get("username") or form.get("email"),
                "password": form.get("password"),
            }
        else:
            raw = await request.json()
    except ValueError as exc:
        raise BadRequest("Body must be JSON or an OAuth2 password form") from exc
    try:
        return LoginRequest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidInput(f"{field}: {field_message(err)}", code="validation_error") from exc


@router.post("/login", response_model=TokenPair, dependencies=auth_limit, openapi_extra=_LOGIN_BODY)
async def login(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> TokenPair:
    """Log in with `{email, password}` (JSON) or the OAuth2 password form (username = email)."""
    data = await _login_data(request)
    user = await auth_service.authenticate(session, data.email, data.password, settings)
    return await auth_service.start_session(user, store, settings)


@router.post(
    "/refresh", response_model=TokenPair, dependencies=auth_limit, responses=error_responses(409)
)
async def refresh(data: RefreshRequest, store: StoreDep, settings: SettingsDep) -> TokenPair:
    """Rotate: the presented refresh token stops working; presenting it again revokes the
    session (and its access tokens), except within JWT_REFRESH_REUSE_GRACE_SECONDS of the
    rotation, when the session's current refresh token is returned (two tabs at once)."""
    return await auth_service.refresh(data.refresh_token, store, settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(data: RefreshRequest, store: StoreDep, settings: SettingsDep) -> None:
    await auth_service.logout(data.refresh_token, store, settings)


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> Any:
    return user
