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
from app.ml.imaging.pngcheck import PngStreamError, check_png_stream, raw_size

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]


def _png(mode: str, size: tuple[int, int], interlace: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if mode == "I;16":
        im = Image.fromarray(arr[..., 0].astype(np.uint16) * 257).convert("I;16")
    else:
        im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG", interlace=interlace)
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
@pytest.mark.parametrize("interlace", [0, 1])
@pytest.mark.parametrize("size", [(1, 1), (7, 3), (33, 17), (100, 61)])
def test_pillow_pngs_pass_and_damaged_ones_do_not(
    tmp_path: Path, mode: str, interlace: int, size: tuple[int, int]
) -> None:
    data = _png(mode, size, interlace)
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
    path.write_bytes(_png("RGB", (64, 48), 0))
    info = probe(path, "png", max_pixels=10_000, want_exif=False)
    assert (info.width, info.height, info.format) == (64, 48, "png")
    path.write_bytes(_handmade(50, 40, 20))
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        probe(path, "png", max_pixels=10_000, want_exif=False)


def test_raw_size_matches_what_zlib_holds_in_pillow_files(tmp_path: Path) -> None:
    for mode, bits, ctype in (("RGB", 8, 2), ("L", 8, 0), ("1", 1, 0), ("RGBA", 8, 6)):
        for interlace in (0, 1):
            data = _png(mode, (37, 23), interlace)
            idat, pos = b"", 8
            while pos < len(data):
                (length,) = struct.unpack(">I", data[pos : pos + 4])
                if data[pos + 4 : pos + 8] == b"IDAT":
                    idat += data[pos + 8 : pos + 8 + length]
                pos += 12 + length
            assert len(zlib.decompress(idat)) == raw_size(37, 23, bits, ctype, interlace)
