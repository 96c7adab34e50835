from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import app.ml.learn as learn
from app.ml import (
    LearnInputError,
    LearnResult,
    learn_style,
    load_style,
    load_style_bytes,
    save_style_bytes,
)
from app.ml.base import TrainingPair
from app.ml.cube_export import read_cube_file, write_cube
from app.ml.dlut import DLUTModel
from app.ml.lut import LUT3D, LUTStyle, identity_table

from .conftest import make_photo, quantize, reference_trilinear

FAST = {"lut_size": 9, "coarse_size": 0}


def look() -> LUT3D:
    x = identity_table(9).astype(np.float64)
    return LUT3D((0.05 + 0.9 * x**1.2 + [0.02, 0.0, -0.02]).astype(np.float32))


def pair(seed: int, size: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray]:
    before = make_photo(seed, *size)
    after = quantize(reference_trilinear(look().table, before / 255.0)).astype(np.uint8)
    return before, after


def test_learn_style_dlut_end_to_end() -> None:
    seen: list[float] = []
    result = learn_style(
        "dlut",
        [pair(1), pair(2)],
        options=FAST,
        time_budget_s=30,
        progress=lambda f, m: seen.append(f),
    )
    assert isinstance(result, LearnResult)
    assert result.model.kind == "dlut"
    assert result.lut.size == 33
    m = result.metrics
    for group in ("holdout", "identity_holdout", "fit"):
        for key in ("psnr", "delta_e2000_mean", "delta_e2000_p95"):
            assert isinstance(m[group][key], float), (group, key)
    assert m["holdout"]["n_photos"] == m["holdout"]["n_folds"] == 2
    # whole photos are held out, so the final fit learned from every pixel: no tiles were kept back
    assert "heldout_pixels" not in m
    assert m["fit"]["n_pixels"] == 2 * 48 * 64
    # one 48x64 photo per fold does not show every color of the other: the holdout says so
    # (worse than the fit), and the strength kept still beats doing nothing
    holdout, identity = m["holdout"], m["identity_holdout"]
    assert holdout["delta_e2000_mean"] > m["fit"]["delta_e2000_mean"], m
    assert holdout["delta_e2000_mean"] < identity["delta_e2000_mean"], m
    assert holdout["psnr"] >= holdout["psnr_full_strength"], m
    assert 0.3 < m["strength"] <= 1.0
    assert m["fit"]["delta_e2000_mean"] < 2.0
    assert m["oom_retries"] == 0
    assert m["device"] == "cpu"
    assert seen[-1] == 1.0
    assert seen == sorted(seen)


def test_uint16_and_float_inputs() -> None:
    before, after = pair(3)
    r16 = learn_style(
        "dlut", [(before.astype(np.uint16) * 257, after.astype(np.uint16) * 257)], options=FAST
    )
    rf = learn_style("dlut", [(before / 255.0, after / 255.0)], options=FAST)
    de16, def_ = (r.metrics["heldout_pixels"]["delta_e2000_mean"] for r in (r16, rf))
    assert abs(de16 - def_) < 0.05


def test_holdout_mask_is_deterministic_tiles() -> None:
    a = learn.make_holdout(200, 300, seed=5)
    assert np.array_equal(a, learn.make_holdout(200, 300, seed=5))
    assert not np.array_equal(a, learn.make_holdout(200, 300, seed=6))
    assert 0.07 < a.mean() < 0.13
    tiles = a[:192, :288].reshape(12, 16, 18, 16)
    assert np.all(tiles.min(axis=(1, 3)) == tiles.max(axis=(1, 3)))  # whole 16x16 tiles


# -- input checks ------------------------------------------------------------------------------
def test_aspect_mismatch_names_the_pair_and_sizes() -> None:
    good = pair(1)
    before = make_photo(2, 48, 64)
    after = make_photo(2, 48, 48)
    with pytest.raises(LearnInputError) as info:
        learn_style("dlut", [good, (before, after)], options=FAST)
    message = str(info.value)
    assert "pair 1" in message
    assert "64x48" in message
    assert "48x48" in message
    assert "aspect" in message


def test_after_is_rescaled_when_only_the_scale_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from app.ml.dlut import fit

    before, after = pair(4, (48, 64))
    big_after = np.asarray(Image.fromarray(after).resize((128, 96), Image.Resampling.BICUBIC))
    captured: list[TrainingPair] = []

    def spy(pairs: list[TrainingPair], **kwargs: Any) -> Any:
        captured.extend(pairs)
        return fit(pairs, **kwargs)

    monkeypatch.setitem(learn.fitters, "dlut", spy)
    result = learn_style("dlut", [(before, big_after)], options=FAST)
    assert captured[0].after.shape == captured[0].before.shape == (48, 64, 3)
    assert result.metrics["heldout_pixels"]["delta_e2000_mean"] < 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "magic", "pairs": [pair(1)]}, "unknown model 'magic'"),
        ({"model": "dlut"}, "at least one before/after pair or reference"),
        ({"model": "dlut", "pairs": [pair(1)] * 17}, "at most 16"),
        ({"model": "dlut", "pairs": [(np.zeros((10, 10)), np.zeros((10, 10)))]}, "HxWx3"),
        (
            {"model": "dlut", "pairs": [(np.zeros((10, 10, 3), np.int32),) * 2]},
            "unsupported pixel type",
        ),
        ({"model": "dlut", "pairs": [(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))]}, "too small"),
        (
            {"model": "adaptive_3dlut", "references": [make_photo(1)]},
            "adaptive_3dlut learns from before/after",
        ),
    ],
)
def test_input_errors(kwargs: dict[str, Any], message: str) -> None:
    model = kwargs.pop("model")
    with pytest.raises(LearnInputError, match=message):
        learn_style(model, **kwargs)


def test_references_only_learn_a_transfer_and_pairs_win() -> None:
    refs = [make_photo(5), make_photo(6)]
    result = learn_style("dlut", references=refs, options={"max_pixels": 20000})
    assert result.model.kind == "transfer"
    assert result.metrics["n_references"] == 2
    both = learn_style("dlut", [pair(1)], refs, options=FAST)
    assert both.model.kind == "dlut"
    assert both.metrics["references_ignored"] == 2


# -- out of memory -----------------------------------------------------------------------------
class FlakyFitter:
    """Raises an out-of-memory error ``failures`` times, then fits; records the working sizes."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures = failures
        self.error = error
        self.sizes: list[tuple[int, ...]] = []

    def __call__(self, pairs: list[TrainingPair], **kwargs: Any) -> Any:
        self.sizes.append(pairs[0].before.shape)
        if len(self.sizes) <= self.failures:
            raise self.error
        from app.ml.dlut import fit

        return fit(pairs, **{**kwargs, "options": {**kwargs["options"], **FAST}})


@pytest.mark.parametrize(
    "error",
    [MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")],
    ids=["MemoryError", "RuntimeError"],
)
def test_out_of_memory_retries_at_half_the_working_size(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    flaky = FlakyFitter(1, error)
    monkeypatch.setitem(learn.fitters, "dlut", flaky)
    result = learn_style("dlut", [pair(1, (120, 160))], options={"working_size": 160})
    assert flaky.sizes == [(120, 160, 3), (60, 80, 3)]
    assert result.metrics["oom_retries"] == 1
    assert result.metrics["working_size"] == 80


def test_torch_cuda_oom_type_is_recognized(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    flaky = FlakyFitter(2, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    monkeypatch.setitem(learn.fitters, "dlut", flaky)
    result = learn_style("dlut", [pair(1, (200, 256))], options={"working_size": 256})
    assert [s[1] for s in flaky.sizes] == [256, 128, 64]
    assert result.metrics["oom_retries"] == 2


def test_out_of_memory_gives_up_after_three_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyFitter(10, MemoryError())
    monkeypatch.setitem(learn.fitters, "dlut", flaky)
    with pytest.raises(MemoryError):
        learn_style("dlut", [pair(1, (400, 600))], options={"working_size": 600})
    assert len(flaky.sizes) == 4


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyFitter(1, RuntimeError("shape mismatch"))
    monkeypatch.setitem(learn.fitters, "dlut", flaky)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        learn_style("dlut", [pair(1)])
    assert len(flaky.sizes) == 1


def test_init_weights_reach_the_fitter(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fitter(pairs: list[TrainingPair], **kwargs: Any) -> Any:
        seen.update(kwargs)
        return LUTStyle(LUT3D.identity(5), kind="adaptive_3dlut")

    monkeypatch.setitem(learn.fitters, "adaptive_3dlut", fitter)
    learn_style("adaptive_3dlut", [pair(1)], init_weights="/weights", device="cpu")
    assert seen["options"]["init_weights"] == "/weights"
    assert str(seen["device"]) == "cpu"


# -- persistence -------------------------------------------------------------------------------
def test_save_and_load_style_directory(tmp_path: Path) -> None:
    result = learn_style("dlut", [pair(1)], options=FAST)
    out = result.save(tmp_path / "style")
    assert {p.name for p in out.iterdir()} == {"model.pt", "metadata.json", "lut.cube"}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["kind"] == "dlut"
    assert meta["metrics"]["heldout_pixels"]["n_pixels"] > 0
    loaded = load_style(out)
    assert isinstance(loaded, DLUTModel)
    assert loaded.lut.allclose(result.model.lut, 0.0)  # type: ignore[attr-defined]
    assert read_cube_file(out / "lut.cube").allclose(result.lut, 1e-6)
    assert isinstance(load_style(out / "model.pt"), DLUTModel)

    import torch

    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["kind"] == "dlut"
    assert ckpt["format_version"] == 1
    assert set(ckpt) == {"kind", "format_version", "state", "metrics", "meta"}


def test_bytes_round_trip_for_lut_styles() -> None:
    lut = LUT3D(identity_table(5) * 0.9, domain_max=[1, 2, 1])
    for kind in ("imported", "transfer"):
        model = LUTStyle(lut, kind=kind, info={"title": "x"})
        back = load_style_bytes(
            save_style_bytes(model, {"psnr": float("inf"), "n": np.int64(3)}, {"a": (1, 2)})
        )
        assert isinstance(back, LUTStyle)
        assert back.kind == kind
        assert back.lut.allclose(lut, 0.0)


def test_load_style_from_cube_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "look.cube"
    write_cube(look(), path)
    style = load_style(path)
    assert style.kind == "imported"
    assert style.bake(9).allclose(look(), 1e-6)
    with pytest.raises(FileNotFoundError):
        load_style(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.pt"):
        load_style(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown model kind"):
        learn._from_checkpoint({"kind": "nope", "state": {}}, "x")


def test_register_kind() -> None:
    model = LUTStyle(LUT3D.identity(3), kind="custom_kind")
    learn.register_kind(
        "custom_kind", lambda state: LUTStyle.from_state_dict(state, kind="custom_kind")
    )
    try:
        assert load_style_bytes(save_style_bytes(model)).kind == "custom_kind"
    finally:
        learn.style_loaders.pop("custom_kind")


def test_load_published_adaptive_weights(shared_data: Path) -> None:
    pytest.importorskip("app.ml.adaptive_3dlut")
    model = load_style(shared_data / "models" / "adaptive_3dlut")
    assert model.kind == "adaptive_3dlut"
    assert model.bake(9).size == 9


# -- honest metrics: k-fold by photo -------------------------------------------------------------
class SpyFitter:
    """Fits with dlut (FAST) and records, per call, which photos it was given and its budget."""

    def __init__(self, photos: list[np.ndarray]) -> None:
        self.keys = [p.tobytes() for p in photos]
        self.calls: list[tuple[set[int], float]] = []
        self.ends: list[float] = []  # when each fit would end if it used all its budget

    def __call__(self, pairs: list[TrainingPair], **kwargs: Any) -> Any:
        from app.ml.dlut import fit

        seen = set()
        for p in pairs:
            q = np.round(p.before * 255).astype(np.uint8).tobytes()
            seen.add(self.keys.index(q))
        self.calls.append((seen, kwargs["time_budget_s"]))
        self.ends.append(time.perf_counter() + kwargs["time_budget_s"])
        return fit(pairs, **{**kwargs, "options": {**kwargs["options"], **FAST}})


def test_holdout_folds_fit_without_the_photos_they_score(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = [pair(seed) for seed in range(1, 7)]
    spy = SpyFitter([b for b, _ in pairs])
    monkeypatch.setitem(learn.fitters, "dlut", spy)
    start = time.perf_counter()
    result = learn_style("dlut", pairs, time_budget_s=40)
    holdout = result.metrics["holdout"]
    assert holdout["n_photos"] == 6
    assert holdout["n_folds"] == 4
    assert "k-fold by photo" in holdout["method"]
    # 4 folds: photo i is held out by fold i mod 4; then the final fit on all photos
    folds = [{1, 2, 3, 5}, {0, 2, 3, 4}, {0, 1, 3, 4, 5}, {0, 1, 2, 4, 5}]
    assert [c[0] for c in spy.calls] == [*folds, set(range(6))]
    assert len(holdout["per_photo_psnr"]) == 6
    # the folds and the final fit share the caller's budget: none may run past it
    assert max(spy.ends) <= start + 40


def test_holdout_is_measured_on_unseen_photos() -> None:
    """Each photo got its own look: a fit reproduces its training photos (fit) but cannot know
    an unseen photo's look, and the holdout says so."""
    looks = [lambda x: x**0.6, lambda x: x**1.7, lambda x: 1.0 - x]
    pairs = []
    for seed, f in zip((1, 2, 3), looks, strict=True):
        before = make_photo(seed, 48, 64)
        pairs.append((before, quantize(f(before / 255.0)).astype(np.uint8)))
    m = learn_style("dlut", pairs, options=FAST, time_budget_s=40).metrics
    assert m["holdout"]["n_folds"] == 3
    assert "leave-one-photo-out" in m["holdout"]["method"]
    full = m["holdout"]["delta_e2000_mean_full_strength"]
    assert full > 2 * m["fit"]["delta_e2000_mean"], m
    assert m["holdout"]["delta_e2000_mean"] <= m["identity_holdout"]["delta_e2000_mean"], m


def test_one_pair_has_no_holdout_and_says_why() -> None:
    m = learn_style("dlut", [pair(1)], options=FAST).metrics
    assert m["holdout"] is None
    assert "one pair" in m["holdout_reason"]
    assert "second pair" in m["holdout_reason"]
    assert m["strength_basis"] == "held-out pixels of the one pair"
    assert m["fit"]["delta_e2000_mean"] < 1.0
    assert m["heldout_pixels"]["delta_e2000_mean"] < 1.0
    assert "identity_heldout_pixels" in m


def test_references_only_have_no_holdout() -> None:
    m = learn_style("dlut", references=[make_photo(5)], options={"max_pixels": 20000}).metrics
    assert m["holdout"] is None
    assert "references only" in m["holdout_reason"]


# -- never worse than doing nothing --------------------------------------------------------------
def contrary_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Half the photos brightened, half darkened: what the other photos teach is the opposite
    of what a held-out photo got, so the full style is worse than doing nothing on it."""
    out = []
    for seed in range(1, 5):
        before = make_photo(seed, 48, 64) / 255.0
        after = before**0.5 if seed % 2 else before**2.0
        out.append((make_photo(seed, 48, 64), quantize(after).astype(np.uint8)))
    return out


def test_strength_never_makes_the_holdout_worse_than_doing_nothing() -> None:
    result = learn_style("dlut", contrary_pairs(), options=FAST, time_budget_s=40)
    m = result.metrics
    holdout, identity = m["holdout"], m["identity_holdout"]
    full = holdout["delta_e2000_mean_full_strength"]
    assert full > identity["delta_e2000_mean"]  # the full style would harm ...
    assert holdout["delta_e2000_mean"] <= identity["delta_e2000_mean"]  # ... this strength not
    assert m["strength"] < 0.5
    # the strength is baked into the style: full strength now is the fit at that strength
    assert result.model.info["strength"] == m["strength"]  # type: ignore[attr-defined]


def test_strength_stays_full_on_a_consistent_look() -> None:
    """Photos whose colors cover the cube (noise) and one look: every held-out photo's colors
    were seen in the others, so the whole style is kept."""
    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(3):
        before = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        after = quantize(reference_trilinear(look().table, before / 255.0)).astype(np.uint8)
        pairs.append((before, after))
    m = learn_style("dlut", pairs, options=FAST, time_budget_s=40).metrics
    assert m["strength"] >= 0.95
    assert m["holdout"]["psnr"] > m["identity_holdout"]["psnr"] + 10


def test_best_strength_is_the_largest_that_harms_no_photo() -> None:
    rng = np.random.default_rng(0)
    before = rng.uniform(0.2, 0.8, (500, 3))
    pred = np.clip(before + rng.normal(0, 0.1, (500, 3)), 0, 1)
    after = before + 0.3 * (pred - before)
    # helps up to ~0.3, harms from ~0.6 on: the largest harmless strength, not the best one
    assert 0.45 <= learn.best_strength(before, pred, after) <= 0.7
    assert learn.best_strength(before, pred, before - (pred - before)) == 0.0
    assert learn.best_strength(before, pred, pred) == 1.0
    # a style that helps every photo is kept whole, even if a few pixels extrapolate badly
    wild = pred.copy()
    wild[:10] = 1.0 - after[:10]
    assert learn.best_strength(before, wild, pred) == 1.0
    # ... but not when it harms one photo of two
    contrary = before[250:] - 0.3 * (pred[250:] - before[250:])
    assert learn.best_strength(before, pred, np.r_[pred[:250], contrary], [250, 250]) == 0.0


def test_strength_style_applies_saves_and_bakes_at_its_strength() -> None:
    inner = LUTStyle(look(), kind="custom_kind")
    learn.register_kind("custom_kind", lambda st: LUTStyle.from_state_dict(st, kind="custom_kind"))
    try:
        wrapped = learn.StrengthStyle(inner, 0.4)
        img = make_photo(3, 16, 16)
        np.testing.assert_array_equal(wrapped.apply(img), inner.apply(img, 0.4))
        np.testing.assert_array_equal(wrapped.apply(img, 0.5), inner.apply(img, 0.2))
        back = load_style_bytes(save_style_bytes(wrapped))
        assert back.kind == "custom_kind"
        assert back.bake(9).allclose(wrapped.bake(9), 1e-6)
        ident = identity_table(9)
        assert wrapped.bake(9).allclose(LUT3D(ident + 0.4 * (look().table - ident)), 1e-6)
        baked = learn.with_strength(inner, 0.4)  # LUT styles get it baked into their table
        assert isinstance(baked, LUTStyle)
        assert baked.info["strength"] == 0.4
        assert baked.lut.allclose(wrapped.bake(9), 1e-6)
        assert learn.with_strength(inner, 1.0) is inner
    finally:
        learn.style_loaders.pop("custom_kind")


# -- model "auto" --------------------------------------------------------------------------------
def inverting_fitter(pairs: list[TrainingPair], **kwargs: Any) -> Any:
    """A candidate that learns nothing useful: it inverts colors."""
    return LUTStyle(LUT3D(1.0 - identity_table(5)), kind="nilut")


def failing_fitter(pairs: list[TrainingPair], **kwargs: Any) -> Any:
    raise RuntimeError("this candidate broke")


def record_dlut_budgets(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace the dlut fitter by the real one at :data:`FAST` options that records when each
    fit would end if it used all its budget; returns that (growing) list."""
    ends: list[float] = []
    real = learn.fitters["dlut"]

    def dlut(pairs: list[TrainingPair], **kwargs: Any) -> Any:
        ends.append(time.perf_counter() + kwargs["time_budget_s"])
        return real(pairs, **{**kwargs, "options": {**kwargs["options"], **FAST}})

    monkeypatch.setitem(learn.fitters, "dlut", dlut)
    return ends


def test_auto_keeps_the_best_candidate_by_holdout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(learn.fitters, "nilut", inverting_fitter)
    monkeypatch.setitem(learn.fitters, "adaptive_3dlut", failing_fitter)
    ends = record_dlut_budgets(monkeypatch)
    start = time.perf_counter()
    result = learn_style(
        "auto",
        [pair(1), pair(2), pair(3)],
        options={"candidates": ["nilut", "adaptive_3dlut", "dlut"]},
        time_budget_s=30,
    )
    auto = result.metrics["auto"]
    assert auto["chosen"] == "dlut"
    assert result.model.kind == "dlut"
    assert "holdout" in auto["criterion"]
    cands = auto["candidates"]
    assert set(cands) == {"nilut", "adaptive_3dlut", "dlut"}
    assert "this candidate broke" in cands["adaptive_3dlut"]["error"]
    assert cands["dlut"]["delta_e2000_mean"] < cands["nilut"]["delta_e2000_mean"]
    assert cands["nilut"]["strength"] < 0.2  # inverting harms: (nearly) none of it is kept
    assert all("seconds" in c for c in cands.values())
    assert result.metrics["holdout"]["delta_e2000_mean"] == cands["dlut"]["delta_e2000_mean"]
    assert len(ends) == 4  # 3 folds of dlut and its final fit; the others get no final fit
    assert max(ends) <= start + 30


def test_auto_with_one_pair_judges_by_held_out_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(learn.fitters, "nilut", inverting_fitter)
    result = learn_style(
        "auto", [pair(1)], options={"candidates": ["nilut", "dlut"]}, time_budget_s=30
    )
    auto = result.metrics["auto"]
    assert auto["chosen"] == "dlut"
    assert "held-out pixels" in auto["criterion"]
    assert result.metrics["holdout"] is None


def test_a_learn_takes_a_minute_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    ends = record_dlut_budgets(monkeypatch)
    start = time.perf_counter()
    learn_style("auto", [pair(1), pair(2)], options={"candidates": ["dlut"]})
    assert ends
    assert max(ends) <= start + learn.DEFAULT_TIME_BUDGET_S
    ends.clear()
    start = time.perf_counter()
    learn_style("dlut", [pair(1), pair(2)], options={"time_budget_s": 20})
    assert max(ends) <= start + 20


# -- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "options", "field"),
    [
        ("dlut", {"lut_size": 2.5}, "lut_size"),
        ("dlut", {"smoothness": float("nan")}, "smoothness"),
        ("dlut", {"working_size": float("-inf")}, "working_size"),
        ("dlut", {"no_such_option": 1}, "no_such_option"),
        ("auto", {"lut_size": 17}, "lut_size"),
        ("nilut", {"loss": "huber"}, "loss"),
    ],
)
def test_learn_style_checks_options(model: str, options: dict[str, Any], field: str) -> None:
    from app.ml.options import OptionsError

    with pytest.raises(OptionsError) as info:
        learn_style(model, [pair(1)], options=options)
    assert info.value.field == field
    assert isinstance(info.value, LearnInputError)


def test_nilut_inside_a_holdout_fits_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2+ pairs the outer holdout and the strength decide "style or nothing": nilut's own
    nested selection (which left auto's short folds at the identity) is switched off, unless the
    caller chose one; with one pair nilut keeps it."""
    seen: list[dict[str, Any]] = []

    def nilut(pairs: list[TrainingPair], **kwargs: Any) -> Any:
        seen.append(dict(kwargs["options"]))
        return LUTStyle(look(), kind="nilut")

    monkeypatch.setitem(learn.fitters, "nilut", nilut)
    learn_style("nilut", [pair(1), pair(2)], time_budget_s=10)
    assert seen
    assert all(o["select"] == "fine_tuned" for o in seen)
    seen.clear()
    learn_style("auto", [pair(1), pair(2)], options={"candidates": ["nilut"]}, time_budget_s=10)
    assert seen
    assert all(o["select"] == "fine_tuned" for o in seen)
    seen.clear()
    learn_style("nilut", [pair(1), pair(2)], options={"select": "auto"}, time_budget_s=10)
    assert all(o["select"] == "auto" for o in seen)
    seen.clear()
    learn_style("nilut", [pair(1)], time_budget_s=10)
    assert all("select" not in o for o in seen)


def test_auto_never_ends_worse_than_doing_nothing_on_inconsistent_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Edits that contradict each other (half brightened, half darkened) and a candidate that
    harms (inverts colors): whatever auto keeps is no further from the held-out photos than
    doing nothing, and the final style is the chosen candidate at that strength."""
    monkeypatch.setitem(learn.fitters, "nilut", inverting_fitter)
    record_dlut_budgets(monkeypatch)
    result = learn_style(
        "auto", contrary_pairs(), options={"candidates": ["nilut", "dlut"]}, time_budget_s=40
    )
    m = result.metrics
    assert m["holdout"]["delta_e2000_mean"] <= m["identity_holdout"]["delta_e2000_mean"]
    for cand in m["auto"]["candidates"].values():
        assert len(cand["per_photo_psnr"]) == 4
    assert (
        m["holdout"]["delta_e2000_mean_full_strength"] > m["identity_holdout"]["delta_e2000_mean"]
    )
    assert m["strength"] < 0.5
