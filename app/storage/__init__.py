"""Object storage: one interface (:class:`Storage`), two backends.

* :class:`~app.storage.s3.S3Storage` (``s3.py``): AWS S3 or MinIO through boto3, presigned URLs.
* :class:`~app.storage.local.LocalStorage` (``local.py``, the embedded default): files under
  ``settings.storage_dir`` with HMAC-signed URLs that behave like S3's, served by the API at
  ``/api/v1/storage/{key}`` (:mod:`app.api.storage`); every write goes through its atomic writer.

The key layout is in ``keys.py``; the errors (plain exceptions, mapped to HTTP by the API) in
``errors.py``; the small key-value store for sessions in ``kv.py``.

Every method is synchronous (boto3 and file I/O block): async routes call them through
``anyio.to_thread.run_sync``; workers call them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from app.config import Settings
from app.storage.base import ObjectInfo, PresignedUpload
from app.storage.errors import (
    InvalidStorageKey,
    ObjectExists,
    SignatureError,
    StorageError,
    StorageObjectNotFound,
    UrlExpired,
)
from app.storage.local import LocalStorage
from app.storage.s3 import S3Storage

__all__ = [
    "InvalidStorageKey",
    "LocalStorage",
    "ObjectExists",
    "ObjectInfo",
    "PresignedUpload",
    "S3Storage",
    "SignatureError",
    "Storage",
    "StorageError",
    "StorageObjectNotFound",
    "UrlExpired",
    "make_storage",
]


@runtime_checkable
class Storage(Protocol):
    """What the API and the workers use; both backends implement all of it (sync methods)."""

    def ping(self) -> bool: ...

    def presign_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> PresignedUpload: ...

    def presign_get(
        self, key: str, expires_in: int | None = None, filename: str | None = None
    ) -> str: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    def put_file(self, key: str, path: Path, content_type: str) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def read_range(self, key: str, start: int, length: int) -> bytes: ...

    def download_to(self, key: str, path: Path) -> None: ...

    def open_stream(self, key: str) -> IO[bytes]: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def copy(self, src: str, dst: str) -> None: ...

    def exists(self, key: str) -> bool: ...


def make_storage(settings: Settings) -> Storage:
    """S3/MinIO when ``settings.use_s3`` (creating the bucket if asked), else a local folder."""
    if settings.use_s3:
        s3 = S3Storage(settings)
        if settings.s3_create_bucket:
            s3.ensure_bucket()
            if settings.cdn_base_url:
                s3.allow_cdn_reads()
        return s3
    return LocalStorage(
        settings.storage_dir,
        base_url=settings.base_url,
        signing_key=settings.signing_key,
        get_expires_in=settings.presign_get_expire_seconds,
    )
