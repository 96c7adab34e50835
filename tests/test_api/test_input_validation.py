"""Every string the API accepts is a ``Text``: a NUL character is a 422 ``validation_error``
naming the field, on both stacks (issue 9, item 4).

PostgreSQL cannot store NUL in ``text``/``varchar`` or JSONB, nor compare with it: before the
shared type, a NUL in a gallery search, a style's name, description or tags, or an import's form
fields answered 500 there (and SQLite stored it). Each request below sends one NUL in one field.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Account
from tests.helpers import create_style, synthetic_photo, upload_image

NUL = "warm\x00look"
TINY_CUBE = b"LUT_3D_SIZE 2\n" + b"0 0 0\n1 0 0\n0 1 0\n1 1 0\n0 0 1\n1 0 1\n0 1 1\n1 1 1\n"


def assert_nul_refused(r: httpx.Response, field: str) -> None:
    """A 422 ``validation_error`` in the API's error shape for ``Text``'s pattern (no NUL),
    naming ``field`` (in the error list, or in the message where the route has none: login)."""
    assert r.status_code == 422, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == "validation_error", error
    assert "must not contain NUL characters" in error["message"], error
    if error["details"] is not None:
        found = {e["field"]: e["type"] for e in error["details"]["errors"]}
        assert found.get(field) == "string_pattern_mismatch", (field, found)
    else:
        assert error["message"].startswith(f"{field}: "), error


# ---- gallery query parameters ---------------------------------------------------------------
@pytest.mark.parametrize("param", ["q", "tag", "owner", "cursor"])
async def test_gallery_query_parameters(client, user: Account, param: str) -> None:
    r = await client.get("/api/v1/styles", params={param: NUL}, headers=user.headers)
    assert_nul_refused(r, f"query.{param}")
    r = await client.get("/api/v1/styles", params={param: NUL})  # anonymous too
    assert_nul_refused(r, f"query.{param}")


@pytest.mark.parametrize("path", ["/api/v1/images", "/api/v1/styles/{sid}/comments"])
async def test_list_cursors(client, user: Account, path: str) -> None:
    style = await create_style(client, user, visibility="public")
    r = await client.get(path.format(sid=style["id"]), params={"cursor": NUL}, headers=user.headers)
    assert_nul_refused(r, "query.cursor")


# ---- style bodies ---------------------------------------------------------------------------
STYLE_FIELDS: list[tuple[str, Any, str]] = [
    ("name", NUL, "body.name"),
    ("description", NUL, "body.description"),
    ("tags", ["ok", NUL], "body.tags.1"),
]


@pytest.mark.parametrize(("key", "value", "field"), STYLE_FIELDS)
async def test_create_style(client, user: Account, key: str, value: Any, field: str) -> None:
    body = {"name": "Golden hour", key: value}
    r = await client.post("/api/v1/styles", json=body, headers=user.headers)
    assert_nul_refused(r, field)


@pytest.mark.parametrize(("key", "value", "field"), STYLE_FIELDS)
async def test_patch_style(client, user: Account, key: str, value: Any, field: str) -> None:
    style = await create_style(client, user, description="before", tags=["before"])
    r = await client.patch(f"/api/v1/styles/{style['id']}", json={key: value}, headers=user.headers)
    assert_nul_refused(r, field)
    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["description"], r.json()["tags"]) == (
        style["name"],
        "before",
        ["before"],
    )


@pytest.mark.parametrize(
    ("form", "filename", "field"),
    [
        ({"name": NUL}, "look.cube", "body.name"),
        ({"name": "Imported", "description": NUL}, "look.cube", "body.description"),
        ({"name": "Imported", "tags": ["ok", NUL]}, "look.cube", "body.tags.1"),
    ],
)
async def test_import_form(
    client, user: Account, form: dict[str, Any], filename: str, field: str
) -> None:
    r = await client.post(
        "/api/v1/styles/import",
        files={"file": (filename, TINY_CUBE, "application/octet-stream")},
        data=form,
        headers=user.headers,
    )
    assert_nul_refused(r, field)


async def test_import_file_name(client, user: Account) -> None:
    """The upload's own file name (kept in the style's metadata). httpx would percent-encode
    a NUL in it, so the multipart body is written by hand with the raw byte."""
    boundary = "picfilter-nul-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nImported\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="lo\x00ok.cube"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + TINY_CUBE
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**user.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = await client.post("/api/v1/styles/import", content=body, headers=headers)
    assert_nul_refused(r, "body.file.filename")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"note": NUL}, "body.options.note.str"),
        ({"lut_size": 33, NUL: 1}, f"body.options.{NUL}.[key]"),
        ({"notes": [1, {"deep": NUL}]}, "body.options.notes.list.1.dict.deep.str"),
    ],
)
async def test_learn_options(client, user: Account, options: dict[str, Any], field: str) -> None:
    """Free-form options are stored with the job (JSONB on PostgreSQL): their keys and
    strings, at any depth, are ``Text`` too."""
    style = await create_style(client, user)
    before = await upload_image(client, user, synthetic_photo(64, 48, seed=1))
    after = await upload_image(client, user, synthetic_photo(64, 48, seed=2))
    body = {
        "pairs": [{"before_image_id": before["id"], "after_image_id": after["id"]}],
        "options": options,
    }
    r = await client.post(f"/api/v1/styles/{style['id']}/learn", json=body, headers=user.headers)
    assert_nul_refused(r, field)


# ---- auth, comments, images -----------------------------------------------------------------
async def test_register_fields(client) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    good = {"email": f"{name}@example.com", "username": name, "password": "long enough pass"}
    for key, field in (("username", "body.username"), ("password", "body.password")):
        r = await client.post("/api/v1/auth/register", json={**good, key: "ab\x00cdefgh"})
        assert_nul_refused(r, field)
    r = await client.post("/api/v1/auth/register", json=good)
    assert r.status_code == 201, r.text


async def test_login_and_token_fields(client, user: Account) -> None:
    r = await client.post("/api/v1/auth/login", json={"email": user.email, "password": NUL})
    assert_nul_refused(r, "password")
    r = await client.post("/api/v1/auth/login", data={"username": user.email, "password": NUL})
    assert_nul_refused(r, "password")
    for path in ("/api/v1/auth/refresh", "/api/v1/auth/logout"):
        r = await client.post(path, json={"refresh_token": NUL})
        assert_nul_refused(r, "body.refresh_token")


async def test_comment_body(client, user: Account) -> None:
    style = await create_style(client, user, visibility="public")
    r = await client.post(
        f"/api/v1/styles/{style['id']}/comments", json={"body": NUL}, headers=user.headers
    )
    assert_nul_refused(r, "body.body")


@pytest.mark.parametrize(
    ("key", "value"), [("filename", "IMG\x00.jpg"), ("content_type", "image/jpeg\x00")]
)
async def test_image_upload_fields(client, user: Account, key: str, value: str) -> None:
    body = {"filename": "IMG_0042.jpg", "content_type": "image/jpeg", "size": 1000, key: value}
    r = await client.post("/api/v1/images/upload", json=body, headers=user.headers)
    assert_nul_refused(r, f"body.{key}")


async def test_text_without_nul_still_works(client, user: Account) -> None:
    """The type refuses NUL only: other control characters and any script pass through."""
    word = f"kodak{uuid.uuid4().hex[:8]}"
    name = f"{word} \u2605 \u00e9t\u00e9\tlook"
    tag = f"\u65e5\u672c{uuid.uuid4().hex[:4]}"
    style = await create_style(client, user, name=name, tags=[tag])
    assert (style["name"], style["tags"]) == (name, [tag])
    for params in ({"q": word}, {"tag": tag}):
        r = await client.get("/api/v1/styles", params=params, headers=user.headers)
        assert r.status_code == 200, r.text
        assert [s["id"] for s in r.json()["items"]] == [style["id"]], params
