"""Encoding graded pixels: JPEG / PNG / WebP / TIFF / HEIC (8 bits; PNG and TIFF also 16 bits)
with an ICC profile and EXIF, and :func:`apply_to_image_bytes`, the whole "apply a style to an
uploaded file" step (decode upright, grade in the working space of :mod:`~app.ml.imaging.color`,
encode in the source's color space with its profile, orientation 1).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from app.ml.imaging import color
from app.ml.imaging.decode import HEIF_AVAILABLE, load_image

if TYPE_CHECKING:
    from app.ml.coverage import ColorCoverage

GPS_IFD_TAG = 0x8825
_FORMATS = {
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "tiff": "TIFF",
    "tif": "TIFF",
}
if HEIF_AVAILABLE:  # pillow-heif's encoder (x265) is in its wheels
    _FORMATS.update(heic="HEIF", heif="HEIF")
_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
#: formats written with 16 bits per sample when the pixels are uint16
SIXTEEN_BIT_FORMATS = ("png", "tiff")


def output_format(requested: str | None, source_format: str | None) -> str:
    """The output format: ``requested``, else the source's own (Pillow's name: JPEG, MPO, PNG,
    WEBP, TIFF, HEIF) when it can be written, else jpeg. Canonical names: jpeg, png, webp, tiff,
    heic."""
    name = (requested or source_format or "jpeg").lower()
    name = {"jpg": "jpeg", "mpo": "jpeg", "tif": "tiff", "heif": "heic"}.get(name, name)
    return name if name in _FORMATS else "jpeg"


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str  # "jpeg", "png", "webp", "tiff", "heic"
    width: int  # as displayed: the pixels are upright (orientation 1)
    height: int
    orientation: int
    bits: int = 8
    icc_profile: bytes | None = None
    # the share of the photo's pixels outside the style's training colors (``coverage`` given)
    unseen_share: float | None = None

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
    """Encode an HxWx3 array (uint8, uint16 or float in [0, 1]) as JPEG, PNG, WebP, TIFF or
    HEIC.

    ``format`` defaults to the destination's extension. JPEG, WebP and HEIC use ``quality``
    (1..100); the ICC profile and EXIF bytes are embedded as given (nothing is rotated). uint16
    pixels are written with 16 bits per sample as PNG and TIFF (by libvips: Pillow has no 16-bit
    RGB mode) and as 8 bits in the other formats.
    """
    src = np.asarray(array)
    if src.ndim != 3 or src.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {src.shape}")
    if format is None:
        if not isinstance(dest, str | os.PathLike):
            raise ValueError("format is required when writing to a file object")
        format = Path(dest).suffix.lstrip(".")
    pil_format = _FORMATS.get(format.lower())
    if pil_format is None:
        raise ValueError(f"unsupported output format {format!r}; use jpeg, png, webp or tiff")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if src.dtype == np.uint16 and pil_format in ("PNG", "TIFF"):
        data = _encode_16bit(src, pil_format, icc_profile, exif, alpha)
        if isinstance(dest, str | os.PathLike):
            Path(dest).write_bytes(data)
        else:
            dest.write(data)
        return
    arr = _to_uint8(src)
    if alpha is not None and alpha.dtype != np.uint8:
        alpha = _to_uint8(alpha[:, :, None])[:, :, 0]
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
    elif pil_format == "HEIF":
        params.update(quality=int(quality))
    if isinstance(dest, str | os.PathLike):
        im.save(Path(dest), format=pil_format, **params)
    else:
        im.save(dest, format=pil_format, **params)


def _encode_16bit(
    arr: np.ndarray,
    pil_format: str,
    icc_profile: bytes | None,
    exif: bytes | None,
    alpha: np.ndarray | None,
) -> bytes:
    """16-bit PNG / TIFF through libvips (deflate-compressed, ICC profile and EXIF kept)."""
    import pyvips

    bands = arr
    if alpha is not None and alpha.shape == arr.shape[:2]:
        a16 = alpha if alpha.dtype == np.uint16 else alpha.astype(np.uint16) * 257
        bands = np.dstack([arr, a16])
    image = pyvips.Image.new_from_array(np.ascontiguousarray(bands), interpretation="rgb16")
    image = image.copy()
    if icc_profile:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc_profile)
    if exif:
        image.set_type(pyvips.GValue.blob_type, "exif-data", exif)
    if pil_format == "PNG":
        return bytes(image.pngsave_buffer(bitdepth=16, compression=6))
    return bytes(image.tiffsave_buffer(compression="deflate", predictor="horizontal"))


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
    output_profile: color.OutputProfile = "source",
    max_pixels: int | None = None,
    coverage: ColorCoverage | None = None,
) -> EncodedImage:
    """Decode ``data`` upright, grade it in the working space (:func:`color.grade`), re-encode
    at full resolution: the apply step of the service and the CLI.

    The output's pixels are upright with EXIF orientation 1 (``width``/``height`` as displayed);
    it keeps the source's color space and ICC profile (``output_profile="srgb"``: converted to
    sRGB) and, unless ``keep_exif`` is False, the EXIF. 16-bit PNG / TIFF sources are graded in
    16 bits and written in 16 bits as PNG / TIFF. ``format`` defaults to the input's own (JPEG
    for formats that cannot be written). With the style's ``coverage`` (learned styles), the
    result's ``unseen_share`` says how much of the photo lies outside its training colors.
    """
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    pixels, info = load_image(data, apply_orientation=True, keep_16bit=True, **kwargs)
    graded, icc = color.grade(model, pixels, info.icc_profile, strength, output_profile)
    unseen = None if coverage is None else coverage.photo_unseen_share(pixels, info.icc_profile)
    del pixels
    out_format = output_format(format, info.format)
    exif = info.exif if keep_exif else None
    encoded = encode_image(graded, out_format, quality, icc, exif, alpha=info.alpha)
    bits = 16 if graded.dtype == np.uint16 and out_format in SIXTEEN_BIT_FORMATS else 8
    h, w = graded.shape[:2]
    return EncodedImage(encoded, out_format, w, h, info.orientation, bits, icc, unseen)
