"""Image-adaptive 3D LUTs (app.ml.adaptive_3dlut) and the torch helpers they use."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from app.ml import weights
from app.ml.adaptive_3dlut import (
    CANDIDATES,
    Adaptive3DLUTModel,
    Adaptive3DLUTNet,
    classifier_view,
    fit,
    load_published,
    lut_regularizers,
)
from app.ml.base import StyleModel, TrainingPair
from app.ml.lut import LUT3D, identity_table
from app.ml.torch_utils import published_to_table, table_to_published, trilinear_lookup_published
from tests.helpers import cast_photo_pairs


@pytest.fixture(scope="module")
def published_dir() -> Path:
    """The published weights, as shipped inside the package."""
    return weights.adaptive_3dlut_dir()


@pytest.fixture(scope="module")
def published(published_dir: Path) -> Adaptive3DLUTModel:
    return load_published(published_dir)


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> np.ndarray:
    return np.asarray(Image.open(shared_data / "photos" / "coffee.png").convert("RGB"))


def _grid_sample_published(luts: torch.Tensor, rgb: np.ndarray) -> np.ndarray:
    """Reference lookup written straight from the doc: volume [3, b, g, r], grid (x=r, y=g, z=b)."""
    grid = torch.from_numpy(rgb.reshape(1, 1, 1, -1, 3)) * 2 - 1
    out = F.grid_sample(
        luts[None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.reshape(3, -1).T.numpy()


# -- layout --------------------------------------------------------------------------------------
def test_published_layout_is_red_fastest_and_converts_by_transpose() -> None:
    n = 5
    # the published identity file: line k = b*n^2 + g*n + r holds (r, g, b)/(n-1)
    k = np.arange(n**3)
    rgb = np.stack([k % n, (k // n) % n, k // n**2], axis=1) / (n - 1)
    published = rgb.T.reshape(3, n, n, n)  # T[c, b, g, r]
    assert np.allclose(published_to_table(published), identity_table(n))
    assert np.allclose(table_to_published(identity_table(n)), published)


def test_trilinear_lookup_published_matches_lut3d_apply() -> None:
    rng = np.random.default_rng(0)
    table = rng.random((9, 9, 9, 3), dtype=np.float32)
    rgb = rng.random((2, 500, 3), dtype=np.float32)
    luts = torch.from_numpy(table_to_published(table))[None].expand(2, -1, -1, -1, -1)
    ours = trilinear_lookup_published(luts, torch.from_numpy(rgb)).numpy()
    assert np.abs(ours - LUT3D(table).apply(rgb)).max() < 1e-5
    image = torch.from_numpy(rgb.reshape(2, 20, 25, 3)).permute(0, 3, 1, 2)
    as_image = trilinear_lookup_published(luts, image).permute(0, 2, 3, 1).reshape(2, 500, 3)
    assert np.abs(as_image.numpy() - ours).max() < 1e-6


# -- published model ---------------------------------------------------------------------------
def test_parameter_count_and_state_dict_keys(published_dir: Path) -> None:
    net = Adaptive3DLUTNet()
    assert sum(p.numel() for p in net.parameters()) == 593_516
    assert sum(p.numel() for p in net.classifier.parameters()) == 270_083
    published_keys = torch.load(
        published_dir / "classifier.pth", map_location="cpu", weights_only=True
    )
    assert set(net.classifier.state_dict()) == set(published_keys)


def test_published_weights_load(published: Adaptive3DLUTModel, photo: np.ndarray) -> None:
    assert isinstance(published, StyleModel)
    assert published.kind == "adaptive_3dlut"
    assert tuple(published.net.luts.shape) == (3, 3, 33, 33, 33)
    weights = published.predict_weights(photo)
    assert weights.shape == (3,)
    assert np.all(np.isfinite(weights))
    assert np.abs(weights).max() > 0.1  # a real prediction, not a zero vector
    # unnormalised: upstream reports weights such as [1.91, -0.35, -0.93]
    assert not np.isclose(weights.sum(), 1.0, atol=1e-3) or weights.min() < 0


def test_classifier_view_equals_torch_bilinear_resize() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (300, 517, 3), dtype=np.uint8)
    ref = F.interpolate(
        torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None],
        size=(256, 256),
        mode="bilinear",
        align_corners=False,
    )[0].numpy()
    assert np.abs(classifier_view(img) - ref).max() < 1e-5
    small = classifier_view(img[:100, :120])
    assert small.shape == (3, 256, 256)


def test_fused_lut_apply_equals_grid_sample_mix_of_the_bases(
    published: Adaptive3DLUTModel, photo: np.ndarray
) -> None:
    small = np.ascontiguousarray(photo[::4, ::4])
    weights = published.predict_weights(small)
    rgb = (small.reshape(-1, 3) / 255).astype(np.float32)
    # training path: look up every basis LUT separately and mix the outputs
    luts = published.net.luts.detach()
    mix = sum(float(w) * _grid_sample_published(luts[k], rgb) for k, w in enumerate(weights))
    # serving path: fuse the LUTs, convert to table[r, g, b, c], fast trilinear
    fused = published.fused_lut(weights)
    assert np.abs(fused.apply(rgb) - mix).max() < 1e-4
    # the model's apply (float path) uses the fused table clipped to [0, 1] (so the LUT it
    # serves, and can export, never leaves [0, 1]); inside that range it is the same mix
    out = published.apply(small.astype(np.float32) / 255).reshape(-1, 3)
    clipped = published.fused_lut(weights, clip=True)
    assert clipped.table.min() >= 0.0
    assert clipped.table.max() <= 1.0
    assert np.abs(out - clipped.apply(rgb)).max() < 1e-5
    inside = np.all((mix > 0.02) & (mix < 0.98), axis=1)
    assert np.abs(out - mix)[inside].mean() < 2e-3


def test_swapping_red_and_blue_axes_changes_the_output(
    published: Adaptive3DLUTModel, photo: np.ndarray
) -> None:
    fused = published.fused_lut(published.predict_weights(photo))
    swapped = LUT3D(fused.table.transpose(2, 1, 0, 3))
    img = photo.astype(np.float32) / 255
    assert np.abs(fused.apply(img) - swapped.apply(img)).mean() > 0.01


def test_apply_dtypes_strength_and_bake(published: Adaptive3DLUTModel, photo: np.ndarray) -> None:
    out8 = published.apply(photo)
    assert out8.dtype == np.uint8
    assert out8.shape == photo.shape
    assert np.array_equal(published.apply(photo, 0.0), photo)
    assert published.apply(photo.astype(np.uint16) * 257).dtype == np.uint16
    baked = published.bake(33)
    assert baked.size == 33
    assert baked.table.min() >= 0.0
    assert baked.table.max() <= 1.0
    expected = np.clip(published_to_table(published.net.luts[0]), 0, 1)  # mean weights (1, 0, 0)
    assert np.allclose(baked.table, expected, atol=1e-6)
    assert published.bake(17).size == 17


def test_mean_weights_from_given_images(published_dir: Path, photo: np.ndarray) -> None:
    flipped = photo[:, ::-1].copy()
    model = load_published(published_dir, mean_images=[photo, flipped])
    expected = (model.predict_weights(photo) + model.predict_weights(flipped)) / 2
    assert np.allclose(model.mean_weights, expected, atol=1e-6)


def test_state_dict_round_trip(published: Adaptive3DLUTModel, photo: np.ndarray) -> None:
    buf = io.BytesIO()
    torch.save(published.state_dict(), buf)
    buf.seek(0)
    again = Adaptive3DLUTModel.from_state_dict(torch.load(buf, weights_only=True))
    assert np.allclose(again.predict_weights(photo), published.predict_weights(photo), atol=1e-6)
    assert again.bake(9).allclose(published.bake(9), atol=1e-6)
    assert again.view_size is None


# -- regularisers and fitting --------------------------------------------------------------------
def test_regularisers_on_known_luts() -> None:
    ident = torch.from_numpy(table_to_published(identity_table(9)))[None]
    tv, mono = lut_regularizers(ident)
    assert float(mono) == 0.0
    assert float(tv) > 0.0
    assert float(lut_regularizers(torch.ones(2, 3, 9, 9, 9))[0]) == 0.0
    inverted = 1.0 - ident
    assert float(lut_regularizers(inverted)[1]) > 0.0


def _synthetic_pairs(n: int = 3, size: int = 48) -> list[TrainingPair]:
    rng = np.random.default_rng(5)
    pairs = []
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    for i in range(n):
        base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(3 * xx + i)], axis=-1) * (0.6 + 0.2 * i)
        before = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1).astype(np.float32)
        after = np.clip(
            np.stack([before[..., 0] ** 0.7, before[..., 1], before[..., 2] * 0.8], -1), 0, 1
        )
        holdout = np.zeros((size, size), bool)
        holdout[:, : size // 4] = True
        pairs.append(TrainingPair(before, after.astype(np.float32), holdout))
    return pairs


def _train_mse(model: Adaptive3DLUTModel, pairs: list[TrainingPair]) -> float:
    errs = [((model.apply(p.before) - p.after)[~p.holdout] ** 2).mean() for p in pairs]
    return float(np.mean(errs))


def test_fit_from_scratch_reduces_the_loss() -> None:
    pairs = _synthetic_pairs()
    options = {
        "work_size": 48,
        "pixels_per_image": 1024,
        "num_threads": 1,
        "seed": 0,
        "select": "fine_tuned",
    }
    quiet = lambda f, m: None  # noqa: E731
    untrained = fit(pairs, options={**options, "steps": 0}, time_budget_s=60.0, progress=quiet)
    reports: list[float] = []
    model = fit(
        pairs,
        options={**options, "steps": 40},
        time_budget_s=60.0,
        progress=lambda f, m: reports.append(f),
        device=torch.device("cpu"),
    )
    assert model.info["steps"] == 40
    assert model.info["train_classifier"] == "all"
    before_loss, after_loss = _train_mse(untrained, pairs), _train_mse(model, pairs)
    assert after_loss < 0.5 * before_loss, (before_loss, after_loss)
    assert reports[-1] == 1.0
    assert model.view_size == 48
    assert np.all(np.isfinite(model.mean_weights))


def test_fit_from_published_weights_head_mode(published_dir: Path) -> None:
    pairs = _synthetic_pairs()
    start = load_published(published_dir)
    model = fit(
        pairs,
        options={
            "init_weights": str(published_dir),
            "select": "fine_tuned",
            "train_classifier": "head",
            "steps": 150,
            "work_size": 48,
            "pixels_per_image": 1024,
            "pool_views": 4,
            "jitter": 0.1,
            "wb_jitter": 0.1,
            "num_threads": 1,
        },
        time_budget_s=60.0,
        progress=lambda f, m: None,
        device=None,
    )
    assert model.info["train_classifier"] == "head"
    assert model.info["choice"] == "fine_tuned"
    assert model.post_lut is not None
    assert model.post_lut.size == 17
    assert _train_mse(model, pairs) < 0.5 * _train_mse(start, pairs)


QUICK = {"work_size": 48, "pixels_per_image": 512, "max_pixels": 2000, "pool_views": 2}


def test_fine_tune_cannot_end_below_the_published_weights(published_dir: Path) -> None:
    """Pairs whose 'after' is the published model's own output: nothing can beat the initial
    weights on held-out photos, so the fit keeps them (and says so)."""
    published = load_published(published_dir)
    published.view_size = 48
    pairs = cast_photo_pairs(3, lambda i, b: published.apply(b))
    model = fit(
        pairs,
        options={"init_weights": str(published_dir), **QUICK},
        time_budget_s=8.0,
        progress=lambda f, m: None,
        device=None,
    )
    scores = model.info["holdout_psnr"]
    assert {"initial", "identity", "fine_tuned"} <= set(scores) <= set(CANDIDATES)
    assert model.info["choice"] == "initial", scores
    assert "leave-one-photo-out" in model.info["selection"]
    assert scores["initial"] >= max(scores.values())
    other = cast_photo_pairs(2, lambda i, b: published.apply(b), seed=9)
    for pair in other:
        assert np.allclose(model.apply(pair.before), published.apply(pair.before), atol=1e-5)


def test_inconsistent_edits_choose_the_best_held_out_candidate(published_dir: Path) -> None:
    """Random, unrelated per-photo edits: whatever is chosen scores at least as well as the
    initial weights on the held-out photos, and every candidate's score is recorded."""
    rng = np.random.default_rng(4)
    gains = rng.uniform(0.5, 1.6, (4, 3))
    pairs = cast_photo_pairs(4, lambda i, b: np.clip(b * gains[i], 0, 1), seed=3)
    model = fit(
        pairs,
        options={"init_weights": str(published_dir), **QUICK},
        time_budget_s=8.0,
        progress=lambda f, m: None,
        device=None,
    )
    scores = model.info["holdout_psnr"]
    assert model.info["choice"] in scores
    assert scores[model.info["choice"]] >= scores["initial"]
    assert scores[model.info["choice"]] == max(scores.values())
    saved = io.BytesIO()
    torch.save(model.state_dict(), saved)
    saved.seek(0)
    again = Adaptive3DLUTModel.from_state_dict(torch.load(saved, weights_only=True))
    assert again.info["holdout_psnr"] == scores
    assert again.info["choice"] == model.info["choice"]
    x = pairs[0].before
    assert np.allclose(again.apply(x), model.apply(x), atol=1e-5)


def test_one_pair_chooses_by_held_out_tiles(published_dir: Path) -> None:
    pairs = cast_photo_pairs(1, lambda i, b: np.clip(b**0.7, 0, 1), size=64)
    model = fit(
        pairs,
        options={"init_weights": str(published_dir), **QUICK},
        time_budget_s=6.0,
        progress=lambda f, m: None,
        device=None,
    )
    assert "tiles" in model.info["selection"]
    assert "global" not in model.info["holdout_psnr"]
    assert model.info["holdout_psnr"][model.info["choice"]] >= model.info["holdout_psnr"]["initial"]


def _learn(pairs: list[TrainingPair], published_dir: Path) -> Any:
    """learn_style (the service's path) on ``pairs`` from the published weights, small and quick."""
    from app.ml import learn_style

    return learn_style(
        "adaptive_3dlut",
        [(p.before, p.after) for p in pairs],
        options={**QUICK, "seed": 0},
        init_weights=published_dir,
        time_budget_s=20,
    )


def test_learn_style_keeps_the_published_weights_its_edits_came_from(published_dir: Path) -> None:
    """learn_style with 2+ pairs chooses between the published weights, the fine-tune and the
    global LUT on its outer held-out photos (the holdout it reports), not by a selection nested
    in each fold: pairs made by the published model itself keep the published weights, every
    candidate's holdout is in ``metrics["selection"]`` and the style is the one chosen."""
    published = load_published(published_dir)
    published.view_size = 48
    pairs = cast_photo_pairs(3, lambda i, b: published.apply(b), size=48)
    result = _learn(pairs, published_dir)
    selection = result.metrics["selection"]
    scores = {k: v["delta_e2000_mean"] for k, v in selection["candidates"].items()}
    assert set(scores) == {"initial", "fine_tuned", "global"}
    assert selection["chosen"] == "initial", scores
    assert result.model.info["choice"] == "initial"
    assert result.metrics["holdout"]["delta_e2000_mean"] == scores["initial"] < 0.05
    assert result.model.adaptive  # the published network itself, not a LUT fitted to its output
    for pair in pairs:
        assert np.allclose(result.model.apply(pair.before), pair.after, atol=2e-3)


def test_learn_style_fine_tune_never_ends_below_the_published_weights(published_dir: Path) -> None:
    """Unrelated per-photo edits: whichever candidate learn_style keeps scores no worse than the
    published weights on the held-out photos, and its holdout is that candidate's."""
    rng = np.random.default_rng(4)
    gains = rng.uniform(0.5, 1.6, (4, 3))
    pairs = cast_photo_pairs(4, lambda i, b: np.clip(b * gains[i], 0, 1), seed=3)
    result = _learn(pairs, published_dir)
    selection = result.metrics["selection"]
    scores = {k: v["delta_e2000_mean"] for k, v in selection["candidates"].items()}
    chosen = selection["chosen"]
    assert scores[chosen] == min(scores.values()) <= scores["initial"]
    assert result.metrics["holdout"]["delta_e2000_mean"] == scores[chosen]
    assert result.model.info["choice"] == chosen


def test_time_budget_is_respected(published_dir: Path) -> None:
    pairs = cast_photo_pairs(4, lambda i, b: np.clip(b**0.8, 0, 1), size=64)
    start = time.monotonic()
    model = fit(
        pairs,
        options={"init_weights": str(published_dir), "work_size": 64},
        time_budget_s=2.0,
        progress=lambda f, m: None,
        device=None,
    )
    took = time.monotonic() - start
    assert took < 8.0, (took, model.info)  # generous: the machine is shared; not a speed test
    assert model.info["train_seconds"] <= took


@pytest.mark.parametrize("choice", ["fine_tuned", "global", "initial", "identity"])
def test_baked_and_per_image_tables_stay_within_unit_range(
    published_dir: Path, choice: str
) -> None:
    # an edit that pushes far outside [0, 1] if extrapolated linearly
    pairs = cast_photo_pairs(2, lambda i, b: np.clip(1.8 * b - 0.3, 0, 1), seed=5)
    model = fit(
        pairs,
        options={"init_weights": str(published_dir), "select": choice, **QUICK},
        time_budget_s=4.0,
        progress=lambda f, m: None,
        device=None,
    )
    assert model.info["choice"] == choice
    baked = model.bake(33)
    assert baked.table.min() >= 0.0
    assert baked.table.max() <= 1.0
    per_image = model.image_lut(pairs[0].before)
    assert per_image.table.min() >= 0.0
    assert per_image.table.max() <= 1.0
    assert model.adaptive == (choice in ("fine_tuned", "initial"))


def test_version_1_state_still_loads(published: Adaptive3DLUTModel, photo: np.ndarray) -> None:
    state = published.state_dict()
    assert state["version"] == 2
    old = {k: v for k, v in state.items() if k not in ("adaptive", "post_lut")}
    old["version"] = 1
    old["info"] = {"source": "published"}
    again = Adaptive3DLUTModel.from_state_dict(old)
    assert again.adaptive
    assert again.post_lut is None
    assert np.array_equal(again.apply(photo), published.apply(photo))


def test_fit_rejects_fully_held_out_pairs() -> None:
    p = _synthetic_pairs(1, 16)[0]
    hidden = TrainingPair(p.before, p.after, np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="held out"):
        fit([hidden], options={}, time_budget_s=5.0, progress=lambda f, m: None, device=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda() -> None:
    pairs = _synthetic_pairs(2, 32)
    model = fit(pairs, options={"steps": 5, "work_size": 32}, time_budget_s=30.0,
                progress=lambda f, m: None, device=torch.device("cuda"))  # fmt: skip
    assert model.device.type == "cuda"
    assert model.apply(pairs[0].before).shape == pairs[0].before.shape
