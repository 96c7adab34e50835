"""Schemathesis hooks for ``make test-fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): every
generated request carries the access token of a real account, registered and logged in once
through the API under test (``FUZZ_BASE_URL``). A token refused later (expired, or its session
ended) is replaced by a fresh login."""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any

import httpx
import schemathesis

PASSWORD = "fuzzing " + secrets.token_hex(8)


@schemathesis.auth(refresh_interval=600, retry_on=[])
class FuzzAccount:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._email: str | None = None

    def _login(self, base: str) -> str:
        with httpx.Client(base_url=base, timeout=30) as http:
            if self._email is None:
                name = "fuzz" + secrets.token_hex(6)
                email = f"{name}@example.com"
                body = {"email": email, "username": name, "password": PASSWORD}
                r = http.post("/api/v1/auth/register", json=body)
                r.raise_for_status()
                self._email = email
            r = http.post("/api/v1/auth/login", json={"email": self._email, "password": PASSWORD})
            r.raise_for_status()
            return str(r.json()["access_token"])

    def get(self, case: Any, ctx: Any) -> str:
        with self._lock:
            return self._login(os.environ["FUZZ_BASE_URL"])

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
