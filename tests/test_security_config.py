"""Signing keys are never known values (issue 9, item 2).

``JWT_SECRET_KEY`` (and ``STORAGE_SIGNING_KEY`` when set) equal to the placeholder once published
in ``.env.example``, or shorter than 32 bytes, refuses to start whatever ``ENVIRONMENT`` says;
unset on the embedded stack, a random key is made in ``DATA_DIR/secret_key`` (mode 0600) and
kept; unset anywhere else, nothing starts. Unit tests of :class:`Settings`, then real processes:
``picfilter serve`` / ``worker`` / ``migrate`` and ``uvicorn --factory`` refusing, and two
starts of ``picfilter serve`` sharing one generated key with the worker beside the API.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import jwt
import pytest

from app.config import PLACEHOLDER_SECRET, Settings
from bench import free_port, running_server

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
GOOD = "k" * 40
MIN_SECRET_BYTES = 32  # HS256's digest size (app.config.MIN_SECRET_BYTES)
SECRET_KEY_FILE = "secret_key"
HOW_TO = "secrets.token_urlsafe"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Settings variable from the test run (conftest sets a JWT_SECRET_KEY); DATA_DIR in tmp."""
    for var in SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(data))
    return data


def make(**kwargs: object) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


# ---- refused values -------------------------------------------------------------------------
@pytest.mark.parametrize("environment", ["development", "test", "production"])
@pytest.mark.parametrize("field", ["jwt_secret_key", "storage_signing_key"])
def test_the_placeholder_is_refused_in_every_environment(
    clean_env: Path, environment: str, field: str
) -> None:
    others = {"jwt_secret_key": GOOD} if field == "storage_signing_key" else {}
    with pytest.raises(ValueError, match=rf"{field.upper()} is the placeholder.*{HOW_TO}"):
        make(environment=environment, **{field: PLACEHOLDER_SECRET}, **others)
    with pytest.raises(ValueError, match="placeholder"):
        make(environment=environment, **{field: f" {PLACEHOLDER_SECRET.upper()}\n"}, **others)


@pytest.mark.parametrize("field", ["jwt_secret_key", "storage_signing_key"])
def test_a_key_under_32_bytes_is_refused(clean_env: Path, field: str) -> None:
    others = {"jwt_secret_key": GOOD} if field == "storage_signing_key" else {}
    for short in ("k" * (MIN_SECRET_BYTES - 1), "é" * 15 + "x"):  # bytes, not characters
        with pytest.raises(ValueError, match=rf"{field.upper()} is 31 bytes long.*{HOW_TO}"):
            make(environment="development", **{field: short}, **others)
    for enough in ("k" * MIN_SECRET_BYTES, "é" * 16):
        settings = make(**{field: enough}, **others)
        assert getattr(settings, field) == enough
    assert not clean_env.exists(), "a key was given: no key file is made"


def test_refusals_do_not_print_the_other_secrets(clean_env: Path) -> None:
    with pytest.raises(ValueError, match="JWT_SECRET_KEY is 5 bytes long") as info:
        make(jwt_secret_key="short", s3_secret_key="s3-secret-that-must-not-leak")
    assert "s3-secret-that-must-not-leak" not in str(info.value)
    assert "short" not in str(info.value).replace("shorter", "")


def test_storage_urls_are_signed_with_the_jwt_key_unless_their_own_is_set(
    clean_env: Path,
) -> None:
    assert make(jwt_secret_key=GOOD).signing_key == GOOD.encode()
    own = "s" * 48
    assert make(jwt_secret_key=GOOD, storage_signing_key=own).signing_key == own.encode()


# ---- the generated key ----------------------------------------------------------------------
def test_the_embedded_default_makes_a_private_key_file_and_keeps_it(clean_env: Path) -> None:
    first = make()
    path = clean_env / SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.jwt_secret_key == path.read_text().strip()
    assert len(first.jwt_secret_key.encode()) >= MIN_SECRET_BYTES
    assert first.signing_key == first.jwt_secret_key.encode()
    assert make().jwt_secret_key == first.jwt_secret_key  # reused, not remade
    assert sorted(p.name for p in clean_env.iterdir()) == [SECRET_KEY_FILE]  # no temp file left
    other = make(data_dir=clean_env.parent / "other")
    assert other.jwt_secret_key != first.jwt_secret_key


@pytest.mark.parametrize(
    "stack",
    [
        {"database_url": "postgresql+asyncpg://picfilter@127.0.0.1:5432/picfilter"},
        {"redis_url": "redis://127.0.0.1:6379/0"},
        {"celery_broker_url": "amqp://guest@127.0.0.1//"},
        {"environment": "production"},
    ],
    ids=["postgresql", "redis", "amqp-broker", "production"],
)
def test_an_unset_key_off_the_embedded_stack_refuses(
    clean_env: Path, stack: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=rf"JWT_SECRET_KEY is not set.*{HOW_TO}"):
        make(**stack)
    assert not clean_env.exists(), "no key file off the embedded stack"


def test_a_key_file_others_may_read_is_refused(clean_env: Path) -> None:
    key = make().jwt_secret_key
    path = clean_env / SECRET_KEY_FILE
    path.chmod(0o644)
    with pytest.raises(ValueError, match=r"may be read by other users \(mode 0644\).*chmod 600"):
        make()
    path.chmod(0o600)
    assert make().jwt_secret_key == key


def test_a_key_file_that_is_a_link_short_or_empty_is_refused(clean_env: Path) -> None:
    clean_env.mkdir(parents=True)
    path = clean_env / SECRET_KEY_FILE
    target = clean_env / "elsewhere"
    target.write_text("x" * 64)
    target.chmod(0o600)
    path.symlink_to(target)
    with pytest.raises(ValueError, match="key file"):
        make()
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short\n")
    os.close(fd)
    with pytest.raises(ValueError, match=r"31 bytes|5 bytes long"):
        make()


def _load(path: str) -> str:
    from app.config import load_or_create_secret_key

    return load_or_create_secret_key(Path(path))


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    """The API and its worker start at once: every process must end with the same key."""
    path = tmp_path / "data" / SECRET_KEY_FILE
    with multiprocessing.get_context("fork").Pool(8) as pool:
        keys = pool.map(_load, [str(path)] * 32)
    assert len(set(keys)) == 1
    assert keys[0] == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pyjwt_has_nothing_to_warn_about(clean_env: Path) -> None:
    """The 32-byte minimum is PyJWT's own HS256 threshold: the generated key signs silently,
    and a key one byte shorter (which Settings refuses) is exactly what it warns about."""
    key = make().jwt_secret_key
    with warnings.catch_warnings():
        warnings.simplefilter("error", jwt.InsecureKeyLengthWarning)
        token = jwt.encode({"sub": "x"}, key, algorithm="HS256")
        assert jwt.decode(token, key, algorithms=["HS256"]) == {"sub": "x"}
        jwt.encode({"sub": "x"}, "k" * MIN_SECRET_BYTES, algorithm="HS256")
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        jwt.encode({"sub": "x"}, "k" * (MIN_SECRET_BYTES - 1), algorithm="HS256")


def test_forwarded_allow_ips_takes_addresses_and_networks_only(clean_env: Path) -> None:
    assert make(jwt_secret_key=GOOD).forwarded_allow_ips == "127.0.0.1,::1"
    value = make(jwt_secret_key=GOOD, forwarded_allow_ips=" 172.30.0.10, 10.0.0.0/8 ,::1")
    assert value.forwarded_allow_ips == "172.30.0.10,10.0.0.0/8,::1"
    assert make(jwt_secret_key=GOOD, forwarded_allow_ips="*").forwarded_allow_ips == "*"
    for bad in ("nginx", "172.30.0.10,*", "10.0.0.1/8", ""):
        with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
            make(jwt_secret_key=GOOD, forwarded_allow_ips=bad)


# ---- real processes -------------------------------------------------------------------------
def process_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
    env.update(DATA_DIR=str(data_dir), BCRYPT_ROUNDS="4", LOG_LEVEL="WARNING", **extra)
    return env


PICFILTER = [sys.executable, "-m", "app.cli"]
REFUSING_COMMANDS = {
    "serve": [*PICFILTER, "serve", "--host", "127.0.0.1"],
    "worker": [*PICFILTER, "worker", "--pool", "solo"],
    "migrate": [*PICFILTER, "migrate"],
    "uvicorn-factory": [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
    ],  # fmt: skip
}


@pytest.mark.parametrize(
    ("command", "env", "reason"),
    [
        ("serve", {"JWT_SECRET_KEY": PLACEHOLDER_SECRET}, "JWT_SECRET_KEY is the placeholder"),
        ("serve", {"JWT_SECRET_KEY": "x" * 31}, "JWT_SECRET_KEY is 31 bytes long"),
        ("serve", {"STORAGE_SIGNING_KEY": "x" * 20}, "STORAGE_SIGNING_KEY is 20 bytes long"),
        (
            "serve",
            {"DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/none"},
            "JWT_SECRET_KEY is not set",
        ),
        (
            "serve",
            {"JWT_SECRET_KEY": PLACEHOLDER_SECRET, "ENVIRONMENT": "development"},
            "placeholder",
        ),
        ("worker", {"JWT_SECRET_KEY": PLACEHOLDER_SECRET}, "placeholder"),
        ("migrate", {"JWT_SECRET_KEY": "x" * 31}, "31 bytes long"),
        ("uvicorn-factory", {"JWT_SECRET_KEY": PLACEHOLDER_SECRET}, "placeholder"),
    ],
    ids=[
        "serve-placeholder",
        "serve-short",
        "serve-short-storage-key",
        "serve-postgres-unset",
        "serve-placeholder-development",
        "worker-placeholder",
        "migrate-short",
        "uvicorn-placeholder",
    ],
)
def test_processes_refuse_to_start_with_a_known_or_short_key(
    tmp_path: Path, command: str, env: dict[str, str], reason: str
) -> None:
    port = free_port()
    cmd = [*REFUSING_COMMANDS[command]]
    if command in ("serve", "uvicorn-factory"):
        cmd += ["--port", str(port)]
    result = subprocess.run(
        cmd,
        cwd=ROOT,
        env=process_env(tmp_path / "data", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert reason in output, output
    assert HOW_TO in output, output
    assert "Application startup complete" not in output
    if command != "uvicorn-factory":  # ours: one clear line, not a traceback
        assert "picfilter: refusing to start" in result.stderr
        assert "Traceback" not in output, output
    assert not (tmp_path / "data" / "picfilter.db").exists(), "refused before migrating"
    assert not (tmp_path / "data" / SECRET_KEY_FILE).exists()


CUBE = "LUT_3D_SIZE 2\n" + "".join(
    f"{r} {g} {b}\n" for b in (0.0, 1.0) for g in (0.0, 1.0) for r in (0.0, 1.0)
)


def _wait_job(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_generated_key_is_shared_with_the_worker_and_kept_across_starts(
    tmp_path: Path,
) -> None:
    """``picfilter serve`` twice on one DATA_DIR without JWT_SECRET_KEY: the first start makes
    ``secret_key`` (0600); the worker beside the API signs a download URL the API accepts (one
    key in both processes); after a restart the first start's signed download URL still
    verifies, and its access token's signature too (its in-process session is over)."""
    data = tmp_path / "data"
    port = free_port()
    env = process_env(data, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    serve = [*PICFILTER, "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with running_server(serve, env, port, log_path=log, timeout=120) as (base, _pid):
        path = data / SECRET_KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text()
        with httpx.Client(base_url=base, timeout=30) as client:
            account = {
                "email": "key@example.com",
                "username": "keyuser",
                "password": "Lisbon tram 28",
            }
            assert client.post("/api/v1/auth/register", json=account).status_code == 201
            login = {"email": account["email"], "password": account["password"]}
            token = client.post("/api/v1/auth/login", json=login).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            style = client.post(
                "/api/v1/styles/import",
                files={"file": ("identity.cube", CUBE.encode(), "application/octet-stream")},
                data={"name": "Identity"},
            )
            assert style.status_code == 201, style.text
            job = client.post(f"/api/v1/styles/{style.json()['id']}/export", json={"size": 17})
            assert job.status_code == 202, job.text
            done = _wait_job(client, job.json()["id"])
            assert done["status"] == "completed", (done, log.read_text()[-3000:])
            url = done["result"]["download_url"]  # type: ignore[index]
            download = httpx.get(url, timeout=30)  # signed by the worker, checked by the API
            assert download.status_code == 200, download.text
            # an imported 2^3 table is exported at its own size (no claimed precision)
            assert b"LUT_3D_SIZE 2\n" in download.content, download.content[:200]
            assert done["result"]["requested_size"] == 17  # type: ignore[index]
    assert path.read_text() == key
    with running_server([*serve, "--no-worker"], env, port, log_path=log, timeout=120) as (
        base,
        _pid,
    ):
        # the download URL the first start's worker signed still verifies: same key
        again = httpx.get(url, timeout=30)
        assert again.status_code == 200, again.text
        assert again.content == download.content
        # the old access token's signature verifies too (a token signed with another key is
        # `invalid_token`); its session lived in the first process's in-memory store (the
        # embedded default keeps sessions in-process), so it is over: sign in again
        me = httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401, me.text
        assert me.json()["error"]["code"] == "session_revoked", me.text
        fresh = httpx.post(f"{base}/api/v1/auth/login", json=login, timeout=30)
        assert fresh.status_code == 200, fresh.text
        me = httpx.get(
            f"{base}/api/v1/auth/me",
            headers={"Authorization": f"Bearer {fresh.json()['access_token']}"},
        )
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "keyuser"
    assert path.read_text() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
