"""Decode and encode photos for learning and applying styles (Pillow, plus pillow-heif for HEIC).

* :func:`load_image` -> ``(uint8 HxWx3 RGB array, ImageInfo)``. ``info`` keeps the ICC profile
  bytes, the EXIF bytes, the EXIF orientation and the alpha channel. With
  ``apply_orientation=True`` (for learning: pairs exported by different tools may store
  rotation differently) the pixels are rotated upright like ``ImageOps.exif_transpose`` and the
  orientation tag in ``info.exif`` is reset to 1. With ``False`` (for applying a style) the pixels
  stay as stored and the EXIF keeps its orientation, so viewers rotate the result exactly as they
  rotated the original.
* :func:`save_image` encodes JPEG / PNG / WebP / TIFF with the given ICC profile and EXIF (and
  alpha where the format has one).
* :func:`apply_to_image_bytes` is the whole "apply a style to an uploaded file" step: decode
  without rotating, grade the stored pixels, encode with the same ICC profile and EXIF.

Color management: pixels are graded in the image's own RGB encoding (styles are learned on the
same kind of pixels) and the original ICC profile is attached to the output, so a Display P3
photo stays Display P3. CMYK images are converted to sRGB through their profile (ImageCms) and
lose it; gray or other non-RGB profiles are dropped when the image becomes RGB.
16-bit sources are decoded to 8 bits (Pillow has no 48-bit RGB mode).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from PIL import Image, ImageOps

from app.ml.paths import require_path

try:  # HEIC/HEIF from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    pass

__all__ = [
    "EncodedImage",
    "ImageInfo",
    "apply_to_image_bytes",
    "encode_image",
    "load_image",
    "save_image",
    "strip_gps",
]

MAX_PIXELS = 100_000_000
ORIENTATION_TAG = 0x0112
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
class ImageInfo:
    """What :func:`load_image` learned about the file besides the pixels."""

    format: str | None  # Pillow's name: "JPEG", "PNG", "HEIF", ...
    width: int  # of the returned array
    height: int
    mode: str  # the file's Pillow mode before conversion to RGB
    icc_profile: bytes | None
    exif: bytes | None
    orientation: int  # EXIF orientation of the returned pixels (1 once applied)
    alpha: np.ndarray | None = None  # uint8 HxW when the file had transparency
    bits: int = 8


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


def _open(source: os.PathLike[str] | bytes | IO[bytes]) -> Image.Image:
    if isinstance(source, bytes | bytearray | memoryview):
        return Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, str) or not (isinstance(source, os.PathLike) or hasattr(source, "read")):
        raise TypeError(
            f"expected a Path, bytes or a binary file, got {type(source).__name__} "
            "(a str is never taken for a file name: wrap it in Path)"
        )
    if isinstance(source, os.PathLike):
        return Image.open(require_path(source, "image"))
    return Image.open(source)


def _icc_is_rgb(icc: bytes | None) -> bool:
    return icc is not None and len(icc) >= 20 and icc[16:20] == b"RGB "


def load_image(
    source: os.PathLike[str] | bytes | IO[bytes],
    *,
    apply_orientation: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``source`` (a ``Path``, the file's bytes or a binary file; a ``str`` is a TypeError)
    to uint8 RGB HxWx3 and its :class:`ImageInfo`.

    Raises ``ValueError`` for files that are not images or exceed ``max_pixels``.
    """
    try:
        im = _open(source)
    except (OSError, Image.UnidentifiedImageError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    with im:
        if im.width * im.height > max_pixels:
            raise ValueError(f"image is {im.width}x{im.height}, more than {max_pixels} pixels")
        fmt = im.format
        mode = im.mode
        icc = im.info.get("icc_profile") or None
        raw_exif = im.info.get("exif") or None
        exif_obj = im.getexif()
        orientation = int(exif_obj.get(ORIENTATION_TAG, 1) or 1)
        try:
            im.load()
        except OSError as exc:
            raise ValueError(f"cannot decode image: {exc}") from exc
        if apply_orientation and orientation != 1:
            im = ImageOps.exif_transpose(im)
            exif_obj = im.getexif()
            exif_obj[ORIENTATION_TAG] = 1
            orientation = 1
            exif: bytes | None = exif_obj.tobytes()
        else:  # keep the file's own bytes (maker notes and all)
            exif = (
                raw_exif
                if isinstance(raw_exif, bytes)
                else (exif_obj.tobytes() if len(exif_obj) else None)
            )
        bits = 16 if mode in ("I;16", "I;16B", "I;16L", "I", "RGB;16") else 8
        alpha = None
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            alpha = np.asarray(rgba.getchannel("A"))
            rgb = rgba.convert("RGB")
        elif mode == "CMYK":
            rgb = _cmyk_to_srgb(im, icc)
            icc = None
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            arr16 = np.asarray(im, dtype=np.float64)
            scale = 65535.0 if arr16.max() > 255 else 255.0
            gray = np.clip(arr16 / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
            rgb = Image.fromarray(gray).convert("RGB")
        else:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
        if icc is not None and not _icc_is_rgb(icc):
            icc = None
        arr = np.array(rgb, dtype=np.uint8)  # one writable copy out of Pillow
    info = ImageInfo(fmt, arr.shape[1], arr.shape[0], mode, icc, exif, orientation, alpha, bits)
    return arr, info


def _cmyk_to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(im, src, dst, outputMode="RGB")  # type: ignore[return-value]
        except Exception:  # a broken profile: fall back to the naive conversion
            pass
    return im.convert("RGB")


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


def with_exif(info: ImageInfo, exif: bytes | None) -> ImageInfo:
    """A copy of ``info`` with other EXIF bytes."""
    return replace(info, exif=exif)
