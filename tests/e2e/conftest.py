"""The browser tests' stack: a real ``picfilter serve`` (embedded default: SQLite, local storage,
a worker beside the API) on a free loopback port with its own DATA_DIR, and headless Debian
Chromium driven by Playwright (``executable_path``; browser downloads are impossible here).

Without chromium or the ``playwright`` package the tests skip with the reason, except under
``CI=true``, where they fail (``.ci/run`` installs chromium). They run once, on the embedded
stack: under ``PICFILTER_TEST_BACKEND=postgres`` they skip (the server they start is embedded
whatever the backend).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from bench import free_port, running_server

CHROMIUM = os.environ.get("PICFILTER_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKEND = os.environ.get("PICFILTER_TEST_BACKEND", "embedded")
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


def _missing() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="session")
def browser_ready() -> None:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason}: CI=true needs the browser tests")
        pytest.skip(reason)
    if BACKEND != "embedded":
        pytest.skip("the browser tests run once, with the embedded stack")


@pytest.fixture(scope="session")
def web_server(browser_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``picfilter serve`` with its own DATA_DIR and the default rate limits; yields the base
    URL."""
    data = tmp_path_factory.mktemp("web-data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
    env.update(
        DATA_DIR=str(data),
        JWT_SECRET_KEY="e2e-browser-tests-secret-key-0123456789abcdef",
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
        PUBLIC_BASE_URL=base,
        CELERY_RETRY_DELAY="1",
    )
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = data / "serve.log"
    with running_server(cmd, env, port, log_path=log, timeout=180) as (url, _pid):
        yield url


@pytest.fixture(scope="module")
def browser(browser_ready: None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox"],  # root in CI containers
        )
        yield b
        b.close()
