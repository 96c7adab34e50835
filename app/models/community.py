from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, IdMixin, TimestampMixin
from app.models.user import User


class Comment(IdMixin, TimestampMixin, Base):
    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_style_created", "style_id", "created_at", "id"),)

    style_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"))
    author_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    body: Mapped[str] = mapped_column(Text)
    edited_at: Mapped[datetime | None]

    author: Mapped[User] = relationship(lazy="raise")


class Rating(IdMixin, TimestampMixin, Base):
    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("style_id", "user_id", name="uq_ratings_style_user"),
        CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),
    )

    style_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("styles.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[int] = mapped_column(Integer)
