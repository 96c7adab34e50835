"""Helpers for the style tests: uploads through the Images API, shared data, stored objects."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Account, wait_for_job

SHARED = Path(
    os.environ.get("PICFILTER_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
LUTS = SHARED / "luts"
PHOTOS = SHARED / "photos"

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


def require_shared(*paths: Path) -> None:
    for p in paths or (LUTS, PHOTOS):
        if not p.exists():
            pytest.skip(f"shared data not found: {p} (set PICFILTER_SHARED_DATA)")


def source_path(name: str) -> Path:
    require_shared(LUTS / name)
    return LUTS / name


def shared_luts() -> list[Path]:
    return sorted(LUTS.glob("*.cube")) if LUTS.is_dir() else []


# ---- images ---------------------------------------------------------------------------------
def encode(array: np.ndarray, fmt: str = "png", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt], **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@cache
def photo(name: str, width: int = 480) -> np.ndarray:
    """A shared photo, resized to ``width`` pixels wide (uint8 RGB, upright)."""
    require_shared(PHOTOS / name)
    with Image.open(PHOTOS / name) as im:
        rgb = im.convert("RGB")
        scale = width / rgb.width
        small = rgb.resize((width, max(1, round(rgb.height * scale))), Image.Resampling.LANCZOS)
    arr = np.asarray(small)
    arr.setflags(write=False)
    return arr


@cache
def shared_lut(name: str) -> Any:
    from app.ml.cube_export import read_cube_file

    require_shared(LUTS / name)
    return read_cube_file(LUTS / name)


def synthetic_photo(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth, colorful image with some texture (no shared data needed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 0.5 + 0.5 * np.sin(x / width * np.pi * 2 + seed)
    g = 0.5 + 0.5 * np.sin(y / height * np.pi * 1.5 + 1 + seed)
    b = 0.5 + 0.5 * np.cos((x + y) / (width + height) * np.pi * 3)
    img = np.stack([r, g, b], -1) + rng.normal(0, 0.03, (height, width, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


async def upload_image(
    client: httpx.AsyncClient,
    account: Account,
    data: bytes | Path | np.ndarray,
    content_type: str | None = None,
    *,
    filename: str | None = None,
    confirm: bool = True,
) -> dict[str, Any]:
    """Upload through the Images API: create -> PUT the presigned URL -> confirm."""
    if isinstance(data, np.ndarray):
        data, content_type = encode(data, "png"), content_type or "image/png"
    if isinstance(data, Path):
        filename = filename or data.name
        content_type = content_type or CONTENT_TYPES[data.suffix.lower()]
        data = data.read_bytes()
    assert content_type, "content_type is needed for raw bytes"
    ext = {v: k for k, v in CONTENT_TYPES.items()}.get(content_type, ".bin")
    filename = filename or f"test-{uuid.uuid4().hex[:6]}{ext}"
    r = await client.post(
        "/api/v1/images/upload",
        json={"filename": filename, "content_type": content_type, "size": len(data)},
        headers=account.headers,
    )
    assert r.status_code == 201, r.text
    up = r.json()
    await put_url(client, up["upload_url"], data, up["headers"])
    if not confirm:
        return {"id": up["image_id"], "status": "pending"}
    r = await client.post(f"/api/v1/images/{up['image_id']}/confirm", headers=account.headers)
    assert r.status_code == 200, r.text
    image = r.json()
    assert image["status"] == "confirmed", image
    return image


async def put_url(
    client: httpx.AsyncClient, url: str, data: bytes, headers: dict[str, str]
) -> None:
    if url.startswith(str(client.base_url)) or url.startswith("/"):
        r = await client.put(url, content=data, headers=headers)
    else:  # S3 (moto) on loopback
        async with httpx.AsyncClient() as plain:
            r = await plain.put(url, content=data, headers=headers)
    assert r.status_code in (200, 204), r.text


async def fetch_url(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET a presigned URL (local storage through the app, S3 through a plain client)."""
    if url.startswith(str(client.base_url)) or url.startswith("/"):
        r = await client.get(url)
    else:
        async with httpx.AsyncClient() as plain:
            r = await plain.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r


# ---- styles ---------------------------------------------------------------------------------
async def create_style(
    client: httpx.AsyncClient, account: Account, **fields: Any
) -> dict[str, Any]:
    body = {"name": fields.pop("name", f"Style {uuid.uuid4().hex[:6]}"), **fields}
    r = await client.post("/api/v1/styles", json=body, headers=account.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def import_cube(
    client: httpx.AsyncClient,
    account: Account,
    cube: bytes | Path,
    *,
    name: str = "Imported",
    visibility: str = "private",
    **form: Any,
) -> httpx.Response:
    if isinstance(cube, Path):
        filename, cube = cube.name, cube.read_bytes()  # noqa: ASYNC240 - small test file
    else:
        filename = "look.cube"
    return await client.post(
        "/api/v1/styles/import",
        files={"file": (filename, cube, "application/octet-stream")},
        data={"name": name, "visibility": visibility, **form},
        headers=account.headers,
    )


async def run_job_ok(
    client: httpx.AsyncClient,
    account: Account,
    job: dict[str, Any],
    worker: Any,
    timeout: float = 120,
) -> dict[str, Any]:
    done = await wait_for_job(client, account, job["id"], timeout=timeout, worker=worker)
    assert done["status"] == "completed", done
    return done


@cache
def identity_lattice(size: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, size)
    r, g, b = np.meshgrid(ramp, ramp, ramp, indexing="ij")
    return np.stack([r, g, b], -1)


def trilinear_reference(table: np.ndarray, image: np.ndarray) -> np.ndarray:
    """An independent trilinear lookup (float64 NumPy, ``table[r, g, b]``) of a uint8 image."""
    n = table.shape[0]
    x = image.reshape(-1, 3).astype(np.float64) / 255.0 * (n - 1)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, n - 2)
    f = x - i0
    out = np.zeros((x.shape[0], 3))
    for dr in (0, 1):
        wr = f[:, 0] if dr else 1 - f[:, 0]
        for dg in (0, 1):
            wg = f[:, 1] if dg else 1 - f[:, 1]
            for db in (0, 1):
                wb = f[:, 2] if db else 1 - f[:, 2]
                w = (wr * wg * wb)[:, None]
                out += w * table[i0[:, 0] + dr, i0[:, 1] + dg, i0[:, 2] + db]
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8).reshape(image.shape)


def parse_cube_independently(text: str) -> tuple[str | None, int, np.ndarray]:
    """A tiny independent .cube reader: (title, size, table[r, g, b, c]); red index fastest."""
    title, size, rows = None, 0, []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("TITLE"):
            title = s.split(None, 1)[1].strip().strip('"')
        elif s.startswith("LUT_3D_SIZE"):
            size = int(s.split()[1])
        elif s.startswith(("DOMAIN_MIN", "DOMAIN_MAX")):
            continue
        elif s[0].isdigit() or s[0] in "-.":
            rows.append([float(v) for v in s.split()])
    data = np.asarray(rows)
    assert data.shape == (size**3, 3), data.shape
    return title, size, data.reshape(size, size, size, 3).transpose(2, 1, 0, 3)


# ---- stored objects -------------------------------------------------------------------------
def stored_keys(settings: Any, prefix: str) -> list[str]:
    """Every object key under ``prefix`` in the test stack's storage (local folder or S3)."""
    if settings.use_s3:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
        )
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=settings.s3_bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys
    root = settings.storage_dir
    return [k for k in _walk(root) if k.startswith(prefix) and ".tmp-" not in k]


def _walk(root: Path) -> Iterator[str]:
    if not root.is_dir():
        return
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield (Path(dirpath) / name).relative_to(root).as_posix()


def style_objects(settings: Any, style_id: str) -> list[str]:
    return stored_keys(settings, f"styles/{style_id}/") + stored_keys(
        settings, f"cubes/{style_id}/"
    )
