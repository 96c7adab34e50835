"""Rules the two sides of styles share: the API side (:mod:`app.services.style_service`,
async) and the worker side (:mod:`app.services.style_jobs`, sync) both import this module and
never each other.

* :func:`slugify`: the file-name-safe form of a style name (export and result file names);
* :func:`settle_learn_update`: the one rule for a style whose learn job ended without a model
  (failed, cancelled, lost): it goes back to ``ready`` if it still has a model (the previous
  one), else to ``failed``, and only while the style still belongs to that learn
  (``model_version``) and is still ``training``; a statement, so the async and the sync session
  run the very same rule;
* :func:`rating_average`: the plain mean of a style's ratings shown as ``rating_avg``;
* :func:`public_metrics`: a style's metrics as clients see them (without internal records).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Update, case, update

from app.models import Style, StyleStatus
from app.models.base import utcnow


def slugify(name: str) -> str:
    """A file-name-safe slug of a style name.

    >>> slugify("Teal & Orange!")
    'teal-orange'
    >>> slugify("!!!")
    'style'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60].strip("-") or "style"


#: Export formats and the extension of their files (the writers are in app.ml.lut_formats).
EXPORT_FORMATS = {
    "cube": "cube",
    "haldclut": "png",
    "3dl": "3dl",
    "spi3d": "spi3d",
    "csp": "csp",
    "icc": "icc",
}
HALD_LEVELS = (8, 12, 16)
DEFAULT_HALD_LEVEL = 8


def export_filename(style_name: str, fmt: str, size: int, level: int | None = None) -> str:
    """The download name of an export: ``{slug}_{size}.{ext}``, ``{slug}_hald{level}.png``.

    >>> export_filename("Teal & Orange", "3dl", 17)
    'teal-orange_17.3dl'
    >>> export_filename("Teal & Orange", "haldclut", 33, 12)
    'teal-orange_hald12.png'
    """
    if fmt == "haldclut":
        return f"{slugify(style_name)}_hald{level}.png"
    return f"{slugify(style_name)}_{size}.{EXPORT_FORMATS[fmt]}"


def learn_stop_reason(error: str | None, *, cancelled: bool) -> str:
    """The ``error`` a settled style shows: the job's error, else why the learn stopped."""
    if error:
        return error
    return "learning was cancelled" if cancelled else "learning stopped"


def settle_learn_update(style_id: uuid.UUID, model_version: int, reason: str) -> Update:
    """The UPDATE that settles a style left in ``training`` by the learn of ``model_version``:
    ``ready`` if it still has a model, else ``failed`` (see the module doc). It matches no row
    once the style left ``training`` or moved on to a newer learn."""
    return (
        update(Style)
        .where(
            Style.id == style_id,
            Style.model_version == model_version,
            Style.status == StyleStatus.training,
        )
        .values(
            status=case(
                (Style.model_key.is_(None), StyleStatus.failed.value),
                else_=StyleStatus.ready.value,
            ),
            error=reason,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def rating_average(rating_sum: int, rating_count: int) -> float | None:
    """The plain mean of the ratings, 2 decimals; None when unrated.

    >>> rating_average(9, 2), rating_average(0, 0)
    (4.5, None)
    """
    return round(rating_sum / rating_count, 2) if rating_count > 0 else None


#: Keys of ``metrics["coverage"]`` kept for the apply job only: the packed cell record (~820
#: characters per style, in every style list) means nothing to a client.
INTERNAL_COVERAGE_KEYS = ("cells",)


def public_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """``metrics`` as the API shows them: ``coverage`` without its packed cells (the apply job
    reads them from the stored metrics and reports ``coverage.unseen_share`` per photo).

    >>> public_metrics({"holdout": None, "coverage": {"grid": 17, "seen_cells": 9, "cells": "AA"}})
    {'holdout': None, 'coverage': {'grid': 17, 'seen_cells': 9}}
    >>> public_metrics(None) is None
    True
    """
    if not metrics or not isinstance(metrics.get("coverage"), dict):
        return metrics
    coverage = {k: v for k, v in metrics["coverage"].items() if k not in INTERNAL_COVERAGE_KEYS}
    return {**metrics, "coverage": coverage}
