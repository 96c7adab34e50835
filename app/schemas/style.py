"""Styles: the request bodies of ``/api/v1/styles`` and the style as every endpoint returns it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.models import StyleModelKind, StyleStatus, Visibility
from app.schemas.auth import UserPublic
from app.schemas.common import Text, TextJSON
from app.schemas.job import JobOut

MAX_TAGS = 20
MAX_TAG_LENGTH = 40

# Every string is a `Text` (no NUL); one place for each kind of field's limits.
StyleName = Annotated[Text, StringConstraints(min_length=1, max_length=100)]
StyleDescription = Annotated[Text, StringConstraints(max_length=5000)]
Tag = Annotated[Text, StringConstraints(min_length=1, max_length=MAX_TAG_LENGTH)]
TagFilter = Annotated[Text, StringConstraints(max_length=MAX_TAG_LENGTH)]
SearchText = Annotated[Text, StringConstraints(max_length=200)]
Owner = Annotated[Text, StringConstraints(max_length=50)]
Cursor = Annotated[Text, StringConstraints(max_length=1000)]


# ---- request bodies -------------------------------------------------------------------------
class StyleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StyleName = Field(examples=["Golden hour"])
    description: StyleDescription = ""
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    visibility: Visibility = Visibility.private

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class StylePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StyleName | None = None
    description: StyleDescription | None = None
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    visibility: Visibility | None = None

    @field_validator("name", "visibility", mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("must not be null")
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be blank")
        return v


# Options the server sets itself (a path on the worker's disk). Every other option is checked
# by the model's typed options model (app.ml.options) when the job is submitted.
RESERVED_OPTIONS = {"init_weights"}


class PairIn(BaseModel):
    before_image_id: uuid.UUID
    after_image_id: uuid.UUID


class LearnRequest(BaseModel):
    model: Literal["auto", "dlut", "nilut", "adaptive_3dlut"] = Field(
        "auto",
        description="auto (the default) tries dlut, adaptive_3dlut and nilut and keeps the best "
        "on held-out photos (metrics.auto says which and why)",
    )
    pairs: list[PairIn] = Field(default_factory=list, max_length=1000)
    reference_image_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    options: dict[Text, TextJSON] = Field(
        default_factory=dict,
        description='model-specific knobs (app/ml/options.py), e.g. {"lut_size": 33}; an unknown '
        "option, a wrong type or a value out of range is a 422. time_budget_s caps the learning "
        "time (never above the server's budget).",
    )

    @field_validator("options")
    @classmethod
    def _small(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(v) > 50 or len(repr(v)) > 10_000:
            raise ValueError("too many or too large options")
        reserved = sorted(RESERVED_OPTIONS & set(v))
        if reserved:
            raise ValueError(f"option {reserved[0]!r} is set by the server")
        return v


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID | None = None
    image_ids: list[uuid.UUID] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="batch form: one job per distinct image (a repeated id counts once); the "
        "batch counts as that many job submissions against the rate limit",
    )
    strength: float = Field(1.0, ge=0.0, le=1.0)
    format: Literal["jpeg", "png", "webp", "tiff"] | None = Field(
        None,
        description="default: the original's own format (HEIC included), else jpeg; a 16-bit "
        "PNG or TIFF stays 16-bit as png or tiff",
    )
    quality: int | None = Field(
        None, ge=1, le=100, description="jpeg/webp/heic quality (default 92)"
    )
    output_profile: Literal["source", "srgb"] = Field(
        "source",
        description="source: the result stays in the original's color space with its ICC "
        "profile; srgb: converted to sRGB (the style's working space)",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ApplyRequest:
        if (self.image_id is None) == (self.image_ids is None):
            raise ValueError("give either image_id or image_ids")
        return self


class ExportRequest(BaseModel):
    """``size`` is the points per axis of ``cube``/``3dl``/``spi3d``/``csp``/``icc``; a HaldCLUT has
    ``level``^2 instead (``haldclut`` only, default 8)."""

    model_config = ConfigDict(extra="forbid")

    size: Literal[17, 33, 65] = 33
    format: Literal["cube", "haldclut", "3dl", "spi3d", "csp", "icc"] = Field(
        "cube",
        description="cube (Resolve, Premiere, ffmpeg), haldclut (16-bit PNG: darktable, "
        "RawTherapee, G'MIC, ffmpeg), 3dl (Flame, Lustre, Nuke), spi3d / csp (OpenColorIO), "
        "icc (ICC v4 input profile to assign to an sRGB photo: Photoshop, Capture One)",
    )
    level: Literal[8, 12, 16] | None = Field(
        None, description="HaldCLUT level (8: 64^3, 12: 144^3, 16: 256^3 entries); haldclut only"
    )

    @model_validator(mode="after")
    def _level_for_hald(self) -> ExportRequest:
        if self.level is not None and self.format != "haldclut":
            raise ValueError("level applies to format haldclut only")
        if self.format == "haldclut" and "size" in self.model_fields_set:
            raise ValueError("a haldclut export takes level (8, 12 or 16), not size")
        return self


# ---- responses ------------------------------------------------------------------------------
class ApplyBatchOut(BaseModel):
    jobs: list[JobOut]


class LutOut(BaseModel):
    """A 3D LUT for in-browser previews: ``size``^3 RGB entries, red index fastest (the
    ``.cube`` order, which is also WebGL's x-fastest ``texImage3D`` order)."""

    size: int = Field(description="points per axis")
    domain_min: list[float]
    domain_max: list[float]
    lo: float = Field(description="value of code 0")
    hi: float = Field(description="value of code 65535")
    data: str = Field(
        description="base64 of little-endian uint16 codes, size^3 * 3 of them (R, G, B per "
        "entry); value = lo + (hi - lo) * code / 65535"
    )
    lut_key_version: str = Field(description="changes when the style's LUT changes (caching)")


class StyleOut(BaseModel):
    """A style as every endpoint returns it (lists included)."""

    id: uuid.UUID
    owner: UserPublic
    name: str
    description: str
    tags: list[str]
    visibility: Visibility
    status: StyleStatus
    model: StyleModelKind | None
    preview_url: str | None
    metrics: dict[str, Any] | None
    error: str | None = None
    rating_avg: float | None = Field(description="plain mean of the ratings; null when unrated")
    rating_count: int
    comment_count: int
    apply_count: int
    forked_from: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
