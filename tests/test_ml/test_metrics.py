from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from app.ml.lut import LUT3D, identity_table
from app.ml.metrics import (
    delta_e2000,
    delta_e2000_map,
    lab_to_srgb,
    lightness_reversals,
    local_gain,
    lut_gain,
    psnr,
    srgb_to_lab,
    to_float,
)


def test_psnr_values() -> None:
    a = np.full((10, 10, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[..., 0] += 1  # MSE = (1/255)^2 / 3
    assert psnr(a, b) == pytest.approx(10 * math.log10(3 * 255**2), rel=1e-9)
    assert psnr(a, b) == pytest.approx(psnr(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257))
    assert psnr(a / 255.0, b / 255.0) == pytest.approx(psnr(a, b))


def test_delta_e2000_matches_colour_science_and_sharma_pair() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
    # Sharma, Wu, Dalal (2005) test pair 1: Lab (50, 2.6772, -79.7751) vs (50, 0, -82.7485): 2.0425
    assert colour.delta_E(
        [50, 2.6772, -79.7751], [50, 0, -82.7485], method="CIE 2000"
    ) == pytest.approx(2.0425, abs=1e-4)
    rng = np.random.default_rng(0)
    a = rng.random((500, 3))
    b = np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1)
    expected = colour.delta_E(
        colour.XYZ_to_Lab(colour.sRGB_to_XYZ(a)),
        colour.XYZ_to_Lab(colour.sRGB_to_XYZ(b)),
        method="CIE 2000",
    )
    np.testing.assert_allclose(delta_e2000_map(a, b), expected, rtol=1e-9)
    stats = delta_e2000(a, b)
    assert stats["mean"] == pytest.approx(expected.mean())
    assert stats["p95"] == pytest.approx(np.percentile(expected, 95))
    assert delta_e2000(a, a)["mean"] == 0.0


def test_delta_e2000_subsample_and_errors() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    full = delta_e2000(a, b)["mean"]
    assert delta_e2000(a, b, max_pixels=5000)["mean"] == pytest.approx(full, rel=0.05)
    with pytest.raises(ValueError, match="shapes differ"):
        delta_e2000(a, b[:10])
    with pytest.raises(TypeError):
        to_float(np.zeros((2, 2, 3), np.int32))


def test_lab_round_trip_and_agreement() -> None:
    rgb = np.random.default_rng(2).random((1000, 3))
    lab = srgb_to_lab(rgb)
    np.testing.assert_allclose(lab_to_srgb(lab), rgb, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
    reference = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(rgb))
    assert np.abs(lab - reference).max() < 0.05
    assert srgb_to_lab(np.array([1.0, 1.0, 1.0]))[0] == pytest.approx(100.0, abs=1e-6)


def test_lightness_reversals() -> None:
    assert lightness_reversals(LUT3D.identity(9))["max_drop"] < 1e-9
    inverted = LUT3D(1.0 - identity_table(9))
    result = lightness_reversals(inverted)
    assert result["max_drop"] > 50
    assert result["frac_ramps"] == 1.0


def _midtones(seed: int = 0, size: int = 64) -> np.ndarray:
    """Random colors in 0.35..0.65 (so a 2x contrast around 0.5 never clips)."""
    return 0.35 + 0.3 * np.random.default_rng(seed).random((size, size, 3))


def test_local_gain_identity_is_one() -> None:
    img = _midtones()
    gain = local_gain(img, img)
    assert gain["p99"] == pytest.approx(1.0)
    assert gain["p999"] == pytest.approx(1.0)
    assert gain["n_edges"] == 2 * 64 * 63  # every neighbour pair of random colors counts
    as_u8 = (img * 255 + 0.5).astype(np.uint8)
    assert local_gain(as_u8, as_u8)["p999"] == pytest.approx(1.0)
    assert lut_gain(LUT3D.identity(17))["p999"] == pytest.approx(1.0, abs=1e-5)


def test_local_gain_of_a_2x_contrast_curve_is_about_2() -> None:
    img = _midtones()
    gain = local_gain(img, 0.5 + 2.0 * (img - 0.5))
    assert 1.9 < gain["p99"] <= gain["p999"] < 2.4
    table = np.clip(0.5 + 2.0 * (identity_table(17) - 0.5), 0.0, 1.0)
    lattice = lut_gain(LUT3D(table))
    assert 1.9 < lattice["p99"] < 3.0
    # a uniform 0.5x contrast halves every difference
    assert local_gain(img, 0.5 + 0.5 * (img - 0.5))["p999"] < 0.6


def test_local_gain_of_a_hard_threshold_is_huge() -> None:
    # a smooth ramp whose steps are ~1.4 dE76 apart, posterized to black / white at mid-grey
    ramp = np.linspace(0.3, 0.7, 40)
    img = np.repeat(np.stack([ramp] * 3, axis=-1)[None], 4, axis=0)
    gain = local_gain(img, (img > 0.5).astype(np.float64))
    assert gain["p999"] > 30
    assert lut_gain(LUT3D((identity_table(17) > 0.5).astype(np.float32)))["p999"] > 10


def test_local_gain_threshold_subset_and_errors() -> None:
    img = _midtones(1, 200)
    out = np.clip(0.5 + 1.5 * (img - 0.5) + 0.1 * np.sin(img * 9), 0, 1)
    full = local_gain(img, out)
    part = local_gain(img, out, max_pixels=20_000)
    assert part["n_edges"] <= 20_000 < full["n_edges"]
    assert part["p99"] == pytest.approx(full["p99"], rel=0.05)
    # steps below the threshold do not count; none at all gives zeros
    flat = np.full((8, 8, 3), 0.5)
    assert local_gain(flat, flat) == {"p99": 0.0, "p999": 0.0, "n_edges": 0}
    with pytest.raises(ValueError, match="shapes differ"):
        local_gain(img, img[:10])
    with pytest.raises(ValueError, match="HxWx3"):
        local_gain(img.reshape(-1, 3), img.reshape(-1, 3))


def test_lut_gain_sees_an_overshooting_table() -> None:
    # output values outside [0, 1] are measured as they are, not clipped
    steep = LUT3D(identity_table(17) * 3.0 - 1.0)
    assert lut_gain(steep)["p99"] > 2.5
