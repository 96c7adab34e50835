"""The worker's model registry (architecture document: models load once per worker).

Learned styles are small and stored per style, so what is worth loading once is: the published
image-adaptive 3D-LUT weights (the default starting point of ``adaptive_3dlut`` learning), the
published NILUT, and the compiled LUT applier (its JIT warm-up). The weights ship inside the
package (:mod:`app.ml.weights`); the ``PUBLISHED_WEIGHTS_DIR`` setting may point to another folder
of the same layout. Missing weights there are not an error (a warning): learning then starts from
scratch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.config import Settings
from app.ml import weights

log = logging.getLogger("picfilter.worker")


def published_weights_dir(settings: Settings) -> Path:
    """Where the published weights lie: ``PUBLISHED_WEIGHTS_DIR`` when set, else the copy that
    ships inside the package (:mod:`app.ml.weights`)."""
    return settings.published_weights_dir or weights.PACKAGED


def load_model_registry(settings: Settings) -> dict[str, Any]:
    registry: dict[str, Any] = {"dlut": None}
    try:
        from app.ml import lut

        warm = getattr(lut, "warmup", None)
        if warm is not None:
            warm()
    except Exception:  # the worker still runs; the first apply compiles instead
        log.warning("LUT applier warm-up failed", exc_info=True)
    root = published_weights_dir(settings)
    adaptive = weights.adaptive_3dlut_dir(root)
    if (adaptive / "LUTs.pth").is_file() and (adaptive / "classifier.pth").is_file():
        registry["adaptive_3dlut_init"] = str(adaptive)
    else:
        log.warning("no adaptive 3D LUT weights in %s: learning starts from scratch", root)
    nilut = weights.nilut_checkpoint(root)
    if nilut.is_file():
        registry["nilut_published"] = str(nilut)
    return registry
