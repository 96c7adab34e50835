"""The web client: static files in ``static/`` (index.html, css/, js/) served by the API process.

:func:`mount_web` serves ``index.html`` at ``/`` and the rest under ``/web/`` with Starlette's
``StaticFiles``. Nothing is mounted at ``/`` as a catch-all, so every other path (``/docs``,
``/api/v1/...``, unknown API paths with their JSON 404 or 405) behaves exactly as without the
client. Screens are addressed by the URL fragment (``/#/photos``), which never reaches the server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent / "static"


def mount_web(app: FastAPI) -> None:
    index = WEB_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    async def web_client() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
