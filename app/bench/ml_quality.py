"""How well ``dlut`` learns real looks from 3 before/after pairs, scored on photos it never saw.

Ground truth: every real look in ``luts/*.cube`` applied to the photos with an exact float64
trilinear lookup written here (rounded to 8 bits, as an editor would export).
Learning: :func:`app.ml.learn_style` (model ``dlut``, default options) on 3 pairs made from the
three large photos downscaled to a 1200 px long side (``TRAIN``). Scoring: PSNR and CIEDE2000
(mean, 95th percentile), averaged over the 5 other photos (``TEST``; the two other exposures of
the UNIS bracket are left out because they show the same scene as a training photo).
Rows: identity (no change), ``dlut``, and for comparison an unpaired ``transfer`` learned from the
three "after" images alone. ``unseen`` is the share of a test photo's pixels whose 33^3 lattice
cell holds no training pixel: DESIGN.md found those colors dominate the error.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from app.bench import exact_trilinear_u8, shared_data_dir

TRAIN = ["tahoe-gps.jpg", "UNIS_EV0.jpg", "ultrahdr_sky.jpg"]
TEST = [
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "StLouisArchMultExpEV+1.51.JPG",
    "StLouisArchMultExpEV-1.82.JPG",
]
LONG_SIDE = 1200


def _load(path: Path, long_side: int | None = None) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as raw:
        im = ImageOps.exif_transpose(raw).convert("RGB")
    if long_side and max(im.size) > long_side:
        scale = long_side / max(im.size)
        size = (round(im.width * scale), round(im.height * scale))
        im = im.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(im)


def _cells(img: np.ndarray, n: int = 33) -> np.ndarray:
    idx = np.minimum((img.reshape(-1, 3).astype(np.int64) * (n - 1)) // 255, n - 2)
    return (idx[:, 0] * n + idx[:, 1]) * n + idx[:, 2]


def _score(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    from app.ml.metrics import delta_e2000, psnr

    de = delta_e2000(pred, truth)
    return psnr(pred, truth), de["mean"], de["p95"]


def run() -> None:
    data = shared_data_dir()
    photos, luts = data / "photos", data / "luts"
    missing = [p for p in [*TRAIN, *TEST] if not (photos / p).is_file()]
    if not luts.is_dir() or missing:
        print(f"skipped: shared data not found under {data} ({', '.join(missing) or 'luts/'})")
        return
    from app.ml import learn_style
    from app.ml.cube_export import read_cube_file

    train = [_load(photos / p, LONG_SIDE) for p in TRAIN]
    test = [_load(photos / p) for p in TEST]
    print(
        "train (3 pairs): "
        + ", ".join(f"{p} {t.shape[1]}x{t.shape[0]}" for p, t in zip(TRAIN, train, strict=True))
    )
    seen = np.zeros(33**3, bool)
    for img in train:
        seen[_cells(img)] = True
    print("test photos (share of pixels in color cells absent from training):")
    for p, img in zip(TEST, test, strict=True):
        unseen = 1.0 - seen[_cells(img)].mean()
        print(f"  {p:<32} {img.shape[1]}x{img.shape[0]}  unseen {unseen:5.1%}")

    header = (
        f"\n{'look':<26} {'identity PSNR/dE/p95':>22} {'dlut PSNR/dE/p95':>22} {'fit s':>6} "
        f"{'held-out dE':>11} {'transfer dE':>11}"
    )
    print(header)
    totals: dict[str, list[tuple[float, float, float]]] = {
        "identity": [],
        "dlut": [],
        "transfer": [],
    }
    fit_times: list[float] = []
    per_photo = np.zeros(len(TEST))
    cube_paths = sorted(luts.glob("*.cube"))
    for cube in cube_paths:
        lut = read_cube_file(cube)
        pairs = [(img, exact_trilinear_u8(lut, img)) for img in train]
        truths = [exact_trilinear_u8(lut, img) for img in test]
        start = time.perf_counter()
        result = learn_style("dlut", pairs, time_budget_s=60)
        fit_s = time.perf_counter() - start
        fit_times.append(fit_s)
        transfer = learn_style("dlut", references=[after for _, after in pairs], time_budget_s=60)
        rows = {}
        for name, model in (
            ("identity", None),
            ("dlut", result.model),
            ("transfer", transfer.model),
        ):
            scores = []
            for k, (img, truth) in enumerate(zip(test, truths, strict=True)):
                pred = img if model is None else model.apply(img)
                scores.append(_score(pred, truth))
                if name == "dlut":
                    per_photo[k] += scores[-1][1] / len(cube_paths)
            mean = tuple(float(v) for v in np.mean(scores, axis=0))
            totals[name].append(mean)  # type: ignore[arg-type]
            rows[name] = mean
        ident, dl, tr = rows["identity"], rows["dlut"], rows["transfer"]
        print(
            f"{cube.stem:<26} {ident[0]:6.2f}/{ident[1]:5.2f}/{ident[2]:5.2f}      "
            f"{dl[0]:6.2f}/{dl[1]:5.2f}/{dl[2]:5.2f}      {fit_s:6.1f} "
            f"{result.metrics['delta_e2000_mean']:11.3f} {tr[1]:11.2f}"
        )
    print("-" * len(header.strip()))
    for name in ("identity", "dlut", "transfer"):
        arr = np.array(totals[name])
        print(
            f"mean over {len(arr)} looks, {name:<9} PSNR {arr[:, 0].mean():6.2f} dB  "
            f"dE00 mean {arr[:, 1].mean():5.2f}  p95 {arr[:, 2].mean():5.2f}"
        )
    median_s, max_s = float(np.median(fit_times)), max(fit_times)
    print(f"dlut fit time (learn_style, 3 pairs): median {median_s:.1f} s, max {max_s:.1f} s")
    print("dlut mean dE00 per test photo (averaged over looks):")
    for p, v in zip(TEST, per_photo, strict=True):
        print(f"  {p:<32} {v:5.2f}")
