from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from app.ml.cube_export import (
    MAX_ABS_VALUE,
    CubeParseError,
    dumps_cube,
    parse_cube_file,
    parse_cube_text,
    read_cube_file,
    read_cube_text,
    write_cube,
)
from app.ml.lut import LUT3D, identity_table
from app.ml.lut_formats import read_lut

from .conftest import quantize, reference_trilinear

CUBE_NAMES = [
    "classic_film.cube",
    "cold_shadows.cube",
    "color_pop.cube",
    "faded_memories.cube",
    "golden_years_film.cube",
    "nilut_LUT01.cube",
    "protect_highlights.cube",
    "sunset_orange.cube",
    "teal_and_orange_cinema.cube",
]


def odd_lut(size: int = 7, seed: int = 0) -> LUT3D:
    rng = np.random.default_rng(seed)
    table = (rng.random((size, size, size, 3)) * 1.4 - 0.2).astype(np.float32)
    table[0, 0, 0] = [1e-9, -3.5e-7, 12.25]
    return LUT3D(table, domain_min=[-0.1, 0.0, 0.05], domain_max=[1.2, 1.0, 2.5], title="odd")


def sample_colors(n: int = 20000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)  # grays, incl. 0 and 255
    return np.concatenate([colors, ramp])


def small_cube(rows: list[str], header: str = "LUT_3D_SIZE 2") -> str:
    return header + "\n" + "\n".join(rows) + "\n"


IDENTITY_2 = [
    "0 0 0",
    "1 0 0",
    "0 1 0",
    "1 1 0",
    "0 0 1",
    "1 0 1",
    "0 1 1",
    "1 1 1",
]


# -- round trips -------------------------------------------------------------------------------
def test_round_trip_text_is_exact_within_1e6() -> None:
    lut = odd_lut()
    back = read_cube_text(dumps_cube(lut))
    assert back.allclose(lut, 1e-6)
    assert back.title == "odd"
    np.testing.assert_allclose(back.domain_min, lut.domain_min, atol=1e-9)


def test_round_trip_file_and_file_objects(tmp_path: Path) -> None:
    lut = odd_lut(size=33, seed=2)
    path = tmp_path / "x.cube"
    write_cube(lut, path, title="My look")
    assert read_cube_file(path).allclose(lut, 1e-6)
    assert read_cube_file(path).title == "My look"
    assert read_cube_text(path.read_bytes()).allclose(lut, 1e-6)
    assert read_cube_text(bytearray(path.read_bytes())).allclose(lut, 1e-6)
    buf = io.BytesIO()
    write_cube(lut, buf)
    assert read_cube_text(buf.getvalue()).allclose(lut, 1e-6)
    text = io.StringIO()
    write_cube(lut, text)
    assert read_cube_text(text.getvalue()).allclose(lut, 1e-6)


def test_written_header_and_red_fastest_order() -> None:
    table = identity_table(3)
    text = dumps_cube(LUT3D(table), title='a "quoted"\ntitle', comments=["made by a test"])
    lines = text.splitlines()
    assert lines[0] == "TITLE \"a 'quoted' title\""
    assert "# made by a test" in lines
    assert "LUT_3D_SIZE 3" in lines
    assert "DOMAIN_MIN 0.0 0.0 0.0" in lines
    assert "DOMAIN_MAX 1.0 1.0 1.0" in lines
    data = [line for line in lines if line[0].isdigit()]
    assert len(data) == 27
    assert data[1] == "0.5000000 0.0000000 0.0000000"  # red moves first
    assert data[3] == "0.0000000 0.5000000 0.0000000"
    assert data[9] == "0.0000000 0.0000000 0.5000000"
    assert "-0.0000000" not in text


def test_formatting_matches_printf() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (1000, 3)) * np.exp(rng.uniform(-8, 5, (1000, 3)))
    lut = LUT3D.from_cube_order(values[:1000][: 10**3].astype(np.float32), 10)
    text = dumps_cube(lut)
    rows = lut.to_cube_order().astype(np.float64)
    expected = "".join("{:.7f} {:.7f} {:.7f}\n".format(*tuple(r)) for r in rows).replace(
        "-0.0000000", "0.0000000"
    )
    assert text.endswith(expected)


# -- dialects ----------------------------------------------------------------------------------
def test_comments_blank_lines_crlf_bom_and_trailing_comments() -> None:
    body = ["# leading comment", "", 'TITLE "t # not a comment"', "LUT_3D_SIZE 2  # trailing"]
    body += ["", "0 0 0 # first row", "# comment inside the data", "1 0 0", "", *IDENTITY_2[2:]]
    text = "\ufeff" + "\r\n".join(body) + "\r\n"
    lut = read_cube_text(text)
    assert lut.allclose(LUT3D.identity(2), 0.0)
    assert lut.title == "t # not a comment"
    assert read_cube_text(text.replace("\r\n", "\r")).allclose(LUT3D.identity(2), 0.0)
    cube = parse_cube_text(text)
    assert "leading comment" in cube.comments


def test_unknown_uppercase_keywords_are_ignored() -> None:
    text = small_cube(IDENTITY_2, "LUT_IN_VIDEO_RANGE\nLUT_3D_SIZE 2")
    assert read_cube_text(text).size == 2


def test_values_outside_unit_range_and_exponents() -> None:
    rows = ["-0.25 1.5e0 2E-1", *IDENTITY_2[1:]]
    lut = read_cube_text(small_cube(rows))
    np.testing.assert_allclose(lut.table[0, 0, 0], [-0.25, 1.5, 0.2], atol=1e-7)


def test_one_d_lut_becomes_an_exact_3d_lut() -> None:
    text = "LUT_1D_SIZE 3\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 2 3\n0 0 0\n0.5 1 1.5\n1 1 1\n"
    lut = read_cube_text(text)
    assert lut.size == 3
    x = np.random.default_rng(4).uniform(-0.5, 3.5, (500, 3))
    grid = np.linspace(0, 1, 3)
    expected = np.stack(
        [
            np.interp(np.clip(x[:, c] / [1, 2, 3][c], 0, 1), grid, [0, [0.5, 1, 1.5][c], 1])
            for c in range(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(lut.apply(x.astype(np.float32)), expected, atol=1e-6)


# -- every shared LUT ------------------------------------------------------------------------
@pytest.mark.parametrize("name", CUBE_NAMES)
def test_shared_luts_load_and_agree_with_reference(shared_data: Path, name: str) -> None:
    lut = read_cube_file(shared_data / "luts" / name)
    assert lut.size in (16, 32, 33)
    colors = sample_colors()
    expected = quantize(
        reference_trilinear(lut.table, colors / 255.0, lut.domain_min, lut.domain_max)
    )
    got = lut.apply(colors)
    assert np.abs(got.astype(np.int64) - expected).max() <= 1
    photo = np.asarray(_photo_crop(shared_data))
    expected = quantize(
        reference_trilinear(lut.table, photo / 255.0, lut.domain_min, lut.domain_max)
    )
    assert np.abs(lut.apply(photo).astype(np.int64) - expected).max() <= 1


def _photo_crop(shared_data: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(shared_data / "photos" / "tahoe-gps.jpg") as im:
        return np.asarray(im.convert("RGB").crop((600, 400, 856, 656)))


def test_shared_lut_axis_order_against_hald(shared_data: Path) -> None:
    """nilut_LUT01.cube applied to the hald reproduces the published target (~56 dB)."""
    from PIL import Image

    from app.ml.metrics import psnr

    lut = read_cube_file(shared_data / "luts" / "nilut_LUT01.cube")
    with (
        Image.open(shared_data / "halds" / "Original_Image.png") as a,
        Image.open(shared_data / "halds" / "LUT01_ContrastLUT.png") as b,
    ):
        src, dst = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    assert psnr(lut.apply(src), dst) > 50


@pytest.mark.parametrize(
    "name",
    ["ACES_Proxy_10_to_ACES.cube", "Colour_Correct.cube", "Demo.cube", "eotf_sRGB_3D.cube"],
)
def test_parser_fixtures_exact(shared_data: Path, name: str) -> None:
    """Fixtures without a shaper convert exactly: compare with the file's own tables."""
    path = shared_data / "luts" / "parser-fixtures" / name
    cube = parse_cube_file(path)
    lut = read_cube_file(path)
    x = np.random.default_rng(5).uniform(-0.2, 1.2, (5000, 3))
    if cube.table_3d is not None:
        expected = reference_trilinear(cube.table_3d, x, lut.domain_min, lut.domain_max)
    else:
        assert cube.table_1d is not None
        expected = _reference_1d(cube.table_1d, x, lut.domain_min, lut.domain_max)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(lut.apply(x.astype(np.float32)), expected, atol=2e-6 * scale)


def _reference_1d(table: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    grid = np.linspace(0.0, 1.0, table.shape[0])
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return np.stack([np.interp(t[:, c], grid, table[:, c]) for c in range(3)], axis=1)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [("LogC_Video.cube", 0.012), ("Three_Dimensional_Table_With_Shaper.cube", 0.008)],
)
def test_parser_fixtures_with_shaper_are_baked(
    shared_data: Path, name: str, tolerance: float
) -> None:
    """Shaper + 3D files are baked into one 65^3 LUT: close to shaper-then-cube, not exact."""
    path = shared_data / "luts" / "parser-fixtures" / name
    cube = parse_cube_file(path)
    assert cube.table_1d is not None
    assert cube.table_3d is not None
    lut = read_cube_file(path)
    assert lut.size == 65
    lo1 = np.full(3, cube.range_1d[0]) if cube.range_1d else np.zeros(3)
    hi1 = np.full(3, cube.range_1d[1]) if cube.range_1d else np.ones(3)
    lo3 = np.full(3, cube.range_3d[0]) if cube.range_3d else np.zeros(3)
    hi3 = np.full(3, cube.range_3d[1]) if cube.range_3d else np.ones(3)
    x = np.random.default_rng(6).random((20000, 3))
    shaped = _reference_1d(cube.table_1d, x, lo1, hi1)
    expected = reference_trilinear(cube.table_3d, shaped, lo3, hi3)
    err = np.abs(lut.apply(x.astype(np.float32)) - expected).max()
    assert err < tolerance


# -- malformed files -----------------------------------------------------------------------------
MALFORMED = [
    ("truncated", small_cube(IDENTITY_2[:5]), 7, "truncated data: expected 8 rows, got 5"),
    (
        "two numbers",
        small_cube([*IDENTITY_2[:5], "1 0", *IDENTITY_2[6:]]),
        7,
        "expected 3 numbers, got 2",
    ),
    (
        "four numbers",
        small_cube([*IDENTITY_2[:2], "1 1 0 0", *IDENTITY_2[3:]]),
        4,
        "expected 3 numbers, got 4",
    ),
    ("nan", small_cube([*IDENTITY_2[:3], "nan 1 0", *IDENTITY_2[4:]]), 5, "NaN or infinite"),
    ("inf", small_cube([*IDENTITY_2[:6], "0 inf 1", *IDENTITY_2[7:]]), 8, "NaN or infinite"),
    ("overflow", small_cube([*IDENTITY_2[:1], "1e999 0 0", *IDENTITY_2[2:]]), 3, "NaN or infinite"),
    # finite as float64, infinite as float32 (the table's type): once a 500, now the line
    ("1e308", small_cube([*IDENTITY_2[:1], "1e308 0 0", *IDENTITY_2[2:]]), 3, "out of range"),
    ("-1e39", small_cube([*IDENTITY_2[:6], "0 0 -1e39", *IDENTITY_2[7:]]), 8, "out of range"),
    ("1e7", small_cube([*IDENTITY_2[:7], "1 1 1e7"]), 9, "value 1e+07 is out of range"),
    (
        "domain 1e308",
        "LUT_3D_SIZE 2\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 1e308 1\n" + "\n".join(IDENTITY_2),
        3,
        "DOMAIN_MAX has a value beyond",
    ),
    (
        "range 1e308",
        "LUT_3D_SIZE 2\nLUT_3D_INPUT_RANGE -1e308 1e308\n" + "\n".join(IDENTITY_2),
        2,
        "LUT_3D_INPUT_RANGE has a value beyond",
    ),
    ("size 1", 'TITLE "x"\nLUT_3D_SIZE 1\n0 0 0\n', 2, "LUT_3D_SIZE must be in 2..256, got 1"),
    ("size 300", "# c\nLUT_3D_SIZE 300\n0 0 0\n", 2, "LUT_3D_SIZE must be in 2..256, got 300"),
    ("size text", "LUT_3D_SIZE big\n0 0 0\n", 1, "expects an integer, got 'big'"),
    (
        "text in numbers",
        small_cube([*IDENTITY_2[:3], "1 abc 0", *IDENTITY_2[4:]]),
        5,
        "expected a number, got 'abc'",
    ),
    (
        "bad number",
        small_cube([*IDENTITY_2[:4], "0 0 1.2.3", *IDENTITY_2[5:]]),
        6,
        "expected a number, got '1.2.3'",
    ),
    ("missing size", 'TITLE "x"\n\n' + "\n".join(IDENTITY_2) + "\n", 3, "missing LUT_3D_SIZE"),
    ("too many rows", small_cube([*IDENTITY_2, "1 1 1"]), 10, "too many data rows"),
    (
        "keyword after data",
        small_cube([*IDENTITY_2[:2], "LUT_3D_SIZE 2", *IDENTITY_2[2:]]),
        4,
        "keyword LUT_3D_SIZE after",
    ),
    ("duplicate size", "LUT_3D_SIZE 2\nLUT_3D_SIZE 2\n" + "\n".join(IDENTITY_2), 2, "given twice"),
    (
        "domain count",
        "LUT_3D_SIZE 2\nDOMAIN_MIN 0 0\n" + "\n".join(IDENTITY_2),
        2,
        "DOMAIN_MIN expects 3 numbers, got 2",
    ),
    (
        "domain order",
        "LUT_3D_SIZE 2\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 0 1\n" + "\n".join(IDENTITY_2),
        3,
        "must exceed",
    ),
    ("no data", 'TITLE "x"\nLUT_3D_SIZE 2\n', 2, "no table data"),
    ("garbage header", "hello world\nLUT_3D_SIZE 2\n", 1, "unknown keyword 'hello'"),
]


@pytest.mark.parametrize(
    ("case", "text", "line", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_files_name_the_line(case: str, text: str, line: int, message: str) -> None:
    with pytest.raises(CubeParseError) as info:
        read_cube_text(text)
    assert str(info.value).startswith(f"line {line}: "), str(info.value)
    assert message in str(info.value)
    assert info.value.line == line
    assert isinstance(info.value, ValueError)


def test_read_lut_dispatches_and_uses_opencolorio(tmp_path: Path) -> None:
    cube = tmp_path / "a.cube"
    write_cube(odd_lut(5), cube)
    assert read_lut(cube).size == 5
    spi = tmp_path / "b.spi3d"
    lines = ["SPILUT 1.0", "3 3", "2 2 2"]
    for r in range(2):
        for g in range(2):
            for b in range(2):
                lines.append(f"{r} {g} {b} {0.5 * r} {g} {b}")
    spi.write_text("\n".join(lines) + "\n")
    lut = read_lut(spi, size=5)
    x = np.random.default_rng(7).random((100, 3)).astype(np.float32)
    np.testing.assert_allclose(lut.apply(x), x * [0.5, 1, 1], atol=1e-5)
    bad = tmp_path / "c.csp"
    bad.write_text("not a lut\n")
    with pytest.raises(ValueError, match="cannot read LUT file"):
        read_lut(bad)
    bad = tmp_path / "c.3dl"  # .3dl is app.ml.lut_formats' own parser (issue 12)
    bad.write_text("not a lut\n")
    with pytest.raises(ValueError, match="line 1: expected the mesh line"):
        read_lut(bad)


def test_largest_accepted_value_round_trips() -> None:
    rows = [f"{-MAX_ABS_VALUE:g} 0 {MAX_ABS_VALUE:g}", *IDENTITY_2[1:]]
    lut = read_cube_text(small_cube(rows))
    np.testing.assert_allclose(lut.table[0, 0, 0], [-MAX_ABS_VALUE, 0, MAX_ABS_VALUE])
    assert np.isfinite(lut.apply(np.full((4, 3), 0.001, np.float32))).all()


# -- text is text, a path is a Path (issue 9: an upload's content was opened as a file name) ---
@pytest.fixture
def real_cube(tmp_path: Path) -> Path:
    path = tmp_path / "real.cube"
    write_cube(odd_lut(3), path)
    return path


def test_one_line_str_naming_a_real_cube_is_parsed_as_text_not_opened(real_cube: Path) -> None:
    """The old reader opened a one-line str as a path: this one parses it (and it fails)."""
    assert read_cube_file(real_cube).size == 3  # the file is a valid .cube
    for parse in (read_cube_text, parse_cube_text):
        with pytest.raises(CubeParseError) as info:
            parse(str(real_cube))
        assert info.value.line == 1
        assert "expected a keyword or 3 numbers" in str(info.value)
        with pytest.raises(CubeParseError):
            parse(str(real_cube).encode())


@pytest.mark.parametrize(
    "content", ["/etc/passwd", "/proc/self/cmdline", "/dev/zero", "/nonexistent/x.cube", "x.cube"]
)
def test_one_line_str_is_never_opened(content: str) -> None:
    with pytest.raises(CubeParseError) as info:
        read_cube_text(content)
    assert info.value.line == 1
    assert "root:" not in str(info.value)  # nothing of /etc/passwd
    assert "pytest" not in str(info.value)  # nothing of /proc/self/cmdline


def test_a_path_must_be_a_path(real_cube: Path) -> None:
    for read in (read_cube_file, parse_cube_file, read_lut):
        with pytest.raises(TypeError, match="expected a pathlib.Path, got str"):
            read(str(real_cube))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            read(str(real_cube).encode())  # type: ignore[arg-type]
    for parse in (read_cube_text, parse_cube_text):
        with pytest.raises(TypeError, match="parse_cube_file"):
            parse(real_cube)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            parse(io.BytesIO(real_cube.read_bytes()))  # type: ignore[arg-type]


def test_file_reads_are_bounded_and_regular_only(real_cube: Path, tmp_path: Path) -> None:
    size = real_cube.stat().st_size
    assert read_cube_file(real_cube, max_bytes=size).size == 3
    with pytest.raises(CubeParseError, match=f"larger than {size - 1} bytes"):
        read_cube_file(real_cube, max_bytes=size - 1)
    with pytest.raises(ValueError, match="not a regular file"):
        read_cube_file(Path("/dev/zero"))  # would never end if read
    with pytest.raises(ValueError, match="not a regular file"):
        read_cube_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_cube_file(tmp_path / "missing.cube")
