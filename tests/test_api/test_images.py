"""``/api/v1/images``: the presigned upload flow end to end, bad files, privacy, list and delete.

Runs on both test stacks: local signed URLs served by the app (embedded) and S3 through the moto
server of ``conftest`` (postgres), so the PUT goes where the returned ``upload_url`` points.
Nothing here needs the worker: thumbnails are tested in ``tests/test_workers``.
"""

from __future__ import annotations

import asyncio
import io
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select, update

from app.models import Image as ImageRow
from app.models import Job, JobStatus, JobType
from app.storage import Storage, keys
from tests.conftest import Account, create_user
from tests.helpers import IN_CI, PHOTOS, require_shared, send, upload_image


# ---- helpers --------------------------------------------------------------------------------
def jpeg_bytes(
    size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 40)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noisy_jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (0, 128, 255, 200)).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit grayscale PNG of ``width x height`` zeros: 400 MP in ~50 KB."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


async def start_upload(
    client: httpx.AsyncClient,
    account: Account,
    *,
    size: int,
    content_type: str = "image/jpeg",
    filename: str = "photo.jpg",
    store_exif: bool | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"filename": filename, "content_type": content_type, "size": size}
    if store_exif is not None:
        body["store_exif"] = store_exif
    return await client.post("/api/v1/images/upload", json=body, headers=account.headers)


async def upload(
    client: httpx.AsyncClient,
    account: Account,
    data: bytes,
    *,
    content_type: str = "image/jpeg",
    filename: str = "photo.jpg",
    store_exif: bool | None = None,
) -> str:
    """Steps 1-2: the upload request and the PUT; returns the image id."""
    image = await upload_image(
        client,
        account,
        data,
        content_type,
        filename=filename,
        store_exif=store_exif,
        confirm=False,
    )
    image_id: str = image["id"]
    return image_id


async def confirm(client: httpx.AsyncClient, account: Account, image_id: str) -> httpx.Response:
    return await client.post(f"/api/v1/images/{image_id}/confirm", headers=account.headers)


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    code: str = body["error"]["code"]
    return code


def stored(app: Any, account: Account, image_id: str, ext: str) -> bool:
    storage: Storage = app.state.storage
    return storage.exists(keys.original_key(account.id, image_id, ext))


async def thumbnail_jobs(app: Any, image_id: str) -> list[Job]:
    async with app.state.db.sessionmaker() as s:
        rows = await s.execute(
            select(Job).where(Job.image_id == uuid.UUID(image_id), Job.type == JobType.thumbnail)
        )
        return list(rows.scalars())


# ---- the flow -------------------------------------------------------------------------------
async def test_upload_put_confirm(client: httpx.AsyncClient, user: Account, app: Any) -> None:
    data = jpeg_bytes((64, 48))
    r = await start_upload(client, user, size=len(data), filename="Beach day.jpg")
    assert r.status_code == 201, r.text
    up = r.json()
    assert set(up) == {"image_id", "upload_url", "method", "headers", "expires_at"}
    assert up["method"] == "PUT"
    assert up["headers"] == {
        "Content-Type": "image/jpeg",
        "Content-Length": str(len(data)),
        "If-None-Match": "*",
    }
    expires = datetime.fromisoformat(up["expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)

    r = await client.get(f"/api/v1/images/{up['image_id']}", headers=user.headers)
    assert r.status_code == 200
    pending = r.json()
    assert pending["status"] == "pending"
    assert pending["original_url"] is None
    assert pending["thumbnail_url"] is None

    r = await confirm(client, user, up["image_id"])  # nothing PUT yet
    assert (r.status_code, error_code(r)) == (409, "upload_not_found")
    assert "PUT the file first" in r.json()["error"]["message"]

    put = await send(client, "PUT", up["upload_url"], content=data, headers=up["headers"])
    assert put.status_code == 200, put.text
    r = await confirm(client, user, up["image_id"])
    assert r.status_code == 200, r.text
    image = r.json()
    # the upload URL writes once: the checked file cannot be swapped afterwards
    swap = b"\xff\xd8\xff" + b"\0" * (len(data) - 3)
    put = await send(client, "PUT", up["upload_url"], content=swap, headers=up["headers"])
    assert put.status_code == 412
    assert image["id"] == up["image_id"]
    assert image["status"] == "confirmed"
    assert (image["width"], image["height"], image["format"]) == (64, 48, "jpeg")
    assert image["color_profile"] == "sRGB (assumed)"
    assert image["size"] == len(data)
    assert image["filename"] == "Beach day.jpg"
    assert image["exif"] is None
    assert image["error"] is None
    assert image["thumbnail_url"] is None  # the job is queued, no worker in this test
    original = await send(client, "GET", image["original_url"])
    assert original.status_code == 200
    assert original.content == data

    # idempotent: 200 again, still exactly one thumbnail job
    again = await confirm(client, user, up["image_id"])
    assert again.status_code == 200
    assert again.json()["status"] == "confirmed"
    jobs = await thumbnail_jobs(app, up["image_id"])
    assert len(jobs) == 1
    assert jobs[0].status in (
        JobStatus.queued,
        JobStatus.processing,
        JobStatus.completed,
    )


async def test_concurrent_confirms_queue_one_thumbnail(
    client: httpx.AsyncClient, user: Account, app: Any
) -> None:
    image_id = await upload(client, user, noisy_jpeg())
    responses = await asyncio.gather(*(confirm(client, user, image_id) for _ in range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"confirmed"}
    assert len(await thumbnail_jobs(app, image_id)) == 1


async def test_upload_request_validation(client: httpx.AsyncClient, user: Account) -> None:
    r = await start_upload(client, user, size=100, content_type="image/gif", filename="a.gif")
    assert (r.status_code, error_code(r)) == (415, "unsupported_content_type")
    r = await start_upload(client, user, size=100, content_type="application/pdf")
    assert r.status_code == 415
    r = await start_upload(client, user, size=51 * 1024 * 1024)
    assert (r.status_code, error_code(r)) == (413, "file_too_large")
    r = await start_upload(client, user, size=50 * 1024 * 1024)
    assert r.status_code == 201  # exactly 50 MB is allowed
    for size in (0, -1):
        r = await start_upload(client, user, size=size)
        assert (r.status_code, error_code(r)) == (422, "validation_error")
    for name in ("", "   ", "../etc/passwd", "dir\\x.jpg", "a\x00.jpg", "x" * 256):
        r = await start_upload(client, user, size=10, filename=name)
        assert (r.status_code, error_code(r)) == (422, "validation_error"), name
    r = await client.post("/api/v1/images/upload", json={"filename": "a.jpg"}, headers=user.headers)
    assert r.status_code == 422
    r = await client.post(
        "/api/v1/images/upload", json={"filename": "a.jpg", "content_type": "image/jpeg", "size": 1}
    )
    assert r.status_code == 401
    # content types are matched without case and parameters
    r = await start_upload(client, user, size=10, content_type="Image/JPEG; charset=binary")
    assert r.status_code == 201
    assert r.json()["headers"]["Content-Type"] == "image/jpeg"


BAD_FILES = {
    "png_declared_as_jpeg": (png_bytes, "image/jpeg", "jpg", 415, "content_mismatch"),
    "text_named_jpg": (
        lambda: b"hello, I am not a photo\n" * 20,
        "image/jpeg",
        "jpg",
        415,
        "content_mismatch",
    ),
    "truncated_jpeg": (lambda: noisy_jpeg()[:6000], "image/jpeg", "jpg", 422, "image_undecodable"),
    "png_bomb_400mp": (png_bomb, "image/png", "png", 413, "image_too_large"),
    "png_150mp_between_1x_and_2x_limit": (
        lambda: png_bomb(15_000, 10_000),
        "image/png",
        "png",
        413,
        "image_too_large",
    ),
    "jpeg_declared_as_webp": (jpeg_bytes, "image/webp", "webp", 415, "content_mismatch"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
async def test_bad_files_are_refused_and_removed(
    client: httpx.AsyncClient, user: Account, app: Any, case: str
) -> None:
    make, content_type, ext, status, code = BAD_FILES[case]
    data = make()
    assert len(data) < 1_000_000  # the bomb is cheap
    image_id = await upload(client, user, data, content_type=content_type, filename=f"x.{ext}")
    assert stored(app, user, image_id, ext)

    r = await confirm(client, user, image_id)
    assert (r.status_code, error_code(r)) == (status, code), r.text
    assert r.json()["error"]["details"]["image_id"] == image_id
    assert "/tmp" not in r.json()["error"]["message"]  # no server paths in messages
    assert not stored(app, user, image_id, ext)

    r = await client.get(f"/api/v1/images/{image_id}", headers=user.headers)
    image = r.json()
    assert image["status"] == "failed"
    assert image["error"]
    assert image["original_url"] is None
    assert await thumbnail_jobs(app, image_id) == []
    again = await confirm(client, user, image_id)  # still refused, clearly
    assert (again.status_code, error_code(again)) == (409, "image_failed")


async def test_zero_byte_and_oversized_uploads_create_nothing(
    client: httpx.AsyncClient, user: Account
) -> None:
    before = (await client.get("/api/v1/images", headers=user.headers)).json()["items"]
    r = await start_upload(client, user, size=0)
    assert r.status_code == 422
    r = await start_upload(client, user, size=51 * 1024 * 1024)
    assert r.status_code == 413
    after = (await client.get("/api/v1/images", headers=user.headers)).json()["items"]
    assert after == before


async def test_a_body_of_another_size_is_never_confirmed(
    client: httpx.AsyncClient, user: Account, app: Any
) -> None:
    data = jpeg_bytes()
    r = await start_upload(client, user, size=len(data) + 10)
    up = r.json()
    # The signed URL refuses the body: the local backend and S3 (the test stack's moto server
    # checks presigned signatures like S3, see tests/s3_server.py) both answer 403.
    headers = {k: v for k, v in up["headers"].items() if k != "Content-Length"}
    put = await send(client, "PUT", up["upload_url"], content=data, headers=headers)
    assert put.status_code == 403, put.text
    r = await confirm(client, user, up["image_id"])
    assert (r.status_code, error_code(r)) == (409, "upload_not_found")
    assert not stored(app, user, up["image_id"], "jpg")


async def test_confirm_after_the_url_expired(
    client: httpx.AsyncClient, user: Account, app: Any
) -> None:
    r = await start_upload(client, user, size=100)
    image_id = r.json()["image_id"]
    async with app.state.db.sessionmaker() as s:
        await s.execute(
            update(ImageRow)
            .where(ImageRow.id == uuid.UUID(image_id))
            .values(upload_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        await s.commit()
    r = await confirm(client, user, image_id)
    assert (r.status_code, error_code(r)) == (409, "upload_expired")
    assert "expired" in r.json()["error"]["message"]


async def test_exif_is_kept_only_on_request_and_never_gps(
    client: httpx.AsyncClient, user: Account
) -> None:
    photo = PHOTOS / "tahoe-gps.jpg"
    require_shared(photo)
    data = photo.read_bytes()
    with Image.open(photo) as im:
        assert im.getexif().get_ifd(0x8825)  # the file really has GPS
    with_exif = await upload(client, user, data, filename="tahoe.jpg", store_exif=True)
    without = await upload(client, user, data, filename="tahoe.jpg")
    r = await confirm(client, user, with_exif)
    assert r.status_code == 200, r.text
    image = r.json()
    assert (image["width"], image["height"]) == (2048, 1536)
    exif = image["exif"]
    assert exif
    assert exif.get("Make")
    assert not [k for k in exif if "gps" in k.lower()]
    assert "GPSInfo" not in str(exif)
    r = await confirm(client, user, without)
    assert r.status_code == 200
    assert r.json()["exif"] is None


async def test_color_profile_and_formats(client: httpx.AsyncClient, user: Account) -> None:
    photo = PHOTOS / "ultrahdr_sky.jpg"
    if IN_CI:
        require_shared(photo)  # the Display P3 case is optional outside CI only
    cases: list[tuple[bytes, str, str, str]] = [(png_bytes(), "image/png", "png", "sRGB (assumed)")]
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buf, "WEBP")
    cases.append((buf.getvalue(), "image/webp", "webp", "sRGB (assumed)"))
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buf, "TIFF")
    cases.append((buf.getvalue(), "image/tiff", "tiff", "sRGB (assumed)"))
    if photo.is_file():
        cases.append((photo.read_bytes(), "image/jpeg", "jpeg", "Display P3"))
    for data, content_type, fmt, profile in cases:
        image_id = await upload(client, user, data, content_type=content_type)
        r = await confirm(client, user, image_id)
        assert r.status_code == 200, r.text
        assert (r.json()["format"], r.json()["color_profile"]) == (fmt, profile)


# ---- privacy, list, delete ------------------------------------------------------------------
async def test_another_users_image_is_404_everywhere(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    image_id = await upload(client, user, jpeg_bytes())
    for method, path in (
        ("GET", f"/api/v1/images/{image_id}"),
        ("POST", f"/api/v1/images/{image_id}/confirm"),
        ("DELETE", f"/api/v1/images/{image_id}"),
    ):
        r = await client.request(method, path, headers=other_user.headers)
        assert (r.status_code, error_code(r)) == (404, "image_not_found"), (method, path)
    listed = (await client.get("/api/v1/images", headers=other_user.headers)).json()["items"]
    assert image_id not in [i["id"] for i in listed]
    # still intact for its owner
    r = await confirm(client, user, image_id)
    assert r.status_code == 200
    assert r.json()["status"] == "confirmed"
    r = await client.get(f"/api/v1/images/{uuid.uuid4()}", headers=user.headers)
    assert r.status_code == 404
    r = await client.get("/api/v1/images/not-a-uuid", headers=user.headers)
    assert r.status_code == 422


async def test_list_is_paginated_newest_first(client: httpx.AsyncClient) -> None:
    account = await create_user(client)
    ids = []
    for i in range(3):
        r = await start_upload(client, account, size=10 + i, filename=f"{i}.jpg")
        ids.append(r.json()["image_id"])
    r = await client.get("/api/v1/images?limit=2", headers=account.headers)
    page = r.json()
    assert [i["id"] for i in page["items"]] == ids[::-1][:2]
    assert page["next_cursor"]
    r = await client.get(
        f"/api/v1/images?limit=2&cursor={page['next_cursor']}", headers=account.headers
    )
    page2 = r.json()
    assert [i["id"] for i in page2["items"]] == [ids[0]]
    assert page2["next_cursor"] is None
    r = await client.get("/api/v1/images?cursor=garbage", headers=account.headers)
    assert (r.status_code, error_code(r)) == (400, "invalid_cursor")
    r = await client.get("/api/v1/images?limit=101", headers=account.headers)
    assert r.status_code == 422


async def test_delete_removes_every_stored_object(
    client: httpx.AsyncClient, user: Account, app: Any
) -> None:
    storage: Storage = app.state.storage
    image_id = await upload(client, user, jpeg_bytes())
    assert (await confirm(client, user, image_id)).status_code == 200
    # what the thumbnail and an apply job would have stored
    thumb = keys.thumbnail_key(user.id, image_id, b"webp")
    storage.put_bytes(thumb, b"webp", "image/webp")
    job_id = uuid.uuid4()
    async with app.state.db.sessionmaker() as s:
        s.add(
            Job(
                id=job_id,
                owner_id=uuid.UUID(user.id),
                type=JobType.apply_style,
                status=JobStatus.completed,
                image_id=uuid.UUID(image_id),
                params={},
                queue="ml",
            )
        )
        await s.commit()
    result = keys.result_key(user.id, job_id, "jpg", b"result")
    storage.put_bytes(result, b"result", "image/jpeg")
    other_result = keys.result_key(user.id, uuid.uuid4(), "jpg", b"keep")  # not from this image
    storage.put_bytes(other_result, b"keep", "image/jpeg")

    r = await client.delete(f"/api/v1/images/{image_id}", headers=user.headers)
    assert r.status_code == 204
    assert r.content == b""
    assert not storage.exists(keys.original_key(user.id, image_id, "jpg"))
    assert not storage.exists(thumb)
    assert not storage.exists(result)
    assert storage.exists(other_result)
    r = await client.get(f"/api/v1/images/{image_id}", headers=user.headers)
    assert r.status_code == 404
    r = await client.delete(f"/api/v1/images/{image_id}", headers=user.headers)
    assert r.status_code == 404
    async with app.state.db.sessionmaker() as s:
        job = await s.get(Job, job_id)
        assert job is not None
        assert job.image_id is None
    storage.delete(other_result)
