"""SQLAlchemy ORM models; importing this package registers every table on ``Base.metadata``."""

from app.models.base import Base
from app.models.community import Comment, Rating
from app.models.image import Image, ImageStatus
from app.models.job import Job, JobStatus, JobType
from app.models.style import (
    Style,
    StyleModelKind,
    StyleStatus,
    StyleTrainingImage,
    TrainingRole,
    Visibility,
)
from app.models.user import User

__all__ = [
    "Base",
    "Comment",
    "Image",
    "ImageStatus",
    "Job",
    "JobStatus",
    "JobType",
    "Rating",
    "Style",
    "StyleModelKind",
    "StyleStatus",
    "StyleTrainingImage",
    "TrainingRole",
    "User",
    "Visibility",
]
