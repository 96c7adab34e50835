"""``/api/v1/styles``: CRUD, gallery listing, learn, apply, export, import and fork.

Thin routes: request shapes in :mod:`app.schemas.style`, rules and transactions in
:mod:`app.services.style_service` (the gallery listing in :mod:`app.services.gallery_service`).
Long work (learning, applying, exporting) is a job: the route answers ``202`` with the job, which
the client polls at ``GET /api/v1/jobs/{id}``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Body,
    Depends,
    File,
    Form,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from app.dependencies import (
    CurrentUser,
    OptionalUser,
    SessionDep,
    SettingsDep,
    StorageDep,
    count_rate_limit,
    rate_limit,
)
from app.errors import NotAuthenticated, PayloadTooLarge
from app.models import StyleModelKind, Visibility
from app.schemas.common import ErrorResponse, Page, Text
from app.schemas.job import JobOut
from app.schemas.style import (
    ApplyBatchOut,
    ApplyRequest,
    Cursor,
    ExportRequest,
    LearnRequest,
    Owner,
    SearchText,
    StyleCreate,
    StyleDescription,
    StyleName,
    StyleOut,
    StylePatch,
    TagFilter,
)
from app.services import gallery_service, style_service, style_sharing
from app.services.style_service import PairIds, style_out

router = APIRouter(prefix="/styles", tags=["styles"])
job_limit = [Depends(rate_limit("jobs"))]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


# ---- CRUD -----------------------------------------------------------------------------------
@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=StyleOut, responses=_errors(401)
)
async def create_style(
    data: StyleCreate, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> StyleOut:
    """Create a ``draft`` style; learn it (``/learn``) or import a ``.cube`` instead."""
    style = await style_service.create_style(
        session,
        user,
        name=data.name,
        description=data.description,
        tags=data.tags,
        visibility=data.visibility,
    )
    return style_out(style, user, storage)


@router.get("", response_model=Page[StyleOut], description=gallery_service.GALLERY_DESCRIPTION)
async def list_styles(
    user: OptionalUser,
    session: SessionDep,
    storage: StorageDep,
    q: Annotated[SearchText | None, Query(description="name/description/tag search")] = None,
    tag: Annotated[TagFilter | None, Query()] = None,
    owner: Annotated[
        Owner | None,
        Query(description="me: only the caller's styles; a username: theirs"),
    ] = None,
    model: StyleModelKind | None = None,
    sort: Literal["newest", "top_rated", "most_used"] = "newest",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> dict[str, Any]:
    """(public) Public styles, plus the caller's own when authenticated (newest first unless
    ``sort`` says otherwise)."""
    if owner == "me" and user is None:
        raise NotAuthenticated("owner=me needs an access token")
    items, next_cursor = await gallery_service.list_styles(
        session,
        user,
        q=q.strip() if q and q.strip() else None,
        tag=tag.strip().lower() if tag and tag.strip() else None,
        owner=owner,
        model=model,
        sort=sort,
        limit=limit,
        cursor=cursor,
        storage=storage,
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=StyleOut,
    dependencies=job_limit,
    responses=_errors(401, 413, 422),
)
async def import_style(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile, File(description="a 3D LUT: Adobe/Resolve .cube, HaldCLUT PNG or .3dl")
    ],
    name: Annotated[StyleName, Form()],
    description: Annotated[StyleDescription, Form()] = "",
    visibility: Annotated[Visibility, Form()] = Visibility.private,
    tags: Annotated[
        list[Text], Form(description="repeat the field or separate tags with commas")
    ] = [],  # noqa: B006 - FastAPI copies defaults
) -> StyleOut:
    """Import a ``.cube``, HaldCLUT PNG (8 or 16 bits, level 2..16) or ``.3dl`` file as a
    ``ready`` style (model ``imported``); a malformed file is a 422 ``invalid_cube`` (``.cube``)
    or ``invalid_lut`` (the others) naming the problem and, for text, the line. A table of more
    than 65 points per axis (a HaldCLUT above level 8) is resampled to 65^3."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > settings.max_cube_bytes + 256 * 1024:
        raise PayloadTooLarge(
            f"The LUT file is larger than {settings.max_cube_bytes} bytes",
            code="cube_too_large",
            details={"field": "file", "limit": settings.max_cube_bytes},
        )
    data = await file.read(settings.max_cube_bytes + 1)
    split_tags = [t for raw in tags for t in raw.split(",")]
    style = await style_sharing.import_style(
        session,
        user,
        storage,
        settings,
        data=data,
        filename=_upload_filename(file),
        name=name,
        description=description,
        tags=split_tags,
        visibility=visibility,
    )
    return style_out(style, user, storage)


_TEXT = TypeAdapter(Text)


def _upload_filename(file: UploadFile) -> str:
    """The uploaded file's name, checked like every other string (it is kept in the style's
    metadata): a NUL in it is a 422 ``validation_error`` on ``body.file.filename``."""
    try:
        return _TEXT.validate_python(file.filename or "")
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", "file", "filename")} for err in exc.errors()]
        raise RequestValidationError(errors) from exc


@router.get("/{style_id}", response_model=StyleOut, responses=_errors(404))
async def get_style(
    style_id: uuid.UUID, user: OptionalUser, session: SessionDep, storage: StorageDep
) -> StyleOut:
    """(public for public/unlisted styles) One style; another user's private style is a 404."""
    style = await style_service.get_style(session, style_id, user)
    # the preview URL as the gallery lists it: reused while it has half its validity left
    return style_out(style, style.owner, gallery_service.cached_storage(storage))


@router.patch("/{style_id}", response_model=StyleOut, responses=_errors(401, 403, 404))
async def update_style(
    style_id: uuid.UUID,
    data: StylePatch,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
) -> StyleOut:
    """Change name, description, tags or visibility (owner only)."""
    style = await style_service.update_style(
        session, style_id, user, data.model_dump(exclude_unset=True)
    )
    return style_out(style, user, storage)


@router.delete(
    "/{style_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_errors(401, 403, 404)
)
async def delete_style(
    style_id: uuid.UUID, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> Response:
    """Delete a style and its stored objects (owner only); its unfinished jobs fail with
    "style deleted"."""
    await style_service.delete_style(session, style_id, user, storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- jobs -----------------------------------------------------------------------------------
@router.post(
    "/{style_id}/learn",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_errors(401, 403, 404, 409, 422, 429),
    response_model=JobOut,
    dependencies=job_limit,
)
async def learn_style(
    style_id: uuid.UUID,
    data: LearnRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Any:
    """Learn the style from before/after pairs and/or reference photos (owner only; the
    caller's confirmed images). Options are checked here (422 naming the option). Poll the job
    every 5 s; the style becomes ``ready`` with metrics: ``holdout`` (2+ pairs: the error on
    photos each fit did not see), ``fit`` (training error), ``auto`` (model ``auto``)."""
    return await style_service.submit_learn(
        session,
        style_id,
        user,
        settings,
        model=data.model,
        pairs=[PairIds(p.before_image_id, p.after_image_id) for p in data.pairs],
        reference_image_ids=data.reference_image_ids,
        options=data.options,
    )


@router.post(
    "/{style_id}/apply",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_errors(401, 404, 409, 422, 429),
    response_model=JobOut | ApplyBatchOut,
)
async def apply_style(
    request: Request,
    style_id: uuid.UUID,
    data: ApplyRequest,
    user: CurrentUser,
    session: SessionDep,
) -> Any:
    """Apply the style to one of the caller's images at full resolution (``image_id`` -> a job),
    or to up to 100 (``image_ids`` -> ``{jobs: [...]}``, one job per distinct image, in the
    order given). Result: ``{result_url, width, height, format, bits, color_profile}``; width
    and height as displayed (the result's pixels are upright, EXIF orientation 1).

    Each job counts against the job-submission rate limit: a batch larger than what is left of
    the window is a 429 (``Retry-After``) and queues nothing."""
    single = data.image_id is not None
    image_ids = [data.image_id] if data.image_id is not None else list(data.image_ids or [])
    await count_rate_limit(request, "jobs", cost=len(set(image_ids)))
    jobs = await style_service.submit_apply(
        session,
        style_id,
        user,
        image_ids=image_ids,
        field="image_id" if single else "image_ids",
        strength=data.strength,
        fmt=data.format,
        quality=data.quality,
        output_profile=data.output_profile,
    )
    if single:
        return JobOut.model_validate(jobs[0])
    return ApplyBatchOut(jobs=[JobOut.model_validate(j) for j in jobs])


@router.post(
    "/{style_id}/export",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_errors(401, 404, 409, 422, 429),
    response_model=JobOut,
    dependencies=job_limit,
)
async def export_style(
    style_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    data: Annotated[ExportRequest | None, Body()] = None,
) -> Any:
    """Export the style as a 3D LUT file: ``cube``, ``3dl``, ``spi3d``, ``csp`` or an ``icc``
    profile (17, 33 or 65 points per axis) or a ``haldclut`` PNG (level 8, 12 or 16). A style
    that is a LUT itself (imported, dlut, transfer) is never written at more points per axis
    than its own table: a larger ``size`` is exported at the table's size and the result says
    so (``requested_size``, ``note``). Result: ``{download_url, size, filename, format,
    bytes}`` (+ ``level`` for a HaldCLUT, ``source_size`` when the file resamples the style's
    table)."""
    data = data or ExportRequest()
    return await style_service.submit_export(
        session, style_id, user, size=data.size, fmt=data.format, level=data.level
    )


@router.post(
    "/{style_id}/fork",
    status_code=status.HTTP_201_CREATED,
    response_model=StyleOut,
    responses=_errors(401, 404, 409),
)
async def fork_style(
    style_id: uuid.UUID, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> StyleOut:
    """A private copy of a ready style (the caller's own, public or unlisted), owned by the
    caller; ``forked_from`` names the source."""
    fork = await style_sharing.fork_style(session, style_id, user, storage)
    return style_out(fork, user, storage)
