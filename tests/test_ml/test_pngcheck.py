"""The streaming PNG check of uploads: it accepts what Pillow writes and refuses truncated,
corrupt, short or overlong image data, without decoding."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.ml.imaging import ImageDecodeError, probe
from app.ml.imaging.pngcheck import PngStreamError, check_png_stream

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]


def _png(mode: str, size: tuple[int, int], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if mode == "I;16":
        im = Image.fromarray(arr[..., 0].astype(np.uint16) * 257).convert("I;16")
    else:
        im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _handmade(width: int, height: int, rows: int) -> bytes:
    """A PNG with valid CRCs whose image data holds ``rows`` rows (of ``height`` announced)."""
    raw = (b"\x00" + b"\x80" * 3 * width) * rows
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(1, 1), (7, 3), (33, 17), (100, 61)])
def test_pillow_pngs_pass_and_damaged_ones_do_not(
    tmp_path: Path, mode: str, size: tuple[int, int]
) -> None:
    data = _png(mode, size)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    check_png_stream(path)
    for cut in (len(data) - 5, len(data) // 2, 40):
        path.write_bytes(data[:cut])
        with pytest.raises(PngStreamError):
            check_png_stream(path)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(PngStreamError):
        check_png_stream(path)


def test_image_data_shorter_or_longer_than_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_handmade(50, 40, 40))
    check_png_stream(path)
    assert Image.open(path).size == (50, 40)
    path.write_bytes(_handmade(50, 40, 39))  # every CRC right, one row missing
    with pytest.raises(PngStreamError, match="truncated"):  # (Pillow's load lets it pass)
        check_png_stream(path)
    path.write_bytes(_handmade(50, 40, 41))
    with pytest.raises(PngStreamError, match="more image data"):
        check_png_stream(path)


def test_probe_of_a_png_reads_the_header_and_refuses_short_data(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_png("RGB", (64, 48)))
    info = probe(path, "png", max_pixels=10_000, want_exif=False)
    assert (info.width, info.height, info.format) == (64, 48, "png")
    path.write_bytes(_handmade(50, 40, 20))
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        probe(path, "png", max_pixels=10_000, want_exif=False)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
ADAM7 += [(0, 1, 1, 2)]


def _interlaced_rgb(arr: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG of ``arr`` (Pillow writes no interlaced PNGs): each
    pass is the sub-image ``arr[y0::dy, x0::dx]``, its rows with filter byte 0."""
    raw = b""
    for x0, y0, dx, dy in ADAM7:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    h, w = arr.shape[:2]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (8, 8), (37, 23), (64, 5)])
def test_interlaced_pngs_are_checked_too(tmp_path: Path, size: tuple[int, int]) -> None:
    arr = np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    data = _interlaced_rgb(arr)
    path = tmp_path / "i.png"
    path.write_bytes(data)
    with Image.open(path) as im:  # the file is right: Pillow decodes it to the same pixels
        assert np.array_equal(np.asarray(im.convert("RGB")), arr)
    check_png_stream(path)
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(PngStreamError):
        check_png_stream(path)
