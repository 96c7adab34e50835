"""Learn, apply and export end to end: API -> database -> broker -> a real worker -> storage.

Ground truth: a real creative LUT from the shared data, applied with the exact trilinear LUT
code to small photos, makes before/after pairs; the learned style must reproduce that look on a
photo it never saw. Images are ~480 px wide so that the suite stays fast.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms

from app.ml.metrics import delta_e2000
from tests.conftest import Account, WorkerProcess, create_user, wait_for_job
from tests.helpers import (
    create_style,
    decode,
    encode,
    fetch_url,
    import_cube,
    parse_cube_independently,
    photo,
    require_shared,
    run_job_ok,
    shared_lut,
    shared_luts,
    source_path,
    trilinear_reference,
    upload_image,
)

LOOK = "classic_film.cube"
TRAIN = ("tahoe-gps.jpg", "coffee.png")
UNSEEN = "rocket.jpg"


@dataclass
class Learned:
    client: httpx.AsyncClient
    owner: Account
    style: dict[str, Any]
    job: dict[str, Any]
    unseen_image: dict[str, Any]
    unseen: np.ndarray


@pytest.fixture(scope="module")
async def learned(app: Any, worker: WorkerProcess) -> AsyncIterator[Learned]:
    """One style learned from 2 pairs made with a shared LUT (shared by this module's tests)."""
    require_shared()
    lut = shared_lut(LOOK)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        if not worker.running():
            worker.start()
        owner = await create_user(client)
        pairs = []
        for name in TRAIN:
            before = photo(name)
            b = await upload_image(client, owner, encode(before), "image/png")
            a = await upload_image(client, owner, encode(lut.apply(before)), "image/png")
            pairs.append({"before_image_id": b["id"], "after_image_id": a["id"]})
        style = await create_style(
            client, owner, name="Classic Film (learned)", visibility="public", tags=["film"]
        )
        r = await client.post(
            f"/api/v1/styles/{style['id']}/learn",
            json={"model": "dlut", "pairs": pairs},
            headers=owner.headers,
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["type"] == "learn_style"
        assert job["status"] == "queued"
        assert job["style_id"] == style["id"]
        r = await client.get(f"/api/v1/styles/{style['id']}", headers=owner.headers)
        assert r.json()["status"] == "training"
        done = await wait_for_job(client, owner, job["id"], timeout=150, worker=worker)
        assert done["status"] == "completed", done
        r = await client.get(f"/api/v1/styles/{style['id']}", headers=owner.headers)
        unseen = photo(UNSEEN)
        unseen_image = await upload_image(client, owner, encode(unseen), "image/png")
        yield Learned(client, owner, r.json(), done, unseen_image, unseen)


async def _apply(
    learned: Learned, account: Account, image_id: str, style_id: str | None = None, **body: Any
) -> dict[str, Any]:
    client = learned.client
    sid = style_id or learned.style["id"]
    r = await client.post(
        f"/api/v1/styles/{sid}/apply", json={"image_id": image_id, **body}, headers=account.headers
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["type"] == "apply_style"
    assert job["image_id"] == image_id
    done = await wait_for_job(client, account, job["id"], timeout=60)
    assert done["status"] == "completed", done
    return dict(done["result"])


async def test_learned_style_is_ready_with_good_held_out_metrics(learned: Learned) -> None:
    style = learned.style
    assert style["status"] == "ready", style
    assert style["model"] == "dlut"
    assert style["error"] is None
    metrics = style["metrics"]
    assert metrics is not None
    # holdout: each of the 2 folds learned from one photo and is scored on the other (honest,
    # ~2 ΔE00 here); the final fit learned from every pixel of both photos (no held-out tiles)
    holdout, identity = metrics["holdout"], metrics["identity_holdout"]
    assert holdout["n_photos"] == 2, metrics
    assert holdout["delta_e2000_mean"] < identity["delta_e2000_mean"] / 2, metrics
    assert "heldout_pixels" not in metrics, metrics
    assert metrics["fit"]["psnr"] > 35, metrics
    assert metrics["fit"]["delta_e2000_mean"] < 1.0, metrics
    assert learned.job["progress"] == 100
    assert learned.job["result"]["metrics"] == metrics
    preview = await fetch_url(learned.client, style["preview_url"])
    with Image.open(io.BytesIO(preview.content)) as im:
        assert im.format == "WEBP"
        assert 700 <= im.width <= 900, im.size  # before | after side by side


async def test_apply_reproduces_the_look_on_an_unseen_photo(learned: Learned) -> None:
    result = await _apply(learned, learned.owner, learned.unseen_image["id"], format="png")
    assert result["format"] == "png"
    h, w = learned.unseen.shape[:2]
    assert (result["width"], result["height"]) == (w, h)
    got = decode((await fetch_url(learned.client, result["result_url"])).content)
    truth = shared_lut(LOOK).apply(learned.unseen)
    de = delta_e2000(got, truth)
    assert de["mean"] < 1.0, de
    # strength 0 leaves the photo as it was; 0.5 lies between
    result0 = await _apply(learned, learned.owner, learned.unseen_image["id"], strength=0.0)
    assert result0["format"] == "png"  # the original's format by default
    same = decode((await fetch_url(learned.client, result0["result_url"])).content)
    assert np.abs(same.astype(int) - learned.unseen.astype(int)).max() <= 1
    half = await _apply(learned, learned.owner, learned.unseen_image["id"], strength=0.5)
    mid = decode((await fetch_url(learned.client, half["result_url"])).content).astype(float)
    expected = (learned.unseen.astype(float) + got.astype(float)) / 2
    assert np.abs(mid - expected).mean() < 1.0


async def test_apply_says_how_much_of_the_photo_the_examples_showed(learned: Learned) -> None:
    """The style learned from tahoe-gps + coffee records the colors they show; applied to a
    photo that is half coffee and half a pure green neither shows, it reports half the pixels
    as unseen (the look is extrapolated there), and none on its own training photo."""
    metrics = learned.style["metrics"]
    assert metrics["coverage"]["grid"] == 17, metrics["coverage"]
    assert 0 < metrics["coverage"]["seen_cells"] < 17**3 // 4, metrics["coverage"]
    assert "cells" not in metrics["coverage"]  # the packed record stays with the worker
    coffee = photo("coffee.png")
    green = np.zeros_like(coffee)
    green[..., 1] = 255
    shares = []
    for pixels in (coffee, np.concatenate([coffee, green], axis=1)):
        image = await upload_image(learned.client, learned.owner, encode(pixels), "image/png")
        result = await _apply(learned, learned.owner, image["id"])
        shares.append(result["coverage"]["unseen_share"])
        assert "extrapolated" in result["coverage"]["what"]
    assert shares[0] <= 0.01, shares
    assert 0.49 <= shares[1] <= 0.51, shares


async def test_apply_is_upright_keeps_icc_and_full_resolution(learned: Learned) -> None:
    base = photo(UNSEEN, 360)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    exif[0x010F] = "PicFilterTestCam"
    data = encode(base, "jpeg", quality=95, icc_profile=icc, exif=exif.tobytes())
    image = await upload_image(learned.client, learned.owner, data, "image/jpeg")
    for fmt, quality in (("jpeg", 90), ("webp", 80), ("png", None)):
        body: dict[str, Any] = {"format": fmt}
        if quality:
            body["quality"] = quality
        result = await _apply(learned, learned.owner, image["id"], **body)
        assert result["format"] == fmt
        out = (await fetch_url(learned.client, result["result_url"])).content
        with Image.open(io.BytesIO(out)) as im:
            assert im.format == {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt]
            # full resolution, upright pixels (orientation 6 applied: a quarter turn)
            assert im.size == (base.shape[0], base.shape[1])
            assert im.info.get("icc_profile") == icc
            assert im.getexif().get(0x0112, 1) == 1
            assert im.getexif().get(0x010F) == "PicFilterTestCam"
        # the job and the image record report the size as displayed, alike
        assert (result["width"], result["height"]) == (base.shape[0], base.shape[1])
        assert (image["width"], image["height"]) == (base.shape[0], base.shape[1])
        assert result["orientation"] == 1


async def test_apply_counts_and_batch(learned: Learned) -> None:
    client, owner = learned.client, learned.owner
    before = (await client.get(f"/api/v1/styles/{learned.style['id']}")).json()["apply_count"]
    images = [
        await upload_image(client, owner, encode(photo(n, 200)), "image/png")
        for n in ("astronaut.png", "UNIS_EV0.jpg", UNSEEN)
    ]
    r = await client.post(
        f"/api/v1/styles/{learned.style['id']}/apply",
        json={"image_ids": [i["id"] for i in images], "format": "webp", "quality": 70},
        headers=owner.headers,
    )
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["image_id"] for j in jobs] == [i["id"] for i in images]
    urls = set()
    for job in jobs:
        done = await run_job_ok(client, owner, job, None)
        assert done["result"]["format"] == "webp"
        urls.add(done["result"]["result_url"].split("?")[0])
    assert len(urls) == 3
    after = (await client.get(f"/api/v1/styles/{learned.style['id']}")).json()["apply_count"]
    assert after == before + 3


@pytest.mark.parametrize("size", [17, 33, 65])
async def test_export_cube_parses_and_reproduces_apply(learned: Learned, size: int) -> None:
    client, owner = learned.client, learned.owner
    r = await client.post(
        f"/api/v1/styles/{learned.style['id']}/export",
        json={"size": size, "format": "cube"},
        headers=owner.headers,
    )
    assert r.status_code == 202, r.text
    done = await run_job_ok(client, owner, r.json(), None)
    result = done["result"]
    # a dlut style is a 33^3 table: a 65^3 file would only resample it (issue 12)
    written = min(size, 33)
    assert result["size"] == written
    assert result["format"] == "cube"
    if size > written:
        assert result["requested_size"] == size
        assert "33^3" in result["note"]
    else:
        assert "requested_size" not in result
    assert result["filename"] == f"classic-film-learned_{written}.cube"
    resp = await fetch_url(client, result["download_url"])
    assert result["filename"] in resp.headers.get("content-disposition", "")
    text = resp.content.decode()
    title, parsed_size, table = parse_cube_independently(text)
    assert parsed_size == written
    assert title
    assert "Classic Film (learned)" in title
    assert str(written) in title
    assert "# Input encoding: sRGB display-referred, full range" in text.splitlines()
    from app.ml.cube_export import read_cube_text

    assert read_cube_text(text).size == written
    if size == 65:
        applied = await _apply(learned, owner, learned.unseen_image["id"], format="png")
        own = decode((await fetch_url(client, applied["result_url"])).content)
        independent = trilinear_reference(table, learned.unseen)
        diff = np.abs(independent.astype(int) - own.astype(int))
        assert diff.max() <= 1, (diff.max(), (diff > 1).mean())


async def test_public_style_works_for_others_and_private_does_not(learned: Learned) -> None:
    client = learned.client
    other = await create_user(client)
    mine = await upload_image(client, other, encode(photo(UNSEEN, 160)), "image/png")
    result = await _apply(learned, other, mine["id"])  # public style, other's own image
    assert result["format"] == "png"
    r = await client.post(
        f"/api/v1/styles/{learned.style['id']}/export", json={"size": 17}, headers=other.headers
    )
    assert r.status_code == 202
    await run_job_ok(client, other, r.json(), None)
    # the owner's image is not the other user's to use
    r = await client.post(
        f"/api/v1/styles/{learned.style['id']}/apply",
        json={"image_id": learned.unseen_image["id"]},
        headers=other.headers,
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "image_not_found"
    # the other user's jobs are theirs only
    job = (
        await client.post(
            f"/api/v1/styles/{learned.style['id']}/export", json={"size": 17}, headers=other.headers
        )
    ).json()
    r = await client.get(f"/api/v1/jobs/{job['id']}", headers=learned.owner.headers)
    assert r.status_code == 404
    await run_job_ok(client, other, job, None)


async def test_every_imported_shared_lut_applies_exactly(client, user, live_worker) -> None:
    require_shared()
    base = photo("astronaut.png", 160)
    image = await upload_image(client, user, encode(base), "image/png")
    for path in shared_luts():
        r = await import_cube(client, user, path, name=path.stem)
        assert r.status_code == 201, (path.name, r.text)
        sid = r.json()["id"]
        r = await client.post(
            f"/api/v1/styles/{sid}/apply",
            json={"image_id": image["id"], "format": "png"},
            headers=user.headers,
        )
        assert r.status_code == 202, r.text
        done = await run_job_ok(client, user, r.json(), live_worker)
        got = decode((await fetch_url(client, done["result"]["result_url"])).content)
        truth = shared_lut(path.name).apply(base)
        assert np.abs(got.astype(int) - truth.astype(int)).max() <= 1, path.name
        assert done["result"]["coverage"] is None  # an imported LUT was taught nothing


@pytest.mark.parametrize(
    ("name", "size"), [("golden_years_film.cube", 33), ("golden_years_film.cube", 65)]
)
async def test_export_of_an_imported_lut_round_trips(
    client, user, live_worker, name: str, size: int
) -> None:
    require_shared()
    source = shared_lut(name)  # 33^3: a 65^3 export is written at 33^3, the table's own size
    r = await import_cube(client, user, source_path(name), name="Golden Years & Co")
    sid = r.json()["id"]
    r = await client.post(f"/api/v1/styles/{sid}/export", json={"size": size}, headers=user.headers)
    assert r.status_code == 202, r.text
    done = await run_job_ok(client, user, r.json(), live_worker)
    assert done["result"]["filename"] == "golden-years-co_33.cube"
    assert done["result"]["size"] == 33
    assert done["result"].get("requested_size") == (size if size != 33 else None)
    text = (await fetch_url(client, done["result"]["download_url"])).content.decode()
    _title, parsed, table = parse_cube_independently(text)
    assert parsed == 33
    base = photo("coffee.png", 160)
    diff = np.abs(trilinear_reference(table, base).astype(int) - source.apply(base).astype(int))
    assert diff.max() <= 1


async def test_learn_from_references_only(client, user, live_worker) -> None:
    require_shared()
    lut = shared_lut("sunset_orange.cube")
    refs = [
        await upload_image(client, user, encode(lut.apply(photo(n, 320))), "image/png")
        for n in ("tahoe-gps.jpg", "UNIS_EV0.jpg")
    ]
    style = await create_style(client, user, name="Sunset refs")
    r = await client.post(
        f"/api/v1/styles/{style['id']}/learn",
        json={"reference_image_ids": [i["id"] for i in refs]},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    done = await wait_for_job(client, user, r.json()["id"], timeout=150, worker=live_worker)
    assert done["status"] == "completed", done
    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    body = r.json()
    assert body["status"] == "ready", body
    assert body["preview_url"], body
    assert uuid.UUID(body["id"])
