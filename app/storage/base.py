"""What both storage backends share: the value objects they return and small helpers.

(The :class:`~app.storage.Storage` protocol itself is in the package's ``__init__``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

#: bytes per read/write when streaming an object
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PresignedUpload:
    """A URL the client PUTs the bytes to, with exactly ``headers``, before ``expires_at``."""

    url: str
    method: str = "PUT"
    headers: dict[str, str] = field(default_factory=dict)
    expires_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 5987 UTF-8 name."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def upload_headers(content_type: str, size: int) -> dict[str, str]:
    """What the client sends with a presigned PUT (both backends sign all three)."""
    return {"Content-Type": content_type, "Content-Length": str(size), "If-None-Match": "*"}


def utc_in(seconds: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
