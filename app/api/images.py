"""``/api/v1/images``: presigned upload, confirm, list, get, delete (API.md "Images").

Uploads never stream through the API: ``POST /images/upload`` answers a presigned PUT (S3, or
the local backend's signed URL), the client PUTs the bytes there with exactly the returned
``headers``, then ``POST /images/{id}/confirm``. Another user's image is a 404 everywhere.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from app.dependencies import CurrentUser, SessionDep, SettingsDep, StorageDep
from app.errors import error_body
from app.schemas.common import ErrorResponse, Page, Text
from app.schemas.image import ImageOut, UploadRequest, UploadResponse
from app.services import image_service

router = APIRouter(prefix="/images", tags=["images"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadResponse,
    responses=_errors(413, 415),
)
async def start_upload(
    data: UploadRequest,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Any:
    """Step 1: get a URL to PUT the file to (10 minutes, this exact type and length).

    ``content_type``: image/jpeg, image/png, image/webp, image/heic, image/heif or image/tiff
    (415 otherwise); ``size`` in bytes, at most 50 MB (413); ``store_exif`` keeps the photo's
    EXIF metadata (never GPS).
    """
    image, upload = await image_service.create_upload(session, storage, settings, user, data)
    return UploadResponse(
        image_id=image.id,
        upload_url=upload.url,
        method=upload.method,
        headers=upload.headers,
        expires_at=upload.expires_at,
    )


@router.post(
    "/{image_id}/confirm",
    response_model=ImageOut,
    responses=_errors(409, 413, 415, 422),
)
async def confirm_upload(
    image_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Any:
    """Step 3: check and decode the uploaded file, then queue its thumbnail.

    409 if nothing was uploaded (``upload_not_found``) or the URL expired first
    (``upload_expired``); 415 if the bytes are not the declared type; 413 for more than 100
    megapixels; 422 for a truncated or corrupt file. In those three cases the file is deleted and
    the image stays ``failed`` with its ``error``. Confirming a confirmed image returns it again.
    """
    outcome = await image_service.confirm_upload(session, storage, settings, user, image_id)
    if outcome.error is not None:
        # Answered, not raised: the request's transaction must commit the `failed` status.
        err = outcome.error
        return JSONResponse(
            error_body(err.code, err.message, {**(err.details or {}), "image_id": str(image_id)}),
            status_code=err.status_code,
        )
    return await to_thread.run_sync(image_service.image_out, outcome.image, storage, settings)


@router.get("", response_model=Page[ImageOut])
async def list_images(
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Text | None = None,
) -> Any:
    """The caller's images, newest first."""
    images, next_cursor = await image_service.list_images(session, user, limit=limit, cursor=cursor)
    items = await image_service.images_out(images, storage, settings)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{image_id}", response_model=ImageOut, responses=_errors(404))
async def get_image(
    image_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Any:
    """One image; ``original_url`` and ``thumbnail_url`` are short-lived presigned GETs."""
    image = await image_service.get_owned_image(session, user, image_id)
    return await to_thread.run_sync(image_service.image_out, image, storage, settings)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_errors(404))
async def delete_image(
    image_id: uuid.UUID, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> Response:
    """Delete the image and its stored objects (original, thumbnail, results made from it)."""
    await image_service.delete_image(session, storage, user, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
