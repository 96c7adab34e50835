"""``/api/v1`` routes the web client needs beyond the core contract (issue 13).

* ``GET /styles/{id}/lut``: the style's baked LUT as compact JSON, so that a browser can preview
  the look at any strength on its own (WebGL 3D texture or canvas) without a job per slider move.
* ``POST /jobs/results.zip``: the results of finished apply jobs as one zip ("download all").

Thin on purpose: visibility and ownership come from the existing services; the LUT file and the
results come from storage. Nothing here changes state.
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
import uuid
import zipfile
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Body
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.dependencies import CurrentUser, OptionalUser, SessionDep, StorageDep
from app.errors import Conflict
from app.models import JobStatus, JobType
from app.schemas.common import ErrorResponse
from app.schemas.job import ResultsZipRequest
from app.schemas.style import LutOut
from app.services import job_service, style_service
from app.storage import Storage

router = APIRouter(tags=["web client"])
_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (401, 404, 409)}


def _lut_json(text: bytes) -> dict[str, Any]:
    from app.ml.cube_export import read_cube_text

    lut = read_cube_text(text.decode("utf-8-sig"))
    table = lut.to_cube_order().astype(np.float64)  # (b, g, r, 3): red fastest in C order
    lo, hi = float(table.min()), float(table.max())
    span = hi - lo if hi > lo else 1.0
    codes = np.rint((table - lo) / span * 65535).astype("<u2")
    return {
        "size": lut.size,
        "domain_min": [float(v) for v in lut.domain_min],
        "domain_max": [float(v) for v in lut.domain_max],
        "lo": lo,
        "hi": lo + span,
        "data": base64.b64encode(codes.tobytes()).decode("ascii"),
    }


@router.get("/styles/{style_id}/lut", response_model=LutOut, responses=_ERRORS)
async def get_style_lut(
    style_id: uuid.UUID, user: OptionalUser, session: SessionDep, storage: StorageDep
) -> Any:
    """(public for public/unlisted styles) The style's baked LUT for a client-side preview.

    Image-adaptive styles (``adaptive_3dlut``) give the LUT of their averaged weights, as their
    export does: their full-resolution apply adapts to each photo and may differ a little. A style
    without a model yet is a 409 ``style_not_ready``."""
    style = await style_service.get_visible_style(session, style_id, user)
    if not style.lut_key:
        raise Conflict(
            "The style has no LUT yet: learn or import one first", code="style_not_ready"
        )
    text = await to_thread.run_sync(storage.get_bytes, style.lut_key)
    out = await to_thread.run_sync(_lut_json, text)
    return {**out, "lut_key_version": style.lut_key}


def _result_name(result: dict[str, Any], key: str) -> str:
    if result.get("filename"):
        return os.path.basename(str(result["filename"]))
    query = parse_qs(urlsplit(str(result.get("result_url", ""))).query)
    name = (query.get("filename") or [""])[0]
    if not name:
        disposition = (query.get("response-content-disposition") or [""])[0]
        found = re.search(r'filename="([^"]+)"', disposition)
        name = found.group(1) if found else ""
    return os.path.basename(name) or os.path.basename(key)


def _write_zip(storage: Storage, entries: list[tuple[str, str]]) -> str:
    fd, path = tempfile.mkstemp(prefix="picfilter-results-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            for name, key in entries:
                with storage.open_stream(key) as src, zf.open(name, "w", force_zip64=True) as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


@router.post(
    "/jobs/results.zip",
    response_class=FileResponse,
    responses={**_ERRORS, 200: {"content": {"application/zip": {}}}},
)
async def results_zip(
    data: Annotated[ResultsZipRequest, Body()],
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
) -> FileResponse:
    """The results of the caller's completed ``apply_style`` jobs as one zip (stored, not
    recompressed), named as their single downloads. Another user's job is a 404; a job that is
    not a completed apply is a 409 ``job_not_completed``."""
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    for job_id in dict.fromkeys(data.job_ids):
        job = await job_service.get_job(session, user, job_id)
        result = job.result or {}
        if job.type != JobType.apply_style or job.status != JobStatus.completed:
            raise Conflict(
                f"Job {job_id} is not a completed apply job",
                code="job_not_completed",
                details={"job_id": str(job_id), "status": job.status.value},
            )
        key = str(result["result_key"])
        name = _result_name(result, key)
        stem, ext = os.path.splitext(name)
        n = 1
        while name in seen:
            n += 1
            name = f"{stem}-{n}{ext}"
        seen.add(name)
        entries.append((name, key))
    path = await to_thread.run_sync(_write_zip, storage, entries)
    return FileResponse(
        path,
        media_type="application/zip",
        filename="picfilter-results.zip",
        background=BackgroundTask(os.unlink, path),
    )
