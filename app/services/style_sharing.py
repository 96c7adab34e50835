"""Styles shared between users: import a ``.cube`` file as a style, fork a visible style.

Both store the new style's objects first (in a thread: parsing, rendering the preview, copying
are blocking work, done by :mod:`app.services.style_jobs`), then insert its row; if the row
cannot be written, the objects go too, so storage never keeps files of a style that does not
exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, InvalidInput, PayloadTooLarge
from app.models import Style, StyleModelKind, StyleStatus, User, Visibility
from app.services import style_jobs
from app.services.style_service import (
    bad_item,
    delete_style_objects,
    get_visible_style,
    normalize_tags,
)

if TYPE_CHECKING:
    from app.storage import Storage


async def _add_with_objects(session: AsyncSession, style: Style, storage: Storage) -> Style:
    """Insert a style whose objects are already stored; if its row cannot be written, the
    objects go too, so storage never keeps files of a style that does not exist."""
    try:
        session.add(style)
        await session.flush()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(delete_style_objects, storage, style.id)
        raise
    return style


async def import_style(
    session: AsyncSession,
    user: User,
    storage: Storage,
    settings: Settings,
    *,
    data: bytes,
    filename: str | None,
    name: str,
    description: str = "",
    tags: Sequence[str] | None = None,
    visibility: Visibility = Visibility.private,
) -> Style:
    """A ``ready`` style (model ``imported``) from a ``.cube``, HaldCLUT PNG or ``.3dl`` file.

    The file is parsed in a thread (422 ``invalid_cube`` / ``invalid_lut`` quoting the parser's
    line-numbered message); the model, the LUT and a preview (a built-in color chart rendered
    with the LUT) are stored before the row is flushed, and removed again if anything after
    that fails.
    """
    from app.ml.cube_export import CubeParseError  # app.ml loads on first use
    from app.ml.lut_formats import LUTFormatError

    if len(data) > settings.max_cube_bytes:
        raise PayloadTooLarge(
            f"The LUT file is larger than {settings.max_cube_bytes} bytes",
            code="cube_too_large",
            details={"field": "file", "limit": settings.max_cube_bytes},
        )
    if not name.strip():
        raise bad_item("name must not be blank", "invalid_name", "name")
    if not data.strip():
        raise bad_item("The .cube file is empty", "invalid_cube", "file")
    clean_tags = normalize_tags(tags)
    style_id = uuid.uuid4()
    try:
        stored = await anyio.to_thread.run_sync(
            style_jobs.store_imported_cube, storage, style_id, data, filename or "", name
        )
    except CubeParseError as exc:
        raise InvalidInput(
            f"Invalid .cube file: {exc}",
            code="invalid_cube",
            details={"field": "file", "line": exc.line},
        ) from exc
    except LUTFormatError as exc:
        what = "HaldCLUT PNG" if exc.kind == "haldclut" else f".{exc.kind} file"
        raise InvalidInput(
            f"Invalid {what}: {exc}",
            code="invalid_lut",
            details={"field": "file", "format": exc.kind, "line": exc.line},
        ) from exc
    except UnicodeDecodeError as exc:
        raise bad_item(
            f"Invalid .cube file: not text ({exc.reason})", "invalid_cube", "file"
        ) from exc
    style = Style(
        id=style_id,
        owner_id=user.id,
        name=name.strip(),
        description=description or "",
        tags=clean_tags,
        visibility=visibility,
        status=StyleStatus.ready,
        model=StyleModelKind.imported,
        metrics=stored.metrics,
        model_key=stored.model_key,
        lut_key=stored.lut_key,
        preview_key=stored.preview_key,
        model_version=1,
    )
    style.owner = user
    return await _add_with_objects(session, style, storage)


async def fork_style(
    session: AsyncSession, style_id: uuid.UUID, user: User, storage: Storage
) -> Style:
    """A private copy of a visible, ready style, owned by the caller (objects copied)."""
    source = await get_visible_style(session, style_id, user)
    if source.status != StyleStatus.ready or not source.model_key:
        raise Conflict(
            f"Only a ready style can be forked (this one is {source.status.value})",
            code="style_not_ready",
        )
    new_id = uuid.uuid4()
    keys = await anyio.to_thread.run_sync(
        style_jobs.copy_style_objects,
        storage,
        new_id,
        {"model": source.model_key, "lut": source.lut_key, "preview": source.preview_key},
    )
    fork = Style(
        id=new_id,
        owner_id=user.id,
        name=source.name,
        description=source.description or "",
        tags=list(source.tags or []),
        visibility=Visibility.private,
        status=StyleStatus.ready,
        model=source.model,
        metrics=source.metrics,
        model_key=keys.get("model"),
        lut_key=keys.get("lut"),
        preview_key=keys.get("preview"),
        model_version=1,
        forked_from_id=source.id,
    )
    fork.owner = user
    return await _add_with_objects(session, fork, storage)
