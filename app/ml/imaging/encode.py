"""Encoding graded pixels: JPEG / PNG / WebP / TIFF with the source's ICC profile and EXIF, and
:func:`apply_to_image_bytes`, the whole "apply a style to an uploaded file" step (decode without
rotating, grade the stored pixels, encode with the same ICC profile and EXIF).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from PIL import Image

from app.ml.imaging.decode import load_image

GPS_IFD_TAG = 0x8825
_FORMATS = {
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "tiff": "TIFF",
    "tif": "TIFF",
}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff"}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str  # "jpeg", "png", "webp", "tiff"
    width: int  # as displayed (EXIF orientation applied)
    height: int
    orientation: int

    @property
    def mime(self) -> str:
        return _MIME[_FORMATS[self.format]]


def _to_uint8(array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"cannot save pixels of type {arr.dtype}")


def save_image(
    array: np.ndarray,
    dest: str | os.PathLike[str] | IO[bytes],
    format: str | None = None,
    quality: int = 92,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    *,
    alpha: np.ndarray | None = None,
) -> None:
    """Encode an HxWx3 array (uint8, uint16 or float in [0, 1]) as JPEG, PNG, WebP or TIFF.

    ``format`` defaults to the destination's extension. JPEG and WebP use ``quality`` (1..100);
    the ICC profile and EXIF bytes are embedded as given (nothing is rotated).
    """
    arr = _to_uint8(array)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if format is None:
        if not isinstance(dest, str | os.PathLike):
            raise ValueError("format is required when writing to a file object")
        format = Path(dest).suffix.lstrip(".")
    pil_format = _FORMATS.get(format.lower())
    if pil_format is None:
        raise ValueError(f"unsupported output format {format!r}; use jpeg, png, webp or tiff")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    im = Image.fromarray(arr, "RGB")
    if alpha is not None and pil_format in _ALPHA_FORMATS and alpha.shape == arr.shape[:2]:
        im.putalpha(Image.fromarray(np.asarray(alpha, np.uint8), "L"))
    params: dict[str, Any] = {}
    if icc_profile:
        params["icc_profile"] = icc_profile
    if exif:
        params["exif"] = exif
    if pil_format == "JPEG":
        params.update(quality=int(quality), optimize=False)
    elif pil_format == "WEBP":
        params.update(quality=int(quality), method=4)
    elif pil_format == "PNG":
        params.update(compress_level=6)
    elif pil_format == "TIFF":
        params.update(compression="tiff_adobe_deflate")
    if isinstance(dest, str | os.PathLike):
        im.save(Path(dest), format=pil_format, **params)
    else:
        im.save(dest, format=pil_format, **params)


def encode_image(
    array: np.ndarray,
    format: str = "jpeg",
    quality: int = 92,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    *,
    alpha: np.ndarray | None = None,
) -> bytes:
    """:func:`save_image` into bytes."""
    buf = io.BytesIO()
    save_image(array, buf, format, quality, icc_profile, exif, alpha=alpha)
    return buf.getvalue()


def strip_gps(exif: bytes | None) -> bytes | None:
    """``exif`` without its GPS block (``None`` stays ``None``)."""
    if not exif:
        return exif
    parsed = Image.Exif()
    parsed.load(exif)
    if GPS_IFD_TAG in parsed:
        del parsed[GPS_IFD_TAG]
    return parsed.tobytes()


class _Grades(Protocol):
    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray: ...


def apply_to_image_bytes(
    model: _Grades,
    data: bytes,
    *,
    strength: float = 1.0,
    format: str | None = None,
    quality: int = 92,
    keep_exif: bool = True,
) -> EncodedImage:
    """Decode ``data``, grade the stored pixels with ``model.apply``, re-encode at full resolution.

    The output keeps the ICC profile and (unless ``keep_exif`` is False) the EXIF, orientation
    tag included, so it displays upright wherever the original did. ``format`` defaults to the
    input's (JPEG for formats that cannot be written, e.g. HEIC).
    """
    pixels, info = load_image(data, apply_orientation=False)
    graded = model.apply(pixels, strength)
    out_format = (format or (info.format or "jpeg")).lower()
    if out_format not in _FORMATS:
        out_format = "jpeg"
    out_format = {"jpg": "jpeg", "tif": "tiff"}.get(out_format, out_format)
    exif = info.exif if keep_exif else None
    encoded = encode_image(graded, out_format, quality, info.icc_profile, exif, alpha=info.alpha)
    w, h = info.width, info.height
    if info.orientation in (5, 6, 7, 8):
        w, h = h, w
    return EncodedImage(encoded, out_format, w, h, info.orientation)
