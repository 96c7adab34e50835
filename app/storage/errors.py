"""Storage errors: plain domain exceptions (no HTTP here).

Each carries a stable ``code`` and a default ``message``; the API maps them to HTTP statuses
(``app.api.errors``): not found 404, invalid key 400, signature or expiry 403, object exists 412,
any other storage failure 503. Workers see them as ordinary exceptions.
"""

from __future__ import annotations


class StorageError(Exception):
    """The object storage failed or refused (a dependency problem)."""

    code = "storage_unavailable"
    # Shown to API clients: never an endpoint, bucket or key.
    message = "Object storage is unavailable; retry shortly"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.message
        super().__init__(self.message)


class StorageObjectNotFound(StorageError):
    """The key has no object."""

    code, message = "object_not_found", "Stored object not found"


class InvalidStorageKey(StorageError, ValueError):
    """A key that could escape the storage root or is not in our key alphabet."""

    code, message = "invalid_storage_key", "Invalid storage key"


class SignatureError(StorageError):
    """A local signed URL that does not verify."""

    code, message = "signature_mismatch", "The URL signature does not match"


class UrlExpired(SignatureError):
    code, message = "url_expired", "The signed URL has expired"


class ObjectExists(StorageError):
    """A write-once upload URL was used again (S3 answers 412 PreconditionFailed too)."""

    code, message = (
        "object_exists",
        "A file was already uploaded to this URL; confirm it or start a new upload",
    )
