r"""Color management: every style works in one space, and every photo is converted into it.

The working space is **sRGB (IEC 61966-2.1), display-referred, full range**: LittleCMS's own
built-in sRGB profile (:data:`WORKING_ICC`). A style is learned on pixels in that space and
applied to pixels in that space, whatever profile the photo carries:

* decode -> convert the embedded ICC profile (no profile: assumed sRGB) to the working space ->
  learn / apply -> convert back to the source's profile (the default: a Display P3 photo stays
  Display P3 with its profile) or keep sRGB (``output_profile="srgb"``) -> encode;
* every conversion is LittleCMS with the relative colorimetric intent and no black point
  compensation: Pillow's :mod:`PIL.ImageCms` for 8-bit pixels, ``imagecodecs.cms_transform``
  (LittleCMS too, unoptimized so that out-of-gamut colors clip exactly) for 16-bit pixels, since
  Pillow has no 16-bit RGB mode. No matrix or tone curve is written here;
* fast path: a photo whose profile is sRGB (LittleCMS moves no 8-bit code of a 16^3 grid by
  more than one level) or that has none is graded as it is, with no conversion at all.

Applying, :func:`grade`: for a style whose look does not depend on the image (a 3D LUT, a
NILUT, a non-adaptive model) the three steps "to working space, grade, back" are one function of
the source's RGB, so they are sampled into a :data:`FUSED_SIZE`-point LUT per
axis (lattice points: the 8-bit codes 0, 5, ..., 255, exact in 8 and 16 bits; each point
converted by LittleCMS; :data:`FUSED_SIZE_16` points per axis for 16-bit photos) and that LUT
grades the photo in one pass of the usual LUT kernel. That keeps the cost of color management
to sampling 140 k points once per style, strength and profile (:data:`FUSED_CACHE` keeps the
last few), where converting every pixel there and back costs more than the apply itself
(``python -m bench lut_speed``). An image-adaptive style first sees the whole photo converted
to the working space (its classifier picks the LUT from the photo's working-space colors), then
its LUT is fused the same way. Conversion errors (a profile LittleCMS cannot use) are
``ValueError``.
"""

from __future__ import annotations

import io
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image, ImageCms

if TYPE_CHECKING:
    from app.ml.lut import LUT3D

log = logging.getLogger("picfilter.imaging")

OutputProfile = Literal["source", "srgb"]
OUTPUT_PROFILES: tuple[str, ...] = ("source", "srgb")

#: what styles record as their working space
WORKING_SPACE = "sRGB IEC 61966-2.1, display-referred, full range"
_WORKING_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
#: the working space's ICC profile (LittleCMS's built-in sRGB, v4)
WORKING_ICC: bytes = _WORKING_PROFILE.tobytes()
#: points per axis of the LUT that fuses "to working space, grade, back" (step 5 in 8-bit codes)
FUSED_SIZE = 52
#: the same for 16-bit photos: a finer lattice (step 3 in 8-bit codes), 4x the points to sample
FUSED_SIZE_16 = 86
_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC


class _Grades(Protocol):
    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray: ...


def _rgb_profile(icc: bytes | None) -> bool:
    return icc is not None and len(icc) >= 20 and icc[16:20] == b"RGB "


@lru_cache(maxsize=64)
def _pil_transform(src: bytes, dst: bytes) -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(src)),
        ImageCms.ImageCmsProfile(io.BytesIO(dst)),
        "RGB",
        "RGB",
        renderingIntent=_INTENT,
    )


@lru_cache(maxsize=64)
def is_working_space(icc: bytes | None) -> bool:
    """True when pixels tagged ``icc`` need no conversion: no profile, a profile that is not an
    RGB one (the decoder drops those), an unreadable one (logged), or an sRGB profile (through
    LittleCMS no code of a 16^3 grid of 8-bit colors moves by more than one level)."""
    if not _rgb_profile(icc):
        return True
    assert icc is not None
    try:
        transform = _pil_transform(icc, WORKING_ICC)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        log.info("unreadable RGB ICC profile: pixels taken as sRGB")
        return True
    codes = np.arange(0, 256, 17, dtype=np.uint8)
    grid = np.stack(np.meshgrid(codes, codes, codes, indexing="ij"), axis=-1).reshape(16, 256, 3)
    im = Image.fromarray(np.ascontiguousarray(grid), "RGB")
    out = np.asarray(ImageCms.applyTransform(im, transform) or im)
    return int(np.abs(out.astype(np.int16) - grid).max()) <= 1


# ---- pixel conversion -----------------------------------------------------------------------
#: LittleCMS ``cmsFLAGS_NOOPTIMIZE``: evaluate the profiles' own curves and matrices for every
#: pixel. Without it LittleCMS resamples a 16-bit transform into a small grid and interpolates,
#: which moves out-of-gamut colors (clipped at the gamut boundary) by up to 12 8-bit levels.
_CMS_NOOPTIMIZE = 0x0100


def convert(pixels: np.ndarray, src: bytes | None, dst: bytes | None) -> np.ndarray:
    """``pixels`` (HxWx3 uint8 or uint16) from profile ``src`` to profile ``dst`` (None: the
    working sRGB) with LittleCMS, same dtype out. Nothing to do when both are the same."""
    src = src or WORKING_ICC
    dst = dst or WORKING_ICC
    arr = np.ascontiguousarray(pixels)
    if src == dst:
        return arr
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        im = Image.fromarray(arr, "RGB")
        try:
            ImageCms.applyTransform(im, _pil_transform(src, dst), inPlace=True)
        except (ImageCms.PyCMSError, OSError, TypeError) as exc:
            raise ValueError(f"the ICC profile cannot be used: {exc}") from exc
        return np.array(im)
    if arr.dtype == np.uint16:
        import imagecodecs

        try:
            out = imagecodecs.cms_transform(
                arr,
                src,
                dst,
                colorspace="rgb",
                outcolorspace="rgb",
                intent=int(_INTENT),
                flags=_CMS_NOOPTIMIZE,
            )
        except (imagecodecs.CmsError, TypeError) as exc:
            raise ValueError(f"the ICC profile cannot be used: {exc}") from exc
        return np.ascontiguousarray(np.asarray(out, dtype=np.uint16).reshape(arr.shape))
    raise TypeError(f"pixels must be uint8 or uint16, got {arr.dtype}")


def to_working(pixels: np.ndarray, icc: bytes | None) -> np.ndarray:
    """``pixels`` tagged ``icc`` in the working space (unchanged on the fast path)."""
    if is_working_space(icc):
        return pixels
    return convert(pixels, icc, None)


# ---- grading --------------------------------------------------------------------------------
def fused_lut(
    grade_working: Callable[[np.ndarray], np.ndarray],
    src: bytes | None,
    out: bytes | None,
    size: int = FUSED_SIZE,
    bits: int = 16,
) -> LUT3D:
    """The LUT of "``src`` -> working space -> ``grade_working`` -> ``out``", sampled at
    ``size``^3 points (``size - 1`` must divide 255). ``src``/``out`` None: the working space.
    ``grade_working`` takes and returns float32 HxWx3 in [0, 1] (working space). ``bits=8``:
    the lattice points go into the working space as 8-bit pixels (for 8-bit photos: the same
    LittleCMS 8-bit transform as a photo converted to sRGB on its own), else in 16 bits; the
    way back is always 16-bit."""
    from app.ml.lut import LUT3D, identity_table

    if 255 % (size - 1):
        raise ValueError(f"size - 1 must divide 255 (lattice on 8-bit codes), got {size}")
    ident = identity_table(size).reshape(-1, 1, 3)
    if bits == 8:  # the lattice points are 8-bit codes: convert them as 8-bit pixels would be
        codes8 = np.rint(ident * 255.0).astype(np.uint8)
        work = (codes8 if src is None else convert(codes8, src, None)).astype(np.float32) / 255
    else:
        codes = np.rint(ident * 65535.0).astype(np.uint16)
        work = (codes if src is None else convert(codes, src, None)).astype(np.float32) / 65535
    graded = grade_working(np.ascontiguousarray(work, dtype=np.float32))
    graded16 = np.rint(np.clip(np.nan_to_num(graded), 0.0, 1.0) * 65535.0).astype(np.uint16)
    back = graded16 if out is None else convert(graded16, None, out)
    table = back.astype(np.float32).reshape(size, size, size, 3) / np.float32(65535.0)
    return LUT3D(table)


def grade(
    model: _Grades,
    pixels: np.ndarray,
    icc: bytes | None,
    strength: float = 1.0,
    output_profile: OutputProfile = "source",
) -> tuple[np.ndarray, bytes | None]:
    """Grade ``pixels`` (HxWx3 uint8 or uint16, tagged ``icc``) in the working space; returns the
    graded pixels (same dtype) and the ICC profile to embed with them.

    ``output_profile="source"``: the output is in the source's space, with its profile;
    ``"srgb"``: in sRGB, with :data:`WORKING_ICC` when the source had another profile (a
    source already in sRGB keeps its own tag). See the module docstring for how.
    """
    if output_profile not in OUTPUT_PROFILES:
        raise ValueError(f"output_profile must be one of {OUTPUT_PROFILES}, got {output_profile!r}")
    src = None if is_working_space(icc) else icc
    if src is None:  # the fast path: sRGB or untagged, graded as it is
        return model.apply(pixels, strength), icc
    out = src if output_profile == "source" else None
    out_icc = src if output_profile == "source" else WORKING_ICC
    image_lut = getattr(model, "image_lut", None)
    if callable(image_lut) and getattr(model, "adaptive", True):
        # the look depends on the photo: let the model see it in the working space
        look = image_lut(convert(pixels, src, None))

        def grade_working(x: np.ndarray) -> np.ndarray:
            return np.asarray(look.apply(x, strength))

        return _fused_for(grade_working, pixels, src, out).apply(pixels), out_icc

    def grade_model(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.apply(x, strength))

    key = (float(strength), src, out, pixels.dtype.str)
    lut = FUSED_CACHE.get(model, key, lambda: _fused_for(grade_model, pixels, src, out))
    return lut.apply(pixels), out_icc


def _fused_for(
    grade_working: Callable[[np.ndarray], np.ndarray],
    pixels: np.ndarray,
    src: bytes | None,
    out: bytes | None,
) -> LUT3D:
    if pixels.dtype == np.uint8:
        return fused_lut(grade_working, src, out, bits=8)
    return fused_lut(grade_working, src, out, FUSED_SIZE_16, bits=16)


class FusedCache:
    """The fused LUTs of the last few (style model, strength, source profile, output profile,
    pixel type): a batch of photos from one phone, graded with one style, samples the LUT once.
    Entries hold the model weakly (a model evicted from the worker's cache is not kept alive,
    and a new model at a recycled ``id`` never hits an old entry)."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[Any, ...], tuple[weakref.ref[Any], LUT3D]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, model: object, key: tuple[Any, ...], build: Callable[[], LUT3D]) -> LUT3D:
        full = (id(model), *key)
        with self._lock:
            item = self._items.get(full)
            if item is not None and item[0]() is model:
                self._items.move_to_end(full)
                self.hits += 1
                return item[1]
        lut = build()
        try:
            ref = weakref.ref(model)
        except TypeError:  # a model that cannot be referenced weakly is not cached
            return lut
        with self._lock:
            self.misses += 1
            self._items[full] = (ref, lut)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return lut

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


FUSED_CACHE = FusedCache()
