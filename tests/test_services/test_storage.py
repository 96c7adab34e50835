"""The storage package (``app.storage``): both backends through one interface, and their
presigned URLs refused exactly as S3 refuses them.

S3 side: a moto server on 127.0.0.1 that this module starts (so these tests run in both test
backends). moto 5 checks nothing about presigned URLs: not the signature, not the expiry, and
not the signed ``Content-Type``/``Content-Length`` headers (it only compares *query-string*
``content-type=``/``content-length=`` values with the request's headers, which SigV4 URLs do not
use); ``test_moto_alone_accepts_anything`` pins that down. So the server here puts a SigV4
query-signature check, written from AWS's specification, in front of moto's WSGI app: it
recomputes the canonical request from what actually arrives (method, path, query, the values
of the signed headers) and refuses a mismatch or an expired URL with S3's 403 errors. The
presigned URLs are real botocore URLs used over real HTTP.

Local side: the app's ``/api/v1/storage/{key}`` route over a second app instance configured with
the local backend (the ``postgres`` test run uses S3 for the main app).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
import pytest

from app.config import Settings
from app.storage import (
    InvalidStorageKey,
    LocalStorage,
    S3Storage,
    Storage,
    StorageObjectNotFound,
    keys,
    make_storage,
)
from tests.s3_server import ACCESS_KEY, SECRET_KEY, VerifyingMotoServer


def _s3_settings(endpoint: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage_backend="s3",
        s3_endpoint=endpoint,
        s3_access_key=ACCESS_KEY,
        s3_secret_key=SECRET_KEY,
        s3_bucket=f"storage-test-{uuid.uuid4().hex[:12]}",
        s3_create_bucket=True,
        jwt_secret_key="storage-test-jwt-secret-at-least-32-bytes",
    )


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[VerifyingMotoServer]:
    server = VerifyingMotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_storage(moto_s3: VerifyingMotoServer) -> S3Storage:
    storage = make_storage(_s3_settings(moto_s3.url))
    assert isinstance(storage, S3Storage)
    return storage


@pytest.fixture
def local_storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "objects", base_url="http://testserver", signing_key=b"k" * 32)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    name = "local_storage" if request.param == "local" else "s3_storage"
    result: Storage = request.getfixturevalue(name)
    return result


# ---- key layout -----------------------------------------------------------------------------
def test_key_layout_matches_the_architecture() -> None:
    u, i, j, s = (uuid.UUID(int=n) for n in (1, 2, 3, 4))
    assert keys.original_key(u, i, "JPG") == f"images/{u}/{i}/original.jpg"
    sha = hashlib.sha256(b"bytes").hexdigest()[:32]
    assert keys.thumbnail_key(u, i, b"bytes") == f"images/{u}/{i}/thumbnail-{sha}.webp"
    assert keys.result_key(u, j, "png", b"bytes") == f"results/{u}/{j}/result-{sha}.png"
    assert keys.result_key(u, j, "png", b"other") != keys.result_key(u, j, "png", b"bytes")
    # content-addressed thumbnails, previews and results are immutable (CDN); nothing else
    assert keys.is_immutable(keys.thumbnail_key(u, i, b"bytes"))
    assert keys.is_immutable(keys.result_key(u, j, "jpg", b"bytes"))
    assert keys.is_immutable(f"styles/{s}/v3/{keys.content_name('preview', b'x', 'webp')}")
    for mutable in (
        keys.original_key(u, i, "jpg"),
        f"images/{u}/{i}/thumbnail.webp",
        f"styles/{s}/v1/preview.webp",
        f"styles/{s}/v1/model.pt",
        keys.cube_key(s, j),
        f"images/{u}/{i}/original-{sha}.jpg",
        f"results/{u}/{j}/result-{sha[:-1]}.png",
    ):
        assert not keys.is_immutable(mutable), mutable
    assert keys.style_key(s, "model.pt") == f"styles/{s}/model.pt"
    assert keys.style_key(s, "preview.webp") == f"styles/{s}/preview.webp"
    assert keys.cube_key(s, j) == f"cubes/{s}/{j}.cube"
    assert keys.image_prefix(u, i) == f"images/{u}/{i}/"
    with pytest.raises(InvalidStorageKey):
        keys.style_key(s, "../../etc/passwd")
    with pytest.raises(InvalidStorageKey):
        keys.original_key(u, i, "jp/g")


@pytest.mark.parametrize(
    "key",
    ["", "../x", "a/../../x", "/etc/passwd", "a\\b", "a\x00b", "a//b", "./a", "a/.tmp-x", "a b"],
)
def test_unsafe_keys_are_refused(local_storage: LocalStorage, key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        keys.validate_key(key)
    with pytest.raises(InvalidStorageKey):
        local_storage.put_bytes(key, b"x", "text/plain")
    with pytest.raises(InvalidStorageKey):
        local_storage.presign_put(key, "image/jpeg", 1, 60)


def test_local_keys_cannot_escape_through_symlinks(
    local_storage: LocalStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (local_storage.root / "link").symlink_to(outside)
    with pytest.raises(InvalidStorageKey):
        local_storage.put_bytes("link/evil.txt", b"x", "text/plain")
    assert not (outside / "evil.txt").exists()


# ---- the interface, on both backends --------------------------------------------------------
def test_objects_round_trip(storage: Storage, tmp_path: Path) -> None:
    key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.jpg"
    data = bytes(range(256)) * 4000  # ~1 MB
    assert storage.ping()
    assert storage.head(key) is None
    assert not storage.exists(key)
    storage.put_bytes(key, data, "image/jpeg")
    info = storage.head(key)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (key, len(data), "image/jpeg")
    assert storage.exists(key)
    assert storage.get_bytes(key) == data
    assert storage.read_range(key, 0, 4) == data[:4]
    assert storage.read_range(key, 1000, 10) == data[1000:1010]
    assert storage.read_range(key, len(data) - 2, 10) == data[-2:]
    with storage.open_stream(key) as f:
        assert f.read(3) == data[:3]
        assert f.read() == data[3:]
    target = tmp_path / "sub" / "copy.bin"
    storage.download_to(key, target)
    assert target.read_bytes() == data
    src = tmp_path / "upload.bin"
    src.write_bytes(b"file contents")
    key2 = key.replace("original.jpg", "thumbnail.webp")
    storage.put_file(key2, src, "image/webp")
    assert storage.get_bytes(key2) == b"file contents"
    key3 = key.replace("original.jpg", "copy.jpg")
    storage.copy(key, key3)
    assert storage.get_bytes(key3) == data
    storage.delete(key3)
    storage.delete(key3)  # missing is fine
    assert not storage.exists(key3)
    prefix = key.rsplit("/", 1)[0] + "/"
    assert storage.delete_prefix(prefix) == 2
    assert not storage.exists(key)
    assert not storage.exists(key2)
    assert storage.delete_prefix(prefix) == 0


def test_missing_objects(storage: Storage, tmp_path: Path) -> None:
    key = f"results/{uuid.uuid4()}/{uuid.uuid4()}/result.png"
    with pytest.raises(StorageObjectNotFound):
        storage.get_bytes(key)
    with pytest.raises(StorageObjectNotFound):
        storage.open_stream(key)
    with pytest.raises(StorageObjectNotFound):
        storage.download_to(key, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(StorageObjectNotFound):
        storage.copy(key, key + ".bak")


def test_delete_prefix_only_touches_its_prefix(storage: Storage) -> None:
    base = f"results/{uuid.uuid4()}"
    keep = f"{base}/bb/result.png"
    for k in (f"{base}/a/result.png", f"{base}/a/x/result.png", keep):
        storage.put_bytes(k, b"x", "image/png")
    assert storage.delete_prefix(f"{base}/a/") == 2
    assert storage.exists(keep)
    with pytest.raises(InvalidStorageKey):
        storage.delete_prefix("")
    with pytest.raises(InvalidStorageKey):
        storage.delete_prefix("../")


# ---- S3 presigned URLs against the server ---------------------------------------------------
def _put(url: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.put(url, content=data, headers=headers, timeout=30)


def test_s3_presigned_put_is_bound_to_type_and_length(s3_storage: S3Storage) -> None:
    key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.jpg"
    data = b"\xff\xd8\xff" + b"j" * 997
    up = s3_storage.presign_put(key, "image/jpeg", len(data), 600)
    assert up.method == "PUT"
    assert up.headers == {
        "Content-Type": "image/jpeg",
        "Content-Length": str(len(data)),
        "If-None-Match": "*",
    }
    query = dict(parse_qsl(urlsplit(up.url).query))
    assert query["X-Amz-SignedHeaders"] == "content-length;content-type;host;if-none-match"
    assert 595 <= (up.expires_at - datetime.now(UTC)).total_seconds() <= 600

    wrong_type = _put(up.url, data, {**up.headers, "Content-Type": "image/png"})
    assert wrong_type.status_code == 403, wrong_type.text
    assert "SignatureDoesNotMatch" in wrong_type.text
    longer = _put(up.url, data + b"x", {"Content-Type": "image/jpeg"})
    assert longer.status_code == 403
    assert "SignatureDoesNotMatch" in longer.text
    shorter = _put(up.url, data[:-1], {"Content-Type": "image/jpeg"})
    assert shorter.status_code == 403
    assert "SignatureDoesNotMatch" in shorter.text
    no_type = _put(up.url, data, {"If-None-Match": "*"})
    assert no_type.status_code == 403
    overwriting = _put(up.url, data, {"Content-Type": "image/jpeg"})  # without If-None-Match
    assert overwriting.status_code == 403
    tampered = _put(up.url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), data, up.headers)
    assert tampered.status_code == 403
    other_key = up.url.replace("original.jpg", "thumbnail.webp")
    assert _put(other_key, data, up.headers).status_code == 403
    assert s3_storage.head(key) is None  # nothing was stored by any refused request

    ok = _put(up.url, data, up.headers)
    assert ok.status_code == 200, ok.text
    # the URL writes once: the file checked at confirm cannot be swapped later
    again = _put(up.url, b"\xff\xd8\xff" + b"k" * 997, up.headers)
    assert again.status_code == 412, again.text
    assert "PreconditionFailed" in again.text
    assert s3_storage.get_bytes(key) == data
    info = s3_storage.head(key)
    assert info is not None
    assert info.size == len(data)
    assert info.content_type == "image/jpeg"

    # GET is issued separately: the PUT URL does not read, a presigned GET does.
    assert httpx.get(up.url).status_code == 403
    got = httpx.get(s3_storage.presign_get(key, 60, filename="My photo.jpg"))
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-disposition"].startswith('attachment; filename="My photo.jpg"')


def test_s3_expired_urls_are_refused(s3_storage: S3Storage) -> None:
    key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.png"
    s3_storage.put_bytes(key, b"old", "image/png")
    put = s3_storage.presign_put(key.replace("png", "jpg"), "image/jpeg", 3, 1)
    get = s3_storage.presign_get(key, 1)
    time.sleep(2.1)
    r = _put(put.url, b"abc", put.headers)
    assert r.status_code == 403
    assert "expired" in r.text
    r = httpx.get(get)
    assert r.status_code == 403
    assert "expired" in r.text


def test_moto_alone_accepts_anything() -> None:
    """Why the module puts a SigV4 check in front of moto (see the module docstring)."""
    server = VerifyingMotoServer(verify=False)
    server.start()
    try:
        storage = make_storage(_s3_settings(server.url))
        key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.jpg"
        up = storage.presign_put(key, "image/jpeg", 3, 600)
        r = _put(up.url, b"abcdef", {"Content-Type": "text/plain"})
        assert r.status_code == 200  # a real S3 answers 403 SignatureDoesNotMatch
    finally:
        server.stop()


# ---- local signed URLs through the app ------------------------------------------------------
@pytest.fixture(scope="module")
async def local_app(settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, LocalStorage]]:
    from app.main import create_app

    application = create_app(settings.model_copy(update={"storage_backend": "local"}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            storage = application.state.storage
            assert isinstance(storage, LocalStorage)
            yield c, storage


def _error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    code: str = body["error"]["code"]
    return code


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query="&".join(f"{k}={quote(v)}" for k, v in query.items())))


async def test_local_signed_put_and_get(local_app: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    client, storage = local_app
    key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.png"
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8000  # ~2 MB, several body chunks
    up = storage.presign_put(key, "image/png", len(data), 600)
    assert up.url.startswith(f"http://testserver/api/v1/storage/{key}?expires=")
    r = await client.put(up.url, content=data, headers=up.headers)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert storage.get_bytes(key) == data
    assert not [p for p in storage.path_for(key).parent.iterdir() if p.name.startswith(".tmp-")]

    r = await client.get(storage.presign_get(key))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "image/png"
    r = await client.get(storage.presign_get(key, filename="été.png"))
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"_t_.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png"
    )


async def test_local_refusals(local_app: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    client, storage = local_app
    key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.jpg"
    data = b"\xff\xd8\xff" + b"x" * 100
    up = storage.presign_put(key, "image/jpeg", len(data), 600)

    async def put(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await client.put(url, content=body, headers=headers)

    # tampered signature, edited expiry, another key: 403 signature_mismatch
    sig = dict(parse_qsl(urlsplit(up.url).query))["sig"]
    r = await put(
        _with_query(up.url, sig=sig[:-1] + ("0" if sig[-1] != "0" else "1")), data, up.headers
    )
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    r = await put(_with_query(up.url, expires=str(int(time.time()) + 9999)), data, up.headers)
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    r = await put(up.url.replace("original.jpg", "thumbnail.webp"), data, up.headers)
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    r = await put(up.url.split("?")[0], data, up.headers)
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    # another content type or another length: 403, as S3 answers
    r = await put(up.url, data, {**up.headers, "Content-Type": "image/png"})
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    r = await put(up.url, data + b"!", {"Content-Type": "image/jpeg"})
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    # a body that does not match its own Content-Length: 400, nothing stored
    r = await put(up.url, data[:-10], up.headers)
    assert (r.status_code, _error_code(r)) == (400, "body_length_mismatch")
    r = await put(up.url, data + b"extra", up.headers)
    assert (r.status_code, _error_code(r)) == (400, "body_length_mismatch")
    # wrong method: the PUT URL does not GET (403), other methods do not exist (405)
    r = await client.get(up.url)
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")
    r = await client.post(up.url, content=data, headers=up.headers)
    assert (r.status_code, _error_code(r)) == (405, "method_not_allowed")
    r = await client.delete(up.url)
    assert r.status_code == 405
    assert not storage.exists(key)
    assert not list(storage.root.rglob(".tmp-*"))

    # expired
    expired = storage.presign_put(key, "image/jpeg", len(data), -5)
    r = await put(expired.url, data, expired.headers)
    assert (r.status_code, _error_code(r)) == (403, "url_expired")
    assert not storage.exists(key)

    # without If-None-Match the URL does not verify (it is write-once)
    no_inm = {k: v for k, v in up.headers.items() if k != "If-None-Match"}
    r = await put(up.url, data, no_inm)
    assert (r.status_code, _error_code(r)) == (403, "signature_mismatch")

    # the right request works once; a second PUT is 412 and does not replace the object
    assert (await put(up.url, data, up.headers)).status_code == 200
    r = await put(up.url, data[:-1] + b"!", up.headers)
    assert (r.status_code, _error_code(r)) == (412, "object_exists")
    assert storage.get_bytes(key) == data
    # a GET of a missing key is 404
    r = await client.get(storage.presign_get(key.replace("original.jpg", "nothing.jpg")))
    assert (r.status_code, _error_code(r)) == (404, "object_not_found")


@pytest.mark.parametrize(
    "path",
    [
        "images/%2E%2E/%2E%2E/etc/passwd",
        "images/..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "images%5C..%5Cx",
        "images/a%00b",
    ],
)
async def test_local_traversal_is_refused(
    local_app: tuple[httpx.AsyncClient, LocalStorage], path: str
) -> None:
    client, storage = local_app
    expires = str(int(time.time()) + 60)
    for method in ("GET", "PUT"):
        r = await client.request(
            method,
            f"/api/v1/storage/{path}?expires={expires}&sig=00",
            content=b"x" if method == "PUT" else None,
            headers={"Content-Type": "image/jpeg"} if method == "PUT" else None,
        )
        assert (r.status_code, _error_code(r)) == (400, "invalid_storage_key"), r.text
    assert not (storage.root.parent / "etc").exists()


async def test_local_put_needs_a_length(local_app: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    client, storage = local_app
    key = f"images/{uuid.uuid4()}/{uuid.uuid4()}/original.jpg"
    up = storage.presign_put(key, "image/jpeg", 3, 600)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"

    r = await client.put(up.url, content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert (r.status_code, _error_code(r)) == (411, "length_required")
    assert not storage.exists(key)
