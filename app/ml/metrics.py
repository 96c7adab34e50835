"""Image-difference metrics: PSNR, CIEDE2000, local gain, LUT banding (lightness reversals).

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

Local gain (:func:`local_gain`, :func:`lut_gain`) measures how much a look tears neighbouring
colors apart: for each pair of neighbouring pixels (or lattice nodes) whose input colors differ by
at least ``threshold`` ΔE76, the output ΔE76 difference over the input one. Natural looks bend
colors smoothly (commercial film LUTs: p99.9 at most 2.6-3.7); blotches and posterization show as
gains of 7 and more. Identity gives exactly 1::

    >>> rng = np.random.default_rng(0)
    >>> img = rng.random((32, 32, 3))
    >>> g = local_gain(img, img)
    >>> round(g["p99"], 6), round(g["p999"], 6)
    (1.0, 1.0)
    >>> from app.ml.lut import LUT3D
    >>> round(lut_gain(LUT3D.identity(9))["p999"], 6)
    1.0
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
    "linear_to_srgb",
    "local_gain",
    "lut_gain",
    "psnr",
    "srgb_to_lab",
    "srgb_to_linear",
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


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (float) -> linear light (the IEC 61966-2-1 curve), float64."""
    return np.asarray(_decode(np.asarray(v, np.float64)), np.float64)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear light (float) -> sRGB-encoded values, float64; negative values become 0."""
    return np.asarray(_encode(np.asarray(v, np.float64)), np.float64)


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


_LAB_CHUNK = 1 << 20  # pixels per CIELAB conversion chunk (bounds the float64 temporaries)


def _lab32(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of (P, 3) float pixels as float32, converted in chunks (12.5 MP photos)."""
    out = np.empty(rgb.shape, np.float32)
    for start in range(0, rgb.shape[0], _LAB_CHUNK):
        out[start : start + _LAB_CHUNK] = srgb_to_lab(rgb[start : start + _LAB_CHUNK])
    return out


def _gain_stats(d_in: np.ndarray, d_out: np.ndarray, threshold: float) -> dict[str, float]:
    keep = d_in >= threshold
    n = int(keep.sum())
    if n == 0:
        return {"p99": 0.0, "p999": 0.0, "n_edges": 0}
    ratio = d_out[keep].astype(np.float64) / d_in[keep].astype(np.float64)
    p99, p999 = np.percentile(ratio, [99.0, 99.9])
    return {"p99": float(p99), "p999": float(p999), "n_edges": n}


def local_gain(
    before: np.ndarray,
    after: np.ndarray,
    *,
    threshold: float = 0.5,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """How much ``after`` tears apart neighbouring colors of ``before`` (HxWx3 sRGB images).

    For every pair of horizontally or vertically neighbouring pixels whose ``before`` colors
    differ by at least ``threshold`` ΔE76 (CIELAB, D65, via :func:`srgb_to_lab`), the ratio of
    their ``after`` ΔE76 difference to the ``before`` one. Returns ``{"p99", "p999", "n_edges"}``
    (the 99th and 99.9th percentiles of that ratio and the number of edges counted; both
    percentiles are 0.0 when no edge passes the threshold). Integer images are scaled by their
    dtype's maximum; float images are clipped to ``[0, 1]`` as a saved image would be.
    ``max_pixels`` bounds the work on large photos: when there are more neighbour pairs than that,
    a deterministic, evenly spaced subset of them is measured (each pair keeps both its pixels).
    """
    raw_a, raw_b = np.asarray(before), np.asarray(after)
    if raw_a.shape != raw_b.shape:
        raise ValueError(f"shapes differ: {raw_a.shape} vs {raw_b.shape}")
    if raw_a.ndim != 3 or raw_a.shape[-1] != 3:
        raise ValueError(f"expected HxWx3 images, got {raw_a.shape}")
    h, w = raw_a.shape[:2]
    flat_a, flat_b = raw_a.reshape(-1, 3), raw_b.reshape(-1, 3)
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    # neighbour pairs (first, second) as flat pixel indices: horizontal, then vertical
    first = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])
    second = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])
    if max_pixels is not None and first.size > max_pixels:
        pick = np.linspace(0, first.size - 1, max(1, int(max_pixels))).astype(np.int64)
        first, second = first[pick], second[pick]

        def lab_at(flat: np.ndarray, idx: np.ndarray) -> np.ndarray:
            return _lab32(to_float(flat[idx]))

        d_in = np.linalg.norm(lab_at(flat_a, first) - lab_at(flat_a, second), axis=1)
        d_out = np.linalg.norm(lab_at(flat_b, first) - lab_at(flat_b, second), axis=1)
    else:
        lab_a = _lab32(to_float(flat_a))
        lab_b = _lab32(to_float(flat_b))
        d_in = np.linalg.norm(lab_a[first] - lab_a[second], axis=1)
        d_out = np.linalg.norm(lab_b[first] - lab_b[second], axis=1)
    return _gain_stats(d_in, d_out, threshold)


def lut_gain(lut: Any, *, threshold: float = 0.5) -> dict[str, Any]:
    """:func:`local_gain` over the edges of a LUT's own lattice.

    Every pair of lattice nodes that are neighbours along the r, g or b axis is one edge; its
    input colors are the nodes' colors (``domain_min + k * step``), its output colors the table's
    values (not clipped: an overshooting table shows). ``lut`` is a :class:`app.ml.lut.LUT3D`.
    Returns ``{"p99", "p999", "n_edges"}``.
    """
    table = np.asarray(lut.table, np.float64)
    n = table.shape[0]
    lo = np.asarray(getattr(lut, "domain_min", np.zeros(3)), np.float64)
    hi = np.asarray(getattr(lut, "domain_max", np.ones(3)), np.float64)
    ramp = np.linspace(0.0, 1.0, n)
    grid = np.stack(np.meshgrid(ramp, ramp, ramp, indexing="ij"), axis=-1)
    nodes = lo + grid * (hi - lo)
    lab_in = _lab32(nodes.reshape(-1, 3)).reshape(n, n, n, 3)
    lab_out = _lab32(table.reshape(-1, 3)).reshape(n, n, n, 3)
    d_in, d_out = [], []
    for axis in range(3):
        d_in.append(np.linalg.norm(np.diff(lab_in, axis=axis), axis=-1).ravel())
        d_out.append(np.linalg.norm(np.diff(lab_out, axis=axis), axis=-1).ravel())
    return _gain_stats(np.concatenate(d_in), np.concatenate(d_out), threshold)
