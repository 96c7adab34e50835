"""NILUT (app.ml.nilut): published checkpoint, baking, persistence, fitting."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.ml import weights
from app.ml.base import StyleModel, TrainingPair
from app.ml.lut import LUT3D
from app.ml.metrics import psnr
from app.ml.nilut import NILUTModel, NILUTNet, fit, fit_styles, load_published_nilut
from tests.helpers import SHARED, cast_photo_pairs, require_shared

# a short, step-bounded fit (about 2 s on 2 idle cores; the time budget is only a safety cap)
QUICK = {"hidden": 64, "steps": 250, "batch_size": 2048, "num_threads": 1, "seed": 0}


def _look_a(x: np.ndarray) -> np.ndarray:
    """A smooth synthetic look: warm, contrasty, slightly desaturated."""
    y = np.stack([x[..., 0] ** 0.8, x[..., 1], x[..., 2] ** 1.25], axis=-1)
    y = 0.5 + 1.3 * (y - 0.5) + np.array([0.06, 0.0, -0.06])
    gray = y.mean(axis=-1, keepdims=True)
    return np.clip(gray + 0.7 * (y - gray), 0.0, 1.0).astype(np.float32)


def _look_b(x: np.ndarray) -> np.ndarray:
    """A second look: cool, lifted blacks."""
    y = np.stack([x[..., 0] * 0.9, x[..., 1] ** 1.1, 0.1 + 0.9 * x[..., 2] ** 0.7], axis=-1)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _pair(look, seed: int = 0, size: int = 96) -> TrainingPair:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    before = rng.random((size, size, 3), dtype=np.float32)
    holdout = rng.random((size, size)) < 0.2
    return TrainingPair(before, look(before), holdout)


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """``../shared/data``; absent, it skips here and fails the run under ``CI=true``."""
    require_shared(SHARED / "halds" / "Original_Image.png")
    return SHARED


@pytest.fixture(scope="module")
def published() -> NILUTModel:
    """The published checkpoint, as shipped inside the package."""
    return load_published_nilut(weights.nilut_checkpoint())


def test_layer_stack_matches_the_published_state_dict_keys() -> None:
    net = NILUTNet(in_features=6, hidden=256, layers=2)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "net.0.weight": (256, 6),
        "net.0.bias": (256,),
        "net.2.weight": (256, 256),
        "net.2.bias": (256,),
        "net.4.weight": (256, 256),
        "net.4.bias": (256,),
        "net.6.weight": (3, 256),
        "net.6.bias": (3,),
    }
    assert sum(p.numel() for p in net.parameters()) == 134_147


def test_residual_output_is_clamped_rgb_plus_mlp() -> None:
    net = NILUTNet(in_features=4, hidden=8, layers=1)
    x = torch.rand(50, 4)
    expected = torch.clamp(x[:, :3] + net.net(x), 0, 1)
    assert torch.allclose(net(x), expected)


def test_published_checkpoint_reproduces_lut01(shared_data: Path, published: NILUTModel) -> None:
    halds = shared_data / "halds"
    original = np.asarray(Image.open(halds / "Original_Image.png").convert("RGB"))
    target = np.asarray(Image.open(halds / "LUT01_ContrastLUT.png").convert("RGB"))
    assert published.condition.tolist() == [1.0, 0.0, 0.0]
    assert published.style_names == ["LUT01", "LUT03", "LUT04"]
    # through the baked LUT (the serving path) on every pixel of the hald
    assert psnr(published.bake(33).apply(original), target) >= 43.0
    # per-pixel MLP evaluation on an evenly spaced 16th of the pixels
    sub_in, sub_out = original.reshape(-1, 3)[::16], target.reshape(-1, 3)[::16]
    assert psnr(published.predict(sub_in), sub_out) >= 43.0
    # the other styles are other looks
    assert psnr(published.predict(sub_in, [0, 1, 0]), sub_out) < 30.0


def test_blending_by_fractional_condition(published: NILUTModel) -> None:
    a = published.bake(9, [1, 0, 0]).table
    b = published.bake(9, [0, 1, 0]).table
    mid = published.bake(9, [0.5, 0.5, 0]).table
    assert np.abs(a - b).mean() > 0.02
    assert np.abs(mid - a).mean() > 0.005
    assert np.abs(mid - b).mean() > 0.005
    with pytest.raises(ValueError, match="condition"):
        published.bake(9, [1, 0])


def test_bake_any_size_equals_the_mlp_on_the_lattice() -> None:
    torch.manual_seed(0)
    model = NILUTModel(NILUTNet(in_features=5, hidden=16, layers=2), condition=[0.3, 0.7])
    for size in (2, 7, 17):
        lut = model.bake(size)
        assert isinstance(lut, LUT3D)
        assert lut.size == size
        points = LUT3D.identity(size).table
        assert np.allclose(lut.table, model.predict(points), atol=1e-6)
    # table[r, g, b]: the red input runs along the first axis
    lut = model.bake(5)
    probe = np.array([[1.0, 0.0, 0.25]], np.float32)
    assert np.allclose(lut.table[4, 0, 1], model.predict(probe)[0], atol=1e-6)


def test_apply_keeps_dtype_and_strength(published: NILUTModel) -> None:
    assert isinstance(published, StyleModel)
    rng = np.random.default_rng(1)
    img8 = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    out8 = published.apply(img8)
    assert out8.dtype == np.uint8
    assert out8.shape == img8.shape
    assert np.array_equal(published.apply(img8, 0.0), img8)
    img16 = img8.astype(np.uint16) * 257
    assert published.apply(img16).dtype == np.uint16
    f = img8.astype(np.float32) / 255
    out_f = published.apply(f)
    assert out_f.dtype == np.float32
    assert np.abs(out_f - out8 / 255.0).max() < 1 / 255 + 1e-4
    half = published.apply(f, 0.5)
    assert np.allclose(half, 0.5 * (f + out_f), atol=1e-5)


def test_state_dict_round_trip_through_torch_save(published: NILUTModel) -> None:
    published.condition = [0.2, 0.3, 0.5]
    try:
        buf = io.BytesIO()
        torch.save(published.state_dict(), buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        again = NILUTModel.from_state_dict(state)
        assert again.kind == "nilut"
        assert again.condition.tolist() == pytest.approx([0.2, 0.3, 0.5])
        assert again.style_names == published.style_names
        assert again.bake(9).allclose(published.bake(9), atol=1e-6)
    finally:
        published.condition = [1, 0, 0]


def test_fit_learns_a_synthetic_look() -> None:
    pair = _pair(_look_a)
    reports: list[float] = []
    model = fit(
        [pair],
        options=QUICK,
        time_budget_s=30.0,
        progress=lambda f, m: reports.append(f),
        device=torch.device("cpu"),
    )
    held = pair.holdout
    start = psnr(pair.before[held], pair.after[held])
    learned = psnr(model.apply(pair.before)[held], pair.after[held])
    assert start < 22.0
    assert learned > 30.0, f"held-out PSNR {learned:.2f} dB after {model.info}"
    assert reports
    assert all(0.0 <= f <= 1.0 for f in reports)
    assert reports[-1] == 1.0
    assert model.condition.shape == (0,)


def test_fit_never_uses_held_out_pixels() -> None:
    pair = _pair(_look_a, size=16)
    everything = TrainingPair(pair.before, pair.after, np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="held out"):
        fit([everything], options={}, time_budget_s=1.0, progress=lambda f, m: None, device=None)


def test_fit_styles_puts_two_looks_in_one_network() -> None:
    pa, pb = _pair(_look_a, seed=1), _pair(_look_b, seed=2)
    model = fit_styles(
        [[pa], [pb]],
        names=["warm", "cool"],
        options=QUICK,
        time_budget_s=30.0,
    )
    assert model.num_styles == 2
    assert model.style_names == ["warm", "cool"]
    x = pa.before[pa.holdout]
    out_a = model.predict(x, [1, 0])
    out_b = model.predict(x, [0, 1])
    assert psnr(out_a, _look_a(x)) > 28.0
    assert psnr(out_b, _look_b(x)) > 28.0
    blend = model.predict(x, [0.5, 0.5])
    assert np.abs(blend - out_a).mean() > 0.01
    assert np.abs(blend - out_b).mean() > 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda() -> None:
    pair = _pair(_look_a, size=32)
    model = fit([pair], options={"hidden": 32}, time_budget_s=3.0, progress=lambda f, m: None,
                device=torch.device("cuda"))  # fmt: skip
    assert model.device.type == "cuda"
    assert model.apply(pair.before).shape == pair.before.shape


def test_inconsistent_edits_never_end_below_no_change() -> None:
    """Unrelated per-photo edits: the kept model scores at least as well as 'no change' on the
    held-out photos (leave-one-photo-out), and the choice and scores survive saving."""
    gains = np.random.default_rng(4).uniform(0.5, 1.6, (4, 3))
    pairs = cast_photo_pairs(4, lambda i, b: np.clip(b * gains[i], 0, 1), seed=3)
    model = fit(pairs, options={**QUICK, "steps": 60}, time_budget_s=10.0)
    scores = model.info["holdout_psnr"]
    assert set(scores) == {"identity", "fine_tuned"}
    assert "leave-one-photo-out" in model.info["selection"]
    assert scores[model.info["choice"]] == max(scores.values())
    assert scores[model.info["choice"]] >= scores["identity"]
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = NILUTModel.from_state_dict(torch.load(buf, weights_only=True))
    assert again.info["holdout_psnr"] == scores
    assert again.info["choice"] == model.info["choice"]


def test_identity_edits_keep_no_change() -> None:
    pairs = cast_photo_pairs(3, lambda i, b: b)
    model = fit(pairs, options={**QUICK, "steps": 40}, time_budget_s=10.0)
    if model.info["choice"] == "identity":
        x = pairs[0].before
        assert np.array_equal(model.apply(x), np.clip(x, 0, 1))
    assert (
        model.info["holdout_psnr"][model.info["choice"]] >= model.info["holdout_psnr"]["identity"]
    )


def test_time_budget_is_respected_and_tables_stay_in_range() -> None:
    # an edit that leaves [0, 1] if extrapolated linearly, with few colours seen
    pairs = cast_photo_pairs(4, lambda i, b: np.clip(1.8 * b - 0.3, 0, 1), size=64)
    start = time.monotonic()
    model = fit(pairs, options={"num_threads": 1}, time_budget_s=2.0)
    took = time.monotonic() - start
    assert took < 8.0, (took, model.info)  # generous: the machine is shared; not a speed test
    lut = model.bake(33)
    assert lut.table.min() >= 0.0
    assert lut.table.max() <= 1.0
