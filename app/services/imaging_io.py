"""Safe image decoding for uploads: type sniffing, probing (size, format, ICC, EXIF), thumbnails.

Pure Pillow (+ pillow-heif for HEIC/HEIF); no database, no storage, no web framework, so the
confirm route (in a thread), the thumbnail worker and the benchmark call the same functions.

Safety rules, applied by every entry point:

* the file must be what its first bytes say (:func:`sniff`), and Pillow may only use the plugin
  of that family (``Image.open(..., formats=...)``), so a file never reaches a decoder it was not
  declared for;
* ``Image.MAX_IMAGE_PIXELS`` is set to the configured limit (100 MP by default) and the pixel
  count is checked again explicitly, since Pillow only *warns* between 1x and 2x the limit and
  raises :class:`PIL.Image.DecompressionBombError` beyond; both end as :class:`ImageTooLarge`;
* truncated or corrupt data is decoded completely (a JPEG at 1/8 scale in DCT space, which still
  reads every entropy-coded byte) and ends as :class:`ImageDecodeError` with a readable message
  that never carries a file path.

Thumbnails use JPEG draft mode (libjpeg's DCT scaling picks 1/2, 1/4 or 1/8 so that the decoded
image is just larger than the thumbnail), so a 12 MP photo is never decoded at full size; the
resize is Lanczos with Pillow's ``reducing_gap`` for the other formats, the embedded ICC profile
is converted to sRGB on the small image (transforms are cached per profile), and the EXIF
orientation is applied last.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageCms, TiffImagePlugin, UnidentifiedImageError

from app.ml.paths import require_path

log = logging.getLogger("picfilter.imaging")

try:  # HEIC/HEIF decoding (and encoding, used by the tests)
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    HEIF_AVAILABLE = False

THUMBNAIL_SIZE = 400
THUMBNAIL_QUALITY = 80
ASSUMED_PROFILE = "sRGB (assumed)"

#: declared content type -> image family (what :func:`sniff` answers)
FAMILY_OF_TYPE: dict[str, str] = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/heic": "heif",
    "image/heif": "heif",
    "image/tiff": "tiff",
}
#: family -> the Pillow plugins allowed to open it
PILLOW_FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": ("JPEG", "MPO"),
    "png": ("PNG",),
    "webp": ("WEBP",),
    "heif": ("HEIF",),
    "tiff": ("TIFF",),
}
FAMILY_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "heif": "HEIC/HEIF", "tiff": "TIFF"}
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS = _HEIC_BRANDS | {b"mif1", b"msf1"}
SNIFF_BYTES = 64


class ImageDecodeError(Exception):
    """The file is not a decodable image of its type (truncated, corrupt, not an image)."""


class ImageTooLarge(ImageDecodeError):
    """More pixels than the configured limit (a decompression bomb, or just too big)."""


# ---- sniffing -------------------------------------------------------------------------------
def sniff(head: bytes) -> str | None:
    """The image family that the first bytes of a file announce, or None.

    >>> sniff(b"\\x89PNG\\r\\n\\x1a\\n....")
    'png'
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        brands = [head[8:12]] + [
            head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)
        ]
        if any(b in _HEIF_BRANDS for b in brands):
            return "heif"
    return None


def heif_flavour(head: bytes) -> str:
    """``heic`` for HEVC-coded HEIF files, ``heif`` for the generic brands."""
    return "heic" if head[8:12] in _HEIC_BRANDS else "heif"


# ---- probing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageProbe:
    width: int
    height: int
    format: str  # jpeg | png | webp | heif | tiff
    mode: str
    color_profile: str
    exif: dict[str, Any] | None


def _set_limit(max_pixels: int) -> None:
    if Image.MAX_IMAGE_PIXELS != max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _too_large(
    max_pixels: int, width: int | None = None, height: int | None = None
) -> ImageTooLarge:
    limit = f"{max_pixels / 1e6:g} megapixels"
    if width and height:
        return ImageTooLarge(
            f"The image is {width}x{height} ({width * height / 1e6:g} megapixels); "
            f"the limit is {limit}"
        )
    return ImageTooLarge(f"The image exceeds the limit of {limit} (a decompression bomb?)")


def open_image(path: Path, family: str, max_pixels: int) -> Image.Image:
    """Open (header only) with the plugin of ``family``; bombs and non-images raise our errors.
    ``path`` is a ``Path`` (a ``str`` is a TypeError: content is never taken for a file name)."""
    path = require_path(path, "image")
    _set_limit(max_pixels)
    try:
        im = Image.open(path, formats=list(PILLOW_FORMATS[family]))
    except Image.DecompressionBombError as exc:
        raise _too_large(max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"The file is not a readable {FAMILY_NAMES[family]} image") from exc
    except Exception as exc:  # Pillow raises many types on corrupt headers
        raise ImageDecodeError(f"The image could not be read: {_reason(exc)}") from exc
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise ImageDecodeError("The image has no pixels")
    if width * height > max_pixels:
        im.close()
        raise _too_large(max_pixels, width, height)
    return im


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


def probe(path: Path, family: str, *, max_pixels: int, want_exif: bool) -> ImageProbe:
    """Decode the whole image once (safely) and describe it.

    JPEGs are decoded at 1/8 scale: every entropy-coded byte is still read, so truncation and
    corruption are found, at a sixty-fourth of the memory.
    """
    im = open_image(path, family, max_pixels)
    try:
        width, height = im.size
        icc = im.info.get("icc_profile")
        exif = extract_exif(im) if want_exif else None
        mode = im.mode
        if im.format in ("JPEG", "MPO"):
            im.draft(None, (max(1, width // 8), max(1, height // 8)))
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise _too_large(max_pixels, width, height) from exc
        except Exception as exc:
            raise ImageDecodeError(f"The image could not be decoded: {_reason(exc)}") from exc
    finally:
        im.close()
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
        exif = im.getexif()
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


# ---- thumbnails -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    width: int
    height: int


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def fit_within(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of ``width x height`` scaled down (never up) to fit a ``box x box`` square."""
    scale = min(1.0, box / width, box / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


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
        arr = np.asarray(im).astype(np.float64)
        if mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        elif arr.size and np.nanmax(arr) > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8), "L")
    return im.convert("RGBA" if "A" in mode else "RGB")


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=32)
def _transform_to_srgb(icc_digest: str, icc: bytes, in_mode: str) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.buildTransform(
        source, _SRGB, in_mode, "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
    )


def to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert ``im`` (L, LA, RGB, RGBA or CMYK) from its ICC profile to sRGB (RGB/RGBA).

    Without a profile the pixels are taken as sRGB already. A profile that does not fit the
    image (an RGB profile on a gray image) or that lcms cannot read is ignored, with a log line.
    """
    alpha = im.getchannel("A") if im.mode in ("RGBA", "LA") else None
    base = im.convert({"RGBA": "RGB", "LA": "L"}.get(im.mode, im.mode)) if alpha else im
    if icc:
        try:
            digest = hashlib.sha1(icc, usedforsecurity=False).hexdigest()
            transform = _transform_to_srgb(digest, icc, base.mode)
            base = ImageCms.applyTransform(base, transform) or base
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            log.info("ICC profile not applied (unreadable or not for %s images)", base.mode)
    if base.mode != "RGB":
        base = base.convert("RGB")
    if alpha is not None:
        base.putalpha(alpha)
    return base


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
        orientation = _orientation(im)
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
            raise _too_large(max_pixels, *im.size) from exc
        except Exception as exc:
            raise ImageDecodeError(f"The image could not be decoded: {_reason(exc)}") from exc
    finally:
        im.close()
    small = to_srgb(small, icc)
    if orientation != 1:
        small = small.transpose(_TRANSPOSE[orientation])
    buf = io.BytesIO()
    small.save(buf, "WEBP", quality=quality, method=4)
    return Thumbnail(buf.getvalue(), small.width, small.height)
