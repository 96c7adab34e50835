"""Test stack: real services, no mocks of our own code.

``PICFILTER_TEST_BACKEND`` picks the stack for the whole run (``make test`` runs both):

* ``embedded`` (default): SQLite file, local-disk storage, kombu filesystem broker, in-process
  store, a real Celery worker process.
* ``postgres``: a fresh PostgreSQL database (created here, dropped at the end), Redis (keys under
  a unique prefix), S3 through a ``moto`` server on loopback, a real Celery worker process.

A service that cannot be reached fails the run loudly under ``CI=true`` and skips elsewhere.
The API runs in-process (httpx ``ASGITransport``); the worker is a separate process that sees the
same environment, so everything a test checks crosses the real database, broker and storage.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKEND = os.environ.get("PICFILTER_TEST_BACKEND", "embedded")
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("PICFILTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PICFILTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]

_state: dict[str, Any] = {}


def _unavailable(what: str) -> None:
    msg = f"{what} is not reachable"
    if IN_CI:
        raise pytest.UsageError(f"{msg} (CI=true: tests that need it must not be skipped)")
    _state["skip_reason"] = msg


def _setup_postgres(env: dict[str, str]) -> None:
    import psycopg
    import redis

    db_name = f"picfilter_test_{RUN_ID}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
    except psycopg.Error:
        _unavailable(f"PostgreSQL at {PG_ADMIN_URL}")
        return
    _state["pg_db"] = db_name
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    env["DATABASE_URL"] = f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{db_name}"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError:
        _unavailable(f"Redis at {REDIS_URL}")
        return
    env["REDIS_URL"] = REDIS_URL
    env["REDIS_KEY_PREFIX"] = f"pftest-{RUN_ID}:"

    from tests.s3_server import ACCESS_KEY, SECRET_KEY, VerifyingMotoServer

    server = VerifyingMotoServer()  # moto behind a check of presigned-URL signatures
    server.start()
    _state["moto"] = server
    env.update(
        S3_ENDPOINT=server.url,
        S3_ACCESS_KEY=ACCESS_KEY,
        S3_SECRET_KEY=SECRET_KEY,
        S3_BUCKET=f"picfilter-test-{RUN_ID}",
        S3_CREATE_BUCKET="true",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )


def pytest_configure(config: pytest.Config) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix=f"picfilter-test-{BACKEND}-"))
    _state["data_dir"] = data_dir
    env = {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(data_dir),
        "JWT_SECRET_KEY": "test-secret-key-for-picfilter-" + RUN_ID,
        "BCRYPT_ROUNDS": "4",
        "CELERY_RETRY_DELAY": "1",
        "RATE_LIMIT_ENABLED": "false",
        "PUBLIC_BASE_URL": "http://testserver",
        "LOG_LEVEL": "INFO",
    }
    for key in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "CELERY_BROKER_URL"):
        os.environ.pop(key, None)
    if BACKEND == "postgres":
        _setup_postgres(env)
    elif BACKEND != "embedded":
        raise pytest.UsageError(
            f"PICFILTER_TEST_BACKEND must be embedded or postgres, not {BACKEND}"
        )
    os.environ.update(env)
    from app.config import get_settings

    get_settings.cache_clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` (left out by ``make test-fast``): every test that uses the real worker process,
    and the tests under ``tests/test_workers``, besides those marked by hand (the browser, the
    proxy)."""
    for item in items:
        worker = {"worker", "live_worker"} & set(getattr(item, "fixturenames", ()))
        if worker or "test_workers" in item.path.parts:
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config: pytest.Config) -> str:
    return f"picfilter test backend: {BACKEND} (data dir {_state.get('data_dir')})"


def pytest_unconfigure(config: pytest.Config) -> None:
    if "moto" in _state:
        _state["moto"].stop()
    if "pg_db" in _state:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_state["pg_db"]}" WITH (FORCE)')
    if os.environ.get("REDIS_KEY_PREFIX", "").startswith("pftest-"):
        try:
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            keys = list(r.scan_iter(match=os.environ["REDIS_KEY_PREFIX"] + "*", count=1000))
            if keys:
                r.delete(*keys)
        except Exception:
            pass
    shutil.rmtree(_state.get("data_dir", ""), ignore_errors=True)


# ---- the stack ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def settings() -> Any:
    if "skip_reason" in _state:
        pytest.skip(_state["skip_reason"])
    from app.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def migrated(settings: Any) -> Any:
    from app.cli import migrate

    migrate()
    return settings


@pytest.fixture(scope="session")
async def app(migrated: Any) -> AsyncIterator[Any]:
    from app.main import create_app

    application = create_app(migrated)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class WorkerProcess:
    """A real ``picfilter worker`` process (Celery, solo pool) with the test environment and
    the test-only self-test task (:mod:`tests.worker`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0

    def start(self, extra_env: dict[str, str] | None = None, timeout: float = 90) -> None:
        self.count += 1
        log_path = self.log_dir / f"worker-{self.count}.log"
        self.log_path = log_path
        env = {**os.environ, **(extra_env or {})}
        # `picfilter worker` plus the test-only task (tests/selftest_job.py)
        cmd = [
            sys.executable,
            "-m",
            "tests.worker",
            "worker",
            "--queues",
            "ml,io",
            "--pool",
            "solo",
        ]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{log_path.read_text()[-3000:]}")
            if b" ready." in log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


@pytest.fixture(scope="session")
def worker(migrated: Any) -> Iterator[WorkerProcess]:
    w = WorkerProcess(Path(_state["data_dir"]))
    w.start()
    yield w
    w.stop()


@pytest.fixture
def live_worker(worker: WorkerProcess) -> WorkerProcess:
    """The session worker, restarted if a previous test killed it."""
    if not worker.running():
        worker.start()
    return worker


# ---- helpers --------------------------------------------------------------------------------
@dataclass
class Account:
    id: str
    email: str
    username: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def create_user(client: httpx.AsyncClient, name: str | None = None) -> Account:
    username = name or f"u{uuid.uuid4().hex[:10]}"
    email = f"{username}@example.com"
    password = "s3cret-passw0rd"
    r = await client.post(
        "/api/v1/auth/register", json={"email": email, "username": username, "password": password}
    )
    assert r.status_code == 201, r.text
    r2 = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r2.status_code == 200, r2.text
    tokens = r2.json()
    return Account(
        r.json()["id"], email, username, password, tokens["access_token"], tokens["refresh_token"]
    )


@pytest.fixture
async def user(client: httpx.AsyncClient) -> Account:
    return await create_user(client)


@pytest.fixture
async def other_user(client: httpx.AsyncClient) -> Account:
    return await create_user(client)


async def wait_for_job(
    client: httpx.AsyncClient,
    account: Account,
    job_id: str,
    *,
    timeout: float = 120,
    until: tuple[str, ...] = ("completed", "failed", "cancelled"),
    worker: WorkerProcess | None = None,
) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in until:
            return job
        await asyncio.sleep(0.2)
    tail = worker.log_tail() if worker else ""
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout}s: {job}\n{tail}")
