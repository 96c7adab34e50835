"""FastAPI application entry: ``create_app(settings)``; ``app`` is the default instance."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from app.api.conformance import add_method_not_allowed_routes, install_openapi
from app.api.errors import install_error_handlers
from app.config import Settings, get_settings
from app.db import Database
from app.dependencies import rate_limit
from app.request_context import RequestIdFilter, RequestIdMiddleware
from app.schemas.common import ErrorResponse
from app.security_headers import (
    ErrorShapeCORSMiddleware,
    SecurityHeadersMiddleware,
    media_origins,
    web_csp,
)
from app.services.ratelimit import RateLimiter
from app.storage import make_storage
from app.storage.kv import make_store
from app.strict_json import RejectNonFiniteJSON

API_PREFIX = "/api/v1"


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RequestIdFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        root.addHandler(handler)
    root.setLevel(level)


def _routers() -> list[APIRouter]:
    from app.api import auth, community, images, jobs, storage, styles, web_support

    return [
        auth.router,
        web_support.router,
        jobs.router,
        images.router,
        storage.router,
        styles.router,
        community.router,
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(settings)
        app.state.store = make_store(settings.redis_url, settings.redis_key_prefix)
        app.state.rate_limiter = RateLimiter(settings)
        app.state.storage = make_storage(settings)
        try:
            yield
        finally:
            await app.state.store.close()
            await app.state.db.dispose()

    app = FastAPI(
        title="PicFilter API",
        version="1.0.0",
        description=(
            "Learn photo color styles from before/after pairs or reference photos, apply them at "
            "full resolution, export them as .cube 3D LUTs, and share them. Image-adaptive styles "
            "export the LUT fused with the weights averaged over the style's training images."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
    )
    app.add_middleware(RejectNonFiniteJSON)  # inside RequestIdMiddleware: its 422 gets the id
    app.add_middleware(RequestIdMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            ErrorShapeCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(  # outermost: also on the CORS, JSON-guard and request-id responses
        SecurityHeadersMiddleware,
        web_policy=web_csp(media_origins(settings)),
        hsts_max_age=settings.hsts_max_age_seconds,
    )
    install_error_handlers(app)

    from app.api import health

    app.include_router(health.router)
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(rate_limit("default"))])
    for router in _routers():
        api.include_router(router)
    app.include_router(api)
    add_method_not_allowed_routes(app)
    install_openapi(app, settings)
    # The web client (app/web): static files at `/`, after every API route.
    from app.web import mount_web

    mount_web(app)
    return app
