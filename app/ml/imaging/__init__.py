"""Images in and out: the one decoder of PicFilter (Pillow, plus pillow-heif for HEIC/HEIF).

Uploads and jobs open files through the same function (:func:`~app.ml.imaging.decode.open_pil`:
one pixel limit, one HEIF registration, one CMYK and one 16-bit rule); the modules:

* :mod:`~app.ml.imaging.decode`: sniffing, opening, :func:`load_image` (pixels for jobs and the
  CLI, 8 or 16 bits), EXIF orientation, CMYK to sRGB;
* :mod:`~app.ml.imaging.color`: the working space (sRGB) and LittleCMS conversions into it and
  back, :func:`grade` (a style applied in the working space);
* :mod:`~app.ml.imaging.probe`: what an upload is (size, format, ICC description, EXIF);
* :mod:`~app.ml.imaging.thumbnails`: 400 px WebP thumbnails of uploads;
* :mod:`~app.ml.imaging.encode`: :func:`save_image`, :func:`encode_image`,
  :func:`apply_to_image_bytes`, :func:`strip_gps`;
* :mod:`~app.ml.imaging.compose`: learning-pair resizes, the before | after preview, the color
  chart.

Services import these names from here and never Pillow itself.
"""

from __future__ import annotations

from app.ml.imaging.color import (
    OUTPUT_PROFILES,
    WORKING_ICC,
    WORKING_SPACE,
    OutputProfile,
    grade,
    is_working_space,
    to_working,
)
from app.ml.imaging.compose import (
    PREVIEW_QUALITY,
    PREVIEW_WIDTH,
    as_uint8,
    box,
    capped,
    color_chart,
    learning_pair,
    nearest,
    side_by_side,
)
from app.ml.imaging.decode import (
    FAMILY_NAMES,
    FAMILY_OF_TYPE,
    HEIF_AVAILABLE,
    MAX_PIXELS,
    ORIENTATION_TAG,
    PILLOW_FORMATS,
    SNIFF_BYTES,
    ImageDecodeError,
    ImageInfo,
    ImageTooLarge,
    heif_flavour,
    load_image,
    open_image,
    open_pil,
    sniff,
    to_srgb,
)
from app.ml.imaging.encode import (
    GPS_IFD_TAG,
    SIXTEEN_BIT_FORMATS,
    EncodedImage,
    apply_to_image_bytes,
    encode_image,
    output_format,
    save_image,
    strip_gps,
)
from app.ml.imaging.pngcheck import release_freed_memory
from app.ml.imaging.probe import ASSUMED_PROFILE, ImageProbe, describe_profile, extract_exif, probe
from app.ml.imaging.thumbnails import (
    THUMBNAIL_QUALITY,
    THUMBNAIL_SIZE,
    Thumbnail,
    fit_within,
    make_thumbnail,
)

__all__ = [
    "ASSUMED_PROFILE",
    "FAMILY_NAMES",
    "FAMILY_OF_TYPE",
    "GPS_IFD_TAG",
    "HEIF_AVAILABLE",
    "MAX_PIXELS",
    "ORIENTATION_TAG",
    "OUTPUT_PROFILES",
    "PILLOW_FORMATS",
    "PREVIEW_QUALITY",
    "PREVIEW_WIDTH",
    "SIXTEEN_BIT_FORMATS",
    "SNIFF_BYTES",
    "THUMBNAIL_QUALITY",
    "THUMBNAIL_SIZE",
    "WORKING_ICC",
    "WORKING_SPACE",
    "EncodedImage",
    "ImageDecodeError",
    "ImageInfo",
    "ImageProbe",
    "ImageTooLarge",
    "OutputProfile",
    "Thumbnail",
    "apply_to_image_bytes",
    "as_uint8",
    "box",
    "capped",
    "color_chart",
    "describe_profile",
    "encode_image",
    "extract_exif",
    "fit_within",
    "grade",
    "heif_flavour",
    "is_working_space",
    "learning_pair",
    "load_image",
    "make_thumbnail",
    "nearest",
    "open_image",
    "open_pil",
    "output_format",
    "probe",
    "release_freed_memory",
    "save_image",
    "side_by_side",
    "sniff",
    "strip_gps",
    "to_srgb",
    "to_working",
]
