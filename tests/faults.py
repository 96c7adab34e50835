"""Private servers for the fault tests: a stack that a test may break, never the shared one.

:class:`FaultStack` starts, on free loopback ports: its own ``redis-server``, its own PostgreSQL
cluster (``initdb`` + ``pg_ctl`` in a temporary folder, as the ``postgres`` user when we are
root, since ``initdb`` refuses root), a moto S3 server (:class:`tests.s3_server.VerifyingMotoServer`
on a fixed port, so that it can be stopped and started again; moto keeps its buckets in process
memory, so a restart keeps them), the API as a real ``uvicorn`` process and, on demand, real
Celery worker processes. Each dependency can be stopped and started again; the machine's shared
PostgreSQL (5432) and Redis (6379) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.s3_server import ACCESS_KEY, SECRET_KEY, VerifyingMotoServer

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            is_up = s.connect_ex(("127.0.0.1", port)) == 0
        if is_up == up:
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} still {'down' if up else 'up'} after {timeout}s")


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class PrivateRedis:
    """``redis-server`` on a free port, persisted like production's (docker-compose.yml runs it
    with ``--appendonly yes``): sessions live there, so a Redis that came back empty would log
    every user out, which is not the outage these tests are about."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.data_dir = log_dir / "redis-data"
        self.data_dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log_dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("redis-server") or "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.port, up=True)

    def stop(self) -> None:
        _stop_process(self.proc)
        wait_port(self.port, up=False)

    def count_keys(self, pattern: str) -> int:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        finally:
            client.close()


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (``initdb`` into a temporary folder) on a free port."""

    def __init__(self, base: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = bins[-1].parent
        self.port = free_port()
        self.dir = base / "pg"
        self.dir.mkdir()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:  # initdb refuses root: the cluster belongs to `postgres`
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        data, log = str(self.dir / "data"), str(self.dir / "postgres.log")
        self._run("pg_ctl", "-D", data, "-o", opts, "-l", log, "-w", "-t", "60", "start")

    def stop(self) -> None:
        # fast: what an operator's restart or a failover does to open connections
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


class PrivateS3(VerifyingMotoServer):
    """The moto S3 server on a fixed free port: it can be stopped and started again (the
    buckets live in moto's in-process backends and survive)."""

    def __init__(self) -> None:
        super().__init__()
        self._port = free_port()
        self.running = False

    def start(self) -> None:
        super().start()
        wait_port(self._port, up=True)
        self.running = True

    def stop(self) -> None:
        super().stop()
        if self._server is not None:
            self._server.server_close()  # moto leaves the socket listening: close it
        wait_port(self._port, up=False)
        self.running = False


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the process (``VmRSS``), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def running(self) -> bool:
        return self.proc.poll() is None


@dataclass
class FaultStack:
    base: Path
    redis: PrivateRedis
    pg: PrivatePostgres
    s3: PrivateS3
    env: dict[str, str]
    api_port: int = 0
    api: Proc | None = None
    workers: list[Proc] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self, **extra_env: str) -> Proc:
        self.api_port = self.api_port or free_port()
        log = self.base / f"api-{uuid.uuid4().hex[:6]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app.main:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.api_port),
                    "--no-access-log",
                ],
                cwd=ROOT,
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.api = Proc(proc, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"API exited at start:\n{self.api.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200:
                    return self.api
            time.sleep(0.2)
        raise RuntimeError(f"API not up after 60 s:\n{self.api.log_text()[-3000:]}")

    def api_log_tail(self, n: int = 6000) -> str:
        return self.api.log_text()[-n:] if self.api else ""

    def stop_api(self) -> None:
        if self.api is not None:
            _stop_process(self.api.proc)

    def start_worker(self, *, beat: bool = False, **extra_env: str) -> Proc:
        log = self.base / f"worker-{len(self.workers) + 1}.log"
        cmd = [sys.executable, "-m", "tests.worker", "worker", "--queues", "ml,io"]
        cmd += ["--pool", "solo"] + (["--beat"] if beat else [])
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env={**self.env, **extra_env}, stdout=out, stderr=subprocess.STDOUT
            )
        worker = Proc(proc, log)
        self.workers.append(worker)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{worker.log_text()[-3000:]}")
            if " ready." in worker.log_text():
                return worker
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after 120 s:\n{worker.log_text()[-3000:]}")

    def stop_workers(self) -> None:
        for w in self.workers:
            _stop_process(w.proc)

    def shutdown(self) -> None:
        self.stop_workers()
        self.stop_api()
        if self.s3.running:
            self.s3.stop()
        self.redis.stop()
        self.pg.destroy()


@contextlib.contextmanager
def fault_stack(**settings: str) -> Iterator[FaultStack]:
    """Start the private Redis, PostgreSQL and S3, migrate, start the API; ``settings`` are
    extra environment variables of the API and workers."""
    base = Path(tempfile.mkdtemp(prefix="picfilter-faults-"))
    redis_server = PrivateRedis(base)
    redis_server.start()
    pg: PrivatePostgres | None = None
    s3: PrivateS3 | None = None
    stack: FaultStack | None = None
    try:
        pg = PrivatePostgres(base)
        pg.start()
        s3 = PrivateS3()
        s3.start()
        data_dir = base / "data"
        data_dir.mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "DATABASE_URL",
                "DATABASE_SYNC_URL",
                "REDIS_URL",
                "CELERY_BROKER_URL",
                "S3_ENDPOINT",
            }
        }
        env.update(
            ENVIRONMENT="test",
            DATA_DIR=str(data_dir),
            JWT_SECRET_KEY="fault-test-secret-key-" + uuid.uuid4().hex,
            BCRYPT_ROUNDS="4",
            DATABASE_URL=pg.url,
            REDIS_URL=redis_server.url,
            REDIS_KEY_PREFIX="pffault:",
            S3_ENDPOINT=s3.url,
            S3_ACCESS_KEY=ACCESS_KEY,
            S3_SECRET_KEY=SECRET_KEY,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            S3_BUCKET="picfilter-faults",
            S3_CREATE_BUCKET="true",
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_DEFAULT="100000/minute",
            RATE_LIMIT_JOBS="100000/minute",
            RATE_LIMIT_AUTH="100000/minute",
            CELERY_RETRY_DELAY="1",
            LOG_LEVEL="INFO",
            PYTHONPATH=str(ROOT),
            **settings,
        )
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        stack = FaultStack(base, redis_server, pg, s3, env)
        stack.start_api()
        yield stack
    finally:
        if stack is not None:
            stack.shutdown()
        else:
            redis_server.stop()
            if s3 is not None and s3.running:
                s3.stop()
            if pg is not None:
                pg.destroy()
        if os.environ.get("PICFILTER_KEEP_FAULT_LOGS"):
            print(f"fault stack logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


# ---- client helpers -------------------------------------------------------------------------
@dataclass
class User:
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(client: httpx.Client) -> User:
    name = f"f{uuid.uuid4().hex[:10]}"
    email, password = f"{name}@example.com", "fault-tolerant passphrase 42"
    r = client.post(
        "/api/v1/auth/register", json={"email": email, "username": name, "password": password}
    )
    assert r.status_code == 201, r.text
    return User(email, password, login(client, email, password))


def login(client: httpx.Client, email: str, password: str) -> str:
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def identity_cube(size: int = 9) -> bytes:
    lines = ['TITLE "identity"', f"LUT_3D_SIZE {size}"]
    for b in range(size):
        for g in range(size):
            for r in range(size):
                lines.append(f"{r / (size - 1):.6f} {g / (size - 1):.6f} {b / (size - 1):.6f}")
    return ("\n".join(lines) + "\n").encode()


def import_style(client: httpx.Client, user: User, name: str = "Faults") -> dict[str, Any]:
    r = client.post(
        "/api/v1/styles/import",
        files={"file": ("look.cube", identity_cube(), "application/octet-stream")},
        data={"name": name, "visibility": "public"},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload(client: httpx.Client, user: User, data: bytes, content_type: str = "image/png") -> str:
    """Create the upload and PUT the bytes (not confirmed); returns the image id."""
    r = client.post(
        "/api/v1/images/upload",
        json={"filename": "f.png", "content_type": content_type, "size": len(data)},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    up = r.json()
    put = httpx.put(up["upload_url"], content=data, headers=up["headers"], timeout=60)
    assert put.status_code in (200, 204), put.text
    return str(up["image_id"])


def wait_job(client: httpx.Client, user: User, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout}s: {job}")
