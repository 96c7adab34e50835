"""A worker run leaves the checkout as it found it (``git status`` shows nothing new).

The test stack's worker runs with the checkout as its working directory, so anything the API, the
worker or the broker writes to a relative path lands there: kombu's filesystem transport once
wrote its exchange tables to ``./control``. The checkout is listed once when this module is
collected (before any test of the session ran) and again after a real job went through the
worker; an entry that is new, or whose files changed since, is output of the run.

The machine a developer runs the tests on may have people editing the same checkout at the same
time: entries that are source files (``.py``, ``.md``, ...) and tool caches (``__pycache__``,
``.pytest_cache``, ``.venv``) are therefore left out, as a test run writes neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import BACKEND, Account, WorkerProcess, wait_for_job
from tests.helpers import upload_image

ROOT = Path(__file__).resolve().parents[2]
SKIP_PARTS = {".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git"}
SOURCE_SUFFIXES = {
    ".py", ".pyi", ".md", ".rst", ".txt", ".toml", ".ini", ".cfg", ".yml", ".yaml", ".json",
    ".js", ".css", ".html", ".sh", ".cube",
}  # fmt: skip


def _is_git_checkout() -> bool:
    return shutil.which("git") is not None and (ROOT / ".git").exists()


def _latest_mtime(path: Path) -> float:
    if not path.is_dir():
        return path.lstat().st_mtime if path.exists() or path.is_symlink() else -1.0
    latest = path.lstat().st_mtime
    for base, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in SKIP_PARTS]
        for name in [*dirs, *files]:
            latest = max(latest, (Path(base) / name).lstat().st_mtime)
    return latest


def checkout_state() -> dict[str, float]:
    """``git status`` entries (untracked, ignored, changed) -> the latest mtime under each."""
    out = subprocess.run(
        ["git", "status", "--porcelain=v1", "-z", "--ignored", "--untracked-files=normal"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    fields = out.split("\0")
    state: dict[str, float] = {}
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        status, name = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            i += 1  # the source name of a rename/copy follows
        parts = set(Path(name.rstrip("/")).parts)
        if parts & SKIP_PARTS or name.rstrip("/").endswith(".egg-info"):
            continue
        if Path(name.rstrip("/")).suffix.lower() in SOURCE_SUFFIXES:
            continue
        state[name] = _latest_mtime(ROOT / name)
    return state


BEFORE = checkout_state() if _is_git_checkout() else {}


@pytest.mark.skipif(not _is_git_checkout(), reason="not a git checkout")
async def test_a_worker_run_leaves_the_checkout_clean(
    client: httpx.AsyncClient, user: Account, live_worker: WorkerProcess, settings: Any
) -> None:
    pixels = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = await upload_image(client, user, pixels)
    r = await client.get("/api/v1/jobs?type=thumbnail&limit=100", headers=user.headers)
    assert r.status_code == 200, r.text
    jobs = [j for j in r.json()["items"] if j["image_id"] == image["id"]]
    assert len(jobs) == 1, jobs
    job = await wait_for_job(client, user, jobs[0]["id"], timeout=90, worker=live_worker)
    assert job["status"] == "completed", job

    after = checkout_state()
    written = sorted(
        name for name, mtime in after.items() if name not in BEFORE or mtime > BEFORE[name]
    )
    assert written == [], f"the test run wrote into the checkout {ROOT}: {written}"
    if BACKEND == "embedded":
        # the filesystem broker keeps its exchange tables with its queue, under DATA_DIR
        control = settings.broker_folder / "control"
        assert sorted(p.name for p in control.glob("*.exchange")), control
