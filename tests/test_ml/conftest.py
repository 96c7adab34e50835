from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path


def reference_trilinear(
    table: np.ndarray,
    rgb: np.ndarray,
    domain_min: np.ndarray | None = None,
    domain_max: np.ndarray | None = None,
) -> np.ndarray:
    """Independent exact trilinear lookup in float64, written for the tests only.

    ``table[r, g, b, c]`` (N, N, N, 3); ``rgb`` (..., 3) floats; inputs are rescaled from the
    domain to [0, 1] and clamped. Loops over the 8 cell corners explicitly.
    """
    t = np.asarray(table, np.float64)
    n = t.shape[0]
    x = np.asarray(rgb, np.float64).reshape(-1, 3)
    lo_d = np.zeros(3) if domain_min is None else np.asarray(domain_min, np.float64)
    hi_d = np.ones(3) if domain_max is None else np.asarray(domain_max, np.float64)
    pos = np.clip((x - lo_d) / (hi_d - lo_d), 0.0, 1.0) * (n - 1)
    base = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    frac = pos - base
    out = np.zeros_like(x)
    for corner in range(8):
        offs = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        weight = np.prod(np.where(offs == 1, frac, 1.0 - frac), axis=1)
        idx = base + offs
        out += weight[:, None] * t[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out.reshape(np.shape(rgb))


def quantize(values: np.ndarray, maxv: int = 255) -> np.ndarray:
    """Round-half-up and clip to integer codes, as an image encoder would."""
    return np.clip(np.floor(np.asarray(values) * maxv + 0.5), 0, maxv)


def make_photo(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A small synthetic 'photo' (uint8): smooth gradients plus soft color blobs, so that it
    covers a broad, natural-looking part of the color cube."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    base = rng.uniform(0.25, 0.7, 3)
    grad = rng.normal(0, 0.3, (2, 3))
    img += base + yy[..., None] * grad[0] + xx[..., None] * grad[1]
    for _ in range(12):
        cy, cx = rng.random(2) * [height / max(height, width), width / max(height, width)]
        radius = rng.uniform(0.05, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        img += blob[..., None] * rng.normal(0, 0.25, 3)
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="session")
def trilinear_ref() -> Callable[..., np.ndarray]:
    return reference_trilinear


@pytest.fixture(scope="session")
def photo() -> Callable[..., np.ndarray]:
    return make_photo
