"""Client addresses behind the real nginx (issue 9, item 3): a forged X-Forwarded-For must not
dodge per-IP rate limits.

The API runs as in docker-compose.yml (``picfilter serve``, rate limits on, the api service's
``FORWARDED_ALLOW_IPS`` with nginx's compose address read as 127.0.0.1, where nginx is here),
behind nginx started from deploy/nginx.conf (its real TLS server blocks; only upstream, listen
addresses, certificates, pid and logs are rewritten for loopback). The client connects from
127.0.0.2 and 127.0.0.3, so its own address is never the trusted proxy's. Each login carries
another forged X-Forwarded-For; the login route's limit (RATE_LIMIT_AUTH) must still answer 429,
through nginx and when the client talks to uvicorn directly.

nginx is required under CI=true (.ci/run installs it); elsewhere the test skips without it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from limits import parse

from app.config import Settings
from bench import free_port, running_server
from tests.test_deploy import COMPOSE_FILE, IN_CI, NGINX_CONF, _self_signed, service_env

pytestmark = pytest.mark.slow

SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
PROXY = "127.0.0.1"  # where nginx connects to the API from, here
CLIENT_VIA_NGINX = "127.0.0.2"
CLIENT_DIRECT = "127.0.0.3"


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


def loopback_nginx_conf(tmp: Path, api_port: int, ports: dict[str, int]) -> str:
    """deploy/nginx.conf for loopback: compose upstreams -> 127.0.0.1, listen ports -> free
    loopback ports, certificates, pid and logs -> tmp. Everything else is the real file."""
    cert, key = _self_signed(tmp)
    conf = NGINX_CONF.read_text()
    conf = re.sub(r"^(\s*server\s+)api:\d+;", rf"\g<1>127.0.0.1:{api_port};", conf, flags=re.M)
    conf = re.sub(r"^(\s*server\s+)minio:\d+;", r"\g<1>127.0.0.1:9;", conf, flags=re.M)
    for port, new in ports.items():
        conf, n = re.subn(rf"(\blisten\s+){port}\b", rf"\g<1>127.0.0.1:{new}", conf)
        assert n == 1, f"deploy/nginx.conf has no single `listen {port}`"
    conf = re.sub(r"(\bssl_certificate\s+)[^;]+;", rf"\g<1>{cert};", conf)
    conf = re.sub(r"(\bssl_certificate_key\s+)[^;]+;", rf"\g<1>{key};", conf)
    conf = re.sub(r"^(\s*pid\s+)[^;]+;", rf"\g<1>{tmp / 'nginx.pid'};", conf, flags=re.M)
    conf = re.sub(r"(\berror_log\s+)[^\s;]+", rf"\g<1>{tmp / 'error.log'}", conf)
    conf = re.sub(r"(\baccess_log\s+)(?!off\b)[^\s;]+", rf"\g<1>{tmp / 'access.log'}", conf)
    conf = re.sub(r"^worker_processes\s+\w+;", "worker_processes 1;", conf, flags=re.M)
    if os.geteuid() == 0:  # else nginx's workers run as `nobody`, who cannot enter tmp
        conf = "user root;\n" + conf
    return conf


@dataclass
class Stack:
    via_nginx: str  # https base URL of nginx's API server block
    direct: str  # http base URL of uvicorn itself
    auth_limit: int
    log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = nginx_binary()
    tmp = tmp_path_factory.mktemp("proxy")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
    env.update(
        DATA_DIR=str(tmp / "data"),
        JWT_SECRET_KEY="proxy-test-" + "k" * 40,
        RATE_LIMIT_ENABLED="true",
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
        FORWARDED_ALLOW_IPS=compose_forwarded_allow_ips(),
    )
    auth_limit = parse(Settings(_env_file=None).rate_limit_auth).amount  # type: ignore[call-arg]
    ports = {"80": free_port(), "443": free_port(), "9443": free_port()}
    conf = tmp / "nginx.conf"
    conf.write_text(loopback_nginx_conf(tmp, api_port, ports))
    command = [*(sys.executable, "-m", "app.cli", "serve", "--no-worker")]
    command += ["--host", "127.0.0.1", "--port", str(api_port)]
    log = tmp / "api.log"
    with running_server(command, env, api_port, log_path=log, timeout=120) as (direct, _pid):
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            via = f"https://127.0.0.1:{ports['443']}"
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"nginx exited: {proc.communicate()[1].decode()}")
                try:
                    if httpx.get(f"{via}/healthz", verify=False, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "nginx did not proxy /healthz in 30 s"
                time.sleep(0.2)
            yield Stack(via_nginx=via, direct=direct, auth_limit=auth_limit, log=log)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


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
