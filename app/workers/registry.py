"""The worker's model registry (architecture document: models load once per worker).

Learned styles are small and stored per style, so what is worth loading once is: the published
image-adaptive 3D-LUT weights (the default starting point of ``adaptive_3dlut`` learning), the
published NILUT, and the compiled LUT applier (its JIT warm-up). Missing published weights are
not an error: learning then starts from scratch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.config import Settings

log = logging.getLogger("picfilter.worker")


def published_weights_dir(settings: Settings) -> Path | None:
    candidates = [settings.published_weights_dir] if settings.published_weights_dir else []
    here = Path(__file__).resolve().parents[3] / "shared" / "data" / "models"
    candidates.append(here)
    for c in candidates:
        if c is not None and c.is_dir():
            return c
    return None


def load_model_registry(settings: Settings) -> dict[str, Any]:
    registry: dict[str, Any] = {"dlut": None}
    try:
        from app.ml import lut

        warm = getattr(lut, "warmup", None)
        if warm is not None:
            warm()
    except Exception:  # the worker still runs; the first apply compiles instead
        log.warning("LUT applier warm-up failed", exc_info=True)
    weights = published_weights_dir(settings)
    if weights is not None:
        adaptive = weights / "adaptive_3dlut"
        if (adaptive / "LUTs.pth").is_file():
            registry["adaptive_3dlut_init"] = str(adaptive)
        nilut = weights / "nilut" / "nilutx3style.pt"
        if nilut.is_file():
            registry["nilut_published"] = str(nilut)
    return registry
