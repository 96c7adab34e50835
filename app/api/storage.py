"""`/api/v1` storage routes (filled in by the storage feature)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["storage"])
