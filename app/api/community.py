"""`/api/v1` community routes (filled in by the community feature)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["community"])
