"""Auth bodies. Identities are normalized before they are validated or compared:

* every identity (email, username) is NFKC-normalized, so full-width and other compatibility
  forms (``ａｌｉｃｅ``) are the ASCII they look like;
* emails are also case-folded (``ALICE@`` = ``alice@``, ``ß`` = ``ss``) and stored that way;
  usernames keep their case for display but are compared case-insensitively (they are ASCII
  after NFKC, so that is case-folding too);
* a registered email whose local part or a domain label mixes scripts with look-alike letters
  (Latin ``alice`` with a Cyrillic ``а``) is refused (``confusable_homoglyphs``, Unicode's
  confusables data); an address written wholly in one script is a different mailbox and is
  accepted. Usernames are ASCII only after NFKC, so they cannot hold a look-alike at all.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from confusable_homoglyphs import confusables
from pydantic import BaseModel, EmailStr, Field, field_validator

from app.schemas.common import ORMModel, Text

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,50}$")
BCRYPT_MAX_BYTES = 72


def nfkc(value: Any) -> Any:
    """NFKC form of a string (anything else is left to the field's own validation)."""
    return unicodedata.normalize("NFKC", value) if isinstance(value, str) else value


def fold_email(value: Any) -> Any:
    """NFKC, then case-folded: the one spelling of an email that is stored and compared."""
    return nfkc(value).casefold() if isinstance(value, str) else value


def lookalike_part(email: str) -> str | None:
    """The local part or domain label of ``email`` that mixes scripts with confusable letters."""
    local, _, domain = email.rpartition("@")
    for part in (local, *domain.split(".")):
        if part and confusables.is_dangerous(part):
            return part
    return None


class RegisterRequest(BaseModel):
    email: EmailStr
    username: Text = Field(min_length=3, max_length=50, examples=["ansel"])
    password: Text = Field(
        min_length=8,
        examples=["correct horse battery"],
        description="8+ characters, not easy to guess (common passwords, repeats, sequences, "
        "your email or username are refused: 422 `weak_password`)",
    )

    @field_validator("email", mode="before")
    @classmethod
    def _fold_email(cls, v: Any) -> Any:
        return fold_email(v)

    @field_validator("email")
    @classmethod
    def _no_lookalikes(cls, v: str) -> str:
        part = lookalike_part(v)
        if part is not None:
            raise ValueError(
                f"{part!r} mixes letters of different scripts that look alike; "
                "write it in one script"
            )
        return v

    @field_validator("username", mode="before")
    @classmethod
    def _nfkc_username(cls, v: Any) -> Any:
        return nfkc(v)

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

    @field_validator("email", mode="before")
    @classmethod
    def _fold_email(cls, v: Any) -> Any:
        return fold_email(v)


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
