"""Scale-out across hosts (issue 14, item 3): the production shape over real network hops.

Network namespaces on this machine stand in for hosts: ``api`` runs the API (``picfilter
serve``), ``w1`` and ``w2`` each run an ml/io Celery worker (``picfilter worker``). Each host has
one veth link to a bridge in the root namespace, where the services live, bound to the bridge's
address only: a private PostgreSQL cluster (``initdb`` + ``pg_ctl`` as user postgres, trust on
the bridge subnet), a private ``redis-server`` (Celery broker, events) and the moto S3 server.
Nothing here touches the machine's shared PostgreSQL or Redis.

20 apply jobs are submitted through the API; as soon as ``w2`` has taken one, its host's link is
cut (``ip link set <veth> down``): w2 can no longer reach the broker, the database or S3 in the
middle of a job. The message was never acknowledged (late acks), so after the broker's
visibility timeout (15 s here) ``w1`` runs it again: by then w2's heartbeat on the job is older
than ``JOB_STUCK_AFTER_SECONDS`` (8 s here, heartbeats every second), so w1 does not take it
for a job still running elsewhere. Then every job must be ``completed``
exactly once: one result object per job in S3 and no other, the style's ``apply_count`` equal
to the number of jobs, and the job w2 held delivered again (21 deliveries for 20 jobs; its
``attempts`` is 2 when w2 had already claimed it in the database).

Needs root and ``ip netns`` (iproute2), PostgreSQL's server binaries and redis-server; skips
with the reason otherwise. Namespaces, links and servers are removed in every case.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import pwd
import random
import re
import shutil
import signal
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
import numpy as np
import pytest

from tests.s3_server import ACCESS_KEY, SECRET_KEY, VerifyingMotoServer
from tests.test_deploy_proxy import SETTINGS_VARS

pytestmark = [
    pytest.mark.slow,
    # its own stack whatever PICFILTER_TEST_BACKEND says: once per `make test` is enough
    pytest.mark.skipif(
        os.environ.get("PICFILTER_TEST_BACKEND") == "postgres",
        reason="self-contained stack: runs in the embedded pass of `make test`",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
JOBS = 20
API_PORT = 18080  # inside the api namespace: nothing else listens there
VISIBILITY_TIMEOUT = 15


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip"):
        return "no `ip` (apt-get install iproute2)"
    probe = f"pfprobe{uuid.uuid4().hex[:6]}"
    if _run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "`ip netns add` is not permitted here"
    _run("ip", "netns", "del", probe, check=False)
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)"
    if not shutil.which("redis-server"):
        return "no redis-server"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` user to run the private cluster"
    return None


def _free_subnet() -> str:
    """A 10.x.y.0/24 not used by any address or route here: its first three octets."""
    used = _run("ip", "-4", "route").stdout + _run("ip", "-4", "addr").stdout
    for _ in range(100):
        prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24")


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Net:
    tag: str
    prefix: str
    namespaces: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # host name -> root-side veth

    @property
    def bridge(self) -> str:
        return f"pfbr{self.tag}"

    @property
    def services(self) -> str:
        return f"{self.prefix}.1"

    def add_host(self, name: str, address: str) -> str:
        ns, outside, inside = f"pf{self.tag}{name}", f"pf{self.tag}{name}o", f"pf{self.tag}{name}i"
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self.links[name] = outside
        _run("ip", "link", "set", inside, "netns", ns)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", inside)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
        return ns

    def teardown(self) -> None:
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns, check=False)  # removes its veth pair too
        for link in self.links.values():
            _run("ip", "link", "del", link, check=False)
        _run("ip", "link", "del", self.bridge, check=False)


@contextlib.contextmanager
def network() -> Iterator[Net]:
    net = Net(tag=uuid.uuid4().hex[:4], prefix=_free_subnet())
    try:
        _run("ip", "link", "add", net.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{net.services}/24", "dev", net.bridge)
        _run("ip", "link", "set", net.bridge, "up")
        yield net
    finally:
        net.teardown()


@contextlib.contextmanager
def private_postgres(host: str) -> Iterator[str]:
    """A throwaway cluster bound to ``host`` only; yields its admin URL (trust auth)."""
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    top = Path(tempfile.mkdtemp(prefix="picfilter-pg-"))
    top.chmod(0o755)
    data = top / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    port = _free_port(host)
    as_pg = ["runuser", "-u", "postgres", "--"]
    _run(*as_pg, f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {host.rsplit('.', 1)[0]}.0/24 trust\n")
    options = f"-c listen_addresses={host} -p {port} -c unix_socket_directories={data} "
    options += "-c fsync=off -c full_page_writes=off -c max_connections=200"
    try:
        _run(*as_pg, f"{bindir}/pg_ctl", "-D", str(data), "-l", str(data / "log"), "-o", options,
             "-w", "-t", "60", "start")  # fmt: skip
        yield f"postgresql://postgres@{host}:{port}/postgres"
    finally:
        _run(*as_pg, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def private_redis(host: str) -> Iterator[str]:
    port = _free_port(host)
    proc = subprocess.Popen(
        ["redis-server", "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
         "--protected-mode", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(host=host, port=port, socket_connect_timeout=1).ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.2)
        yield f"redis://{host}:{port}/0"
    finally:
        proc.kill()
        proc.wait()


class HostProcess:
    """A command run inside a namespace (its own process group), output to a log file."""

    def __init__(self, ns: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no {needle!r} in {timeout} s:\n{self.text()[-3000:]}"
            )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._out.close()


def _photo_jpeg(width: int = 2400, height: int = 1800) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1)
    base = base + rng.normal(0, 0.04, base.shape)
    out = io.BytesIO()
    Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _cube(size: int = 17) -> bytes:
    ramp = np.linspace(0.0, 1.0, size)
    rows = [f"LUT_3D_SIZE {size}"]
    for b in ramp:
        for g in ramp:
            for r in ramp:
                rows.append(f"{min(1.0, r * 1.08):.6f} {g:.6f} {b * 0.9:.6f}")
    return ("\n".join(rows) + "\n").encode()


def _wait_finished(
    client: httpx.Client, auth: dict[str, str], ids: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for job_id in ids:
            if jobs.get(job_id, {}).get("status") not in ("completed", "failed", "cancelled"):
                jobs[job_id] = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
        if all(j["status"] in ("completed", "failed", "cancelled") for j in jobs.values()):
            return jobs
        time.sleep(0.5)
    return jobs


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Any]]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="picfilter-scaleout-"))
    processes: list[HostProcess] = []
    moto: VerifyingMotoServer | None = None
    try:
        with (
            network() as net,
            private_postgres(net.services) as pg,
            private_redis(net.services) as rd,
        ):
            moto = VerifyingMotoServer(ip_address=net.services)
            moto.start()
            import psycopg

            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute("CREATE DATABASE picfilter")
            db = pg.rsplit("/", 1)[0] + "/picfilter"
            env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
            env.update(
                ENVIRONMENT="production",
                DATABASE_URL=db.replace("postgresql://", "postgresql+asyncpg://"),
                REDIS_URL=rd,
                REDIS_KEY_PREFIX="scaleout:",
                CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
                CELERY_RETRY_DELAY="1",
                JOB_HEARTBEAT_SECONDS="1",
                JOB_STUCK_AFTER_SECONDS="8",
                STORAGE_BACKEND="s3",
                S3_ENDPOINT=moto.url,
                S3_ACCESS_KEY=ACCESS_KEY,
                S3_SECRET_KEY=SECRET_KEY,
                S3_BUCKET="picfilter-scaleout",
                S3_CREATE_BUCKET="true",
                JWT_SECRET_KEY="scale-out-" + "k" * 40,
                RATE_LIMIT_ENABLED="false",
                BCRYPT_ROUNDS="4",
                EMBEDDED_WORKER="false",
                LOG_LEVEL="INFO",
                PYTHONUNBUFFERED="1",
            )
            subprocess.run(
                [sys.executable, "-m", "app.cli", "migrate"],
                cwd=ROOT,
                env={**env, "DATA_DIR": str(tmp / "migrate")},
                check=True,
                capture_output=True,
                timeout=300,
            )
            api_ns = net.add_host("api", f"{net.prefix}.2")
            worker_ns = {"w1": net.add_host("w1", f"{net.prefix}.3")}
            worker_ns["w2"] = net.add_host("w2", f"{net.prefix}.4")
            api_host = f"{net.prefix}.2"
            api = HostProcess(
                api_ns,
                [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--no-migrate",
                 "--host", api_host, "--port", str(API_PORT)],
                {**env, "DATA_DIR": str(tmp / "api")},
                tmp / "api.log",
            )  # fmt: skip
            processes.append(api)
            workers = {}
            for name, ns in worker_ns.items():
                workers[name] = HostProcess(
                    ns,
                    [sys.executable, "-m", "app.cli", "worker", "--queues", "ml,io",
                     "--concurrency", "1"],
                    {**env, "DATA_DIR": str(tmp / name)},
                    tmp / f"{name}.log",
                )  # fmt: skip
                processes.append(workers[name])
            base = f"http://{api_host}:{API_PORT}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert api.proc.poll() is None, api.text()[-3000:]
                assert time.monotonic() < deadline, f"API not up in 120 s:\n{api.text()[-3000:]}"
                time.sleep(0.3)
            for worker in workers.values():
                worker.wait_for(" ready.", 180)
            yield {"net": net, "base": base, "workers": workers, "moto": moto, "db": db}
    finally:
        for process in processes:
            process.stop()
        if moto is not None:
            moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_every_job_completes_exactly_once_when_a_worker_host_is_cut_off(
    hosts: dict[str, Any],
) -> None:
    import boto3
    import psycopg

    net: Net = hosts["net"]
    workers: dict[str, HostProcess] = hosts["workers"]
    with httpx.Client(base_url=hosts["base"], timeout=60) as client:
        name = f"so{uuid.uuid4().hex[:8]}"
        body = {"email": f"{name}@example.com", "username": name, "password": f"S-{uuid.uuid4()}"}
        assert client.post("/api/v1/auth/register", json=body).status_code == 201
        r = client.post("/api/v1/auth/login", json={k: body[k] for k in ("email", "password")})
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = client.post(
            "/api/v1/styles/import",
            files={"file": ("warm.cube", _cube(), "application/octet-stream")},
            data={"name": "Warm"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        style_id = r.json()["id"]
        photo = _photo_jpeg()
        r = client.post(
            "/api/v1/images/upload",
            json={"filename": "big.jpg", "content_type": "image/jpeg", "size": len(photo)},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        up = r.json()
        assert httpx.put(up["upload_url"], content=photo, headers=up["headers"]).status_code == 200
        assert client.post(f"/api/v1/images/{up['image_id']}/confirm", headers=auth).is_success
        [thumb] = client.get("/api/v1/jobs", headers=auth).json()["items"]
        assert _wait_finished(client, auth, [thumb["id"]], 120)[thumb["id"]]["status"] == (
            "completed"
        )

        received_before = workers["w2"].text().count("apply_style[")
        assert received_before == 0
        submitted_at = time.monotonic()
        ids = []
        for _ in range(JOBS):
            r = client.post(
                f"/api/v1/styles/{style_id}/apply",
                json={"image_id": up["image_id"], "format": "jpeg"},
                headers=auth,
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        # cut w2's link as soon as it has taken a job (it is working on it: prefetch 1)
        deadline = time.monotonic() + 120
        while workers["w2"].text().count("apply_style[") == received_before:
            assert time.monotonic() < deadline, "w2 took no job in 120 s"
            time.sleep(0.02)
        _run("ip", "link", "set", net.links["w2"], "down")
        cut_at = time.monotonic() - submitted_at
        jobs = _wait_finished(client, auth, ids, 240)
        done_at = time.monotonic() - submitted_at
        style = client.get(f"/api/v1/styles/{style_id}", headers=auth).json()

    statuses = {job_id: job["status"] for job_id, job in jobs.items()}
    assert all(s == "completed" for s in statuses.values()), statuses
    # results stored once: one object per job under results/, each the one its job names
    s3 = boto3.client(
        "s3",
        endpoint_url=hosts["moto"].url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    listed = s3.list_objects_v2(Bucket="picfilter-scaleout", Prefix="results/")
    stored = sorted(obj["Key"] for obj in listed.get("Contents", []))
    named = sorted(job["result"]["result_key"] for job in jobs.values())
    assert stored == named, (stored, named)
    assert len({key.split("/")[2] for key in stored}) == JOBS  # one per job id
    # counters right
    assert style["apply_count"] == JOBS, style
    with psycopg.connect(hosts["db"]) as conn:
        attempts = dict(
            conn.execute(
                "SELECT id::text, attempts FROM jobs WHERE id::text = ANY(%s)", (ids,)
            ).fetchall()
        )
    rerun = [job_id for job_id, n in attempts.items() if n > 1]

    def count(worker: str, what: str) -> int:
        return len(re.findall(rf"apply_style\[[0-9a-f-]+\] {what}", workers[worker].text()))

    # the job w2 held when its link went down was delivered again (to w1): more deliveries
    # than jobs, yet one completion each (a finished job's late copy is a no-op in run_job;
    # attempts 2 where w2 had already claimed the job in the database)
    deliveries = count("w1", "received") + count("w2", "received")
    assert deliveries > JOBS, (deliveries, count("w2", "received"), attempts)
    assert count("w2", "succeeded") < count("w2", "received")
    no_ops = workers["w1"].text().count(": nothing to do (completed)")

    print(
        f"\n{JOBS} apply jobs over 3 namespaces; w2's link cut {cut_at:.1f} s after the first "
        f"submission; all completed after {done_at:.1f} s; re-run: {len(rerun)} job(s) "
        f"(attempts {sorted(attempts[j] for j in rerun)}); {len(stored)} result objects; "
        f"apply_count {style['apply_count']}; w1 received {count('w1', 'received')}, "
        f"succeeded {count('w1', 'succeeded')}; w2 received {count('w2', 'received')}, "
        f"succeeded {count('w2', 'succeeded')}; {deliveries} deliveries for {JOBS} jobs, "
        f"{no_ops} late copies of finished jobs ignored"
    )
