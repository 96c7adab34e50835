"""Settings: one typed class, every knob an environment variable (see ``.env.example``).

Two ways to run, one code base:

* **embedded** (the default, ``make run``): ``DATABASE_URL`` unset -> SQLite in ``DATA_DIR``;
  ``REDIS_URL`` unset -> in-process cache/session/rate-limit store and a Celery broker that
  needs no server (kombu's filesystem transport under ``DATA_DIR``); ``S3_ENDPOINT``/``S3_BUCKET``
  unset -> local-disk storage under ``DATA_DIR`` served through signed URLs.
* **production**: ``DATABASE_URL=postgresql+asyncpg://...``, ``REDIS_URL=redis://...``,
  ``S3_*`` -> PostgreSQL, Redis (broker, sessions, pub/sub, rate limits) and S3/MinIO.

Signing keys (``JWT_SECRET_KEY``, and ``STORAGE_SIGNING_KEY`` when set) are never a known value:

* a key equal to the placeholder once published in ``.env.example``, or shorter than
  :data:`MIN_SECRET_BYTES` (32 bytes, the HS256 digest size below which PyJWT warns), refuses
  to start whatever ``ENVIRONMENT`` says;
* ``JWT_SECRET_KEY`` unset on the embedded stack (SQLite and the filesystem broker, so every
  process of it shares ``DATA_DIR``) -> a random key made on first start and kept in
  ``DATA_DIR/secret_key`` (mode 0600; a key file that others may read refuses to start);
* ``JWT_SECRET_KEY`` unset anywhere else (PostgreSQL, a Redis/AMQP broker, or
  ``ENVIRONMENT=production``: processes that may not share a disk) refuses to start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import stat
import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Published in .env.example until 2026-12: anyone could sign tokens with it. Always refused.
PLACEHOLDER_SECRET = "change-me-in-production"
# HS256's digest size: RFC 7518 3.2's minimum, and PyJWT's InsecureKeyLengthWarning threshold.
MIN_SECRET_BYTES = 32
SECRET_KEY_FILE = "secret_key"
MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'


def _secret_problem(value: str) -> str | None:
    """Why ``value`` cannot sign anything, or None when it can."""
    if value.strip().lower() == PLACEHOLDER_SECRET:
        return "is the placeholder published in .env.example"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is {len(value.encode())} bytes long, under the {MIN_SECRET_BYTES} bytes required"
    return None


def _how_to_set(name: str) -> str:
    return (
        f"set {name} to a random secret of at least {MIN_SECRET_BYTES} bytes, e.g. the output "
        f"of `{MAKE_A_SECRET}` (in the environment or in .env)"
    )


def load_or_create_secret_key(path: Path) -> str:
    """The key kept in ``path``, made (random, mode 0600) when the file does not exist yet.

    Race-safe for the API and the worker started together: the key is written to a private
    temporary file that is then hard-linked to ``path``, which fails when another process got
    there first; everyone then reads back the one file that won. (Filesystems without hard
    links fall back to ``O_CREAT|O_EXCL`` with a short wait for the winner's write.)
    Refuses a file that is not a regular file, is readable or writable by group or others, or
    holds a key that is too short.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_secret_file(path, secrets.token_urlsafe(48))
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise ValueError(f"cannot read the key file {path}: {exc}") from exc
        with os.fdopen(fd, "r", encoding="utf-8") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"the key file {path} is not a regular file")
            if info.st_mode & 0o077:
                raise ValueError(
                    f"the key file {path} may be read by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}` if nobody else "
                    "could have read it, else delete it (a new key is made; every user must "
                    "log in again)"
                )
            key = f.read().strip()
        if key:
            problem = _secret_problem(key)
            if problem:
                raise ValueError(f"the key in {path} {problem}: delete the file to make a new one")
            return key
        time.sleep(0.1)  # created by O_EXCL in another process, not written yet
    raise ValueError(f"the key file {path} is empty: delete it to make a new one")


def _create_secret_file(path: Path, key: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process made it first: everyone uses that one
        except OSError:  # no hard links here: exclusive create, then write
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(key + "\n")
                f.flush()
                os.fsync(f.fileno())
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print the secrets next to it.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    app_name: str = "PicFilter"
    host: str = "127.0.0.1"
    port: int = 8000
    # Where the embedded default keeps its SQLite file, objects and broker folders.
    data_dir: Path = Path("data")
    # Public base URL of the API (used to build local storage URLs); default http://host:port.
    public_base_url: str | None = None
    log_level: str = "INFO"
    # Peers whose X-Forwarded-For/-Proto uvicorn believes (uvicorn's own variable, so that
    # `picfilter serve` and a plain `uvicorn --factory app.main:create_app` read the same one):
    # comma-separated IP addresses or networks. The client address (what per-IP rate limits
    # count) is then the right-most X-Forwarded-For entry that is not one of them. Name only
    # your reverse proxy: "*" lets every client write its own address.
    forwarded_allow_ips: str = "127.0.0.1,::1"

    # Database: unset -> SQLite file in data_dir.
    database_url: str | None = None
    # Sync URL for workers; derived from database_url (asyncpg -> psycopg, aiosqlite -> pysqlite).
    database_sync_url: str | None = None
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # PostgreSQL ends a worker's session that sits inside a transaction this long (seconds; 0:
    # never): a worker host cut off mid-transaction otherwise keeps its row locks (a job it was
    # claiming) until the server's TCP keepalive notices, by default after two hours.
    db_worker_idle_in_transaction_seconds: int = Field(default=60, ge=0)

    # Redis: unset -> in-process store + filesystem broker.
    redis_url: str | None = None
    # Celery broker; default: REDIS_URL, else kombu's filesystem transport in data_dir.
    celery_broker_url: str | None = None
    # Seconds before the Redis broker re-delivers an unacknowledged message (acks_late).
    celery_visibility_timeout: int = 3600
    # Key prefix of every Redis key we own (broker included): lets tests share one Redis.
    redis_key_prefix: str = "picfilter:"
    celery_max_retries: int = 3
    celery_retry_delay: int = 30
    # A running job's worker sets its heartbeat this often (seconds).
    job_heartbeat_seconds: float = Field(default=5.0, gt=0)
    # A job in `processing` longer than this without a heartbeat is re-queued by the sweep
    # (its worker died): keep it several heartbeats long.
    job_stuck_after_seconds: int = 60
    # How often the beat scheduler runs the sweep.
    job_sweep_interval_seconds: float = 15
    # A job `queued` this long without being picked up is sent again by the sweep.
    job_resend_queued_after_seconds: int = 900
    # Embedded default: start a worker beside the API in `picfilter serve`.
    embedded_worker: bool = True
    worker_concurrency: int = 1

    # Object storage: S3/MinIO when s3_bucket and (s3_endpoint or AWS) are set, else local disk.
    storage_backend: Literal["auto", "local", "s3"] = "auto"
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "picfilter-storage"
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = False
    # Key of local-storage URL signatures; unset: JWT_SECRET_KEY. Same rules as that key.
    storage_signing_key: str | None = None
    presign_put_expire_seconds: int = 600
    # A CDN whose origin is the bucket (S3 backend): ``{CDN_BASE_URL}/{key}`` serves the object
    # at ``key``. When set, content-addressed thumbnails, previews and results (immutable,
    # ``Cache-Control: public, max-age=31536000, immutable``) get CDN URLs instead of presigned
    # ones; originals, models and exports stay presigned. Unset or "": no CDN.
    cdn_base_url: str | None = None
    presign_get_expire_seconds: int = 300

    # Auth
    # Unset (""): the embedded stack makes one in DATA_DIR/secret_key; other stacks refuse.
    jwt_secret_key: str = ""
    jwt_algorithm: Literal["HS256"] = "HS256"
    jwt_access_token_expire_minutes: int = 60
    jwt_refresh_token_expire_days: int = 7
    # The refresh token just rotated may be presented again for this long (two tabs refreshing
    # at once both stay logged in); after it, presenting it again revokes the session.
    jwt_refresh_reuse_grace_seconds: int = Field(default=15, ge=0, le=120)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)

    # Limits
    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    # Upload checks (confirm) that may decode at once in one API process (each may hold up to
    # max_image_pixels x 4 bytes; PNG and JPEG checks need little memory).
    image_decode_concurrency: int = Field(default=2, ge=1)
    max_learn_items: int = 16
    max_cube_bytes: int = 10 * 1024 * 1024
    rate_limit_enabled: bool = True
    rate_limit_auth: str = "10/minute"
    rate_limit_jobs: str = "60/minute"
    rate_limit_default: str = "600/minute"
    cors_origins: list[str] = Field(default_factory=list)
    # Strict-Transport-Security max-age on responses to HTTPS requests (0: never sent).
    hsts_max_age_seconds: int = Field(default=31_536_000, ge=0)

    # ML
    ml_device: str | None = None  # "cuda" / "cpu"; default: CUDA when present
    ml_learn_time_budget_seconds: float = 300.0
    # A folder laid out like app/ml/weights (adaptive_3dlut/LUTs.pth + classifier.pth,
    # nilut/nilutx3style.pt); unset: the copy shipped inside the package.
    published_weights_dir: Path | None = None

    @field_validator("cdn_base_url")
    @classmethod
    def _check_cdn_base_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError(
                f"CDN_BASE_URL: {value!r} is no http(s) base URL (e.g. https://cdn.example.com)"
            )
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_forwarded_allow_ips(cls, value: str) -> str:
        # uvicorn silently keeps an entry it cannot parse as a literal that never matches a
        # peer address: refuse it here instead.
        items = [item.strip() for item in value.split(",")]
        if items == ["*"]:
            return "*"
        for item in items:
            try:
                if "/" in item:
                    ipaddress.ip_network(item)
                else:
                    ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS: {item!r} is no IP address or network (e.g. "
                    '127.0.0.1,::1 or 172.30.0.10 or 10.0.0.0/8; "*" alone trusts everyone)'
                ) from None
        return ",".join(items)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name, value in (
            ("JWT_SECRET_KEY", self.jwt_secret_key),
            ("STORAGE_SIGNING_KEY", self.storage_signing_key),
        ):
            problem = _secret_problem(value) if value else None
            if problem:
                raise ValueError(f"{name} {problem}: {_how_to_set(name)}")
        if not self.jwt_secret_key:
            if not self.uses_own_key_file:
                stack = (
                    "ENVIRONMENT=production"
                    if self.environment == "production"
                    else "a server database or broker: processes that may not share DATA_DIR"
                )
                raise ValueError(
                    f"JWT_SECRET_KEY is not set, and this stack ({stack}) needs the same key "
                    f"in all its processes: {_how_to_set('JWT_SECRET_KEY')}"
                )
            path = self.resolved_data_dir / SECRET_KEY_FILE
            try:
                self.jwt_secret_key = load_or_create_secret_key(path)
            except OSError as exc:
                raise ValueError(
                    f"JWT_SECRET_KEY is not set and the key file {path} cannot be made "
                    f"({exc}): {_how_to_set('JWT_SECRET_KEY')}"
                ) from exc
        return self

    # ---- derived values -------------------------------------------------------------------
    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def async_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'picfilter.db'}"

    @property
    def sync_database_url(self) -> str:
        if self.database_sync_url:
            return self.database_sync_url
        url = self.async_database_url
        return (
            url.replace("+asyncpg", "+psycopg")
            .replace("postgresql://", "postgresql+psycopg://")
            .replace("+aiosqlite", "")
        )

    @property
    def uses_own_key_file(self) -> bool:
        """Embedded stack (SQLite, filesystem broker, not production): every process of it
        shares DATA_DIR, so they can share a key generated there."""
        return (
            self.environment != "production"
            and self.is_sqlite
            and self.broker_url.startswith("filesystem")
        )

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")

    @property
    def broker_url(self) -> str:
        if self.celery_broker_url:
            return self.celery_broker_url
        if self.redis_url:
            return self.redis_url
        return "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.resolved_data_dir / "broker"

    @property
    def use_s3(self) -> bool:
        if self.storage_backend == "auto":
            return bool(self.s3_endpoint)
        return self.storage_backend == "s3"

    @property
    def storage_dir(self) -> Path:
        return self.resolved_data_dir / "storage"

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def signing_key(self) -> bytes:
        return (self.storage_signing_key or self.jwt_secret_key).encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()
