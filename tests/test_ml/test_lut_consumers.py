"""Exported LUT files opened by the tools users load them into reproduce the service's own apply.

For an imported commercial LUT and a learned style, every export format goes through its real
consumer on a real photo: ffmpeg ``lut3d`` (``.cube``, ``.3dl``) and ``haldclut`` (HaldCLUT
PNG), each with trilinear and tetrahedral interpolation, and OpenColorIO's ``FileTransform``
(CPU processor, INTERP_LINEAR and INTERP_TETRAHEDRAL) for ``.cube`` / ``.3dl`` / ``.spi3d`` /
``.csp``, and LittleCMS for the ICC profile: Pillow's ``ImageCms`` (its bundled LittleCMS,
8-bit) and Debian's ``tificc`` (the system LittleCMS, 16-bit TIFF), perceptual and relative
colorimetric, the profile as the photo's source and LittleCMS's sRGB as destination. ffmpeg is
given the photo as an exact 16-bit PNG (see :func:`tests.helpers.write_png16`). Goal: >= 45 dB PSNR
against ``model.apply`` (the service's trilinear apply, uint8) for every format and both
interpolations. The files are written as the export job writes them
(:func:`app.ml.lut_formats.export_lut` of ``model.bake(size)``); the API-level test in
``tests/test_api/test_lut_exports.py`` goes through the real job. Run with ``-s`` to see the
measured PSNRs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.ml import learn_style
from app.ml.lut import LUT3D, LUTStyle, identity_table
from app.ml.lut_formats import export_lut, hald_points, source_size
from tests.helpers import (
    INTERPOLATIONS,
    LUTS,
    ffmpeg_haldclut,
    ffmpeg_lut3d,
    lcms_apply_icc,
    ocio_file_transform,
    photo,
    psnr_vs,
    require_shared,
    shared_lut,
    shared_luts,
    tificc_apply_icc,
    write_png16,
)

GOAL_DB = 45.0
PHOTO = "tahoe-gps.jpg"  # neither style saw it
IMPORTED = "classic_film.cube"
LEARNED_FROM = "teal_and_orange_cinema.cube"

# (format, size or level, consumer)
CASES = [
    ("cube", 33, "ffmpeg"),
    ("cube", 17, "ffmpeg"),
    ("3dl", 17, "ffmpeg"),  # ffmpeg's .3dl reader takes 17^3 tables only
    ("haldclut", 8, "ffmpeg"),
    ("haldclut", 12, "ffmpeg"),
    ("cube", 33, "ocio"),
    ("3dl", 17, "ocio"),
    ("3dl", 33, "ocio"),
    ("spi3d", 33, "ocio"),
    ("csp", 33, "ocio"),
    # 65: exact for the nilut style (its apply uses a 65^3 bake); written at 33^3 for the
    # others, as the export job does (no more points than the style's own table)
    ("cube", 65, "ffmpeg"),
    ("3dl", 65, "ocio"),
    ("spi3d", 65, "ocio"),
    ("csp", 65, "ocio"),
]


@pytest.fixture(scope="module")
def styles() -> dict[str, Any]:
    """An imported 33^3 commercial LUT, a dlut style learned from one pair of another look, and
    the published NILUT (a network: it bakes at any size; its apply uses a 65^3 bake)."""
    from app.ml.nilut import load_published_nilut

    imported = LUTStyle(shared_lut(IMPORTED), kind="imported")
    look = shared_lut(LEARNED_FROM)
    before = photo("coffee.png", 320)
    learned = learn_style("dlut", [(before, look.apply(before))], time_budget_s=20).model
    return {"imported": imported, "learned": learned, "nilut": load_published_nilut()}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    image = photo(PHOTO, 768)
    return image, write_png16(image, tmp_path_factory.mktemp("scene") / "photo.png")


def _consumer(fmt: str, consumer: str) -> Callable[..., np.ndarray]:
    if consumer == "lcms":  # an ICC profile: LittleCMS has its own (tetrahedral) interpolation
        return lambda image, path, lut_file, interp: lcms_apply_icc(lut_file.read_bytes(), image)
    if consumer == "ocio":
        return lambda image, path, lut_file, interp: ocio_file_transform(lut_file, interp, image)
    if fmt == "haldclut":
        return lambda image, path, lut_file, interp: ffmpeg_haldclut(
            path, lut_file, interp, image.shape
        )
    return lambda image, path, lut_file, interp: ffmpeg_lut3d(path, lut_file, interp, image.shape)


# every style in every case, except the level-12 HaldCLUT of the network: its 144^3 bake runs
# the MLP on 3 M points (110 s on this CPU); level 12 is covered by the two table styles
PARAMS = [
    (style, *case)
    for style in ("imported", "learned", "nilut")
    for case in CASES
    if not (style == "nilut" and case == ("haldclut", 12, "ffmpeg"))
]


@pytest.mark.parametrize(("style_name", "fmt", "size", "consumer"), PARAMS, ids=lambda v: str(v))
def test_consumer_reproduces_the_service_apply(
    styles: dict[str, Any],
    scene: tuple[np.ndarray, Path],
    tmp_path: Path,
    style_name: str,
    fmt: str,
    size: int,
    consumer: str,
) -> None:
    image, photo_png = scene
    model = styles[style_name]
    service = model.apply(image)
    own = source_size(model)
    points = hald_points(size) if fmt == "haldclut" else min(size, own or size)
    exported = export_lut(model.bake(points), fmt, title=f"{style_name} look")
    assert exported.size == points
    # next to the photo: ffmpeg runs in that folder (no path escaping in its filter graph)
    lut_file = photo_png.parent / f"{style_name}_{fmt}_{size}_{consumer}.{exported.ext}"
    lut_file.write_bytes(exported.data)
    apply = _consumer(fmt, consumer)
    measured = {}
    for interp in INTERPOLATIONS:
        got = apply(image, photo_png, lut_file, interp)
        assert got.shape == image.shape
        measured[interp] = psnr_vs(service, got)
        print(
            f"PSNR {style_name:8s} {fmt:8s} {size:>2} {consumer:6s} {interp:11s} "
            f"{measured[interp]:6.2f} dB"
        )
    assert all(v >= GOAL_DB for v in measured.values()), measured


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in shared_luts()] or ["(shared data absent)"])
def test_every_shared_lut_in_every_format(
    scene: tuple[np.ndarray, Path], tmp_path: Path, name: str
) -> None:
    """Every shared commercial LUT (sizes 16, 32, 33; some with DOMAIN_MIN/MAX, values outside
    [0, 1]), imported as the service imports it and exported at its own size (a HaldCLUT at
    level 8), through one consumer per format, tetrahedral (the interpolation farthest from the
    service's trilinear apply; LittleCMS, relative colorimetric, for the ICC profile)."""
    require_shared(LUTS / name)
    image, photo_png = scene
    image = np.ascontiguousarray(image[::2, ::2])
    small_png = write_png16(image, photo_png.parent / f"small_{name}.png")
    model = LUTStyle(shared_lut(name), kind="imported")
    service = model.apply(image)
    own = model.lut.size
    measured = {}
    for fmt, consumer in [
        ("cube", "ffmpeg"),
        ("3dl", "ocio"),
        ("haldclut", "ffmpeg"),
        ("spi3d", "ocio"),
        ("csp", "ocio"),
        ("icc", "lcms"),
    ]:
        points = hald_points(8) if fmt == "haldclut" else own
        exported = export_lut(model.bake(points), fmt)
        lut_file = photo_png.parent / f"{Path(name).stem}_{fmt}.{exported.ext}"
        lut_file.write_bytes(exported.data)
        got = _consumer(fmt, consumer)(image, small_png, lut_file, "tetrahedral")
        measured[f"{fmt}/{consumer}"] = psnr_vs(service, got)
    print(f"PSNR {name:28s} " + " ".join(f"{k} {v:.2f}" for k, v in measured.items()))
    assert all(v >= GOAL_DB for v in measured.values()), measured


# (style, points per axis): the NILUT's apply uses a 65^3 bake, the tables are 33^3
ICC_CASES = [("imported", 33), ("learned", 33), ("identity", 33), ("nilut", 65)]


@pytest.mark.parametrize(("style_name", "size"), ICC_CASES, ids=lambda v: str(v))
def test_littlecms_applies_the_icc_profile_like_the_service(
    styles: dict[str, Any],
    scene: tuple[np.ndarray, Path],
    tmp_path: Path,
    style_name: str,
    size: int,
) -> None:
    """The exported profile, loaded from its bytes as the photo's source profile and converted to
    sRGB, by Pillow's LittleCMS (8-bit, the app's default precalculated transform) and by
    Debian's ``tificc`` (16-bit TIFF), perceptual and relative colorimetric."""
    from PIL import ImageCms

    image, _ = scene
    model = (
        LUTStyle(LUT3D(identity_table(33)), kind="imported")
        if style_name == "identity"
        else styles[style_name]
    )
    service = model.apply(image)
    exported = export_lut(model.bake(size), "icc", title=f"{style_name} look")
    assert (exported.ext, exported.size) == ("icc", size)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(exported.data)).profile
    assert (profile.version, profile.device_class, profile.connection_space) == (
        4.3,
        "scnr",
        "XYZ ",
    )
    assert profile.profile_description == f"{style_name} look"
    for intent in range(3):
        assert profile.is_intent_supported(intent, ImageCms.Direction.INPUT)
    icc_file = tmp_path / "look.icc"
    icc_file.write_bytes(exported.data)
    measured = {}
    for intent in ("perceptual", "relative"):
        measured[f"pillow {intent}"] = psnr_vs(
            service, lcms_apply_icc(exported.data, image, intent)
        )
        measured[f"tificc {intent}"] = psnr_vs(service, tificc_apply_icc(icc_file, image, intent))
    for key, db in measured.items():
        print(f"PSNR {style_name:8s} icc      {size:>2} {key:18s} {db:6.2f} dB")
    assert all(v >= GOAL_DB for v in measured.values()), measured
