"""Images: the presigned upload flow, list/get/delete, thumbnails and abandoned-upload cleanup.

Upload flow (``backend-architecture.md`` steps 1-9, ``API.md`` "Images"):

1. :func:`create_upload` validates the declared type (415) and size (413), presigns a PUT of the
   exact key, type and length (10 minutes) and adds the ``pending`` row.
2. The client PUTs the bytes straight to the storage (S3, or the local signed-URL route).
3. :func:`confirm_upload` checks the object (HeadObject: present, the declared size), its magic
   bytes against the declared type (415 and the object deleted on a mismatch), decodes it safely
   in a thread (bombs: 413; truncated or corrupt: 422; the object deleted and the row ``failed``
   with a readable ``error``), records width, height, format, color profile and, only when the
   user opted in, EXIF without GPS; then marks the row ``confirmed`` and queues the thumbnail job
   (sent after commit). Confirming a confirmed image returns it again without a new job.

Failures of step 3 are *recorded*, so :func:`confirm_upload` does not raise them (raising rolls
the request back): it returns a :class:`ConfirmOutcome` whose ``error`` the route answers with.

Worker side (sync): :func:`generate_thumbnail` (the ``picfilter.thumbnail`` job) and
:func:`cleanup_expired_uploads` (``picfilter.cleanup_expired_uploads``, hourly).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import SyncDatabase
from app.errors import (
    AppError,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.ml import imaging
from app.models import Image, ImageStatus, Job, JobType, User
from app.models.base import utcnow
from app.schemas.image import ImageOut, UploadRequest
from app.services import job_service
from app.services.job_service import JobContext, PermanentJobError
from app.services.pagination import newest_first
from app.storage import ObjectInfo, PresignedUpload, Storage, StorageObjectNotFound
from app.storage.keys import image_prefix, original_key, result_prefix, thumbnail_key

log = logging.getLogger("picfilter.images")

#: accepted content types -> file extension of the stored original
ALLOWED_TYPES: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/tiff": "tiff",
}
#: pending uploads whose URL expired longer ago than this are removed
CLEANUP_GRACE = timedelta(days=1)
# Decoding may hold up to max_image_pixels x 4 bytes: at most IMAGE_DECODE_CONCURRENCY checks
# at once per API process (PNGs and JPEGs are checked in little memory, other formats decoded).
_decode_slots: dict[int, threading.BoundedSemaphore] = {}
_decode_slots_lock = threading.Lock()


def decode_slots(settings: Settings) -> threading.BoundedSemaphore:
    """The process's semaphore bounding concurrent upload checks."""
    with _decode_slots_lock:
        n = settings.image_decode_concurrency
        return _decode_slots.setdefault(n, threading.BoundedSemaphore(n))


def image_not_found() -> NotFound:
    return NotFound("Image not found", code="image_not_found")


# ---- upload ---------------------------------------------------------------------------------
async def create_upload(
    session: AsyncSession, storage: Storage, settings: Settings, user: User, data: UploadRequest
) -> tuple[Image, PresignedUpload]:
    """Steps 1-3: validate, presign the PUT, add the ``pending`` row."""
    ext = ALLOWED_TYPES.get(data.content_type)
    if ext is None:
        raise UnsupportedMediaType(
            f"content_type {data.content_type!r} is not accepted; use one of "
            + ", ".join(ALLOWED_TYPES),
            code="unsupported_content_type",
            details={"allowed": list(ALLOWED_TYPES)},
        )
    if data.size > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"The file is {data.size} bytes; at most {settings.max_upload_bytes} bytes "
            f"({settings.max_upload_bytes // (1024 * 1024)} MB) are accepted",
            code="file_too_large",
            details={"max_bytes": settings.max_upload_bytes},
        )
    image_id = uuid.uuid4()
    key = original_key(user.id, image_id, ext)
    upload = await to_thread.run_sync(
        storage.presign_put, key, data.content_type, data.size, settings.presign_put_expire_seconds
    )
    image = Image(
        id=image_id,
        owner_id=user.id,
        filename=data.filename,
        content_type=data.content_type,
        size=data.size,
        status=ImageStatus.pending,
        storage_key=key,
        store_exif=data.store_exif,
        upload_expires_at=upload.expires_at,
    )
    session.add(image)
    await session.flush()
    return image, upload


@dataclass
class ConfirmOutcome:
    """The image after confirm; ``error`` is set when the file was refused (row now ``failed``)."""

    image: Image
    error: AppError | None = None


@dataclass(frozen=True)
class _Inspection:
    probe: imaging.ImageProbe
    format: str


class _Rejected(Exception):
    """The uploaded file is refused for good (the object is deleted, the row marked failed)."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.message)
        self.error = error


def _inspect(storage: Storage, settings: Settings, image: Image, info: ObjectInfo) -> _Inspection:
    """Size, magic bytes, safe decode (runs in a worker thread, never in the event loop)."""
    if info.size > settings.max_upload_bytes:
        raise _Rejected(
            PayloadTooLarge(f"The stored file is {info.size} bytes", code="file_too_large")
        )
    if info.size != image.size:
        raise _Rejected(
            InvalidInput(
                f"The stored file is {info.size} bytes, not the {image.size} bytes declared",
                code="size_mismatch",
            )
        )
    declared = imaging.FAMILY_OF_TYPE[image.content_type]
    head = storage.read_range(image.storage_key, 0, imaging.SNIFF_BYTES)
    found = imaging.sniff(head)
    if found != declared:
        what = f"a {imaging.FAMILY_NAMES[found]} image" if found else "not a supported image"
        raise _Rejected(
            UnsupportedMediaType(
                f"The file is {what}, not {image.content_type} as declared",
                code="content_mismatch",
                details={"declared": image.content_type, "detected": found},
            )
        )
    with decode_slots(settings), tempfile.TemporaryDirectory(prefix="picfilter-confirm-") as tmp:
        path = Path(tmp) / "original"
        storage.download_to(image.storage_key, path)
        try:
            probe = imaging.probe(
                path, declared, max_pixels=settings.max_image_pixels, want_exif=image.store_exif
            )
        except imaging.ImageTooLarge as exc:
            raise _Rejected(PayloadTooLarge(str(exc), code="image_too_large")) from exc
        except imaging.ImageDecodeError as exc:
            raise _Rejected(InvalidInput(str(exc), code="image_undecodable")) from exc
    fmt = imaging.heif_flavour(head) if declared == "heif" else declared
    return _Inspection(probe, fmt)


async def confirm_upload(
    session: AsyncSession, storage: Storage, settings: Settings, user: User, image_id: uuid.UUID
) -> ConfirmOutcome:
    """Steps 5-9 (see the module docstring). Idempotent."""
    image = await get_owned_image(session, user, image_id)
    if image.status == ImageStatus.confirmed:
        return ConfirmOutcome(image)
    if image.status == ImageStatus.failed:
        raise Conflict(
            f"This upload was refused: {image.error} Start a new upload.",
            code="image_failed",
            details={"error": image.error},
        )
    info = await to_thread.run_sync(storage.head, image.storage_key)
    if info is None:
        if utcnow() > image.upload_expires_at:
            raise Conflict(
                "The upload URL expired before a file was uploaded; start a new upload",
                code="upload_expired",
            )
        raise Conflict(
            "Upload not found; PUT the file first (to upload_url)", code="upload_not_found"
        )
    try:
        inspection = await to_thread.run_sync(
            functools.partial(_inspect, storage, settings, image, info)
        )
    except StorageObjectNotFound as exc:  # deleted between HeadObject and the read
        raise Conflict(
            "Upload not found; PUT the file first (to upload_url)", code="upload_not_found"
        ) from exc
    except _Rejected as rejected:
        await to_thread.run_sync(storage.delete, image.storage_key)
        await session.execute(
            update(Image)
            .where(Image.id == image.id, Image.status == ImageStatus.pending)
            .values(status=ImageStatus.failed, error=rejected.error.message)
        )
        await session.flush()
        await session.refresh(image)
        log.info("image %s refused: %s", image.id, rejected.error.message)
        return ConfirmOutcome(image, rejected.error)

    probe = inspection.probe
    result = await session.execute(
        update(Image)
        .where(Image.id == image.id, Image.status == ImageStatus.pending)
        .values(
            status=ImageStatus.confirmed,
            width=probe.width,
            height=probe.height,
            format=inspection.format,
            color_profile=probe.color_profile,
            exif=probe.exif if image.store_exif else None,
            error=None,
            confirmed_at=utcnow(),
        )
    )
    if getattr(result, "rowcount", 0) == 1:  # a concurrent confirm may have won the race
        job_service.create_job(session, user.id, JobType.thumbnail, image_id=image.id)
    await session.flush()
    await session.refresh(image)
    return ConfirmOutcome(image)


# ---- read, list, delete ---------------------------------------------------------------------
async def get_owned_image(session: AsyncSession, user: User, image_id: uuid.UUID) -> Image:
    """The caller's image; another user's image is the same 404 as a missing one."""
    image = await session.get(Image, image_id)
    if image is None or image.owner_id != user.id:
        raise image_not_found()
    return image


async def list_images(
    session: AsyncSession, user: User, *, limit: int, cursor: str | None
) -> tuple[list[Image], str | None]:
    """The caller's images, newest first (keyset pagination on created_at, id)."""
    stmt = select(Image).where(Image.owner_id == user.id)
    return await newest_first(session, stmt, Image.created_at, Image.id, limit=limit, cursor=cursor)


def image_out(image: Image, storage: Storage, settings: Settings) -> ImageOut:
    """The client's view of an image, with short-lived presigned GETs (sync: presigning)."""
    ttl = settings.presign_get_expire_seconds
    confirmed = image.status == ImageStatus.confirmed
    return ImageOut(
        id=image.id,
        filename=image.filename,
        content_type=image.content_type,
        status=image.status,
        width=image.width,
        height=image.height,
        format=image.format,
        color_profile=image.color_profile,
        size=image.size,
        original_url=storage.presign_get(image.storage_key, ttl) if confirmed else None,
        thumbnail_url=(
            storage.presign_get(image.thumbnail_key, ttl) if image.thumbnail_key else None
        ),
        exif=image.exif if image.store_exif else None,
        error=image.error if image.status == ImageStatus.failed else None,
        created_at=image.created_at,
        confirmed_at=image.confirmed_at,
    )


async def images_out(
    images: Sequence[Image], storage: Storage, settings: Settings
) -> list[ImageOut]:
    """Serialize many images in one thread hop (presigning is blocking CPU work)."""
    return await to_thread.run_sync(lambda: [image_out(i, storage, settings) for i in images])


async def delete_image(
    session: AsyncSession, storage: Storage, user: User, image_id: uuid.UUID
) -> None:
    """Delete the row and every stored object: original, thumbnail, results made from it.

    Results are keyed by job id, so the apply jobs of this image name their prefixes. The row
    is deleted (flushed) first and the objects after; if the storage fails, the request rolls
    back and the image is still there to delete again.
    """
    image = await get_owned_image(session, user, image_id)
    jobs = (
        await session.execute(
            select(Job.id, Job.owner_id).where(
                Job.image_id == image.id, Job.type == JobType.apply_style
            )
        )
    ).all()
    prefixes = [image_prefix(image.owner_id, image.id)]
    prefixes += [result_prefix(owner_id, job_id) for job_id, owner_id in jobs]
    keys = [k for k in (image.storage_key, image.thumbnail_key) if k]
    await session.execute(delete(Image).where(Image.id == image.id))
    await session.flush()

    def remove() -> None:
        for key in keys:
            storage.delete(key)
        for prefix in prefixes:
            storage.delete_prefix(prefix)

    await to_thread.run_sync(remove)


# ---- worker side ----------------------------------------------------------------------------
def generate_thumbnail(ctx: JobContext, storage: Storage) -> dict[str, Any]:
    """The thumbnail job: at most 400x400, WebP q80, upright, sRGB; sets ``thumbnail_key``."""
    if ctx.image_id is None:
        raise PermanentJobError("thumbnail job without an image")
    with ctx.db.session() as s:
        image = s.get(Image, ctx.image_id)
        if image is None:
            raise PermanentJobError("the image was deleted")
        if image.status != ImageStatus.confirmed:
            raise PermanentJobError(f"the image is {image.status.value}, not confirmed")
        owner_id, image_id, key = image.owner_id, image.id, image.storage_key
        content_type = image.content_type
    family = imaging.FAMILY_OF_TYPE.get(content_type)
    if family is None:
        raise PermanentJobError(f"unsupported content type {content_type}")
    ctx.progress(10, "downloading the original")
    with tempfile.TemporaryDirectory(prefix="picfilter-thumb-") as tmp:
        path = Path(tmp) / "original"
        try:
            storage.download_to(key, path)
        except StorageObjectNotFound as exc:
            raise PermanentJobError("the original is missing from storage") from exc
        ctx.progress(40, "making the thumbnail")
        try:
            thumb = imaging.make_thumbnail(path, family, max_pixels=ctx.settings.max_image_pixels)
        except imaging.ImageDecodeError as exc:
            raise PermanentJobError(str(exc)) from exc
        finally:
            imaging.release_freed_memory()  # the decoded original was up to 100 MP
    ctx.progress(80, "storing the thumbnail")
    tkey = thumbnail_key(owner_id, image_id, thumb.data)
    storage.put_bytes(tkey, thumb.data, "image/webp")
    with ctx.db.session() as s:
        res = s.execute(update(Image).where(Image.id == image_id).values(thumbnail_key=tkey))
        updated = getattr(res, "rowcount", 0) == 1
    if not updated:  # deleted while we worked: leave nothing behind
        storage.delete(tkey)
        raise PermanentJobError("the image was deleted while its thumbnail was made")
    return {"width": thumb.width, "height": thumb.height, "bytes": len(thumb.data)}


def cleanup_expired_uploads(
    db: SyncDatabase,
    storage: Storage,
    *,
    grace: timedelta = CLEANUP_GRACE,
    now: datetime | None = None,
    batch: int = 200,
) -> dict[str, int]:
    """Remove ``pending`` images whose upload URL expired over ``grace`` ago (rows + objects)."""
    cutoff = (now or utcnow()) - grace
    removed = 0
    while True:
        with db.session() as s:
            rows = s.execute(
                select(Image.id, Image.owner_id)
                .where(Image.status == ImageStatus.pending, Image.upload_expires_at < cutoff)
                .order_by(Image.upload_expires_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            for image_id, owner_id in rows:
                storage.delete_prefix(image_prefix(owner_id, image_id))
                s.execute(
                    delete(Image).where(Image.id == image_id, Image.status == ImageStatus.pending)
                )
        removed += len(rows)
        if len(rows) < batch:
            break
    if removed:
        log.info("removed %d abandoned uploads", removed)
    return {"removed": removed}
