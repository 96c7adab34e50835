"""Which colors a style was taught: the cells of the sRGB cube its training photos touch.

A learned style is exact on colors its examples show and extrapolates everywhere else; on
``python -m bench ml_quality`` (real looks learned from 3 pairs, scored on 5 other photos) almost
all of the error sits in the test photos' colors that no training photo showed, and from ONE
pair it sits there by construction (the benchmark prints both). So a style records the cells of
a :data:`GRID`-node lattice over the sRGB cube that its training "before" images touch
(:meth:`ColorCoverage.from_images`), and applying it to a photo can say what share of that
photo's pixels fall outside them (:meth:`ColorCoverage.unseen_share`): where the look there is
the model's guess, and a pair showing those colors would teach it.

The record is a bitmask of ``GRID ** 3`` cells (cell ``(i, j, k)`` holds the colors with
``floor(c * (GRID - 1))`` equal to ``i, j, k``, the top value in the last cell), packed and
base64-encoded for ``metrics["coverage"]`` (:meth:`ColorCoverage.to_dict`, ~820 characters).

    >>> import numpy as np
    >>> blue = np.zeros((8, 8, 3)); blue[..., 2] = 0.8
    >>> red = np.zeros((8, 8, 3)); red[..., 0] = 0.8
    >>> cov = ColorCoverage.from_images([blue])
    >>> cov.unseen_share(blue), cov.unseen_share(red)
    (0.0, 1.0)
    >>> ColorCoverage.from_dict(cov.to_dict()).unseen_share(np.concatenate([blue, red]))
    0.5
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml.metrics import to_float

GRID = 17  # lattice nodes per axis: 16 cells of 16 8-bit levels each
SAMPLE_PIXELS = 250_000  # pixels of a photo looked at, at most (evenly spaced)


def sample_pixels(image: np.ndarray, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """Up to ``max_pixels`` evenly spaced pixels of ``image`` (``(..., 3)``), as ``(N, 1, 3)``
    (an image shape, so that color conversions take it as they are)."""
    flat = np.asarray(image).reshape(-1, 3)
    if flat.shape[0] > max_pixels:
        flat = flat[np.linspace(0, flat.shape[0] - 1, max_pixels).astype(np.int64)]
    return flat.reshape(-1, 1, 3)


def color_cells(image: np.ndarray, grid: int = GRID, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """The flat cell index (``(i * grid + j) * grid + k``) of up to ``max_pixels`` evenly
    spaced pixels of ``image`` (sRGB, ``(..., 3)``, uint8 / uint16 / float)."""
    flat = sample_pixels(image, max_pixels).reshape(-1, 3)
    idx = np.minimum((to_float(flat) * (grid - 1)).astype(np.int64), grid - 2)
    return (idx[:, 0] * grid + idx[:, 1]) * grid + idx[:, 2]


@dataclass(frozen=True)
class ColorCoverage:
    """The cells of the sRGB cube a style's training photos touch (``seen``: bool, grid**3)."""

    grid: int
    seen: np.ndarray

    @classmethod
    def from_images(cls, images: Iterable[np.ndarray], grid: int = GRID) -> ColorCoverage:
        seen = np.zeros(grid**3, bool)
        for image in images:
            seen[color_cells(image, grid)] = True
        return cls(grid, seen)

    def unseen_share(self, image: np.ndarray) -> float:
        """Share of ``image``'s pixels (sRGB) in cells no training photo touched (0 for an
        empty image)."""
        cells = color_cells(image, self.grid)
        if cells.size == 0:
            return 0.0
        return round(float(1.0 - self.seen[cells].mean()), 4)

    def photo_unseen_share(self, pixels: np.ndarray, icc: bytes | None) -> float:
        """:meth:`unseen_share` of a decoded photo tagged ``icc`` (uint8 / uint16, any color
        space): a sample of its pixels is taken into the working space first, as learning took
        the training photos. ``ValueError`` when the profile cannot be converted."""
        from app.ml.imaging import to_working

        return self.unseen_share(to_working(sample_pixels(pixels), icc))

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "seen_cells": int(self.seen.sum()),
            "cells": base64.b64encode(np.packbits(self.seen).tobytes()).decode("ascii"),
            "what": (
                f"cells of a {self.grid}^3 lattice over the sRGB cube that the training photos' "
                "colors touch; on other colors the style extrapolates"
            ),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ColorCoverage:
        """The record :meth:`to_dict` wrote; ``ValueError`` when it is not one."""
        try:
            grid = int(value["grid"])
            raw = base64.b64decode(str(value["cells"]), validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not a color coverage record: {exc}") from exc
        if not 2 <= grid <= 65 or len(raw) != (grid**3 + 7) // 8:
            raise ValueError(f"not a color coverage record: grid {grid}, {len(raw)} bytes")
        seen = np.unpackbits(np.frombuffer(raw, np.uint8))[: grid**3].astype(bool)
        return cls(grid, seen)
