"""How well ``dlut`` learns real looks from 3 before/after pairs, scored on photos it never saw.

Ground truth: every real look in ``luts/*.cube`` applied to the photos with an exact float64
trilinear lookup written here (rounded to 8 bits, as an editor would export).
Learning: :func:`app.ml.learn_style` (model ``dlut``, default options) on 3 pairs made from the
three large photos downscaled to a 1200 px long side (``TRAIN``). Scoring: PSNR and CIEDE2000
(mean, 95th percentile), averaged over the 5 other photos (``TEST``; the two other exposures of
the UNIS bracket are left out because they show the same scene as a training photo).
Rows: identity (no change), ``dlut``, and for comparison an unpaired ``transfer`` learned from the
three "after" images alone. The one-pair row: ``dlut`` learned from ONE pair (``ONE_PAIR``, the
first training photo) and scored on the same test photos (``metrics["holdout"]`` is null then:
no photo is left to hold out); below the table the same for each training photo alone, since
one photo's colors decide what one pair can teach. ``unseen`` is the share of a test photo's
pixels whose 33^3 lattice cell holds no training pixel: DESIGN.md found those colors dominate the
error. The ``seen / unseen`` lines split a learned style's ΔE00 the way the service tells a photo's
colors apart when it applies a style (:mod:`app.ml.coverage`: 17^3 cells touched by the style's own
training photos vs the rest).
"""

from __future__ import annotations

import time

import numpy as np

from bench import exact_trilinear_u8, load_photo, shared_data_dir

TRAIN = ["tahoe-gps.jpg", "UNIS_EV0.jpg", "ultrahdr_sky.jpg"]
ONE_PAIR = 0  # index into TRAIN of the one-pair row's photo
TEST = [
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "StLouisArchMultExpEV+1.51.JPG",
    "StLouisArchMultExpEV-1.82.JPG",
]
LONG_SIDE = 1200


def _cells(img: np.ndarray, n: int = 33) -> np.ndarray:
    idx = np.minimum((img.reshape(-1, 3).astype(np.int64) * (n - 1)) // 255, n - 2)
    return (idx[:, 0] * n + idx[:, 1]) * n + idx[:, 2]


class _Split:
    """ΔE00 of a style's test pixels, pooled separately over colors its training photos showed
    and over the rest, as the service tells them apart (:class:`app.ml.coverage.ColorCoverage`,
    the record a learned style keeps and apply reports from)."""

    def __init__(self, train: list[np.ndarray]) -> None:
        from app.ml.coverage import ColorCoverage

        self.coverage = ColorCoverage.from_images(train)
        self.sums = np.zeros(2)
        self.counts = np.zeros(2)

    def add(self, de_map: np.ndarray, img: np.ndarray) -> None:
        from app.ml.coverage import color_cells

        hit = self.coverage.seen[color_cells(img, self.coverage.grid, max_pixels=img.size)]
        de = de_map.reshape(-1)
        for k, sel in enumerate((hit, ~hit)):
            self.sums[k] += float(de[sel].sum())
            self.counts[k] += int(sel.sum())

    def text(self) -> str:
        means = self.sums / np.maximum(self.counts, 1)
        share = self.counts[1] / max(self.counts.sum(), 1)
        return f"seen {means[0]:5.2f} / unseen {means[1]:5.2f} (unseen {share:4.0%} of pixels)"


def _reported_de(metrics: dict[str, object]) -> str:
    """The learner's own ΔE00 mean: ``metrics["holdout"]`` (whole photos held out) when present,
    else the held-out pixels of the training photos (marked ``px``)."""
    holdout = metrics.get("holdout")
    if isinstance(holdout, dict) and holdout.get("delta_e2000_mean") is not None:
        return f"{float(holdout['delta_e2000_mean']):.3f}"
    value = metrics.get("delta_e2000_mean")
    return f"{float(value):.3f}px" if isinstance(value, int | float) else "-"


def _score(
    img: np.ndarray, pred: np.ndarray, truth: np.ndarray, split: _Split | None = None
) -> tuple[float, float, float]:
    """PSNR, ΔE00 mean and p95 of ``pred`` (the style applied to ``img``) against ``truth``;
    with ``split``, its ΔE00 map is pooled there by whether ``img``'s colors were seen."""
    from app.ml.metrics import delta_e2000_map, psnr

    de = delta_e2000_map(pred, truth)
    if split is not None:
        split.add(de, img)
    return psnr(pred, truth), float(de.mean()), float(np.percentile(de, 95))


def run() -> None:
    data = shared_data_dir()
    photos, luts = data / "photos", data / "luts"
    missing = [p for p in [*TRAIN, *TEST] if not (photos / p).is_file()]
    if not luts.is_dir() or missing:
        print(f"skipped: shared data not found under {data} ({', '.join(missing) or 'luts/'})")
        return
    from app.ml import learn_style
    from app.ml.cube_export import read_cube_file

    train = [load_photo(photos / p, LONG_SIDE) for p in TRAIN]
    test = [load_photo(photos / p) for p in TEST]
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
        f"{'held-out dE':>11} {'transfer dE':>11} {'1-pair dE/p95':>13} {'1-pair s':>8}"
    )
    print(header)
    # one pair from each training photo alone ("1 pair K"); the table's is ONE_PAIR's
    singles = [f"1 pair {k}" for k in range(len(TRAIN))]
    one_pair = singles[ONE_PAIR]
    totals: dict[str, list[tuple[float, float, float]]] = {
        name: [] for name in ("identity", "dlut", "transfer", *singles)
    }
    splits = {"dlut": _Split(train)}
    splits.update((name, _Split([img])) for name, img in zip(singles, train, strict=True))
    fit_times: list[float] = []
    one_times: list[float] = []
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
        models = {"identity": None, "dlut": result.model, "transfer": transfer.model}
        for k, name in enumerate(singles):
            start = time.perf_counter()
            models[name] = learn_style("dlut", [pairs[k]], time_budget_s=60).model
            if name == one_pair:
                one_times.append(time.perf_counter() - start)
        rows = {}
        for name, model in models.items():
            scores = []
            for k, (img, truth) in enumerate(zip(test, truths, strict=True)):
                pred = img if model is None else model.apply(img)
                scores.append(_score(img, pred, truth, splits.get(name)))
                if name == "dlut":
                    per_photo[k] += scores[-1][1] / len(cube_paths)
            mean = tuple(float(v) for v in np.mean(scores, axis=0))
            totals[name].append(mean)  # type: ignore[arg-type]
            rows[name] = mean
        ident, dl, tr, op = rows["identity"], rows["dlut"], rows["transfer"], rows[one_pair]
        print(
            f"{cube.stem:<26} {ident[0]:6.2f}/{ident[1]:5.2f}/{ident[2]:5.2f}      "
            f"{dl[0]:6.2f}/{dl[1]:5.2f}/{dl[2]:5.2f}      {fit_s:6.1f} "
            f"{_reported_de(result.metrics):>11} {tr[1]:11.2f} "
            f"{op[1]:6.2f}/{op[2]:6.2f} {one_times[-1]:8.1f}",
            flush=True,
        )
    print("-" * len(header.strip()))
    for name, label in (
        ("identity", "identity"),
        ("dlut", "dlut"),
        ("transfer", "transfer"),
        (one_pair, "dlut, 1 pair"),
    ):
        arr = np.array(totals[name])
        print(
            f"mean over {len(arr)} looks, {label:<12} PSNR {arr[:, 0].mean():6.2f} dB  "
            f"dE00 mean {arr[:, 1].mean():5.2f}  p95 {arr[:, 2].mean():5.2f}"
        )
    median_s, max_s = float(np.median(fit_times)), max(fit_times)
    print(f"dlut fit time (learn_style, 3 pairs): median {median_s:.1f} s, max {max_s:.1f} s")
    print(
        f"dlut fit time (learn_style, 1 pair, {TRAIN[ONE_PAIR]}): median "
        f"{float(np.median(one_times)):.1f} s, max {max(one_times):.1f} s"
    )
    print("dlut mean dE00 per test photo (averaged over looks):")
    for p, v in zip(TEST, per_photo, strict=True):
        print(f"  {p:<32} {v:5.2f}")
    print(
        "\ndE00 mean on the test photos' colors its training photos showed (app.ml.coverage: "
        "their 17^3 cell holds a training pixel) / on the rest, pooled over looks and photos:"
    )
    print(f"  {'dlut, 3 pairs':<32} {splits['dlut'].text()}")
    print("one pair from each training photo alone (mean over looks of dE00 mean / p95):")
    for photo, name in zip(TRAIN, singles, strict=True):
        arr = np.array(totals[name])
        print(
            f"  {photo:<32} {arr[:, 1].mean():5.2f} / {arr[:, 2].mean():5.2f}   "
            f"{splits[name].text()}"
        )
