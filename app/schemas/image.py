"""Images: the upload request/response of the presigned flow and the image as clients see it."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from app.models import ImageStatus
from app.schemas.common import Text


class UploadRequest(BaseModel):
    filename: Text = Field(min_length=1, max_length=255, examples=["IMG_0042.jpg"])
    content_type: Text = Field(
        max_length=100,
        description="image/jpeg, image/png, image/webp, image/heic, image/heif or image/tiff "
        "(anything else: 415)",
        examples=["image/jpeg"],
    )
    size: int = Field(gt=0, description="exact size in bytes; at most 50 MB (413 otherwise)")
    store_exif: bool = Field(
        default=False, description="keep the photo's EXIF metadata (never its GPS position)"
    )

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        name = unicodedata.normalize("NFC", value).strip()
        if not name or name in (".", ".."):
            raise ValueError("filename must not be empty")
        if "/" in name or "\\" in name:
            raise ValueError("filename must be a file name, not a path")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
            raise ValueError("filename must not contain control characters")
        return name

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        return value.split(";")[0].strip().lower()


class UploadResponse(BaseModel):
    image_id: uuid.UUID
    upload_url: str = Field(description="PUT the bytes here with exactly `headers`")
    method: str = "PUT"
    headers: dict[str, str]
    expires_at: datetime


class ImageOut(BaseModel):
    id: uuid.UUID
    filename: str
    content_type: str
    status: ImageStatus
    width: int | None
    height: int | None
    format: str | None = Field(description="jpeg | png | webp | heic | heif | tiff")
    color_profile: str | None = Field(
        description="the embedded ICC profile's description, or 'sRGB (assumed)'"
    )
    size: int
    original_url: str | None = Field(
        description="short-lived presigned GET of the original (null until confirmed)"
    )
    thumbnail_url: str | None = Field(description="short-lived presigned GET; null until made")
    exif: dict[str, Any] | None = Field(
        default=None, description="EXIF tags, only when stored at the user's request; never GPS"
    )
    error: str | None = Field(default=None, description="why the image failed")
    created_at: datetime
    confirmed_at: datetime | None = None
