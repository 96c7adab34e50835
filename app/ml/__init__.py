"""PicFilter's ML core: 3D LUTs, ``.cube`` files, style learning and metrics (a plain library).

``app.ml`` imports nothing from the rest of ``app`` and no web, database or queue code. Importing
it (or :mod:`app.ml.lut`) does not import torch; learning and ``model.pt`` persistence do.

Entry points::

    from pathlib import Path
    from app.ml import learn_style, load_style, LUT3D, read_cube_file, read_cube_text, write_cube

    result = learn_style("auto", pairs=[(before, after), ...])   # LearnResult
    result.metrics["holdout"], result.lut     # error on held-out photos, baked 33^3 LUT
    graded = load_style(Path("style_dir")).apply(image, strength=0.8)

File names are ``Path`` objects and content is ``str``/``bytes``, in separate functions
(``read_cube_file`` / ``read_cube_text``, ``load_style`` / ``load_style_bytes``): a ``str`` is
never taken for a file name (see :mod:`app.ml.paths`).

The names below are imported on first use (PEP 562), so ``import app.ml.options`` (what the API
imports to check learn options) loads pydantic only, not numba, scipy or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.ml.base import FitFn, LearnInputError, ProgressFn, StyleModel, TrainingPair
    from app.ml.cube_export import (
        CubeParseError,
        dumps_cube,
        read_cube_file,
        read_cube_text,
        write_cube,
    )
    from app.ml.learn import (
        LearnResult,
        learn_style,
        load_style,
        load_style_bytes,
        save_style,
        save_style_bytes,
    )
    from app.ml.lut import LUT3D, LUTStyle, apply_torch, warmup
    from app.ml.lut_formats import read_lut
    from app.ml.options import OptionsError, validate_options

_WHERE = {
    "FitFn": "base",
    "LearnInputError": "base",
    "ProgressFn": "base",
    "StyleModel": "base",
    "TrainingPair": "base",
    "CubeParseError": "cube_export",
    "dumps_cube": "cube_export",
    "read_cube_file": "cube_export",
    "read_cube_text": "cube_export",
    "read_lut": "lut_formats",
    "write_cube": "cube_export",
    "LearnResult": "learn",
    "learn_style": "learn",
    "load_style": "learn",
    "load_style_bytes": "learn",
    "save_style": "learn",
    "save_style_bytes": "learn",
    "LUT3D": "lut",
    "LUTStyle": "lut",
    "apply_torch": "lut",
    "warmup": "lut",
    "OptionsError": "options",
    "validate_options": "options",
}

__all__ = [
    "CubeParseError",
    "FitFn",
    "LUT3D",
    "LUTStyle",
    "LearnInputError",
    "LearnResult",
    "OptionsError",
    "ProgressFn",
    "StyleModel",
    "TrainingPair",
    "apply_torch",
    "dumps_cube",
    "learn_style",
    "load_style",
    "load_style_bytes",
    "read_cube_file",
    "read_cube_text",
    "read_lut",
    "save_style",
    "save_style_bytes",
    "validate_options",
    "warmup",
    "write_cube",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'app.ml' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"app.ml.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
