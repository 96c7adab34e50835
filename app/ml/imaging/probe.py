"""Probing an upload: size, format, ICC profile description and readable EXIF, after one safe
check of the whole file (see :mod:`app.ml.imaging.decode`): a PNG is checked as a stream without
decoding its pixels (:mod:`app.ml.imaging.pngcheck`), other formats are decoded once."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageCms, TiffImagePlugin

from app.ml.imaging.decode import (
    ImageDecodeError,
    header_exif,
    open_image,
    orientation_of,
    reason,
    too_large,
)
from app.ml.imaging.pngcheck import PngStreamError, check_png_stream, release_freed_memory

log = logging.getLogger("picfilter.imaging")

ASSUMED_PROFILE = "sRGB (assumed)"


# ---- probing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageProbe:
    width: int  # as displayed: after the EXIF orientation (a quarter turn swaps them)
    height: int
    format: str  # jpeg | png | webp | heif | tiff
    mode: str
    color_profile: str
    exif: dict[str, Any] | None


def probe(path: Path, family: str, *, max_pixels: int, want_exif: bool) -> ImageProbe:
    """Check the whole image once (safely) and describe it; the dimensions come from the header
    and are as displayed (after the EXIF orientation).

    JPEGs are decoded at 1/8 scale: every entropy-coded byte is still read, so truncation and
    corruption are found, at a sixty-fourth of the memory. PNGs are not decoded at all: their
    chunks and compressed data are checked as a stream in constant memory. Other formats are
    decoded whole, and the freed memory is handed back to the system afterwards.
    """
    im = open_image(path, family, max_pixels)
    try:
        width, height = im.size
        icc = im.info.get("icc_profile")
        orientation = orientation_of(im)
        exif = extract_exif(im) if want_exif else None
        mode = im.mode
        if family == "png":
            try:
                check_png_stream(path)
            except PngStreamError as exc:
                raise ImageDecodeError(f"The image could not be decoded: {exc}") from exc
        else:
            if im.format in ("JPEG", "MPO"):
                im.draft(None, (max(1, width // 8), max(1, height // 8)))
            try:
                im.load()
            except Image.DecompressionBombError as exc:
                raise too_large(max_pixels, width, height) from exc
            except Exception as exc:
                raise ImageDecodeError(f"The image could not be decoded: {reason(exc)}") from exc
    finally:
        im.close()
        if family != "png":
            release_freed_memory()
    if orientation in (5, 6, 7, 8):  # as displayed, like every size the API reports
        width, height = height, width
    return ImageProbe(
        width=width,
        height=height,
        format=family,
        mode=mode,
        color_profile=describe_profile(icc),
        exif=exif,
    )


def describe_profile(icc: bytes | None) -> str:
    """The ICC profile's description (``Display P3``, ``Adobe RGB (1998)``...) or the default."""
    if not icc:
        return ASSUMED_PROFILE
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        return "unreadable ICC profile"
    text = " ".join(description.split())
    return text[:255] or "unnamed ICC profile"


# ---- EXIF -----------------------------------------------------------------------------------
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_INTEROP_IFD = 0xA005
# Pointers, binary blobs and vendor data that a user never asked us to keep.
_SKIP_TAGS = {
    _EXIF_IFD,
    _GPS_IFD,
    _INTEROP_IFD,
    0x927C,  # MakerNote
    0x02BC,  # XMP packet (may carry GPS again)
    0x83BB,  # IPTC
    0x8773,  # ICC profile (recorded separately)
    0xC4A5,  # PrintImageMatching
    0x0201,  # JPEGInterchangeFormat (thumbnail offset)
    0x0202,  # JPEGInterchangeFormatLength
    0x0111,  # StripOffsets
    0x0117,  # StripByteCounts
    0x0144,  # TileOffsets
    0x0145,  # TileByteCounts
}


def _json_value(value: Any) -> Any:
    if isinstance(value, TiffImagePlugin.IFDRational):
        if value.denominator == 0:
            return None
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bool | int | str):
        return value.replace("\x00", "").strip() if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        if len(value) <= 64 and all(32 <= b < 127 for b in value.rstrip(b"\x00")):
            return value.rstrip(b"\x00").decode("ascii")
        return None  # binary data is not kept
    if isinstance(value, tuple | list):
        items = [_json_value(v) for v in value[:32]]
        return items
    return None


def extract_exif(im: Image.Image) -> dict[str, Any]:
    """Readable EXIF tags (IFD0 and the Exif IFD) as JSON-safe values. GPS is never read."""
    try:
        exif = header_exif(im)  # never decodes the pixels (a PNG's trailing eXIf is not read)
    except Exception:  # a corrupt EXIF block must not fail the upload
        log.info("unreadable EXIF ignored", exc_info=True)
        return {}
    out: dict[str, Any] = {}

    def add(tags: Any) -> None:
        for tag, value in tags.items():
            name = ExifTags.TAGS.get(tag)
            if tag in _SKIP_TAGS or name is None or "GPS" in name:
                continue
            clean = _json_value(value)
            if clean is not None and clean != "":
                out[name] = clean

    add(exif)
    try:
        add(exif.get_ifd(_EXIF_IFD))
    except Exception:
        log.info("unreadable Exif IFD ignored", exc_info=True)
    return out
