"""Shared contract of the learnable style models.

Every model in :mod:`app.ml` (``dlut``, ``nilut``, ``adaptive_3dlut``, the unpaired
``transfer`` and ``imported`` LUTs) produces a :class:`StyleModel`. The common learning
entry point (:func:`app.ml.learn_style`) and the workers only speak this protocol:

* ``kind`` names the model (``"dlut"``, ``"nilut"``, ``"adaptive_3dlut"``, ``"transfer"``,
  ``"imported"``).
* ``apply(image, strength)`` grades an HxWx3 uint8/uint16/float32 array (same dtype out).
  Image-adaptive models use the image itself; the others apply their baked LUT.
* ``bake(size)`` returns the :class:`app.ml.lut.LUT3D` that stands for the model (for
  image-adaptive models: the weights averaged over the training images).
* ``state_dict()`` / ``from_state_dict()`` make the model saveable with ``torch.save`` as a
  plain dict of tensors, numbers and strings (``weights_only=True`` loads it back).

Fitting functions share one signature (:data:`FitFn`):

``fit(pairs, *, options, time_budget_s, progress, device) -> StyleModel``

* ``pairs``: list of :class:`TrainingPair` (float32 HxWx3 images in [0, 1], same shape, and a
  boolean ``holdout`` mask of pixels that the fit must not use; the learning entry point
  measures held-out metrics on them).
* ``options``: model-specific knobs (documented by each model), unknown keys ignored.
* ``time_budget_s``: wall-clock budget; a fit stops early rather than overrun it.
* ``progress(fraction, message)``: called now and then with 0..1.
* ``device``: a ``torch.device`` (CUDA when present, CPU otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

    from app.ml.lut import LUT3D

ProgressFn = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that ignores everything."""


class LearnInputError(ValueError):
    """The images, arguments or options given to :func:`app.ml.learn_style` cannot be learned
    from: a bad input, never worth retrying (:class:`app.ml.options.OptionsError` is one)."""


@dataclass(frozen=True)
class TrainingPair:
    """One before/after example: float32 HxWx3 arrays in [0, 1] and a held-out pixel mask."""

    before: np.ndarray
    after: np.ndarray
    holdout: np.ndarray  # bool HxW; True = held out from fitting


@runtime_checkable
class StyleModel(Protocol):
    kind: str

    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray: ...

    def bake(self, size: int = 33) -> LUT3D: ...

    def state_dict(self) -> dict[str, Any]: ...


class FitFn(Protocol):
    def __call__(
        self,
        pairs: list[TrainingPair],
        *,
        options: dict[str, Any],
        time_budget_s: float,
        progress: ProgressFn,
        device: torch.device,
    ) -> StyleModel: ...
