"""A worker SIGKILLed in the middle of a learn: the job is re-run, once, within the window.

Real processes end to end (the private stack of :mod:`tests.faults`: PostgreSQL, Redis as the
broker, S3, the API under uvicorn, Celery workers): the first worker is killed while it learns;
a second one, started at once with the beat scheduler, must find the job's heartbeat stale
(``JOB_STUCK_AFTER_SECONDS``, short here), re-queue it and run it to the end (the broker's own
re-delivery waits for ``CELERY_VISIBILITY_TIMEOUT``, an hour: only the sweep can bring it back
in time). The job must run exactly once more, write its model once and leave the style
``ready``; a duplicate delivery afterwards (what the broker does an hour later with the killed
worker's message) must change nothing.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import httpx
import numpy as np

from tests.faults import FaultStack, register, upload
from tests.helpers import encode, synthetic_photo

HEARTBEAT, STUCK_AFTER, SWEEP_EVERY = 1, 4, 1
WORKER_ENV = {
    "JOB_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "JOB_STUCK_AFTER_SECONDS": str(STUCK_AFTER),
    "JOB_SWEEP_INTERVAL_SECONDS": str(SWEEP_EVERY),
    "CELERY_VISIBILITY_TIMEOUT": "3600",
}
# A learn that runs for its whole (short) time budget: time to kill it while it learns.
SLOW = {
    "lut_size": 65,
    "coarse_size": 0,
    "tol": 0.0,
    "max_iters": 1_000_000,
    "clip_passes": 0,
    "time_budget_s": 6,
}


def _pair(client: httpx.Client, user: Any, seed: int) -> dict[str, str]:
    before = synthetic_photo(240, 160, seed=seed)
    after = (255 * (before / 255.0) ** 0.7 * np.array([1.0, 0.93, 0.85]) + 0.5).astype(np.uint8)
    ids = []
    for image in (before, after):
        image_id = upload(client, user, encode(image))
        r = client.post(f"/api/v1/images/{image_id}/confirm", headers=user.headers)
        assert r.status_code == 200, r.text
        ids.append(image_id)
    return {"before_image_id": ids[0], "after_image_id": ids[1]}


def _style_keys(stack: FaultStack, style_id: str) -> list[str]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3.url,
        aws_access_key_id=stack.env["S3_ACCESS_KEY"],
        aws_secret_access_key=stack.env["S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    out = s3.list_objects_v2(Bucket=stack.env["S3_BUCKET"], Prefix=f"styles/{style_id}/")
    return sorted(o["Key"] for o in out.get("Contents", []))


def test_sigkilled_learn_is_rerun_once_within_the_window(stack: FaultStack) -> None:
    client = httpx.Client(base_url=stack.api_url, timeout=30)
    user = register(client)
    first = stack.start_worker(**WORKER_ENV)
    pairs = [_pair(client, user, seed) for seed in (1, 2)]
    r = client.post("/api/v1/styles", json={"name": "Crash"}, headers=user.headers)
    assert r.status_code == 201, r.text
    style_id = r.json()["id"]
    r = client.post(
        f"/api/v1/styles/{style_id}/learn",
        json={"model": "dlut", "pairs": pairs, "options": SLOW},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    deadline = time.monotonic() + 120
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:  # kill it once it is learning
        job = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
        if job["status"] == "processing" and job["progress"] >= 5:
            break
        time.sleep(0.1)
    assert job["status"] == "processing", (job, first.log_text()[-3000:])
    time.sleep(1.0)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=30)
    killed_at = time.monotonic()
    job = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
    assert job["status"] == "processing"
    assert job["attempts"] == 1
    style = client.get(f"/api/v1/styles/{style_id}", headers=user.headers).json()
    assert style["status"] == "training"

    second = stack.start_worker(beat=True, **WORKER_ENV)
    restarted_after = time.monotonic() - killed_at
    picked_up = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
        if picked_up is None and job["attempts"] >= 2:
            picked_up = time.monotonic() - killed_at
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.2)
    done_after = time.monotonic() - killed_at
    log = second.log_text()
    print(
        f"\nworker SIGKILLed mid-learn: new worker ready {restarted_after:.1f} s after the kill, "
        f"job re-run (attempt 2) {picked_up} s after, completed {done_after:.1f} s after "
        f"(heartbeat {HEARTBEAT} s, stale after {STUCK_AFTER} s, sweep every {SWEEP_EVERY} s)"
    )
    assert job["status"] == "completed", (job, log[-4000:])
    assert job["attempts"] == 2, job  # one re-run, not one per delivery
    assert "swept stuck jobs" in log
    # re-queued by the sweep within the window: worker start + stale age + a sweep period or two
    assert picked_up is not None
    assert picked_up <= restarted_after + STUCK_AFTER + 3 * SWEEP_EVERY + 5, picked_up

    style = client.get(f"/api/v1/styles/{style_id}", headers=user.headers).json()
    assert style["status"] == "ready", style
    keys = _style_keys(stack, style_id)
    # written once: one table, one model, one (content-addressed) preview
    assert len(keys) == 3, keys
    assert keys[:2] == [f"styles/{style_id}/v1/lut.cube", f"styles/{style_id}/v1/model.pt"], keys
    assert re.fullmatch(rf"styles/{style_id}/v1/preview-[0-9a-f]{{32}}\.webp", keys[2]), keys

    # the killed worker's message comes back after the visibility timeout: a duplicate that
    # must change nothing (the job is finished). Sent here as the broker would.
    _send_again(stack, job_id)
    deadline = time.monotonic() + 60
    while f"job {job_id}: nothing to do" not in second.log_text():
        assert time.monotonic() < deadline, second.log_text()[-3000:]
        time.sleep(0.2)
    later = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
    assert later["attempts"] == 2, later
    assert later["status"] == "completed"
    assert later["result"] == job["result"]
    assert _style_keys(stack, style_id) == keys
    second.proc.send_signal(signal.SIGTERM)
    second.proc.wait(timeout=60)
    client.close()


def _send_again(stack: FaultStack, job_id: str) -> None:
    """Send the learn task of ``job_id`` once more through the stack's broker."""
    from app.config import Settings
    from app.workers.celery_app import make_celery

    env = {k.lower(): v for k, v in stack.env.items() if k.lower() in Settings.model_fields}
    settings = Settings(**env, _env_file=None)  # type: ignore[call-arg]
    app = make_celery(settings)
    app.send_task("picfilter.learn_style", args=[job_id], queue="ml")
    app.close()
