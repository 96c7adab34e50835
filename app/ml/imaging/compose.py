"""Composing pictures from pixels: the resizes that bring a learning pair to one size, the
before | after preview and the built-in color chart (previews of imported LUTs)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PREVIEW_WIDTH = 800  # before | after, side by side
PREVIEW_QUALITY = 82


def nearest(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-sample resize: every output pixel is an input pixel (no new colors)."""
    h, w = shape
    ys = ((np.arange(h) + 0.5) * image.shape[0] / h).astype(np.int64)
    xs = ((np.arange(w) + 0.5) * image.shape[1] / w).astype(np.int64)
    return np.ascontiguousarray(image[ys][:, xs])


def box(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Box-filter resize to ``shape`` (height, width): each output pixel averages its area.
    uint8 in one pass; uint16 channel by channel in float (Pillow's ``F`` mode), same dtype out."""
    size = (shape[1], shape[0])
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    if image.dtype != np.uint16:
        raise TypeError(f"box resizes uint8 or uint16 images, got {image.dtype}")
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), "F").resize(
                size, Image.Resampling.BOX
            )
        )
        for c in range(image.shape[2])
    ]
    return np.rint(np.clip(np.stack(chans, axis=-1), 0, 65535)).astype(np.uint16)


def as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 pixels (uint16 rounded to the nearest 8-bit level) for previews."""
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return image


def capped(shape: tuple[int, ...], long_side: int) -> tuple[int, int]:
    """``shape`` (height, width, ...) scaled down to a long side of at most ``long_side``."""
    h, w = shape[:2]
    scale = min(1.0, long_side / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def learning_pair(
    before: np.ndarray, after: np.ndarray, long_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bring a pair to one size of at most ``long_side`` pixels, keeping corresponding colors:
    same-size pairs are sampled at the same pixels (a blur would mix colors that the look maps
    differently), pairs at different resolutions are both box-filtered to the smaller size.
    Different aspect ratios are a ``ValueError``."""
    bh, bw = before.shape[:2]
    ah, aw = after.shape[:2]
    if abs(np.log((bw / bh) / (aw / ah))) > 0.01:
        raise ValueError(
            f"the upright images have different aspect ratios ({bw}x{bh} and {aw}x{ah})"
        )
    if before.shape == after.shape:
        target = capped(before.shape, long_side)
        if target == (bh, bw):
            return before, after
        return nearest(before, target), nearest(after, target)
    target = capped(before.shape if bw * bh <= aw * ah else after.shape, long_side)
    return box(before, target), box(after, target)


def side_by_side(before: np.ndarray, after: np.ndarray, width: int = PREVIEW_WIDTH) -> bytes:
    """A WebP of ``before | after``, ``width`` pixels wide in all."""
    half = max(1, width // 2)
    h, w = before.shape[:2]
    height = max(1, round(h * half / w))
    left = Image.fromarray(before).resize((half, height), Image.Resampling.LANCZOS)
    right = Image.fromarray(after).resize((half, height), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (half * 2, height))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (half, 0))
    buf = io.BytesIO()
    canvas.save(buf, "WEBP", quality=PREVIEW_QUALITY)
    return buf.getvalue()


def color_chart(width: int = 400, height: int = 300) -> np.ndarray:
    """A built-in test chart (uint8): a hue x lightness sweep, a saturation sweep, a gray ramp
    and a row of everyday colors (skin, sky, foliage, ...), for previews of imported LUTs."""
    sweep_h = int(height * 0.55)
    sat_h = int(height * 0.15)
    gray_h = int(height * 0.12)
    patch_h = height - sweep_h - sat_h - gray_h
    hue = np.linspace(0.0, 1.0, width, endpoint=False)[None, :]
    light = np.linspace(0.95, 0.08, sweep_h)[:, None]
    chroma = 1.0 - np.abs(2.0 * light - 1.0)
    # HSV-style hue ramp (fully saturated RGB), then lightness/chroma rows around it
    phase = ((hue * 6.0)[..., None] + np.array([0.0, 4.0, 2.0])) % 6.0
    rgb_hue = np.clip(np.abs(phase - 3.0) - 1.0, 0.0, 1.0)
    sweep = light[..., None] + chroma[..., None] * (rgb_hue - 0.5)
    sat = np.linspace(0.0, 1.0, sat_h)[:, None, None]
    sat_rows = 0.5 + sat * (rgb_hue - 0.5) * 0.9
    gray = np.broadcast_to(np.linspace(0.0, 1.0, width)[None, :, None], (gray_h, width, 3))
    patches = np.array(
        [
            [0.45, 0.32, 0.26],
            [0.76, 0.59, 0.51],
            [0.37, 0.48, 0.61],
            [0.35, 0.42, 0.26],
            [0.51, 0.50, 0.69],
            [0.40, 0.74, 0.67],
            [0.84, 0.48, 0.18],
            [0.88, 0.78, 0.12],
            [0.69, 0.19, 0.22],
            [0.22, 0.24, 0.58],
            [0.97, 0.97, 0.95],
            [0.05, 0.05, 0.05],
        ]
    )
    idx = np.arange(width) * len(patches) // width
    patch_rows = np.broadcast_to(patches[idx][None, :, :], (patch_h, width, 3))
    chart = np.concatenate(
        [np.clip(sweep, 0, 1), np.broadcast_to(sat_rows, (sat_h, width, 3)), gray, patch_rows]
    )
    return np.ascontiguousarray((chart * 255.0 + 0.5).astype(np.uint8))
