"""Styles through the API: CRUD, visibility and ownership, validation, import, fork, delete.

The learn/apply/export jobs end to end are in ``test_styles_ml.py``; concurrency and failure
cases of the jobs in ``tests/test_workers/test_style_jobs.py``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.conftest import Account, create_user
from tests.helpers import (
    LUTS,
    create_style,
    fetch_url,
    import_cube,
    require_shared,
    shared_luts,
    style_objects,
    synthetic_photo,
    upload_image,
)

TINY_CUBE = b"""TITLE "tiny warm"
LUT_3D_SIZE 2
0 0 0
1 0 0
0 1 0
1 1 0
0 0 0.8
1 0 0.8
0 1 0.8
1 1 0.8
"""


def _error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


async def _imported(client: Any, account: Account, **kw: Any) -> dict[str, Any]:
    r = await import_cube(client, account, TINY_CUBE, **kw)
    assert r.status_code == 201, r.text
    return dict(r.json())


# ---- CRUD -----------------------------------------------------------------------------------
async def test_create_get_patch(client, user) -> None:
    style = await create_style(
        client, user, name="Golden hour", description="warm", tags=["Warm", " film ", "warm"]
    )
    assert style["status"] == "draft"
    assert style["owner"] == {"id": user.id, "username": user.username}
    assert style["visibility"] == "private"
    assert style["tags"] == ["warm", "film"]
    assert style["model"] is None
    assert style["metrics"] is None
    assert style["preview_url"] is None
    assert style["rating_avg"] is None
    assert style["rating_count"] == 0
    assert style["apply_count"] == 0
    assert style["comment_count"] == 0
    assert style["forked_from"] is None

    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Golden hour"

    r = await client.patch(
        f"/api/v1/styles/{style['id']}",
        json={"name": "Blue hour", "visibility": "public", "tags": ["cool"]},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["visibility"], body["tags"]) == ("Blue hour", "public", ["cool"])
    assert body["description"] == "warm"
    assert body["updated_at"] >= style["updated_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.name"),
        ({"name": "  "}, "body.name"),
        ({"name": "x" * 101}, "body.name"),
        ({"name": "ok", "visibility": "secret"}, "body.visibility"),
        ({"name": "ok", "tags": ["x" * 41]}, "body.tags.0"),
        ({"name": "ok", "surprise": 1}, "body.surprise"),
    ],
)
async def test_create_validation(client, user, body: dict[str, Any], field: str) -> None:
    r = await client.post("/api/v1/styles", json=body, headers=user.headers)
    err = _error(r, 422, "validation_error")
    assert err["details"]["errors"][0]["field"] == field


async def test_patch_rejects_null_name(client, user) -> None:
    style = await create_style(client, user)
    r = await client.patch(
        f"/api/v1/styles/{style['id']}", json={"name": None}, headers=user.headers
    )
    _error(r, 422, "validation_error")


async def test_auth_required(client) -> None:
    _error(await client.post("/api/v1/styles", json={"name": "x"}), 401, "not_authenticated")
    r = await client.get("/api/v1/styles", params={"owner": "me"})
    _error(r, 401, "not_authenticated")


# ---- visibility and ownership ---------------------------------------------------------------
async def test_private_style_is_404_for_everyone_else(client, user, other_user) -> None:
    style = await _imported(client, user)  # private, ready
    sid = style["id"]
    image = await upload_image(client, other_user, synthetic_photo(64, 48))
    calls = [
        ("GET", f"/api/v1/styles/{sid}", None),
        ("PATCH", f"/api/v1/styles/{sid}", {"name": "mine now"}),
        ("DELETE", f"/api/v1/styles/{sid}", None),
        (
            "POST",
            f"/api/v1/styles/{sid}/learn",
            {"pairs": [], "reference_image_ids": [image["id"]]},
        ),
        ("POST", f"/api/v1/styles/{sid}/apply", {"image_id": image["id"]}),
        ("POST", f"/api/v1/styles/{sid}/export", {"size": 33}),
        ("POST", f"/api/v1/styles/{sid}/fork", None),
    ]
    missing = str(uuid.uuid4())
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=other_user.headers)
        err = _error(r, 404, "style_not_found")
        # indistinguishable from a style that does not exist
        r2 = await client.request(
            method, path.replace(sid, missing), json=body, headers=other_user.headers
        )
        assert _error(r2, 404) == err
    # anonymous: 404 for the read, 401 for the rest
    _error(await client.get(f"/api/v1/styles/{sid}"), 404, "style_not_found")
    # the owner still sees it
    r = await client.get(f"/api/v1/styles/{sid}", headers=user.headers)
    assert r.status_code == 200


async def test_unlisted_and_public_are_readable_but_owner_only_for_changes(
    client, user, other_user
) -> None:
    for visibility in ("unlisted", "public"):
        style = await create_style(client, user, visibility=visibility)
        sid = style["id"]
        for headers in (other_user.headers, {}):
            r = await client.get(f"/api/v1/styles/{sid}", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["owner"]["username"] == user.username
        r = await client.patch(
            f"/api/v1/styles/{sid}", json={"name": "x"}, headers=other_user.headers
        )
        _error(r, 403, "not_style_owner")
        _error(
            await client.delete(f"/api/v1/styles/{sid}", headers=other_user.headers),
            403,
            "not_style_owner",
        )
        image = await upload_image(client, other_user, synthetic_photo(64, 48))
        r = await client.post(
            f"/api/v1/styles/{sid}/learn",
            json={"reference_image_ids": [image["id"]]},
            headers=other_user.headers,
        )
        _error(r, 403, "not_style_owner")


async def test_gallery_listing_route(client, user, other_user) -> None:
    mine = await create_style(client, user, name="Listed mine", visibility="private")
    public = await create_style(client, other_user, name="Listed public", visibility="public")
    unlisted = await create_style(client, other_user, name="Listed unlisted", visibility="unlisted")
    r = await client.get(
        "/api/v1/styles", params={"owner": "me", "limit": 100}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    ids = {s["id"] for s in r.json()["items"]}
    assert mine["id"] in ids
    assert public["id"] not in ids
    r = await client.get("/api/v1/styles", params={"limit": 100, "sort": "newest"})
    assert r.status_code == 200, r.text
    ids = {s["id"] for s in r.json()["items"]}
    assert public["id"] in ids
    assert unlisted["id"] not in ids
    assert mine["id"] not in ids
    for params in ({"sort": "oldest"}, {"limit": 0}, {"limit": 101}, {"model": "magic"}):
        _error(await client.get("/api/v1/styles", params=params), 422, "validation_error")


# ---- learn validation -----------------------------------------------------------------------
async def test_learn_validation_names_the_bad_item(client, user, other_user, settings) -> None:
    style = await create_style(client, user)
    url = f"/api/v1/styles/{style['id']}/learn"
    wide = synthetic_photo(96, 64, seed=1)
    a = await upload_image(client, user, wide)
    b = await upload_image(client, user, synthetic_photo(96, 64, seed=2))
    half = await upload_image(client, user, synthetic_photo(48, 32, seed=3))  # same ratio
    tall = await upload_image(client, user, synthetic_photo(64, 96, seed=4))
    square = await upload_image(client, user, synthetic_photo(64, 64, seed=4))
    theirs = await upload_image(client, other_user, wide)
    pending = await upload_image(client, user, wide, confirm=False)

    async def learn(body: dict[str, Any]) -> Any:
        return await client.post(url, json=body, headers=user.headers)

    err = _error(await learn({"pairs": [], "reference_image_ids": []}), 422, "no_training_images")
    assert err["details"]["field"] == "pairs"

    pair = {"before_image_id": a["id"], "after_image_id": b["id"]}
    body = {"pairs": [pair, {"before_image_id": a["id"], "after_image_id": theirs["id"]}]}
    err = _error(await learn(body), 422, "image_not_found")
    assert err["details"]["field"] == "pairs[1].after_image_id"
    assert "pairs[1].after_image_id" in err["message"]

    body = {"pairs": [pair], "reference_image_ids": [b["id"], pending["id"]]}
    err = _error(await learn(body), 422, "image_not_confirmed")
    assert err["details"]["field"] == "reference_image_ids[1]"

    body = {"pairs": [{"before_image_id": a["id"], "after_image_id": square["id"]}]}
    err = _error(await learn(body), 422, "aspect_ratio_mismatch")
    assert err["details"]["field"] == "pairs[0].after_image_id"

    body = {"pairs": [pair, {"before_image_id": str(uuid.uuid4()), "after_image_id": a["id"]}]}
    err = _error(await learn(body), 422, "image_not_found")
    assert err["details"]["field"] == "pairs[1].before_image_id"

    n = settings.max_learn_items + 1
    err = _error(
        await learn({"reference_image_ids": [a["id"]] * n}), 422, "too_many_training_images"
    )
    assert err["details"]["field"] == "reference_image_ids"
    assert str(settings.max_learn_items) in err["message"]

    _error(
        await learn({"model": "magic", "reference_image_ids": [a["id"]]}), 422, "validation_error"
    )
    _error(await learn({"pairs": [{"before_image_id": "nope"}]}), 422, "validation_error")
    body = {"pairs": [pair], "options": {"init_weights": "/etc/passwd"}}
    err = _error(await learn(body), 422, "validation_error")
    assert err["details"]["errors"][0]["field"] == "body.options"
    for options in ({"working_size": 100_000}, {"max_pixels": 1e9}, {"time_budget_s": -1}):
        body = {"pairs": [pair], "options": options}
        err = _error(await learn(body), 422, "invalid_option")
        assert err["details"]["field"] == f"options.{next(iter(options))}"
    body = {"model": "adaptive_3dlut", "reference_image_ids": [a["id"]]}
    assert _error(await learn(body), 422, "pairs_required")["details"]["field"] == "pairs"

    # a pair at another resolution but the same aspect ratio passes validation; the style stays
    # a draft because nothing was submitted by the refusals above
    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    assert r.json()["status"] == "draft"
    assert half["width"] * 2 == a["width"]
    assert tall["height"] == 96


async def test_apply_export_fork_need_a_model(client, user) -> None:
    style = await create_style(client, user)
    image = await upload_image(client, user, synthetic_photo(64, 48))
    sid = style["id"]
    r = await client.post(
        f"/api/v1/styles/{sid}/apply", json={"image_id": image["id"]}, headers=user.headers
    )
    _error(r, 409, "style_not_ready")
    _error(await client.post(f"/api/v1/styles/{sid}/export", headers=user.headers), 409)
    _error(await client.post(f"/api/v1/styles/{sid}/fork", headers=user.headers), 409)


async def test_apply_and_export_validation(client, user, other_user) -> None:
    style = await _imported(client, user)
    sid = style["id"]
    mine = await upload_image(client, user, synthetic_photo(64, 48))
    theirs = await upload_image(client, other_user, synthetic_photo(64, 48))
    url = f"/api/v1/styles/{sid}/apply"
    for body in (
        {"image_id": mine["id"], "strength": 1.5},
        {"image_id": mine["id"], "format": "gif"},
        {"image_id": mine["id"], "quality": 0},
        {},
        {"image_id": mine["id"], "image_ids": [mine["id"]]},
        {"image_ids": []},
        {"image_ids": [mine["id"]] * 101},
    ):
        _error(await client.post(url, json=body, headers=user.headers), 422, "validation_error")
    err = _error(
        await client.post(url, json={"image_id": theirs["id"]}, headers=user.headers),
        422,
        "image_not_found",
    )
    assert err["details"]["field"] == "image_id"
    err = _error(
        await client.post(
            url, json={"image_ids": [mine["id"], theirs["id"]]}, headers=user.headers
        ),
        422,
        "image_not_found",
    )
    assert err["details"]["field"] == "image_ids[1]"
    for body in (
        {"size": 32},
        {"format": "clf"},
        {"format": "icc", "level": 8},
        {"format": "cube", "level": 8},
        {"format": "haldclut", "size": 33},
        {"format": "haldclut", "level": 10},
    ):
        r = await client.post(f"/api/v1/styles/{sid}/export", json=body, headers=user.headers)
        _error(r, 422, "validation_error")


# ---- import ---------------------------------------------------------------------------------
async def test_import_every_shared_lut(client, user, settings) -> None:
    require_shared(LUTS)
    for path in shared_luts():
        r = await import_cube(client, user, path, name=path.stem, tags="film, shared")
        assert r.status_code == 201, (path.name, r.text)
        style = r.json()
        assert style["status"] == "ready", style
        assert style["model"] == "imported", style
        assert style["tags"] == ["film", "shared"]
        assert style["preview_url"]
        keys = style_objects(settings, style["id"])
        assert any(k.endswith("model.pt") for k in keys), keys
        assert any(k.endswith("lut.cube") for k in keys), keys
        assert any(re.search(r"/preview-[0-9a-f]{32}\.webp$", k) for k in keys), keys
    preview = await fetch_url(client, style["preview_url"])
    assert preview.content[:4] == b"RIFF"
    assert preview.content[8:12] == b"WEBP"


@pytest.mark.parametrize(
    ("cube", "line"),
    [
        (b"LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 1\n", 4),
        (b'TITLE "x"\nLUT_3D_SIZE 300\n', 2),
        (b"LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 1 0\n1 1 0\n0 0 1\n1 0 1\n0 1 1\n", None),
        (b"LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 one 0\n1 1 0\n0 0 1\n1 0 1\n0 1 1\n1 1 1\n", 4),
    ],
)
async def test_import_malformed_cube_names_the_line(
    client, user, cube: bytes, line: int | None
) -> None:
    r = await import_cube(client, user, cube)
    err = _error(r, 422, "invalid_cube")
    assert "line " in err["message"], err
    if line is not None:
        assert f"line {line}" in err["message"], err
        assert err["details"]["line"] == line


async def test_import_refusals(client, user, settings) -> None:
    big = b"# padding\n" * (settings.max_cube_bytes // 10 + 1)
    err = _error(await import_cube(client, user, big), 413, "cube_too_large")
    assert err["details"]["field"] == "file"
    _error(await import_cube(client, user, b""), 422, "invalid_cube")
    _error(await import_cube(client, user, b"\xff\xfe\x00garbage"), 422, "invalid_cube")
    r = await client.post(
        "/api/v1/styles/import",
        files={"file": ("a.cube", TINY_CUBE)},
        data={"visibility": "public"},
        headers=user.headers,
    )
    assert _error(r, 422, "validation_error")["details"]["errors"][0]["field"] == "body.name"
    err = _error(await import_cube(client, user, TINY_CUBE, name="   "), 422, "invalid_name")
    assert err["details"]["field"] == "name"
    r = await import_cube(client, user, TINY_CUBE, visibility="secret")
    _error(r, 422, "validation_error")
    _error(
        await client.post("/api/v1/styles/import", files={"file": ("a.cube", TINY_CUBE)}),
        401,
    )


# ---- fork -----------------------------------------------------------------------------------
async def test_fork_copies_objects_and_resets_counters(client, user, other_user, settings) -> None:
    source = await _imported(client, user, visibility="public", description="d", tags="a,b")
    r = await client.post(f"/api/v1/styles/{source['id']}/fork", headers=other_user.headers)
    assert r.status_code == 201, r.text
    fork = r.json()
    assert fork["id"] != source["id"]
    assert fork["owner"]["id"] == other_user.id
    assert fork["forked_from"] == source["id"]
    assert fork["visibility"] == "private"
    assert fork["status"] == "ready"
    assert fork["model"] == "imported"
    assert (fork["name"], fork["description"], fork["tags"]) == (
        source["name"],
        "d",
        ["a", "b"],
    )
    assert fork["apply_count"] == 0
    assert fork["rating_count"] == 0
    assert fork["comment_count"] == 0
    src_keys = style_objects(settings, source["id"])
    fork_keys = style_objects(settings, fork["id"])
    assert sorted(k.rsplit("/", 1)[1] for k in fork_keys) == sorted(
        k.rsplit("/", 1)[1] for k in src_keys
    )
    # the fork is private: the source's owner cannot see it
    _error(await client.get(f"/api/v1/styles/{fork['id']}", headers=user.headers), 404)
    # deleting the source leaves the fork intact
    assert (
        await client.delete(f"/api/v1/styles/{source['id']}", headers=user.headers)
    ).status_code == 204
    assert style_objects(settings, fork["id"]) == fork_keys
    r = await client.get(f"/api/v1/styles/{fork['id']}", headers=other_user.headers)
    assert r.status_code == 200
    assert r.json()["forked_from"] is None


async def test_fork_rules(client, user, other_user) -> None:
    private = await _imported(client, user)
    unlisted = await _imported(client, user, visibility="unlisted")
    _error(
        await client.post(f"/api/v1/styles/{private['id']}/fork", headers=other_user.headers), 404
    )
    r = await client.post(f"/api/v1/styles/{unlisted['id']}/fork", headers=other_user.headers)
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/v1/styles/{private['id']}/fork", headers=user.headers)
    assert r.status_code == 201, r.text  # forking one's own style is allowed
    draft = await create_style(client, user, visibility="public")
    _error(
        await client.post(f"/api/v1/styles/{draft['id']}/fork", headers=other_user.headers),
        409,
        "style_not_ready",
    )
    _error(await client.post(f"/api/v1/styles/{unlisted['id']}/fork"), 401)


# ---- delete ---------------------------------------------------------------------------------
async def test_delete_removes_row_and_objects(client, user, settings) -> None:
    style = await _imported(client, user)
    assert style_objects(settings, style["id"])
    r = await client.delete(f"/api/v1/styles/{style['id']}", headers=user.headers)
    assert r.status_code == 204, r.text
    assert style_objects(settings, style["id"]) == []
    _error(await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers), 404)
    _error(await client.delete(f"/api/v1/styles/{style['id']}", headers=user.headers), 404)


async def test_another_users_style_is_listed_only_when_public(client) -> None:
    owner = await create_user(client)
    viewer = await create_user(client)
    style = await _imported(client, owner, visibility="unlisted")
    r = await client.get("/api/v1/styles", params={"limit": 100}, headers=viewer.headers)
    assert style["id"] not in {s["id"] for s in r.json()["items"]}
    r = await client.patch(
        f"/api/v1/styles/{style['id']}", json={"visibility": "public"}, headers=owner.headers
    )
    assert r.status_code == 200
    r = await client.get("/api/v1/styles", params={"limit": 100}, headers=viewer.headers)
    assert style["id"] in {s["id"] for s in r.json()["items"]}
