from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin, JSONType, TimestampMixin


class ImageStatus(enum.StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    failed = "failed"


class Image(IdMixin, TimestampMixin, Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_owner_created", "owner_id", "created_at", "id"),
        Index("ix_images_status_expires", "status", "upload_expires_at"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(50))
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[ImageStatus] = mapped_column(
        Enum(ImageStatus, native_enum=False, length=20), default=ImageStatus.pending
    )
    storage_key: Mapped[str] = mapped_column(String(512))
    thumbnail_key: Mapped[str | None] = mapped_column(String(512))
    width: Mapped[int | None]
    height: Mapped[int | None]
    format: Mapped[str | None] = mapped_column(String(20))
    color_profile: Mapped[str | None] = mapped_column(String(255))
    store_exif: Mapped[bool] = mapped_column(default=False)
    exif: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    upload_expires_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
