"""The key layout (``backend-architecture.md``, "Image Storage Design") and key validation::

images/{user_id}/{image_id}/original.{ext}
images/{user_id}/{image_id}/thumbnail.webp
results/{user_id}/{job_id}/result.{ext}
styles/{style_id}/model.pt | preview.webp | ...
cubes/{style_id}/{export_job_id}.cube
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from pathlib import Path

from app.storage.errors import InvalidStorageKey

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=+-]*$")
_EXT = re.compile(r"^[a-z0-9]{1,10}$")


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidStorageKey`.

    Refused: empty keys, absolute paths, backslashes, NUL and control characters, ``.``/``..``
    and empty segments, segments starting with a dot (temp files are dot-files), anything outside
    ``[A-Za-z0-9._=+-]``. With ``prefix=True`` a trailing ``/`` is allowed.
    """
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise InvalidStorageKey(f"invalid storage key {key!r}")
    body = key[:-1] if prefix and key.endswith("/") else key
    if body.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidStorageKey(f"invalid storage key {key!r}")
    for segment in body.split("/"):
        if not _SEGMENT.match(segment):
            raise InvalidStorageKey(f"invalid storage key {key!r}")
    return key


def _ext(ext: str) -> str:
    clean = ext.lower().lstrip(".")
    if not _EXT.match(clean):
        raise InvalidStorageKey(f"invalid file extension {ext!r}")
    return clean


def _id(value: uuid.UUID | str) -> str:
    return str(uuid.UUID(str(value)))


def image_prefix(user_id: uuid.UUID | str, image_id: uuid.UUID | str) -> str:
    """Every object of one image (original and thumbnail) lies under this prefix."""
    return f"images/{_id(user_id)}/{_id(image_id)}/"


def original_key(user_id: uuid.UUID | str, image_id: uuid.UUID | str, ext: str) -> str:
    return f"{image_prefix(user_id, image_id)}original.{_ext(ext)}"


def thumbnail_key(user_id: uuid.UUID | str, image_id: uuid.UUID | str) -> str:
    return f"{image_prefix(user_id, image_id)}thumbnail.webp"


def result_prefix(user_id: uuid.UUID | str, job_id: uuid.UUID | str) -> str:
    return f"results/{_id(user_id)}/{_id(job_id)}/"


def result_key(user_id: uuid.UUID | str, job_id: uuid.UUID | str, ext: str) -> str:
    return f"{result_prefix(user_id, job_id)}result.{_ext(ext)}"


def style_key(style_id: uuid.UUID | str, name: str) -> str:
    """``styles/{style_id}/{name}``, e.g. ``model.pt``, ``preview.webp``, ``v2/lut.cube``."""
    return validate_key(f"styles/{_id(style_id)}/{name}")


def cube_key(style_id: uuid.UUID | str, export_job_id: uuid.UUID | str, ext: str = "cube") -> str:
    """``cubes/{style}/{job}.{ext}``: an exported LUT file (``.cube``, ``.png``, ``.3dl``, ...)."""
    return f"cubes/{_id(style_id)}/{_id(export_job_id)}.{_ext(ext)}"


_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".cube": "text/plain",
    ".3dl": "text/plain",
    ".spi3d": "text/plain",
    ".csp": "text/plain",
    ".pt": "application/octet-stream",
}


def guess_content_type(key: str) -> str:
    suffix = Path(key).suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
