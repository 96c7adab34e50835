"""Thumbnails and upload cleanup through the API and a real Celery worker process.

Every image goes the client's way (upload request, PUT to the presigned URL, confirm); the worker
makes the thumbnail from storage; the test fetches it through its presigned ``thumbnail_url``.
The Adobe RGB profile is built here from its published primaries (no binary fixture), and the
expected sRGB values are computed independently with the standard matrices.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from app.models import Image as ImageRow
from app.storage import Storage, keys
from tests.conftest import Account, WorkerProcess, wait_for_job
from tests.helpers import send, upload_image


# ---- an Adobe RGB (1998) ICC profile, written from the specification ------------------------
def _s15f16(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15f16(x) + _s15f16(y) + _s15f16(z)


def adobe_rgb_icc() -> bytes:
    """An ICC v2 matrix/TRC display profile: Adobe RGB primaries (D50-adapted), gamma 563/256."""
    name = b"Adobe RGB (1998)\0"
    desc = (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(name))
        + name
        + struct.pack(">IIHB", 0, 0, 0, 0)
        + b"\0" * 67
    )
    gamma = b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0test profile\0"),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.60974, 0.31111, 0.01947)),
        (b"gXYZ", _xyz(0.20528, 0.62567, 0.06087)),
        (b"bXYZ", _xyz(0.14919, 0.06322, 0.74457)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, payload in tags:
        data += b"\0" * (-(offset + len(data)) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    body = struct.pack(">I", len(tags)) + table + data
    header = (
        struct.pack(">I", 128 + len(body))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 28
        + _s15f16(0.9642)
        + _s15f16(1.0)
        + _s15f16(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + body


_ADOBE_TO_XYZ = np.array(
    [
        [0.5767309, 0.1855540, 0.1881852],
        [0.2973769, 0.6273491, 0.0752741],
        [0.0270343, 0.0706872, 0.9911085],
    ]
)
_XYZ_TO_SRGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


def adobe_to_srgb(rgb: tuple[int, int, int]) -> np.ndarray:
    linear = (np.array(rgb) / 255.0) ** (563 / 256)
    s = np.clip(_XYZ_TO_SRGB @ (_ADOBE_TO_XYZ @ linear), 0, 1)
    encoded = np.where(s <= 0.0031308, 12.92 * s, 1.055 * s ** (1 / 2.4) - 0.055)
    return np.asarray(encoded * 255.0)


# ---- the client's way -----------------------------------------------------------------------
async def upload_and_confirm(
    client: httpx.AsyncClient, account: Account, data: bytes, content_type: str
) -> dict[str, Any]:
    return await upload_image(client, account, data, content_type, filename="photo")


async def thumbnail_of(
    client: httpx.AsyncClient, account: Account, image_id: str, worker: WorkerProcess
) -> Image.Image:
    r = await client.get("/api/v1/jobs?type=thumbnail&limit=100", headers=account.headers)
    jobs = [j for j in r.json()["items"] if j["image_id"] == image_id]
    assert len(jobs) == 1, jobs
    job = await wait_for_job(client, account, jobs[0]["id"], timeout=90, worker=worker)
    assert job["status"] == "completed", job
    r = await client.get(f"/api/v1/images/{image_id}", headers=account.headers)
    url = r.json()["thumbnail_url"]
    assert url, r.json()
    got = await send(client, "GET", url)
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/webp"
    thumb = Image.open(io.BytesIO(got.content))
    assert thumb.format == "WEBP"
    assert max(thumb.size) <= 400
    assert job["result"] == {
        "width": thumb.width,
        "height": thumb.height,
        "bytes": len(got.content),
    }
    return thumb


def _jpeg(im: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _two_halves(
    size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]
) -> Image.Image:
    im = Image.new("RGB", size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def _close(pixel: Any, expected: Any, tol: float) -> bool:
    return bool(np.all(np.abs(np.array(pixel[:3], dtype=float) - np.array(expected)) <= tol))


# ---- tests ----------------------------------------------------------------------------------
async def test_exif_orientation_is_applied(
    client: httpx.AsyncClient, user: Account, live_worker: WorkerProcess
) -> None:
    # Stored landscape, red left / blue right; orientation 6 = shown rotated 90 degrees clockwise,
    # i.e. portrait with red on top.
    stored = _two_halves((1200, 800), (220, 20, 20), (20, 20, 220))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = await upload_and_confirm(client, user, _jpeg(stored, exif=exif.tobytes()), "image/jpeg")
    assert (image["width"], image["height"]) == (800, 1200)  # as displayed (stored 1200x800)
    thumb = (await thumbnail_of(client, user, image["id"], live_worker)).convert("RGB")
    assert thumb.size == (267, 400)
    assert _close(thumb.getpixel((133, 60)), (220, 20, 20), 12)
    assert _close(thumb.getpixel((133, 340)), (20, 20, 220), 12)
    assert "exif" not in thumb.info  # no EXIF (so no GPS) in thumbnails


async def test_adobe_rgb_is_converted_to_srgb(
    client: httpx.AsyncClient, user: Account, live_worker: WorkerProcess
) -> None:
    left, right = (200, 60, 60), (60, 80, 200)
    stored = _two_halves((800, 400), left, right)
    data = _jpeg(stored, icc_profile=adobe_rgb_icc(), subsampling=0)
    image = await upload_and_confirm(client, user, data, "image/jpeg")
    assert image["color_profile"] == "Adobe RGB (1998)"
    thumb = await thumbnail_of(client, user, image["id"], live_worker)
    assert thumb.size == (400, 200)
    assert thumb.mode == "RGB"
    assert "icc_profile" not in thumb.info  # plain sRGB, no foreign profile
    for x, source in ((100, left), (300, right)):
        pixel = thumb.getpixel((x, 100))
        expected = adobe_to_srgb(source)
        assert _close(pixel, expected, 4), (pixel, expected)
        assert not _close(pixel, source, 8)  # it was converted, not copied
    assert thumb.getpixel((100, 100))[0] > 220  # Adobe red 200 is sRGB ~231


async def test_heic_upload_gets_a_thumbnail(
    client: httpx.AsyncClient, user: Account, live_worker: WorkerProcess
) -> None:
    from app.ml import imaging

    if not imaging.HEIF_AVAILABLE:
        pytest.skip("pillow-heif is not installed")
    import pillow_heif

    if not pillow_heif.libheif_info().get("encoders"):
        pytest.skip("this pillow-heif wheel has no HEVC encoder to make a test file")
    source = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    buf = io.BytesIO()
    source.save(buf, format="HEIF", quality=90)
    assert buf.getvalue()[4:12] == b"ftypheic"
    image = await upload_and_confirm(client, user, buf.getvalue(), "image/heic")
    assert (image["width"], image["height"], image["format"]) == (640, 480, "heic")
    thumb = await thumbnail_of(client, user, image["id"], live_worker)
    assert thumb.size == (400, 300)
    gray = np.asarray(thumb.convert("L"), dtype=float)
    assert gray[10].mean() < 40 < 215 < gray[-10].mean()  # the gradient survived


async def test_expired_pending_uploads_are_cleaned_up(
    client: httpx.AsyncClient, user: Account, app: Any, live_worker: WorkerProcess
) -> None:
    """``picfilter.cleanup_expired_uploads`` in the worker: only long-expired pending uploads go."""
    from app.workers.celery_app import celery_app

    storage: Storage = app.state.storage
    ids = []
    for _ in range(2):
        data = b"\xff\xd8\xff" + b"\0" * 100
        r = await client.post(
            "/api/v1/images/upload",
            json={"filename": "a.jpg", "content_type": "image/jpeg", "size": len(data)},
            headers=user.headers,
        )
        up = r.json()
        put = await send(client, "PUT", up["upload_url"], content=data, headers=up["headers"])
        assert put.status_code == 200
        ids.append(up["image_id"])
    old, recent = ids
    async with app.state.db.sessionmaker() as s:
        for image_id, age in ((old, timedelta(days=1, minutes=5)), (recent, timedelta(hours=23))):
            await s.execute(
                update(ImageRow)
                .where(ImageRow.id == uuid.UUID(image_id))
                .values(upload_expires_at=datetime.now(UTC) - age)
            )
        await s.commit()

    celery_app.send_task("picfilter.cleanup_expired_uploads", queue="io")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v1/images/{old}", headers=user.headers)
        if r.status_code == 404:
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError(f"the expired upload was not removed\n{live_worker.log_tail()}")
    assert not storage.exists(keys.original_key(user.id, old, "jpg"))
    r = await client.get(f"/api/v1/images/{recent}", headers=user.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "pending"
    assert storage.exists(keys.original_key(user.id, recent, "jpg"))
