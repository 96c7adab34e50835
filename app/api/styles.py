"""`/api/v1` styles routes (filled in by the styles feature)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["styles"])
