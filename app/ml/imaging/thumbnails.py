"""Thumbnails of uploads: WebP, at most 400x400, upright, sRGB, without EXIF or ICC.

JPEG draft mode (libjpeg's DCT scaling picks 1/2, 1/4 or 1/8 so that the decoded image is just
larger than the thumbnail) means a 12 MP photo is never decoded at full size; the resize is
Lanczos with Pillow's ``reducing_gap`` for the other formats, the embedded ICC profile is converted
to sRGB on the small image (transforms are cached per profile), and the EXIF orientation is
applied last.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from app.ml.imaging.decode import (
    ImageDecodeError,
    gray_to_u8,
    open_image,
    orientation_of,
    reason,
    to_srgb,
    too_large,
    upright,
)

THUMBNAIL_SIZE = 400
THUMBNAIL_QUALITY = 80


# ---- thumbnails -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    width: int
    height: int


def fit_within(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of ``width x height`` scaled down (never up) to fit a ``box x box`` square."""
    scale = min(1.0, box / width, box / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_8bit(im: Image.Image) -> Image.Image:
    """Modes that resize or WebP cannot take (1, P, I;16, I, F...) as L / LA / RGB / RGBA."""
    mode = im.mode
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return im
    if mode in ("P", "PA"):
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return gray_to_u8(im)
    return im.convert("RGBA" if "A" in mode else "RGB")


def make_thumbnail(
    path: Path,
    family: str,
    *,
    max_pixels: int,
    size: int = THUMBNAIL_SIZE,
    quality: int = THUMBNAIL_QUALITY,
) -> Thumbnail:
    """A WebP thumbnail at most ``size x size``: upright, sRGB, without EXIF or ICC."""
    im = open_image(path, family, max_pixels)
    try:
        orientation = orientation_of(im)
        icc = im.info.get("icc_profile")
        target = fit_within(im.width, im.height, size)
        if im.format in ("JPEG", "MPO"):
            # Decode at the smallest DCT scale that is still >= the target (square box, so
            # the orientation does not matter here).
            im.draft(None, target)
        try:
            im.load()
            frame = _to_8bit(im)
            small = frame.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        except Image.DecompressionBombError as exc:
            raise too_large(max_pixels, *im.size) from exc
        except Exception as exc:
            raise ImageDecodeError(f"The image could not be decoded: {reason(exc)}") from exc
    finally:
        im.close()
    small = to_srgb(small, icc)
    small = upright(small, orientation)
    buf = io.BytesIO()
    small.save(buf, "WEBP", quality=quality, method=4)
    return Thumbnail(buf.getvalue(), small.width, small.height)
