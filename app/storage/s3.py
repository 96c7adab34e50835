"""S3 / MinIO through boto3: path-style addressing when an endpoint is configured, signature v4.

A presigned PUT signs the key, ``Content-Type`` **and** ``Content-Length`` (they are signed headers
of the URL), so the storage server itself refuses a body of another type or size: the 50 MB limit
holds even if nginx is bypassed. It also signs ``If-None-Match: *``, so the URL writes once: the
file checked at confirm cannot be swapped while the URL is still valid (412). Presigned GETs are
issued separately with a short TTL.

Content-addressed objects (thumbnails, previews, results: :func:`~app.storage.keys.is_immutable`)
are written with ``Cache-Control: public, max-age=31536000, immutable``; with ``CDN_BASE_URL``
set, :meth:`S3Storage.presign_get` gives them a plain CDN URL (``{CDN_BASE_URL}/{key}``, the
CDN's origin being the bucket) instead of a presigned one. A CDN URL names the bytes, so it never
expires and never needs a signature; it carries no download name (the caller keeps the name).

boto3 is imported when an :class:`S3Storage` is made, so the embedded default never loads it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from app.config import Settings
from app.storage.base import (
    CHUNK,
    ObjectInfo,
    PresignedUpload,
    content_disposition,
    upload_headers,
    utc_in,
)
from app.storage.errors import StorageError, StorageObjectNotFound
from app.storage.keys import (
    IMMUTABLE_CACHE_CONTROL,
    IMMUTABLE_KEY_PATTERNS,
    is_immutable,
    validate_key,
)
from app.storage.local import atomic_copy_to

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger("picfilter.storage")


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


def cdn_read_policy(bucket: str) -> dict[str, Any]:
    """The bucket policy a CDN needs: anonymous GET of the content-addressed keys only
    (thumbnails, previews, results); originals, models and exports stay private."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PicFilterCdnRead",
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{p}" for p in IMMUTABLE_KEY_PATTERNS],
            }
        ],
    }


class S3Storage:
    """S3 / MinIO through boto3 (thread-safe clients; one per process)."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.cdn_base_url = settings.cdn_base_url
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

        # The messages reach API clients (a 503): they name no endpoint, bucket or key; the
        # details go to the log.
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise StorageObjectNotFound() from exc
            log.warning("object storage refused the request for %s: %s", key, code)
            raise StorageError() from exc
        except BotoCoreError as exc:
            log.warning("object storage unreachable (key %s): %s", key, exc)
            raise StorageError() from exc

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

    def allow_cdn_reads(self) -> None:
        """Set :func:`cdn_read_policy` on the bucket (with ``S3_CREATE_BUCKET``; compose's
        ``minio-init`` sets the same policy on MinIO)."""
        import json

        with self._errors(self.bucket):
            self.client.put_bucket_policy(
                Bucket=self.bucket, Policy=json.dumps(cdn_read_policy(self.bucket))
            )

    def ping(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception as exc:
            log.warning("storage ping failed: %s: %s", type(exc).__name__, exc)
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
            headers=upload_headers(content_type, size),
            expires_at=utc_in(expires_in),
        )

    def presign_get(
        self, key: str, expires_in: int | None = None, filename: str | None = None
    ) -> str:
        validate_key(key)
        if self.cdn_base_url and is_immutable(key):
            return self.cdn_url(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self.presign_client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in or self.get_expires_in
        )

    def cdn_url(self, key: str) -> str:
        """``{CDN_BASE_URL}/{key}`` (for a content-addressed key)."""
        if not self.cdn_base_url:
            raise ValueError("CDN_BASE_URL is not set")
        return f"{self.cdn_base_url}/{quote(validate_key(key))}"

    @staticmethod
    def _extra(key: str, content_type: str) -> dict[str, Any]:
        extra: dict[str, Any] = {"ContentType": content_type}
        if is_immutable(key):
            extra["CacheControl"] = IMMUTABLE_CACHE_CONTROL
        return extra

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
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, **self._extra(key, content_type)
            )

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=self._extra(key, content_type)
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
            atomic_copy_to(src, path)

    def open_stream(self, key: str) -> IO[bytes]:
        validate_key(key)
        with self._errors(key):
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        return io.BufferedReader(_BodyReader(obj["Body"]), buffer_size=CHUNK)

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
                        log.warning("could not delete %d objects under %s", len(errors), prefix)
                        raise StorageError()
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
