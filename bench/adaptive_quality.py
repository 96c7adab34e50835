"""Image-adaptive 3D LUTs: does a style learned from 4 pairs beat the published model?

Ground truth (from ``../shared/data``): every photo in ``photos/`` (longest side reduced to
``SIDE`` px) gets its own random camera error -- an exposure gain 2^U(-0.6, 0.6) and white-balance
gains 2^U(-0.25, 0.25) on red and blue, applied in linear light -- which gives the "before" image.
The editor's "after" corrects that error exactly (a per-photo exposure/white-balance correction
whose gains differ per photo) and then applies one shared look: ``LOOK`` from ``luts/`` by exact
trilinear interpolation (:meth:`app.ml.lut.LUT3D.apply`, float). We learn from ``TRAIN`` (4 pairs)
and score PSNR and mean CIEDE2000 on the other photos.

Rows: identity (before vs after), the published model (FiveK expert C, not this editor), one
global LUT fitted to the 4 pairs (:func:`app.ml.dlut.fit`), the true look LUT applied without the
per-photo correction (what a perfect global LUT that ignores the correction would do; a
reference, not a method), the fine-tuned candidate alone (``select="fine_tuned"``), and our
adaptive fit from the published weights with its default choice between candidates (initial /
no change / global / fine-tuned, by leave-one-photo-out on the 4 training photos; the row says
which it kept), and last what the service runs, :func:`app.ml.learn_style` (per-photo gains
factored out, the same choice made on its outer held-out photos, strength and local-gain guard).
Benchmarks measure; they never assert.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.ml import dlut, weights
from app.ml.adaptive_3dlut import fit, load_published
from app.ml.base import TrainingPair
from app.ml.cube_export import read_cube_file
from app.ml.lut import LUT3D
from app.ml.metrics import delta_e2000, psnr
from bench import shared_data_dir

SIDE = 768
LOOK = "golden_years_film.cube"
TRAIN = ("astronaut.png", "coffee.png", "tahoe-gps.jpg", "UNIS_EV0.jpg")
FIT_BUDGET_S = 60.0
GLOBAL_BUDGET_S = 30.0
JITTER_BUDGET_S = 0.0  # jitter reaches only the classifier view now
SEED = 7


def _decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as src:
        im = src.convert("RGB")
    scale = SIDE / max(im.size)
    if scale < 1:
        size = (round(im.width * scale), round(im.height * scale))
        im = im.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.float32) / 255.0


def build_pairs(data: Path) -> tuple[dict[str, TrainingPair], LUT3D, dict[str, np.ndarray]]:
    """The before/after pair per photo, the look LUT, and the per-photo gains used."""
    look = read_cube_file(data / "luts" / LOOK)
    rng = np.random.default_rng(SEED)
    pairs: dict[str, TrainingPair] = {}
    gains: dict[str, np.ndarray] = {}
    for path in sorted((data / "photos").iterdir()):
        photo = _load(path)
        exposure = 2.0 ** rng.uniform(-0.6, 0.6)
        wb = 2.0 ** rng.uniform(-0.25, 0.25, size=2)
        g = exposure * np.array([wb[0], 1.0, wb[1]])
        before = _encode(_decode(photo.astype(np.float64)) * g).astype(np.float32)
        after = np.clip(look.apply(photo), 0.0, 1.0)
        pairs[path.name] = TrainingPair(before, after, np.zeros(photo.shape[:2], bool))
        gains[path.name] = g
    return pairs, look, gains


def _score(outputs: dict[str, np.ndarray], pairs: dict[str, TrainingPair]) -> tuple[float, float]:
    p = [psnr(outputs[n], pairs[n].after) for n in outputs]
    d = [delta_e2000(outputs[n], pairs[n].after, max_pixels=100_000)["mean"] for n in outputs]
    return float(np.mean(p)), float(np.mean(d))


def _quiet(fraction: float, message: str) -> None:
    pass


def _row(
    name: str, outputs: dict[str, np.ndarray], pairs: dict[str, TrainingPair], extra: str = ""
) -> None:
    p, d = _score(outputs, pairs)
    per = " ".join(f"{psnr(outputs[n], pairs[n].after):5.2f}" for n in outputs)
    print(f"{name:<44} {p:7.2f} {d:8.2f}   [{per}] {extra}", flush=True)


def run(fit_budget_s: float = FIT_BUDGET_S, options: dict[str, Any] | None = None) -> None:
    data = shared_data_dir()
    if not (data / "photos").is_dir():
        print(f"skipped: shared data folder {data} is absent")
        return
    t0 = time.monotonic()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pairs, look, _gains = build_pairs(data)
    train = [pairs[n] for n in TRAIN]
    test = {n: p for n, p in pairs.items() if n not in TRAIN}
    threads = torch.get_num_threads()
    print(f"look {LOOK}; photos at <= {SIDE} px; device {device}; torch threads {threads}")
    print(f"train ({len(train)}): {', '.join(TRAIN)}")
    print(f"test ({len(test)}): {', '.join(test)}")
    print(f"{'method':<44} {'PSNR dB':>7} {'mean dE00':>8}   [per test photo PSNR]")
    _row("identity (before)", {n: p.before for n, p in test.items()}, test)

    published_dir = weights.adaptive_3dlut_dir()  # the copy shipped inside the package
    published = load_published(published_dir, device=device)
    _row(
        "published model (FiveK expert C)",
        {n: published.apply(p.before) for n, p in test.items()},
        test,
    )

    _row(
        "true look LUT, no per-photo correction (ref)",
        {n: np.clip(look.apply(p.before), 0, 1) for n, p in test.items()},
        test,
    )

    def fit_and_score(label: str, fitter: Any, opts: dict[str, Any], budget: float) -> Any:
        start = time.monotonic()
        model = fitter(train, options=opts, time_budget_s=budget, progress=_quiet, device=device)
        took = time.monotonic() - start
        steps = f", {model.info['steps']} steps" if "steps" in model.info else ""
        if "choice" in model.info:
            steps += f", chose {model.info['choice']} (held-out {model.info.get('holdout_psnr')})"
        _row(
            label,
            {n: model.apply(p.before) for n, p in test.items()},
            test,
            f"fit {took:.1f} s{steps}",
        )
        return model

    fit_and_score("global LUT fit (app.ml.dlut, 4 pairs)", dlut.fit, {}, GLOBAL_BUDGET_S)
    opts: dict[str, Any] = {"init_weights": str(published_dir)}
    opts.update(options or {})
    forced = {**opts, "select": "fine_tuned"}
    fit_and_score("  fine-tuned candidate alone (select=fine_tuned)", fit, forced, fit_budget_s)
    model = fit_and_score("adaptive 3D LUT fit (4 pairs, published init)", fit, opts, fit_budget_s)
    baked = model.bake(33)
    _row(
        "  same, baked with mean weights (export LUT)",
        {n: np.clip(baked.apply(p.before), 0, 1) for n, p in test.items()},
        test,
    )
    _row(
        "  same, on its 4 training photos",
        {n: model.apply(pairs[n].before) for n in TRAIN},
        {n: pairs[n] for n in TRAIN},
    )
    # what the service runs: learn_style (photo_gains, its choice between published /
    # fine-tuned / global on held-out photos, strength, local-gain guard) with the same budget
    from app.ml import learn_style

    start = time.monotonic()
    learned = learn_style(
        "adaptive_3dlut",
        [(p.before, p.after) for p in train],
        init_weights=published_dir,
        time_budget_s=fit_budget_s,
        device=str(device),
    )
    took = time.monotonic() - start
    kept = learned.metrics.get("selection", {}).get("chosen", learned.model.info.get("choice"))
    _row(
        "learn_style (the service's path)",
        {n: learned.model.apply(p.before) for n, p in test.items()},
        test,
        f"learn {took:.1f} s, kept {kept}, strength {learned.metrics.get('strength')}",
    )
    if JITTER_BUDGET_S > 0:
        jitter = {**opts, "jitter": 0.2}
        fit_and_score("  with upstream's input jitter 0.2", fit, jitter, JITTER_BUDGET_S)
    print(f"fit budget {fit_budget_s:.0f} s (jitter row {JITTER_BUDGET_S:.0f} s), options {opts}")
    print(f"total benchmark time {time.monotonic() - t0:.1f} s")
