"""The embedded default backend: files under ``settings.storage_dir``, served by the API itself
at ``/api/v1/storage/{key}?expires=...&sig=...`` (:mod:`app.api.storage`).

Why a hand-written signed-URL backend: no library serves S3-compatible presigned URLs from a
local directory (MinIO is a separate server; moto and similar fakes do not verify presigned
signatures). The local backend signs ``method, key, expiry, content type, exact length,
If-None-Match`` (and the download filename) with HMAC-SHA256 under ``settings.signing_key``, so a
client uploads with the same code, the same ``headers`` and gets the same refusals as with S3: a
tampered or expired URL, another method, type or length is a signature error (403 in the API), a
second PUT :class:`~app.storage.errors.ObjectExists` (412).

Every write goes through :class:`AtomicWriter` (a temp file in the target folder, then
``os.replace``); keys are validated so that no key can leave the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

from app.storage.base import CHUNK, ObjectInfo, PresignedUpload, upload_headers, utc_in
from app.storage.errors import (
    InvalidStorageKey,
    ObjectExists,
    SignatureError,
    StorageObjectNotFound,
    UrlExpired,
)
from app.storage.keys import guess_content_type, validate_key

LOCAL_URL_PREFIX = "/api/v1/storage/"
_SIGNATURE_VERSION = "picfilter-storage-v1"


class AtomicWriter:
    """Writes one file to a temp file beside its final path; ``commit`` renames it in place.

    The one way this package writes a file: stored objects, copies and downloads. ``scratch=True``
    (a download to a worker's temp folder) skips the ``fsync`` and the MD5 an object needs.
    """

    def __init__(self, final: Path, *, scratch: bool = False) -> None:
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
        self._md5 = None if scratch else hashlib.md5(usedforsecurity=False)
        self._sync = not scratch
        self.written = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        if self._md5 is not None:
            self._md5.update(data)
        self.written += len(data)

    def fill(self, src: IO[bytes], *, overwrite: bool = True) -> None:
        """Copy all of ``src`` in chunks and commit; on any error nothing is left behind."""
        try:
            while chunk := src.read(CHUNK):
                self.write(chunk)
        except BaseException:
            self.abort()
            raise
        self.commit(overwrite=overwrite)

    @property
    def etag(self) -> str:
        """The MD5 of what was written, quoted, as S3 reports it for a single-part PUT."""
        if self._md5 is None:
            raise ValueError("a scratch writer keeps no MD5")
        return f'"{self._md5.hexdigest()}"'

    def commit(self, *, overwrite: bool = True) -> None:
        """Move the temp file into place; with ``overwrite=False`` an existing object wins
        (:class:`ObjectExists`), atomically: a hard link never replaces a file."""
        try:
            self._file.flush()
            if self._sync:
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


def atomic_copy_to(src: IO[bytes], path: Path) -> None:
    """Copy a stream to a local file atomically (``download_to`` of both backends)."""
    AtomicWriter(path, scratch=True).fill(src)


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
        expires_at = utc_in(expires_in)
        expires = int(expires_at.timestamp())
        sig = self.sign(
            "PUT", key, expires, content_type=content_type, length=size, if_none_match="*"
        )
        return PresignedUpload(
            url=self._url(key, {"expires": str(expires), "sig": sig}),
            method="PUT",
            headers=upload_headers(content_type, size),
            expires_at=expires_at,
        )

    def presign_get(
        self, key: str, expires_in: int | None = None, filename: str | None = None
    ) -> str:
        validate_key(key)
        expires = int(utc_in(expires_in or self.get_expires_in).timestamp())
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
        self.writer(key).fill(io.BytesIO(data))

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        with open(path, "rb") as src:
            self.writer(key).fill(src)

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
            atomic_copy_to(src, path)

    def open_stream(self, key: str) -> IO[bytes]:
        path = self.path_for(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise StorageObjectNotFound() from exc

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
            self.writer(dst).fill(f)

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
