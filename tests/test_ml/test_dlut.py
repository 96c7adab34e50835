from __future__ import annotations

import time

import numpy as np
import pytest

from app.ml.base import StyleModel, TrainingPair
from app.ml.dlut import DLUTModel, DLUTOptions, fit, fit_lut, smoothness_matrix, trilinear_matrix
from app.ml.learn import make_holdout
from app.ml.lut import LUT3D, identity_table
from app.ml.metrics import delta_e2000, lightness_reversals

from .conftest import make_photo, quantize, reference_trilinear


def known_look(size: int = 17) -> LUT3D:
    """A smooth, nonlinear look: contrast curve, channel mixing and a warm shift."""
    x = identity_table(size).astype(np.float64)
    curve = x + 0.25 * np.sin(2 * np.pi * x) / (2 * np.pi)  # S-curve per channel
    mix = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.15, 0.85]])
    out = curve @ mix.T + [0.03, 0.0, -0.03]
    return LUT3D(out.astype(np.float32))


def make_pairs(
    look: LUT3D, seeds: list[int], size: tuple[int, int] = (96, 128)
) -> list[TrainingPair]:
    pairs = []
    for s in seeds:
        before = make_photo(s, *size)
        after = quantize(reference_trilinear(look.table, before / 255.0)) / 255.0
        pairs.append(
            TrainingPair(
                (before / 255.0).astype(np.float32),
                after.astype(np.float32),
                make_holdout(size[0], size[1], seed=s),
            )
        )
    return pairs


def test_trilinear_matrix_equals_lookup() -> None:
    rng = np.random.default_rng(0)
    table = rng.random((5, 5, 5, 3))
    rgb = rng.random((200, 3))
    a = trilinear_matrix(rgb, 5)
    np.testing.assert_allclose(
        a @ table.reshape(-1, 3), reference_trilinear(table, rgb), atol=1e-12
    )
    np.testing.assert_allclose(np.asarray(a.sum(axis=1)).ravel(), 1.0)


@pytest.mark.parametrize("mixed", [0.0, 1.0])
def test_smoothness_prior_vanishes_on_affine_maps(mixed: float) -> None:
    n = 7
    r = smoothness_matrix(n, mixed)
    ramp = np.linspace(0.0, 1.0, n)
    x = np.stack(np.meshgrid(ramp, ramp, ramp, indexing="ij"), -1).reshape(-1, 3)
    affine = x @ np.array([[0.5, 0.2, 0.1], [0.0, 1.2, -0.3], [0.1, 0.0, 0.7]]) + 0.05
    assert np.abs(r @ affine).max() < 1e-9
    bumpy = affine + np.random.default_rng(1).normal(0, 0.01, affine.shape)
    assert float(np.sum(bumpy * (r @ bumpy))) > 0


def test_learns_a_known_look_on_held_out_pixels() -> None:
    look = known_look()
    train = make_pairs(look, [1, 2, 3, 4, 5, 6])
    start = time.perf_counter()
    model = fit(train, options={"lut_size": 17, "coarse_size": 9}, time_budget_s=20)
    elapsed = time.perf_counter() - start
    assert isinstance(model, StyleModel)
    assert model.kind == "dlut"
    assert elapsed < 15
    held_pred, held_true = [], []
    for pair in train:
        pred = np.clip(model.apply(pair.before), 0, 1)
        held_pred.append(pred[pair.holdout])
        held_true.append(pair.after[pair.holdout])
    de = delta_e2000(np.concatenate(held_pred), np.concatenate(held_true))
    assert de["mean"] < 0.6, de
    # and on a photo it never saw (partly other colors): far closer than doing nothing
    other = make_photo(9)
    truth = quantize(reference_trilinear(look.table, other / 255.0)).astype(np.uint8)
    learned = delta_e2000(model.apply(other), truth)["mean"]
    assert learned < 1.0
    assert learned < 0.3 * delta_e2000(other, truth)["mean"]


def test_held_out_pixels_are_not_used() -> None:
    look = known_look()
    pairs = make_pairs(look, [4])
    pair = pairs[0]
    poisoned = pair.after.copy()
    poisoned[pair.holdout] = 1.0 - poisoned[pair.holdout]  # absurd targets, held out
    model = fit(
        [TrainingPair(pair.before, poisoned, pair.holdout)],
        options={"lut_size": 17},
        time_budget_s=20,
    )
    pred = np.clip(model.apply(pair.before), 0, 1)
    clean_error = np.abs(pred[pair.holdout] - pair.after[pair.holdout]).mean()
    assert clean_error < 0.02


def test_clipped_targets_are_one_sided() -> None:
    # a look that pushes red beyond 1: targets clip at 1; the LUT may exceed 1 there
    src = np.random.default_rng(5).random((20000, 3))
    true = src * [1.4, 1.0, 1.0]
    dst = np.clip(true, 0, 1)
    lut, info = fit_lut(src, dst, options={"lut_size": 9, "coarse_size": 0, "smoothness": 1e-6})
    assert info["clipped_fraction"] > 0.05
    pred = lut.apply(src.astype(np.float32))
    assert np.abs(np.clip(pred, 0, 1) - dst).mean() < 0.005


def test_monotonic_option_reduces_lightness_reversals() -> None:
    rng = np.random.default_rng(6)
    src = rng.random((4000, 3))
    dst = np.clip(src + rng.normal(0, 0.08, src.shape), 0, 1)  # noisy, sparse: bumpy fit
    # the safety step off: its smoothing (triggered or not by a threshold) would confound
    opts = {"lut_size": 9, "coarse_size": 0, "smoothness": 1e-9, "clip_passes": 0, "safe": False}
    plain, _ = fit_lut(src, dst, options=opts)
    mono, _ = fit_lut(src, dst, options={**opts, "monotonic": 1e-2})
    assert lightness_reversals(mono)["mean_drop"] <= lightness_reversals(plain)["mean_drop"]


def test_time_budget_and_options() -> None:
    pairs = make_pairs(known_look(), [7], size=(64, 64))
    start = time.perf_counter()
    fit(pairs, options={"max_iters": 100000, "tol": 0.0}, time_budget_s=1.0)
    assert time.perf_counter() - start < 8
    with pytest.raises(ValueError, match="lut_size"):
        DLUTOptions.from_dict({"lut_size": 300})
    assert DLUTOptions.from_dict({"unknown": 1, "smoothness": 1e-5}).smoothness == 1e-5
    with pytest.raises(ValueError, match="pair"):
        fit([], options={}, time_budget_s=1)


def test_model_state_round_trip() -> None:
    model = fit(
        make_pairs(known_look(), [8], size=(48, 64)), options={"lut_size": 9}, time_budget_s=10
    )
    back = DLUTModel.from_state_dict(model.state_dict())
    assert back.kind == "dlut"
    assert back.lut.allclose(model.lut, 0.0)
    assert back.bake(17).size == 17
    assert back.info["options"]["lut_size"] == 9


def test_a_short_budget_fits_on_fewer_pixels() -> None:
    """Building the normal matrices is linear in pixels and the deadline cannot stop it: with
    ``budget_pixels`` (the holdout's fold fits) a short budget subsamples proportionally, down to
    MIN_PIXELS."""
    from app.ml.dlut import MIN_PIXELS, SHORT_BUDGET_S

    rng = np.random.default_rng(3)
    src = rng.random((300_000, 3))
    dst = np.clip(src**1.3, 0, 1)
    opts = {"lut_size": 9, "coarse_size": 0, "max_pixels": 200_000, "budget_pixels": True}
    _, long = fit_lut(src, dst, options=opts, time_budget_s=60)
    # without budget_pixels (a final fit) a short budget keeps every pixel it may use
    _, final = fit_lut(src, dst, options={**opts, "budget_pixels": False}, time_budget_s=0.5)
    assert 180_000 <= final["pixels"] <= 220_000
    _, short = fit_lut(src, dst, options=opts, time_budget_s=SHORT_BUDGET_S / 4)
    assert 180_000 <= long["pixels"] <= 220_000
    assert 0.8 * 50_000 <= short["pixels"] <= 1.2 * 50_000
    _, tiny = fit_lut(src, dst, options=opts, time_budget_s=0.5)
    assert 0.8 * MIN_PIXELS <= tiny["pixels"] <= 1.2 * MIN_PIXELS


def test_one_pair_fits_add_the_mixed_prior_unless_told() -> None:
    """One photo's colors leave the multilinear modes of the axis-only prior free: a fit on one
    pair uses ``ONE_PAIR_MIXED`` mixed smoothness (ml_quality one pair 2.34 -> 2.08 mean dE00);
    two pairs, or an explicit option, keep what was asked."""
    from app.ml.dlut import ONE_PAIR_MIXED

    look, small = known_look(), {"lut_size": 9, "coarse_size": 0}
    pairs = make_pairs(look, [3, 4], size=(48, 64))
    one = fit(pairs[:1], options=small, time_budget_s=10)
    assert one.info["options"]["mixed_smoothness"] == ONE_PAIR_MIXED > 0
    plain = fit(pairs[:1], options={**small, "mixed_smoothness": 0.0}, time_budget_s=10)
    assert plain.info["options"]["mixed_smoothness"] == 0.0
    assert not one.lut.allclose(plain.lut, 1e-4)
    two = fit(pairs, options=small, time_budget_s=10)
    assert two.info["options"]["mixed_smoothness"] == 0.0
