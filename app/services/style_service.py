"""Styles (API side): CRUD, visibility, submitting learn/apply/export jobs, cancelling a learn.

Visibility (API.md): a ``private`` style exists only for its owner (everyone else gets the same
404 as for a missing id), an ``unlisted`` one is readable by anyone with its id, a ``public`` one
is also listed in the gallery. Only the owner changes, deletes or re-learns a style; applying,
exporting and forking work on the caller's own styles and on public/unlisted ones.

:func:`style_out` is the one serializer of a style (the gallery reuses it) and
:func:`get_visible_style` the one visibility check (the community service reuses it).

Model versions: ``Style.model_version`` goes up by one each time a learn job is submitted; the
job carries that number and publishes its model only if the row still has it (a stale or
superseded job cannot overwrite a newer model). Stored objects live under versioned keys
(``styles/{id}/v{n}/model.pt``, ``lut.cube``, ``preview.webp``); the row's ``model_key``,
``lut_key`` and ``preview_key`` switch to the new ones in one UPDATE, so a concurrent apply reads
either the old or the new model, never a half-written one. The worker side is
:mod:`app.services.style_jobs`, import and fork are :mod:`app.services.style_sharing`; what both
sides share (slugs, settling a stopped learn, the rating mean) is :mod:`app.services.style_rules`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from app.config import Settings
from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.ml.options import OptionsError, validate_options
from app.models import (
    Image,
    ImageStatus,
    Job,
    JobStatus,
    JobType,
    Style,
    StyleStatus,
    StyleTrainingImage,
    TrainingRole,
    User,
    Visibility,
)
from app.models.base import utcnow
from app.schemas.auth import UserPublic
from app.schemas.style import MAX_TAG_LENGTH, MAX_TAGS, StyleOut
from app.services import job_service
from app.services.style_rules import (
    DEFAULT_HALD_LEVEL,
    EXPORT_FORMATS,
    HALD_LEVELS,
    export_filename,
    learn_stop_reason,
    public_metrics,
    rating_average,
    settle_learn_update,
)

if TYPE_CHECKING:
    from app.storage import Storage

# Aspect ratios of a before/after pair may differ by rounding only (e.g. an export at another size).
ASPECT_TOLERANCE = 0.01
LEARNABLE_MODELS = ("auto", "dlut", "nilut", "adaptive_3dlut")
EXPORT_SIZES = (17, 33, 65)


# ---- lookups and serialization --------------------------------------------------------------
def style_not_found() -> NotFound:
    return NotFound("Style not found", code="style_not_found")


def can_view(style: Style, user: User | None) -> bool:
    """Private styles are visible to their owner only; unlisted and public ones to anyone."""
    if style.visibility != Visibility.private:
        return True
    return user is not None and style.owner_id == user.id


# Built once: building it per request was ~10 % of a style read's CPU (profiled).
_VISIBLE = (
    select(Style)
    .where(Style.id == bindparam("style_id", type_=Style.id.type))
    .options(joinedload(Style.owner))
)
_VISIBLE_FOR_UPDATE = _VISIBLE.with_for_update(of=Style)


async def get_visible_style(
    session: AsyncSession, style_id: uuid.UUID, user: User | None, *, for_update: bool = False
) -> Style:
    """The style with ``owner`` loaded; 404 if it is missing or another user's private style."""
    stmt = _VISIBLE_FOR_UPDATE if for_update else _VISIBLE
    style = (await session.execute(stmt, {"style_id": style_id})).scalar_one_or_none()
    if style is None or not can_view(style, user):
        raise style_not_found()
    return style


async def get_owned_style(
    session: AsyncSession, style_id: uuid.UUID, user: User, *, for_update: bool = False
) -> Style:
    """The caller's own style; 404 for another user's private style, 403 for a visible one."""
    style = await get_visible_style(session, style_id, user, for_update=for_update)
    if style.owner_id != user.id:
        raise Forbidden("Only the style's owner can do this", code="not_style_owner")
    return style


def style_out(style: Style, owner: User, storage: Storage) -> StyleOut:
    """The API representation of a style (every endpoint, lists included).

    ``preview_url`` is a short-lived presigned GET of the preview (null until there is one).
    """
    preview_url = storage.presign_get(style.preview_key) if style.preview_key else None
    return StyleOut(
        id=style.id,
        owner=UserPublic(id=owner.id, username=owner.username),
        name=style.name,
        description=style.description or "",
        tags=list(style.tags or []),
        visibility=style.visibility,
        status=style.status,
        model=style.model,
        preview_url=preview_url,
        metrics=public_metrics(style.metrics),
        error=style.error,
        rating_avg=rating_average(style.rating_sum or 0, style.rating_count or 0),
        rating_count=style.rating_count or 0,
        comment_count=style.comment_count or 0,
        apply_count=style.apply_count or 0,
        forked_from=style.forked_from_id,
        created_at=style.created_at,
        updated_at=style.updated_at,
    )


def normalize_tags(tags: Sequence[str] | None, field: str = "tags") -> list[str]:
    """Trimmed, lower-cased, de-duplicated tags (order kept); 422 naming a bad one."""
    out: list[str] = []
    for i, raw in enumerate(tags or []):
        tag = " ".join(str(raw).split()).lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise InvalidInput(
                f"Tag {i} is longer than {MAX_TAG_LENGTH} characters",
                code="invalid_tag",
                details={"field": f"{field}[{i}]"},
            )
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise InvalidInput(
            f"At most {MAX_TAGS} tags", code="too_many_tags", details={"field": field}
        )
    return out


# ---- CRUD -----------------------------------------------------------------------------------
async def create_style(
    session: AsyncSession,
    user: User,
    *,
    name: str,
    description: str = "",
    tags: Sequence[str] | None = None,
    visibility: Visibility = Visibility.private,
) -> Style:
    """A new ``draft`` style owned by ``user`` (``owner`` set, flushed)."""
    style = Style(
        id=uuid.uuid4(),
        owner_id=user.id,
        name=name.strip(),
        description=description or "",
        tags=normalize_tags(tags),
        visibility=visibility,
        status=StyleStatus.draft,
    )
    style.owner = user
    session.add(style)
    await session.flush()
    return style


async def _latest_learn_job(session: AsyncSession, style_id: uuid.UUID) -> Job | None:
    stmt = (
        select(Job)
        .where(Job.style_id == style_id, Job.type == JobType.learn_style)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def settle_training(session: AsyncSession, style: Style) -> None:
    """A style left in ``training`` by a learn job that ended without reaching the worker's
    failure hook (cancelled while queued, failed by the stuck-job sweep) goes back to its
    previous state (:func:`app.services.style_rules.settle_learn_update`, the rule the worker
    side applies too): ``ready`` if it still has a model, else ``failed``."""
    if style.status != StyleStatus.training:
        return
    job = await _latest_learn_job(session, style.id)
    if job is not None and not job.status.finished:
        return
    if job is not None and job.params.get("model_version") not in (None, style.model_version):
        return
    reason = learn_stop_reason(
        job.error if job is not None else None,
        cancelled=job is not None and job.status == JobStatus.cancelled,
    )
    res = await session.execute(settle_learn_update(style.id, style.model_version, reason))
    if getattr(res, "rowcount", 0) == 1:
        await session.refresh(style, ["status", "error", "updated_at"])


async def settle_after_cancel(session: AsyncSession, job: Job) -> None:
    """After a job was cancelled: a learn job's style goes back as it was (ready with its
    previous model, or failed) at once, without waiting for the worker's failure hook."""
    if job.type != JobType.learn_style or job.style_id is None:
        return
    style = await session.get(Style, job.style_id)
    if style is not None:
        await settle_training(session, style)


async def get_style(session: AsyncSession, style_id: uuid.UUID, user: User | None) -> Style:
    style = await get_visible_style(session, style_id, user)
    if user is not None and style.owner_id == user.id:
        await settle_training(session, style)
    return style


async def update_style(
    session: AsyncSession, style_id: uuid.UUID, user: User, changes: dict[str, Any]
) -> Style:
    """Change name, description, tags or visibility (owner only)."""
    style = await get_owned_style(session, style_id, user)
    if "name" in changes and changes["name"] is not None:
        style.name = str(changes["name"]).strip()
    if "description" in changes:
        style.description = changes["description"] or ""
    if "tags" in changes:
        style.tags = normalize_tags(changes["tags"])
    if "visibility" in changes and changes["visibility"] is not None:
        style.visibility = Visibility(changes["visibility"])
    style.updated_at = utcnow()
    await session.flush()
    return style


def style_prefixes(style_id: uuid.UUID) -> list[str]:
    """Every storage prefix holding a style's objects (model, LUT, preview, exported cubes)."""
    return [f"styles/{style_id}/", f"cubes/{style_id}/"]


def delete_style_objects(storage: Storage, style_id: uuid.UUID) -> int:
    return sum(storage.delete_prefix(prefix) for prefix in style_prefixes(style_id))


async def delete_style(
    session: AsyncSession, style_id: uuid.UUID, user: User, storage: Storage
) -> None:
    """Delete a style (owner only), end its unfinished jobs as failed ("style deleted") and
    remove its stored objects.

    The row is deleted (and locked) first; the objects are removed while the lock is held, so a
    worker finishing a job meanwhile waits for this transaction, then sees the style gone and
    removes what it wrote (see :mod:`app.services.style_jobs`).
    """
    style = await get_owned_style(session, style_id, user)
    now = utcnow()
    await session.execute(
        update(Job)
        .where(
            Job.style_id == style.id,
            Job.status.in_([JobStatus.queued, JobStatus.processing]),
        )
        .values(status=JobStatus.failed, error="style deleted", finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(Style).where(Style.id == style.id).execution_options(synchronize_session=False)
    )
    await anyio.to_thread.run_sync(delete_style_objects, storage, style.id)


# ---- learn ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairIds:
    before_image_id: uuid.UUID
    after_image_id: uuid.UUID


def bad_item(message: str, code: str, field: str, **extra: Any) -> InvalidInput:
    return InvalidInput(message, code=code, details={"field": field, **extra})


async def _load_images(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Image]:
    if not ids:
        return {}
    rows = (await session.execute(select(Image).where(Image.id.in_(set(ids))))).scalars()
    return {img.id: img for img in rows}


def _check_image(
    images: dict[uuid.UUID, Image], image_id: uuid.UUID, user: User, field: str
) -> Image:
    image = images.get(image_id)
    if image is None or image.owner_id != user.id:
        raise bad_item(f"{field}: image {image_id} not found", "image_not_found", field)
    if image.status != ImageStatus.confirmed or not image.width or not image.height:
        raise bad_item(
            f"{field}: image {image_id} is not confirmed (status {image.status.value})",
            "image_not_confirmed",
            field,
        )
    return image


async def submit_learn(
    session: AsyncSession,
    style_id: uuid.UUID,
    user: User,
    settings: Settings,
    *,
    model: str,
    pairs: Sequence[PairIds],
    reference_image_ids: Sequence[uuid.UUID],
    options: dict[str, Any],
) -> Job:
    """Validate the training set and queue a learn job; the style becomes ``training``.

    Every image must be the caller's and confirmed; a pair's images must have the same aspect
    ratio; at most ``settings.max_learn_items`` pairs and references together. Re-learning while
    a learn job is still queued or running is a 409. ``options`` must fit the model's typed
    options model (:func:`app.ml.options.validate_options`): a 422 naming the option, so the
    worker never retries a job over a bad option. ``model`` ``auto`` is stored as asked; the
    style's ``model`` becomes the kind the worker chose.
    """
    style = await get_owned_style(session, style_id, user)
    model = str(model)
    if model not in LEARNABLE_MODELS:
        raise bad_item(f"model {model!r} cannot be learned", "invalid_model", "model")
    if not pairs and not reference_image_ids:
        raise bad_item(
            "Give pairs and/or reference_image_ids (at least one image)",
            "no_training_images",
            "pairs",
        )
    if model == "adaptive_3dlut" and not pairs:
        raise bad_item(
            "adaptive_3dlut learns from before/after pairs; learn reference images with dlut "
            "or nilut",
            "pairs_required",
            "pairs",
        )
    try:
        options = validate_options(model, options, paired=bool(pairs))
    except OptionsError as exc:
        raise bad_item(
            f"options.{exc.field}: {exc.message}" if exc.field else str(exc),
            "invalid_option",
            f"options.{exc.field}" if exc.field else "options",
            model=exc.model,
            errors=exc.errors,
        ) from None
    total = len(pairs) + len(reference_image_ids)
    if total > settings.max_learn_items:
        raise bad_item(
            f"At most {settings.max_learn_items} pairs and references together, got {total}",
            "too_many_training_images",
            "pairs" if len(pairs) > settings.max_learn_items else "reference_image_ids",
            limit=settings.max_learn_items,
        )
    ids = [p.before_image_id for p in pairs] + [p.after_image_id for p in pairs]
    images = await _load_images(session, [*ids, *reference_image_ids])
    for i, pair in enumerate(pairs):
        before = _check_image(images, pair.before_image_id, user, f"pairs[{i}].before_image_id")
        after = _check_image(images, pair.after_image_id, user, f"pairs[{i}].after_image_id")
        if pair.before_image_id == pair.after_image_id:
            raise bad_item(
                f"pairs[{i}]: before and after are the same image",
                "same_image",
                f"pairs[{i}].after_image_id",
            )
        ratio_b = (before.width or 1) / (before.height or 1)
        ratio_a = (after.width or 1) / (after.height or 1)
        if abs(math.log(ratio_b / ratio_a)) > ASPECT_TOLERANCE:
            raise bad_item(
                f"pairs[{i}]: the after image ({after.width}x{after.height}) does not have the "
                f"aspect ratio of the before image ({before.width}x{before.height})",
                "aspect_ratio_mismatch",
                f"pairs[{i}].after_image_id",
            )
    for i, ref in enumerate(reference_image_ids):
        _check_image(images, ref, user, f"reference_image_ids[{i}]")

    if style.status == StyleStatus.training:
        await settle_training(session, style)
        if style.status == StyleStatus.training:
            raise Conflict(
                "The style is already learning; wait for its job or cancel it",
                code="style_training",
            )
    version = style.model_version + 1
    claimed = await session.execute(
        update(Style)
        .where(Style.id == style.id, Style.model_version == style.model_version)
        .values(status=StyleStatus.training, model_version=version, error=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        raise Conflict("The style changed meanwhile; try again", code="style_training")
    await session.execute(delete(StyleTrainingImage).where(StyleTrainingImage.style_id == style.id))
    position = 0
    for pair in pairs:
        for role, image_id in (
            (TrainingRole.before, pair.before_image_id),
            (TrainingRole.after, pair.after_image_id),
        ):
            session.add(
                StyleTrainingImage(
                    id=uuid.uuid4(),
                    style_id=style.id,
                    image_id=image_id,
                    role=role,
                    position=position,
                )
            )
        position += 1
    for ref in reference_image_ids:
        session.add(
            StyleTrainingImage(
                id=uuid.uuid4(),
                style_id=style.id,
                image_id=ref,
                role=TrainingRole.reference,
                position=position,
            )
        )
        position += 1
    params = {
        "style_id": str(style.id),
        "model_version": version,
        "model": model,
        "pairs": [
            {"before": str(p.before_image_id), "after": str(p.after_image_id)} for p in pairs
        ],
        "references": [str(r) for r in reference_image_ids],
        "options": options,
    }
    job = job_service.create_job(
        session, user.id, JobType.learn_style, params=params, style_id=style.id
    )
    await session.flush()
    return job


# ---- apply / export -------------------------------------------------------------------------
def _require_model(style: Style) -> None:
    if not style.model_key:
        raise Conflict(
            f"The style has no model yet (status {style.status.value}); learn or import one first",
            code="style_not_ready",
        )


async def submit_apply(
    session: AsyncSession,
    style_id: uuid.UUID,
    user: User,
    *,
    image_ids: Sequence[uuid.UUID],
    field: str,
    strength: float,
    fmt: str | None,
    quality: int | None,
    output_profile: str = "source",
) -> list[Job]:
    """Queue one apply job per distinct image (the caller's confirmed images; a repeated id
    is applied once, in the order of its first occurrence) with a visible style.

    A style that is re-learning still has its previous model, so applying to it works.
    """
    style = await get_visible_style(session, style_id, user)
    _require_model(style)
    images = await _load_images(session, image_ids)
    jobs = []
    seen: set[uuid.UUID] = set()
    for i, image_id in enumerate(image_ids):
        if image_id in seen:
            continue
        seen.add(image_id)
        name = field if len(image_ids) == 1 and field == "image_id" else f"{field}[{i}]"
        _check_image(images, image_id, user, name)
        params = {
            "style_id": str(style.id),
            "image_id": str(image_id),
            "strength": strength,
            "format": fmt,
            "quality": quality,
            "output_profile": output_profile,
        }
        jobs.append(
            job_service.create_job(
                session,
                user.id,
                JobType.apply_style,
                params=params,
                style_id=style.id,
                image_id=image_id,
            )
        )
    await session.flush()
    return jobs


async def submit_export(
    session: AsyncSession,
    style_id: uuid.UUID,
    user: User,
    *,
    size: int,
    fmt: str = "cube",
    level: int | None = None,
) -> Job:
    """Queue an export (``.cube``, HaldCLUT, ``.3dl``, ``.spi3d``, ``.csp``, ICC) of a visible
    style that has a model."""
    style = await get_visible_style(session, style_id, user)
    _require_model(style)
    if fmt not in EXPORT_FORMATS:
        formats = sorted(EXPORT_FORMATS)
        raise bad_item(f"format must be one of {formats}", "invalid_format", "format")
    if fmt == "haldclut":
        level = level or DEFAULT_HALD_LEVEL
        if level not in HALD_LEVELS:
            raise bad_item(f"level must be one of {HALD_LEVELS}", "invalid_level", "level")
    elif size not in EXPORT_SIZES:
        raise bad_item(f"size must be one of {EXPORT_SIZES}", "invalid_size", "size")
    params: dict[str, Any] = {
        "style_id": str(style.id),
        "size": size,
        "format": fmt,
        "filename": export_filename(style.name, fmt, size, level),
    }
    if fmt == "haldclut":
        params["level"] = level
    job = job_service.create_job(
        session, user.id, JobType.export_cube, params=params, style_id=style.id
    )
    await session.flush()
    return job
