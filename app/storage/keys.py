"""The key layout (``backend-architecture.md``, "Image Storage Design") and key validation::

images/{user_id}/{image_id}/original.{ext}
images/{user_id}/{image_id}/thumbnail-{sha}.webp
results/{user_id}/{job_id}/result-{sha}.{ext}
styles/{style_id}/v{n}/model.pt | lut.cube | preview-{sha}.webp
cubes/{style_id}/{export_job_id}.cube

Thumbnails, previews and results are *content-addressed* (``{sha}``: the first 32 hex digits of
the SHA-256 of the bytes, :func:`content_name`): a key names one content forever, so the object
is stored with :data:`IMMUTABLE_CACHE_CONTROL` and may be served through a CDN
(``CDN_BASE_URL``) and cached for a year (:func:`is_immutable`). (Keys written before this
layout, e.g. ``thumbnail.webp``, are not immutable: they keep presigned URLs.) Originals, models,
LUTs and exports never go through the CDN.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import uuid
from pathlib import Path

from app.storage.errors import InvalidStorageKey

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=+-]*$")
_EXT = re.compile(r"^[a-z0-9]{1,10}$")
#: Cache-Control of content-addressed objects (set on the object; a CDN and browsers keep it)
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
DIGEST_HEX = 32  # 128 bits of SHA-256
#: the content-addressed keys as S3 policy resource patterns (anonymous read for the CDN)
IMMUTABLE_KEY_PATTERNS = (
    "images/*/*/thumbnail-*",
    "results/*/*/result-*",
    "styles/*/v*/preview-*",
)
_IMMUTABLE = re.compile(
    rf"^(images/[0-9a-f-]{{36}}/[0-9a-f-]{{36}}/thumbnail"
    rf"|results/[0-9a-f-]{{36}}/[0-9a-f-]{{36}}/result"
    rf"|styles/[0-9a-f-]{{36}}/v[0-9]+/preview)-[0-9a-f]{{{DIGEST_HEX}}}\.[a-z0-9]{{1,10}}$"
)


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


def content_digest(data: bytes) -> str:
    """The content address of ``data``: 32 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX]


def content_name(stem: str, data: bytes, ext: str) -> str:
    """``{stem}-{sha}.{ext}``: a file name that changes whenever the bytes do."""
    return f"{stem}-{content_digest(data)}.{_ext(ext)}"


def is_immutable(key: str) -> bool:
    """Whether ``key`` is a content-addressed thumbnail, preview or result (CDN-cacheable)."""
    return bool(_IMMUTABLE.match(key))


def thumbnail_key(user_id: uuid.UUID | str, image_id: uuid.UUID | str, data: bytes) -> str:
    """The thumbnail of an image, addressed by its bytes (WebP)."""
    return f"{image_prefix(user_id, image_id)}{content_name('thumbnail', data, 'webp')}"


def result_prefix(user_id: uuid.UUID | str, job_id: uuid.UUID | str) -> str:
    return f"results/{_id(user_id)}/{_id(job_id)}/"


def result_key(user_id: uuid.UUID | str, job_id: uuid.UUID | str, ext: str, data: bytes) -> str:
    """The result of an apply job, addressed by its bytes."""
    return f"{result_prefix(user_id, job_id)}{content_name('result', data, ext)}"


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
