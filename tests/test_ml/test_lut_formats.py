"""LUT file formats (app.ml.lut_formats): what each writer puts in its file, the HaldCLUT and
``.3dl`` readers (checked against OpenColorIO, which reads the same files), and their errors."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.ml.cube_export import CubeParseError
from app.ml.lut import LUT3D, LUTStyle
from app.ml.lut_formats import (
    INPUT_ENCODING,
    LUTFormatError,
    detect_format,
    dumps_haldclut,
    export_lut,
    hald_points,
    read_3dl_text,
    read_haldclut_bytes,
    read_lut,
    read_lut_bytes,
    read_lut_file,
    source_size,
)
from tests.helpers import ocio_file_transform, shared_lut


def _look(size: int = 17) -> LUT3D:
    """A smooth, colorful, non-separable grade (no shared data needed)."""
    x = LUT3D.identity(size).table.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    out = np.stack(
        [r**0.8 * 0.9 + 0.05 * b, 0.1 + 0.8 * g**1.1 + 0.05 * r * b, 0.95 * b**0.9 + 0.03], -1
    )
    return LUT3D(np.clip(out, 0, 1))


def _png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, color type) from a PNG's IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, color


# ---- export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [17, 33, 65])
def test_cube_export_has_title_size_and_input_encoding(size: int) -> None:
    lut = _look(size)
    out = export_lut(lut, "cube", title="Teal look", comments=["made by a test"])
    text = out.data.decode()
    lines = text.splitlines()
    assert lines[0] == 'TITLE "Teal look"'
    assert f"# Input encoding: {INPUT_ENCODING}" in lines
    assert "# made by a test" in lines
    assert f"LUT_3D_SIZE {size}" in lines
    assert (out.ext, out.content_type, out.size) == ("cube", "text/plain", size)
    assert read_lut_bytes(out.data).allclose(lut, atol=1e-6)


@pytest.mark.parametrize("level", [8, 12])
def test_haldclut_export_is_a_16_bit_png_of_level_cubed_pixels(level: int) -> None:
    n = hald_points(level)
    lut = _look(17).resample(n)
    out = export_lut(lut, "haldclut")
    assert (out.ext, out.content_type, out.size, out.level) == ("png", "image/png", n, level)
    assert _png_header(out.data) == (level**3, level**3, 16, 2)  # 16-bit RGB
    back = read_haldclut_bytes(out.data)
    assert back.size == n
    assert np.abs(back.table - lut.table).max() <= 0.5 / 65535 + 1e-7
    # the HaldCLUT layout: pixel i is lattice point (r, g, b) = (i % n, i // n % n, i // n^2)
    with Image.open(io.BytesIO(dumps_haldclut(LUT3D.identity(4), 2))) as im:
        assert im.size == (8, 8)


@pytest.mark.slow
def test_haldclut_level_16() -> None:
    lut = _look(17).resample(256)
    out = export_lut(lut, "haldclut")
    assert _png_header(out.data) == (4096, 4096, 16, 2)
    assert np.abs(read_haldclut_bytes(out.data).table - lut.table).max() <= 0.5 / 65535 + 1e-7


def test_haldclut_needs_a_square_level() -> None:
    with pytest.raises(ValueError, match="level 8 HaldCLUT needs 64"):
        dumps_haldclut(_look(33), 8)
    with pytest.raises(ValueError, match="level must be in 2..16"):
        hald_points(17)
    with pytest.raises(ValueError, match="unknown LUT format"):
        export_lut(_look(), "clf")  # Academy CLF: not offered


@pytest.mark.parametrize("size", [17, 33])
def test_3dl_export_has_a_mesh_line_and_integer_codes(size: int) -> None:
    lut = _look(size)
    out = export_lut(lut, "3dl", title="Teal look")
    lines = [ln for ln in out.data.decode().splitlines() if ln.strip()]
    assert lines[0] == "# Teal look"
    assert lines[1] == f"# Input encoding: {INPUT_ENCODING}"
    mesh = [int(t) for t in lines[2].split()]
    assert len(mesh) == size
    assert (mesh[0], mesh[-1]) == (0, 1023)  # 10-bit input codes
    rows = np.array([[int(t) for t in ln.split()] for ln in lines[3:]])
    assert rows.shape == (size**3, 3)
    assert 0 <= rows.min() <= rows.max() <= 4095  # 12-bit output codes
    # blue fastest: the second row is (r, g, b) = (0, 0, 1)
    expected = np.rint(lut.table[0, 0, 1] * 4095)
    assert np.abs(rows[1] - expected).max() <= 1
    assert np.abs(read_3dl_text(out.data).table - lut.table).max() <= 0.5 / 4095 + 1e-6


@pytest.mark.parametrize(("fmt", "ext"), [("spi3d", "spi3d"), ("csp", "csp"), ("3dl", "3dl")])
def test_ocio_formats_read_back_through_opencolorio(tmp_path: Path, fmt: str, ext: str) -> None:
    lut = _look(17)
    out = export_lut(lut, fmt)
    path = tmp_path / f"look.{ext}"
    path.write_bytes(out.data)
    back = _ocio_table(path, 17)
    tolerance = 0.5 / 4095 + 1e-6 if fmt == "3dl" else 1e-6
    assert np.abs(back - lut.table).max() <= tolerance


def _ocio_table(path: Path, size: int) -> np.ndarray:
    """The table OpenColorIO's reader applies (FileTransform, linear) on a ``size``^3 lattice."""
    lattice = LUT3D.identity(size).table
    image = np.ascontiguousarray(lattice.reshape(-1, 1, 3) * 255.0)
    return ocio_file_transform(path, "trilinear", image).reshape(lattice.shape)


def test_read_lut_takes_3dl_and_haldclut_files_at_their_own_size(tmp_path: Path) -> None:
    lut = _look(17)
    for name, fmt in (("look.3dl", "3dl"), ("look.png", "haldclut")):
        table = lut if fmt == "3dl" else lut.resample(16)
        path = tmp_path / name
        path.write_bytes(export_lut(table, fmt).data)
        back = read_lut(path)
        assert back.size == table.size
        assert np.abs(back.table - table.table).max() <= 0.5 / 4095 + 1e-6


def test_a_cube_domain_is_baked_into_formats_without_one(tmp_path: Path) -> None:
    table = _look(33).table
    lut = LUT3D(table, domain_min=[-0.1, 0.0, 0.0], domain_max=[1.2, 1.0, 1.1])
    image = _colors()
    path = tmp_path / "look.spi3d"
    path.write_bytes(export_lut(lut, "spi3d").data)
    got = ocio_file_transform(path, "trilinear", image)
    want = lut.apply(image).astype(np.float64) / 255
    assert np.abs(got - want).max() < 3 / 255


def _colors() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_source_size_is_the_table_of_lut_styles_only() -> None:
    assert source_size(LUTStyle(_look(33))) == 33
    assert source_size(object()) is None


# ---- import ---------------------------------------------------------------------------------
def test_imports_8_bit_and_rgba_haldcluts() -> None:
    lut = _look(17).resample(16)  # level 4
    codes = np.clip(np.rint(lut.to_cube_order() * 255), 0, 255).astype(np.uint8)
    rgb = codes.reshape(64, 64, 3)
    rgba = np.dstack([rgb, np.full_like(rgb[..., :1], 255)])
    for image in (Image.fromarray(rgb), Image.fromarray(rgba)):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        back = read_lut_bytes(buf.getvalue(), "film.png")
        assert back.size == 16
        assert np.abs(back.table - lut.table).max() <= 0.5 / 255 + 1e-6


def test_reads_a_lustre_3dl_as_opencolorio_does(tmp_path: Path) -> None:
    """A ``.3dl`` written by OpenColorIO's Lustre baker (3DMESH header, LUT8 trailer), and one
    with 10-bit output codes: our reader gives what OpenColorIO's FileTransform applies."""
    import PyOpenColorIO as ocio

    lut = _look(17)
    transform = ocio.Lut3DTransform(gridSize=17)
    transform.setData(np.ascontiguousarray(lut.table).ravel())
    config = ocio.Config.CreateRaw()
    config.addColorSpace(ocio.ColorSpace(name="in"))
    look = ocio.ColorSpace(name="look")
    look.setTransform(transform, ocio.COLORSPACE_DIR_FROM_REFERENCE)
    config.addColorSpace(look)
    baker = ocio.Baker()
    baker.setConfig(config)
    baker.setFormat("lustre")
    baker.setInputSpace("in")
    baker.setTargetSpace("look")
    baker.setCubeSize(17)
    lustre = baker.bake()
    assert lustre.startswith("3DMESH")
    assert "LUT8" in lustre
    mesh = " ".join(str(round(i * 1023 / 16)) for i in range(17))
    rows = np.rint(lut.table.reshape(-1, 3) * 1023).astype(int)
    ten_bit = mesh + "\n" + "\n".join(" ".join(map(str, r)) for r in rows) + "\n"
    image = _colors()
    for name, text in (("lustre.3dl", lustre), ("tenbit.3dl", ten_bit)):
        path = tmp_path / name
        path.write_text(text)
        ours = read_lut_bytes(text.encode(), name).apply(image.astype(np.float32) / 255)
        theirs = ocio_file_transform(path, "trilinear", image)
        assert np.abs(ours - theirs).max() < 1e-4, name
        assert read_lut_file(path).allclose(read_3dl_text(text))


def test_detect_format() -> None:
    assert detect_format(b"\x89PNG\r\n\x1a\nrest") == "haldclut"
    assert detect_format(b"# c\n\n0 64 128 1023\n0 0 0\n") == "3dl"
    assert detect_format(b"3DMESH\nMesh 4 12\n") == "3dl"
    assert detect_format(b"LUT_3D_SIZE 2\n0 0 0\n") == "cube"
    assert detect_format(b"anything", "look.3dl") == "3dl"
    assert detect_format(b"/etc/passwd") == "cube"  # parsed as .cube content, never opened


def test_content_and_paths_never_mix(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        read_lut_file(str(tmp_path / "x.3dl"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        read_lut_bytes(str(tmp_path / "x.3dl"))  # type: ignore[arg-type]
    with pytest.raises(CubeParseError, match="line 1"):
        read_lut_bytes(b"/etc/passwd")  # a name as content is parsed, never opened


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a....", "not a PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot be decoded"),
        (_png(np.zeros((64, 32, 3), np.uint8)), "got 32x64"),
        (_png(np.zeros((60, 60, 3), np.uint8)), "got 60x60"),
        (_png(np.zeros((64, 64), np.uint8)), "RGB image, got 1 channel"),
        (_png(_noise(64))[:-2000], "corrupt|cannot be decoded"),
    ],
)
def test_bad_haldcluts_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(LUTFormatError, match=message) as info:
        read_lut_bytes(data, "x.png")
    assert info.value.kind == "haldclut"


MESH = "0 341 682 1023"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# only a comment\n", 0, "no mesh line"),
        ("3DMESH\nMesh 2 12\n0 512 1023\n", 3, "the mesh must have 2 or 4"),
        ("0 0.5 1 2\n", 1, "the mesh line of integer codes"),
        ("0 100 682 1023\n", 1, "uniform mesh"),
        ("0 341 682 1023\n0 0 0\n1 2\n", 3, "expected 3 numbers, got 2"),
        (MESH + "\n" + "0 0 0\n" * 10, 12, "truncated data: expected 64 rows, got 10"),
        (MESH + "\n" + "0 0 0\n" * 3 + "hello there\n", 5, "unexpected text"),
        (MESH + "\n" + "0 0 nan\n", 2, "NaN"),
        (MESH + "\n" + "0 0 -5\n" * 64, 0, "non-negative integer"),
        (MESH + "\n" + "0 0 0.5\n" * 64, 0, "non-negative integer"),
    ],
)
def test_bad_3dl_files_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(LUTFormatError, match=message) as info:
        read_lut_bytes(text.encode(), "bad.3dl")
    assert info.value.kind == "3dl"
    assert info.value.line == line


def test_real_lut_survives_every_importable_format() -> None:
    """A commercial 33^3 LUT exported to HaldCLUT (level 8, resampled) and .3dl (33) imports
    back to within the file's own precision."""
    lut = shared_lut("classic_film.cube")
    three = read_lut_bytes(export_lut(lut, "3dl").data)
    assert np.abs(three.table - lut.table).max() <= 0.5 / 4095 + 1e-6
    hald = read_lut_bytes(export_lut(lut.resample(64), "haldclut").data)
    assert np.abs(hald.table - lut.resample(64).table).max() <= 0.5 / 65535 + 1e-6


def _lcms_at_nodes(icc: bytes, size: int, intent: int) -> np.ndarray:
    """LittleCMS (Pillow) with ``icc`` as source, sRGB out, without precalculation (each pixel
    through the profile's own pipeline), at the nodes of a ``size``^3 lattice (size - 1 must
    divide 255, so the nodes are 8-bit codes); uint8 in the lattice's shape."""
    from PIL import ImageCms

    step = 255 // (size - 1)
    nodes = np.rint(LUT3D.identity(size).table.astype(np.float64) * 255).astype(np.uint8)
    assert np.all(nodes.astype(int) % step == 0)
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent(intent),
        flags=ImageCms.Flags.NOOPTIMIZE,
    )
    image = Image.fromarray(np.ascontiguousarray(nodes.reshape(-1, 1, 3)), "RGB")
    out = ImageCms.applyTransform(image, transform)
    assert out is not None
    return np.asarray(out).reshape(nodes.shape)


@pytest.mark.parametrize("intent", [0, 1, 2, 3], ids=["perceptual", "relative", "sat", "abs"])
def test_icc_profile_holds_the_table_for_every_intent(intent: int) -> None:
    """At its lattice nodes the profile gives back the table (to the 8-bit rounding of the
    output) for every rendering intent: perceptual and saturation through the v4 perceptual
    black that LittleCMS compensates, colorimetric through the plain pipeline."""
    from PIL import ImageCms

    lut = _look(18)
    out = export_lut(lut, "icc", title="Teal look – café", comments=["18 points per axis"])
    assert (out.ext, out.content_type, out.size) == ("icc", "application/vnd.iccprofile", 18)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(out.data)).profile
    assert profile.profile_description == "Teal look – café"
    assert INPUT_ENCODING in profile.copyright
    assert "18 points per axis" in profile.copyright
    assert profile.rendering_intent == 0
    got = _lcms_at_nodes(out.data, 18, intent).astype(int)
    expected = np.rint(lut.table.astype(np.float64) * 255).astype(int)
    assert np.abs(got - expected).max() <= 1


def test_icc_export_bakes_a_cube_domain_and_clips_to_the_unit_range() -> None:
    """A ``.cube`` domain is baked in (the profile's input is [0, 1]); table values outside
    [0, 1] are clipped (a 16-bit CLUT holds no more, and the service's result is clipped too)."""
    table = _look(18).table.astype(np.float64) * 1.2 - 0.1
    lut = LUT3D(table, domain_min=[-0.1, 0.0, 0.0], domain_max=[1.2, 1.0, 1.1])
    got = _lcms_at_nodes(export_lut(lut, "icc").data, 18, 1).astype(int)
    unit = lut.apply(LUT3D.identity(18).table)
    expected = np.rint(np.clip(unit, 0, 1) * 255).astype(int)
    assert np.abs(got - expected).max() <= 1
