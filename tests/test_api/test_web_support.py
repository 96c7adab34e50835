"""The web client's API additions (``app/api/web_support.py``), on both stacks.

* ``GET /styles/{id}/lut``: the style's LUT, decoded, equals the imported ``.cube`` table;
  visibility as every style read (anonymous on public: 200; another user's private: 404);
  a draft without a model: 409.
* ``POST /jobs/results.zip``: the completed apply jobs' results, byte for byte, one entry each
  (repeated ids once); another user's job 404; an unfinished or non-apply job 409; no token 401.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.ml.cube_export import dumps_cube
from app.ml.lut import LUT3D
from tests.conftest import create_user
from tests.helpers import (
    create_style,
    fetch_url,
    import_cube,
    run_job_ok,
    synthetic_photo,
    upload_image,
)


def _warm(size: int = 9) -> LUT3D:
    ramp = np.linspace(0.0, 1.0, size)
    r, g, b = np.meshgrid(ramp, ramp, ramp, indexing="ij")
    table = np.stack([r**0.8, g, 0.1 + 0.8 * b**1.2], -1).astype(np.float32)
    return LUT3D(table)


def _decode(body: dict) -> np.ndarray:
    codes = np.frombuffer(base64.b64decode(body["data"]), "<u2").astype(np.float64)
    values = body["lo"] + (body["hi"] - body["lo"]) * codes / 65535
    n = body["size"]
    # red fastest: (b, g, r, c) in C order -> table[r, g, b, c]
    return values.reshape(n, n, n, 3).transpose(2, 1, 0, 3)


async def test_lut_matches_the_imported_cube_and_follows_visibility(client, user) -> None:
    lut = _warm()
    cube = dumps_cube(lut, title="warm").encode()
    r = await import_cube(client, user, cube, name="Warm", visibility="public")
    assert r.status_code == 201, r.text
    style = r.json()

    got = await client.get(f"/api/v1/styles/{style['id']}/lut")  # anonymous: public style
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["size"] == 9
    assert body["domain_min"] == [0.0, 0.0, 0.0]
    assert body["domain_max"] == [1.0, 1.0, 1.0]
    step = (body["hi"] - body["lo"]) / 65535
    assert np.abs(_decode(body) - lut.table).max() <= step / 2 + 1e-6

    private = (await import_cube(client, user, cube, name="Mine")).json()
    other = await create_user(client)
    for headers in ({}, other.headers):
        r = await client.get(f"/api/v1/styles/{private['id']}/lut", headers=headers)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "style_not_found"
    r = await client.get(f"/api/v1/styles/{private['id']}/lut", headers=user.headers)
    assert r.status_code == 200

    draft = await create_style(client, user)
    r = await client.get(f"/api/v1/styles/{draft['id']}/lut", headers=user.headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "style_not_ready"


async def test_openapi_documents_the_additions(client) -> None:
    doc = (await client.get("/api/v1/openapi.json")).json()
    lut = doc["paths"]["/api/v1/styles/{style_id}/lut"]["get"]
    assert lut["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LutOut"
    )
    zipped = doc["paths"]["/api/v1/jobs/results.zip"]["post"]
    assert "application/zip" in zipped["responses"]["200"]["content"]
    assert zipped["summary"]


@pytest.mark.slow
async def test_results_zip_holds_each_result(client, user, other_user, live_worker) -> None:
    cube = dumps_cube(_warm(), title="warm").encode()
    style = (await import_cube(client, user, cube, name="Warm zip")).json()
    images = [
        await upload_image(client, user, synthetic_photo(64, 48, seed=i), filename=f"p{i}.png")
        for i in range(2)
    ]
    r = await client.post(
        f"/api/v1/styles/{style['id']}/apply",
        json={"image_ids": [i["id"] for i in images], "strength": 0.7},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    jobs = [await run_job_ok(client, user, j, live_worker) for j in r.json()["jobs"]]
    results = [(await fetch_url(client, j["result"]["result_url"])).content for j in jobs]

    ids = [j["id"] for j in jobs]
    r = await client.post(
        "/api/v1/jobs/results.zip", json={"job_ids": [*ids, ids[0]]}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert "picfilter-results.zip" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        assert len(names) == 2
        assert [zf.read(n) for n in names] == results
    assert [n[:2] for n in names] == ["p0", "p1"]

    r = await client.post(
        "/api/v1/jobs/results.zip", json={"job_ids": ids}, headers=other_user.headers
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "job_not_found"
    assert (await client.post("/api/v1/jobs/results.zip", json={"job_ids": ids})).status_code == 401

    export = await client.post(f"/api/v1/styles/{style['id']}/export", headers=user.headers)
    assert export.status_code == 202
    r = await client.post(
        "/api/v1/jobs/results.zip", json={"job_ids": [export.json()["id"]]}, headers=user.headers
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "job_not_completed"
    r = await client.post("/api/v1/jobs/results.zip", json={"job_ids": []}, headers=user.headers)
    assert r.status_code == 422


async def test_the_client_is_served_at_root_and_api_paths_stay_json(client) -> None:
    """``/`` is the client's page and ``/web/...`` its files; unknown API paths keep the API's
    JSON 404 whatever the method."""
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/web/js/app.js">' in r.text
    js = await client.get("/web/js/app.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    for method in ("GET", "POST", "DELETE"):
        r = await client.request(method, "/api/v1/no-such-thing")
        assert r.status_code == 404, (method, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert (await client.delete("/api/v1/styles")).status_code == 405
    assert (await client.get("/docs")).status_code == 200


def test_the_client_names_no_other_site() -> None:
    """No CDN, no web fonts, no other origin anywhere in the client's files."""
    static = Path(__file__).resolve().parents[2] / "app" / "web" / "static"
    files = [p for p in static.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".html", ".css", ".js"}
    for path in files:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path
