"""Load with a realistic mix (issue 14, item 4): ``make bench-load`` / ``python -m bench load``.

The production-like stack, all on this machine:

* PostgreSQL: a fresh database ``picfilter_bench_<random>`` on ``BENCH_PG_URL`` (dropped at the
  end), migrated and bulk-loaded as ``bench.gallery`` does (2,000 users, 11,000 styles, 200,000
  ratings, 100,000 comments);
* Redis at ``BENCH_REDIS_URL`` (broker, sessions, job events) under a key prefix of its own,
  removed at the end (never flushed);
* S3: a moto server on loopback (with the presigned-URL check of the tests);
* the API: uvicorn, 2 workers; a Celery worker (``picfilter worker``, queues ml + io,
  concurrency 1). Production settings (``ENVIRONMENT=production``, bcrypt at its default cost)
  except rate limiting, which is off: the whole load comes from one address.

Then 20 accounts are made through the API, each with an imported style and two uploaded,
confirmed images (their thumbnails made by the worker). locust (headless, ``BENCH_LOAD_USERS``
users, default 16, little think time) drives the mix of :mod:`bench._locustfile` for
``BENCH_SECONDS`` (default 60): gallery pages (newest / top rated / most used), search and tag
filters, style pages, comment lists, job polls, apply submissions and logins. After the load,
every submitted apply job must finish (waits up to ``BENCH_DRAIN_SECONDS``, default 300).

Prints requests/s, p50 / p95 / p99 per endpoint and errors (locust's figures), and the apply
jobs' latency (created -> finished, from the database). The goal of issue 14: 0 errors, gallery
p95 <= 100 ms at >= 200 requests/s overall, every job done. The default of 16 users puts
about 250-300 requests/s on 2 quiet cores, past the goal's rate; 32 users saturate them
(about 280 requests/s, measured) and then only queueing grows, so p95 measures the queue, not
the service: run ``BENCH_LOAD_USERS=32`` to see that end of the curve. The load tool runs on
the same cores as everything it measures; benchmarks measure, they never assert.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import free_port, running_server
from bench.gallery import (
    PG_URL,
    REDIS_URL,
    SEARCH_WORD,
    TAGS,
    CpuMeter,
    _db_url,
    _drop_redis_keys,
    _redis_ok,
    fresh_database,
    migrate,
    production_env,
    seed,
)

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("BENCH_SECONDS", "60"))
USERS = int(os.environ.get("BENCH_LOAD_USERS", "16"))
DRAIN_SECONDS = float(os.environ.get("BENCH_DRAIN_SECONDS", "300"))
ACCOUNTS = 20
FINISHED = ("completed", "failed", "cancelled")


def _locust() -> str:
    found = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    if not Path(found).exists():
        raise SystemExit("locust is not installed (pip install -e '.[dev]')")
    return found


def _cube(size: int, seed: int) -> bytes:
    """A small warm/cool .cube, different per account."""
    rng = np.random.default_rng(seed)
    gain = 1 + rng.uniform(-0.15, 0.15, 3)
    ramp = np.linspace(0.0, 1.0, size)
    lines = [f"LUT_3D_SIZE {size}"]
    for b in ramp:
        for g in ramp:
            for r in ramp:
                rgb = np.clip(np.array([r, g, b]) * gain, 0, 1)
                lines.append(" ".join(f"{v:.6f}" for v in rgb))
    return ("\n".join(lines) + "\n").encode()


def _photo(seed: int) -> bytes:
    """A 640x480 JPEG of smooth gradients and noise (a realistic apply costs a little)."""
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640] / 640.0
    base = np.stack([x, y, (x + y) / 2], -1) + rng.normal(0, 0.05, (480, 640, 3))
    out = BytesIO()
    Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _wait_jobs(client: httpx.Client, auth: dict[str, str], ids: list[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
            if job["status"] in FINISHED:
                if job["status"] != "completed":
                    raise RuntimeError(f"setup job {job_id} {job['status']}: {job.get('error')}")
                pending.discard(job_id)
        time.sleep(0.3)
    if pending:
        raise RuntimeError(f"setup jobs not done in {limit:.0f} s: {sorted(pending)}")


def prepare_accounts(base: str) -> list[dict[str, Any]]:
    """Accounts made through the API: each with a public imported style and two images."""
    accounts = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(ACCOUNTS):
            name = f"load{i}{secrets.token_hex(3)}"
            email, password = f"{name}@example.com", f"Load-{secrets.token_urlsafe(12)}"
            r = client.post(
                "/api/v1/auth/register",
                json={"email": email, "username": name, "password": password},
            )
            r.raise_for_status()
            r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
            r.raise_for_status()
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = client.post(
                "/api/v1/styles/import",
                files={"file": ("look.cube", _cube(9, i), "application/octet-stream")},
                data={"name": f"Load look {i}", "visibility": "public", "tags": "warm,film"},
                headers=auth,
            )
            r.raise_for_status()
            style = r.json()["id"]
            images, jobs = [], []
            for k in range(2):
                data = _photo(i * 10 + k)
                r = client.post(
                    "/api/v1/images/upload",
                    json={"filename": f"p{k}.jpg", "content_type": "image/jpeg", "size": len(data)},
                    headers=auth,
                )
                r.raise_for_status()
                up = r.json()
                httpx.put(up["upload_url"], content=data, headers=up["headers"]).raise_for_status()
                client.post(
                    f"/api/v1/images/{up['image_id']}/confirm", headers=auth
                ).raise_for_status()
                images.append(up["image_id"])
            jobs = [j["id"] for j in client.get("/api/v1/jobs", headers=auth).json()["items"]]
            _wait_jobs(client, auth, jobs, 300)
            token = auth["Authorization"].split()[1]
            accounts.append(
                {
                    "email": email,
                    "password": password,
                    "token": token,
                    "style": style,
                    "images": images,
                }
            )
    return accounts


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.array(values), q))


def _job_rows(db_name: str, ids: list[str]) -> list[tuple[str, str, float | None, int]]:
    import psycopg

    with psycopg.connect(_db_url(db_name)) as conn:
        rows = conn.execute(
            "SELECT id::text, status, EXTRACT(EPOCH FROM finished_at - created_at), attempts "
            "FROM jobs WHERE id::text = ANY(%s)",
            (ids,),
        ).fetchall()
    return [(r[0], str(r[1]), None if r[2] is None else float(r[2]), int(r[3])) for r in rows]


def _results_stored(db_name: str, ids: list[str]) -> int:
    """How many distinct result keys the completed jobs name (one per job: stored once)."""
    import psycopg

    with psycopg.connect(_db_url(db_name)) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT result->>'result_key') FROM jobs "
            "WHERE id::text = ANY(%s) AND status = 'completed'",
            (ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def drain(db_name: str, ids: list[str]) -> tuple[list[tuple[str, str, float | None, int]], float]:
    started = time.monotonic()
    while True:
        rows = _job_rows(db_name, ids)
        if all(status in FINISHED for _, status, _, _ in rows) and len(rows) == len(ids):
            return rows, time.monotonic() - started
        if time.monotonic() - started > DRAIN_SECONDS:
            return rows, time.monotonic() - started
        time.sleep(1)


def _print(stats: list[dict[str, str]], notes: list[str]) -> None:
    header = f"{'endpoint':<22}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}"
    header += f"{'p99 ms':>8}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for row in stats:
        print(
            f"{row['Name']:<22}{int(row['Request Count']):>9}{float(row['Requests/s']):>8.1f}"
            f"{row['50%']:>8}{row['95%']:>8}{row['99%']:>8}{int(row['Failure Count']):>8}"
        )
    for note in notes:
        print(f"  {note}")


def run() -> None:
    started = time.perf_counter()
    locust = _locust()
    if not _redis_ok():
        raise SystemExit(f"Redis at {REDIS_URL} does not answer: the load bench needs it")
    import logging

    from tests.s3_server import ACCESS_KEY, SECRET_KEY, VerifyingMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    moto = VerifyingMotoServer()
    moto.start()
    try:
        with fresh_database() as db_name, tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                **production_env(
                    db_name,
                    tmp,
                    REDIS_URL=REDIS_URL,
                    REDIS_KEY_PREFIX=f"bench-{db_name}:",
                    STORAGE_BACKEND="s3",
                    S3_ENDPOINT=moto.url,
                    S3_ACCESS_KEY=ACCESS_KEY,
                    S3_SECRET_KEY=SECRET_KEY,
                    S3_BUCKET=f"picfilter-load-{secrets.token_hex(4)}",
                    S3_CREATE_BUCKET="true",
                ),
            }
            for key in ("CELERY_BROKER_URL", "CDN_BASE_URL", "BCRYPT_ROUNDS"):
                env.pop(key, None)
            migrate(env)
            t = time.perf_counter()
            seeded = seed(db_name)
            print(f"seeded the gallery database in {time.perf_counter() - t:.1f} s", flush=True)
            port = free_port()
            api_cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
            api_cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
            api_cmd += ["--no-access-log", "--log-level", "warning"]
            worker_cmd = [sys.executable, "-m", "app.cli", "worker", "--queues", "ml,io"]
            worker_cmd += ["--concurrency", "1"]
            worker_log = Path(tmp) / "worker.log"
            with (
                running_server(api_cmd, env, port, log_path=Path(tmp) / "api.log") as (base, pid),
                open(worker_log, "wb") as wlog,
            ):
                worker = subprocess.Popen(
                    worker_cmd, cwd=ROOT, env=env, stdout=wlog, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
                try:
                    meter = CpuMeter(pid, db_name)
                    _load(base, db_name, seeded, tmp, locust, started, worker_log, meter)
                finally:
                    os.killpg(worker.pid, 15)
                    try:
                        worker.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        os.killpg(worker.pid, 9)
                        worker.wait()
            _drop_redis_keys(env["REDIS_KEY_PREFIX"])
    finally:
        moto.stop()


def _load(
    base: str,
    db_name: str,
    seeded: Any,
    tmp: str,
    locust: str,
    started: float,
    wlog: Path,
    meter: CpuMeter,
) -> None:
    t = time.perf_counter()
    accounts = prepare_accounts(base)
    print(
        f"prepared {len(accounts)} accounts (style + 2 images each) through the API in "
        f"{time.perf_counter() - t:.1f} s",
        flush=True,
    )
    data = {
        "accounts": accounts,
        "styles": [str(s) for s in seeded.public_ids[:5000]] + [a["style"] for a in accounts],
        "hot_styles": [str(s) for s in seeded.hot_ids],
        "tags": list(TAGS),
        "words": [SEARCH_WORD, "film", "warm", "teal", "matte moody"],
    }
    data_file, jobs_file = Path(tmp) / "load.json", Path(tmp) / "jobs.txt"
    data_file.write_text(json.dumps(data))
    jobs_file.write_text("")
    csv_prefix = Path(tmp) / "locust"
    load_before = os.getloadavg()[0]
    cmd = [locust, "-f", str(ROOT / "bench" / "_locustfile.py"), "--headless"]
    cmd += ["-u", str(USERS), "-r", str(USERS), "-t", f"{SECONDS:.0f}s", "--host", base]
    cmd += ["--csv", str(csv_prefix), "--only-summary", "--stop-timeout", "10"]
    cmd += ["--loglevel", "WARNING"]
    env = {
        **os.environ,
        "PICFILTER_LOAD_DATA": str(data_file),
        "PICFILTER_LOAD_JOBS": str(jobs_file),
    }
    print(f"locust: {USERS} users, {SECONDS:.0f} s ...", flush=True)
    cpu_before = meter.snapshot()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    server_cpu = meter.used(cpu_before)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    locust_cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    load_after = os.getloadavg()[0]
    if proc.returncode not in (0, 1):  # 1: some requests failed (reported below)
        raise RuntimeError(f"locust failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(f"{csv_prefix}_stats.csv") as f:
        stats = list(csv.DictReader(f))
    failures_file = Path(f"{csv_prefix}_failures.csv")
    failures = list(csv.DictReader(failures_file.open())) if failures_file.exists() else []
    ids = [line for line in jobs_file.read_text().split() if line]
    rows, drained = drain(db_name, ids)
    by_status: dict[str, int] = {}
    for _, status, _, _ in rows:
        by_status[status] = by_status.get(status, 0) + 1
    latencies = [s for _, status, s, _ in rows if status == "completed" and s is not None]
    retried = sum(1 for *_, attempts in rows if attempts > 1)
    stored = _results_stored(db_name, ids)

    total = next(r for r in stats if r["Name"] == "Aggregated")
    per_endpoint = [r for r in stats if r["Name"] != "Aggregated"]
    per_endpoint.sort(key=lambda r: -int(r["Request Count"]))
    print()
    _print([*per_endpoint, total], [])
    gallery = next((r for r in stats if r["Name"] == "gallery"), None)
    done = by_status.get("completed", 0)
    print()
    print(
        f"throughput {float(total['Requests/s']):.1f} req/s over {SECONDS:.0f} s, "
        f"{int(total['Failure Count'])} errors of {int(total['Request Count'])} requests; "
        f"gallery p95 {gallery['95%'] if gallery else '-'} ms"
    )
    print(
        f"apply jobs: {len(ids)} submitted, {done} completed, "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()) if k != "completed")
        + f"{'; ' if len(by_status) > 1 else ''}{len(ids) - len(rows)} missing; "
        f"{stored} result objects for {done} completed jobs; {retried} ran more than once; "
        f"the last finished {drained:.0f} s after the load"
    )
    requests = int(total["Request Count"])
    if server_cpu is not None and requests:
        per_request = server_cpu / requests * 1000
        print(
            f"server CPU: {server_cpu:.1f} s for {requests} requests = {per_request:.1f} ms per "
            f"request (uvicorn workers + the PostgreSQL backends of the bench database, from "
            f"/proc; whatever else runs), i.e. at most ~{2000 / per_request:.0f} req/s on 2 "
            f"otherwise idle cores; locust itself used {locust_cpu:.1f} s of CPU"
        )
    if latencies:
        print(
            f"job latency (created -> finished): p50 {_percentile(latencies, 50) * 1000:.0f} ms, "
            f"p95 {_percentile(latencies, 95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
            f"mean {statistics.fmean(latencies) * 1000:.0f} ms"
        )
    rps, errors = float(total["Requests/s"]), int(total["Failure Count"])
    gallery_p95 = float(gallery["95%"]) if gallery else float("nan")
    every_job = done == len(ids)
    print(
        f"goal (issue 14): 0 errors {'met' if errors == 0 else 'MISSED'} ({errors}); gallery p95 "
        f"<= 100 ms {'met' if gallery_p95 <= 100 else 'MISSED'} ({gallery_p95:.0f} ms); >= 200 "
        f"req/s {'met' if rps >= 200 else 'MISSED'} ({rps:.1f}); every job done "
        f"{'met' if every_job else 'MISSED'} ({done}/{len(ids)})"
    )
    for failure in failures[:10]:
        print(f"  failure: {failure.get('Method')} {failure.get('Name')}: "
              f"{failure.get('Error')} x{failure.get('Occurrences')}")  # fmt: skip
    if by_status.get("failed"):
        print(f"  worker log tail:\n{wlog.read_text()[-2000:]}")
    print(
        f"  locust {USERS} users (FastHttpUser, 0-50 ms think time) on this machine "
        f"({os.cpu_count()} CPUs) beside PostgreSQL ({PG_URL.rsplit('@', 1)[-1]}), Redis, moto "
        f"S3, uvicorn x2 and the Celery worker; load average {load_before:.1f} before, "
        f"{load_after:.1f} after; rate limiting off; total {time.perf_counter() - started:.0f} s"
    )
