"""LUT files for other tools: export to ``.cube``, HaldCLUT PNG, ``.3dl``, ``.spi3d``, ``.csp``
and ICC profiles; import from ``.cube``, HaldCLUT PNG and ``.3dl``.

Every file describes the same thing: the style's transform of **sRGB display-referred, full-range**
values in ``[0, 1]`` (:data:`INPUT_ENCODING`), sampled on a uniform lattice. Which file goes where:

========== =================== ===================================================================
format     points per axis     loaded by
========== =================== ===================================================================
cube       17 / 33 / 65        Resolve, Premiere, Photoshop, ffmpeg ``lut3d``, OpenColorIO, OBS
haldclut   level 8 / 12 / 16   darktable, RawTherapee, G'MIC, ffmpeg ``haldclut``
           (64 / 144 / 256)    (16-bit RGB PNG, ``level^3 x level^3`` pixels)
3dl        17 / 33 / 65        Flame, Lustre, Nuke, OpenColorIO; ffmpeg ``lut3d`` reads 17^3 only
spi3d      17 / 33 / 65        OpenColorIO configs (Sony Imageworks format)
csp        17 / 33 / 65        OpenColorIO configs, Cinespace
icc        17 / 33 / 65        color-managed apps as the photo's source profile: Photoshop
                               (Assign / Convert to Profile), Capture One, LittleCMS
========== =================== ===================================================================

Writers. ``.cube`` is :func:`app.ml.cube_export.dumps_cube` (with a TITLE and a comment naming the
input encoding). ``.3dl`` (Flame flavour: a mesh line of 10-bit input codes, then 12-bit integer
output codes, blue index fastest), ``.spi3d`` and ``.csp`` are OpenColorIO's own ``Baker``: the
table goes into an in-memory ``Lut3DTransform`` and OpenColorIO samples it on a lattice of the same
size, so every lattice point is written exactly (up to the format's own precision: 12-bit codes
for ``.3dl``, 6 decimals for the others). The HaldCLUT layout is hand-written (see
:func:`dumps_haldclut`); the 16-bit PNG encoding is libvips' (Pillow cannot write 16-bit RGB).

The ICC profile is built by LittleCMS itself (:mod:`app.ml.icc_export`): an RGB input profile
whose table is interpolated in sRGB-encoded RGB, as the service does. (OpenColorIO's ICC baker,
``ociobakelut --format icc``, was not used: its Lab round trip alone measured 44.5-45.0 dB for
an identity LUT in LittleCMS.)

Readers take content (``bytes`` / ``str``) or a :class:`~pathlib.Path`, never a ``str`` path
(the rule of :mod:`app.ml.paths`). Malformed input raises :class:`LUTFormatError` (a
``ValueError``) with a short message, the 1-based ``line`` where one applies;
:class:`~app.ml.cube_export.CubeParseError` for ``.cube``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml.cube_export import (
    BAKE_SIZE,
    MAX_FILE_BYTES,
    CubeParseError,
    _parse_block,
    _read_file,
    dumps_cube,
    read_cube_file,
    read_cube_text,
)
from app.ml.lut import LUT3D, MAX_SIZE, identity_table
from app.ml.paths import require_path

__all__ = [
    "EXPORT_FORMATS",
    "HALD_LEVELS",
    "INPUT_ENCODING",
    "ExportedLUT",
    "LUTFormatError",
    "detect_format",
    "dumps_haldclut",
    "export_lut",
    "hald_points",
    "read_3dl_text",
    "read_haldclut_bytes",
    "read_lut",
    "read_lut_bytes",
    "read_lut_file",
    "source_size",
]

#: What every exported file expects as input (and what the service applies styles to).
INPUT_ENCODING = "sRGB display-referred, full range"
#: HaldCLUT levels offered for export: ``level**2`` points per axis, ``level**3`` pixels a side.
HALD_LEVELS = (8, 12, 16)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    ext: str
    content_type: str
    tools: str


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "cube": ExportFormat(
        "cube", "cube", "text/plain", "Resolve, Premiere, Photoshop, ffmpeg lut3d, OpenColorIO"
    ),
    "haldclut": ExportFormat(
        "haldclut", "png", "image/png", "darktable, RawTherapee, G'MIC, ffmpeg haldclut"
    ),
    "3dl": ExportFormat("3dl", "3dl", "text/plain", "Flame, Lustre, Nuke, OpenColorIO, ffmpeg"),
    "spi3d": ExportFormat("spi3d", "spi3d", "text/plain", "OpenColorIO"),
    "csp": ExportFormat("csp", "csp", "text/plain", "OpenColorIO, Cinespace"),
    "icc": ExportFormat(
        "icc", "icc", "application/vnd.iccprofile", "Photoshop, Capture One, LittleCMS"
    ),
}
_OCIO_BAKER = {"3dl": "flame", "spi3d": "spi3d", "csp": "cinespace"}


class LUTFormatError(ValueError):
    """A malformed HaldCLUT PNG or ``.3dl`` file; ``line`` is 1-based (0 when not a text line)."""

    def __init__(self, kind: str, message: str, line: int = 0) -> None:
        self.kind = kind
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True)
class ExportedLUT:
    """A written LUT file: its bytes and what they hold."""

    data: bytes
    format: str
    ext: str
    content_type: str
    size: int  # lattice points per axis in the file
    level: int | None = None  # HaldCLUT level


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def hald_points(level: int) -> int:
    """Points per axis of a HaldCLUT of ``level`` (``level**2``)."""
    if not 2 <= int(level) <= 16:
        raise ValueError(f"HaldCLUT level must be in 2..16, got {level}")
    return int(level) ** 2


def source_size(model: Any) -> int | None:
    """The lattice size a LUT-backed style model holds (imported, dlut, transfer), else None.

    Such a model *is* its table: baking it at more points per axis only resamples the table by
    trilinear interpolation and adds no precision."""
    lut = getattr(model, "lut", None)
    return lut.size if isinstance(lut, LUT3D) else None


def _unit_domain(lut: LUT3D) -> LUT3D:
    """``lut`` over the input domain [0, 1] (formats other than ``.cube`` have no domain)."""
    if lut.has_default_domain:
        return lut
    return LUT3D(lut.apply(identity_table(lut.size)), title=lut.title)


def export_lut(
    lut: LUT3D,
    fmt: str,
    *,
    title: str | None = None,
    comments: Sequence[str] = (),
) -> ExportedLUT:
    """Write ``lut`` (at its own lattice size) as a ``fmt`` file (see :data:`EXPORT_FORMATS`).

    A HaldCLUT needs ``level**2`` points per axis (see :func:`hald_points`). Raises ValueError
    for an unknown format or a size the format cannot hold."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown LUT format {fmt!r}; expected one of {sorted(EXPORT_FORMATS)}")
    spec = EXPORT_FORMATS[fmt]
    title = title if title is not None else (lut.title or "PicFilter LUT")
    if fmt == "cube":
        text = dumps_cube(
            lut, title=title, comments=[*comments, f"Input encoding: {INPUT_ENCODING}"]
        )
        return ExportedLUT(text.encode("utf-8"), fmt, spec.ext, spec.content_type, lut.size)
    if fmt == "haldclut":
        level = round(lut.size**0.5)
        data = dumps_haldclut(lut, level)
        return ExportedLUT(data, fmt, spec.ext, spec.content_type, lut.size, level)
    if fmt == "icc":
        from app.ml.icc_export import dumps_icc

        data = dumps_icc(_unit_domain(lut), title=title, comments=comments)
        return ExportedLUT(data, fmt, spec.ext, spec.content_type, lut.size)
    text = _bake_ocio(_unit_domain(lut), _OCIO_BAKER[fmt])
    if fmt == "3dl":
        header = [f"# {' '.join(title.split())}", f"# Input encoding: {INPUT_ENCODING}"]
        header += [f"# {' '.join(str(c).split())}" for c in comments]
        text = "\n".join(header) + "\n" + text
    return ExportedLUT(text.encode("utf-8"), fmt, spec.ext, spec.content_type, lut.size)


def _bake_ocio(lut: LUT3D, baker_format: str) -> str:
    """OpenColorIO's ``Baker`` output for ``lut`` at its own size (every lattice point exact)."""
    import PyOpenColorIO as ocio

    transform = ocio.Lut3DTransform(gridSize=lut.size)
    # OpenColorIO's buffer order is [r, g, b, c] with blue fastest: the table's own C order
    transform.setData(np.ascontiguousarray(lut.table, dtype=np.float32).ravel())
    transform.setInterpolation(ocio.INTERP_LINEAR)
    config = ocio.Config.CreateRaw()
    config.addColorSpace(ocio.ColorSpace(name="picfilter_input"))
    look = ocio.ColorSpace(name="picfilter_look")
    look.setTransform(transform, ocio.COLORSPACE_DIR_FROM_REFERENCE)
    config.addColorSpace(look)
    baker = ocio.Baker()
    baker.setConfig(config)
    baker.setFormat(baker_format)
    baker.setInputSpace("picfilter_input")
    baker.setTargetSpace("picfilter_look")
    baker.setCubeSize(lut.size)
    return str(baker.bake())


def dumps_haldclut(lut: LUT3D, level: int) -> bytes:
    """A 16-bit RGB HaldCLUT PNG of ``level`` (``lut`` must have ``level**2`` points per axis).

    Why hand-written: the HaldCLUT layout is the ``.cube`` order (red fastest) wrapped into a
    square of ``level**3`` pixels a side, a reshape; the tools that know the format (G'MIC,
    ImageMagick, ffmpeg ``haldclutsrc``) only make identity halds or apply them, none writes a
    given table. The PNG itself is encoded by libvips (16 bits per channel; Pillow cannot write
    16-bit RGB). Values are clipped to [0, 1] (a PNG holds no more).
    """
    import pyvips

    n = hald_points(level)
    if lut.size != n:
        raise ValueError(f"a level {level} HaldCLUT needs {n} points per axis, got {lut.size}")
    rows = _unit_domain(lut).to_cube_order()
    # float32 is exact enough here (24-bit mantissa for 16-bit codes) and twice as fast
    codes = np.clip(rows * np.float32(65535.0) + np.float32(0.5), 0, 65535).astype(np.uint16)
    side = level**3
    image = pyvips.Image.new_from_array(codes.reshape(side, side, 3), interpretation="rgb16")
    # zlib level 3: measured as small as level 6 on a level-16 hald, and 2.4x faster
    return bytes(image.pngsave_buffer(bitdepth=16, compression=3))


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------
def detect_format(data: bytes, filename: str = "") -> str:
    """``"haldclut"``, ``"3dl"`` or ``"cube"`` for an uploaded LUT file.

    A PNG signature means a HaldCLUT; a ``.3dl`` name, or a first meaningful line that is
    ``3DMESH`` or a mesh of more than 3 integers, means ``.3dl``; anything else is parsed as
    ``.cube`` (whose parser names the bad line)."""
    if data.startswith(PNG_SIGNATURE) or filename.lower().endswith(".png"):
        return "haldclut"
    if filename.lower().endswith(".3dl"):
        return "3dl"
    for raw in data[:4096].splitlines():
        line = raw.split(b"#", 1)[0].strip()
        if not line:
            continue
        if line.upper() == b"3DMESH":
            return "3dl"
        tokens = line.split()
        if len(tokens) > 3 and all(t.isdigit() for t in tokens):
            return "3dl"
        break
    return "cube"


def read_lut_bytes(data: bytes, filename: str = "") -> LUT3D:
    """A :class:`LUT3D` from an uploaded file's content (``.cube``, HaldCLUT PNG or ``.3dl``,
    see :func:`detect_format`). Raises :class:`LUTFormatError` or
    :class:`~app.ml.cube_export.CubeParseError`; ``filename`` is only a hint, never opened."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected the file's content as bytes, got {type(data).__name__}")
    data = bytes(data)
    kind = detect_format(data, filename)
    if kind == "haldclut":
        return read_haldclut_bytes(data)
    if kind == "3dl":
        return read_3dl_text(data)
    return read_cube_text(data)


def read_lut_file(path: os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> LUT3D:
    """:func:`read_lut_bytes` for the regular file at ``path`` (a :class:`~pathlib.Path`; a
    ``str`` is a TypeError), reading at most ``max_bytes``."""
    p = require_path(path, "a LUT file")
    try:
        data = _read_file(p, max_bytes)
    except CubeParseError as exc:
        raise LUTFormatError("file", exc.reason) from None
    return read_lut_bytes(data, p.name)


def read_haldclut_bytes(data: bytes) -> LUT3D:
    """A :class:`LUT3D` of ``level**2`` points per axis from a HaldCLUT PNG's bytes (8 or 16 bits
    per channel, RGB or RGBA; the alpha channel is ignored).

    Only PNG is decoded (libvips' PNG loader, nothing else it could sniff), and the size is
    checked from the header before any pixel is decoded."""
    import pyvips

    if not bytes(data[:8]) == PNG_SIGNATURE:
        raise LUTFormatError("haldclut", "not a PNG file")
    try:
        image = pyvips.Image.pngload_buffer(data, access="sequential", fail_on="error")
    except pyvips.Error:
        raise LUTFormatError("haldclut", "the PNG cannot be decoded") from None
    width, height, bands = image.width, image.height, image.bands
    level = round(width ** (1 / 3))
    if width != height or level**3 != width or not 2 <= level <= 16:
        raise LUTFormatError(
            "haldclut",
            f"a HaldCLUT is a square of level^3 pixels a side (level 2..16, e.g. 512x512 for "
            f"level 8), got {width}x{height}",
        )
    if bands not in (3, 4):
        raise LUTFormatError("haldclut", f"a HaldCLUT is an RGB image, got {bands} channel(s)")
    if image.format not in ("uchar", "ushort"):
        raise LUTFormatError("haldclut", f"expected 8 or 16 bits per channel, got {image.format}")
    try:
        pixels = image.numpy()
    except pyvips.Error:
        raise LUTFormatError("haldclut", "the PNG's pixel data is corrupt") from None
    scale = 255.0 if pixels.dtype == np.uint8 else 65535.0
    rows = pixels[..., :3].reshape(-1, 3).astype(np.float32) / np.float32(scale)
    return LUT3D.from_cube_order(rows, level * level)


_3DL_KEYWORDS = re.compile(rb"^(3DMESH|Mesh\s+\d+\s+\d+|LUT8|gamma\s+[0-9.]+)$", re.IGNORECASE)


def read_3dl_text(data: str | bytes | bytearray | memoryview) -> LUT3D:
    """A :class:`LUT3D` from the content of a ``.3dl`` file (Flame or Lustre flavour).

    The first numeric line is the input mesh: ``N`` increasing integer codes from 0, uniform up
    to rounding (e.g. ``0 64 128 ... 1023``); ``N**3`` rows of 3 output codes follow, blue index
    fastest. The output bit depth is the smallest even number of bits from 8 up that holds the
    largest code (OpenColorIO's rule: 1023 -> 10 bits, 4095 -> 12). Lustre's ``3DMESH`` /
    ``Mesh a b`` header and ``LUT8`` / ``gamma`` trailer are accepted.

    Why hand-written: OpenColorIO reads ``.3dl`` only from a file on disk, hands back a processor
    rather than the table, and its errors name the file's path; this parser reuses the ``.cube``
    data-block scanner (line-numbered errors) and is checked against OpenColorIO in the tests.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", errors="replace")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise TypeError(f"expected the .3dl content as str or bytes, got {type(data).__name__}")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    mesh_line = 0
    for i, line in enumerate(lines, 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        if _3DL_KEYWORDS.match(body.encode()):
            continue
        mesh_line = i
        break
    if not mesh_line:
        raise LUTFormatError("3dl", "no mesh line (the input codes, e.g. 0 64 ... 1023)")
    tokens = lines[mesh_line - 1].split("#", 1)[0].split()
    if not all(t.isdigit() for t in tokens):
        raise LUTFormatError(
            "3dl", f"expected the mesh line of integer codes, got {tokens[:4]}", mesh_line
        )
    mesh = np.array([int(t) for t in tokens], np.int64)
    n = mesh.size
    if n == 3 or not 2 <= n <= MAX_SIZE:
        raise LUTFormatError(
            "3dl", f"the mesh must have 2 or 4..{MAX_SIZE} codes, got {n}", mesh_line
        )
    uniform = np.arange(n) * (mesh[-1] / (n - 1))
    if mesh[0] != 0 or mesh[-1] <= 0 or np.any(np.abs(mesh - uniform) > 1.0):
        raise LUTFormatError("3dl", "only a uniform mesh from 0 is supported", mesh_line)
    # the data block: from the line after the mesh up to a trailing keyword (LUT8, gamma)
    end = len(lines)
    for i in range(mesh_line, len(lines)):
        body = lines[i].split("#", 1)[0].strip()
        if body and body[0].isalpha():
            if not _3DL_KEYWORDS.match(body.encode()):
                raise LUTFormatError("3dl", f"unexpected text {body[:40]!r}", i + 1)
            end = i
            break
    block = "\n".join(lines[mesh_line:end])
    try:
        values, _ = _parse_block(block, mesh_line + 1, n**3, lineno_end=end)
    except CubeParseError as exc:
        raise LUTFormatError("3dl", exc.reason, exc.line) from None
    if np.any(values < 0) or np.any(values != np.round(values)):
        raise LUTFormatError("3dl", "output values must be non-negative integer codes")
    bits = 8
    top = float(values.max()) if values.size else 0.0
    while top > 2**bits - 1 and bits < 32:
        bits += 2
    table = (values / (2**bits - 1)).astype(np.float32).reshape(n, n, n, 3)
    return LUT3D(table)


# ---------------------------------------------------------------------------------------------
# other formats through OpenColorIO
# ---------------------------------------------------------------------------------------------
def read_lut(path: os.PathLike[str], *, size: int = BAKE_SIZE) -> LUT3D:
    """Read any LUT file: ``.cube`` with :func:`read_cube_file`, ``.3dl`` and HaldCLUT ``.png``
    with :func:`read_lut_file` (their own lattice), other formats
    OpenColorIO knows (``.csp``, ``.spi3d``, ``.spi1d``, ``.clf``, ...) by evaluating OpenColorIO's
    processor on a ``size``^3 lattice over [0, 1] (an approximation when the file's own lattice
    differs). ``path`` is a :class:`~pathlib.Path`; a ``str`` is a TypeError."""
    p = require_path(path, "a LUT file")
    if p.suffix.lower() == ".cube":
        return read_cube_file(p)
    if p.suffix.lower() in (".3dl", ".png"):  # the file's own table
        return read_lut_file(p)
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file")
    try:
        import PyOpenColorIO as ocio
    except ImportError as exc:  # pragma: no cover - opencolorio is a dependency
        raise ValueError(f"cannot read {p.suffix} LUTs without OpenColorIO") from exc
    try:
        config = ocio.Config.CreateRaw()
        transform = ocio.FileTransform(
            src=str(p), interpolation=ocio.INTERP_LINEAR, direction=ocio.TRANSFORM_DIR_FORWARD
        )
        processor = config.getProcessor(transform).getDefaultCPUProcessor()
    except Exception as exc:
        raise ValueError(f"cannot read LUT file {p.name}: {exc}") from exc
    lattice = LUT3D.identity(size).table.copy()
    flat = np.ascontiguousarray(lattice.reshape(-1, 3))
    processor.applyRGB(flat)
    return LUT3D(flat.reshape(lattice.shape), title=p.stem)
