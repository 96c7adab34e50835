"""Learn options are checked when the job is submitted (issue 9 item 7), NaN / Infinity never get
into a JSON body, a learn job that fails on bad input fails at once, and ``auto`` is the default
model (issue 10 item 5)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.conftest import Account, WorkerProcess, wait_for_job
from tests.helpers import create_style, synthetic_photo, upload_image


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return dict(body["error"])


async def _pair(client: Any, user: Account, seed: int = 1) -> dict[str, str]:
    before = await upload_image(client, user, synthetic_photo(96, 64, seed=seed))
    img = synthetic_photo(96, 64, seed=seed).astype(float) / 255.0
    after = await upload_image(client, user, (img**0.7 * 255 + 0.5).astype("uint8"))
    return {"before_image_id": before["id"], "after_image_id": after["id"]}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model": "dlut", "options": {"lut_size": 2.5}}, "options.lut_size", "integer"),
        ({"model": "dlut", "options": {"lut_size": "33"}}, "options.lut_size", "integer"),
        ({"model": "dlut", "options": {"lut_size": 1000}}, "options.lut_size", "less than"),
        ({"model": "dlut", "options": {"lut_sise": 33}}, "options.lut_sise", "not an option"),
        ({"model": "dlut", "options": {"hidden": 16}}, "options.hidden", "not an option"),
        ({"model": "nilut", "options": {"loss": "huber"}}, "options.loss", "'l1' or 'mse'"),
        ({"options": {"lut_size": 33}}, "options.lut_size", "not an option"),  # auto
        ({"options": {"candidates": ["magic"]}}, "options.candidates.0", "'dlut'"),
        ({"model": "dlut", "options": {"working_size": 100_000}}, "options.working_size", "less"),
        ({"model": "dlut", "options": {"max_pixels": 1e9}}, "options.max_pixels", "integer"),
        ({"model": "dlut", "options": {"time_budget_s": -1}}, "options.time_budget_s", "greater"),
    ],
)
async def test_bad_options_are_a_422_naming_the_option(
    client, user, body: dict[str, Any], field: str, words: str
) -> None:
    style = await create_style(client, user)
    pair = await _pair(client, user)
    r = await client.post(
        f"/api/v1/styles/{style['id']}/learn",
        json={"pairs": [pair], **body},
        headers=user.headers,
    )
    err = _error(r, 422, "invalid_option")
    assert err["details"]["field"] == field
    assert field in err["message"]
    assert words in err["message"], err
    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    assert r.json()["status"] == "draft"  # nothing was queued


async def test_references_only_options_are_the_transfer_options(client, user) -> None:
    style = await create_style(client, user)
    ref = await upload_image(client, user, synthetic_photo(96, 64, seed=3))
    url = f"/api/v1/styles/{style['id']}/learn"
    body = {"model": "dlut", "reference_image_ids": [ref["id"]], "options": {"coarse_size": 9}}
    err = _error(await client.post(url, json=body, headers=user.headers), 422, "invalid_option")
    assert err["details"]["field"] == "options.coarse_size"
    assert "transfer" in err["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_in_a_json_body_are_a_422(client, user, literal: str) -> None:
    style = await create_style(client, user)
    pair = await _pair(client, user)
    url = f"/api/v1/styles/{style['id']}/learn"
    body = {"model": "dlut", "pairs": [pair], "options": {"smoothness": "<N>"}}
    raw = json.dumps(body).replace('"<N>"', literal)
    for content_type in ("application/json", "application/json; charset=utf-8"):
        r = await client.post(
            url, content=raw, headers={**user.headers, "Content-Type": content_type}
        )
        err = _error(r, 422, "validation_error")
        assert literal in err["message"]
        assert r.headers.get("x-request-id")
    # everywhere, not only in learn options: a float field of another route
    r = await client.post(
        f"/api/v1/styles/{style['id']}/apply",
        content=json.dumps({"image_id": pair["before_image_id"], "strength": "<N>"}).replace(
            '"<N>"', literal
        ),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    _error(r, 422, "validation_error")
    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    assert r.json()["status"] == "draft"
    # the same letters inside a string are just text
    r = await client.patch(
        f"/api/v1/styles/{style['id']}",
        content='{"description": "NaN and -Infinity"}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "NaN and -Infinity"


async def test_auto_is_the_default_model_and_learns(
    client, user, live_worker: WorkerProcess
) -> None:
    style = await create_style(client, user)
    pairs = [await _pair(client, user, seed) for seed in (1, 2)]
    r = await client.post(
        f"/api/v1/styles/{style['id']}/learn",
        json={"pairs": pairs, "options": {"time_budget_s": 15}},
        headers=user.headers,
    )
    assert r.status_code == 202, r.text
    done = await wait_for_job(client, user, r.json()["id"], timeout=150, worker=live_worker)
    assert done["status"] == "completed", done
    assert done["attempts"] == 1
    r = await client.get(f"/api/v1/styles/{style['id']}", headers=user.headers)
    learned = r.json()
    metrics = learned["metrics"]
    assert learned["status"] == "ready"
    assert metrics["auto"]["chosen"] == learned["model"], metrics["auto"]
    assert learned["model"] in ("dlut", "nilut", "adaptive_3dlut")
    assert metrics["holdout"]["n_photos"] == 2
    assert metrics["holdout"]["delta_e2000_mean"] <= metrics["identity_holdout"]["delta_e2000_mean"]
    assert "fit" in metrics


async def test_a_learn_job_with_bad_options_fails_once_without_retries(
    client, user, live_worker: WorkerProcess
) -> None:
    """A job whose options the API never checked (queued by an older server): the worker refuses
    it at once, with a readable error, instead of retrying it four times."""
    from app.models import JobType, Style, StyleStatus
    from app.services import job_service
    from app.workers import context

    style = await create_style(client, user)
    pair = await _pair(client, user)
    style_id = uuid.UUID(style["id"])

    def queue_job() -> uuid.UUID:
        with context.db().session() as s:
            row = s.get(Style, style_id)
            assert row is not None
            row.status, row.model_version = StyleStatus.training, 1
            job = job_service.create_job(
                s,
                uuid.UUID(user.id),
                JobType.learn_style,
                params={
                    "style_id": str(style_id),
                    "model_version": 1,
                    "model": "dlut",
                    "pairs": [{"before": pair["before_image_id"], "after": pair["after_image_id"]}],
                    "references": [],
                    "options": {"lut_size": 2.5},
                },
                style_id=style_id,
            )
            return job.id

    job_id = await asyncio.to_thread(queue_job)
    done = await wait_for_job(client, user, str(job_id), timeout=120, worker=live_worker)
    assert done["status"] == "failed", done
    assert done["attempts"] == 1, done
    assert "lut_size" in done["error"]
    assert "retrying" not in done["error"]
    r = await client.get(f"/api/v1/styles/{style_id}", headers=user.headers)
    assert r.json()["status"] == "failed"
    assert "lut_size" in r.json()["error"]
