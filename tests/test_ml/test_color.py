"""Color management, 16-bit and orientation in :mod:`app.ml.imaging` (real ICC profiles, real
files, LittleCMS as the independent viewer)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.ml.imaging import (
    WORKING_ICC,
    apply_to_image_bytes,
    as_uint8,
    box,
    encode_image,
    grade,
    is_working_space,
    load_image,
    output_format,
)
from app.ml.imaging.color import convert, fused_lut
from app.ml.imaging.decode import orient_array, upright
from app.ml.lut import LUTStyle
from app.ml.metrics import delta_e2000
from tests.helpers import (
    lcms_convert,
    make_photo,
    shared_lut,
    srgb_profile_bytes,
    wide_gamut_profiles,
    wide_gamut_versions,
)

LOOK = "classic_film.cube"
ORIENTATION = 0x0112


def _style() -> LUTStyle:
    return LUTStyle(shared_lut(LOOK))


def test_working_space_detection() -> None:
    assert is_working_space(None)
    assert is_working_space(WORKING_ICC)
    assert is_working_space(srgb_profile_bytes())
    for name, icc in wide_gamut_profiles().items():
        assert not is_working_space(icc), name
    assert is_working_space(b"not a profile at all, but 20+ bytes long")  # unreadable: sRGB
    broken_rgb = b"\0" * 16 + b"RGB " + b"\x7f" * 200  # says RGB, LittleCMS cannot read it
    assert is_working_space(broken_rgb)
    pixels = make_photo(2, 8, 8)
    assert np.array_equal(grade(_style(), pixels, broken_rgb)[0], _style().apply(pixels))


@pytest.mark.parametrize(
    "version",
    ["Display P3 converted", "Display P3 assigned", "Adobe RGB converted", "Adobe RGB assigned"],
)
def test_wide_gamut_photo_gets_the_srgb_look(version: str) -> None:
    """Styled, then viewed through its embedded profile, a wide-gamut photo looks like the
    same photo converted to sRGB first and styled (goal: mean ΔE00 <= 0.5)."""
    pixels, icc = wide_gamut_versions()[version]
    style = _style()
    reference = style.apply(lcms_convert(pixels, icc, srgb_profile_bytes()))

    graded, out_icc = grade(style, pixels, icc)
    assert out_icc == icc  # stays in its own space, with its profile
    viewed = lcms_convert(graded, icc, srgb_profile_bytes())
    de = delta_e2000(viewed, reference)
    print(f"{version}: mean ΔE00 {de['mean']:.3f}, p95 {de['p95']:.3f}")
    assert de["mean"] <= 0.5, de

    as_srgb, srgb_icc = grade(style, pixels, icc, output_profile="srgb")
    assert srgb_icc == WORKING_ICC
    assert delta_e2000(as_srgb, reference)["mean"] <= 0.5

    # what the service did before: the look applied to the raw wide-gamut values
    naive = lcms_convert(style.apply(pixels), icc, srgb_profile_bytes())
    assert delta_e2000(naive, reference)["mean"] > 2 * de["mean"]


def test_srgb_and_untagged_photos_take_the_fast_path() -> None:
    style = _style()
    pixels = make_photo(3, 40, 50)
    for icc in (None, srgb_profile_bytes()):
        graded, out_icc = grade(style, pixels, icc, output_profile="srgb")
        assert np.array_equal(graded, style.apply(pixels))  # the same bytes as a plain apply
        assert out_icc == icc


def test_bad_output_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="output_profile"):
        grade(_style(), make_photo(1, 8, 8), None, output_profile="adobe")  # type: ignore[arg-type]


def test_fused_lut_needs_an_8bit_lattice() -> None:
    with pytest.raises(ValueError, match="divide 255"):
        fused_lut(lambda x: x, None, None, size=33)


def test_16bit_conversion_is_exact_where_8bit_rounds() -> None:
    """16-bit pixels go through LittleCMS unoptimized: P3 -> sRGB -> P3 of in-gamut colors comes
    back within a few 16-bit levels."""
    p3 = wide_gamut_profiles()["Display P3"]
    srgb16 = make_photo(4, 32, 32).astype(np.uint16) * 257
    wide = convert(srgb16, None, p3)
    back = convert(convert(wide, p3, None), None, p3)
    assert np.abs(back.astype(int) - wide.astype(int)).max() <= 8


# ---- 16 bits ------------------------------------------------------------------------------
def _photo16(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth 16-bit photo that uses the low byte (not an 8-bit image scaled up)."""
    base = make_photo(seed, h, w).astype(np.float64) * 257
    rng = np.random.default_rng(seed)
    return np.clip(base + rng.uniform(-120, 120, base.shape), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("profile", ["untagged", "Display P3"])
def test_16bit_in_16bit_out(fmt: str, profile: str) -> None:
    """16-bit PNG / TIFF in -> 16-bit out of the same format; max error against a float apply
    (goal: <= 2 * 65535/256 levels)."""
    style = _style()
    src = _photo16(5)
    icc = None if profile == "untagged" else wide_gamut_profiles()[profile]
    data = encode_image(src, fmt, icc_profile=icc)
    out = apply_to_image_bytes(style, data)
    assert (out.format, out.bits) == (fmt, 16)
    got, info = load_image(out.data, keep_16bit=True)
    assert got.dtype == np.uint16
    assert info.bits == 16
    assert info.icc_profile == icc

    # float reference: the same conversions (LittleCMS, 16-bit) around a float32 apply
    work = src if icc is None else convert(src, icc, None)
    graded = np.clip(style.apply(work.astype(np.float32) / 65535), 0, 1)
    ref16 = np.rint(graded * 65535).astype(np.uint16)
    ref = ref16 if icc is None else convert(ref16, None, icc)
    err = np.abs(got.astype(np.int64) - ref.astype(np.int64)).max()
    print(f"16-bit {fmt} {profile}: max error {err} levels of 65535")
    assert err <= 2 * 65535 / 256
    if icc is None:
        assert err <= 2  # no conversion: the uint16 LUT path itself
    # a lossy format from a 16-bit source is written in 8 bits
    jpeg = apply_to_image_bytes(style, data, format="jpeg")
    assert jpeg.bits == 8
    assert load_image(jpeg.data)[0].dtype == np.uint8


def test_16bit_gray_and_alpha_decode() -> None:
    gray = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 50).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    px, info = load_image(buf.getvalue(), keep_16bit=True)
    assert px.dtype == np.uint16
    assert px.shape == (30, 40, 3)
    assert np.array_equal(px[:, :, 0], gray)
    assert np.array_equal(px[:, :, 2], gray)
    rgba = np.dstack([_photo16(6, 20, 24), np.full((20, 24), 40000, np.uint16)])
    src = rgba[:, :, :3]
    data = encode_image(src, "png", alpha=rgba[:, :, 3])
    px, info = load_image(data, keep_16bit=True)
    assert info.alpha is not None
    assert int(info.alpha[0, 0]) == 40000
    out = apply_to_image_bytes(_style(), data)
    _, info2 = load_image(out.data, keep_16bit=True)
    assert info2.alpha is not None
    assert int(info2.alpha[3, 3]) == 40000
    # 8-bit files keep the uint8 path
    px8, info8 = load_image(encode_image(make_photo(2, 10, 12), "png"), keep_16bit=True)
    assert px8.dtype == np.uint8
    assert info8.bits == 8


def test_box_resizes_16bit() -> None:
    src = _photo16(7, 40, 60)
    small = box(src, (20, 30))
    assert small.dtype == np.uint16
    assert small.shape == (20, 30, 3)
    expect = src.reshape(20, 2, 30, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(small - expect).max() <= 1
    assert as_uint8(small).dtype == np.uint8


# ---- formats and orientation ----------------------------------------------------------------
def test_default_output_format_is_the_inputs_own() -> None:
    assert output_format(None, "TIFF") == "tiff"
    assert output_format(None, "MPO") == "jpeg"
    assert output_format(None, "HEIF") == "heic"
    assert output_format("png", "TIFF") == "png"
    assert output_format(None, "GIF") == "jpeg"


def test_tiff_and_heic_inputs_come_back_in_their_format(tmp_path: Path) -> None:
    style = _style()
    photo = make_photo(8, 40, 56)
    tiff = encode_image(photo, "tiff")
    out = apply_to_image_bytes(style, tiff)
    assert (out.format, out.bits, out.mime) == ("tiff", 8, "image/tiff")
    assert np.array_equal(load_image(out.data)[0], style.apply(photo))  # lossless
    heic = encode_image(photo, "heic", quality=90)
    out = apply_to_image_bytes(style, heic)
    assert out.format == "heic"
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.format == "HEIF"
        assert im.size == (56, 40)


def test_orientation_helpers_match_pillow() -> None:
    arr = make_photo(9, 4, 6)
    for orientation in range(1, 9):
        expected = np.asarray(upright(Image.fromarray(arr), orientation))
        assert np.array_equal(orient_array(arr, orientation), expected), orientation


def test_16bit_orientation_is_applied() -> None:
    src = _photo16(10, 30, 50)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = encode_image(src, "png", exif=exif.tobytes())
    out = apply_to_image_bytes(_style(), data)
    assert (out.width, out.height, out.orientation) == (30, 50, 1)
    got, info = load_image(out.data, keep_16bit=True, apply_orientation=False)
    assert got.shape == (50, 30, 3)
    assert info.orientation == 1


def test_cli_apply_output_profile(tmp_path: Path) -> None:
    from app.ml.cli import main
    from app.ml.imaging import describe_profile
    from tests.helpers import source_path

    pixels, icc = wide_gamut_versions(64)["Display P3 assigned"]
    src = tmp_path / "p3.png"
    src.write_bytes(encode_image(pixels, "png", icc_profile=icc))
    reference = _style().apply(lcms_convert(pixels, icc, srgb_profile_bytes()))
    for profile, expected in (("source", "Display P3"), ("srgb", describe_profile(WORKING_ICC))):
        out = tmp_path / f"{profile}.png"
        cube = str(source_path(LOOK))
        assert (
            main(["apply", "--style", cube, str(src), str(out), "--output-profile", profile]) == 0
        )
        got, info = load_image(out)
        assert describe_profile(info.icc_profile) == expected
        viewed = got if profile == "srgb" else lcms_convert(got, icc, srgb_profile_bytes())
        assert delta_e2000(viewed, reference)["mean"] <= 0.5


def test_image_adaptive_style_sees_the_photo_in_the_working_space() -> None:
    """An image-adaptive model (the published weights) picks its LUT from the photo converted
    to sRGB: a Display P3 photo gets the look of the same photo converted to sRGB first."""
    from app.ml.adaptive_3dlut import load_published

    model = load_published()
    pixels, icc = wide_gamut_versions(200)["Display P3 assigned"]
    srgb = lcms_convert(pixels, icc, srgb_profile_bytes())
    reference = model.apply(srgb)
    graded, out_icc = grade(model, pixels, icc)
    assert out_icc == icc
    de = delta_e2000(lcms_convert(graded, icc, srgb_profile_bytes()), reference)
    print(f"adaptive, Display P3: mean ΔE00 {de['mean']:.3f}")
    assert de["mean"] <= 0.5, de


def test_fused_luts_are_cached_per_style_strength_and_profile() -> None:
    from app.ml.imaging.color import FUSED_CACHE

    FUSED_CACHE.clear()
    style = _style()
    pixels, icc = wide_gamut_versions(64)["Display P3 assigned"]
    hits, misses = FUSED_CACHE.hits, FUSED_CACHE.misses
    first, _ = grade(style, pixels, icc)
    again, _ = grade(style, pixels, icc)
    assert np.array_equal(first, again)
    assert (FUSED_CACHE.hits - hits, FUSED_CACHE.misses - misses) == (1, 1)
    half, _ = grade(style, pixels, icc, strength=0.5)  # another strength: sampled anew
    other, _ = grade(_style(), pixels, icc)  # another model object: sampled anew
    assert FUSED_CACHE.misses - misses == 3
    assert not np.array_equal(half, first)
    assert np.array_equal(other, first)
