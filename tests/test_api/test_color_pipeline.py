"""Color management, 16 bits and orientation through the API and a real worker: uploads of
Display P3 / Adobe RGB photos, 16-bit PNG and TIFF, an EXIF-rotated JPEG; a style imported from
a shared creative LUT (a deterministic look) and one learned from wide-gamut pairs."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.ml.imaging import (
    WORKING_ICC,
    describe_profile,
    encode_image,
    is_working_space,
    load_image,
)
from app.ml.imaging.color import convert
from app.ml.metrics import delta_e2000
from tests.conftest import Account, WorkerProcess, wait_for_job
from tests.helpers import (
    create_style,
    fetch_url,
    import_cube,
    lcms_convert,
    make_photo,
    photo,
    shared_lut,
    source_path,
    srgb_profile_bytes,
    upload_image,
    wide_gamut_versions,
)

LOOK = "classic_film.cube"


async def _look(client: httpx.AsyncClient, user: Account) -> dict[str, Any]:
    r = await import_cube(client, user, source_path(LOOK), name="Classic film")
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _apply(
    client: httpx.AsyncClient, user: Account, style_id: str, image_id: str, **body: Any
) -> tuple[dict[str, Any], bytes]:
    r = await client.post(
        f"/api/v1/styles/{style_id}/apply",
        json={"image_id": image_id, **body},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    done = await wait_for_job(client, user, r.json()["id"], timeout=90)
    assert done["status"] == "completed", done
    result = dict(done["result"])
    return result, (await fetch_url(client, result["result_url"])).content


def _png(pixels: np.ndarray, icc: bytes | None) -> bytes:
    return encode_image(pixels, "png", icc_profile=icc)


async def test_wide_gamut_photos_get_the_srgb_look(client, user, live_worker) -> None:
    """Each photo, styled and viewed through its embedded profile, is within mean ΔE00 0.5 of
    the look applied to the same photo converted to sRGB first; ``output_profile: "srgb"``
    returns that sRGB rendering tagged sRGB."""
    style = await _look(client, user)
    lut = shared_lut(LOOK)
    for version, (pixels, icc) in wide_gamut_versions(240).items():
        image = await upload_image(client, user, _png(pixels, icc), "image/png")
        reference = lut.apply(lcms_convert(pixels, icc, srgb_profile_bytes()))

        result, data = await _apply(client, user, style["id"], image["id"])
        assert result["format"] == "png"
        assert result["output_profile"] == "source"
        out, info = load_image(data)
        assert info.icc_profile == icc  # still in its own space, with its profile
        de = delta_e2000(lcms_convert(out, icc, srgb_profile_bytes()), reference)
        print(f"{version}: mean ΔE00 {de['mean']:.3f} (p95 {de['p95']:.3f})")
        assert de["mean"] <= 0.5, (version, de)

        result, data = await _apply(client, user, style["id"], image["id"], output_profile="srgb")
        out, info = load_image(data)
        assert info.icc_profile is not None  # LittleCMS's sRGB (its bytes carry a timestamp)
        assert is_working_space(info.icc_profile)
        assert describe_profile(info.icc_profile) == describe_profile(WORKING_ICC)
        assert result["color_profile"].lower().startswith("srgb")
        assert delta_e2000(out, reference)["mean"] <= 0.5, version


async def test_shared_display_p3_photo(client, user, live_worker) -> None:
    """The shared Display P3 phone photo (downsized, its profile kept) gets the sRGB look."""
    pixels = photo("ultrahdr_sky.jpg", 400)
    with Image.open(source_path(LOOK).parents[1] / "photos" / "ultrahdr_sky.jpg") as im:
        icc = im.info["icc_profile"]
    style = await _look(client, user)
    image = await upload_image(client, user, _png(pixels, icc), "image/png")
    assert image["color_profile"] == "Display P3"
    _, data = await _apply(client, user, style["id"], image["id"])
    out, info = load_image(data)
    assert info.icc_profile == icc
    reference = shared_lut(LOOK).apply(lcms_convert(pixels, icc, srgb_profile_bytes()))
    de = delta_e2000(lcms_convert(out, icc, srgb_profile_bytes()), reference)
    print(f"shared ultrahdr_sky.jpg (Display P3): mean ΔE00 {de['mean']:.3f}")
    assert de["mean"] <= 0.5, de


async def test_bad_output_profile_and_format_are_422(client, user) -> None:
    style = await _look(client, user)
    image = await upload_image(client, user, make_photo(1, 32, 32), "image/png")
    for body in ({"output_profile": "adobe"}, {"output_profile": 1}, {"format": "gif"}):
        r = await client.post(
            f"/api/v1/styles/{style['id']}/apply",
            json={"image_id": image["id"], **body},
            headers=user.headers,
        )
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "validation_error"


def _photo16(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    base = make_photo(seed, h, w).astype(np.float64) * 257
    noise = np.random.default_rng(seed).uniform(-120, 120, base.shape)
    return np.clip(base + noise, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize(("fmt", "content_type"), [("png", "image/png"), ("tiff", "image/tiff")])
async def test_16bit_in_16bit_out(client, user, live_worker, fmt: str, content_type: str) -> None:
    """A 16-bit PNG / TIFF comes back as a 16-bit file of its own format (the default), within
    2 * 65535/256 levels of a float apply; asked for JPEG, it is 8-bit."""
    style = await _look(client, user)
    lut = shared_lut(LOOK)
    src = _photo16(2)
    image = await upload_image(client, user, encode_image(src, fmt), content_type)
    result, data = await _apply(client, user, style["id"], image["id"])
    assert (result["format"], result["bits"]) == (fmt, 16)
    got, info = load_image(data, keep_16bit=True)
    assert got.dtype == np.uint16
    assert info.format == {"png": "PNG", "tiff": "TIFF"}[fmt]
    reference = np.clip(lut.apply(src.astype(np.float32) / 65535), 0, 1) * 65535
    err = float(np.abs(got - reference).max())
    print(f"16-bit {fmt}: max error {err:.2f} levels of 65535")
    assert err <= 2 * 65535 / 256

    # a wide-gamut 16-bit TIFF/PNG: converted in 16 bits, still 16 bits
    p3 = wide_gamut_versions(64)["Display P3 converted"][1]
    image = await upload_image(client, user, encode_image(src, fmt, icc_profile=p3), content_type)
    result, data = await _apply(client, user, style["id"], image["id"])
    got, info = load_image(data, keep_16bit=True)
    assert (result["bits"], info.icc_profile) == (16, p3)
    graded = np.clip(lut.apply(convert(src, p3, None).astype(np.float32) / 65535), 0, 1)
    reference16 = convert(np.rint(graded * 65535).astype(np.uint16), None, p3)
    err = float(np.abs(got.astype(np.int64) - reference16.astype(np.int64)).max())
    print(f"16-bit {fmt} Display P3: max error {err:.0f} levels of 65535")
    assert err <= 2 * 65535 / 256

    result, data = await _apply(client, user, style["id"], image["id"], format="jpeg")
    assert (result["format"], result["bits"]) == ("jpeg", 8)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"


async def test_exif_rotated_jpeg_sizes_as_displayed(client, user, live_worker) -> None:
    """A 640x427 JPEG stored with orientation 6 displays 427x640: the image record and the job
    result both say 427x640, and the result's pixels are upright (orientation 1)."""
    stored = make_photo(3, 427, 640)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode_image(stored, "jpeg", 92, exif=exif.tobytes())
    image = await upload_image(client, user, data, "image/jpeg")
    assert (image["width"], image["height"]) == (427, 640)
    style = await _look(client, user)
    result, out = await _apply(client, user, style["id"], image["id"])
    assert (result["width"], result["height"], result["orientation"]) == (427, 640, 1)
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (427, 640)
        assert im.getexif().get(0x0112, 1) == 1
        upright_out = np.asarray(im.convert("RGB")).astype(np.int64)
    expected = shared_lut(LOOK).apply(load_image(data)[0]).astype(np.int64)
    assert np.abs(upright_out - expected).mean() < 3  # same content, up to JPEG re-encoding


async def test_tiff_comes_back_as_tiff(client, user, live_worker) -> None:
    style = await _look(client, user)
    src = make_photo(4, 50, 70)
    image = await upload_image(client, user, encode_image(src, "tiff"), "image/tiff")
    result, data = await _apply(client, user, style["id"], image["id"])
    assert (result["format"], result["bits"]) == ("tiff", 8)
    assert result["result_url"].split("?")[0].endswith(".tif")
    got, _ = load_image(data)
    assert np.array_equal(got, shared_lut(LOOK).apply(src))


async def test_heic_comes_back_as_heic(client, user, live_worker) -> None:
    style = await _look(client, user)
    image = await upload_image(
        client, user, encode_image(make_photo(5, 48, 64), "heic", 90), "image/heic"
    )
    result, data = await _apply(client, user, style["id"], image["id"])
    assert (result["format"], result["bits"]) == ("heic", 8)
    assert result["result_url"].split("?")[0].endswith(".heic")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "HEIF"
        assert im.size == (64, 48)


async def _learn_then_apply_unseen(
    client: Any, user: Any, worker: WorkerProcess, name: str, pairs: list[dict[str, str]], lut: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    """Learn a ``dlut`` style ``name`` from ``pairs``, apply it to an unseen sRGB photo; the
    style as read back, and the ΔE00 of the result against ``lut`` applied to that photo."""
    style = await create_style(client, user, name=name)
    r = await client.post(
        f"/api/v1/styles/{style['id']}/learn",
        json={"model": "dlut", "pairs": pairs},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    done = await wait_for_job(client, user, r.json()["id"], timeout=150, worker=worker)
    assert done["status"] == "completed", done
    style = (await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)).json()
    unseen = photo("rocket.jpg", 360)
    image = await upload_image(client, user, _png(unseen, None), "image/png")
    _, data = await _apply(client, user, style["id"], image["id"])
    return style, delta_e2000(load_image(data)[0], lut.apply(unseen))


@pytest.mark.slow
async def test_learning_converts_wide_gamut_pairs(client, user, worker: WorkerProcess) -> None:
    """Pairs uploaded in Display P3 and Adobe RGB (the same scenes as sRGB pairs, converted)
    teach the sRGB look: applied to an sRGB photo it reproduces the LUT; the style records its
    working space."""
    if not worker.running():
        worker.start()
    lut = shared_lut(LOOK)
    pairs = []
    for (name, (_, icc)), scene in zip(
        sorted(wide_gamut_versions(64).items())[::2], ("tahoe-gps.jpg", "coffee.png"), strict=True
    ):
        before = photo(scene, 360)
        after = lut.apply(before)
        srgb = srgb_profile_bytes()
        b = await upload_image(
            client, user, _png(lcms_convert(before, srgb, icc), icc), "image/png"
        )
        a = await upload_image(client, user, _png(lcms_convert(after, srgb, icc), icc), "image/png")
        assert b["color_profile"] != "sRGB (assumed)", name
        pairs.append({"before_image_id": b["id"], "after_image_id": a["id"]})
    style, de = await _learn_then_apply_unseen(
        client, user, worker, "Film from wide-gamut pairs", pairs, lut
    )
    assert style["metrics"]["working_space"].startswith("sRGB")
    print(f"learned from wide-gamut pairs, unseen sRGB photo: mean ΔE00 {de['mean']:.3f}")
    assert de["mean"] < 1.0, de


@pytest.mark.slow
async def test_learning_from_16bit_tiff_pairs(client, user, worker: WorkerProcess) -> None:
    """16-bit TIFF pairs tagged Adobe RGB (the look applied in float to 16-bit sRGB scenes, both
    converted to Adobe RGB in 16 bits) teach the look: applied to an unseen 8-bit sRGB photo it
    reproduces the LUT."""
    if not worker.running():
        worker.start()
    lut = shared_lut(LOOK)
    adobe = wide_gamut_versions(64)["Adobe RGB converted"][1]
    pairs = []
    for scene in ("tahoe-gps.jpg", "coffee.png"):
        before = photo(scene, 360).astype(np.uint16) * 257
        after = np.rint(np.clip(lut.apply(before.astype(np.float32) / 65535), 0, 1) * 65535)
        ids = []
        for pixels in (before, after.astype(np.uint16)):
            data = encode_image(convert(pixels, None, adobe), "tiff", icc_profile=adobe)
            ids.append((await upload_image(client, user, data, "image/tiff"))["id"])
        pairs.append({"before_image_id": ids[0], "after_image_id": ids[1]})
    _, de = await _learn_then_apply_unseen(
        client, user, worker, "Film from 16-bit TIFF pairs", pairs, lut
    )
    print(
        f"learned from 16-bit Adobe RGB TIFF pairs, unseen sRGB photo: mean ΔE00 {de['mean']:.3f}"
    )
    assert de["mean"] < 1.0, de
