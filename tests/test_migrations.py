"""Migrations: upgrade an empty database, downgrade to base, upgrade again, and autogenerate
finds no difference between the models and the migrations (``alembic check``), on SQLite and on
PostgreSQL (a fresh database made and dropped here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from alembic import command
from tests.conftest import BACKEND, IN_CI, PG_ADMIN_URL, ROOT

SEARCH_INDEXES = {"ix_styles_search", "ix_styles_tags"}


def alembic_config(connection: Connection) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["configure_logger"] = False
    cfg.attributes["connection"] = connection
    return cfg


def run(engine: Engine, action: str, revision: str | None = None) -> None:
    with engine.begin() as conn:
        cfg = alembic_config(conn)
        if action == "check":
            command.check(cfg)
        else:
            getattr(command, action)(cfg, revision)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def style_indexes(engine: Engine) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes("styles") if ix["name"]}


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'migrations.db'}", poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    if BACKEND != "postgres":
        pytest.skip("PostgreSQL migrations run in the postgres test run")
    import psycopg

    name = f"picfilter_migrations_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not reachable")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(f"{base}/{name}", poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def check_round_trip(engine: Engine) -> None:
    run(engine, "upgrade", "head")
    expected = {"users", "images", "styles", "comments", "ratings", "jobs", "style_training_images"}
    assert tables(engine) == expected
    run(engine, "check")  # raises if autogenerate would write a migration
    run(engine, "downgrade", "base")
    assert tables(engine) == set()
    run(engine, "upgrade", "head")
    assert tables(engine) == expected
    run(engine, "check")


def test_single_head() -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1


def test_migrations_round_trip_on_sqlite(sqlite_engine: Engine) -> None:
    check_round_trip(sqlite_engine)
    assert not style_indexes(sqlite_engine) & SEARCH_INDEXES  # PostgreSQL-only indexes


def test_migrations_round_trip_on_postgres(postgres_engine: Engine) -> None:
    check_round_trip(postgres_engine)
    assert style_indexes(postgres_engine) >= SEARCH_INDEXES
    run(postgres_engine, "downgrade", "0001")
    assert not style_indexes(postgres_engine) & SEARCH_INDEXES
    run(postgres_engine, "upgrade", "head")
    assert style_indexes(postgres_engine) >= SEARCH_INDEXES
