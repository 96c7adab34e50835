"""Checking a whole PNG without holding its pixels, and giving freed heap memory back.

:func:`check_png_stream` reads the file chunk by chunk: every chunk's CRC, and the image data
(``IDAT``) inflated through ``zlib`` in 1 MiB pieces that are counted and dropped, which must
come to exactly the size the header announces (rows, filter bytes, Adam7 passes). That finds the
truncated and corrupt files a full decode finds, at a constant few MiB instead of width x height
x channels bytes (285 MiB for 99.8 MP RGB): Pillow can only decode a PNG whole. Written here
because no maintained library validates a PNG's data stream without decoding it into memory.

:func:`release_freed_memory` asks glibc to return freed heap pages to the system after a large
decode (``malloc_trim``): without it the freed blocks of a decoded image stay in the process's
arenas, and a process that decoded four large images at once keeps their memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import struct
import zlib
from functools import cache
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIECE = 1 << 20
# samples per pixel of each PNG color type
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7: (x start, y start, x step, y step) of each pass
_ADAM7: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


class PngStreamError(ValueError):
    """The PNG is truncated or corrupt (the message says how; it never names the file)."""


def raw_size(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> int:
    """Bytes the inflated image data of such a PNG holds (filter bytes included).

    >>> raw_size(10, 2, 8, 2, 0)  # two rows of a filter byte and 10 RGB pixels
    62
    """
    if color_type not in _CHANNELS:
        raise PngStreamError(f"unknown PNG color type {color_type}")
    bits = bit_depth * _CHANNELS[color_type]

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if interlace == 0:
        return rows(width, height)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        total += rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy)
    return total


def check_png_stream(path: Path) -> None:
    """Raise :class:`PngStreamError` unless ``path`` is a complete, intact PNG (see the module
    docstring)."""
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise PngStreamError("not a PNG file")
        inflate = zlib.decompressobj()
        expected: int | None = None
        inflated = 0
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise PngStreamError("the file is truncated (no IEND chunk)")
            length, kind = struct.unpack(">I4s", head)
            crc = zlib.crc32(kind)
            left = length
            header = b""
            while left:
                piece = f.read(min(left, _PIECE))
                if not piece:
                    raise PngStreamError(f"the file is truncated (in a {kind!r} chunk)")
                left -= len(piece)
                crc = zlib.crc32(piece, crc)
                if kind == b"IHDR":
                    header += piece
                elif kind == b"IDAT":
                    if expected is None:
                        raise PngStreamError("image data before the header")
                    inflated += _inflate(inflate, piece, expected - inflated)
            stored = f.read(4)
            if len(stored) < 4:
                raise PngStreamError("the file is truncated (a chunk without its CRC)")
            if struct.unpack(">I", stored)[0] != crc & 0xFFFFFFFF:
                raise PngStreamError(f"broken PNG file (bad CRC in a {kind!r} chunk)")
            if kind == b"IHDR":
                if len(header) != 13:
                    raise PngStreamError("broken PNG header")
                width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
                expected = raw_size(width, height, depth, ctype, interlace)
            elif kind == b"IEND":
                break
        if expected is None or inflated != expected or not inflate.eof:
            raise PngStreamError(
                f"image file is truncated ({inflated} of {expected} bytes of image data)"
            )


def _inflate(inflate: zlib._Decompress, data: bytes, room: int) -> int:
    """Inflate ``data`` in bounded pieces; the number of bytes it gave (never above ``room``)."""
    total = 0
    try:
        while data:
            out = inflate.decompress(data, _PIECE)
            total += len(out)
            if total > room:
                raise PngStreamError("more image data than the header announces")
            data = inflate.unconsumed_tail
    except zlib.error as exc:
        raise PngStreamError(f"corrupt image data ({exc})") from None
    return total


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    with contextlib.suppress(OSError):
        lib = ctypes.CDLL(name)
        if hasattr(lib, "malloc_trim"):
            return lib
    return None


def release_freed_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
