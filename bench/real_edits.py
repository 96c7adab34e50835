"""Real-like edits: a style learned from 4 retoucher-like pairs, scored on 6 other photos.

LUT-made pairs (``ml_quality``) have a perfect global answer; a retoucher's pairs do not: every
photo also gets its own exposure, white balance and local work. This benchmark makes such pairs
from the 10 shared photos (long side reduced to ``SIDE`` px) and measures what a user would see.

The retoucher's edit of one photo (:func:`make_after`, parameters from :func:`edit_plan`, seeded):

1. exposure: a uniform ``2^ev`` gain in linear light, ``ev ~ U(-1, 1)``;
2. white balance: a CAT02 von Kries adaptation (colour-science) from the white of a CIE daylight
   at ``6504 + dk`` K to the one at 6504 K, ``dk ~ U(-600, 600)`` (positive = warmer), applied to
   linear sRGB; values are clipped to [0, 1] as a raw converter would;
3. the shared look: one real LUT from ``luts/`` by exact float64 trilinear lookup
   (:func:`bench.exact_trilinear_u8`);
4. on 3 of the 10 photos a graduated sky filter (the top of the frame blended, in linear light,
   toward a darker, bluer tone) and on 3 others a vignette (a radial darkening);
5. JPEG re-encoding at quality 90 (Pillow).

Split: learn from ``TRAIN`` (4 pairs); score on the 6 others (``TEST``). Two test photos share a
scene with a training photo (the UNIS and St Louis brackets), as photos of one shoot would. The
truth for a test photo is that photo's own edit: the shared look plus its own random per-photo
changes. No global style can predict those changes, so two reference rows frame the models:
``identity`` (doing nothing) and ``oracle`` (the shared look alone, exactly: the best any global
look can hope for without knowing the per-photo changes).

Columns per model: PSNR (mean, worst test photo), gain over doing nothing per test photo (min,
mean, dB), CIEDE2000 mean / p95 (pooled over the test photos, 100k pixels each), local gain p99.9
(:func:`local_gain`, the max over test photos), the share of baked 33^3 table values outside
[0, 1], the PSNR between tetrahedral and trilinear application of that table on the test photos
(the worst photo; colour-science's ``table_interpolation_*``, axis order checked once against
:func:`bench.exact_trilinear_u8`), ``ho/act``: the ΔE00 mean the learner reported for
unseen photos (``metrics["holdout"]``; where absent, the held-out pixels of its training photos,
marked ``*``) divided by the actual ΔE00 mean on the test photos (below 1 = optimistic; the
``split`` line under the oracle row says what an unbiased estimate reads on this split: the
exact look's own ΔE00 on the training photos over the test photos, 1.21-1.26 with the default
seed, because the training photos' own edits happen to differ more), and the wall time
of :func:`app.ml.learn_style` with its defaults (the service's time budget, published weights
for the adaptive model, as the worker passes them).
Then the local gain p99.9 of each learned style on every shared photo, including ones no example
shows. Models: ``dlut``, ``nilut``, ``adaptive_3dlut``, ``transfer`` (references = the 4 "after"
images), and ``auto`` when :func:`learn_style` knows it. Benchmarks measure; they never assert.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from app.ml.lut import LUT3D
from bench import exact_trilinear_u8, load_photo, shared_data_dir

SIDE = 1024
SEED = 2026
LOOKS = ("golden_years_film.cube", "teal_and_orange_cinema.cube")
TRAIN = ("tahoe-gps.jpg", "UNIS_EV0.jpg", "astronaut.png", "StLouisArchMultExpEV+1.51.JPG")
EV_RANGE = 1.0
KELVIN_RANGE = 600.0
JPEG_QUALITY = 90
REFERENCE_CCT = 6504.0
SCORE_PIXELS = 100_000
SKY_TONE = np.array([0.55, 0.65, 0.95])  # linear-light gain the sky filter blends toward


# ---------------------------------------------------------------------------------------------
# the retoucher's edit
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditParams:
    """One photo's own changes: exposure (EV), white balance shift (K), local filter."""

    ev: float
    kelvin: float
    local: str  # "none", "grad" (graduated sky filter) or "vignette"
    strength: float  # of the local filter, 0..1
    extent: float  # grad: share of the frame height it reaches; vignette: inner radius

    def describe(self) -> str:
        local = "" if self.local == "none" else f", {self.local} {self.strength:.2f}"
        return f"{self.ev:+.2f} EV, {self.kelvin:+4.0f} K{local}"


def edit_plan(names: Sequence[str], seed: int = SEED) -> dict[str, EditParams]:
    """Seeded per-photo parameters: 3 photos get a graduated filter, 3 a vignette (fewer when
    there are fewer photos: 30 % each), the rest none; the same ``names`` and ``seed`` always
    give the same plan."""
    rng = np.random.default_rng(seed)
    order = sorted(names)
    n_local = max(1, round(0.3 * len(order))) if len(order) >= 2 else 0
    perm = rng.permutation(len(order))
    local = ["none"] * len(order)
    for k in perm[:n_local]:
        local[k] = "grad"
    for k in perm[n_local : 2 * n_local]:
        local[k] = "vignette"
    plan = {}
    for name, kind in zip(order, local, strict=True):
        ev, dk = rng.uniform(-EV_RANGE, EV_RANGE), rng.uniform(-KELVIN_RANGE, KELVIN_RANGE)
        strength = rng.uniform(0.35, 0.6) if kind == "grad" else rng.uniform(0.25, 0.45)
        extent = rng.uniform(0.35, 0.6) if kind == "grad" else rng.uniform(0.2, 0.45)
        if kind == "none":
            strength = extent = 0.0
        plan[name] = EditParams(float(ev), float(dk), kind, float(strength), float(extent))
    return plan


def _decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0.04045) + 0.055) / 1.055) ** 2.4)


def _encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    high = 1.055 * np.maximum(v, 0.0031308) ** (1 / 2.4) - 0.055
    return np.where(v <= 0.0031308, v * 12.92, high)


def _to_u8(v: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(v * 255.0 + 0.5), 0, 255).astype(np.uint8)


@cache
def white_balance_matrix(kelvin: float) -> np.ndarray:
    """3x3 matrix on linear sRGB: CAT02 adaptation from the CIE daylight white at
    ``6504 + kelvin`` K to the one at 6504 K (colour-science); positive ``kelvin`` warms."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
        from colour.adaptation import matrix_chromatic_adaptation_VonKries

    def white(cct: float) -> np.ndarray:
        xy = colour.CCT_to_xy(cct, method="CIE Illuminant D Series")
        return np.asarray(colour.xy_to_XYZ(xy), np.float64)

    cat = matrix_chromatic_adaptation_VonKries(
        white(REFERENCE_CCT + kelvin), white(REFERENCE_CCT), transform="CAT02"
    )
    to_xyz = np.asarray(colour.RGB_COLOURSPACES["sRGB"].matrix_RGB_to_XYZ, np.float64)
    return np.asarray(np.linalg.inv(to_xyz) @ cat @ to_xyz, np.float64)


def _local_mask(shape: tuple[int, int], p: EditParams) -> np.ndarray:
    """HxW blend weight (0..1) of the local filter."""
    h, w = shape
    if p.local == "grad":
        y = (np.arange(h) + 0.5) / h
        t = np.clip(1.0 - y / p.extent, 0.0, 1.0)
        ramp = t * t * (3 - 2 * t)  # smoothstep: strongest at the top, gone below ``extent``
        return np.repeat((p.strength * ramp)[:, None], w, axis=1)
    if p.local == "vignette":
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5) / math.hypot(0.5, 0.5)
        t = np.clip((r - p.extent) / (1.0 - p.extent), 0.0, 1.0)
        return np.asarray(p.strength * t * t * (3 - 2 * t))
    return np.zeros((h, w))


def jpeg_roundtrip(img: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode and decode ``img`` (uint8 HxWx3) as a JPEG with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def make_after(before: np.ndarray, look: LUT3D, p: EditParams) -> np.ndarray:
    """The retoucher's version of ``before`` (uint8 HxWx3): exposure and white balance in linear
    light, the shared ``look``, the local filter, JPEG re-encoding (see the module doc)."""
    lin = _decode(before.astype(np.float64) / 255.0) * 2.0**p.ev
    lin = lin @ white_balance_matrix(round(p.kelvin, 6)).T
    graded = exact_trilinear_u8(look, _to_u8(_encode(lin)))
    if p.local != "none":
        alpha = _local_mask(before.shape[:2], p)[..., None]
        gain = 1.0 - alpha if p.local == "vignette" else 1.0 - alpha + alpha * SKY_TONE
        graded = _to_u8(_encode(_decode(graded.astype(np.float64) / 255.0) * gain))
    return jpeg_roundtrip(graded)


# ---------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------
def _local_gain_fallback(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Issue 10's local gain, used only while ``app.ml.metrics`` has none: over horizontally and
    vertically neighbouring pixels whose input colors differ by >= 0.5 ΔE76 (CIELAB, D65), the
    ratio of output to input color difference; its 99th and 99.9th percentiles."""
    from app.ml.metrics import srgb_to_lab

    lab_in, lab_out = srgb_to_lab(before), srgb_to_lab(after)
    ratios = []
    for axis in (0, 1):
        d_in = np.linalg.norm(np.diff(lab_in, axis=axis), axis=-1)
        d_out = np.linalg.norm(np.diff(lab_out, axis=axis), axis=-1)
        keep = d_in >= 0.5
        ratios.append(d_out[keep] / d_in[keep])
    r = np.concatenate(ratios)
    if r.size == 0:
        return {"p99": 0.0, "p999": 0.0, "n_edges": 0}
    return {
        "p99": float(np.percentile(r, 99)),
        "p999": float(np.percentile(r, 99.9)),
        "n_edges": int(r.size),
    }


def local_gain(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """:func:`app.ml.metrics.local_gain` when it exists, else :func:`_local_gain_fallback`."""
    from app.ml import metrics

    fn = getattr(metrics, "local_gain", None)
    return dict(fn(before, after)) if fn is not None else _local_gain_fallback(before, after)


def _colour_tables() -> tuple[Any, Any]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from colour.algebra import table_interpolation_tetrahedral, table_interpolation_trilinear
    return table_interpolation_trilinear, table_interpolation_tetrahedral


def _sample(img: np.ndarray, limit: int = SCORE_PIXELS) -> np.ndarray:
    flat = img.reshape(-1, 3)
    if flat.shape[0] <= limit:
        return flat
    return flat[np.linspace(0, flat.shape[0] - 1, limit).astype(np.int64)]


def check_axis_order(lut: LUT3D, img: np.ndarray) -> float:
    """Largest difference (8-bit levels) between colour-science's trilinear lookup of
    ``lut.table`` and :func:`exact_trilinear_u8`: ~0.5 when both read the axes the same way."""
    tri, _ = _colour_tables()
    px = _sample(img, 20_000)[None]
    ours = exact_trilinear_u8(lut, px).astype(np.float64)
    theirs = np.clip(np.asarray(tri(px / 255.0, lut.table.astype(np.float64))), 0, 1) * 255
    return float(np.abs(ours - theirs).max())


def tetra_vs_trilinear_db(lut: LUT3D, img: np.ndarray) -> float:
    """PSNR between tetrahedral and trilinear application of ``lut`` (domain [0, 1]) to a
    subsample of ``img``'s pixels, both rounded to 8 bits as a rendered image would be."""
    from app.ml.metrics import psnr

    tri, tet = _colour_tables()
    x = _sample(img) / 255.0
    table = lut.table.astype(np.float64)
    a = _to_u8(np.clip(np.asarray(tri(x, table)), 0, 1))
    b = _to_u8(np.clip(np.asarray(tet(x, table)), 0, 1))
    value = psnr(a, b)
    return value if math.isfinite(value) else 99.0


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _short(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    for long, brief in (("StLouisArchMultExpEV", "StL"), ("UNIS_EV", "UNIS"), ("ultrahdr_", "")):
        stem = stem.replace(long, brief)
    return stem.split("-gps")[0][:9]


def _models() -> list[str]:
    from app.ml import LearnInputError, learn_style

    names = ["dlut", "nilut", "adaptive_3dlut", "transfer"]
    try:  # no images: a learner that knows "auto" complains about the images, not the name
        learn_style("auto")
    except LearnInputError as exc:
        if "unknown model" not in str(exc):
            names.append("auto")
    return names


def _learn(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], data: Path) -> Any:
    from app.ml import learn_style

    weights = data / "models" / "adaptive_3dlut"
    init = str(weights) if name in ("adaptive_3dlut", "auto") and weights.is_dir() else None
    if name == "transfer":
        return learn_style("dlut", references=[after for _, after in pairs])
    return learn_style(name, pairs, init_weights=init)


def _holdout_de(metrics: dict[str, Any]) -> tuple[float | None, str]:
    ho = metrics.get("holdout")
    if isinstance(ho, dict) and ho.get("delta_e2000_mean") is not None:
        return float(ho["delta_e2000_mean"]), ""
    if "holdout" in metrics:  # present but null (one pair) or without a ΔE
        return None, ""
    if metrics.get("delta_e2000_mean") is not None:
        return float(metrics["delta_e2000_mean"]), "*"
    return None, ""


@dataclass
class Row:
    psnr: list[float]
    gain: list[float]
    de_mean: float
    de_p95: float
    lg: float
    out_pct: float | None = None
    tet_db: float | None = None
    ho_ratio: str = "-"
    learn_s: float | None = None


def _score(
    preds: dict[str, np.ndarray],
    befores: dict[str, np.ndarray],
    truths: dict[str, np.ndarray],
) -> Row:
    from app.ml.metrics import delta_e2000_map, psnr

    ps, gains, des, lgs = [], [], [], []
    for name, pred in preds.items():
        p = psnr(pred, truths[name])
        ps.append(p)
        gains.append(p - psnr(befores[name], truths[name]))
        des.append(delta_e2000_map(_sample(pred), _sample(truths[name])))
        lgs.append(local_gain(befores[name], pred)["p999"])
    de = np.concatenate(des)
    return Row(ps, gains, float(de.mean()), float(np.percentile(de, 95)), float(max(lgs)))


def _fmt(v: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"


def _print_row(label: str, r: Row) -> None:
    print(
        f"{label:<15} {np.mean(r.psnr):6.2f} {min(r.psnr):6.2f} {min(r.gain):+6.2f} "
        f"{np.mean(r.gain):+6.2f} {r.de_mean:6.2f} {r.de_p95:6.2f} {r.lg:6.2f} "
        f"{_fmt(r.out_pct, '.1f', 6)} {_fmt(r.tet_db, '.1f', 6)} {r.ho_ratio:>7} "
        f"{_fmt(r.learn_s, '.1f', 7)}",
        flush=True,
    )


def _print_candidates(auto: dict[str, Any]) -> None:
    """One line per candidate ``auto`` tried: its holdout ΔE00 mean (its own evidence) and time."""
    for name, c in (auto.get("candidates") or {}).items():
        if not isinstance(c, dict):
            continue
        if "error" in c:
            print(f"  candidate {name}: failed ({c['error'][:80]})")
            continue
        de, sec = c.get("delta_e2000_mean"), c.get("seconds")
        de_s = f"{de:.2f}" if isinstance(de, int | float) else "-"
        sec_s = f"{sec:.1f} s" if isinstance(sec, int | float) else "-"
        print(f"  candidate {name:<15} holdout dE00 {de_s:>6}  {sec_s}")


def run(
    looks: Sequence[str] = LOOKS,
    seed: int = SEED,
    side: int = SIDE,
    models: Sequence[str] | None = None,
) -> None:
    data = shared_data_dir()
    photo_dir = data / "photos"
    if not photo_dir.is_dir() or not (data / "luts").is_dir():
        print(f"skipped: shared data folder {data} (photos/, luts/) is absent")
        return
    from app.ml.cube_export import read_cube_file
    from app.ml.metrics import delta_e2000_map

    t_start = time.monotonic()
    names = sorted(p.name for p in photo_dir.iterdir() if p.is_file())
    photos = {n: load_photo(photo_dir / n, side) for n in names}
    test = [n for n in names if n not in TRAIN]
    plan = edit_plan(names, seed)
    models = list(models) if models is not None else _models()
    print(f"photos at <= {side} px long side; seed {seed}; train {len(TRAIN)}, test {len(test)}")
    for n in names:
        role = "train" if n in TRAIN else "test "
        h, w = photos[n].shape[:2]
        print(f"  {role} {n:<31} {w}x{h}  {plan[n].describe()}")
    if "auto" not in models:
        print("note: learn_style does not accept model 'auto' yet; its row is left out")

    first = read_cube_file(data / "luts" / looks[0])
    print(
        "axis check, colour-science trilinear vs exact trilinear: max "
        f"{check_axis_order(first, photos[test[0]]):.2f} levels (same axis order when < 1)"
    )
    header = (
        f"{'row':<15} {'PSNR':>6} {'worst':>6} {'gain':>6} {'gain':>6} {'dE00':>6} {'p95':>6} "
        f"{'LG99.9':>6} {'out%':>6} {'tet/tr':>6} {'ho/act':>7} {'learn s':>7}\n"
        f"{'':<15} {'mean':>6} {'photo':>6} {'min':>6} {'mean':>6} {'mean':>6} {'':>6} "
        f"{'max':>6} {'table':>6} {'dB min':>6} {'':>7} {'':>7}"
    )
    for look_name in looks:
        look = read_cube_file(data / "luts" / look_name)
        afters = {n: make_after(photos[n], look, plan[n]) for n in names}
        befores = {n: photos[n] for n in test}
        truths = {n: afters[n] for n in test}
        pairs = [(photos[n], afters[n]) for n in TRAIN]
        print(f"\nlook {look_name}: learn from {len(pairs)} pairs, score on {len(test)} photos")
        print(header)
        _print_row("identity", _score(befores, befores, truths))
        oracle = {n: exact_trilinear_u8(look, photos[n]) for n in test}
        oracle_row = _score(oracle, befores, truths)
        _print_row("oracle (look)", oracle_row)
        on_train = np.concatenate(
            [
                delta_e2000_map(_sample(exact_trilinear_u8(look, photos[n])), _sample(afters[n]))
                for n in TRAIN
            ]
        )
        print(
            f"  split: the exact look's ΔE00 mean on the training photos / on the test photos = "
            f"{float(on_train.mean()) / oracle_row.de_mean:.2f} (what an unbiased holdout's "
            "ho/act would read here: the training photos' own edits differ more)"
        )
        styles: dict[str, Any] = {}
        for model in models:
            start = time.monotonic()
            try:
                result = _learn(model, pairs, data)
            except Exception as exc:  # a benchmark reports a failing model and goes on
                print(f"{model:<15} failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            took = time.monotonic() - start
            styles[model] = result.model
            preds = {n: result.model.apply(photos[n]) for n in test}
            row = _score(preds, befores, truths)
            table = result.lut.table
            row.out_pct = 100.0 * float(np.mean((table < -1e-6) | (table > 1 + 1e-6)))
            row.tet_db = min(tetra_vs_trilinear_db(result.lut, photos[n]) for n in test)
            ho, mark = _holdout_de(result.metrics)
            if ho is not None and row.de_mean > 0:
                row.ho_ratio = f"{ho / row.de_mean:.2f}{mark}"
            row.learn_s = took
            label = model
            auto = result.metrics.get("auto")
            if model == "auto" and isinstance(auto, dict) and auto.get("chosen"):
                label = f"auto>{auto['chosen']}"[:15]
            _print_row(label, row)
            if model == "auto" and isinstance(auto, dict):
                _print_candidates(auto)

        short = [_short(n) for n in names]
        print(f"\nlocal gain p99.9 of each style on every shared photo ({look_name}; * = train)")
        print(f"{'style':<15} " + " ".join(f"{s:>9}" for s in short) + f" {'max':>6}")
        marks = " ".join(f"{'*' if n in TRAIN else '':>9}" for n in names)
        print(f"{'':<15} {marks}")
        for model, style in styles.items():
            values = [local_gain(photos[n], style.apply(photos[n]))["p999"] for n in names]
            cells = " ".join(f"{v:9.2f}" for v in values)
            print(f"{model:<15} {cells} {max(values):6.2f}", flush=True)
        looks_lg = [
            local_gain(photos[n], exact_trilinear_u8(look, photos[n]))["p999"] for n in names
        ]
        cells = " ".join(f"{v:9.2f}" for v in looks_lg)
        print(f"{'the look itself':<15} {cells} {max(looks_lg):6.2f}", flush=True)
    print(
        "\nho/act: the learner's own ΔE00 estimate for unseen photos / actual ΔE00 on the test "
        "photos (* = metrics['holdout'] absent: held-out pixels of training photos used)."
    )
    print(f"total {time.monotonic() - t_start:.0f} s")
