"""`/api/v1` images routes (filled in by the images feature)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["images"])
