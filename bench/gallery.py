"""Community read/write paths under load: the gallery, a comment list and rating PUTs.

``python -m bench gallery`` (or ``make bench``):

1. creates a fresh PostgreSQL database ``picfilter_bench_<random>`` on ``BENCH_PG_URL``
   (default ``postgresql://postgres@127.0.0.1:5432/postgres``), migrates it with Alembic and
   bulk-loads it with COPY (psycopg): 2,000 users, 10,000 public styles (+1,000 unlisted or
   private), 200,000 ratings and 100,000 comments, with counters consistent with the rows;
2. starts uvicorn with 2 workers (``app.main:create_app``; Redis at ``BENCH_REDIS_URL`` when it
   answers; rate limiting off, so that the load generator is not throttled; no access log);
3. drives each endpoint (``BENCH_ONLY=top_rated,comments`` picks some) for ``BENCH_SECONDS``
   (default 30) with ``BENCH_CONNECTIONS`` (default 16) keep-alive connections (closed loop:
   mean latency = connections / throughput), after a short warm-up, using ``wrk`` when it is
   installed (a Lua script computes p50/p95/p99), else an asyncio + httpx load generator in
   this process (which then competes with the server for the CPU: the table says which ran);
4. prints requests/s, p50/p95/p99 latency and the server-side CPU time per request (uvicorn
   workers + PostgreSQL backends, from ``/proc``) per endpoint, checks that the rating counters
   still match the rows, then stops the server and drops the database.

``BENCH_STORAGE=s3`` (the default) makes the server presign preview URLs with boto3, as in
production (nothing is contacted: presigning is local HMAC work); ``local`` uses the embedded
local-disk signer. The load runs on the same machine as the server and PostgreSQL: on 2 cores,
the numbers are a floor. Benchmarks measure; they never assert.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import free_port, running_server

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
WARMUP_SECONDS = min(5.0, max(1.0, SECONDS / 6))
STORAGE = os.environ.get("BENCH_STORAGE", "s3")
# Comma-separated words; only the scenarios whose name contains one of them run (default: all).
ONLY = [w.strip() for w in os.environ.get("BENCH_ONLY", "").split(",") if w.strip()]
SEED = 20261128

N_USERS = 2_000
N_PUBLIC = 10_000
N_HIDDEN = 1_000
N_RATINGS = 200_000
N_COMMENTS = 100_000
HOT_STYLES = 20  # styles with >= 1,000 comments each, for the comment-list load
PASSWORD = "bench-password"
SEARCH_WORD = "golden"

WORDS = (
    "warm cool teal orange film matte faded vivid moody bright airy dark cinematic vintage "
    "pastel muted crisp soft dreamy retro analog kodak fuji portrait landscape street night "
    "sunset sunrise beach forest urban desert snow autumn spring summer winter wedding travel "
    "food product fashion neon noir sepia mono punchy clean natural rich deep glow haze dusk "
    "dawn ocean mountain city rain fog lush bold calm golden hour"
).split()
TAGS = WORDS[:40]


# ---- database -------------------------------------------------------------------------------
def _db_url(name: str, driver: str | None = None) -> str:
    """The URL of database ``name`` on the bench server, with a SQLAlchemy driver if given."""
    base = PG_URL.rsplit("/", 1)[0]
    if driver:
        base = base.replace("postgresql://", f"postgresql+{driver}://", 1)
    return f"{base}/{name}"


def production_env(db_name: str, data_dir: str, **extra: str) -> dict[str, str]:
    """The settings every server benchmark runs the API with: database ``db_name`` on the bench
    server, production mode, a fresh key, rate limits off, a data dir, quiet logs, no worker
    inside the API; ``extra`` adds or overrides settings."""
    return {
        "DATABASE_URL": _db_url(db_name, "asyncpg"),
        "DATABASE_SYNC_URL": _db_url(db_name, "psycopg"),
        "ENVIRONMENT": "production",
        "JWT_SECRET_KEY": secrets.token_urlsafe(32),
        "RATE_LIMIT_ENABLED": "false",
        "DATA_DIR": data_dir,
        "LOG_LEVEL": "WARNING",
        "EMBEDDED_WORKER": "false",
        **extra,
    }


@contextmanager
def fresh_database() -> Iterator[str]:
    import psycopg

    name = f"picfilter_bench_{secrets.token_hex(5)}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Seeded:
    user_ids: list[uuid.UUID]
    emails: list[str]
    public_ids: list[uuid.UUID]
    hot_ids: list[uuid.UUID]
    owner_of: dict[uuid.UUID, int]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def seed(db_name: str) -> Seeded:
    """Bulk-load users, styles, ratings and comments with COPY; counters match the rows."""
    import bcrypt
    import psycopg

    rng = random.Random(SEED)
    now = datetime.now(UTC)
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    user_ids = [uuid.uuid4() for _ in range(N_USERS)]
    emails = [f"bench{i}@example.com" for i in range(N_USERS)]

    n_styles = N_PUBLIC + N_HIDDEN
    style_ids = [uuid.uuid4() for _ in range(n_styles)]
    owner_of = {sid: rng.randrange(N_USERS) for sid in style_ids}
    public_ids = style_ids[:N_PUBLIC]
    hot_ids = public_ids[:HOT_STYLES]

    # ratings: a skewed number per style, distinct raters, never the owner
    weights = [rng.paretovariate(1.2) for _ in public_ids]
    scale = N_RATINGS / sum(weights)
    per_style = [min(N_USERS - 1, max(0, round(w * scale))) for w in weights]
    while sum(per_style) != N_RATINGS:
        i = rng.randrange(N_PUBLIC)
        step = 1 if sum(per_style) < N_RATINGS else -1
        if 0 <= per_style[i] + step < N_USERS - 1:
            per_style[i] += step
    rating_rows: list[tuple[Any, ...]] = []
    sums: dict[uuid.UUID, int] = {}
    counts: dict[uuid.UUID, int] = {}
    for sid, k in zip(public_ids, per_style, strict=True):
        bias = rng.uniform(2.0, 4.8)
        raters = rng.sample([u for u in range(N_USERS) if u != owner_of[sid]], k)
        for u in raters:
            score = min(5, max(1, round(rng.gauss(bias, 0.8))))
            rating_rows.append((uuid.uuid4(), sid, user_ids[u], score, now, now))
            sums[sid] = sums.get(sid, 0) + score
            counts[sid] = counts.get(sid, 0) + 1

    # comments: 1,000+ on each hot style, the rest spread with a skew
    comment_rows: list[tuple[Any, ...]] = []
    comment_counts: dict[uuid.UUID, int] = {}
    hot_total = HOT_STYLES * 1_000
    targets = [hot_ids[i % HOT_STYLES] for i in range(hot_total)] + rng.choices(
        public_ids, weights=weights, k=N_COMMENTS - hot_total
    )
    for i, sid in enumerate(targets):
        created = now - timedelta(seconds=N_COMMENTS - i)
        body = f"{_text(rng, rng.randint(3, 25))}."
        comment_rows.append(
            (uuid.uuid4(), sid, user_ids[rng.randrange(N_USERS)], body, None, created, created)
        )
        comment_counts[sid] = comment_counts.get(sid, 0) + 1

    def bayesian(sid: uuid.UUID) -> float:
        n = counts.get(sid, 0)
        return (5 * 3.0 + sums.get(sid, 0)) / (5 + n) if n else 0.0

    models = ["dlut", "nilut", "adaptive_3dlut", "imported"]
    with psycopg.connect(_db_url(db_name)) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY users (id, email, username, password_hash, is_active, created_at, "
                "updated_at) FROM STDIN"
            ) as copy:
                for i, uid in enumerate(user_ids):
                    copy.write_row((uid, emails[i], f"bench{i}", password_hash, True, now, now))
            with cur.copy(
                "COPY styles (id, owner_id, name, description, tags, visibility, status, model, "
                "metrics, model_key, lut_key, preview_key, model_version, rating_sum, "
                "rating_count, rating_score, comment_count, apply_count, created_at, updated_at) "
                "FROM STDIN"
            ) as copy:
                for i, sid in enumerate(style_ids):
                    visibility = "public" if i < N_PUBLIC else rng.choice(["private", "unlisted"])
                    created = now - timedelta(minutes=i * 3 + rng.random())
                    tags = json.dumps(rng.sample(TAGS, rng.randint(1, 5)))
                    prefix = f"styles/{sid}/v1"
                    copy.write_row(
                        (
                            sid,
                            user_ids[owner_of[sid]],
                            f"{_text(rng, 2).title()} {i}",
                            f"{_text(rng, rng.randint(8, 40))}.",
                            tags,
                            visibility,
                            "ready",
                            rng.choice(models),
                            json.dumps({"psnr": 40.0, "delta_e2000_mean": 1.2}),
                            f"{prefix}/model.pt",
                            f"{prefix}/lut.cube",
                            f"{prefix}/preview.webp",
                            1,
                            sums.get(sid, 0),
                            counts.get(sid, 0),
                            bayesian(sid),
                            comment_counts.get(sid, 0),
                            int(rng.paretovariate(1.5) * 10),
                            created,
                            created,
                        )
                    )
            with cur.copy(
                "COPY ratings (id, style_id, user_id, score, created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in rating_rows:
                    copy.write_row(row)
            with cur.copy(
                "COPY comments (id, style_id, author_id, body, edited_at, created_at, "
                "updated_at) FROM STDIN"
            ) as copy:
                for row in comment_rows:
                    copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return Seeded(user_ids, emails, public_ids, hot_ids, owner_of)


# ---- server ---------------------------------------------------------------------------------
def _redis_ok() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except Exception:
        return False


def server(env: dict[str, str], port: int) -> AbstractContextManager[tuple[str, int]]:
    """uvicorn with 2 workers on ``port``, ready once /healthz answers."""
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    cmd += ["--no-access-log", "--log-level", "warning", "--no-server-header"]
    return running_server(cmd, env, port)


class CpuMeter:
    """CPU seconds used by the server's processes and by the PostgreSQL backends serving it
    (Linux ``/proc``; None elsewhere). Independent of what else runs on the machine, so
    ``CPU ms per request`` is comparable between runs where requests/s is not."""

    def __init__(self, server_pid: int, db_name: str) -> None:
        self.server_pid = server_pid
        self.db_name = db_name
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _stat(self, pid: int) -> list[str] | None:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return raw.rsplit(")", 1)[1].split()

    def _pids(self) -> list[int]:
        import psycopg

        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (fields := self._stat(int(entry.name))):
                parents[int(entry.name)] = int(fields[1])
        tree = {self.server_pid}
        grew = True
        while grew:
            children = {pid for pid, ppid in parents.items() if ppid in tree} - tree
            tree |= children
            grew = bool(children)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db_name,)
            ).fetchall()
        return sorted(tree | {int(r[0]) for r in rows})

    def snapshot(self) -> dict[int, float] | None:
        if not Path("/proc/self/stat").exists():
            return None
        out = {}
        for pid in self._pids():
            fields = self._stat(pid)
            if fields:
                out[pid] = (int(fields[11]) + int(fields[12])) / self.tick
        return out

    def used(self, before: dict[int, float] | None) -> float | None:
        after = self.snapshot()
        if before is None or after is None:
            return None
        return sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())


# ---- load -----------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    method: str
    # (path, token or None, JSON body or None) for each request, chosen at random
    requests: list[tuple[str, str | None, str | None]]


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    errors: int
    tool: str
    cpu_seconds: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float | None:
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds / self.requests * 1000


_LUA = """
local reqs = {%(requests)s}
local method = "%(method)s"
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  local r = reqs[math.random(#reqs)]
  local headers = {}
  if r[2] ~= "" then headers["Authorization"] = "Bearer " .. r[2] end
  local body = nil
  if r[3] ~= "" then
    body = r[3]
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(method, r[1], headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %%d %%d %%f %%f %%f %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _lua_string(value: str | None) -> str:
    return json.dumps(value or "")  # a JSON string literal is a valid Lua string literal here


def run_wrk(base: str, scenario: Scenario, seconds: float, workdir: Path) -> Result:
    script = workdir / f"{re.sub(r'[^a-z0-9]+', '_', scenario.name.lower())}.lua"
    entries = ",\n".join(
        f"{{{_lua_string(path)}, {_lua_string(token)}, {_lua_string(body)}}}"
        for path, token, body in scenario.requests
    )
    script.write_text(_LUA % {"requests": entries, "method": scenario.method})
    cmd = [
        "wrk",
        "-t",
        "2",
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"BENCH_RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    n, duration_us, p50, p95, p99, errors = match.groups()
    return Result(
        scenario.name,
        int(n),
        int(duration_us) / 1e6,
        float(p50) / 1000,
        float(p95) / 1000,
        float(p99) / 1000,
        int(errors),
        "wrk",
    )


async def _httpx_load(base: str, scenario: Scenario, seconds: float) -> Result:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)

    async def worker(client: httpx.AsyncClient, rng: random.Random) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            path, token, body = rng.choice(scenario.requests)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if body:
                headers["Content-Type"] = "application/json"
            start = time.perf_counter()
            try:
                r = await client.request(scenario.method, path, headers=headers, content=body)
                if r.status_code >= 400:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:
        await asyncio.gather(*(worker(client, random.Random(i)) for i in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Result(
        scenario.name,
        len(latencies),
        elapsed,
        q[49] * 1000,
        q[94] * 1000,
        q[98] * 1000,
        errors,
        "httpx",
    )


def load(base: str, scenario: Scenario, seconds: float, workdir: Path) -> Result:
    if shutil.which("wrk"):
        return run_wrk(base, scenario, seconds, workdir)
    return asyncio.run(_httpx_load(base, scenario, seconds))


# ---- the benchmark --------------------------------------------------------------------------
def _login_tokens(base: str, seeded: Seeded, n: int) -> dict[int, str]:
    import httpx

    tokens = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(n):
            r = client.post(
                "/api/v1/auth/login", json={"email": seeded.emails[i], "password": PASSWORD}
            )
            r.raise_for_status()
            tokens[i] = r.json()["access_token"]
    return tokens


def _check(base: str, scenario: Scenario) -> None:
    import httpx

    path, token, body = scenario.requests[0]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body:
        headers["Content-Type"] = "application/json"
    r = httpx.request(scenario.method, base + path, headers=headers, content=body, timeout=30)
    if r.status_code >= 400:
        raise RuntimeError(f"{scenario.name}: {r.status_code} {r.text[:300]}")
    if scenario.method == "GET" and len(r.json()["items"]) == 0:
        raise RuntimeError(f"{scenario.name}: an empty page")


def scenarios(seeded: Seeded, tokens: dict[int, str]) -> list[Scenario]:
    rng = random.Random(SEED + 1)
    token_list = list(tokens.items())
    rating_requests: list[tuple[str, str | None, str | None]] = []
    while len(rating_requests) < 5_000:
        user_index, token = rng.choice(token_list)
        sid = rng.choice(seeded.public_ids)
        if seeded.owner_of[sid] == user_index:
            continue
        body = json.dumps({"score": rng.randint(1, 5)})
        rating_requests.append((f"/api/v1/styles/{sid}/rating", token, body))
    signed_in: list[tuple[str, str | None, str | None]] = [
        ("/api/v1/styles?sort=newest", token, None) for _, token in token_list[:50]
    ]
    return [
        Scenario("gallery sort=top_rated", "GET", [("/api/v1/styles?sort=top_rated", None, None)]),
        Scenario("gallery sort=newest", "GET", [("/api/v1/styles?sort=newest", None, None)]),
        Scenario(
            f"gallery q={SEARCH_WORD}", "GET", [(f"/api/v1/styles?q={SEARCH_WORD}", None, None)]
        ),
        Scenario("gallery newest, signed in", "GET", signed_in),
        Scenario(
            "comments (first page)",
            "GET",
            [(f"/api/v1/styles/{sid}/comments", None, None) for sid in seeded.hot_ids],
        ),
        Scenario("rating PUT", "PUT", rating_requests),
    ]


def _presign_cost() -> dict[str, float]:
    """Microseconds per presigned preview URL, boto3 S3 and the local signer."""
    from app.config import Settings
    from app.storage import S3Storage, make_storage

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        s3 = S3Storage(
            Settings(s3_endpoint="http://127.0.0.1:9", s3_access_key="k", s3_secret_key="s")
        )
        local = make_storage(Settings(data_dir=Path(tmp), storage_backend="local"))
        keys = [f"styles/{uuid.uuid4()}/v1/preview.webp" for _ in range(2_000)]
        for name, storage in (("s3", s3), ("local", local)):
            storage.presign_get(keys[0])
            start = time.perf_counter()
            for key in keys:
                storage.presign_get(key)
            out[name] = (time.perf_counter() - start) / len(keys) * 1e6
    return out


def _print_table(results: list[Result], notes: list[str]) -> None:
    columns = ("endpoint", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "CPU ms/req")
    widths = (28, 7, 7, 7, 7, 6, 10)
    print("| " + " | ".join(f"{c:<{w}}" for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in results:
        cpu = f"{r.cpu_ms:.2f}" if r.cpu_ms is not None else "-"
        cells = (
            f"{r.name:<28}",
            f"{r.rps:>7.0f}",
            f"{r.p50:>7.1f}",
            f"{r.p95:>7.1f}",
            f"{r.p99:>7.1f}",
            f"{r.errors:>6}",
            f"{cpu:>10}",
        )
        print("| " + " | ".join(cells) + " |")
    for note in notes:
        print(note)


def run() -> None:
    started = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cost = _presign_cost()
    print(
        f"presigning one preview URL: boto3 S3 {cost['s3']:.0f} us, local signer "
        f"{cost['local']:.0f} us",
        flush=True,
    )
    with fresh_database() as db_name, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **production_env(db_name, tmp)}
        for key in ("REDIS_URL", "S3_ENDPOINT", "CELERY_BROKER_URL"):
            env.pop(key, None)
        redis_used = _redis_ok()
        if redis_used:
            env["REDIS_URL"] = REDIS_URL
            env["REDIS_KEY_PREFIX"] = f"bench-{db_name}:"
        if STORAGE == "s3":
            env.update(
                S3_ENDPOINT="http://127.0.0.1:9",
                S3_ACCESS_KEY="bench",
                S3_SECRET_KEY="bench",
                S3_BUCKET="picfilter-bench",
                STORAGE_BACKEND="s3",
            )
        migrate(env)
        t = time.perf_counter()
        seeded = seed(db_name)
        print(
            f"seeded {N_USERS} users, {N_PUBLIC} public (+{N_HIDDEN} other) styles, "
            f"{N_RATINGS} ratings, {N_COMMENTS} comments in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        results: list[Result] = []
        with server(env, free_port()) as (base, pid):
            meter = CpuMeter(pid, db_name)
            tokens = _login_tokens(base, seeded, 200)
            workdir = Path(tmp)
            for scenario in scenarios(seeded, tokens):
                if ONLY and not any(word in scenario.name for word in ONLY):
                    continue
                _check(base, scenario)
                load(base, scenario, WARMUP_SECONDS, workdir)
                before = meter.snapshot()
                result = load(base, scenario, SECONDS, workdir)
                result.cpu_seconds = meter.used(before)
                results.append(result)
                print(
                    f"  {result.name}: {result.rps:.0f} req/s, p95 {result.p95:.1f} ms",
                    flush=True,
                )
            _verify_counters(db_name)
        if redis_used:
            _drop_redis_keys(env["REDIS_KEY_PREFIX"])
        tool = results[0].tool if results else "-"
        load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        notes = [
            f"load tool: {tool}, {CONNECTIONS} connections, {SECONDS:.0f} s per row (after a "
            f"{WARMUP_SECONDS:.0f} s warm-up); server: uvicorn, 2 workers, on this machine "
            f"({os.cpu_count()} CPUs) with PostgreSQL and the load tool; load average "
            f"{load_before:.1f} before, {load_after:.1f} after",
            "CPU ms/req: CPU time of the uvicorn processes and of the PostgreSQL backends of the "
            "bench database, per request (what a request costs whatever else runs)",
            f"storage: {STORAGE} presigned preview URLs; Redis: {'yes' if redis_used else 'no'}; "
            "rate limiting off; pages of 20",
            f"total {time.perf_counter() - started:.0f} s",
        ]
        _print_table(results, notes)


def _drop_redis_keys(prefix: str) -> None:
    """Remove what the bench server left in Redis (login sessions) under its own prefix."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def _verify_counters(db_name: str) -> None:
    """After the rating load, the counters still equal the rows (prints a line)."""
    import psycopg

    with psycopg.connect(_db_url(db_name)) as conn:
        bad = conn.execute(
            """
            SELECT count(*) FROM styles s
            LEFT JOIN (
                SELECT style_id, count(*) n, sum(score) total FROM ratings GROUP BY style_id
            ) r ON r.style_id = s.id
            WHERE s.rating_count <> coalesce(r.n, 0) OR s.rating_sum <> coalesce(r.total, 0)
            """
        ).fetchone()
    print(
        f"counters checked after the load: {bad[0] if bad else '?'} styles out of step", flush=True
    )
