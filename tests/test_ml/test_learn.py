from __future__ import annotations

import json
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
    for key in ("psnr", "delta_e2000_mean", "delta_e2000_p95", "n_holdout_pixels", "train_psnr"):
        assert key in m
    assert m["n_holdout_pixels"] > 0
    assert m["delta_e2000_mean"] < 1.0
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
    assert abs(r16.metrics["delta_e2000_mean"] - rf.metrics["delta_e2000_mean"]) < 0.05


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
    assert result.metrics["delta_e2000_mean"] < 2.0


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
    assert meta["metrics"]["n_holdout_pixels"] > 0
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
