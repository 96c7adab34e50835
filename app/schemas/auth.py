from __future__ import annotations

import re
import uuid
from datetime import datetime

from pydantic import BaseModel, EmailStr, Field, field_validator

from app.schemas.common import ORMModel, Text

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,50}$")
BCRYPT_MAX_BYTES = 72


class RegisterRequest(BaseModel):
    email: EmailStr
    username: Text = Field(min_length=3, max_length=50, examples=["ansel"])
    password: Text = Field(min_length=8, examples=["correct horse battery"])

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not USERNAME_RE.match(v):
            raise ValueError("use 3-50 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("password")
    @classmethod
    def _password(cls, v: str) -> str:
        if len(v.encode()) > BCRYPT_MAX_BYTES:
            raise ValueError(f"at most {BCRYPT_MAX_BYTES} bytes (bcrypt would silently cut it)")
        return v


class LoginRequest(BaseModel):
    email: EmailStr
    password: Text = Field(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    refresh_token: Text = Field(min_length=1, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class UserOut(ORMModel):
    id: uuid.UUID
    email: str
    username: str
    created_at: datetime


class UserPublic(ORMModel):
    id: uuid.UUID
    username: str
