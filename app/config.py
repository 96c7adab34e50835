"""Settings: one typed class, every knob an environment variable (see ``.env.example``).

Two ways to run, one code base:

* **embedded** (the default, ``make run``): ``DATABASE_URL`` unset -> SQLite in ``DATA_DIR``;
  ``REDIS_URL`` unset -> in-process cache/session/rate-limit store and a Celery broker that
  needs no server (kombu's filesystem transport under ``DATA_DIR``); ``S3_ENDPOINT``/``S3_BUCKET``
  unset -> local-disk storage under ``DATA_DIR`` served through signed URLs.
* **production**: ``DATABASE_URL=postgresql+asyncpg://...``, ``REDIS_URL=redis://...``,
  ``S3_*`` -> PostgreSQL, Redis (broker, sessions, pub/sub, rate limits) and S3/MinIO.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "change-me-in-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: Literal["development", "test", "production"] = "development"
    app_name: str = "PicFilter"
    host: str = "127.0.0.1"
    port: int = 8000
    # Where the embedded default keeps its SQLite file, objects and broker folders.
    data_dir: Path = Path("data")
    # Public base URL of the API (used to build local storage URLs); default http://host:port.
    public_base_url: str | None = None
    log_level: str = "INFO"

    # Database: unset -> SQLite file in data_dir.
    database_url: str | None = None
    # Sync URL for workers; derived from database_url (asyncpg -> psycopg, aiosqlite -> pysqlite).
    database_sync_url: str | None = None
    db_pool_size: int = 10
    db_max_overflow: int = 20

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
    # A job in `processing` longer than this without a heartbeat is swept.
    job_stuck_after_seconds: int = 1800
    job_sweep_interval_seconds: int = 60
    # Embedded default: start a worker beside the API in `picfilter serve`.
    embedded_worker: bool = True
    worker_concurrency: int = 1
    # Mounts POST /api/v1/jobs/selftest, a tiny real job used by the job-system tests.
    enable_selftest_jobs: bool = False

    # Object storage: S3/MinIO when s3_bucket and (s3_endpoint or AWS) are set, else local disk.
    storage_backend: Literal["auto", "local", "s3"] = "auto"
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "picfilter-storage"
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = False
    storage_signing_key: str | None = None  # local backend URL signatures; default JWT secret
    presign_put_expire_seconds: int = 600
    presign_get_expire_seconds: int = 300

    # Auth
    jwt_secret_key: str = PLACEHOLDER_SECRET
    jwt_algorithm: Literal["HS256"] = "HS256"
    jwt_access_token_expire_minutes: int = 60
    jwt_refresh_token_expire_days: int = 7
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)

    # Limits
    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    max_learn_items: int = 16
    max_cube_bytes: int = 10 * 1024 * 1024
    rate_limit_enabled: bool = True
    rate_limit_auth: str = "10/minute"
    rate_limit_jobs: str = "60/minute"
    rate_limit_default: str = "600/minute"
    cors_origins: list[str] = Field(default_factory=list)

    # ML
    ml_device: str | None = None  # "cuda" / "cpu"; default: CUDA when present
    ml_learn_time_budget_seconds: float = 300.0
    published_weights_dir: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production" and self.jwt_secret_key == PLACEHOLDER_SECRET:
            raise ValueError("JWT_SECRET_KEY must be set to a real secret in production")
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
