"""Style jobs under concurrency and failure, end to end with the real worker process.

Re-learning while applies run, re-learning while training, cancelling, deleting a style while
its jobs run, a worker killed mid-learn, a learn whose images vanished, and the out-of-memory
fallback of learning.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
from sqlalchemy import update

from app.ml.metrics import delta_e2000
from tests.conftest import Account, WorkerProcess, wait_for_job
from tests.helpers import (
    create_style,
    decode,
    encode,
    fetch_url,
    photo,
    require_shared,
    shared_lut,
    stored_keys,
    style_objects,
    upload_image,
)
from tests.selftest_job import submit_selftest

LOOK_A = "classic_film.cube"
LOOK_B = "cold_shadows.cube"


async def _pairs(client: Any, user: Account, look: str, width: int = 320) -> list[dict[str, str]]:
    lut = shared_lut(look)
    pairs = []
    for name in ("tahoe-gps.jpg", "coffee.png"):
        before = photo(name, width)
        b = await upload_image(client, user, encode(before), "image/png")
        a = await upload_image(client, user, encode(lut.apply(before)), "image/png")
        pairs.append({"before_image_id": b["id"], "after_image_id": a["id"]})
    return pairs


async def _learn(
    client: Any, user: Account, style_id: str, pairs: list[dict[str, str]], **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        f"/api/v1/styles/{style_id}/learn",
        json={"model": "dlut", "pairs": pairs, **extra},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    return dict(r.json())


async def _style(client: Any, user: Account, style_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/styles/{style_id}", headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _drain(client: Any, user: Account, worker: WorkerProcess) -> None:
    """Wait until the (solo) worker has finished whatever it was running: a self-test job sent
    now completes only after it."""
    job = await submit_selftest(user, steps=0)
    done = await wait_for_job(client, user, job["id"], timeout=120, worker=worker)
    assert done["status"] == "completed"


# A learn that takes its whole (short) time budget: time to act while it runs.
SLOW = {
    "lut_size": 65,
    "coarse_size": 0,
    "tol": 0.0,
    "max_iters": 1_000_000,
    "clip_passes": 0,
    "time_budget_s": 5,
}


async def test_relearn_while_applying_uses_old_or_new_model(
    client, user, live_worker, settings
) -> None:
    require_shared()
    style = await create_style(client, user, name="Swap")
    sid = style["id"]
    first = await _learn(client, user, sid, await _pairs(client, user, LOOK_A))
    done = await wait_for_job(client, user, first["id"], timeout=150, worker=live_worker)
    assert done["status"] == "completed", done
    v1_keys = set(style_objects(settings, sid))
    assert v1_keys

    base = photo("rocket.jpg", 240)
    image = await upload_image(client, user, encode(base), "image/png")
    pairs_b = await _pairs(client, user, LOOK_B)

    # re-learn, and while it is queued/running, keep applying
    second = await _learn(client, user, sid, pairs_b)
    r = await client.post(
        f"/api/v1/styles/{sid}/learn", json={"pairs": pairs_b}, headers=user.headers
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "style_training"
    applies = []
    for _ in range(4):
        r = await client.post(
            f"/api/v1/styles/{sid}/apply",
            json={"image_id": image["id"], "format": "png"},
            headers=user.headers,
        )
        assert r.status_code == 202, r.text  # a training style still has its old model
        applies.append(r.json())
    done = await wait_for_job(client, user, second["id"], timeout=150, worker=live_worker)
    assert done["status"] == "completed", done
    r = await client.post(
        f"/api/v1/styles/{sid}/apply",
        json={"image_id": image["id"], "format": "png"},
        headers=user.headers,
    )
    applies.append(r.json())

    truth_a = shared_lut(LOOK_A).apply(base)
    truth_b = shared_lut(LOOK_B).apply(base)
    assert delta_e2000(truth_a, truth_b)["mean"] > 3  # the looks are far apart
    seen = []
    for job in applies:
        finished = await wait_for_job(client, user, job["id"], timeout=60, worker=live_worker)
        assert finished["status"] == "completed", finished
        got = decode((await fetch_url(client, finished["result"]["result_url"])).content)
        de_a = delta_e2000(got, truth_a)["mean"]
        de_b = delta_e2000(got, truth_b)["mean"]
        assert min(de_a, de_b) < 1.5, (de_a, de_b)  # one model or the other, never a mix
        seen.append("a" if de_a < de_b else "b")
    assert seen[-1] == "b"
    style = await _style(client, user, sid)
    assert style["status"] == "ready"
    assert style["apply_count"] == 5
    # the old version's objects are gone, the new ones are there
    keys = set(style_objects(settings, sid))
    assert keys
    assert not (keys & v1_keys)


async def test_cancelled_learn_puts_the_style_back(client, user, live_worker) -> None:
    require_shared()
    pairs = await _pairs(client, user, LOOK_A, width=200)
    # a first learn that is cancelled: the draft style becomes `failed`, never stays `training`
    style = await create_style(client, user)
    sid = style["id"]
    job = await _learn(client, user, sid, pairs, options=SLOW)
    await wait_for_job(client, user, job["id"], until=("processing",), worker=live_worker)
    r = await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    await _drain(client, user, live_worker)
    style = await _style(client, user, sid)
    assert style["status"] == "failed", style
    assert "cancel" in style["error"]

    # learn it for real, then cancel a re-learn while it is still queued: back to `ready`
    done = await wait_for_job(
        client, user, (await _learn(client, user, sid, pairs))["id"], timeout=150
    )
    assert done["status"] == "completed", done
    ready = await _style(client, user, sid)
    assert ready["status"] == "ready"
    blocker = await submit_selftest(user, steps=20, sleep=0.1)
    again = await _learn(client, user, sid, pairs)
    r = await client.post(f"/api/v1/jobs/{again['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    style = await _style(client, user, sid)
    assert style["status"] == "ready", style
    assert style["metrics"] == ready["metrics"]
    # and it can be re-learned at once
    third = await _learn(client, user, sid, pairs)
    await wait_for_job(client, user, blocker["id"], timeout=60)
    done = await wait_for_job(client, user, third["id"], timeout=150, worker=live_worker)
    assert done["status"] == "completed", done


async def test_failed_learn_keeps_the_previous_model(client, user, live_worker) -> None:
    require_shared()
    pairs = await _pairs(client, user, LOOK_A, width=200)
    style = await create_style(client, user)
    sid = style["id"]
    done = await wait_for_job(
        client, user, (await _learn(client, user, sid, pairs))["id"], timeout=150
    )
    assert done["status"] == "completed", done
    ready = await _style(client, user, sid)
    # the after image of the second pair disappears before the worker gets to it
    blocker = await submit_selftest(user, steps=10, sleep=0.1)
    job = await _learn(client, user, sid, pairs)
    r = await client.delete(f"/api/v1/images/{pairs[1]['after_image_id']}", headers=user.headers)
    assert r.status_code == 204, r.text
    await wait_for_job(client, user, blocker["id"], timeout=60)
    failed = await wait_for_job(client, user, job["id"], timeout=60, worker=live_worker)
    assert failed["status"] == "failed", failed
    assert "pairs[1].after_image_id" in failed["error"]
    assert failed["attempts"] == 1  # a permanent error is not retried
    style = await _style(client, user, sid)
    assert style["status"] == "ready"
    assert style["metrics"] == ready["metrics"]
    assert "pairs[1].after_image_id" in style["error"]


async def test_delete_style_during_jobs(client, user, live_worker, settings) -> None:
    require_shared()
    pairs = await _pairs(client, user, LOOK_A, width=200)
    style = await create_style(client, user)
    sid = style["id"]
    done = await wait_for_job(
        client, user, (await _learn(client, user, sid, pairs))["id"], timeout=150
    )
    assert done["status"] == "completed", done
    image = await upload_image(client, user, encode(photo("rocket.jpg", 200)), "image/png")
    # a slow re-learn running, an apply and an export queued behind it
    learn = await _learn(client, user, sid, pairs, options=SLOW)
    await wait_for_job(client, user, learn["id"], until=("processing",), worker=live_worker)
    apply = (
        await client.post(
            f"/api/v1/styles/{sid}/apply", json={"image_id": image["id"]}, headers=user.headers
        )
    ).json()
    export = (
        await client.post(f"/api/v1/styles/{sid}/export", json={}, headers=user.headers)
    ).json()
    r = await client.delete(f"/api/v1/styles/{sid}", headers=user.headers)
    assert r.status_code == 204, r.text
    for job in (learn, apply, export):
        finished = await wait_for_job(client, user, job["id"], timeout=30, worker=live_worker)
        assert finished["status"] == "failed", finished
        assert finished["error"] == "style deleted"
    await _drain(client, user, live_worker)
    assert style_objects(settings, sid) == []
    for job in (apply, export):
        assert stored_keys(settings, f"results/{user.id}/{job['id']}/") == []


async def test_delete_style_while_the_worker_writes(client, user, live_worker, settings) -> None:
    """Apply and export jobs racing a delete: whatever the interleaving, nothing is left."""
    require_shared()
    from tests.helpers import import_cube, source_path

    image = await upload_image(client, user, encode(photo("rocket.jpg", 400)), "image/png")
    for _ in range(3):
        r = await import_cube(client, user, source_path(LOOK_A))
        sid = r.json()["id"]
        jobs = []
        for body in ({"image_id": image["id"]}, {"image_id": image["id"], "format": "webp"}):
            r = await client.post(f"/api/v1/styles/{sid}/apply", json=body, headers=user.headers)
            jobs.append(r.json())
        r = await client.post(
            f"/api/v1/styles/{sid}/export", json={"size": 65}, headers=user.headers
        )
        jobs.append(r.json())
        await wait_for_job(client, user, jobs[0]["id"], until=("processing", "completed"))
        assert (
            await client.delete(f"/api/v1/styles/{sid}", headers=user.headers)
        ).status_code == 204
        await _drain(client, user, live_worker)
        assert style_objects(settings, sid) == []
        for job in jobs:
            finished = await wait_for_job(client, user, job["id"], timeout=30)
            if finished["status"] == "failed":
                assert finished["error"] == "style deleted"
                assert stored_keys(settings, f"results/{user.id}/{job['id']}/") == []
            else:
                assert finished["status"] == "completed", finished


async def test_worker_killed_during_learning(client, user, live_worker: WorkerProcess) -> None:
    require_shared()
    pairs = await _pairs(client, user, LOOK_A, width=200)
    style = await create_style(client, user)
    sid = style["id"]
    job = await _learn(client, user, sid, pairs, options=SLOW)
    await wait_for_job(client, user, job["id"], until=("processing",), worker=live_worker)
    live_worker.kill()
    r = await client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.json()["status"] == "processing"  # until the sweep re-queues it, or the user ...
    assert (await _style(client, user, sid))["status"] == "training"
    r = await client.post(
        f"/api/v1/styles/{sid}/learn", json={"pairs": pairs}, headers=user.headers
    )
    assert r.status_code == 409  # the job is not finished: no second learn beside it
    r = await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    # ... cancels it: the style can be learned again
    assert (await _style(client, user, sid))["status"] == "failed"
    again = await _learn(client, user, sid, pairs)
    live_worker.start()
    done = await wait_for_job(client, user, again["id"], timeout=150, worker=live_worker)
    assert done["status"] == "completed", done
    assert (await _style(client, user, sid))["status"] == "ready"
    r = await client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.json()["status"] == "cancelled"


async def test_out_of_memory_falls_back_to_a_smaller_working_size(
    client, user, settings, monkeypatch
) -> None:
    """The ML core's fitter registry is the injection point: the dlut fitter runs out of memory
    once. The learn job runs in this process (the worker process cannot see the replaced
    fitter), through the same ``run_job`` and handler as the Celery task, against the real
    database and storage; it must still complete, at half the working size."""
    require_shared()
    from app.db import SyncDatabase
    from app.ml import learn as ml_learn
    from app.models import Job, JobStatus, JobType, Style, StyleStatus
    from app.services import job_service, style_jobs
    from app.workers import ml_tasks

    pairs = await _pairs(client, user, LOOK_A, width=320)
    style = await create_style(client, user, name="Big GPU")
    real_fit = ml_learn.fitters["dlut"]
    shapes: list[tuple[int, ...]] = []

    def out_of_memory_once(prepared: list[Any], **kwargs: Any) -> Any:
        shapes.append(prepared[0].before.shape)
        if len(shapes) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(prepared, **kwargs)

    monkeypatch.setitem(ml_learn.fitters, "dlut", out_of_memory_once)
    db = SyncDatabase(settings)
    job_id = uuid.uuid4()
    style_id = uuid.UUID(style["id"])
    with db.session() as s:  # the rows the learn endpoint writes, without sending the task
        s.execute(
            update(Style)
            .where(Style.id == style_id)
            .values(status=StyleStatus.training, model_version=1)
        )
        s.add(
            Job(
                id=job_id,
                owner_id=uuid.UUID(user.id),
                type=JobType.learn_style,
                status=JobStatus.queued,
                progress=0,
                attempts=0,
                queue="ml",
                style_id=style_id,
                params={
                    "style_id": str(style_id),
                    "model_version": 1,
                    "model": "dlut",
                    "pairs": [
                        {"before": p["before_image_id"], "after": p["after_image_id"]}
                        for p in pairs
                    ],
                    "references": [],
                    "options": {"working_size": 320},
                },
            )
        )
    try:
        await anyio.to_thread.run_sync(
            job_service.run_job,
            ml_tasks.learn_style,
            db,
            settings,
            str(job_id),
            style_jobs.learn,
            style_jobs.on_learn_fail,
        )
    finally:
        db.dispose()
    r = await client.get(f"/api/v1/jobs/{job_id}", headers=user.headers)
    job = r.json()
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert len(shapes) == 4  # out of memory once, then the 2 holdout folds and the final fit
    assert all(max(shape[:2]) == 160 for shape in shapes[1:])  # half of the first working size
    assert max(shapes[0][:2]) == 320
    style = await _style(client, user, str(style_id))
    assert style["status"] == "ready", style
    assert style["metrics"]["oom_retries"] == 1
    assert style["metrics"]["working_size"] == 160
    assert style["metrics"]["device"] == str(ml_learn.select_device(settings.ml_device))
    assert style["metrics"]["fit"]["delta_e2000_mean"] < 2
