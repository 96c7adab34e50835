"""The pair maker of ``python -m bench real_edits``: deterministic, and every per-photo
change really changes the photo the way its name says (tiny synthetic images, no shared data)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from app.ml.lut import LUT3D
from app.ml.metrics import psnr
from bench.real_edits import (
    EditParams,
    _decode,
    _local_gain_fallback,
    edit_plan,
    make_after,
    white_balance_matrix,
)

NAMES = [f"photo{i}.jpg" for i in range(10)]
PLAIN = EditParams(ev=0.0, kelvin=0.0, local="none", strength=0.0, extent=0.0)


def _lin(img: np.ndarray) -> np.ndarray:
    return np.asarray(_decode(img.astype(np.float64) / 255.0))


def _mid(img: np.ndarray) -> np.ndarray:
    """Pixels well inside the range (no clipping at either end), as a mask."""
    return np.all((img > 20) & (img < 200), axis=-1)


def test_plan_is_seeded_and_within_the_ranges() -> None:
    a, b = edit_plan(NAMES, seed=3), edit_plan(list(reversed(NAMES)), seed=3)
    assert a == b
    assert edit_plan(NAMES, seed=4) != a
    assert all(-1.0 <= p.ev <= 1.0 and -600.0 <= p.kelvin <= 600.0 for p in a.values())
    kinds = [p.local for p in a.values()]
    assert kinds.count("grad") == 3
    assert kinds.count("vignette") == 3
    assert len({round(p.ev, 6) for p in a.values()}) == len(NAMES)


def test_the_same_edit_gives_the_same_bytes(photo: Callable[..., np.ndarray]) -> None:
    before = photo(1, 48, 64)
    look = LUT3D(np.sqrt(LUT3D.identity(9).table))
    for params in edit_plan(NAMES, seed=5).values():
        first, second = make_after(before, look, params), make_after(before, look, params)
        assert first.dtype == np.uint8
        assert first.shape == before.shape
        assert np.array_equal(first, second)


def test_plain_edit_is_only_the_jpeg_roundtrip(photo: Callable[..., np.ndarray]) -> None:
    before = photo(2, 48, 64)
    after = make_after(before, LUT3D.identity(17), PLAIN)
    assert not np.array_equal(after, before)  # re-encoded...
    assert psnr(after, before) > 30  # ...at a high quality
    np.testing.assert_allclose(white_balance_matrix(0.0), np.eye(3), atol=1e-9)


def test_exposure_is_a_gain_in_linear_light(photo: Callable[..., np.ndarray]) -> None:
    before = (60 + photo(3, 48, 64).astype(np.int64) * 80 // 255).astype(np.uint8)  # no clipping
    up = make_after(before, LUT3D.identity(17), EditParams(1.0, 0.0, "none", 0.0, 0.0))
    down = make_after(before, LUT3D.identity(17), EditParams(-1.0, 0.0, "none", 0.0, 0.0))
    keep = _mid(before) & _mid(up) & _mid(down)
    assert keep.mean() > 0.5
    ratio_up = np.median(_lin(up)[keep] / _lin(before)[keep])
    ratio_down = np.median(_lin(down)[keep] / _lin(before)[keep])
    assert ratio_up == pytest.approx(2.0, rel=0.08)
    assert ratio_down == pytest.approx(0.5, rel=0.08)


def test_white_balance_shift_warms_or_cools(photo: Callable[..., np.ndarray]) -> None:
    before = photo(4, 48, 64)
    warm = make_after(before, LUT3D.identity(17), EditParams(0.0, 600.0, "none", 0.0, 0.0))
    cool = make_after(before, LUT3D.identity(17), EditParams(0.0, -600.0, "none", 0.0, 0.0))
    keep = _mid(before) & _mid(warm) & _mid(cool)

    def red_over_blue(img: np.ndarray) -> float:
        lin = _lin(img)[keep]
        return float(np.median(lin[:, 0] / lin[:, 2]))

    base = red_over_blue(before)
    assert red_over_blue(warm) > base * 1.05
    assert red_over_blue(cool) < base / 1.05


def test_sky_filter_darkens_and_blues_the_top_only(photo: Callable[..., np.ndarray]) -> None:
    before = np.full((64, 48, 3), 150, np.uint8)
    plain = make_after(before, LUT3D.identity(17), PLAIN)
    grad = make_after(before, LUT3D.identity(17), EditParams(0.0, 0.0, "grad", 0.5, 0.5))
    top, bottom = _lin(grad[:4]).mean(axis=(0, 1)), _lin(grad[-8:]).mean(axis=(0, 1))
    assert top.sum() < 0.9 * bottom.sum()
    assert top[2] / top[0] > 1.2 * bottom[2] / bottom[0]
    assert np.abs(grad[-20:].astype(int) - plain[-20:]).max() <= 2


def test_vignette_darkens_the_corners(photo: Callable[..., np.ndarray]) -> None:
    before = np.full((64, 64, 3), 150, np.uint8)
    vig = make_after(before, LUT3D.identity(17), EditParams(0.0, 0.0, "vignette", 0.4, 0.3))
    center, corner = _lin(vig[28:36, 28:36]).mean(), _lin(vig[:4, :4]).mean()
    assert corner < 0.75 * center
    assert abs(int(vig[32, 32, 1]) - 150) <= 2


def test_the_look_is_applied(photo: Callable[..., np.ndarray]) -> None:
    before = photo(6, 48, 64)
    invert = LUT3D(1.0 - LUT3D.identity(9).table)
    after = make_after(before, invert, PLAIN)
    assert psnr(after, 255 - before) > 30


def test_local_gain_fallback_of_a_plain_copy_is_one(photo: Callable[..., np.ndarray]) -> None:
    before = photo(7, 48, 64)
    gain = _local_gain_fallback(before, before)
    assert gain["n_edges"] > 1000
    assert gain["p99"] == pytest.approx(1.0)
    assert gain["p999"] == pytest.approx(1.0)
