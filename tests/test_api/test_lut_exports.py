"""Export formats and LUT imports through the API and a real worker (issue 12).

An imported commercial LUT is applied to a real photo by the service (``/apply``), exported in
every format (``/export``), downloaded, and opened by the tool users load that format into:
ffmpeg ``lut3d`` (``.cube``, ``.3dl``) and ``haldclut`` (HaldCLUT PNG) with trilinear and
tetrahedral interpolation, OpenColorIO's ``FileTransform`` (linear and tetrahedral) for
``.cube`` / ``.3dl`` / ``.spi3d`` / ``.csp``, LittleCMS (Pillow's and Debian's ``tificc``) for
the ICC profile. Each must reproduce the service's result at >= 45 dB PSNR. Then HaldCLUT PNGs
and ``.3dl`` files import as styles, and bad ones are 422s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.ml.lut_formats import export_lut
from tests.conftest import Account
from tests.helpers import (
    INTERPOLATIONS,
    decode,
    encode,
    fetch_url,
    ffmpeg_haldclut,
    ffmpeg_lut3d,
    import_cube,
    lcms_apply_icc,
    ocio_file_transform,
    photo,
    psnr_vs,
    run_job_ok,
    shared_lut,
    source_path,
    tificc_apply_icc,
    upload_image,
    write_png16,
)

GOAL_DB = 45.0
LOOK = "classic_film.cube"  # 33^3


async def _import(client: Any, user: Account, data: bytes, filename: str) -> Any:
    return await client.post(
        "/api/v1/styles/import",
        files={"file": (filename, data, "application/octet-stream")},
        data={"name": f"Imported {filename}"},
        headers=user.headers,
    )


async def _apply_png(client: Any, user: Account, sid: str, image_id: str, worker: Any) -> Any:
    r = await client.post(
        f"/api/v1/styles/{sid}/apply",
        json={"image_id": image_id, "format": "png"},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    done = await run_job_ok(client, user, r.json(), worker)
    return decode((await fetch_url(client, done["result"]["result_url"])).content)


async def _export(
    client: Any, user: Account, sid: str, body: dict[str, Any], worker: Any
) -> tuple[dict[str, Any], bytes]:
    r = await client.post(f"/api/v1/styles/{sid}/export", json=body, headers=user.headers)
    assert r.status_code == 202, r.text
    done = await run_job_ok(client, user, r.json(), worker)
    result = dict(done["result"])
    data = (await fetch_url(client, result["download_url"])).content
    assert result["bytes"] == len(data)
    return result, data


# (request body, expected file name suffix, consumers)
EXPORTS = [
    ({"format": "cube", "size": 33}, "_33.cube", ("ffmpeg-lut3d", "ocio")),
    ({"format": "3dl", "size": 17}, "_17.3dl", ("ffmpeg-lut3d", "ocio")),
    ({"format": "3dl", "size": 33}, "_33.3dl", ("ocio",)),
    ({"format": "haldclut", "level": 8}, "_hald8.png", ("ffmpeg-haldclut",)),
    ({"format": "spi3d", "size": 33}, "_33.spi3d", ("ocio",)),
    ({"format": "csp", "size": 33}, "_33.csp", ("ocio",)),
]


async def _imported_look_applied(
    client: Any, user: Account, live_worker: Any
) -> tuple[np.ndarray, str, np.ndarray]:
    """``LOOK`` imported as "Classic Film" and applied by the service to a shared photo: the
    photo, the style id and the service's result."""
    image = photo("tahoe-gps.jpg", 640)
    r = await import_cube(client, user, source_path(LOOK), name="Classic Film")
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    uploaded = await upload_image(client, user, encode(np.ascontiguousarray(image)), "image/png")
    return image, sid, await _apply_png(client, user, sid, uploaded["id"], live_worker)


@pytest.mark.slow
async def test_every_export_opens_in_its_consumer_like_the_service_applies(
    client: Any, user: Account, live_worker: Any, tmp_path: Path
) -> None:
    image, sid, service = await _imported_look_applied(client, user, live_worker)
    assert np.abs(service.astype(int) - shared_lut(LOOK).apply(image).astype(int)).max() <= 1
    photo16 = write_png16(image, tmp_path / "photo.png")
    measured: dict[str, float] = {}
    for body, suffix, consumers in EXPORTS:
        result, data = await _export(client, user, sid, body, live_worker)
        assert result["filename"] == "classic-film" + suffix, result
        assert result["format"] == body["format"]
        lut_file = tmp_path / result["filename"]
        lut_file.write_bytes(data)
        for consumer in consumers:
            for interp in INTERPOLATIONS:
                if consumer == "ocio":
                    got = ocio_file_transform(lut_file, interp, image)
                elif consumer == "ffmpeg-haldclut":
                    got = ffmpeg_haldclut(photo16, lut_file, interp, image.shape)
                else:
                    got = ffmpeg_lut3d(photo16, lut_file, interp, image.shape)
                key = f"{result['filename']:22s} {consumer:16s} {interp:11s}"
                measured[key] = psnr_vs(service, got)
                print(f"PSNR {key} {measured[key]:6.2f} dB")
    assert len(measured) == 16
    assert all(v >= GOAL_DB for v in measured.values()), measured


async def test_icc_export_is_a_profile_littlecms_applies_like_the_service(
    client: Any, user: Account, live_worker: Any, tmp_path: Path
) -> None:
    """``{"format": "icc"}``: the downloaded profile opens in Pillow, and LittleCMS (Pillow's,
    and Debian's ``tificc``) with it as the photo's source profile, sRGB out, reproduces the
    service's own apply of the photo."""
    import io

    from PIL import ImageCms

    image, sid, service = await _imported_look_applied(client, user, live_worker)
    result, data = await _export(client, user, sid, {"format": "icc", "size": 65}, live_worker)
    assert (result["format"], result["size"], result["requested_size"]) == ("icc", 33, 65)
    assert result["filename"] == "classic-film_33.icc"
    profile = ImageCms.ImageCmsProfile(io.BytesIO(data)).profile
    assert (profile.device_class, profile.xcolor_space) == ("scnr", "RGB ")
    assert profile.profile_description.startswith("Classic Film - PicFilter imported 33^3")
    icc_file = tmp_path / result["filename"]
    icc_file.write_bytes(data)
    measured = {
        "pillow perceptual": psnr_vs(service, lcms_apply_icc(data, image, "perceptual")),
        "pillow relative": psnr_vs(service, lcms_apply_icc(data, image, "relative")),
        "tificc relative": psnr_vs(service, tificc_apply_icc(icc_file, image, "relative")),
    }
    print("PSNR " + " ".join(f"{k} {v:.2f} dB" for k, v in measured.items()))
    assert all(v >= GOAL_DB for v in measured.values()), measured


async def test_exports_never_claim_more_than_the_table(
    client: Any, user: Account, live_worker: Any
) -> None:
    """A 65^3 export of an imported 33^3 LUT is written at 33^3 and says so; a HaldCLUT (whose
    lattice its level fixes) names the table it resamples."""
    r = await import_cube(client, user, source_path(LOOK), name="Classic Film")
    sid = r.json()["id"]
    for fmt in ("cube", "spi3d"):
        result, data = await _export(client, user, sid, {"format": fmt, "size": 65}, live_worker)
        assert result["size"] == 33
        assert result["requested_size"] == 65
        assert "33^3" in result["note"]
        assert result["filename"] == f"classic-film_33.{fmt}"
        if fmt == "cube":
            assert "LUT_3D_SIZE 33" in data.decode().splitlines()
        else:
            assert data.decode().splitlines()[2] == "33 33 33"
    result, _ = await _export(client, user, sid, {"format": "3dl", "size": 17}, live_worker)
    assert (result["size"], result["source_size"]) == (17, 33)
    assert "requested_size" not in result
    result, data = await _export(client, user, sid, {"format": "haldclut"}, live_worker)
    assert (result["level"], result["size"], result["source_size"]) == (8, 64, 33)
    assert "resampled" in result["note"]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


async def test_haldclut_and_3dl_files_import_as_styles(
    client: Any, user: Account, live_worker: Any
) -> None:
    look = shared_lut(LOOK)
    image = photo("coffee.png", 240)
    uploaded = await upload_image(client, user, encode(np.ascontiguousarray(image)), "image/png")
    truth = look.apply(image)
    # a level-12 HaldCLUT as RawTherapee ships them: 8 bits (a 16-bit one exceeds the 10 MB
    # upload limit); its 144^3 table is stored resampled to 65^3
    codes = np.rint(np.clip(look.resample(144).to_cube_order(), 0, 1) * 255).astype(np.uint8)
    files = {
        "film.3dl": export_lut(look, "3dl").data,  # 33^3, 12-bit codes
        "film_hald8.png": export_lut(look.resample(64), "haldclut").data,
        "film_hald12.png": encode(codes.reshape(1728, 1728, 3)),
    }
    for name, data in files.items():
        r = await _import(client, user, data, name)
        assert r.status_code == 201, (name, r.text)
        style = r.json()
        assert (style["status"], style["model"]) == ("ready", "imported")
        got = await _apply_png(client, user, style["id"], uploaded["id"], live_worker)
        db = psnr_vs(truth, got.astype(np.float64) / 255)
        print(f"PSNR import {name:16s} {db:6.2f} dB")
        assert db >= GOAL_DB, (name, db)
        if name == "film.3dl":
            assert np.abs(got.astype(int) - truth.astype(int)).max() <= 1
    # the level-12 table (144^3) was stored at 65^3: its export is 65^3, not 144^3
    r = await _import(client, user, files["film_hald12.png"], "again.png")
    result, _ = await _export(client, user, r.json()["id"], {"size": 65}, live_worker)
    assert result["size"] == 65


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("film.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "Invalid HaldCLUT PNG: the PNG cannot"),
        ("film.png", encode(np.zeros((48, 48, 3), np.uint8)), "a square of level^3 pixels"),
        ("film.png", b"GIF89a" + b"\0" * 64, "Invalid HaldCLUT PNG: not a PNG file"),
        ("look.3dl", b"0 341 682 1023\n0 0 0\n", "Invalid .3dl file: line 3: truncated data"),
        ("look.3dl", b"0 100 682 1023\n", "Invalid .3dl file: line 1: only a uniform mesh"),
    ],
)
async def test_bad_lut_files_are_422_and_create_nothing(
    client: Any, user: Account, filename: str, data: bytes, message: str
) -> None:
    r = await _import(client, user, data, filename)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_lut", error
    assert message in error["message"], error
    assert error["details"]["field"] == "file"
    r = await client.get("/api/v1/styles", params={"owner": "me"}, headers=user.headers)
    assert r.json()["items"] == []


def test_the_api_offers_exactly_the_formats_the_library_writes() -> None:
    from typing import get_args

    from app.ml.lut_formats import EXPORT_FORMATS, HALD_LEVELS
    from app.schemas.style import ExportRequest
    from app.services import style_rules

    assert {k: v.ext for k, v in EXPORT_FORMATS.items()} == style_rules.EXPORT_FORMATS
    assert set(get_args(ExportRequest.model_fields["format"].annotation)) == set(EXPORT_FORMATS)
    assert style_rules.HALD_LEVELS == HALD_LEVELS
