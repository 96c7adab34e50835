"""A style's LUT as an ICC v4 RGB input profile, written by LittleCMS itself.

The profile maps **sRGB display-referred** device values to the XYZ (D50) connection space with
the style applied, so a color-managed tool that takes it as the *source* profile of an sRGB
photo and converts to sRGB (LittleCMS: ``buildTransform(style, sRGB)``; Photoshop's Convert to
Profile; Capture One's ICC profile) shows the photo with the look. Each ``AToB`` tag is a
``lutAtoBType`` pipeline built so that the table is interpolated in the very space the service
interpolates it in::

    A curves: identity
    CLUT:     the style's table, sRGB-encoded in and out, 16-bit, at the table's own size
    M curves: the sRGB transfer function (parametric curve type 4: the IEC 61966-2.1 EOTF)
    matrix:   linear sRGB -> XYZ D50 (LittleCMS's own sRGB colorants, Bradford-adapted)
    B curves: identity

so a consumer converting to sRGB undoes the last three stages exactly and is left with the
table. ``AToB1`` (relative and absolute colorimetric) is that pipeline; ``AToB0`` (perceptual,
and saturation) also maps black to the v4 perceptual reference medium black
(``cmsPERCEPTUAL_BLACK_*``, white kept; ``AToB2``, saturation, is linked to it): LittleCMS, as
the v4 spec asks, always applies black point compensation from that black to the destination's
for v4 perceptual and saturation transforms; with the plain pipeline in ``AToB0`` an identity
LUT measured 38.5 dB perceptual (means -3.1/-2.1/-1.1 levels R/G/B), against an exact identity
with this one. There is no ``BToA`` (an input profile has none: a look has no inverse).

Why ctypes on the system LittleCMS rather than a binding: the maintained PyPI bindings
(``pylcms2`` / ``python-lcms2``) and Pillow's ``ImageCms`` open profiles and run transforms but
expose no pipeline, stage or tag-writing API, and ``littlecms`` (SWIG, 0.1b3 of 2016, LittleCMS
2.7 bundled) is unmaintained; the ICC binary format is not written here, only
LittleCMS's documented calls (``cmsPipelineAlloc``, ``cmsStageAlloc*``, ``cmsWriteTag``,
``cmsSaveProfileToMem``) through Debian's ``liblcms2`` (package ``liblcms2-2``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from app.ml.lut import LUT3D

__all__ = ["IccError", "dumps_icc", "lcms_library"]

#: The sRGB EOTF as an ICC parametric curve of type 4: Y = (aX + b)^g for X >= d, else cX.
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
#: XYZ in a lutAtoB pipeline is encoded as value / (1 + 32767/32768) (ICC u1Fixed15 range).
XYZ_ENCODING = 1.0 / (1.0 + 32767.0 / 32768.0)
#: lcms2.h cmsPERCEPTUAL_BLACK_X/Y/Z: the ICC v4 perceptual reference medium black (D50).
PERCEPTUAL_BLACK = (0.00336, 0.0034731, 0.00287)
D50 = (0.9642, 1.0, 0.8249)


def _sig(text: str) -> int:
    return int.from_bytes(text.encode("ascii"), "big")


class IccError(RuntimeError):
    """LittleCMS is missing or refused to build the profile."""


@cache
def lcms_library() -> ctypes.CDLL:
    """Debian's ``liblcms2`` with the prototypes used here (IccError when it is absent)."""
    name = ctypes.util.find_library("lcms2")
    if name is None:
        raise IccError("LittleCMS (liblcms2) is not installed: apt-get install liblcms2-2")
    lib = ctypes.CDLL(name)
    p, u32, f64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_double
    protos: dict[str, tuple[Any, list[Any]]] = {
        "cmsCreateProfilePlaceholder": (p, [p]),
        "cmsCreate_sRGBProfile": (p, []),
        "cmsCloseProfile": (ctypes.c_int, [p]),
        "cmsSetProfileVersion": (None, [p, f64]),
        "cmsSetDeviceClass": (None, [p, u32]),
        "cmsSetColorSpace": (None, [p, u32]),
        "cmsSetPCS": (None, [p, u32]),
        "cmsSetHeaderRenderingIntent": (None, [p, u32]),
        "cmsReadTag": (p, [p, u32]),
        "cmsWriteTag": (ctypes.c_int, [p, u32, p]),
        "cmsLinkTag": (ctypes.c_int, [p, u32, u32]),
        "cmsMD5computeID": (ctypes.c_int, [p]),
        "cmsSaveProfileToMem": (ctypes.c_int, [p, p, ctypes.POINTER(u32)]),
        "cmsPipelineAlloc": (p, [p, u32, u32]),
        "cmsPipelineFree": (None, [p]),
        "cmsPipelineInsertStage": (ctypes.c_int, [p, ctypes.c_int, p]),
        "cmsStageAllocToneCurves": (p, [p, u32, p]),
        "cmsStageAllocCLut16bit": (p, [p, u32, u32, u32, p]),
        "cmsStageAllocMatrix": (p, [p, u32, u32, p, p]),
        "cmsBuildParametricToneCurve": (p, [p, ctypes.c_int32, p]),
        "cmsFreeToneCurve": (None, [p]),
        "cmsMLUalloc": (p, [p, u32]),
        "cmsMLUsetWide": (ctypes.c_int, [p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_wchar_p]),
        "cmsMLUfree": (None, [p]),
        "cmsD50_XYZ": (p, []),
    }
    for fn, (restype, argtypes) in protos.items():
        func = getattr(lib, fn)
        func.restype = restype
        func.argtypes = argtypes
    return lib


class _CIEXYZ(ctypes.Structure):
    _fields_ = [("X", ctypes.c_double), ("Y", ctypes.c_double), ("Z", ctypes.c_double)]


def _checked(value: Any, what: str) -> Any:
    if not value:
        raise IccError(f"LittleCMS could not {what}")
    return value


@cache
def srgb_to_xyz_d50() -> np.ndarray:
    """Linear sRGB -> XYZ D50 (3x3, columns = the colorants) of LittleCMS's own sRGB profile
    (``cmsCreate_sRGBProfile``: the IEC primaries, D65 adapted to D50 by Bradford), the matrix
    a consumer's sRGB destination profile inverts."""
    lib = lcms_library()
    srgb = _checked(lib.cmsCreate_sRGBProfile(), "create its sRGB profile")
    try:
        cols = []
        for tag in ("rXYZ", "gXYZ", "bXYZ"):
            xyz = ctypes.cast(
                _checked(lib.cmsReadTag(srgb, _sig(tag)), "read"), ctypes.POINTER(_CIEXYZ)
            )
            cols.append((xyz.contents.X, xyz.contents.Y, xyz.contents.Z))
    finally:
        lib.cmsCloseProfile(srgb)
    return np.array(cols, np.float64).T


def _pipeline(lib: ctypes.CDLL, codes: np.ndarray, size: int, perceptual: bool) -> int:
    """The lutAtoB pipeline (see the module doc); the caller frees it."""
    matrix = srgb_to_xyz_d50()
    offset = np.zeros(3)
    if perceptual:
        # per channel XYZ -> bp + XYZ (1 - bp / D50): black to the v4 perceptual black, D50 kept
        black, white = np.array(PERCEPTUAL_BLACK), np.array(D50)
        matrix = matrix * (1.0 - black / white)[:, None]
        offset = black
    m = (ctypes.c_double * 9)(*(matrix * XYZ_ENCODING).ravel())
    off = (ctypes.c_double * 3)(*(offset * XYZ_ENCODING))
    params = (ctypes.c_double * 5)(*SRGB_CURVE)
    curve = _checked(lib.cmsBuildParametricToneCurve(None, 4, params), "build the sRGB curve")
    curves = (ctypes.c_void_p * 3)(curve, curve, curve)
    table = np.ascontiguousarray(codes)
    pipe = _checked(lib.cmsPipelineAlloc(None, 3, 3), "allocate a pipeline")
    try:
        stages = [
            lib.cmsStageAllocToneCurves(None, 3, None),
            lib.cmsStageAllocCLut16bit(None, size, 3, 3, table.ctypes.data),
            lib.cmsStageAllocToneCurves(None, 3, curves),
            lib.cmsStageAllocMatrix(None, 3, 3, m, off),
            lib.cmsStageAllocToneCurves(None, 3, None),
        ]
        for stage in stages:  # the pipeline owns each stage once inserted
            _checked(stage, "allocate a pipeline stage")
            _checked(lib.cmsPipelineInsertStage(pipe, 1, stage), "insert a stage")  # cmsAT_END
    except BaseException:
        lib.cmsPipelineFree(pipe)
        raise
    finally:
        lib.cmsFreeToneCurve(curve)  # the stage holds its own copy
    return int(pipe)


def _write_text(lib: ctypes.CDLL, profile: int, tag: str, text: str) -> None:
    mlu = _checked(lib.cmsMLUalloc(None, 1), "allocate a text tag")
    try:
        _checked(lib.cmsMLUsetWide(mlu, b"en", b"US", text), "set a text tag")
        _checked(lib.cmsWriteTag(profile, _sig(tag), mlu), f"write the {tag} tag")
    finally:
        lib.cmsMLUfree(mlu)


def dumps_icc(lut: LUT3D, *, title: str, comments: Sequence[str] = ()) -> bytes:
    """The ICC v4 profile (bytes) of ``lut`` (over the input domain [0, 1], values clipped to
    [0, 1], written at its own lattice size): see the module doc. ``title`` is the profile's
    description, ``comments`` go into its copyright tag."""
    if not lut.has_default_domain:
        raise ValueError("an ICC CLUT covers the input domain [0, 1] only")
    if not 2 <= lut.size <= 255:
        raise ValueError(f"an ICC CLUT has 2..255 points per axis, got {lut.size}")
    lib = lcms_library()
    codes = np.rint(np.clip(lut.table, 0.0, 1.0) * 65535.0).astype(np.uint16)
    profile = _checked(lib.cmsCreateProfilePlaceholder(None), "create a profile")
    pipes: list[int] = []
    try:
        lib.cmsSetProfileVersion(profile, 4.3)
        lib.cmsSetDeviceClass(profile, _sig("scnr"))  # input
        lib.cmsSetColorSpace(profile, _sig("RGB "))
        lib.cmsSetPCS(profile, _sig("XYZ "))
        lib.cmsSetHeaderRenderingIntent(profile, 0)
        _write_text(lib, profile, "desc", " ".join(title.split()) or "PicFilter look")
        notes = ["PicFilter style look; input: sRGB display-referred, full range", *comments]
        _write_text(lib, profile, "cprt", "; ".join(" ".join(str(c).split()) for c in notes))
        _checked(lib.cmsWriteTag(profile, _sig("wtpt"), lib.cmsD50_XYZ()), "write wtpt")
        for tag, perceptual in (("A2B0", True), ("A2B1", False)):
            pipes.append(_pipeline(lib, codes, lut.size, perceptual))
            _checked(lib.cmsWriteTag(profile, _sig(tag), pipes[-1]), f"write the {tag} tag")
        # saturation: the perceptual table, stored once
        _checked(lib.cmsLinkTag(profile, _sig("A2B2"), _sig("A2B0")), "link the A2B2 tag")
        _checked(lib.cmsMD5computeID(profile), "compute the profile ID")
        needed = ctypes.c_uint32(0)
        _checked(lib.cmsSaveProfileToMem(profile, None, ctypes.byref(needed)), "size the profile")
        buffer = ctypes.create_string_buffer(needed.value)
        _checked(lib.cmsSaveProfileToMem(profile, buffer, ctypes.byref(needed)), "save")
        return buffer.raw[: needed.value]
    finally:
        lib.cmsCloseProfile(profile)
        for pipe in pipes:  # cmsWriteTag keeps its own copy
            lib.cmsPipelineFree(pipe)
