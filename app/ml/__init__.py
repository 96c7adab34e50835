"""PicFilter's ML core: 3D LUTs, ``.cube`` files, style learning and metrics (a plain library).

``app.ml`` imports nothing from the rest of ``app`` and no web, database or queue code. Importing
it (or :mod:`app.ml.lut`) does not import torch; learning and ``model.pt`` persistence do.

Entry points::

    from pathlib import Path
    from app.ml import learn_style, load_style, LUT3D, read_cube_file, read_cube_text, write_cube

    result = learn_style("dlut", pairs=[(before, after)])   # LearnResult
    result.metrics["delta_e2000_mean"], result.lut           # held-out metrics, baked 33^3 LUT
    graded = load_style(Path("style_dir")).apply(image, strength=0.8)

File names are ``Path`` objects and content is ``str``/``bytes``, in separate functions
(``read_cube_file`` / ``read_cube_text``, ``load_style`` / ``load_style_bytes``): a ``str`` is
never taken for a file name (see :mod:`app.ml.paths`).
"""

from __future__ import annotations

from app.ml.base import FitFn, ProgressFn, StyleModel, TrainingPair
from app.ml.cube_export import (
    CubeParseError,
    dumps_cube,
    read_cube_file,
    read_cube_text,
    read_lut,
    write_cube,
)
from app.ml.learn import (
    LearnInputError,
    LearnResult,
    learn_style,
    load_style,
    load_style_bytes,
    save_style,
    save_style_bytes,
)
from app.ml.lut import LUT3D, LUTStyle, apply_torch, warmup

__all__ = [
    "LUT3D",
    "CubeParseError",
    "FitFn",
    "LUTStyle",
    "LearnInputError",
    "LearnResult",
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
    "warmup",
    "write_cube",
]
