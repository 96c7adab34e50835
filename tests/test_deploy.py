"""The deployment files: docker-compose.yml, deploy/nginx.conf, Dockerfile, .env.example.

Fast and offline; no Docker engine is needed (none runs on the development and CI machines), so
these check what can be checked without one: the compose file's shape and environment against
the real Settings class (a misspelt variable fails here rather than being silently ignored in
production), the documentation of every setting, ``nginx -t`` on the real nginx.conf, and the
image recipe.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import PLACEHOLDER_SECRET, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
IN_CI = os.environ.get("CI", "").lower() == "true"

SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
APP_SERVICES = ("api", "ml-worker", "io-worker")
# What the production stack cannot run without (the architecture document's list).
PRODUCTION_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_BUCKET",
    "JWT_SECRET_KEY",
)
ARCHITECTURE_VARS = (
    *PRODUCTION_VARS,
    "JWT_ACCESS_TOKEN_EXPIRE_MINUTES",
    "JWT_REFRESH_TOKEN_EXPIRE_DAYS",
)
# Variables in an app service's environment that belong to a library, not to Settings.
# (FORWARDED_ALLOW_IPS, uvicorn's, is also a Settings field: `picfilter serve` passes it on.)
NON_SETTINGS_ENV: set[str] = set()
# Stand-ins for the secrets that .env must provide.
SECRETS = {"JWT_SECRET_KEY": "j" * 40, "S3_SECRET_KEY": "s" * 24}


# ---- helpers --------------------------------------------------------------------------------
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_]\w*))"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``."""

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"] or "", m["arg"] or ""
        current = env.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if unset else str(current)
        if op.endswith("?"):
            if unset:
                raise KeyError(f"required variable {name} is missing a value: {arg}")
            return str(current)
        return current or ""

    return _INTERPOLATION.sub(sub, value)


def variables_in(text: str) -> set[str]:
    return {
        m["braced"] or m["named"]
        for m in _INTERPOLATION.finditer(text)
        if not m["escaped"] and (m["braced"] or m["named"])
    }


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_args(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def option(args: list[str], name: str) -> str | None:
    """The value after ``name`` in a command line (``--queues ml`` -> ``ml``)."""
    try:
        return args[args.index(name) + 1]
    except (ValueError, IndexError):
        return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# ---- (a) services, images, queues, start order ----------------------------------------------
def test_compose_names_every_service(services: dict[str, dict[str, Any]]) -> None:
    for name in ("nginx", "api", "ml-worker", "io-worker", "postgres", "redis", "minio"):
        assert name in services, f"docker-compose.yml has no `{name}` service"
    assert re.fullmatch(r"postgres:16([.-].*)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7([.-].*)?", services["redis"]["image"])
    assert services["minio"]["image"].split(":")[0].endswith("minio/minio")
    assert services["nginx"]["image"].split(":")[0].endswith("nginx")


def test_bucket_is_created_by_a_one_shot(services: dict[str, dict[str, Any]]) -> None:
    inits = [
        name
        for name, svc in services.items()
        if svc.get("image", "").split(":")[0].endswith("minio/mc")
        and "mc mb --ignore-existing" in " ".join(command_args(svc))
    ]
    assert inits, "no minio/mc service runs `mc mb --ignore-existing`"
    for name in inits:
        env = service_env(services[name])
        assert "$S3_BUCKET" in " ".join(command_args(services[name])).replace("$$", "$")
        assert env.get("S3_BUCKET", "").startswith("${S3_BUCKET")
        assert services[name]["depends_on"]["minio"]["condition"] == "service_healthy"
        assert services[name].get("restart") == "no"


def test_workers_consume_their_queues(services: dict[str, dict[str, Any]]) -> None:
    ml = command_args(services["ml-worker"])
    io = command_args(services["io-worker"])
    assert ml[:2] == ["picfilter", "worker"]
    assert io[:2] == ["picfilter", "worker"]
    assert option(ml, "--queues") == "ml"
    assert option(io, "--queues") == "io"
    assert option(ml, "--concurrency") == "1"
    beats = [name for name, svc in services.items() if "--beat" in command_args(svc)]
    assert beats == ["io-worker"], f"exactly one beat, on io-worker (found: {beats})"


def test_api_runs_uvicorn_without_a_worker_after_migrations(
    services: dict[str, dict[str, Any]],
) -> None:
    api = command_args(services["api"])
    assert api[:2] == ["picfilter", "serve"]
    assert "--no-worker" in api
    assert option(api, "--workers") == "2"
    if "--no-migrate" in api:  # then a one-shot must have migrated first
        migrators = [
            name
            for name, cond in services["api"]["depends_on"].items()
            if command_args(services[name])[:2] == ["picfilter", "migrate"]
            and cond["condition"] == "service_completed_successfully"
        ]
        assert migrators, "api skips migrations but depends on no `picfilter migrate` one-shot"


def test_start_order_follows_health(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", "redis", "minio", "api", "ml-worker", "io-worker"):
        check = services[name].get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} has its healthcheck disabled"
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, cond in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            if cond["condition"] == "service_healthy":
                assert (services[target].get("healthcheck") or {}).get("test"), (
                    f"{name} waits for {target} to be healthy, which has no healthcheck"
                )
            else:
                assert cond["condition"] == "service_completed_successfully"
                assert services[target].get("restart") == "no", f"{target} is not a one-shot"
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert "redis" in depends, f"{name} starts before Redis is healthy"
        via = [t for t in depends if "postgres" in (services[t].get("depends_on") or {})]
        assert "postgres" in depends or via, f"{name} starts before PostgreSQL is healthy"


# ---- (b) the application's environment ------------------------------------------------------
def test_app_services_share_the_x_app_env_anchor(compose: dict[str, Any]) -> None:
    shared = compose.get("x-app-env")
    assert isinstance(shared, dict)
    assert shared
    for name in APP_SERVICES:
        env = service_env(compose["services"][name])
        for key, value in shared.items():
            assert env.get(key) == str(value), f"{name} does not share x-app-env's {key}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_sets_production_vars_and_only_real_settings(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = service_env(services[name])
    missing = [var for var in PRODUCTION_VARS if not env.get(var)]
    assert not missing, f"{name} lacks {missing}"
    unknown = sorted(set(env) - SETTINGS_VARS - NON_SETTINGS_ENV)
    assert not unknown, f"{name} sets variables that are no Settings field: {unknown}"
    assert not NON_SETTINGS_ENV & SETTINGS_VARS
    assert env["ENVIRONMENT"] == "production"
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["S3_ENDPOINT"] == "http://minio:9000"
    assert env["S3_PUBLIC_ENDPOINT"], "clients need a reachable endpoint in presigned URLs"
    # The secret must come from .env: a required variable, never a default.
    assert re.fullmatch(r"\$\{JWT_SECRET_KEY:\?[^}]+\}", env["JWT_SECRET_KEY"])
    with pytest.raises(KeyError, match="JWT_SECRET_KEY"):
        interpolate(env["JWT_SECRET_KEY"], {})


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_makes_valid_production_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the secrets in .env, the compose environment parses into Settings."""
    for var in SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in service_env(services[name]).items():
        monkeypatch.setenv(key, interpolate(value, SECRETS))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment == "production"
    assert settings.jwt_secret_key == SECRETS["JWT_SECRET_KEY"]
    assert not settings.is_sqlite
    assert settings.sync_database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url.startswith("redis://redis:")
    assert settings.use_s3
    assert settings.s3_secret_key == SECRETS["S3_SECRET_KEY"]
    assert not settings.embedded_worker
    assert settings.host == "0.0.0.0"
    assert settings.port == 8000
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert all(origin.startswith("https://") for origin in settings.cors_origins)


def test_minio_and_the_app_share_credentials(services: dict[str, dict[str, Any]]) -> None:
    app_env = service_env(services["api"])
    minio_env = service_env(services["minio"])
    assert interpolate(minio_env["MINIO_ROOT_USER"], SECRETS) == interpolate(
        app_env["S3_ACCESS_KEY"], SECRETS
    )
    assert interpolate(minio_env["MINIO_ROOT_PASSWORD"], SECRETS) == interpolate(
        app_env["S3_SECRET_KEY"], SECRETS
    )
    pg = service_env(services["postgres"])
    url = interpolate(app_env["DATABASE_URL"], SECRETS)
    user, password, db = (
        interpolate(pg[k], SECRETS) for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    )
    assert url == f"postgresql+asyncpg://{user}:{password}@postgres:5432/{db}"


def test_api_believes_forwarded_headers_from_nginx_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """A client's own X-Forwarded-For must never be its address (per-IP rate limits): the API
    trusts exactly nginx's fixed address, which no other container can be given."""
    allowed = service_env(services["api"]).get("FORWARDED_ALLOW_IPS", "")
    assert allowed, "the api must name the proxy it believes (uvicorn's default is loopback)"
    assert "*" not in allowed, "FORWARDED_ALLOW_IPS='*' lets clients forge their address"
    nginx_nets = services["nginx"].get("networks")
    assert isinstance(nginx_nets, dict), "nginx needs a fixed address on the stack's network"
    addresses = {name: (cfg or {}).get("ipv4_address") for name, cfg in nginx_nets.items()}
    fixed = [a for a in addresses.values() if a]
    assert len(fixed) == 1, f"nginx must have exactly one fixed address: {addresses}"
    assert [a.strip() for a in allowed.split(",")] == fixed
    # The api must be on that network too, and the address inside its declared subnet but
    # outside the range Docker hands out to other containers.
    (network,) = [name for name, a in addresses.items() if a]
    api_nets = services["api"].get("networks") or ["default"]
    assert network in api_nets, f"api is not on nginx's network {network}"
    ipam = (compose.get("networks") or {}).get(network, {}).get("ipam", {}).get("config") or []
    assert ipam, f"network {network} declares no subnet"
    address = ipaddress.ip_address(fixed[0])
    (pool,) = [p for p in ipam if address in ipaddress.ip_network(p["subnet"])]
    assert "ip_range" in pool, "without ip_range another container may be given nginx's address"
    assert address not in ipaddress.ip_network(pool["ip_range"])
    assert address != ipaddress.ip_address(pool.get("gateway", "0.0.0.0"))
    assert (
        Settings(  # a value Settings (and so uvicorn) reads as an address, not a literal
            _env_file=None,  # type: ignore[call-arg]
            forwarded_allow_ips=allowed,
            jwt_secret_key=SECRETS["JWT_SECRET_KEY"],
        ).forwarded_allow_ips
        == fixed[0]
    )


@pytest.mark.parametrize("bad", ["", PLACEHOLDER_SECRET, "x" * 31])
def test_compose_app_env_refuses_a_missing_placeholder_or_short_secret(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """.env with JWT_SECRET_KEY empty, the old placeholder or too short: compose or the app
    refuses, never a running stack with a known key."""
    for var in SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    env = service_env(services["api"])
    secrets_env = {**SECRETS, "JWT_SECRET_KEY": bad}
    if not bad:
        with pytest.raises(KeyError, match="JWT_SECRET_KEY"):
            interpolate(env["JWT_SECRET_KEY"], secrets_env)
        return
    for key, value in env.items():
        monkeypatch.setenv(key, interpolate(value, secrets_env))
    with pytest.raises(ValueError, match="JWT_SECRET_KEY .*secrets.token_urlsafe"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_image_env_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image listens on 0.0.0.0: `docker run` without JWT_SECRET_KEY must refuse (its
    containers do not share DATA_DIR, so no key is generated there)."""
    for var in SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    env: dict[str, str] = {}
    for word, arg in dockerfile_instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", arg)))
    assert env.get("HOST") == "0.0.0.0"
    assert env.get("ENVIRONMENT") == "production"
    env["DATA_DIR"] = str(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="JWT_SECRET_KEY is not set"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert not (tmp_path / "secret_key").exists()
    monkeypatch.setenv("JWT_SECRET_KEY", SECRETS["JWT_SECRET_KEY"])
    assert Settings(_env_file=None).host == "0.0.0.0"  # type: ignore[call-arg]


# ---- (c) .env.example -----------------------------------------------------------------------
def documented_default(name: str) -> str:
    field = Settings.model_fields[name.lower()]
    value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def test_env_example_documents_every_setting_with_its_default() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    assignment = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
    first: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = assignment.match(line)
        if m:
            first.setdefault(m[1], i)
    missing = sorted(SETTINGS_VARS - set(first))
    assert not missing, f".env.example does not list {missing}"
    for var in ARCHITECTURE_VARS:
        assert var in first
    for var in sorted(SETTINGS_VARS):
        i = first[var]
        value = assignment.match(lines[i])[2]  # type: ignore[index]
        assert value == documented_default(var), (
            f".env.example: the first {var}= line should be its default "
            f"{documented_default(var)!r}, not {value!r}"
        )
        comment = lines[i - 1] if i else ""
        assert comment.startswith("#"), f".env.example: {var} needs a one-line comment above it"
        assert not assignment.match(comment), f".env.example: {var} needs a comment above it"
    # The key once published here must never come back as a value anyone might copy.
    assert PLACEHOLDER_SECRET not in ENV_EXAMPLE.read_text()
    # Nothing is set by copying it: the embedded default stays the default.
    active = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert not active, f".env.example sets values when copied to .env: {active}"


def test_env_example_documents_every_compose_variable() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    used = variables_in(COMPOSE_FILE.read_text())
    # ($VAR inside container shell commands are escaped as $$VAR and not compose variables.)
    assert not used - documented, f"compose reads undocumented variables: {used - documented}"


# ---- (d) nginx ------------------------------------------------------------------------------
def test_nginx_conf_fronts_the_stack(services: dict[str, dict[str, Any]]) -> None:
    conf = NGINX_CONF.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert re.search(r"^events\s*\{", code, re.M)
    assert re.search(r"^http\s*\{", code, re.M)
    assert re.search(r"client_max_body_size\s+50m;", code)
    assert re.search(r"listen\s+443\s+ssl\b", code)
    assert re.search(r"listen\s+80\b", code)
    assert re.search(r"return\s+301\s+https://", code)
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-ID"):
        assert re.search(rf"proxy_set_header\s+{header}\s", code), header
    assert re.search(r"gzip_types[^;]*application/json", code)
    for header in ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options"):
        assert re.search(rf"add_header\s+{header}\s", code), header
    # ssl files under /etc/nginx/certs, with the names the `certs` one-shot writes.
    certs = re.findall(r"ssl_certificate(?:_key)?\s+([^;]+);", code)
    assert certs
    assert all(path.startswith("/etc/nginx/certs/") for path in certs)
    certs_script = " ".join(command_args(services["certs"]))
    for path in certs:
        assert Path(path).name in certs_script
    # Upstreams are compose services; the API one is uvicorn's port.
    upstreams = dict(re.findall(r"^\s*server\s+([A-Za-z][\w.-]*):(\d+);", code, re.M))
    assert upstreams.get("api") == "8000"
    assert set(upstreams) <= set(services)
    # SSE: the job events location is unbuffered and its pattern matches the route.
    m = re.search(r"location\s+~\s+(\S+)\s*\{([^}]*)\}", code)
    assert m, "no regex location for the SSE route"
    pattern, body = m[1], m[2]
    assert re.search(pattern, "/api/v1/jobs/0b7e6f1c-9d4a-4f7e-8d7e-2f2b1a9c0d11/events")
    assert not re.search(pattern, "/api/v1/jobs/0b7e6f1c-9d4a-4f7e-8d7e-2f2b1a9c0d11")
    assert re.search(r"proxy_buffering\s+off;", body)
    assert re.search(r"proxy_read_timeout\s+\S+;", body)
    # Presigned URLs sign the Host: the storage server must pass it on unchanged.
    if "minio" in upstreams:
        storage = code[code.index("proxy_pass http://minio") :]
        storage = storage[: storage.index("}")]
        assert re.search(r"proxy_set_header\s+Host\s+\$http_host;", storage)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        return cert, key
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def sandboxed_nginx_conf(conf: str, tmp: Path, cert: Path, key: Path) -> str:
    """The real config with what only exists inside compose swapped for sandbox stand-ins:
    upstream hosts (resolved by ``nginx -t``) -> 127.0.0.1, certificates, pid and logs -> tmp."""
    conf = re.sub(r"^(\s*server\s+)[A-Za-z][\w.-]*(:\d+)", r"\g<1>127.0.0.1\g<2>", conf, flags=re.M)
    conf = re.sub(r"(\bssl_certificate\s+)[^;]+;", rf"\g<1>{cert};", conf)
    conf = re.sub(r"(\bssl_certificate_key\s+)[^;]+;", rf"\g<1>{key};", conf)
    conf = re.sub(r"^(\s*pid\s+)[^;]+;", rf"\g<1>{tmp / 'nginx.pid'};", conf, flags=re.M)
    conf = re.sub(r"(\berror_log\s+)[^\s;]+", rf"\g<1>{tmp / 'error.log'}", conf)
    conf = re.sub(r"(\baccess_log\s+)(?!off\b)[^\s;]+", rf"\g<1>{tmp / 'access.log'}", conf)
    conf = re.sub(r"(\bproxy_cache_path\s+)[^\s;]+", rf"\g<1>{tmp / 'cache'}", conf)
    return conf


def test_nginx_t_accepts_the_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if nginx is None:
        if IN_CI:
            pytest.fail("CI=true: nginx must be installed to check deploy/nginx.conf")
        pytest.skip("nginx is not installed (apt-get install nginx-light) to run `nginx -t`")
    cert, key = _self_signed(tmp_path)
    conf = sandboxed_nginx_conf(NGINX_CONF.read_text(), tmp_path, cert, key)
    assert "api:8000" not in conf
    assert str(cert) in conf
    assert str(tmp_path / "nginx.pid") in conf
    target = tmp_path / "nginx.conf"
    target.write_text(conf)
    command = [nginx, "-t", "-c", str(target), "-p", str(tmp_path)]
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30).stderr
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    if m and tuple(map(int, m.groups())) >= (1, 19, 5):  # -e: the startup error log
        command += ["-e", str(tmp_path / "error.log")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}"
    assert "test is successful" in result.stderr


# ---- (e) the image --------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_cpu_torch_non_root_one_image() -> None:
    steps = dockerfile_instructions()
    froms = [arg for word, arg in steps if word == "FROM"]
    assert froms
    assert froms[-1].split()[0] == "python:3.11-slim"
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    # torch==2.13.0 (pyproject) from the CPU wheel index: never a CUDA build.
    m = re.search(r"pip install [^&;]*--extra-index-url[\s=]+(\S+)\s+\.(\s|$)", runs)
    assert m, "the package must be installed with `pip install --extra-index-url INDEX .`"
    index = m[1].strip("\"'")
    ref = re.fullmatch(r"\$\{?(\w+)\}?", index)
    if ref:  # a build argument: its default must be the CPU index
        args = dict(a.partition("=")[::2] for word, a in steps if word == "ARG" and "=" in a)
        index = args.get(ref[1], "").strip("\"'")
    assert index == "https://download.pytorch.org/whl/cpu", index
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()
    assert "torch.version.cuda" in runs, "the build should fail if a CUDA torch slipped in"
    users = [arg for word, arg in steps if word == "USER"]
    assert users, "the image must switch to a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    healthcheck = " ".join(arg for word, arg in steps if word == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    cmd = [arg for word, arg in steps if word == "CMD"]
    assert cmd
    assert json.loads(cmd[-1]) == ["picfilter", "serve", "--no-worker"]


def test_dockerignore_keeps_secrets_out_and_the_sources_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*"):
                result = not negate
        return result

    for path in (".env", ".venv", ".git", "data", "deploy/certs/privkey.pem"):
        assert ignored(path), f".dockerignore lets {path} into the build context"
    sources = [
        arg.split()[:-1]
        for word, arg in dockerfile_instructions()
        if word == "COPY" and "--from" not in arg
    ]
    for path in (src for group in sources for src in group):
        assert not ignored(path), f"the Dockerfile copies {path}, which .dockerignore drops"
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"


def test_every_app_service_runs_the_one_image(services: dict[str, dict[str, Any]]) -> None:
    users = [
        *APP_SERVICES,
        *(n for n in services if command_args(services[n])[:1] == ["picfilter"]),
    ]
    images = {services[name].get("image") for name in users}
    assert len(images) == 1, images
    assert None not in images
    for name in users:
        assert (services[name].get("build") or {}).get("context") == ".", name


def test_cdn_edge_and_bucket_policy_follow_the_key_layout(
    services: dict[str, dict[str, Any]],
) -> None:
    """The :9444 edge of deploy/nginx.conf serves exactly the content-addressed keys of
    app/storage/keys.py, from compose's bucket; minio-init opens exactly those to anonymous
    reads (app/storage/s3.py's policy); CDN_BASE_URL points at the published edge."""
    import uuid

    from app.storage import keys
    from app.storage.s3 import cdn_read_policy

    code = "\n".join(line.split("#", 1)[0] for line in NGINX_CONF.read_text().splitlines())
    edge = code[code.index("listen 9444") :]
    m = re.search(r'location\s+~\s+"([^"]+)"\s*\{', edge)
    assert m, "no regex location in the :9444 server block"
    pattern = m[1]
    u, i, j, s = (uuid.uuid4() for _ in range(4))
    immutable = [
        keys.thumbnail_key(u, i, b"t"),
        keys.result_key(u, j, "jpg", b"r"),
        keys.style_key(s, f"v2/{keys.content_name('preview', b'p', 'webp')}"),
    ]
    mutable = [
        keys.original_key(u, i, "jpg"),
        f"images/{u}/{i}/thumbnail.webp",
        keys.style_key(s, "v1/model.pt"),
        keys.style_key(s, "v1/lut.cube"),
        keys.cube_key(s, j),
    ]
    for key in immutable:
        assert keys.is_immutable(key), key
        assert re.search(pattern, f"/{key}"), key
    for key in mutable:
        assert not keys.is_immutable(key), key
        assert not re.search(pattern, f"/{key}"), key
    env = dict(SECRETS)  # every other variable at its compose default
    app_env = {k: interpolate(v, env) for k, v in service_env(services["api"]).items()}
    bucket = app_env["S3_BUCKET"]
    assert re.search(rf"proxy_pass\s+http://minio/{re.escape(bucket)}\$uri;", edge)
    # minio-init: the same anonymous-read resources as cdn_read_policy
    init = " ".join(command_args(services["minio-init"])).replace("$$S3_BUCKET", bucket)
    for resource in cdn_read_policy(bucket)["Statement"][0]["Resource"]:
        assert resource in init, resource
    assert "mc anonymous set-json" in init
    # CDN_BASE_URL's default port is the edge's published port
    published = [p for p in services["nginx"]["ports"] if str(p).endswith(":9444")]
    assert published, services["nginx"]["ports"]
    port = interpolate(str(published[0]), env).split(":")[0]
    assert app_env["CDN_BASE_URL"] == f"https://localhost:{port}"
    assert Settings(_env_file=None, cdn_base_url=app_env["CDN_BASE_URL"]).cdn_base_url  # type: ignore[call-arg]
