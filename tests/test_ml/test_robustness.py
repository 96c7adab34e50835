"""Guarantees of the learned LUT styles on inputs built to break them (issue 10).

A pair set whose colors cover only a narrow region, edited inconsistently (each photo its own
exposure and white balance, as a retoucher does), must not make ``dlut`` tear apart the colors of
a photo it never saw: local gain p99.9 <= 4 there, every table entry within [0, 1], and a table
smooth enough that tetrahedral and trilinear application agree at >= 45 dB on a real photo.
These are the default options (the safety step of :func:`app.ml.dlut.make_safe`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from app.ml.base import TrainingPair
from app.ml.dlut import (
    PHOTO_GAIN,
    SAFE_GAIN,
    SAFE_GAP,
    SAFE_QUANTILE,
    bound_photo_gain,
    fit,
    interpolation_gap,
    lattice_gain,
    make_safe,
)
from app.ml.lut import LUT3D, identity_table
from app.ml.metrics import local_gain, psnr
from bench import shared_data_dir

from .conftest import make_photo

IN_CI = os.environ.get("CI", "").lower() == "true"
GAIN_BOUND = 4.0
INTEROP_DB = 45.0


def shared_photo(name: str, long_side: int = 320) -> np.ndarray:
    """A shared photo, downscaled (uint8). Absent data skips, except under ``CI=true``."""
    path = shared_data_dir() / "photos" / name
    if not path.is_file():
        if IN_CI:
            pytest.fail(f"CI=true: shared photo {path} is missing (tests must not skip)")
        pytest.skip(f"shared photo {path} is absent")
    from PIL import Image, ImageOps

    with Image.open(path) as raw:
        im = ImageOps.exif_transpose(raw).convert("RGB")
    im.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def tetrahedral(lut: LUT3D, image: np.ndarray) -> np.ndarray:
    """Reference tetrahedral lookup (colour-science) of a uint8 image, float out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
    table = colour.LUT3D(table=np.asarray(lut.table, np.float64))
    return np.asarray(
        table.apply(
            image.astype(np.float64) / 255.0,
            interpolator=colour.algebra.table_interpolation_tetrahedral,
        )
    )


def _decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def look(rgb: np.ndarray) -> np.ndarray:
    """A warm, contrasty look (S-curve per channel, a little channel mixing)."""
    s = rgb + 0.6 * rgb * (1 - rgb) * (rgb - 0.5)
    mix = np.array([[0.95, 0.08, -0.03], [0.02, 0.93, 0.05], [-0.04, 0.1, 0.94]])
    return np.clip(s @ mix.T + [0.03, 0.0, -0.04], 0.0, 1.0)


def narrow_inconsistent_pairs() -> list[TrainingPair]:
    """Four small photos of warm mid-tones only (skin, wood, sand), each edited with its own
    exposure (-1..+1 EV) and white balance before the shared look, then quantized to 8 bits."""
    rng = np.random.default_rng(42)
    pairs = []
    for k, (ev, wb) in enumerate([(-1.0, 0.08), (0.7, -0.06), (0.2, 0.1), (-0.5, -0.09)]):
        yy, xx = np.mgrid[0:48, 0:64] / 64.0
        base = np.array([0.62, 0.45, 0.32]) + rng.normal(0, 0.03, 3)
        img = base + 0.18 * (yy[..., None] - 0.35) * [1.0, 0.9, 0.8]
        img = img + 0.06 * np.sin(7 * xx + k)[..., None] * [1.0, 0.7, 0.5]
        img = np.clip(img + rng.normal(0, 0.01, img.shape), 0.0, 1.0)
        before = np.round(img * 255) / 255
        corrected = _encode(_decode(before) * 2.0**ev * np.array([1 + wb, 1.0, 1 - wb]))
        after = np.round(look(corrected) * 255) / 255
        pairs.append(
            TrainingPair(
                before.astype(np.float32), after.astype(np.float32), np.zeros((48, 64), bool)
            )
        )
    return pairs


def far_colors() -> np.ndarray:
    """A test photo whose colors the pairs never show: sky blues, greens, deep shadows."""
    yy, xx = np.mgrid[0:64, 0:96] / 96.0
    sky = np.stack([0.25 + 0.4 * yy, 0.45 + 0.35 * yy, 0.95 - 0.2 * yy], axis=-1)
    grass = np.stack([0.15 + 0.3 * xx, 0.35 + 0.4 * xx, 0.1 + 0.1 * xx], axis=-1)
    img = np.where((xx < 0.5)[..., None], sky, grass)
    img[40:, :] *= np.linspace(1.0, 0.08, 24)[:, None, None]  # down into the shadows
    broad = make_photo(3, 64, 96) / 255.0
    return (np.concatenate([img, broad], axis=1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def default_model():  # type: ignore[no-untyped-def]
    return fit(narrow_inconsistent_pairs(), options={}, time_budget_s=30)


@pytest.fixture(scope="module")
def unsafe_model():  # type: ignore[no-untyped-def]
    # the same fit without the safety step: the naive extrapolation the pair set is built to break
    return fit(narrow_inconsistent_pairs(), options={"safe": False}, time_budget_s=30)


def _far_gain(model) -> float:  # type: ignore[no-untyped-def]
    photo = far_colors()
    gain = local_gain(photo, model.apply(photo))
    assert gain["n_edges"] > 1000
    return float(gain["p999"])


def test_the_pair_set_breaks_naive_extrapolation(unsafe_model) -> None:  # type: ignore[no-untyped-def]
    # without the safety step the table overshoots [0, 1] and tears unseen colors (measured 6.7)
    assert _far_gain(unsafe_model) > GAIN_BOUND
    assert unsafe_model.lut.table.min() < 0.0 or unsafe_model.lut.table.max() > 1.0


def test_default_fit_keeps_gain_under_the_bound(default_model) -> None:  # type: ignore[no-untyped-def]
    assert _far_gain(default_model) <= GAIN_BOUND  # measured 2.3
    assert default_model.info["safety"]["sigma"] > 0  # the safety step had to smooth


def test_default_fit_keeps_the_table_in_range(default_model) -> None:  # type: ignore[no-untyped-def]
    table = default_model.bake(33).table
    assert table.min() >= 0.0
    assert table.max() <= 1.0


def test_make_safe_bounds_any_table() -> None:
    # a random table (the worst case: every cell torn) comes out in range, bounded and smooth
    rng = np.random.default_rng(1)
    table = rng.normal(0.5, 0.6, (33, 33, 33, 3))
    safe, info = make_safe(table)
    assert safe.min() >= 0.0
    assert safe.max() <= 1.0
    assert np.quantile(lattice_gain(safe), SAFE_QUANTILE) <= SAFE_GAIN
    assert interpolation_gap(safe).mean() <= SAFE_GAP
    assert info["gain_before"] > SAFE_GAIN
    assert info["gain_after"] <= SAFE_GAIN


def test_make_safe_leaves_a_smooth_look_alone() -> None:
    n = 17
    x = identity_table(n).astype(np.float64)
    table = np.clip(x**0.8 * [1.0, 0.97, 0.9] + [0.0, 0.01, 0.04], 0.0, 1.0)
    safe, info = make_safe(table)
    assert info["sigma"] == 0.0
    np.testing.assert_allclose(safe, table)


def cliff_table(n: int = 33) -> np.ndarray:
    """A (n, n, n, 3) table with a posterizing step (a cliff) in the mid greys."""
    x = identity_table(n).astype(np.float64)
    lum = x.mean(axis=-1, keepdims=True)
    step = 0.5 + 0.5 * np.tanh((lum - 0.5) * 40.0)
    return np.clip(x + 0.25 * (step - lum), 0.0, 1.0).astype(np.float32)


def gentle_table(n: int = 33) -> np.ndarray:
    return np.clip(identity_table(n).astype(np.float64) ** 0.9, 0, 1).astype(np.float32)


def grey_ramp() -> np.ndarray:
    """A 32x48 grey ramp from 0.3 to 0.7, ~0.8 ΔE76 between neighbours (float32)."""
    ramp = np.linspace(0.3, 0.7, 48)
    return np.repeat(np.stack([ramp, ramp, ramp], -1)[None], 32, axis=0).astype(np.float32)


def test_bound_photo_gain_bounds_a_steep_table_on_its_photos() -> None:
    """A table steep where one photo's colors are (a posterizing step in the mid greys) passes
    the lattice's p99 but tears that photo apart: the photo check smooths it until it does not."""
    photo = grey_ramp()
    lut = LUT3D(cliff_table())
    before = local_gain(photo, np.clip(lut.apply(photo), 0, 1))["p999"]
    assert before > PHOTO_GAIN
    safe, info = bound_photo_gain(lut, [photo])
    after = local_gain(photo, np.clip(safe.apply(photo), 0, 1))["p999"]
    assert after <= PHOTO_GAIN
    assert info["gain_before"] > PHOTO_GAIN >= info["gain_after"]
    assert safe.table.min() >= 0.0
    assert safe.table.max() <= 1.0
    # a gentle look is left as it is
    gentle = LUT3D(gentle_table())
    same, info = bound_photo_gain(gentle, [photo])
    assert same is gentle
    assert info["sigma"] == 0.0


def test_colour_science_axis_order_matches_ours() -> None:
    # the tetrahedral reference is only meaningful if colour-science reads our table the same way
    rng = np.random.default_rng(0)
    lut = LUT3D(rng.random((9, 9, 9, 3)).astype(np.float32))
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
    theirs = colour.LUT3D(table=lut.table.astype(np.float64)).apply(
        img / 255.0, interpolator=colour.algebra.table_interpolation_trilinear
    )
    assert psnr(np.clip(theirs, 0, 1), np.clip(lut.apply(img.astype(np.float32) / 255), 0, 1)) > 60


@pytest.mark.parametrize("name", ["ultrahdr_sky.jpg", "StLouisArchMultExpEV-1.82.JPG"])
def test_exported_table_agrees_under_tetrahedral_and_trilinear(default_model, name: str) -> None:  # type: ignore[no-untyped-def]
    photo = shared_photo(name)
    table = default_model.bake(33)
    tri = np.clip(table.apply(photo.astype(np.float32) / 255.0), 0.0, 1.0)
    tet = np.clip(tetrahedral(table, photo), 0.0, 1.0)
    assert psnr(tri, tet) >= INTEROP_DB
    gain = local_gain(photo, default_model.apply(photo))
    assert gain["p999"] <= GAIN_BOUND, gain


# ---------------------------------------------------------------------------------------------
# every model: the learner bounds the local gain on its training photos (bound_style_gain)
# ---------------------------------------------------------------------------------------------
def _torn_nilut():  # type: ignore[no-untyped-def]
    """A real NILUT whose network is steep: large random weights make neighbouring colors of
    a smooth photo land far apart (what an over-fitted few-shot MLP can do)."""
    import torch

    from app.ml.nilut import NILUTModel, NILUTNet

    torch.manual_seed(3)
    net = NILUTNet(hidden=32, layers=1)
    with torch.no_grad():
        for layer in net.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(12.0)
    return NILUTModel(net, apply_size=33)


def _gain_on(style, photos) -> float:  # type: ignore[no-untyped-def]
    return max(float(local_gain(p, np.clip(style.apply(p), 0, 1))["p999"]) for p in photos)


def test_bound_style_gain_scales_back_a_model_that_tears_its_photos() -> None:
    from app.ml.learn import (
        STYLE_GAIN,
        StrengthStyle,
        bound_style_gain,
        load_style_bytes,
        save_style_bytes,
    )

    photos = [make_photo(s, 48, 64).astype(np.float32) / 255.0 for s in (1, 2)]
    torn = _torn_nilut()
    assert _gain_on(torn, photos) > STYLE_GAIN  # the model really tears them
    safe, info = bound_style_gain(torn, photos)
    assert info["action"] == "scaled"
    assert 0.0 <= info["strength"] < 1.0
    assert isinstance(safe, StrengthStyle)
    assert _gain_on(safe, photos) <= STYLE_GAIN
    assert info["gain_before"] > STYLE_GAIN >= info["gain_after"]
    # the bound survives the checkpoint (a StrengthStyle saves its strength)
    again = load_style_bytes(save_style_bytes(safe))
    assert _gain_on(again, photos) <= STYLE_GAIN


def test_bound_style_gain_smooths_a_lut_style_and_leaves_a_gentle_one() -> None:
    from app.ml.learn import STYLE_GAIN, bound_style_gain
    from app.ml.lut import LUTStyle

    photo = grey_ramp()
    steep = LUTStyle(LUT3D(cliff_table()), kind="dlut")
    safe, info = bound_style_gain(steep, [photo])
    assert info["action"] == "smoothed"
    assert isinstance(safe, LUTStyle)
    assert _gain_on(safe, [photo]) <= STYLE_GAIN < _gain_on(steep, [photo])
    gentle = LUTStyle(LUT3D(gentle_table()), kind="dlut")
    same, info = bound_style_gain(gentle, [photo])
    assert same is gentle
    assert info["action"] == "none"


def _ripple(img: np.ndarray) -> np.ndarray:
    """A steep edit: lightness bent back and forth five times."""
    lum = img.mean(axis=-1, keepdims=True)
    return np.clip(img + 0.12 * np.sin(2 * np.pi * 5 * lum), 0, 1).astype(np.float32)


def _ramps() -> list[np.ndarray]:
    yy, xx = np.mgrid[0:64, 0:96] / 96.0
    return [
        np.clip(
            (0.1 + 0.8 * xx)[..., None] * [1.0, 0.95, 0.9]
            + (0.1 * yy)[..., None] * [0.0, 0.5, 1.0]
            + 0.03 * k,
            0,
            1,
        ).astype(np.float32)
        for k in range(2)
    ]


def test_learned_nilut_stays_under_the_default_gain_bound_on_its_photos() -> None:
    """End to end: the rippling edit (p99.9 local gain 4.7 on the photos themselves), learned
    well by ``nilut`` from two grey-ramp pairs (measured 4.4 on them). Without the evidence that
    the edits are one consistent look (``photo_gains`` off), the default bound holds: the style
    the user gets stays within it on the training photos, scaled back, and the metrics say so."""
    from app.ml import learn_style
    from app.ml.learn import STYLE_GAIN

    photos = _ramps()
    assert local_gain(photos[0], _ripple(photos[0]))["p999"] > GAIN_BOUND
    result = learn_style(
        "nilut", [(p, _ripple(p)) for p in photos], time_budget_s=20, options={"photo_gains": False}
    )
    guard = result.metrics["local_gain_guard"]
    assert guard["bound_basis"] == "default"
    assert guard["action"] == "scaled"
    assert guard["gain_before"] > STYLE_GAIN >= guard["gain_after"]
    assert _gain_on(result.model, photos) <= STYLE_GAIN
    assert result.metrics["strength"] < 1.0
    assert "local gain" in result.metrics["strength_basis"]


def test_a_consistent_steep_look_may_be_as_steep_as_the_edits() -> None:
    """The same edits with the default ``photo_gains``: one look explains them, so the bound is
    the edits' own steepness (capped), and a faithful fit is not scaled back."""
    from app.ml import learn_style
    from app.ml.learn import EDIT_GAIN_CAP, STYLE_GAIN

    photos = _ramps()
    result = learn_style("nilut", [(p, _ripple(p)) for p in photos], time_budget_s=20)
    guard = result.metrics["local_gain_guard"]
    assert result.metrics["photo_gains"]["applied"] is False
    assert guard["bound_basis"].startswith("consistent edits")
    assert STYLE_GAIN < guard["max_gain"] <= EDIT_GAIN_CAP
    assert guard["gain_after"] <= guard["max_gain"]
    assert _gain_on(result.model, photos) <= EDIT_GAIN_CAP


def test_adaptive_model_bounds_each_images_lut_on_that_image() -> None:
    """The image-adaptive LUT differs per image, so a fitted model checks it on each image it
    grades: a basis LUT with a cliff at mid grey tears a grey ramp without the bound, and stays
    within it with the bound (which survives the checkpoint). The published model has none."""
    import torch

    from app.ml.adaptive_3dlut import Adaptive3DLUTModel, Adaptive3DLUTNet
    from app.ml.torch_utils import table_to_published

    net = Adaptive3DLUTNet(lut_size=33)
    with torch.no_grad():
        net.luts.zero_()
        net.luts[0] = torch.from_numpy(table_to_published(cliff_table()))
        net.classifier.model[16].weight.zero_()  # weights = the last bias: (1, 0, 0)
        net.classifier.model[16].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    photo = grey_ramp()
    free = Adaptive3DLUTModel(net)
    assert free.max_gain is None
    assert _gain_on(free, [photo]) > GAIN_BOUND
    bounded = Adaptive3DLUTModel(net, max_gain=PHOTO_GAIN)
    assert _gain_on(bounded, [photo]) <= PHOTO_GAIN
    again = Adaptive3DLUTModel.from_state_dict(bounded.state_dict())
    assert again.max_gain == PHOTO_GAIN
    assert _gain_on(again, [photo]) <= PHOTO_GAIN
    # a gentle image is graded by the fused LUT unchanged
    flat = np.full((16, 16, 3), 0.2, np.float32)
    np.testing.assert_array_equal(bounded.apply(flat), free.apply(flat))
