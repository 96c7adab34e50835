"""Per-photo exposure and white balance, factored out of inconsistent edits before a look is fit.

A retoucher's edits share a look, but each photo also gets its own exposure and white balance.
A table or network fitted to the pairs as they are cannot tell the two apart: where a color
appears only in a photo that was brightened by +0.8 EV, the fit learns "brighten this color",
and a new photo with that color is brightened for no reason (measured on ``bench.real_edits``,
``golden_years_film``: a ``dlut`` fit was 2.07 dB below doing nothing on ``coffee.png``).

:func:`estimate_photo_gains` models each pair as ``after = look(gain_i * before)``, with
``gain_i`` three per-channel multipliers in linear light (an exposure within +-2 EV and a von
Kries-like white balance, red and blue against green within +-0.5 stop) and ``look`` a very
coarse, smooth table (5^3, :func:`app.ml.dlut.fit_lut`) that can carry a global look but not a
per-photo one. It alternates: fit the coarse look on the corrected photos, then each photo's
gains (Powell) on that look; three rounds.
The gains are centered (their mean log over the photos is zero), so the average exposure and
color of the edits stays in the look the user gets. :func:`normalize_pairs` then applies them to
the "before" images; the model learns the shared look from the corrected pairs, and a new photo is
graded as it is (nobody knows its own correction).

Measured with ``python -m bench real_edits`` (4 pairs at 1024 px, 6 test photos; gain in dB over
doing nothing, worst photo / mean; 2026-12-02, nothing else on the 2 cores; "before" is the
same code without it: ``learn_style`` for golden ``dlut`` and both ``nilut`` rows, a direct
:func:`app.ml.dlut.fit` for teal ``dlut``, the previous quiet benchmark run for ``auto``):

* golden_years_film: ``dlut`` -2.16 / +1.55 -> **+0.45 / +3.18**; ``nilut`` -2.02 / +2.17 ->
  +0.24 / +3.42; ``auto`` (chose ``dlut``) -1.80 / +1.89 -> +0.45 / +3.18. The exact shared look
  itself scores +0.82 / +5.41.
* teal_and_orange_cinema: ``dlut`` -1.82 / +3.94 -> -4.11 / +4.30; ``nilut`` -5.04 / +3.90 ->
  -4.30 / +4.32; ``auto`` -1.78 / +3.93 -> -4.11 / +4.30. The exact shared look itself scores
  -3.70 on the worst photo, whose own edit added +0.93 EV: the closer a style comes to the shared
  look, the more it shares that loss (:func:`app.ml.learn.best_strength` keeps the full look
  because the held-out photos, pooled, gain from it).
* Other draws of the per-photo edits (``edit_plan`` seeds 1 and 2, ``dlut`` through
  ``learn_style``, without -> with): golden -1.73 / +4.98 -> +2.56 / +6.01 and -4.55 / +2.46 ->
  -3.10 / +3.21; teal +2.68 / +7.49 -> +1.32 / +8.05 and -5.05 / +4.03 -> -2.24 / +5.09. The mean
  rose in all four, the worst photo in three.
* Local gain p99.9 on all 10 photos stayed at or below 3.01 (``dlut``, ``nilut``).
* ``adaptive_3dlut`` (added later, with its global candidate in every fold of its own choice,
  :data:`app.ml.adaptive_3dlut.GLOBAL_MIN_SLOT_S`): golden -0.51 / +1.57 -> +0.60 / +3.23, teal
  -3.11 / +2.11 -> -4.21 / +4.32 (it now keeps its global, ``dlut``-fitted candidate).
* The exposures found on golden_years_film: -0.03, -0.33, -0.42 and +0.77 EV against the true
  +0.66, -0.58, -0.75 and +0.67 (centered): a rough split (the vignettes and sky filters, and the
  coarse look absorbing part of a correction), but the part it removes is the part that hurt.
* Cost: one estimate per fold and one for all photos, made up front by
  :func:`app.ml.learn.learn_style` within ~30 % of its budget and cached across ``auto``'s
  candidates (edits it does not help cost one estimate per learn); 10,000 pixels per photo,
  40,000 at most in all, no round starts after ``max_seconds``. At ``xtol`` 1e-3 an estimate
  took 3.8-4.6 s for 4 pairs at 1200 px and 5.3-5.6 s for 16 (other jobs on the cores), almost
  all of it Powell's evaluations of the coarse look (~230 per photo and round); ``xtol`` 1e-2 (a
  hundredth of a stop, far below the estimate's own error above) took the golden_years_film
  estimate from 5.1 to 3.1 s (4 photos) and 4.6 to 2.3 s (3 photos, a fold), with every gain
  within 0.005 stops of the 1e-3 result; the time saved goes to the fits.

Only used with two or more pairs (one photo has nothing to be inconsistent with), and only when
it explains the data: when the coarse fit's error does not drop by at least
:data:`MIN_IMPROVEMENT` the gains are dropped (edits with one consistent look, such as LUT-made
pairs, are left exactly as they are).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from app.ml.base import TrainingPair
from app.ml.metrics import linear_to_srgb, srgb_to_linear

__all__ = ["MIN_IMPROVEMENT", "estimate_photo_gains", "normalize_pairs"]

SAMPLES = 10_000  # pixels per photo the estimate uses (4 photos: 40,000 in all) ...
TOTAL_SAMPLES = 40_000  # ... and at most this many over all photos (16 pairs: 2,500 each)
MIN_SAMPLES = 2_000
ROUNDS = 3
MAX_SECONDS = 4.0  # no further round starts after this (the first always runs)
LOOK_SIZE = 5  # the coarse look's lattice: global, smooth, not per-photo
MAX_EV = 2.0  # exposure bound, stops
MAX_WB = 0.5  # red and blue against green, stops (a 600 K shift at 6500 K is about 0.1-0.15)
MIN_IMPROVEMENT = 0.15  # relative drop in the coarse fit's mean squared error to keep the gains
_LIMIT = np.array([MAX_EV, MAX_WB, MAX_WB])  # bounds of (exposure, red, blue)


def _explains(mse_before: float, mse_after: float) -> bool:
    return mse_after < (1.0 - MIN_IMPROVEMENT) * mse_before


def _corrected(linear: np.ndarray, log2_gain: np.ndarray) -> np.ndarray:
    """Linear-light pixels times the gains, clipped as a raw converter would, sRGB float32."""
    return linear_to_srgb(np.clip(linear * np.exp2(log2_gain), 0.0, 1.0)).astype(np.float32)


def _log2_gains(params: np.ndarray) -> np.ndarray:
    """(exposure, red, blue) in stops -> per-channel log2 gains (green carries the exposure)."""
    ev, red, blue = params
    return np.array([ev + red, ev, ev + blue])


def _params(log2_gains: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_log2_gains`: per-channel log2 gains -> (exposure, red, blue)."""
    r, g, b = log2_gains
    return np.array([g, r - g, b - g])


def estimate_photo_gains(
    pairs: list[TrainingPair], *, seed: int = 0, max_seconds: float = MAX_SECONDS
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-photo log2 gains (n, 3: red, green, blue in linear light), centered over the photos,
    and what was measured (``{"applied", "ev", "mse_before", "mse_after", "rounds",
    "seconds"}``; ``ev`` is each photo's exposure, the mean of its three log2 gains). All zeros,
    ``applied`` False, for fewer than two usable pairs or when the gains do not explain the data
    (see module docstring). The work is bounded whatever the number of pairs:
    :data:`TOTAL_SAMPLES` pixels in all, and no round starts after ``max_seconds``."""
    from scipy.optimize import minimize

    from app.ml.dlut import fit_lut

    n = len(pairs)
    zeros = np.zeros((n, 3))
    usable = [i for i, p in enumerate(pairs) if (~p.holdout).any()]
    if len(usable) < 2:
        return zeros, {"applied": False, "reason": "fewer than two usable pairs"}
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_photo = max(MIN_SAMPLES, min(SAMPLES, TOTAL_SAMPLES // len(usable)))
    lin, dst = [], []
    for i in usable:
        keep = np.flatnonzero(~np.asarray(pairs[i].holdout, bool).reshape(-1))
        pick = keep if keep.size <= per_photo else rng.choice(keep, per_photo, replace=False)
        lin.append(srgb_to_linear(pairs[i].before.reshape(-1, 3)[pick].astype(np.float64)))
        dst.append(pairs[i].after.reshape(-1, 3)[pick].astype(np.float64))
    opts = {"lut_size": LOOK_SIZE, "coarse_size": 0, "max_pixels": 0, "safe": False}
    gains = np.zeros((len(usable), 3))

    all_dst = np.concatenate(dst)

    def look_and_error(g: np.ndarray) -> tuple[Any, float]:
        src = np.concatenate([_corrected(x, gi) for x, gi in zip(lin, g, strict=True)])
        look, _ = fit_lut(src, all_dst, options=opts, time_budget_s=5.0)
        return look, float(np.mean((np.clip(look.apply(src), 0.0, 1.0) - all_dst) ** 2))

    look, mse_before = look_and_error(gains)
    rounds = 0
    for _ in range(ROUNDS):
        if rounds and time.perf_counter() - start > max_seconds:
            break
        rounds += 1
        for j, (x, y) in enumerate(zip(lin, dst, strict=True)):

            def cost(q: np.ndarray, x: np.ndarray = x, y: np.ndarray = y, lk: Any = look) -> float:
                out = np.clip(lk.apply(_corrected(x, _log2_gains(q))), 0.0, 1.0)
                return float(np.mean((out - y) ** 2))

            # centering may have moved the last round's values past a bound
            res = minimize(
                cost,
                np.clip(_params(gains[j]), -_LIMIT, _LIMIT),
                method="Powell",
                bounds=list(zip(-_LIMIT, _LIMIT, strict=True)),
                options={"xtol": 1e-2, "ftol": 1e-6},
            )
            gains[j] = _log2_gains(res.x)
        gains -= gains.mean(axis=0)
        look, mse_after = look_and_error(gains)
        if not _explains(mse_before, mse_after):
            break  # the first round already shows the gains explain little
    info: dict[str, Any] = {
        "mse_before": round(mse_before, 6),
        "mse_after": round(mse_after, 6),
        "rounds": rounds,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if not _explains(mse_before, mse_after):
        info.update(applied=False, reason="per-photo gains do not explain the edits")
        return zeros, info
    out = zeros.copy()
    out[usable] = gains
    info.update(applied=True, ev=[round(float(v), 3) for v in out.mean(axis=1)])
    return out, info


def normalize_pairs(pairs: list[TrainingPair], log2_gains: np.ndarray) -> list[TrainingPair]:
    """The pairs with each "before" image corrected by its gains (after and masks unchanged)."""
    out = []
    for pair, g in zip(pairs, np.asarray(log2_gains, np.float64), strict=True):
        if not np.any(g):
            out.append(pair)
            continue
        before = _corrected(srgb_to_linear(pair.before.astype(np.float64)), g)
        out.append(TrainingPair(before.reshape(pair.before.shape), pair.after, pair.holdout))
    return out
