"""The traffic of ``python -m bench load`` (run by locust, headless; not a benchmark itself).

Each simulated user is one of the prepared accounts, already signed in (its access token from
the preparation), and, per request,
picks by weight: browse the gallery (newest / top rated / most used, anonymous or signed in),
search or filter it by tag, read a style, read its comments, poll its last job, submit an apply
job (its own image, its own imported style), or log in again. The prepared data come from the
JSON file named by ``PICFILTER_LOAD_DATA``; the ids of submitted jobs are appended to the file
named by ``PICFILTER_LOAD_JOBS`` (one per line), so that the bench can wait for every one.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from locust import FastHttpUser, between, events, task

DATA: dict[str, Any] = json.loads(open(os.environ["PICFILTER_LOAD_DATA"]).read())  # noqa: SIM115
JOBS_FILE = os.environ["PICFILTER_LOAD_JOBS"]
SORTS = ("newest", "newest", "top_rated", "most_used")
_submitted: list[str] = []


@events.test_stop.add_listener
def _write_jobs(**_kwargs: Any) -> None:
    with open(JOBS_FILE, "a") as f:
        f.writelines(f"{job}\n" for job in _submitted)


class Visitor(FastHttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.account = random.choice(DATA["accounts"])
        self.token = self.account["token"]
        self.last_job: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @task(1)
    def login(self) -> None:
        body = {"email": self.account["email"], "password": self.account["password"]}
        with self.client.post(
            "/api/v1/auth/login", json=body, name="login", catch_response=True
        ) as r:
            if r.status_code == 200:
                self.token = r.json()["access_token"]
            else:
                r.failure(f"login {r.status_code}")

    @task(90)
    def gallery(self) -> None:
        sort = random.choice(SORTS)
        headers = self.auth if random.random() < 0.5 else {}
        self.client.get(f"/api/v1/styles?sort={sort}&limit=20", headers=headers, name="gallery")

    @task(20)
    def gallery_search(self) -> None:
        if random.random() < 0.5:
            path = f"/api/v1/styles?q={random.choice(DATA['words'])}&limit=20"
        else:
            path = f"/api/v1/styles?tag={random.choice(DATA['tags'])}&limit=20"
        self.client.get(path, name="gallery search/tag")

    @task(45)
    def read_style(self) -> None:
        self.client.get(f"/api/v1/styles/{random.choice(DATA['styles'])}", name="read style")

    @task(20)
    def comments(self) -> None:
        style = random.choice(DATA["hot_styles"])
        self.client.get(f"/api/v1/styles/{style}/comments?limit=20", name="style comments")

    @task(20)
    def poll(self) -> None:
        if self.last_job is None:
            self.client.get("/api/v1/jobs?limit=10", headers=self.auth, name="poll jobs")
            return
        with self.client.get(
            f"/api/v1/jobs/{self.last_job}", headers=self.auth, name="poll job", catch_response=True
        ) as r:
            if r.status_code == 200 and r.json()["status"] in ("failed", "cancelled"):
                r.failure(f"job {self.last_job} {r.json()['status']}: {r.json().get('error')}")

    @task(1)
    def submit_apply(self) -> None:
        body = {"image_id": random.choice(self.account["images"]), "format": "jpeg"}
        with self.client.post(
            f"/api/v1/styles/{self.account['style']}/apply",
            json=body,
            headers=self.auth,
            name="submit apply",
            catch_response=True,
        ) as r:
            if r.status_code == 202:
                self.last_job = r.json()["id"]
                _submitted.append(self.last_job)
            else:
                r.failure(f"apply {r.status_code}: {r.text[:200]}")
