"""Schemathesis over every operation of the OpenAPI document, against a real server.

``picfilter serve`` (uvicorn, the test stack's backends: SQLite + local storage, or PostgreSQL +
Redis + S3 through moto) with the session's real worker process; schemathesis registers and logs
in an account through the API (``tests/fuzz_hooks.py``) and checks every response: no 5xx, and the
status code, content type, headers and body are the ones the document gives for that operation,
and a method the document does not list answers 405 with an ``Allow`` of the documented ones.
The server's log must hold no traceback either.

``make test`` runs a short pass (``FUZZ_MAX_EXAMPLES`` 5, phases examples and fuzzing);
``make test-fuzz`` a longer one over every phase (examples, coverage, fuzzing, stateful) and
prints the figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import free_port, running_server

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
PHASES = os.environ.get("FUZZ_PHASES", "examples,fuzzing")
# `make test`: one fixed seed (the same cases every run); `make test-fuzz`: "random" (printed).
SEED = os.environ.get("FUZZ_SEED", "1")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,"
    # a method the document does not list for a path: 405 whose Allow lists the documented ones
    "unsupported_method,allow_header_conformance"
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
ROOT = Path(__file__).resolve().parent.parent


def figures(output: str) -> dict[str, int]:
    """Operations tested and cases generated / passed, from schemathesis' summary."""
    found: dict[str, int] = {}
    if m := re.search(r"Seed: (\d+)", output):
        found["seed"] = int(m[1])
    if m := re.search(r"Tested:\s+(\d+)", output):
        found["operations"] = int(m[1])
    if m := re.search(r"(\d+) generated, (\d+) passed", output):
        found["cases"], found["passed"] = int(m[1]), int(m[2])
    elif m := re.search(r"(\d+) generated, (\d+) found (\d+) unique failures", output):
        found["cases"], found["failures"] = int(m[1]), int(m[3])
    return found


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_schemathesis_finds_no_server_error_and_no_undocumented_behaviour(
    migrated: Any, worker: Any, tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail(
            f"schemathesis is not installed beside {sys.executable} (pip install -e '.[dev]')"
        )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PUBLIC_BASE_URL": base, "RATE_LIMIT_ENABLED": "false"}
    serve = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--no-migrate"]
    serve += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with running_server(serve, env, port, log_path=log, timeout=120) as (url, _pid):
        import httpx

        operations = sum(
            len(item) for item in httpx.get(f"{url}/openapi.json").json()["paths"].values()
        )
        cmd = [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", CHECKS]
        cmd += ["--max-examples", str(MAX_EXAMPLES), "--phases", PHASES, "--workers", "2"]
        cmd += ["--request-timeout", "60", "--no-color"]
        if SEED != "random":
            cmd += ["--seed", SEED]
        run = subprocess.run(
            cmd,
            env={
                **env,
                "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
                "FUZZ_BASE_URL": url,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            },
            cwd=tmp_path,  # schemathesis keeps its .schemathesis/ cache in the working directory
            capture_output=True,
            text=True,
            timeout=1700,
        )
    output = run.stdout + run.stderr
    found = figures(output)
    print(
        f"\nschemathesis ({PHASES}, max-examples {MAX_EXAMPLES}): "
        f"{found.get('operations')} / {operations} operations, {found.get('cases')} cases, "
        f"{found.get('failures', 0)} failures, seed {found.get('seed')}"
    )
    assert run.returncode == 0, output[-8000:]
    assert found.get("operations") == operations, output[-4000:]
    assert found.get("cases", 0) >= operations
    server_log = log.read_text(errors="replace")
    assert "Traceback" not in server_log, server_log[-4000:]
    assert " 500 " not in server_log, server_log[-4000:]
