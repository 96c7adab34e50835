"""Client addresses behind the real nginx (issue 9, item 3): a forged X-Forwarded-For must not
dodge per-IP rate limits.

The API runs as in docker-compose.yml (``picfilter serve``, rate limits on, the api service's
``FORWARDED_ALLOW_IPS`` with nginx's compose address read as 127.0.0.1, where nginx is here),
behind nginx started from deploy/nginx.conf (its real TLS server blocks; only upstream, listen
addresses, certificates, pid and logs are rewritten for loopback). The client connects from
127.0.0.2 and 127.0.0.3, so its own address is never the trusted proxy's. Each login carries
another forged X-Forwarded-For; the login route's limit (RATE_LIMIT_AUTH) must still answer 429,
through nginx and when the client talks to uvicorn directly.

Issue 14, item 1 (nginx for real): through the same nginx, HTTPS answers (TLS 1.2+), plain
HTTP is redirected to HTTPS, a 51 MB body is refused with 413 in the API's error shape before it
reaches the API, job events (SSE) stream through unbuffered (the first event arrives while the
stream is still open; the same check against a copy of the file with ``proxy_buffering on``
shows the check can fail), each client keeps its own rate-limit bucket, and every security
header the :443 server block of deploy/nginx.conf adds is on proxied answers, API errors and
nginx's own 413.

nginx is required under CI=true (.ci/run installs it); elsewhere the test skips without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from limits import parse

from app.config import Settings
from bench import free_port, running_server
from tests.helpers import encode, synthetic_photo
from tests.test_deploy import COMPOSE_FILE, IN_CI, NGINX_CONF, _self_signed, service_env

pytestmark = pytest.mark.slow

SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
PROXY = "127.0.0.1"  # where nginx connects to the API from, here
CLIENT_VIA_NGINX = "127.0.0.2"
CLIENT_DIRECT = "127.0.0.3"
NGINX_PORTS = ("80", "443", "9443", "9444")  # every `listen` of deploy/nginx.conf
CLIENT_SSE = "127.0.0.5"  # registers and logs in once: its own rate-limit bucket
CLIENTS_BUCKETS = ("127.0.0.6", "127.0.0.7")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        if IN_CI:
            pytest.fail("CI=true: nginx must be installed (.ci/run installs nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light): no proxy to test")
    return found


def compose_forwarded_allow_ips() -> str:
    """The api service's FORWARDED_ALLOW_IPS, with nginx's fixed compose address -> PROXY."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    allowed = service_env(services["api"]).get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    nginx_addresses = {
        (cfg or {}).get("ipv4_address")
        for cfg in (services["nginx"].get("networks") or {}).values()
    } - {None}
    items = [item.strip() for item in allowed.split(",")]
    return ",".join(PROXY if item in nginx_addresses else item for item in items)


def loopback_nginx_conf(
    tmp: Path, api_port: int, ports: dict[str, int], minio_port: int = 9
) -> str:
    """deploy/nginx.conf for loopback: compose upstreams -> 127.0.0.1 (the API on ``api_port``,
    MinIO on ``minio_port``), listen ports -> free loopback ports, certificates, pid, logs and
    the CDN cache -> tmp. Everything else is the real file."""
    cert, key = _self_signed(tmp)
    conf = NGINX_CONF.read_text()
    conf = re.sub(r"^(\s*server\s+)api:\d+;", rf"\g<1>127.0.0.1:{api_port};", conf, flags=re.M)
    conf = re.sub(r"^(\s*server\s+)minio:\d+;", rf"\g<1>127.0.0.1:{minio_port};", conf, flags=re.M)
    for port, new in ports.items():
        conf, n = re.subn(rf"(\blisten\s+){port}\b", rf"\g<1>127.0.0.1:{new}", conf)
        assert n == 1, f"deploy/nginx.conf has no single `listen {port}`"
    conf = re.sub(r"(\bssl_certificate\s+)[^;]+;", rf"\g<1>{cert};", conf)
    conf = re.sub(r"(\bssl_certificate_key\s+)[^;]+;", rf"\g<1>{key};", conf)
    conf = re.sub(r"^(\s*pid\s+)[^;]+;", rf"\g<1>{tmp / 'nginx.pid'};", conf, flags=re.M)
    conf = re.sub(r"(\berror_log\s+)[^\s;]+", rf"\g<1>{tmp / 'error.log'}", conf)
    conf = re.sub(r"(\baccess_log\s+)(?!off\b)[^\s;]+", rf"\g<1>{tmp / 'access.log'}", conf)
    conf = re.sub(r"(\bproxy_cache_path\s+)[^\s;]+", rf"\g<1>{tmp / 'cdn-cache'}", conf)
    conf = re.sub(r"^worker_processes\s+\w+;", "worker_processes 1;", conf, flags=re.M)
    if os.geteuid() == 0:  # else nginx's workers run as `nobody`, who cannot enter tmp
        conf = "user root;\n" + conf
    return conf


@dataclass
class Stack:
    via_nginx: str  # https base URL of nginx's API server block
    direct: str  # http base URL of uvicorn itself
    plain_http: str  # http base URL of nginx's :80 server block
    auth_limit: int
    log: Path
    nginx_log: Path
    tmp: Path
    api_port: int


def start_nginx(nginx: str, conf: Path, prefix: Path, health_url: str) -> subprocess.Popen[bytes]:
    """nginx in the foreground from ``conf``, once ``health_url`` answers 200 through it."""
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited: {proc.communicate()[1].decode()}")
        try:
            if httpx.get(health_url, verify=False, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_nginx(proc)
            pytest.fail(f"nginx did not answer {health_url} in 30 s")
        time.sleep(0.2)


def stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextmanager
def nginx_running(nginx: str, conf_text: str, tmp: Path, https_port: int) -> Iterator[None]:
    conf = tmp / "nginx.conf"
    conf.write_text(conf_text)
    proc = start_nginx(nginx, conf, tmp, f"https://127.0.0.1:{https_port}/healthz")
    try:
        yield
    finally:
        stop_nginx(proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = nginx_binary()
    tmp = tmp_path_factory.mktemp("proxy")
    api_port = free_port()
    ports = {port: free_port() for port in NGINX_PORTS}
    via = f"https://127.0.0.1:{ports['443']}"
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
    env.update(
        DATA_DIR=str(tmp / "data"),
        JWT_SECRET_KEY="proxy-test-" + "k" * 40,
        RATE_LIMIT_ENABLED="true",
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
        FORWARDED_ALLOW_IPS=compose_forwarded_allow_ips(),
        # presigned (local storage) URLs point at nginx, as PUBLIC_BASE_URL does in compose
        PUBLIC_BASE_URL=via,
    )
    auth_limit = parse(Settings(_env_file=None).rate_limit_auth).amount  # type: ignore[call-arg]
    command = [*(sys.executable, "-m", "app.cli", "serve", "--no-worker")]
    command += ["--host", "127.0.0.1", "--port", str(api_port)]
    log = tmp / "api.log"
    with (
        running_server(command, env, api_port, log_path=log, timeout=120) as (direct, _pid),
        nginx_running(nginx, loopback_nginx_conf(tmp, api_port, ports), tmp, ports["443"]),
    ):
        yield Stack(
            via_nginx=via,
            direct=direct,
            plain_http=f"http://127.0.0.1:{ports['80']}",
            auth_limit=auth_limit,
            log=log,
            nginx_log=tmp / "access.log",
            tmp=tmp,
            api_port=api_port,
        )


def forged_logins(base: str, local_address: str, count: int) -> list[int]:
    """``count`` wrong-password logins from ``local_address``, each claiming another address."""
    transport = httpx.HTTPTransport(local_address=local_address, verify=False)
    codes = []
    with httpx.Client(base_url=base, transport=transport, timeout=30) as client:
        for i in range(count):
            r = client.post(
                "/api/v1/auth/login",
                json={"email": f"nobody{i}@example.com", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"203.0.113.{i + 1}, 198.51.100.{i + 1}"},
            )
            codes.append(r.status_code)
            if r.status_code == 429:
                body: Any = r.json()
                assert body["error"]["code"] == "rate_limited"
    return codes


def test_forged_forwarded_for_through_nginx_is_rate_limited(stack: Stack) -> None:
    codes = forged_logins(stack.via_nginx, CLIENT_VIA_NGINX, 25)
    limit = stack.auth_limit
    assert codes == [401] * limit + [429] * (25 - limit), (
        f"nginx -> API: {codes} (a 401 past the first {limit}: the API counted a client-written "
        "X-Forwarded-For as the client's address)"
    )


def test_forged_forwarded_for_straight_to_the_api_is_ignored(stack: Stack) -> None:
    """No proxy in between: the peer is not trusted, so its header is not read at all."""
    codes = forged_logins(stack.direct, CLIENT_DIRECT, 25)
    limit = stack.auth_limit
    assert codes == [401] * limit + [429] * (25 - limit), f"direct: {codes}"


# ---- issue 14, item 1: TLS, redirect, body limit, SSE, client address, headers --------------
def server_block(conf: str, listen: str) -> str:
    """The text of the ``server { ... }`` block of ``conf`` that has ``listen <listen>``."""
    at = re.search(rf"\blisten\s+{re.escape(listen)}\b", conf)
    assert at, f"no `listen {listen}` in deploy/nginx.conf"
    start = conf.rfind("server {", 0, at.start())
    depth = 0
    for i in range(start, len(conf)):
        if conf[i] == "{":
            depth += 1
        elif conf[i] == "}":
            depth -= 1
            if depth == 0:
                return conf[start : i + 1]
    raise AssertionError("unbalanced braces in deploy/nginx.conf")


def api_security_headers() -> dict[str, str]:
    """What ``add_header ... always`` in the :443 server block of deploy/nginx.conf adds."""
    block = server_block(NGINX_CONF.read_text(), "443")
    found = dict(re.findall(r'^\s*add_header\s+([\w-]+)\s+"([^"]*)"\s+always;', block, re.M))
    assert {"Strict-Transport-Security", "X-Content-Type-Options"} <= set(found), found
    return found


def assert_security_headers(response: httpx.Response) -> None:
    """nginx's headers are there once each (it hides the app's copies of the same names), and
    a response the app answered keeps the app's own Content-Security-Policy, once."""
    for name, value in api_security_headers().items():
        got = response.headers.get_list(name)
        assert got == [value], f"{response.request.url} {response.status_code}: {name} = {got}"
    if response.headers.get("x-request-id"):  # answered by the app, not by nginx itself
        csp = response.headers.get_list("content-security-policy")
        assert len(csp) == 1, csp
        assert "frame-ancestors 'none'" in csp[0], csp


def client_from(address: str, base: str, **kwargs: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address, verify=False)
    return httpx.Client(base_url=base, transport=transport, **kwargs)


def test_https_answers_with_tls_and_security_headers(stack: Stack) -> None:
    with httpx.Client(base_url=stack.via_nginx, verify=False, timeout=30) as client:
        r = client.get("/healthz")
        assert r.status_code == 200, r.text
        tls = r.extensions["network_stream"].get_extra_info("ssl_object")
        assert tls is not None
        assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()
        assert_security_headers(r)
        assert r.headers.get("server") in (None, "nginx"), r.headers.get("server")  # no version
        # an error the API answers carries them too (`always`), in the API's error shape
        missing = client.get(f"/api/v1/styles/{uuid.uuid4()}")
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["code"] == "style_not_found"
        assert_security_headers(missing)
        assert r.headers.get("x-request-id")


def test_plain_http_redirects_to_https(stack: Stack) -> None:
    with httpx.Client(base_url=stack.plain_http, timeout=30) as client:
        for path in ("/api/v1/styles?limit=1&sort=newest", "/", "/healthz"):
            r = client.get(path)
            assert r.status_code == 301, (path, r.status_code, r.text[:200])
            # (the port is the default one: compose publishes :443; see deploy/nginx.conf)
            assert r.headers["location"] == f"https://127.0.0.1{path}", r.headers
        post = client.post("/api/v1/auth/login", json={})
        assert post.status_code == 301
        assert post.headers["location"].startswith("https://")
        assert client.get("/nginx-health").text == "ok\n"


def test_a_51_mb_body_is_refused_by_nginx_in_the_error_shape(stack: Stack) -> None:
    body = b"\0" * (51 * 1024 * 1024)
    before = stack.log.stat().st_size
    with httpx.Client(base_url=stack.via_nginx, verify=False, timeout=60) as client:
        r = client.post(
            "/api/v1/styles/import",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 413, r.text[:300]
        assert r.headers["content-type"].startswith("application/json"), r.headers
        error = r.json()["error"]
        assert error["code"] == "payload_too_large", error
        assert error["details"]["limit"] == 50 * 1024 * 1024
        assert_security_headers(r)
        # 1 MB goes through to the API (which refuses it for its own reason: no token)
        small = client.post(
            "/api/v1/styles/import",
            content=b"\0" * (1024 * 1024),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert small.status_code == 401, small.text[:300]
    log = stack.nginx_log.read_text()
    assert re.search(r'"POST /api/v1/styles/import HTTP/1\.1" 413 ', log), log[-2000:]
    assert stack.log.stat().st_size >= before  # (the API log is only for warnings)


def _queued_job(stack: Stack) -> tuple[str, dict[str, str]]:
    """A job that stays queued (the API runs without a worker): the thumbnail job of an upload
    made through nginx; returns its id and the owner's auth header."""
    name = f"sse{uuid.uuid4().hex[:8]}"
    password = f"Proxy-{uuid.uuid4().hex}"
    with client_from(CLIENT_SSE, stack.via_nginx, timeout=30) as c:
        r = c.post(
            "/api/v1/auth/register",
            json={"email": f"{name}@example.com", "username": name, "password": password},
        )
        assert r.status_code == 201, r.text
        r = c.post(
            "/api/v1/auth/login", json={"email": f"{name}@example.com", "password": password}
        )
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        png = encode(synthetic_photo(64, 48))
        r = c.post(
            "/api/v1/images/upload",
            json={"filename": "a.png", "content_type": "image/png", "size": len(png)},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        up = r.json()
        assert up["upload_url"].startswith(stack.via_nginx), up["upload_url"]
        put = c.put(up["upload_url"], content=png, headers=up["headers"])
        assert put.status_code in (200, 204), put.text
        r = c.post(f"/api/v1/images/{up['image_id']}/confirm", headers=auth)
        assert r.status_code == 200, r.text
        jobs = c.get("/api/v1/jobs", headers=auth).json()["items"]
    assert len(jobs) == 1, jobs
    assert jobs[0]["status"] == "queued", jobs
    return str(jobs[0]["id"]), auth


def first_event_while_open(
    base: str, job_id: str, auth: dict[str, str], wait: float
) -> tuple[Any, float] | None:
    """The first SSE event of the job, read within ``wait`` seconds; then checks that the
    stream is still open (nothing more comes and it has not ended). None: no event in time
    (a buffering proxy holds back the response head too: nginx sends it with the body).
    Returns the event and the seconds it took to arrive."""
    started = time.monotonic()
    timeout = httpx.Timeout(10, read=wait)
    with httpx.Client(base_url=base, verify=False, timeout=timeout) as client:
        try:
            with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=auth) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = r.iter_lines()
                while not (line := next(lines)).startswith("data: "):
                    pass
                event = json.loads(line[len("data: ") :])
                took = time.monotonic() - started
                try:  # still open: the job is still queued, nothing more comes
                    for rest in lines:
                        assert not rest.startswith("data: "), rest
                    raise AssertionError("the event stream ended")
                except httpx.ReadTimeout:
                    return event, took
        except httpx.ReadTimeout:
            return None


def test_job_events_stream_through_unbuffered(stack: Stack) -> None:
    job_id, auth = _queued_job(stack)
    got = first_event_while_open(stack.via_nginx, job_id, auth, wait=5)
    assert got is not None, "no SSE event through nginx in 5 s (buffered?)"
    event, took = got
    assert event["id"] == job_id, event
    assert event["status"] == "queued", event
    print(f"first SSE event through nginx after {took * 1000:.0f} ms, stream still open")


def test_buffered_sse_control_shows_the_check_can_fail(stack: Stack) -> None:
    """The same events through a copy of the config whose SSE location buffers: the first event
    (a few hundred bytes) waits in nginx's buffer, so the check above would fail."""
    job_id, auth = _queued_job(stack)
    tmp = stack.tmp / "buffered"
    tmp.mkdir(exist_ok=True)
    ports = {port: free_port() for port in NGINX_PORTS}
    conf = loopback_nginx_conf(tmp, stack.api_port, ports)
    conf, n = re.subn(r"proxy_buffering off;", "proxy_buffering on;", conf)
    assert n >= 1
    with nginx_running(nginx_binary(), conf, tmp, ports["443"]):
        base = f"https://127.0.0.1:{ports['443']}"
        assert first_event_while_open(base, job_id, auth, wait=3) is None
        # while the unbuffered file delivers it at once
        assert first_event_while_open(stack.via_nginx, job_id, auth, wait=5) is not None


def test_each_client_address_has_its_own_rate_limit_behind_nginx(stack: Stack) -> None:
    """If the API counted nginx's own address, the second client would start at 429."""
    first, second = CLIENTS_BUCKETS
    limit = stack.auth_limit
    assert forged_logins(stack.via_nginx, first, limit + 2)[-2:] == [429, 429]
    assert forged_logins(stack.via_nginx, second, 3) == [401, 401, 401]
    log = stack.nginx_log.read_text()
    assert f"\n{first} - " in f"\n{log}"
    assert f"\n{second} - " in f"\n{log}"
