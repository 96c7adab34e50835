"""Image-difference metrics: PSNR, CIEDE2000 and a LUT banding (lightness reversal) score.

Inputs are sRGB arrays of shape ``(..., 3)``: uint8 (0..255), uint16 (0..65535) or float in
``[0, 1]`` (floats are clipped to ``[0, 1]``, as a saved image would be). CIEDE2000 uses
colour-science: sRGB (IEC 61966-2-1, D65) -> XYZ -> CIELAB (D65) -> ``colour.delta_E(...,
method="CIE 2000")``; about 50 ms per 100k pixel pairs on one core. :func:`srgb_to_lab` /
:func:`lab_to_srgb` are an exactly invertible pair (colour-science's sRGB matrix and its inverse)
for code that needs to go back and forth, such as :mod:`app.ml.transfer`.

Example::

    >>> import numpy as np
    >>> a = np.zeros((4, 4, 3), np.uint8)
    >>> psnr(a, a)
    inf
    >>> round(delta_e2000(a, a)["mean"], 6)
    0.0
"""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

import numpy as np

__all__ = [
    "delta_e2000",
    "delta_e2000_map",
    "lab_to_srgb",
    "lightness_reversals",
    "psnr",
    "srgb_to_lab",
    "to_float",
]


def to_float(image: np.ndarray) -> np.ndarray:
    """``image`` as float64 in ``[0, 1]`` (integers scaled by their dtype's maximum)."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise TypeError(f"expected uint8, uint16 or float pixels, got {arr.dtype}")


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = to_float(a), to_float(b)
    if fa.shape != fb.shape:
        raise ValueError(f"shapes differ: {fa.shape} vs {fb.shape}")
    if fa.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) RGB arrays, got {fa.shape}")
    return fa.reshape(-1, 3), fb.reshape(-1, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB with a peak of 1.0 (after scaling to ``[0, 1]``)."""
    fa, fb = _pair(a, b)
    mse = float(np.mean((fa - fb) ** 2)) if fa.size else 0.0
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(1.0 / mse))


@cache
def _colour() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Matplotlib related API features are not available"
        import colour
    return colour


@cache
def _srgb_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    colour = _colour()
    space = colour.RGB_COLOURSPACES["sRGB"]
    to_xyz = np.asarray(space.matrix_RGB_to_XYZ, np.float64)
    white = colour.xy_to_XYZ(space.whitepoint)
    return to_xyz, np.linalg.inv(to_xyz), np.asarray(white, np.float64)


def _decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0.04045) + 0.055) / 1.055) ** 2.4)


def _encode(v: np.ndarray) -> np.ndarray:
    v = np.maximum(v, 0.0)
    return np.where(
        v <= 0.0031308, v * 12.92, 1.055 * np.maximum(v, 0.0031308) ** (1 / 2.4) - 0.055
    )


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (float in [0, 1], or uint8/uint16) -> CIELAB (D65), float64, shape kept."""
    arr = np.asarray(rgb)
    f = to_float(arr) if not np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)
    to_xyz, _, white = _srgb_matrices()
    xyz = _decode(f) @ to_xyz.T
    return np.asarray(_colour().XYZ_to_Lab(xyz, _colour().XYZ_to_xy(white)), np.float64)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> sRGB float64 (not clipped; negative linear light is set to 0)."""
    _, to_rgb, white = _srgb_matrices()
    xyz = np.asarray(_colour().Lab_to_XYZ(np.asarray(lab, np.float64), _colour().XYZ_to_xy(white)))
    return np.asarray(_encode(xyz @ to_rgb.T), np.float64)


def delta_e2000_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 between two sRGB images (flattened to ``(P,)``)."""
    fa, fb = _pair(a, b)
    colour = _colour()
    lab_a = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(fa))
    lab_b = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(fb))
    return np.asarray(colour.delta_E(lab_a, lab_b, method="CIE 2000"), np.float64)


def delta_e2000(a: np.ndarray, b: np.ndarray, *, max_pixels: int | None = None) -> dict[str, float]:
    """CIEDE2000 statistics ``{"mean", "p95", "max"}`` between two sRGB images.

    ``max_pixels`` evaluates a deterministic, evenly spaced subset when the images are larger.
    """
    fa, fb = _pair(a, b)
    if fa.shape[0] == 0:
        return {"mean": 0.0, "p95": 0.0, "max": 0.0}
    if max_pixels is not None and fa.shape[0] > max_pixels:
        idx = np.linspace(0, fa.shape[0] - 1, max_pixels).astype(np.int64)
        fa, fb = fa[idx], fb[idx]
    de = delta_e2000_map(fa, fb)
    return {
        "mean": float(de.mean()),
        "p95": float(np.percentile(de, 95)),
        "max": float(de.max()),
    }


def lightness_reversals(
    lut: Any, *, n_ramps: int = 512, steps: int = 128, seed: int = 0
) -> dict[str, float]:
    """Banding risk of a LUT: how much output lightness falls along input ramps that only rise.

    Ramps go from black to random colors and from random colors to white (every RGB channel
    rises, so input lightness rises). Returns ``max_drop`` (largest single fall of L*, in L*
    units, summed along a ramp), ``mean_drop`` (over ramps) and ``frac_ramps`` (share of ramps
    whose lightness falls by more than 0.5 L*). ``lut`` is anything with ``apply(float32)``.
    """
    rng = np.random.default_rng(seed)
    ends = rng.random((n_ramps, 3))
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    half = n_ramps // 2
    up_from_black = ends[:half, None, :] * t
    up_to_white = ends[half:, None, :] + (1.0 - ends[half:, None, :]) * t
    ramps = np.concatenate([up_from_black, up_to_white]).astype(np.float32)
    out = np.clip(np.asarray(lut.apply(ramps), np.float64), 0.0, 1.0)
    light = srgb_to_lab(out)[..., 0]
    falls = np.clip(-np.diff(light, axis=1), 0.0, None).sum(axis=1)
    return {
        "max_drop": float(falls.max()),
        "mean_drop": float(falls.mean()),
        "frac_ramps": float(np.mean(falls > 0.5)),
    }
