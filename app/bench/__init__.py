"""Benchmarks run by ``make bench`` (``python -m app.bench [NAME ...]``).

Each module in this package with a ``run() -> None`` function is one benchmark; it prints its own
table. Benchmarks measure; they never assert timings.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """Where ``../shared/data`` lies (``PICFILTER_SHARED_DATA`` overrides)."""
    env = os.environ.get("PICFILTER_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
