"""The OpenAPI document says what the routes do (checked by schemathesis, ``make test-fuzz``).

* :func:`allowed_methods`: the ``Allow`` header of a 405, from every route of the path (Starlette
  puts only the first partially matching route's methods there: ``POST`` alone on ``/styles``,
  which also answers ``GET``). A literal path wins over a template that would also match it
  (``/images/upload`` over ``/images/{image_id}``), as in routing.
* :func:`add_method_not_allowed_routes`: ``GET /images/upload`` would be routed to
  ``GET /images/{image_id}`` and fail its UUID check (422); a literal path gets a hidden route
  answering 405 for the methods only a template would otherwise take.
* :func:`install_openapi`: the document also at ``/openapi.json`` (where tools look for it) and
  the limits that come from settings written into it (``maxItems`` of a learn request's lists is
  ``MAX_LEARN_ITEMS``, which the service enforces).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route

from app.config import Settings
from app.schemas.common import ErrorResponse

SHADOW = "method_not_allowed"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: these statuses answer in the error shape."""
    return {code: {"model": ErrorResponse} for code in codes}


@dataclass(frozen=True)
class _Endpoint:
    path: str
    methods: frozenset[str]
    regex: re.Pattern[str]
    params: int


def _endpoints(routes: Sequence[BaseRoute]) -> list[_Endpoint]:
    """Every route with methods, included routers flattened (FastAPI >= 0.13x includes them
    lazily: ``iter_route_contexts``), the hidden 405 routes left out."""
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    items: Iterable[Any] = flatten(list(routes)) if flatten else routes
    found = []
    for item in items:
        methods = getattr(item, "methods", None)
        regex = getattr(item, "path_regex", None)
        if not methods or regex is None or getattr(item, "name", None) == SHADOW:
            continue
        params = len(getattr(item, "param_convertors", None) or {})
        found.append(_Endpoint(str(item.path), frozenset(methods), regex, params))
    return found


def allowed_methods(routes: Sequence[BaseRoute], path: str) -> set[str]:
    """Methods the routes answer on ``path``, the most literal matching template first."""
    matching = [e for e in _endpoints(routes) if e.regex.match(path)]
    if not matching:
        return set()
    fewest = min(e.params for e in matching)
    return {m for e in matching if e.params == fewest for m in e.methods}


def add_method_not_allowed_routes(app: FastAPI) -> None:
    """A hidden 405 route for each literal path and each method that only a template route
    would take there (``GET /api/v1/images/upload``)."""
    endpoints = _endpoints(app.router.routes)
    shadows: list[Route] = []
    for path in sorted({e.path for e in endpoints if not e.params}):
        own = allowed_methods(app.router.routes, path)
        taken = {m for e in endpoints if e.params and e.regex.match(path) for m in e.methods}
        missing = taken - own
        if missing:
            shadows.append(
                Route(
                    path, not_allowed, methods=sorted(missing), name=SHADOW, include_in_schema=False
                )
            )
    app.router.routes[:0] = shadows


async def not_allowed(request: Request) -> NoReturn:
    """The hidden 405 routes' endpoint; the error handler adds ``Allow`` (every method of the
    path, :func:`allowed_methods`), as for any other 405."""
    raise HTTPException(405, "Method Not Allowed")


def document_limits(schema: dict[str, Any], settings: Settings) -> None:
    learn = schema.get("components", {}).get("schemas", {}).get("LearnRequest", {})
    for name in ("pairs", "reference_image_ids"):
        prop = learn.get("properties", {}).get(name)
        if prop is not None:
            prop["maxItems"] = settings.max_learn_items


def install_openapi(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            document_limits(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())
