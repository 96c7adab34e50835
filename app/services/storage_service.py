"""Object storage: one interface (:class:`Storage`), two backends.

* :class:`S3Storage` (AWS S3 or MinIO, through boto3): path-style addressing when an endpoint is
  configured, signature v4. A presigned PUT signs the key, ``Content-Type`` **and**
  ``Content-Length`` (they are signed headers of the URL), so the storage server itself refuses
  a body of another type or size: the 50 MB limit holds even if nginx is bypassed. It also signs
  ``If-None-Match: *``, so the URL writes once: the file checked at confirm cannot be swapped
  while the URL is still valid (412). Presigned GETs are issued separately with a short TTL.
* :class:`LocalStorage` (the embedded default): files under ``settings.storage_dir``, served by
  the API itself at ``/api/v1/storage/{key}?expires=...&sig=...`` (:mod:`app.api.storage`).

Why a hand-written signed-URL backend: no library serves S3-compatible presigned URLs from a
local directory (MinIO is a separate server; moto and similar fakes do not verify presigned
signatures). The local backend signs ``method, key, expiry, content type, exact length,
If-None-Match`` (and the download filename) with HMAC-SHA256 under ``settings.signing_key``, so a
client uploads with the same code, the same ``headers`` and gets the same refusals as with S3: a
tampered or expired URL, another method, type or length is a 403, a second PUT a 412.

Every method is synchronous (boto3 and file I/O block): async routes call them through
``anyio.to_thread.run_sync``; workers call them directly. Local writes are atomic (a temp file
in the target folder, then ``os.replace``); keys are validated so that no key can leave the root.

Key layout (``backend-architecture.md``, "Image Storage Design")::

    images/{user_id}/{image_id}/original.{ext}
    images/{user_id}/{image_id}/thumbnail.webp
    results/{user_id}/{job_id}/result.{ext}
    styles/{style_id}/model.pt | preview.webp | ...
    cubes/{style_id}/{export_job_id}.cube
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote, urlencode

from app.config import Settings
from app.errors import AppError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger("picfilter.storage")

LOCAL_URL_PREFIX = "/api/v1/storage/"
_SIGNATURE_VERSION = "picfilter-storage-v1"
_CHUNK = 1024 * 1024


# ---- errors ---------------------------------------------------------------------------------
class StorageError(AppError):
    """The object storage failed or refused (a dependency problem: 503 if it reaches the API)."""

    status_code, code, message = 503, "storage_unavailable", "Object storage is unavailable"


class StorageObjectNotFound(StorageError):
    """The key has no object."""

    status_code, code, message = 404, "object_not_found", "Stored object not found"


class InvalidStorageKey(StorageError, ValueError):
    """A key that could escape the storage root or is not in our key alphabet."""

    status_code, code, message = 400, "invalid_storage_key", "Invalid storage key"


# ---- value objects --------------------------------------------------------------------------
@dataclass(frozen=True)
class PresignedUpload:
    """A URL the client PUTs the bytes to, with exactly ``headers``, before ``expires_at``."""

    url: str
    method: str = "PUT"
    headers: dict[str, str] = field(default_factory=dict)
    expires_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


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


# ---- keys -----------------------------------------------------------------------------------
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


def cube_key(style_id: uuid.UUID | str, export_job_id: uuid.UUID | str) -> str:
    return f"cubes/{_id(style_id)}/{_id(export_job_id)}.cube"


_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".cube": "text/plain",
    ".pt": "application/octet-stream",
}


def guess_content_type(key: str) -> str:
    suffix = Path(key).suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 5987 UTF-8 name."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _upload_headers(content_type: str, size: int) -> dict[str, str]:
    """What the client sends with a presigned PUT (both backends sign all three)."""
    return {"Content-Type": content_type, "Content-Length": str(size), "If-None-Match": "*"}


def _utc_in(seconds: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


# ---- local backend --------------------------------------------------------------------------
class SignatureError(StorageError):
    """A local signed URL that does not verify (403 in the API)."""

    status_code, code, message = 403, "signature_mismatch", "The URL signature does not match"


class UrlExpired(SignatureError):
    code, message = "url_expired", "The signed URL has expired"


class ObjectExists(StorageError):
    """A write-once upload URL was used again (S3 answers 412 PreconditionFailed too)."""

    status_code, code, message = (
        412,
        "object_exists",
        "A file was already uploaded to this URL; confirm it or start a new upload",
    )


class AtomicWriter:
    """Writes one object to a temp file beside its final path; ``commit`` renames it in place."""

    def __init__(self, final: Path) -> None:
        self.final = final
        for attempt in range(3):  # a concurrent delete_prefix may remove the empty folder
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        self.tmp = Path(tmp)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.written = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._md5.update(data)
        self.written += len(data)

    @property
    def etag(self) -> str:
        """The MD5 of what was written, quoted, as S3 reports it for a single-part PUT."""
        return f'"{self._md5.hexdigest()}"'

    def commit(self, *, overwrite: bool = True) -> None:
        """Move the temp file into place; with ``overwrite=False`` an existing object wins
        (:class:`ObjectExists`), atomically: a hard link never replaces a file."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if overwrite:
                os.replace(self.tmp, self.final)
                return
            try:
                os.link(self.tmp, self.final)
            except FileExistsError:
                raise ObjectExists() from None
            except OSError:  # a filesystem without hard links: check, then rename
                if self.final.exists():
                    raise ObjectExists() from None
                os.replace(self.tmp, self.final)
                return
            self.tmp.unlink()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


class LocalStorage:
    """Files under ``root``; URLs signed with HMAC and served by :mod:`app.api.storage`."""

    def __init__(
        self,
        root: Path,
        *,
        base_url: str = "http://127.0.0.1:8000",
        signing_key: bytes = b"",
        get_expires_in: int = 300,
    ) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self.signing_key = signing_key
        self.get_expires_in = get_expires_in
        if not signing_key:
            raise ValueError("LocalStorage needs a signing key")

    # -- paths and signatures
    def path_for(self, key: str) -> Path:
        """The file of ``key``; refuses any key that would resolve outside the root."""
        validate_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidStorageKey(f"invalid storage key {key!r}")
        return path

    def sign(
        self,
        method: str,
        key: str,
        expires: int,
        *,
        content_type: str = "",
        length: int | None = None,
        filename: str = "",
        if_none_match: str = "",
    ) -> str:
        message = "\n".join(
            [
                _SIGNATURE_VERSION,
                method.upper(),
                key,
                str(expires),
                content_type,
                "" if length is None else str(length),
                if_none_match,
                filename,
            ]
        )
        return hmac.new(self.signing_key, message.encode(), hashlib.sha256).hexdigest()

    def verify(
        self,
        method: str,
        key: str,
        expires: str | None,
        sig: str | None,
        *,
        content_type: str = "",
        length: int | None = None,
        filename: str = "",
        if_none_match: str = "",
    ) -> None:
        """Raise :class:`SignatureError` / :class:`UrlExpired` unless the request is the one signed.

        The signature is checked first (so an edited ``expires`` is a mismatch), then the expiry.
        """
        validate_key(key)
        if not expires or not sig or not expires.isdigit():
            raise SignatureError("The URL is not signed (expires and sig are required)")
        expected = self.sign(
            method,
            key,
            int(expires),
            content_type=content_type,
            length=length,
            filename=filename,
            if_none_match=if_none_match,
        )
        if not hmac.compare_digest(expected, sig):
            raise SignatureError(
                "The URL signature does not match this request (method, key, Content-Type and "
                "Content-Length must be exactly the signed ones)"
            )
        if int(expires) < time.time():
            raise UrlExpired()

    def _url(self, key: str, params: dict[str, str]) -> str:
        return f"{self.base_url}{LOCAL_URL_PREFIX}{quote(key)}?{urlencode(params)}"

    # -- Storage interface
    def ping(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)

    def presign_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> PresignedUpload:
        validate_key(key)
        expires_at = _utc_in(expires_in)
        expires = int(expires_at.timestamp())
        sig = self.sign(
            "PUT", key, expires, content_type=content_type, length=size, if_none_match="*"
        )
        return PresignedUpload(
            url=self._url(key, {"expires": str(expires), "sig": sig}),
            method="PUT",
            headers=_upload_headers(content_type, size),
            expires_at=expires_at,
        )

    def presign_get(
        self, key: str, expires_in: int | None = None, filename: str | None = None
    ) -> str:
        validate_key(key)
        expires = int(_utc_in(expires_in or self.get_expires_in).timestamp())
        sig = self.sign("GET", key, expires, filename=filename or "")
        params = {"expires": str(expires), "sig": sig}
        if filename:
            params["filename"] = filename
        return self._url(key, params)

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path_for(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return ObjectInfo(key=key, size=st.st_size, content_type=guess_content_type(key))

    def writer(self, key: str) -> AtomicWriter:
        """An atomic writer for ``key`` (the upload route streams request bodies into it)."""
        return AtomicWriter(self.path_for(key))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        w = self.writer(key)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        w.commit()

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        w = self.writer(key)
        try:
            with open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    w.write(chunk)
        except BaseException:
            w.abort()
            raise
        w.commit()

    def get_bytes(self, key: str) -> bytes:
        with self.open_stream(key) as f:
            return f.read()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError("start and length must be >= 0")
        with self.open_stream(key) as f:
            f.seek(start)
            return f.read(length)

    def download_to(self, key: str, path: Path) -> None:
        with self.open_stream(key) as src:
            _atomic_copy_to(src, path)

    def open_stream(self, key: str) -> IO[bytes]:
        path = self.path_for(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise StorageObjectNotFound(f"no object at {key}") from exc

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix, prefix=True)
        # Walk only the deepest folder the prefix names (a prefix may end inside a file name).
        folder = prefix if prefix.endswith("/") else prefix.rpartition("/")[0]
        base = (self.root / folder).resolve() if folder else self.root
        if not base.is_relative_to(self.root) or not base.is_dir():
            return 0
        count = 0
        for dirpath, _dirs, files in os.walk(base, topdown=False):
            for name in files:
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                if name.startswith(".tmp-") or not rel.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    full.unlink()
                    count += 1
            self._prune(Path(dirpath))
        return count

    def copy(self, src: str, dst: str) -> None:
        with self.open_stream(src) as f:
            w = self.writer(dst)
            try:
                while chunk := f.read(_CHUNK):
                    w.write(chunk)
            except BaseException:
                w.abort()
                raise
            w.commit()

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) the root."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _atomic_copy_to(src: IO[bytes], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---- S3 backend -----------------------------------------------------------------------------
class _BodyReader(io.RawIOBase):
    """A botocore ``StreamingBody`` as a real (non-seekable) binary file object."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """S3 / MinIO through boto3 (thread-safe clients; one per process)."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.get_expires_in = settings.presign_get_expire_seconds
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"} if settings.s3_endpoint else None,
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=20,
        )
        session = boto3.session.Session(
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
        )
        self.client: S3Client = session.client(
            "s3", endpoint_url=settings.s3_endpoint, config=config
        )
        # URLs handed to clients may need another host than the one the server reaches.
        public = settings.s3_public_endpoint
        self.presign_client: S3Client = (
            session.client("s3", endpoint_url=public, config=config) if public else self.client
        )

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise StorageObjectNotFound(f"no object at {key}") from exc
            raise StorageError(f"object storage refused the request for {key}: {code}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object storage unreachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError:
            pass
        params: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def ping(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception:
            log.warning("storage ping failed", exc_info=True)
            return False

    def presign_put(
        self, key: str, content_type: str, size: int, expires_in: int
    ) -> PresignedUpload:
        validate_key(key)
        # ContentType, ContentLength and IfNoneMatch become signed headers (X-Amz-SignedHeaders=
        # content-length;content-type;host;if-none-match): S3 answers 403 SignatureDoesNotMatch
        # to another type or length, and 412 PreconditionFailed once the object exists.
        url = self.presign_client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ContentType": content_type,
                "ContentLength": size,
                "IfNoneMatch": "*",
            },
            ExpiresIn=expires_in,
            HttpMethod="PUT",
        )
        return PresignedUpload(
            url=url,
            method="PUT",
            headers=_upload_headers(content_type, size),
            expires_at=_utc_in(expires_in),
        )

    def presign_get(
        self, key: str, expires_in: int | None = None, filename: str | None = None
    ) -> str:
        validate_key(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self.presign_client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in or self.get_expires_in
        )

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            with self._errors(key):
                meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except StorageObjectNotFound:
            return None
        return ObjectInfo(
            key=key,
            size=int(meta["ContentLength"]),
            content_type=meta.get("ContentType") or "application/octet-stream",
        )

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs={"ContentType": content_type}
            )

    def get_bytes(self, key: str) -> bytes:
        with self.open_stream(key) as f:
            return f.read()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        validate_key(key)
        if start < 0 or length < 0:
            raise ValueError("start and length must be >= 0")
        if length == 0:
            return b""
        from botocore.exceptions import ClientError

        try:
            with self._errors(key):
                obj = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
                )
        except StorageError as exc:
            cause = exc.__cause__
            code = (
                cause.response.get("Error", {}).get("Code")
                if isinstance(cause, ClientError)
                else None
            )
            if code in ("InvalidRange", "416"):
                return b""  # start is past the end
            raise
        body = obj["Body"]
        try:
            return bytes(body.read())[:length]
        finally:
            body.close()

    def download_to(self, key: str, path: Path) -> None:
        with self.open_stream(key) as src:
            _atomic_copy_to(src, path)

    def open_stream(self, key: str) -> IO[bytes]:
        validate_key(key)
        with self._errors(key):
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        return io.BufferedReader(_BodyReader(obj["Body"]), buffer_size=_CHUNK)

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            with self._errors(key):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except StorageObjectNotFound:
            pass

    def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix, prefix=True)
        count = 0
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": obj["Key"]} for obj in page.get("Contents", [])
                ]
                for i in range(0, len(keys), 1000):
                    batch = keys[i : i + 1000]
                    out = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                    errors = out.get("Errors", [])
                    if errors:
                        raise StorageError(f"could not delete {len(errors)} objects under {prefix}")
                    count += len(batch)
        return count

    def copy(self, src: str, dst: str) -> None:
        validate_key(src)
        validate_key(dst)
        with self._errors(src):
            self.client.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}
            )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None


def make_storage(settings: Settings) -> Storage:
    """S3/MinIO when ``settings.use_s3`` (creating the bucket if asked), else a local folder."""
    if settings.use_s3:
        s3 = S3Storage(settings)
        if settings.s3_create_bucket:
            s3.ensure_bucket()
        return s3
    return LocalStorage(
        settings.storage_dir,
        base_url=settings.base_url,
        signing_key=settings.signing_key,
        get_expires_in=settings.presign_get_expire_seconds,
    )
