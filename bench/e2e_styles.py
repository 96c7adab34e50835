"""Styles end to end through the HTTP API of the embedded default (``picfilter serve``).

``python -m bench e2e_styles`` (or ``make bench``):

1. starts ``picfilter serve`` as a subprocess on a free port with a fresh temporary
   ``DATA_DIR`` (SQLite, local storage, the filesystem broker and the embedded Celery worker:
   exactly what ``make run`` starts), and waits for ``/readyz``;
2. makes 3 before/after pairs of ~2 MP from the shared photos (the "after" is a shared creative
   LUT applied with the exact trilinear code), uploads them through the presigned-URL flow, and
   uploads the 12.5 MP ``ultrahdr_sky.jpg`` as it is;
3. times, from the request to the job's ``completed`` (polling ``GET /jobs/{id}`` every 0.1 s):
   learning a ``dlut`` style from the 3 pairs, applying it to the 12.5 MP photo (JPEG out), and
   exporting it as a 33^3 ``.cube`` and a level-8 HaldCLUT PNG (a dlut style is a 33^3 table,
   so a 65^3 request would be written at 33^3); one warm-up round, then ``BENCH_ROUNDS``
   (default 5) measured rounds; prints the median, min and max of each against its goal.

The goals (2 CPU cores): learn <= 15 s, apply <= 2 s, export <= 1 s. The job pickup latency of
the embedded broker (kombu's filesystem transport polls its folder) is part of every number.
Benchmarks measure; they never assert.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench import free_port, running_server, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
POLL_S = 0.1
LOOK = "classic_film.cube"
PAIR_PHOTOS = ("tahoe-gps.jpg", "UNIS_EV0.jpg", "StLouisArchMultExpEV+1.51.JPG")
BIG_PHOTO = "ultrahdr_sky.jpg"
PAIR_PIXELS = 2_000_000
GOALS = {"learn (dlut, 3 pairs of 2 MP)": 15.0, "apply (12.5 MP, jpeg)": 2.0}
GOALS.update({"export 33^3 .cube": 1.0, "export HaldCLUT level 8": 1.0})


@contextmanager
def _server(data_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "CELERY_BROKER_URL", "S3_BUCKET")
    }
    env.update(
        DATA_DIR=str(data_dir),
        PORT=str(port),
        ENVIRONMENT="development",
        JWT_SECRET_KEY="bench-" + secrets.token_hex(16),
        RATE_LIMIT_ENABLED="false",
        LOG_LEVEL="WARNING",
    )
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    with running_server(
        cmd, env, port, ready_path="/readyz", timeout=120, log_path=data_dir / "serve.log"
    ) as (base, _pid):
        yield base


def _jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _two_megapixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        scale = (PAIR_PIXELS / (rgb.width * rgb.height)) ** 0.5
        size = (round(rgb.width * scale), round(rgb.height * scale))
        return np.asarray(rgb.resize(size, Image.Resampling.LANCZOS))


class Client:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=60)
        self.headers: dict[str, str] = {}

    def call(self, method: str, path: str, expect: int, **kw: Any) -> Any:
        r = self.http.request(method, path, headers=self.headers, **kw)
        if r.status_code != expect:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def login(self) -> None:
        name = "bench" + secrets.token_hex(4)
        body = {"email": f"{name}@example.com", "username": name, "password": "bench-password"}
        self.call("POST", "/api/v1/auth/register", 201, json=body)
        tokens = self.call("POST", "/api/v1/auth/login", 200, json=body)
        self.headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    def upload(self, data: bytes, content_type: str, filename: str) -> str:
        up = self.call(
            "POST",
            "/api/v1/images/upload",
            201,
            json={"filename": filename, "content_type": content_type, "size": len(data)},
        )
        r = httpx.put(up["upload_url"], content=data, headers=up["headers"], timeout=60)
        if r.status_code not in (200, 204):
            raise RuntimeError(f"upload PUT: {r.status_code} {r.text[:300]}")
        image = self.call("POST", f"/api/v1/images/{up['image_id']}/confirm", 200)
        return str(image["id"])

    def timed_job(
        self, path: str, body: dict[str, Any], timeout: float = 300
    ) -> tuple[float, float, float]:
        """Seconds from the request to the job's ``completed``, and of those the seconds the job
        waited in the queue (created -> started) and ran in the worker (started -> finished)."""
        start = time.perf_counter()
        job = self.call("POST", path, 202, json=body)
        deadline = start + timeout
        while time.perf_counter() < deadline:
            status = self.call("GET", f"/api/v1/jobs/{job['id']}", 200)
            if status["status"] == "completed":
                total = time.perf_counter() - start
                created, started, finished = (
                    datetime.fromisoformat(status[k])
                    for k in ("created_at", "started_at", "finished_at")
                )
                return (
                    total,
                    (started - created).total_seconds(),
                    (finished - started).total_seconds(),
                )
            if status["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"{path}: job {status['status']}: {status['error']}")
            time.sleep(POLL_S)
        raise RuntimeError(f"{path}: job not finished after {timeout} s")


def run() -> None:
    from app.ml.cube_export import read_cube_file

    missing = [p for p in (SHARED / "luts" / LOOK, SHARED / "photos" / BIG_PHOTO) if not p.exists()]
    if missing:
        print(f"skipped: shared data not found ({missing[0]}); set PICFILTER_SHARED_DATA")
        return
    lut = read_cube_file(SHARED / "luts" / LOOK)
    befores = [_two_megapixels(SHARED / "photos" / name) for name in PAIR_PHOTOS]
    pairs_bytes = [(_jpeg(b), _jpeg(lut.apply(b))) for b in befores]
    big = (SHARED / "photos" / BIG_PHOTO).read_bytes()
    data_dir = Path(tempfile.mkdtemp(prefix="picfilter-bench-e2e-"))
    timings: dict[str, list[tuple[float, float, float]]] = {name: [] for name in GOALS}
    try:
        with _server(data_dir) as base:
            client = Client(base)
            client.login()
            pairs = []
            for i, (before, after) in enumerate(pairs_bytes):
                b = client.upload(before, "image/jpeg", f"before{i}.jpg")
                a = client.upload(after, "image/jpeg", f"after{i}.jpg")
                pairs.append({"before_image_id": b, "after_image_id": a})
            big_id = client.upload(big, "image/jpeg", BIG_PHOTO)
            style = client.call("POST", "/api/v1/styles", 201, json={"name": "Bench film"})
            sid = style["id"]
            steps: list[tuple[str, Callable[[], tuple[float, float, float]]]] = [
                (
                    "learn (dlut, 3 pairs of 2 MP)",
                    lambda: client.timed_job(
                        f"/api/v1/styles/{sid}/learn", {"model": "dlut", "pairs": pairs}
                    ),
                ),
                (
                    "apply (12.5 MP, jpeg)",
                    lambda: client.timed_job(f"/api/v1/styles/{sid}/apply", {"image_id": big_id}),
                ),
                (
                    "export 33^3 .cube",
                    lambda: client.timed_job(f"/api/v1/styles/{sid}/export", {"size": 33}),
                ),
                (
                    "export HaldCLUT level 8",
                    lambda: client.timed_job(
                        f"/api/v1/styles/{sid}/export", {"format": "haldclut", "level": 8}
                    ),
                ),
            ]
            for round_no in range(ROUNDS + 1):
                for name, step in steps:
                    seconds = step()
                    if round_no:  # round 0 warms the worker up
                        timings[name].append(seconds)
                print(f"round {round_no}{' (warm-up)' if not round_no else ''} done", flush=True)
            final = client.call("GET", f"/api/v1/styles/{sid}", 200)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    metrics = final.get("metrics") or {}
    print(
        f"\nembedded default (SQLite, local storage, filesystem broker), {os.cpu_count()} CPUs; "
        f"request -> completed job, polled every {POLL_S} s; {ROUNDS} rounds after a warm-up"
    )
    print(
        f"learned style: held-out mean dE00 {metrics.get('delta_e2000_mean', float('nan')):.2f}, "
        f"PSNR {metrics.get('psnr', float('nan')):.1f} dB"
    )
    print(
        f"{'step':<32}{'median s':>9}{'min s':>8}{'max s':>8}{'goal s':>8}"
        f"{'queued s':>10}{'running s':>11}  verdict"
    )
    for name, values in timings.items():
        totals = [v[0] for v in values]
        med = statistics.median(totals)
        queued = statistics.median(v[1] for v in values)
        running = statistics.median(v[2] for v in values)
        verdict = "ok" if med <= GOALS[name] else "SLOWER than goal"
        print(
            f"{name:<32}{med:>9.2f}{min(totals):>8.2f}{max(totals):>8.2f}{GOALS[name]:>8.1f}"
            f"{queued:>10.2f}{running:>11.2f}  {verdict}"
        )
    print(
        "queued: created -> picked up by the worker (the embedded broker's polling interval is "
        "part of it); running: in the worker (medians)"
    )


if __name__ == "__main__":
    run()
