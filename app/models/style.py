from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, IdMixin, JSONType, TimestampMixin
from app.models.user import User


class Visibility(enum.StrEnum):
    private = "private"
    unlisted = "unlisted"
    public = "public"


class StyleStatus(enum.StrEnum):
    draft = "draft"
    training = "training"
    ready = "ready"
    failed = "failed"


class StyleModelKind(enum.StrEnum):
    dlut = "dlut"
    nilut = "nilut"
    adaptive_3dlut = "adaptive_3dlut"
    imported = "imported"


class TrainingRole(enum.StrEnum):
    before = "before"
    after = "after"
    reference = "reference"


class Style(IdMixin, TimestampMixin, Base):
    __tablename__ = "styles"
    __table_args__ = (
        Index("ix_styles_visibility_created", "visibility", "created_at", "id"),
        Index("ix_styles_owner_created", "owner_id", "created_at", "id"),
        Index("ix_styles_visibility_apply_count", "visibility", "apply_count", "id"),
        Index("ix_styles_visibility_rating", "visibility", "rating_score", "id"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    visibility: Mapped[Visibility] = mapped_column(
        Enum(Visibility, native_enum=False, length=20), default=Visibility.private
    )
    status: Mapped[StyleStatus] = mapped_column(
        Enum(StyleStatus, native_enum=False, length=20), default=StyleStatus.draft
    )
    model: Mapped[StyleModelKind | None] = mapped_column(
        Enum(StyleModelKind, native_enum=False, length=30)
    )
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    # Storage keys of the current model/LUT/preview; replaced atomically on re-learn.
    model_key: Mapped[str | None] = mapped_column(String(512))
    lut_key: Mapped[str | None] = mapped_column(String(512))
    preview_key: Mapped[str | None] = mapped_column(String(512))
    # Incremented each time a learn job starts, so a stale job cannot overwrite a newer model.
    model_version: Mapped[int] = mapped_column(Integer, default=0)
    forked_from_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("styles.id", ondelete="SET NULL")
    )
    # Denormalised counters, kept consistent with the rows by the services.
    rating_sum: Mapped[int] = mapped_column(Integer, default=0)
    rating_count: Mapped[int] = mapped_column(Integer, default=0)
    # Bayesian average used by sort=top_rated (see community service for the formula).
    rating_score: Mapped[float] = mapped_column(default=0.0)
    comment_count: Mapped[int] = mapped_column(Integer, default=0)
    apply_count: Mapped[int] = mapped_column(Integer, default=0)

    owner: Mapped[User] = relationship(lazy="raise")
    training_images: Mapped[list[StyleTrainingImage]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class StyleTrainingImage(IdMixin, Base):
    __tablename__ = "style_training_images"
    __table_args__ = (Index("ix_style_training_images_style", "style_id", "position"),)

    style_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"))
    image_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    role: Mapped[TrainingRole] = mapped_column(Enum(TrainingRole, native_enum=False, length=20))
    position: Mapped[int] = mapped_column(Integer, default=0)
