"""Decoding: one way to open an image file, for uploads and for jobs alike.

Pure Pillow (+ pillow-heif for HEIC/HEIF, registered here once); no database, no storage, no web
framework.

* :func:`open_pil` is the one opener: it sets Pillow's pixel limit, opens (header only, with only
  the allowed plugins when ``formats`` is given), and refuses images over ``max_pixels``
  (Pillow only *warns* between 1x and 2x ``Image.MAX_IMAGE_PIXELS`` and raises
  :class:`PIL.Image.DecompressionBombError` beyond; both end as :class:`ImageTooLarge`).
* Uploads (the confirm route in a thread, the thumbnail worker) use :func:`sniff` and
  :func:`open_image`: the file must be what its first bytes say and only the plugin of that
  family may open it; errors are :class:`ImageDecodeError` with messages that never carry a path.
* Jobs (learning, applying) and the CLI use :func:`load_image`: pixels as uint8 RGB plus an
  :class:`ImageInfo`; its errors are ``ValueError`` with the messages the CLI has always shown.
* One CMYK rule (:func:`to_srgb` through the embedded profile, naive without one), one 16-bit rule
  (:func:`gray_to_u8`), and EXIF orientation applied the way ``ImageOps.exif_transpose`` does.

:func:`load_image` -> ``(uint8 HxWx3 RGB array, ImageInfo)``. ``info`` keeps the ICC profile
bytes, the EXIF bytes, the EXIF orientation and the alpha channel. With ``apply_orientation=True``
(for learning: pairs exported by different tools may store rotation differently) the pixels are
rotated upright and the orientation tag in ``info.exif`` is reset to 1 (learning and applying
both do: results carry upright pixels, orientation 1). With ``False`` the pixels stay as stored
and the EXIF keeps its orientation.

Color management (:mod:`~app.ml.imaging.color`): pixels come back in the file's own RGB encoding
with its ICC profile in ``info.icc_profile`` (only RGB profiles are kept); the jobs convert them
into the working space. CMYK images are converted to sRGB through their profile (ImageCms) and
lose it. 16-bit PNG / TIFF come back as uint16 with ``keep_16bit=True`` (libvips), else as
8 bits (Pillow has no 48-bit RGB mode).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import IO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from app.ml.paths import require_path

log = logging.getLogger("picfilter.imaging")

try:  # HEIC/HEIF decoding (and encoding, used by the tests): the one registration
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    HEIF_AVAILABLE = False

MAX_PIXELS = 100_000_000
ORIENTATION_TAG = 0x0112

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

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageDecodeError(Exception):
    """The file is not a decodable image of its type (truncated, corrupt, not an image)."""


class ImageTooLarge(ImageDecodeError):
    """More pixels than the configured limit (a decompression bomb, or just too big)."""

    def __init__(self, message: str, width: int | None = None, height: int | None = None):
        super().__init__(message)
        self.width, self.height = width, height


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


# ---- opening --------------------------------------------------------------------------------
_LIMIT_LOCK = threading.Lock()


def _open_with_limit(
    fp: os.PathLike[str] | IO[bytes], max_pixels: int, formats: tuple[str, ...] | None
) -> Image.Image:
    """``Image.open`` with Pillow's bomb check at ``max_pixels`` for this call only.

    Pillow reads the limit from a process-wide global (``Image.MAX_IMAGE_PIXELS``) when it opens
    a file and nowhere else; setting it for good would let one caller's small limit (a learn
    with a few-megapixel cap, say) refuse every other caller's photos in the same process. So it
    is set under a lock around the open and put back at once.
    """
    with _LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(fp, formats=list(formats) if formats else None)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def too_large(
    max_pixels: int, width: int | None = None, height: int | None = None
) -> ImageTooLarge:
    """The :class:`ImageTooLarge` for ``max_pixels`` (with the size when it is known)."""
    limit = f"{max_pixels / 1e6:g} megapixels"
    if width and height:
        return ImageTooLarge(
            f"The image is {width}x{height} ({width * height / 1e6:g} megapixels); "
            f"the limit is {limit}",
            width,
            height,
        )
    return ImageTooLarge(f"The image exceeds the limit of {limit} (a decompression bomb?)")


def reason(exc: BaseException) -> str:
    """A short message for a Pillow error (never a file path: Pillow's messages carry none)."""
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


def open_pil(
    source: os.PathLike[str] | bytes | IO[bytes],
    *,
    max_pixels: int,
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """The one opener (header only): a ``Path``, the file's bytes or a binary file (a ``str`` is
    a TypeError). Pixel limit as in the module docstring; a file no allowed plugin reads raises
    :class:`PIL.UnidentifiedImageError` (or the plugin's own error), left to the caller to word."""
    if isinstance(source, bytes | bytearray | memoryview):
        fp: os.PathLike[str] | IO[bytes] = io.BytesIO(bytes(source))
    elif isinstance(source, str) or not (
        isinstance(source, os.PathLike) or hasattr(source, "read")
    ):
        raise TypeError(
            f"expected a Path, bytes or a binary file, got {type(source).__name__} "
            "(a str is never taken for a file name: wrap it in Path)"
        )
    elif isinstance(source, os.PathLike):
        fp = require_path(source, "image")
    else:
        fp = source
    try:
        im = _open_with_limit(fp, max_pixels, formats)
    except Image.DecompressionBombError as exc:
        raise too_large(max_pixels) from exc
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise too_large(max_pixels, width, height)
    return im


def open_image(path: os.PathLike[str], family: str, max_pixels: int) -> Image.Image:
    """Open an upload (header only) with the plugin of ``family``; bombs and non-images raise
    our errors. ``path`` is a ``Path`` (a ``str`` is a TypeError: content is never a file name)."""
    path = require_path(path, "image")
    try:
        im = open_pil(path, max_pixels=max_pixels, formats=PILLOW_FORMATS[family])
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"The file is not a readable {FAMILY_NAMES[family]} image") from exc
    except Exception as exc:  # Pillow raises many types on corrupt headers
        raise ImageDecodeError(f"The image could not be read: {reason(exc)}") from exc
    if im.width <= 0 or im.height <= 0:
        im.close()
        raise ImageDecodeError("The image has no pixels")
    return im


def header_exif(im: Image.Image) -> Image.Exif:
    """``im``'s EXIF, read without decoding its pixels.

    Pillow's ``getexif()`` on a PNG whose eXIf chunk it has not met yet decodes the whole image
    to look for one after the pixel data (hundreds of MB for a large PNG, and a wasted decode
    where libvips decodes the 16-bit pixels). Here a PNG's EXIF counts only when its eXIf chunk
    comes before the pixels, where writers put it: one rule for the probe's sizes, thumbnails,
    learning and applying alike.
    """
    if im.format == "PNG" and "exif" not in im.info:
        return Image.Exif()
    return im.getexif()


def orientation_of(im: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or unreadable), from :func:`header_exif`."""
    try:
        value = header_exif(im).get(ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` rotated/flipped as its EXIF ``orientation`` says (1: unchanged)."""
    return im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im


# ---- the one 16-bit rule and the one CMYK / ICC rule ----------------------------------------
def gray_to_u8(im: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit gray image (``I;16*``, ``I``, ``F``) as 8-bit ``L``: values above 255
    are taken as 16-bit (divided by 257), ``F`` in [0, 1] as fractions; rounded to nearest."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
        arr = arr * 255.0
    elif arr.size and np.nanmax(arr) > 255:
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.nan_to_num(arr) + 0.5, 0, 255).astype(np.uint8), "L")


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


# ---- pixels for jobs ------------------------------------------------------------------------
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
    alpha: np.ndarray | None = None  # HxW (uint8; uint16 for 16-bit files) when transparent
    bits: int = 8


def is_16bit(im: Image.Image) -> bool:
    """True for a PNG or TIFF with 16 bits per sample (Pillow opens 16-bit RGB as 8-bit RGB;
    its tile's raw mode still says ``;16``)."""
    if im.format not in ("PNG", "TIFF"):
        return False
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return True
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if isinstance(bits, tuple) and bits and all(b == 16 for b in bits):
            return True
        return isinstance(bits, int) and bits == 16
    for tile in getattr(im, "tile", None) or ():
        args = tile.args
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def _source_bytes(source: os.PathLike[str] | bytes | IO[bytes]) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, os.PathLike):
        return require_path(source, "image").read_bytes()
    source.seek(0)
    return source.read()


def orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (HxW or HxWxC) turned upright as EXIF ``orientation`` says, the NumPy twin of
    :func:`upright` for pixels that Pillow cannot hold (16-bit RGB)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(arr)) if op else arr


def _load_16bit(
    data: bytes,
    fmt: str | None,
    mode: str,
    icc: bytes | None,
    exif_obj: Image.Exif,
    raw_exif: bytes | None,
    apply_orientation: bool,
) -> tuple[np.ndarray, ImageInfo]:
    """The 16-bit branch of :func:`load_image` (libvips decodes, NumPy turns upright)."""
    import pyvips

    try:
        vimg = pyvips.Image.new_from_buffer(data, "", access="sequential")
        arr = np.asarray(vimg.numpy())
    except pyvips.Error as exc:
        raise ValueError(f"cannot decode image: {str(exc).strip()[:300]}") from exc
    if arr.dtype != np.uint16:
        raise ValueError(f"cannot decode image: expected 16-bit samples, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = arr[:, :, -1].copy() if arr.shape[2] in (2, 4) else None
    color = arr[:, :, :3] if arr.shape[2] >= 3 else np.repeat(arr[:, :, :1], 3, axis=2)
    orientation = int(exif_obj.get(ORIENTATION_TAG, 1) or 1)
    exif = raw_exif if isinstance(raw_exif, bytes) else None
    if apply_orientation and orientation != 1:
        color = orient_array(color, orientation)
        alpha = orient_array(alpha, orientation) if alpha is not None else None
        exif_obj[ORIENTATION_TAG] = 1
        orientation = 1
        exif = exif_obj.tobytes()
    rgb = np.ascontiguousarray(color, dtype=np.uint16)
    if not _icc_is_rgb(icc):
        icc = None
    info = ImageInfo(fmt, rgb.shape[1], rgb.shape[0], mode, icc, exif, orientation, alpha, 16)
    return rgb, info


def _icc_is_rgb(icc: bytes | None) -> bool:
    return icc is not None and len(icc) >= 20 and icc[16:20] == b"RGB "


def load_image(
    source: os.PathLike[str] | bytes | IO[bytes],
    *,
    apply_orientation: bool = True,
    max_pixels: int = MAX_PIXELS,
    keep_16bit: bool = False,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``source`` (a ``Path``, the file's bytes or a binary file; a ``str`` is a TypeError)
    to uint8 RGB HxWx3 and its :class:`ImageInfo`.

    ``keep_16bit``: a 16-bit PNG or TIFF (RGB, RGBA, gray, gray + alpha) comes back as uint16
    RGB HxWx3 (alpha uint16) with ``info.bits == 16``, decoded by libvips (Pillow reads 16-bit
    RGB as 8 bits); every other file is the uint8 path.

    Raises ``ValueError`` for files that are not images or exceed ``max_pixels``.
    """
    try:
        im = open_pil(source, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        if exc.width and exc.height:
            raise ValueError(
                f"image is {exc.width}x{exc.height}, more than {max_pixels} pixels"
            ) from exc
        raise ValueError(f"image is more than {max_pixels} pixels") from exc
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    with im:
        fmt = im.format
        mode = im.mode
        icc = im.info.get("icc_profile") or None
        raw_exif = im.info.get("exif") or None
        exif_obj = header_exif(im)
        orientation = int(exif_obj.get(ORIENTATION_TAG, 1) or 1)
        if keep_16bit and is_16bit(im):
            data = _source_bytes(source)
            return _load_16bit(data, fmt, mode, icc, exif_obj, raw_exif, apply_orientation)
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise ValueError(f"image is more than {max_pixels} pixels") from exc
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
            rgb = to_srgb(im, icc)
            icc = None
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            rgb = gray_to_u8(im).convert("RGB")
        else:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
        if icc is not None and not _icc_is_rgb(icc):
            icc = None
        arr = np.array(rgb, dtype=np.uint8)  # one writable copy out of Pillow
    info = ImageInfo(fmt, arr.shape[1], arr.shape[0], mode, icc, exif, orientation, alpha, bits)
    return arr, info
