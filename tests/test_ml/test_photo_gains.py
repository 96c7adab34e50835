"""Per-photo exposure and white balance are factored out of inconsistent edits (issue 10).

Pairs share one look, but every photo also got its own exposure (and white balance), as a
retoucher's do. The estimate must find those corrections, must leave consistent (LUT-made)
pairs alone, and a style learned with it must be closer to the shared look on a new photo than
one learned without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.ml import learn_style
from app.ml.base import TrainingPair
from app.ml.metrics import delta_e2000, linear_to_srgb, srgb_to_linear
from app.ml.photo_gains import estimate_photo_gains, normalize_pairs
from tests.helpers import photo

EVS = (0.8, -0.6, 0.1, -0.3)
WB = ((1.08, 1.0, 0.92), (0.95, 1.0, 1.06), (1.0, 1.0, 1.0), (1.03, 1.0, 0.97))


def look(rgb: np.ndarray) -> np.ndarray:
    """The shared look: an S-curve per channel and a little channel mixing."""
    s = rgb + 0.6 * rgb * (1 - rgb) * (rgb - 0.5)
    mix = np.array([[0.95, 0.08, -0.03], [0.02, 0.93, 0.05], [-0.04, 0.1, 0.94]])
    return np.clip(s @ mix.T + [0.03, 0.0, -0.04], 0.0, 1.0)


PHOTOS = ("tahoe-gps.jpg", "UNIS_EV0.jpg", "astronaut.png", "StLouisArchMultExpEV+1.51.JPG")
NEW = "rocket.jpg"


def _photo(k: int) -> np.ndarray:
    """Shared photo ``k`` (``PHOTOS``; :data:`NEW` for a new one) 256 px wide, float."""
    name = NEW if k >= len(PHOTOS) else PHOTOS[k]
    return photo(name, 256).astype(np.float64) / 255.0


def _edited(before: np.ndarray, ev: float, wb: tuple[float, float, float]) -> np.ndarray:
    corrected = linear_to_srgb(np.clip(srgb_to_linear(before) * 2.0**ev * np.asarray(wb), 0, 1))
    return np.round(look(corrected) * 255) / 255


def _pairs(consistent: bool) -> list[TrainingPair]:
    out = []
    for k, (ev, wb) in enumerate(zip(EVS, WB, strict=True)):
        before = _photo(k)
        after = _edited(before, 0.0, (1.0, 1.0, 1.0)) if consistent else _edited(before, ev, wb)
        out.append(
            TrainingPair(
                before.astype(np.float32),
                after.astype(np.float32),
                np.zeros(before.shape[:2], bool),
            )
        )
    return out


def test_estimate_follows_each_photos_exposure() -> None:
    """The decomposition is rough (a coarse look absorbs part of each correction: measured
    +0.26, -0.42, +0.29, -0.13 EV for the true +0.8, -0.6, +0.1, -0.3), but it follows them
    (correlation 0.86) and explains most of the inconsistency."""
    gains, info = estimate_photo_gains(_pairs(consistent=False))
    assert info["applied"] is True
    assert info["mse_after"] < 0.5 * info["mse_before"]
    np.testing.assert_allclose(gains.mean(axis=0), 0.0, atol=1e-9)
    assert np.corrcoef(gains.mean(axis=1), EVS)[0, 1] > 0.7


def test_consistent_edits_are_left_alone() -> None:
    pairs = _pairs(consistent=True)
    gains, info = estimate_photo_gains(pairs)
    assert info["applied"] is False
    assert not gains.any()
    same = normalize_pairs(pairs, gains)
    assert all(a is b for a, b in zip(same, pairs, strict=True))


def test_one_pair_has_nothing_to_factor_out() -> None:
    gains, info = estimate_photo_gains(_pairs(consistent=False)[:1])
    assert info["applied"] is False
    assert gains.shape == (1, 3)
    assert not gains.any()


def test_learned_look_is_closer_to_the_shared_look_on_a_new_photo() -> None:
    pairs = [(p.before, p.after) for p in _pairs(consistent=False)]
    new = _photo(4)
    truth = look(new)
    errors = {}
    for flag in (False, True):
        result = learn_style(
            "dlut", pairs, time_budget_s=30, options={"photo_gains": flag, "seed": 0}
        )
        pred = result.model.apply(new.astype(np.float32))
        errors[flag] = delta_e2000(pred, truth)["mean"]
        if flag:
            assert result.metrics["photo_gains"]["applied"] is True
            assert len(result.metrics["photo_gains"]["ev"]) == len(pairs)
        else:
            assert "photo_gains" not in result.metrics
    assert errors[True] < 0.85 * errors[False]  # measured 3.67 against 4.80 mean ΔE00


def test_adaptive_learns_from_the_normalized_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``adaptive_3dlut`` gets the same normalized "before" images as ``dlut`` (its classifier
    cannot learn each photo's own exposure from 4 photos), in every fold and the final fit."""
    from app.ml import learn, weights

    pairs = [(p.before, p.after) for p in _pairs(consistent=False)]
    seen: list[list[TrainingPair]] = []
    real = learn.fitters["adaptive_3dlut"]

    def spy(fit_pairs: list[TrainingPair], **kwargs: object) -> object:
        seen.append(fit_pairs)
        return real(fit_pairs, **kwargs)

    monkeypatch.setitem(learn.fitters, "adaptive_3dlut", spy)
    result = learn_style(
        "adaptive_3dlut",
        pairs,
        time_budget_s=30,
        options={"init_weights": str(weights.adaptive_3dlut_dir()), "select": "global"},
    )
    assert result.metrics["photo_gains"]["applied"] is True
    assert len(seen) == 5  # four folds and the final fit
    final = seen[-1]
    changed = [
        not np.allclose(f.before, p[0], atol=1e-3) for f, p in zip(final, pairs, strict=True)
    ]
    assert sum(changed) >= 3, changed
    assert all(np.array_equal(f.after, p[1]) for f, p in zip(final, pairs, strict=True))


def test_degenerate_pairs_are_left_alone() -> None:
    """Black photos, identical before and after, tiny images: nothing to factor out, no error."""
    black = np.zeros((8, 8, 3), np.float32)
    rng = np.random.default_rng(5)
    noise = rng.random((8, 8, 3)).astype(np.float32)
    pairs = [TrainingPair(black, black, np.zeros((8, 8), bool)) for _ in range(3)]
    pairs += [TrainingPair(noise, noise, np.zeros((8, 8), bool)) for _ in range(13)]
    gains, info = estimate_photo_gains(pairs)
    assert info["applied"] is False
    assert gains.shape == (16, 3)
    assert not gains.any()


@pytest.mark.parametrize("model", ["dlut", "auto"])
def test_gains_are_estimated_before_any_fold_is_fitted(model: str) -> None:
    """Every fold's gains (and all photos') are estimated up front, so no fold and no ``auto``
    candidate pays for them out of its own time share: the estimate's progress message comes
    before the first fold's, and only once."""
    pairs = [(p.before, p.after) for p in _pairs(consistent=False)]
    messages: list[str] = []
    options = {"candidates": ["dlut", "nilut"]} if model == "auto" else {}
    result = learn_style(
        model, pairs, time_budget_s=12, options=options, progress=lambda f, m: messages.append(m)
    )
    assert result.metrics["photo_gains"]["applied"] is True
    estimate = [i for i, m in enumerate(messages) if "own exposure and white balance" in m]
    folds = [i for i, m in enumerate(messages) if m.startswith("holding out photo")]
    assert len(estimate) == 1
    assert folds
    assert estimate[0] < folds[0]
    if model == "auto":
        assert len(folds) == 2 * len(pairs)  # both candidates held out every photo
