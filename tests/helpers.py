"""The one home of the test helpers: shared data (skipped when absent, a failure under
``CI=true``), images (encode, decode, upload through the Images API, presigned URLs), styles
(create, import, wait for a job), the exact trilinear reference, synthetic photos, the
objects in the test stack's storage, and the real consumers of exported LUT files (ffmpeg,
OpenColorIO). (Accounts and the worker are fixtures in ``conftest.py``.)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms

from app.ml.base import TrainingPair
from tests.conftest import Account, wait_for_job

IN_CI = os.environ.get("CI", "").lower() == "true"
SHARED = Path(
    os.environ.get("PICFILTER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
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


def missing_shared(what: str) -> NoReturn:
    """A test whose ``../shared/data`` is absent: it skips with the reason, except under
    ``CI=true``, where it fails (CI must run every test)."""
    if IN_CI:
        pytest.fail(f"CI=true: {what} is missing (tests that need shared data must not skip)")
    pytest.skip(f"{what} is absent (set PICFILTER_SHARED_DATA)")


def require_shared(*paths: Path) -> None:
    """Skip (fail under ``CI=true``) unless every path exists (default: the LUTs and photos)."""
    for p in paths or (LUTS, PHOTOS):
        if not p.exists():
            missing_shared(f"shared data {p}")


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
    store_exif: bool | None = None,
) -> dict[str, Any]:
    """Upload through the Images API: create -> PUT the presigned URL -> confirm (unless
    ``confirm=False``: then ``{"id", "status": "pending"}``)."""
    if isinstance(data, np.ndarray):
        data, content_type = encode(data, "png"), content_type or "image/png"
    if isinstance(data, Path):
        filename = filename or data.name
        content_type = content_type or CONTENT_TYPES[data.suffix.lower()]
        data = data.read_bytes()
    assert content_type, "content_type is needed for raw bytes"
    ext = {v: k for k, v in CONTENT_TYPES.items()}.get(content_type, ".bin")
    filename = filename or f"test-{uuid.uuid4().hex[:6]}{ext}"
    body: dict[str, Any] = {"filename": filename, "content_type": content_type, "size": len(data)}
    if store_exif is not None:
        body["store_exif"] = store_exif
    r = await client.post("/api/v1/images/upload", json=body, headers=account.headers)
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


async def send(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request to a presigned URL: the app itself (local storage) or the S3 server (moto on
    loopback, through a plain client)."""
    if url.startswith(str(client.base_url)) or url.startswith("/"):
        return await client.request(method, url, **kwargs)
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.request(method, url, **kwargs)


async def put_url(
    client: httpx.AsyncClient, url: str, data: bytes, headers: dict[str, str]
) -> None:
    r = await send(client, "PUT", url, content=data, headers=headers)
    assert r.status_code in (200, 204), r.text


async def fetch_url(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET a presigned URL (local storage through the app, S3 through a plain client)."""
    r = await send(client, "GET", url)
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


def reference_trilinear(
    table: np.ndarray,
    rgb: np.ndarray,
    domain_min: np.ndarray | None = None,
    domain_max: np.ndarray | None = None,
) -> np.ndarray:
    """Independent exact trilinear lookup in float64, written for the tests only.

    ``table[r, g, b, c]`` (N, N, N, 3); ``rgb`` (..., 3) floats; inputs are rescaled from the
    domain to [0, 1] and clamped. Loops over the 8 cell corners explicitly.
    """
    t = np.asarray(table, np.float64)
    n = t.shape[0]
    x = np.asarray(rgb, np.float64).reshape(-1, 3)
    lo_d = np.zeros(3) if domain_min is None else np.asarray(domain_min, np.float64)
    hi_d = np.ones(3) if domain_max is None else np.asarray(domain_max, np.float64)
    pos = np.clip((x - lo_d) / (hi_d - lo_d), 0.0, 1.0) * (n - 1)
    base = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    frac = pos - base
    out = np.zeros_like(x)
    for corner in range(8):
        offs = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        weight = np.prod(np.where(offs == 1, frac, 1.0 - frac), axis=1)
        idx = base + offs
        out += weight[:, None] * t[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out.reshape(np.shape(rgb))


def trilinear_reference(table: np.ndarray, image: np.ndarray) -> np.ndarray:
    """:func:`reference_trilinear` of a uint8 image, rounded back to uint8."""
    out = reference_trilinear(table, np.asarray(image, np.float64) / 255.0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def quantize(values: np.ndarray, maxv: int = 255) -> np.ndarray:
    """Round-half-up and clip to integer codes, as an image encoder would."""
    return np.clip(np.floor(np.asarray(values) * maxv + 0.5), 0, maxv)


def make_photo(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A small synthetic 'photo' (uint8): smooth gradients plus soft color blobs, so that it
    covers a broad, natural-looking part of the color cube."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    base = rng.uniform(0.25, 0.7, 3)
    grad = rng.normal(0, 0.3, (2, 3))
    img += base + yy[..., None] * grad[0] + xx[..., None] * grad[1]
    for _ in range(12):
        cy, cx = rng.random(2) * [height / max(height, width), width / max(height, width)]
        radius = rng.uniform(0.05, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        img += blob[..., None] * rng.normal(0, 0.25, 3)
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


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


def cast_photo_pairs(n: int, edit, seed: int = 0, size: int = 40) -> list[TrainingPair]:  # type: ignore[no-untyped-def]
    """Small smooth 'photos' (different colour casts) and their edits by ``edit(i, before)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    pairs = []
    for i in range(n):
        cast = rng.uniform(0.3, 0.9, 3)
        before = np.stack([xx * cast[0], yy * cast[1], (0.3 + 0.6 * xx * yy) * cast[2]], -1)
        before = np.clip(before + 0.03 * rng.standard_normal(before.shape), 0, 1)
        before = before.astype(np.float32)
        holdout = np.zeros((size, size), bool)
        holdout[::8, ::8] = True
        pairs.append(TrainingPair(before, np.asarray(edit(i, before), np.float32), holdout))
    return pairs


# ---- real consumers of exported LUT files ---------------------------------------------------
INTERPOLATIONS = ("trilinear", "tetrahedral")


def require_ffmpeg() -> str:
    """The ``ffmpeg`` executable; skips when it is not installed (a failure under ``CI=true``:
    ``.ci/run`` installs Debian's ffmpeg)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        if IN_CI:
            pytest.fail("CI=true: ffmpeg is not installed (.ci/run installs it with apt-get)")
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    return exe


def write_png16(image: np.ndarray, path: Path) -> Path:
    """A uint8 image as an exact 16-bit PNG (code * 257), the photo given to ffmpeg: ffmpeg's
    own 8 -> 16-bit conversion (swscale) is off by up to 1 level (54 dB on a photo), which
    would be measured as the LUT's error."""
    import pyvips

    codes = np.ascontiguousarray(image, dtype=np.uint16) * np.uint16(257)
    pyvips.Image.new_from_array(codes, interpretation="rgb16").pngsave(str(path), bitdepth=16)
    return path


def _ffmpeg_rgb48(inputs: list[Path], graph: str, shape: tuple[int, ...]) -> np.ndarray:
    """Run an ffmpeg filter graph on ``inputs`` (all in one folder, run from there so that no
    path needs escaping in the graph); the first frame as float64 RGB in [0, 1] (16-bit out)."""
    exe = require_ffmpeg()
    args = [exe, "-nostdin", "-v", "error"]
    for path in inputs:
        args += ["-i", path.name]
    args += ["-filter_complex", graph, "-frames:v", "1", "-pix_fmt", "rgb48le", "-f", "rawvideo"]
    done = subprocess.run(
        [*args, "-"], cwd=inputs[0].parent, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    h, w = shape[:2]
    return np.frombuffer(done.stdout, "<u2").reshape(h, w, 3).astype(np.float64) / 65535.0


def ffmpeg_lut3d(
    photo_png: Path, lut_file: Path, interp: str, shape: tuple[int, ...]
) -> np.ndarray:
    """ffmpeg's ``lut3d`` filter (``.cube``, ``.3dl``, ...) on the photo, at 16 bits."""
    assert lut_file.parent == photo_png.parent
    graph = f"[0:v]format=rgb48le,lut3d=file={lut_file.name}:interp={interp}"
    return _ffmpeg_rgb48([photo_png], graph, shape)


def ffmpeg_haldclut(
    photo_png: Path, hald_png: Path, interp: str, shape: tuple[int, ...]
) -> np.ndarray:
    """ffmpeg's ``haldclut`` filter (the HaldCLUT PNG as its second input), at 16 bits."""
    graph = (
        f"[0:v]format=rgb48le[img];[1:v]format=rgb48le[clut];[img][clut]haldclut=interp={interp}"
    )
    return _ffmpeg_rgb48([photo_png, hald_png], graph, shape)


def ocio_file_transform(lut_file: Path, interp: str, image: np.ndarray) -> np.ndarray:
    """OpenColorIO's ``FileTransform`` (CPU processor) on a uint8 image, as float64 in [0, 1];
    ``interp`` is ``trilinear`` (INTERP_LINEAR) or ``tetrahedral``."""
    import PyOpenColorIO as ocio

    mode = {"trilinear": ocio.INTERP_LINEAR, "tetrahedral": ocio.INTERP_TETRAHEDRAL}[interp]
    transform = ocio.FileTransform(
        src=str(lut_file), interpolation=mode, direction=ocio.TRANSFORM_DIR_FORWARD
    )
    processor = ocio.Config.CreateRaw().getProcessor(transform).getDefaultCPUProcessor()
    pixels = np.ascontiguousarray(image, dtype=np.float32) / np.float32(255.0)
    processor.applyRGB(pixels)
    return pixels.astype(np.float64)


def lcms_apply_icc(icc: bytes, image: np.ndarray, intent: str = "relative") -> np.ndarray:
    """LittleCMS (Pillow ImageCms, its bundled LittleCMS) with the exported profile ``icc`` as
    the source profile of a uint8 sRGB photo, converted to LittleCMS's sRGB: how a
    color-managed app shows it; float64 in [0, 1]. ``intent``: perceptual or relative."""
    intents = {
        "perceptual": ImageCms.Intent.PERCEPTUAL,
        "relative": ImageCms.Intent.RELATIVE_COLORIMETRIC,
    }
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
        "RGB",
        "RGB",
        renderingIntent=intents[intent],
    )
    out = ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(image), "RGB"), transform)
    assert out is not None
    return np.asarray(out).astype(np.float64) / 255.0


def require_tificc() -> str:
    """Debian's ``tificc`` (package liblcms2-utils: the system LittleCMS's own TIFF applier);
    skips when absent (a failure under ``CI=true``: ``.ci/run`` installs it)."""
    exe = shutil.which("tificc")
    if exe is None:
        if IN_CI:
            pytest.fail("CI=true: tificc is not installed (.ci/run installs liblcms2-utils)")
        pytest.skip("tificc is not installed (apt-get install liblcms2-utils)")
    return exe


def tificc_apply_icc(
    icc_file: Path, image: np.ndarray, intent: str = "relative", tmp: Path | None = None
) -> np.ndarray:
    """``tificc -i style.icc -o *sRGB`` on the photo as an exact 16-bit TIFF (code * 257), 16-bit
    out: the system LittleCMS (a different build from Pillow's); float64 in [0, 1]."""
    import pyvips

    exe = require_tificc()
    folder = tmp or icc_file.parent
    src, dst = folder / "tificc_in.tif", folder / "tificc_out.tif"
    codes = np.ascontiguousarray(image, dtype=np.uint16) * np.uint16(257)
    pyvips.Image.new_from_array(codes, interpretation="rgb16").tiffsave(str(src))
    flag = {"perceptual": "-t0", "relative": "-t1"}[intent]
    done = subprocess.run(
        [exe, f"-i{icc_file}", "-o*sRGB", flag, "-w16", str(src), str(dst)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")[-2000:]
    out = pyvips.Image.new_from_file(str(dst)).numpy()
    assert out.dtype == np.uint16, out.dtype
    assert out.shape == image.shape, out.shape
    return out.astype(np.float64) / 65535.0


def psnr_vs(service: np.ndarray, consumer: np.ndarray) -> float:
    """PSNR (dB) of a consumer's float result against the service's uint8 result."""
    ref = service.astype(np.float64) / 255.0
    mse = float(np.mean((np.clip(consumer, 0.0, 1.0) - ref) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


# ---- color management -----------------------------------------------------------------------
TEST_DATA = Path(__file__).resolve().parent / "data"


@cache
def wide_gamut_profiles() -> dict[str, bytes]:
    """Display P3 (the profile embedded in the shared ``ultrahdr_sky.jpg``, a phone photo) and
    Adobe RGB (``tests/data/compatibleWithAdobeRGB1998.icc``, see its README)."""
    require_shared(PHOTOS / "ultrahdr_sky.jpg")
    with Image.open(PHOTOS / "ultrahdr_sky.jpg") as im:
        p3 = im.info["icc_profile"]
    return {
        "Display P3": p3,
        "Adobe RGB": (TEST_DATA / "compatibleWithAdobeRGB1998.icc").read_bytes(),
    }


def srgb_profile_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def lcms_convert(pixels: np.ndarray, src: bytes, dst: bytes) -> np.ndarray:
    """uint8 RGB from profile ``src`` to ``dst`` with LittleCMS (Pillow), relative colorimetric:
    how a color-managed viewer shows the pixels (independent of the service's code)."""
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(src)),
        ImageCms.ImageCmsProfile(io.BytesIO(dst)),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    out = ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), transform)
    assert out is not None
    return np.asarray(out)


def saturated_photo(width: int = 320) -> np.ndarray:
    """A shared sRGB photo with its saturation raised (uint8): strong colors show the gap
    between styling raw wide-gamut values and styling in the working space best."""
    base = photo("astronaut.png", width)
    hsv = np.asarray(Image.fromarray(base).convert("HSV")).astype(np.float64)
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.6, 0, 255)
    return np.asarray(Image.fromarray(hsv.round().astype(np.uint8), "HSV").convert("RGB"))


def wide_gamut_versions(width: int = 320) -> dict[str, tuple[np.ndarray, bytes]]:
    """The saturated photo in each wide-gamut space, two ways: ``converted`` (the same colors,
    converted from sRGB with LittleCMS) and ``assigned`` (the sRGB values tagged with the wide
    profile: more saturated colors, partly outside sRGB). name -> (uint8 pixels, ICC bytes)."""
    srgb = saturated_photo(width)
    out: dict[str, tuple[np.ndarray, bytes]] = {}
    for name, icc in wide_gamut_profiles().items():
        out[f"{name} converted"] = (lcms_convert(srgb, srgb_profile_bytes(), icc), icc)
        out[f"{name} assigned"] = (srgb, icc)
    return out
