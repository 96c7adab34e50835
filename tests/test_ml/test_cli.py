from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from app.ml.cli import main, register
from app.ml.cube_export import read_cube_file, write_cube
from app.ml.imaging import apply_to_image_bytes, encode_image, load_image, save_image, strip_gps
from app.ml.lut import LUT3D, LUTStyle, identity_table

from .conftest import make_photo, quantize, reference_trilinear

ORIENTATION = 0x0112


def look() -> LUT3D:
    x = identity_table(9).astype(np.float64)
    return LUT3D((0.03 + 0.94 * x**1.1 + [0.03, 0.0, -0.03]).astype(np.float32))


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # type: ignore[no-any-return]


def icc_identity(data: bytes | None) -> tuple[object, ...]:
    """What makes two ICC profiles the same profile: the description and the colorimetry
    (white point, the three colorants). Not the bytes: LittleCMS stamps each profile it
    creates with the time, so two ``createProfile("sRGB")`` a second apart differ."""
    assert data, "no ICC profile"
    p = ImageCms.ImageCmsProfile(io.BytesIO(data)).profile
    return (
        p.profile_description,
        p.media_white_point,
        p.red_colorant,
        p.green_colorant,
        p.blue_colorant,
    )


def write_pair(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    before = make_photo(seed, 60, 80)
    after = quantize(reference_trilinear(look().table, before / 255.0)).astype(np.uint8)
    b, a = tmp_path / f"before{seed}.png", tmp_path / f"after{seed}.png"
    save_image(before, b)
    save_image(after, a)
    return b, a


def test_register_adds_subcommands() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["export", "--style", "s", "--out", "x.cube"])
    assert args.size == 33
    assert callable(args.func)


def _unseen_printed(capsys: pytest.CaptureFixture[str]) -> int:
    """The percentage ``apply`` printed for the pixels outside the style's training colors."""
    line = next(x for x in capsys.readouterr().out.splitlines() if "training photos showed" in x)
    return int(line.split("%")[0])


def test_learn_apply_export_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b1, a1 = write_pair(tmp_path, 1)
    b2, a2 = write_pair(tmp_path, 2)
    style_dir = tmp_path / "style"
    opts = ["--option", "lut_size=17", "--option", "coarse_size=9"]
    assert (
        main(
            [
                "learn",
                "--pair",
                str(b1),
                str(a1),
                "--pair",
                str(b2),
                str(a2),
                *opts,
                "--out",
                str(style_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "holdout" in out
    assert "delta_e2000_mean" in out
    assert "%]" in out
    assert (style_dir / "model.pt").is_file()
    assert (style_dir / "metadata.json").is_file()
    assert read_cube_file(style_dir / "lut.cube").size == 33

    cube = tmp_path / "look.cube"
    assert (
        main(
            ["learn", "--pair", str(b1), str(a1), *opts, "--time-budget", "20", "--out", str(cube)]
        )
        == 0
    )
    assert read_cube_file(cube).size == 33

    # apply keeps the ICC profile and the EXIF; the pixels come back upright (orientation 1)
    photo = make_photo(1, 60, 80)  # colors the style was learned on
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "TestCam"
    src = tmp_path / "in.jpg"
    save_image(photo, src, "jpeg", quality=95, icc_profile=srgb_icc(), exif=exif.tobytes())
    dst = tmp_path / "out.jpg"
    assert main(["apply", "--style", str(style_dir), str(src), str(dst), "--quality", "90"]) == 0
    assert _unseen_printed(capsys) < 20  # the colors it learned from, up to JPEG noise
    # a flat photo in the middle of a color cell none of its training photos touched
    from app.ml.coverage import ColorCoverage
    from app.ml.learn import read_style_checkpoint

    record = read_style_checkpoint(style_dir / "model.pt")["metrics"]["coverage"]
    coverage = ColorCoverage.from_dict(record)
    cell = int(np.flatnonzero(~coverage.seen.reshape((coverage.grid,) * 3)[:-1, :-1, :-1])[0])
    index = np.unravel_index(cell, (coverage.grid - 1,) * 3)
    flat = np.zeros((40, 40, 3), np.uint8)
    flat[...] = np.round((np.array(index) + 0.5) * 255 / (coverage.grid - 1))
    save_image(flat, tmp_path / "flat.png", "png")
    args = ["apply", "--style", str(style_dir), str(tmp_path / "flat.png")]
    assert main([*args, str(tmp_path / "g.png")]) == 0
    assert _unseen_printed(capsys) == 100
    with Image.open(dst) as im:
        assert im.size == (60, 80)
        assert icc_identity(im.info.get("icc_profile")) == icc_identity(srgb_icc())
        assert im.getexif()[ORIENTATION] == 1
        assert im.getexif()[0x010F] == "TestCam"
        graded = np.asarray(im.convert("RGB")).astype(np.int64)
    decoded, _ = load_image(src)
    # the style's own grading, up to JPEG re-encoding (how close the learned look is to the true
    # one depends on the strength learn chose on held-out photos: tests of app.ml.learn)
    from app.ml.learn import load_style

    expected = load_style(style_dir).apply(decoded).astype(np.int64)
    assert np.abs(graded - expected).mean() < 3.0

    dst_half = tmp_path / "half.png"
    assert main(["apply", "--style", str(cube), str(src), str(dst_half), "--strength", "0.0"]) == 0
    assert "training photos showed" not in capsys.readouterr().out  # a .cube records no colors
    with Image.open(dst_half) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), decoded)

    exported = tmp_path / "x17.cube"
    assert main(["export", "--style", str(style_dir), "--size", "17", "--out", str(exported)]) == 0
    assert "LUT_3D_SIZE 17" in exported.read_text()
    assert read_cube_file(exported).size == 17


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b, _ = write_pair(tmp_path, 4)
    narrow = tmp_path / "narrow.png"
    save_image(make_photo(4, 60, 60), narrow)
    assert main(["learn", "--pair", str(b), str(narrow), "--out", str(tmp_path / "s")]) == 2
    assert "pair 0" in capsys.readouterr().err
    assert (
        main(["export", "--style", str(tmp_path / "nothing"), "--out", str(tmp_path / "o.cube")])
        == 2
    )
    bad = tmp_path / "bad.cube"
    bad.write_text("LUT_3D_SIZE 2\n0 0\n")
    assert main(["apply", "--style", str(bad), str(b), str(tmp_path / "o.jpg")]) == 2
    assert "line 2" in capsys.readouterr().err


# -- imaging helpers ---------------------------------------------------------------------------
def test_load_image_orientation_icc_and_alpha(tmp_path: Path) -> None:
    photo = make_photo(5, 40, 60)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # rotate 90 CW to display
    data = encode_image(photo, "jpeg", 95, srgb_icc(), exif.tobytes())
    stored, info = load_image(data, apply_orientation=False)
    assert stored.shape == (40, 60, 3)
    assert info.orientation == 6
    assert icc_identity(info.icc_profile) == icc_identity(srgb_icc())
    assert info.format == "JPEG"
    upright, info2 = load_image(data)
    assert upright.shape == (60, 40, 3)
    assert info2.orientation == 1
    parsed = Image.Exif()
    parsed.load(info2.exif or b"")
    assert parsed.get(ORIENTATION, 1) == 1

    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    png = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(png, "PNG")
    pixels, info3 = load_image(png.getvalue())
    assert info3.alpha is not None
    assert int(info3.alpha[0, 0]) == 128
    out = apply_to_image_bytes(LUTStyle(look()), png.getvalue())
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.mode == "RGBA"
        assert out.format == "png"


def test_apply_to_image_bytes_reports_displayed_size() -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 8
    data = encode_image(make_photo(6, 30, 50), "jpeg", 90, None, exif.tobytes())
    out = apply_to_image_bytes(LUTStyle(look()), data, format="webp", quality=80)
    assert (out.width, out.height, out.orientation, out.mime) == (30, 50, 1, "image/webp")
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.size == (30, 50)  # upright pixels
        assert im.getexif().get(ORIENTATION, 1) == 1


def test_load_image_rejects_garbage_and_huge() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(b"definitely not an image")
    data = encode_image(make_photo(7, 40, 40), "png")
    with pytest.raises(ValueError, match="more than"):
        load_image(data, max_pixels=100)


def test_strip_gps() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    exif.get_ifd(0x8825)[2] = (1.0, 2.0, 3.0)
    original = Image.Exif()
    original.load(exif.tobytes())
    assert 0x8825 in original
    stripped = strip_gps(exif.tobytes())
    parsed = Image.Exif()
    parsed.load(stripped or b"")
    assert 0x8825 not in parsed
    assert parsed[0x010F] == "Cam"


def test_save_image_formats(tmp_path: Path) -> None:
    img16 = make_photo(8, 20, 20).astype(np.uint16) * 257
    save_image(img16, tmp_path / "a.tiff")
    save_image(img16.astype(np.float32) / 65535, tmp_path / "b.webp", quality=70)
    for name in ("a.tiff", "b.webp"):
        arr, _ = load_image(tmp_path / name)
        assert arr.shape == (20, 20, 3)
    with pytest.raises(ValueError, match="unsupported output format"):
        save_image(img16, tmp_path / "c.bmp")
    with pytest.raises(ValueError, match="quality"):
        save_image(img16, tmp_path / "d.jpg", quality=0)


def test_write_cube_then_cli_export_of_imported(tmp_path: Path) -> None:
    src = tmp_path / "in.cube"
    write_cube(look(), src)
    out = tmp_path / "out.cube"
    assert main(["export", "--style", str(src), "--size", "9", "--out", str(out)]) == 0
    assert read_cube_file(out).allclose(look(), 1e-6)
