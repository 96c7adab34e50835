"""``POST /styles/import`` takes the upload as ``.cube`` content, never as a file name (issue 9).

The parser used to take a one-line ``str`` for a path: an upload whose content was ``/etc/passwd``
answered 422 quoting the file's first line, ``/proc/self/cmdline`` echoed the server's command
line, a missing path was a 500 (an existence oracle) and the path of a ``.cube`` on the server
became the caller's style. A value that overflows float32 (``1e308``) was a 500 too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Account
from tests.helpers import LUTS, import_cube, require_shared

IDENTITY_2 = ["0 0 0", "1 0 0", "0 1 0", "1 1 0", "0 0 1", "1 0 1", "0 1 1", "1 1 1"]


def _cube(rows: list[str]) -> bytes:
    return ("LUT_3D_SIZE 2\n" + "\n".join(rows) + "\n").encode()


def _invalid_cube(r: Any, line: int | None = None) -> dict[str, Any]:
    """The error of a 422 ``invalid_cube`` answer (the API's error shape)."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = dict(body["error"])
    assert err["code"] == "invalid_cube", err
    assert err["details"]["field"] == "file", err
    if line is not None:
        assert err["details"]["line"] == line, err
        assert err["message"].startswith(f"Invalid .cube file: line {line}: "), err
    return err


async def _my_style_ids(client: Any, user: Account) -> set[str]:
    r = await client.get(
        "/api/v1/styles", params={"owner": "me", "limit": 100}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    return {s["id"] for s in r.json()["items"]}


def _quoted_parts(path: str) -> list[str]:
    """Fields (split at newlines, NULs and colons) of a server file that must not come back in an
    answer: "root", "/bin/bash", the interpreter's path, ..."""
    raw = Path(path).read_bytes().decode("utf-8", "replace")
    fields = raw.replace("\0", "\n").replace(":", "\n").splitlines()
    return [f.strip() for f in fields if len(f.strip()) >= 4 and f.strip() not in path]


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/cmdline"])
async def test_upload_naming_a_server_file_is_parsed_as_content(
    client: Any, user: Account, path: str
) -> None:
    secrets = _quoted_parts(path)
    assert secrets  # the file has something to leak
    for content in (path, f"  {path}  ", f"{path}\r"):
        err = _invalid_cube(await import_cube(client, user, content.encode()), line=1)
        assert f"got {path!r}" in err["message"], err  # the upload's own text is quoted
        leaked = [s for s in secrets if s in err["message"]]
        assert not leaked, err
    assert await _my_style_ids(client, user) == set()


async def test_upload_naming_a_missing_file_is_a_422_not_a_500(
    client: Any, user: Account, tmp_path: Path
) -> None:
    """The answer does not depend on whether the named file exists (no existence oracle)."""
    present = tmp_path / "here.txt"
    present.write_text("not a cube\n")
    answers = []
    for name in ("/nonexistent/x.cube", str(tmp_path / "missing.cube"), str(present)):
        err = _invalid_cube(await import_cube(client, user, name.encode()), line=1)
        answers.append(err["message"].split(", got ")[0])  # the rest quotes the upload itself
    assert len(set(answers)) == 1, answers


async def test_upload_naming_a_real_cube_on_the_server_is_not_imported(
    client: Any, user: Account, tmp_path: Path
) -> None:
    require_shared(LUTS / "classic_film.cube")
    copy = tmp_path / "server_side.cube"
    copy.write_bytes((LUTS / "classic_film.cube").read_bytes())
    for name in (LUTS / "classic_film.cube", copy):
        assert name.is_file()
        _invalid_cube(await import_cube(client, user, str(name).encode()), line=1)
    assert await _my_style_ids(client, user) == set()
    # the same file uploaded as content is a style (the refusal above is about names, not files)
    r = await import_cube(client, user, copy)
    assert r.status_code == 201, r.text
    assert await _my_style_ids(client, user) == {r.json()["id"]}


@pytest.mark.parametrize(
    ("row", "line"),
    [("1e308 0 0", 2), ("0 -1e39 0", 2), ("0 0 3.5e38", 2)],
)
async def test_huge_value_is_a_422_naming_the_line(
    client: Any, user: Account, row: str, line: int
) -> None:
    err = _invalid_cube(await import_cube(client, user, _cube([row, *IDENTITY_2[1:]])), line)
    assert "out of range" in err["message"], err
    rows = [*IDENTITY_2[:5], row, *IDENTITY_2[6:]]
    _invalid_cube(await import_cube(client, user, _cube(rows)), line=line + 5)
    domain = "LUT_3D_SIZE 2\nDOMAIN_MAX 1 1e308 1\n" + "\n".join(IDENTITY_2) + "\n"
    _invalid_cube(await import_cube(client, user, domain.encode()), line=2)
    assert await _my_style_ids(client, user) == set()
