"""``picfilter``: serve, worker, migrate, and the ML commands (learn, apply, export).

``picfilter serve`` runs migrations, then uvicorn; in the embedded default (no ``REDIS_URL``)
it also starts a real Celery worker (with its beat scheduler) beside the API as a child process,
and Ctrl-C stops both.

``serve``, ``worker`` and ``migrate`` load the settings first and stop with the reason (and no
traceback) when they are refused, e.g. a missing, placeholder or short ``JWT_SECRET_KEY``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from app.config import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent


def migrate(revision: str = "head") -> None:
    from alembic.config import Config

    from alembic import command

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


def load_settings() -> Settings:
    """The settings, or exit with why they were refused (a message, not a traceback)."""
    try:
        return get_settings()
    except ValidationError as exc:
        reasons = []
        for error in exc.errors():
            msg = str(error["msg"]).removeprefix("Value error, ")
            field = ".".join(str(part) for part in error["loc"]).upper()
            reasons.append(f"{field}: {msg}" if field and not msg.startswith(field) else msg)
        raise SystemExit("picfilter: refusing to start:\n  " + "\n  ".join(reasons)) from None


def _worker_argv(queues: str, concurrency: int, beat: bool, pool: str | None) -> list[str]:
    argv = [
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        get_settings().log_level,
        "--without-mingle",
        "--without-gossip",
    ]
    if get_settings().broker_url.startswith("filesystem"):
        argv.append("--without-heartbeat")
    if beat:
        argv.append("--beat")
    if pool:
        argv += ["--pool", pool]
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    from app.workers.celery_app import celery_app

    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)  # beat's schedule file
    concurrency = args.concurrency or settings.worker_concurrency
    celery_app.worker_main(_worker_argv(args.queues, concurrency, args.beat, args.pool))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    load_settings()
    migrate(args.revision)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = load_settings()
    port = args.port or settings.port
    host = args.host or settings.host
    os.environ.setdefault("PORT", str(port))
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_migrate:
        migrate()
    worker: subprocess.Popen[bytes] | None = None
    if settings.embedded_worker and not settings.redis_url and not args.no_worker:
        worker = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--queues", "ml,io", "--beat"],
            env={**os.environ, "PORT": str(port)},
            start_new_session=True,
        )

    def stop_worker() -> None:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()

    def on_signal(signum: int, _frame: object) -> None:
        # uvicorn captures SIGINT/SIGTERM while serving and re-raises them once it has shut
        # down; this handler then stops the embedded worker before the process exits.
        stop_worker()
        raise SystemExit(0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"PicFilter is serving http://{host}:{port} (API docs: http://{host}:{port}/docs)",
        flush=True,
    )
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            # The client address per-IP rate limits count: see Settings.forwarded_allow_ips.
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_level=settings.log_level.lower(),
            server_header=False,  # no `server: uvicorn` banner
        )
    finally:
        stop_worker()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picfilter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API (and, embedded, a worker beside it)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    p.add_argument("--no-migrate", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--queues", default="ml,io")
    p.add_argument("--concurrency", type=int, help="default: WORKER_CONCURRENCY")
    p.add_argument("--beat", action="store_true", help="also run the periodic scheduler")
    p.add_argument("--pool", help="Celery pool (prefork, solo, threads)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_migrate)

    try:
        from app.ml import cli as ml_cli
    except ImportError:  # pragma: no cover - only while the ML commands are absent
        ml_cli = None  # type: ignore[assignment]
    if ml_cli is not None and hasattr(ml_cli, "register"):
        ml_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
