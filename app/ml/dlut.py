"""``dlut``: one learnable 3D LUT per style, fitted to before/after pixel pairs.

The fit is a regularized linear least-squares problem, solved directly instead of by gradient
descent (DESIGN.md measured ~28 dB after 30 s of Adam on a 33^3 LUT versus ~50 dB in 2-4 s for a
least-squares solve):

* data term: trilinear lookup is linear in the LUT entries, so the prediction for all training
  pixels is ``A @ T`` with ``A`` a sparse (pixels x N^3) matrix of the 8 trilinear weights per
  pixel; squared error, mean over pixels;
* prior: squared second differences of the lattice along each axis (optionally also the mixed
  ``rg``, ``rb``, ``gb`` differences), scaled by ``N - 1`` so that ``smoothness`` means the same
  at every lattice size. Its null space is the affine maps, so colors absent from the examples are
  filled by smooth, near-linear extrapolation from the colors that were seen, which DESIGN.md found
  to matter more than the fit on the seen colors;
* clipped targets (a target channel at 0 or 1) only say "at most 0" / "at least 1": they enter as
  one-sided (hinge) constraints, solved by a few reweighting passes (the first pass gives them
  ``clip_weight``; later passes drop the ones the LUT already satisfies, pull the others fully);
* per-color balance (``balance`` = 0.5): each pixel's weight is divided by the square root of the
  number of training pixels in its color cell (17^3 lattice), so the large uniform areas of a
  photo do not drown the rare colors at the edge of the seen gamut, from which the prior
  extrapolates (held-out dE00 0.48 / p95 1.88 -> 0.44 / 1.73 on the benchmark below);
* optional soft monotonicity of output **lightness** along every input axis (``monotonic``; off
  by default: per-channel monotonicity is wrong for looks such as black-and-white with a negative
  blue weight, and even lightness can legitimately fall in such looks);
* solver: Jacobi-preconditioned conjugate gradients on the normal equations, three RHS (R, G, B)
  at once, coarse-to-fine (17^3 from identity, then the 33^3 warm-started from the upsampled coarse
  solution), stopping early when ``time_budget_s`` runs out.

The optimization is linear algebra on the CPU (scipy.sparse); ``device`` is accepted and ignored.
:func:`fit_lut` is the array-level entry point, reused by :mod:`app.ml.transfer`.

Measured with ``python -m bench ml_quality`` (9 real looks; 3 training pairs at 1200 px; 5
other photos), current defaults (safety step, balanced 200k-pixel subsample): mean CIEDE2000 0.36,
95th percentile 1.59, PSNR 45.7 dB (doing nothing: 7.62 / 14.38 / 23.9 dB; the same benchmark
before these changes: 0.52 / 1.78); one pair: 2.41 / 6.02 (before 2.39). learn_style 3 pairs (3
folds + final fit) median 16.5 s, one pair 4.7 s, on 2 loaded cores. Older figures below (0.44 /
1.73, 2 s per fit) are from before the safety step. The error sits in colors the training photos
lack (coffee.png: 69 % of its pixels in lattice cells no training pixel touched, mean dE00 1.05;
rocket.jpg: 3 %, 0.10). ``smoothness`` = 3e-9 was picked by a sweep (1e-6 .. 1e-9) on four of those
looks, so the benchmark is not fully independent of the choice. CG stops at a relative residual of
1e-6; solving to 1e-7 changed the held-out error by -10 % to +16 % depending on the look
(extrapolated cells are what moves), not consistently for the better. ``balance`` was chosen on
this same benchmark (0.5, 0.75 and 1.0 within 0.01 dE00 of each other; the 17^3 counting lattice
within 0.02 of 9^3 and 33^3). Tried there and dropped: a global polynomial (degree 2-3) or additive
per-channel-curve color fit as the prior mean, with the smoothness on the residual (mixed: some
looks better, others worse; pulling unseen colors toward it was far worse), mixed second
differences (with 3 pairs; one pair: below), a stronger smoothness at lattice points no pixel
touches (worse), and 1e-8 .. 1e-9 smoothness sweeps (3e-9 stays best).

One pair (issue 10): the mixed prior
------------------------------------
With one photo the colors seen lie on a thin set (tahoe-gps.jpg, ml_quality's one pair: 86 % of its
pixels blue, covariance eigenvalues 0.19 / 0.0085 / 0.0003; coffee.png 100 % and astronaut.png 90 %
of pixels in 33^3 cells it never touches). The axis-only second differences leave the multilinear
modes (rg, rb, gb, rgb) of the table free where no pixel pins them, so they extrapolate whatever the
thin set suggests; the mixed differences make the extrapolation affine. So :func:`fit` on ONE pair
uses ``mixed_smoothness`` = :data:`ONE_PAIR_MIXED` (1.0) unless the options set it (with 2+ pairs
nothing changes; learn's fold fits of a 2-pair learn are one-pair fits and get it too: a 2-pair
learn, tahoe-gps + UNIS_EV0, scored the same 0.419 / 1.661 before and after). Measured with a
private single-thread harness that repeats ml_quality's one-pair row (same photos and looks;
learn_style, default options), mean over the 9 looks of the per-look mean dE00 / p95: 2.34 / 5.92 ->
2.08 / 5.80; better on 8 looks (cold_shadows 4.57 -> 4.19, color_pop 3.44 -> 3.01, nilut_LUT01 1.80
-> 1.32, faded_memories 1.70 -> 1.23), worse on protect_highlights (1.69 / 5.12 -> 1.94 / 7.74).
Weight sweep (fit_lut on the whole photo): 0 -> 2.37, 0.3 -> 2.10, 1 -> 2.08, 3 -> 2.27, 10 -> 2.53;
with 3 pairs it hurts (0.347 / 1.53 -> 0.366 / 1.67 at 1, 0.359 / 1.63 at 0.3), hence one pair only.
Chosen on that benchmark, so not independent of it.
Tried for one pair, none better than the mixed prior: a global fit alone (per-channel curves + 3x3
matrix, ``fit_global``: 6.53; three per-channel curves: 8.16; polynomial degree 1/2/3: 8.34 / 7.56 /
6.84 - one blue photo pins no cross-channel behaviour), the table as a residual over the three
per-channel curves (2.52 at 3e-9, 3.05 at 1e-7), the lattice over CIELAB instead of RGB (3.39-3.71
for smoothness 3e-10 .. 1e-8), 17^3 (2.48), an added first-difference (membrane) term on the
residual over the identity (2.29-2.44 for 1e-8 .. 1e-6; 2.11 with the mixed prior), the table fitted
to per-channel log ratios log(out + e) - log(in + e) (4.03 / 5.03 at e = 0.2 / 0.05), ``balance``
0.25 / 1 with the mixed prior (2.19 / 2.33), ``nilut`` (learn_style, 20 s: 9.07 on 3 looks where
fit_lut has 3.05). The goal (mean 0.5 on the other photos) is far off: the error is the look's
chroma on hues the photo lacks (coffee.png: the fit over-saturates reds by +24 C* under color_pop,
under-saturates them by -12 under cold_shadows), which no smoothness prior can know from a blue
photo. ``python -m bench ml_quality`` (single thread, 2-core machine shared with other jobs), before
-> after: one pair 2.34 / 5.92 -> 2.08 / 5.79 (PSNR 34.24 -> 34.95 dB); 3 pairs unchanged at 0.37 /
1.59.
How much depends on the photo, and where the error sits (``ml_quality`` since 2026-12-03: one pair
from each training photo, error split by :mod:`app.ml.coverage`'s 17^3 cells), mean ΔE00 over the 9
looks: tahoe-gps 2.10 (0.29 on the test photos' colors it shows, 2.45 on the 66 % of pixels it does
not), UNIS_EV0 0.75 (0.24 / 1.59, 30 % unseen), ultrahdr_sky 2.08 (0.16 / 4.28, 36 % unseen); 3
pairs 0.35 (0.11 / 1.27, 15 % unseen). On colors the pair shows, every one-pair fit is within the
0.5 goal; the rest is what apply's ``coverage.unseen_share`` tells the user about.

Robustness on real, inconsistent edits (issue 10): the safety step (default)
------------------------------------------------------------------------------
Every fitted table goes through :func:`make_safe` (``safe``, on by default; also used by
:mod:`app.ml.transfer`, and usable on any baked table): clip into [0, 1]; then, while the
lattice gain (:func:`lattice_gain`: CIELAB output/input distance along the 13 neighbour
directions, axes and diagonals, pooled 99th percentile) exceeds ``safe_gain`` (5) or the mean
tetrahedral-vs-trilinear gap at the cell centres (:func:`interpolation_gap`) exceeds
``safe_gap`` (0.5 8-bit levels), the residual over the identity is replaced by a Gaussian-smoothed
copy (sigma 0.5, 0.75, 1, 1.5, 2, 3, 4 lattice steps of a 33^3 table) and clipped again; past
sigma 4 it blends toward the table's best affine map. ~0.1-0.6 s. ``info["safety"]`` records
sigma and the gain and gap before and after. Why these criteria: commercial film LUTs reach lattice
gain 3.7-7.7 at the 99.9th percentile (saturated corners no photo hits) but 1.5-4.3 at the 99th,
and a mean gap of 0.06-0.62 levels; LUT-made dlut fits 2.6-4.7 and 0.23-0.30 (left alone),
real-like fits 8 and 4 levels (smoothed, sigma 2, driven by the gap). The gap separates a torn
fit from a steep look; the gain bound is the backstop. A gain bound of 3.8, tried, smoothed the
fit of protect_highlights (a steep look: its own lattice gain 4.3) from 0.42 to 1.74 dE00; the
worst single direction's quantile smoothed LUT-made fits too (4-8).

Measured on a loaded 2-core machine, real-like edits as in ``bench.real_edits`` (4 pairs at
1024 px, scored on the 6 test photos; local gain on all 10 photos at 512 px), default options:

* teal_and_orange_cinema: without the safety step table 16 % outside [0, 1], photo local gain
  p99.9 up to 13.3, tetrahedral vs trilinear 35.4 dB, +1.6 dB over doing nothing (worst photo
  -4.5); with it (sigma 2): in [0, 1], 2.6, 57.9 dB, +3.9 dB (worst -1.7);
* golden_years_film: 10.7 / 36.2 dB / -0.6 dB (worst -3.4) -> 2.3 / 59.4 dB / +1.2 dB (worst
  -2.5). (Per-photo exposure and white balance that no global look can predict make some photos
  worse at full strength: :func:`app.ml.learn.learn_style` scales the style on held-out photos.)
* Fold fits on 3 of the 4 pairs: local gain 3.4-4.1, 45.5-47.6 dB.

``python -m bench real_edits`` (models dlut and auto; machine loaded by 2-3 benchmark and
test runs at once), dlut / auto rows: golden_years_film +2.08 dB mean over doing nothing (worst
photo -1.94), local gain p99.9 max 2.61 on all 10 photos, 0 % of the table outside [0, 1],
tetrahedral vs trilinear 58.4 dB, ho/act 1.25, learn 62 s (auto chose dlut: same row, 93 s);
teal_and_orange_cinema dlut +3.92 dB (worst -1.74), 2.69, 0 %, 57.9 dB, 1.23, 45 s; auto>dlut
+3.47 (worst -1.07), 2.34, 0 %, 59.9 dB, 1.17, 57 s. (Before: tables 8-15 % outside, local gain
5-17, 32-45 dB.) The oracle (the shared look alone) has a worst photo at -3.70 dB on teal: per-photo
exposure and white balance make "never below doing nothing" unreachable for any global look there.

After the 2026-12-02 time changes (``budget_pixels`` for fold fits, auto's final-fit share;
busy machine), ``python -m bench real_edits``: dlut golden_years_film +1.57 dB mean (worst
-2.11), teal_and_orange_cinema +3.45 (worst -3.55), local gain <= 3.05, 0 % outside, >= 52.6 dB,
ho/act 1.22-1.24, 57-64 s; ``ml_quality`` 3 pairs mean dE00 0.37 / p95 1.58, one pair 2.41 /
6.13 (larger ``smoothness`` for one pair was worse: 1e-7 and 3e-6 raised cold_shadows 4.08 to
7.07 / 8.57 dE00).

With per-photo exposure and white balance taken out before the fit (:mod:`app.ml.photo_gains`,
done by :func:`app.ml.learn.learn_style` for 2+ pairs) and the learner's local gain guard, on a
quiet machine: golden_years_film +3.18 dB mean (worst +0.45), teal_and_orange_cinema +4.30
(worst -4.11: the exact look itself is -3.70 there), local gain <= 3.01, 0 % outside, >= 53.7
dB, ho/act 1.34 / 1.43, 34-35 s; ``ml_quality`` unchanged (LUT-made pairs are consistent, so
nothing is taken out).

With 2+ pairs :func:`app.ml.learn.learn_style` no longer holds back 10 % of each photo in tiles
(whole photos are held out by its k-fold), so every fit sees every pixel, rare colors included:
``ml_quality`` 3 pairs 0.37 / 1.59 -> 0.35 / 1.52 mean / p95 dE00 (one pair unchanged, 2.10 /
5.86); ``real_edits`` golden +3.18 -> +3.07 dB mean (worst +0.45 -> +0.25), teal +4.30 -> +4.23
(worst -4.11 -> -4.09), learn 34-35 -> 28-33 s. Option sweeps on the 3-pair row afterwards
(direct fits, same photos, p95 from 1.533): 300k pixels 1.527, balance 0.75 1.536, smoothness
2e-9 / 5e-9 1.546 / 1.529, clip_weight 0.5 1.525, mixed 0.1 1.580, tol 1e-7 1.551, a second
refinement pass 1.532, a 49^3 lattice 1.590, no safety step 1.525; a prior mean from the
published Image-Adaptive-3DLUT basis tables (per channel, with an affine part) 1.806. None is a
clear gain, so the defaults stay.

Pixels: more than ``max_pixels`` (200k) training pixels are subsampled per color cell (up to a
cap per 17^3 cell, every pixel of a rare color kept, reweighted so each cell keeps its weight);
the former uniform 600k subset lost rare colors. Quick check, 3 LUT-made pairs (ml_quality's
photos and looks; 5 test photos at <= 1024 px): cold_shadows 0.57 -> 0.40, color_pop 0.76 ->
0.55, teal_and_orange_cinema 0.47 -> 0.42 (0.48 after a sigma 0.5 safety pass) mean dE00.
Clipping alone costs 0.00-0.05 dE00 on LUT-made looks (their fits overshoot [0, 1] at the gamut
edges in a way that helps in-range colors).

Time: a fit honours ``time_budget_s`` in its conjugate-gradient passes and starts no
refinement pass past it; the rest (pixel selection, normal matrices, safety) is linear in pixels,
so with ``budget_pixels`` (the holdout's fold fits) a budget under :data:`SHORT_BUDGET_S`
(8 s) fits on proportionally fewer pixels (at least :data:`MIN_PIXELS`), and the per-cell
balanced subsample draws each pixel with probability min(1, cap / cell count) instead of
sorting every pixel by cell. Measured at 3 x 1200 px on the
loaded 2-core machine (load 7): a 3 s budget took 9.4 s before, 4.6 s after; a 1 s budget 2.1 s.
Unconstrained fits take 5-20 s there.

Opt-in knobs measured before the safety step (see :class:`DLUTOptions`), all solved inside the
same conjugate-gradient passes: ``bound_weight`` (entries outside [0, 1] penalized, then
clipped), ``max_gain`` / ``gain_weight`` (hinge on the CIELAB gain between each lattice point
and its 13 forward neighbours), ``robust`` (Huber, by reweighting), ``prior="curves"`` with
``prior_weight`` (unseen colors pulled toward a global per-channel-curves + matrix fit):

* ``smoothness=1e-6, lut_size=17, coarse_size=9, robust=0.03, max_gain=2.5, gain_weight=1e4,
  refine_passes=5, bound_weight=10``: table in [0, 1], local gain p99.9 <= 4.4 on every photo,
  tetrahedral vs trilinear 54 dB, 4-5 s; but LUT-made looks (ml_quality, 2 looks) degrade to
  mean dE00 1.0 / p95 3.6.
* ``smoothness=1e-7`` (33^3): real-like local gain 5.6-5.7 and 42-44 dB (under the safety
  bounds at the lattice, so left alone: the lattice criteria are not a proof), ml_quality worse.
* ``prior="curves"`` hurt badly on LUT-made looks (cold_shadows mean dE00 5 on unseen photos).
Not done: choosing ``smoothness`` per style by held-out photos (fits are still 5-20 s here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from app.ml.base import ProgressFn, TrainingPair, no_progress
from app.ml.lut import LUT3D, LUTStyle, identity_table
from app.ml.metrics import srgb_to_lab

if TYPE_CHECKING:
    import torch

__all__ = [
    "DLUTModel",
    "DLUTOptions",
    "fit",
    "fit_lut",
    "interpolation_gap",
    "lattice_gain",
    "bound_photo_gain",
    "make_safe",
    "strongest_within",
    "trilinear_matrix",
]

_CLIP_LOW = 0.5 / 255.0
_CLIP_HIGH = 254.5 / 255.0
_LUMA = np.array([0.2126, 0.7152, 0.0722])
SAFE_GAIN = 5.0  # lattice gain bound at SAFE_QUANTILE (film looks reach 4.3, their fits 4.7)
SAFE_QUANTILE = 0.99  # real film LUTs reach 3.7-7.7 at 0.999, 1.5-4.3 at 0.99
SAFE_GAP = 0.5 / 255.0  # mean tetrahedral-vs-trilinear gap at cell centres (output units)
SAFE_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
SHORT_BUDGET_S = 8.0  # budgets below this fit on proportionally fewer pixels ...
MIN_PIXELS = 40_000  # ... but not fewer than this
PHOTO_GAIN = 3.6  # p99.9 local gain bound on the photos a style was learned from (goal: 4)
PHOTO_SIDE = 512  # long side at which bound_photo_gain measures them
ONE_PAIR_MIXED = 1.0  # mixed_smoothness of a fit on one photo when the caller does not set it
BLEND_STEPS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)  # shares of a look tried


@dataclass
class DLUTOptions:
    """Knobs of :func:`fit` (``options`` dict keys of the same names; unknown keys are ignored).

    The one place they are documented (see the module docstring for how each was chosen):

    * ``lut_size`` (33): lattice size of the fitted table; ``coarse_size`` (17): size of the
      warm-start pass (0 disables it).
    * ``smoothness``: weight of the squared second differences of the table (of the residual over
      the global prior when ``prior`` is on); ``mixed_smoothness``: extra weight of the mixed
      (rg, rb, gb) second differences (0; :func:`fit` on one pair: :data:`ONE_PAIR_MIXED`).
    * ``max_pixels``: training pixels used at most (beyond that, a per-color-cell balanced
      subset, seeded).
    * ``clip_weight`` / ``clip_passes``: one-sided (hinge) handling of clipped targets.
    * ``monotonic``: > 0 adds a soft penalty on output lightness falling along an input axis.
    * ``identity_weight``: > 0 pulls every lattice point toward "no change".
    * ``balance`` / ``balance_size``: pixel weight ~ (training pixels in its color cell of a
      ``balance_size``^3 lattice) ** -balance.
    * ``prior`` ("curves" or "none"): fit a global transform first (per-channel curves + 3x3
      matrix, i.e. nine smooth 1D curves, one per input -> output channel pair) and treat the
      table as a smooth residual on it; ``prior_knots`` (17) knots per curve,
      ``prior_smoothness`` its curvature penalty.
    * ``prior_weight`` / ``prior_mass``: lattice points pulled toward the global transform with a
      weight that fades where data is dense: ``prior_weight / N^3 * m0 / (m0 + mass)``, ``mass``
      the point's share of the (balanced) pixel weight and ``m0 = prior_mass / N^3``.
    * ``robust``: Huber threshold of the data term (output units, 0 = plain least squares),
      applied by iteratively reweighted passes.
    * ``max_gain`` / ``gain_weight``: penalty on the local gain of the table itself (output over
      input CIELAB distance between neighbouring lattice points) above ``max_gain``.
    * ``bound_weight``: penalty on table entries outside [0, 1] (the result is then clipped).
    * ``refine_passes``: reweighting passes (robust loss, gain and bound penalties, clip hinges)
      on the final lattice.
    * ``max_iters`` / ``tol``: conjugate-gradient limits per solve; ``seed``: pixel subset.
    * ``budget_pixels`` (False): under a budget of :data:`SHORT_BUDGET_S` the pixel subsample
      shrinks in proportion (not below :data:`MIN_PIXELS`); :mod:`app.ml.learn` sets it for the
      fold fits of its holdout, never for the final fit.
    * ``safe`` (True): the safety step :func:`make_safe` on the fitted table, with
      ``safe_gain`` (lattice gain bound, pooled 99th percentile) and ``safe_gap`` (mean
      tetrahedral-vs-trilinear gap at cell centres, 8-bit levels).
    """

    lut_size: int = 33
    coarse_size: int = 17  # 0 disables the coarse pass
    smoothness: float = 3e-9
    mixed_smoothness: float = 0.0  # weight of the mixed (rg, rb, gb) second differences
    max_pixels: int = 200_000
    clip_weight: float = 0.3
    clip_passes: int = 1
    monotonic: float = 0.0  # > 0 enables the soft lightness-monotonicity term
    identity_weight: float = 0.0  # > 0 pulls every lattice point toward "no change"
    balance: float = 0.5  # pixel weight ~ (training pixels in its color cell) ** -balance
    balance_size: int = 17  # lattice whose cells ``balance`` counts
    prior: str = "none"
    prior_knots: int = 17
    prior_smoothness: float = 1e-3
    prior_weight: float = 0.0
    prior_mass: float = 1.0
    robust: float = 0.0
    max_gain: float = 0.0
    gain_weight: float = 100.0
    bound_weight: float = 0.0
    refine_passes: int = 1
    max_iters: int = 1500
    tol: float = 1e-6
    seed: int = 0
    safe: bool = True
    safe_gain: float = SAFE_GAIN
    safe_gap: float = SAFE_GAP * 255.0
    budget_pixels: bool = False  # budgets under SHORT_BUDGET_S use fewer pixels (fold fits)

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> DLUTOptions:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (options or {}).items() if k in known}
        opts = cls(**values)
        if not 2 <= int(opts.lut_size) <= 129:
            raise ValueError(f"lut_size must be in 2..129, got {opts.lut_size}")
        if opts.smoothness <= 0:
            raise ValueError(f"smoothness must be positive, got {opts.smoothness}")
        if opts.prior not in ("curves", "none"):
            raise ValueError(f"prior must be 'curves' or 'none', got {opts.prior!r}")
        return opts


# ---------------------------------------------------------------------------------------------
# linear algebra
# ---------------------------------------------------------------------------------------------
def trilinear_matrix(rgb: np.ndarray, size: int) -> sp.csr_matrix:
    """Sparse (P, size**3) matrix of trilinear weights: ``A @ table.reshape(-1, 3)`` equals the
    lookup of ``rgb`` (P, 3) in [0, 1] (flat lattice index ``(r * N + g) * N + b``)."""
    n = size
    coords = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0) * (n - 1)
    lo = np.minimum(np.floor(coords), n - 2).astype(np.int64)
    frac = coords - lo
    n_pix = coords.shape[0]
    cols = np.empty((n_pix, 8), np.int64)
    vals = np.empty((n_pix, 8), np.float64)
    k = 0
    for dr in (0, 1):
        wr = frac[:, 0] if dr else 1.0 - frac[:, 0]
        for dg in (0, 1):
            wg = frac[:, 1] if dg else 1.0 - frac[:, 1]
            for db in (0, 1):
                wb = frac[:, 2] if db else 1.0 - frac[:, 2]
                cols[:, k] = ((lo[:, 0] + dr) * n + lo[:, 1] + dg) * n + lo[:, 2] + db
                vals[:, k] = wr * wg * wb
                k += 1
    indptr = np.arange(0, 8 * n_pix + 1, 8, dtype=np.int64)
    return sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n_pix, n**3))


def _kron3(a: sp.spmatrix, b: sp.spmatrix, c: sp.spmatrix) -> sp.csr_matrix:
    return sp.kron(a, sp.kron(b, c, format="csr"), format="csr")


def smoothness_matrix(size: int, mixed: float = 0.0) -> sp.csr_matrix:
    """``R`` with ``x.T @ R @ x`` = sum of squared second differences of the lattice ``x``
    (along r, g and b; plus ``2 * mixed`` times the squared mixed differences), times ``N - 1``."""
    n = size
    eye = sp.identity(n, format="csr")
    d2 = sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n), format="csr")
    ops = [_kron3(d2, eye, eye), _kron3(eye, d2, eye), _kron3(eye, eye, d2)]
    reg = sum((o.T @ o for o in ops), sp.csr_matrix((n**3, n**3)))
    if mixed > 0:
        d1 = sp.diags([-1.0, 1.0], [0, 1], shape=(n - 1, n), format="csr")
        mops = [_kron3(d1, d1, eye), _kron3(d1, eye, d1), _kron3(eye, d1, d1)]
        reg = reg + 2.0 * mixed * sum((o.T @ o for o in mops), sp.csr_matrix((n**3, n**3)))
    return (reg * (n - 1)).tocsr()


def _difference_ops(size: int) -> sp.csr_matrix:
    """First differences along r, g and b stacked: (3 * N^2 * (N-1), N^3)."""
    n = size
    eye = sp.identity(n, format="csr")
    d1 = sp.diags([-1.0, 1.0], [0, 1], shape=(n - 1, n), format="csr")
    return sp.vstack([_kron3(d1, eye, eye), _kron3(eye, d1, eye), _kron3(eye, eye, d1)]).tocsr()


def _neighbour_ops(size: int) -> sp.csr_matrix:
    """Differences between every lattice point and its 13 "forward" neighbours (3 axes, 6 face
    and 4 body diagonals), stacked: the directions along which :func:`fit_lut` bounds the gain
    (the axes alone miss the tearing that trilinear interpolation shows along diagonals)."""
    n = size
    idx = np.arange(n**3).reshape(n, n, n)
    rows, cols, vals = [], [], []
    offset = 0
    for dr in (-1, 0, 1):
        for dg in (-1, 0, 1):
            for db in (-1, 0, 1):
                step = (dr, dg, db)
                if step <= (0, 0, 0):  # keep one of each +-pair, and not (0, 0, 0)
                    continue
                sl_from = tuple(slice(max(0, -d), n - max(0, d)) for d in step)
                sl_to = tuple(slice(max(0, d), n - max(0, -d)) for d in step)
                a_idx = idx[sl_from].ravel()
                b_idx = idx[sl_to].ravel()
                k = np.arange(offset, offset + a_idx.size)
                rows += [k, k]
                cols += [a_idx, b_idx]
                vals += [-np.ones(a_idx.size), np.ones(a_idx.size)]
                offset += a_idx.size
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(offset, n**3),
    )


def _pcg(
    matvec: Any,
    rhs: np.ndarray,
    x: np.ndarray,
    diag: np.ndarray,
    *,
    max_iters: int,
    tol: float,
    deadline: float,
    coupled: bool = False,
) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned CG for 3 right-hand sides (columns); independent per column unless
    ``coupled`` (one system over all columns)."""

    def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = (a * b).sum(axis=0)
        return np.full(a.shape[1], d.sum()) if coupled else d

    r = rhs - matvec(x)
    z = r / diag
    p = z.copy()
    rz = dot(r, z)
    bnorm = np.sqrt(np.maximum(dot(rhs, rhs), 1e-300))
    it = 0
    while it < max_iters:
        it += 1
        mp = matvec(p)
        pmp = dot(p, mp)
        alpha = np.where(pmp > 0, rz / np.where(pmp > 0, pmp, 1.0), 0.0)
        x += p * alpha
        r -= mp * alpha
        if np.all(np.sqrt(dot(r, r)) <= tol * bnorm) or time.perf_counter() > deadline:
            break
        z = r / diag
        rz_new = dot(r, z)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + p * beta
        rz = rz_new
    return x, it


def _curve_basis(rgb: np.ndarray, knots: int) -> sp.csr_matrix:
    """Sparse hat-function basis (P, 3 * knots) of per-channel piecewise-linear curves."""
    k = knots
    pos = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0) * (k - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), k - 2)
    frac = pos - lo
    n_pix = pos.shape[0]
    cols = np.empty((n_pix, 6), np.int64)
    vals = np.empty((n_pix, 6))
    for c in range(3):
        cols[:, 2 * c] = c * k + lo[:, c]
        cols[:, 2 * c + 1] = c * k + lo[:, c] + 1
        vals[:, 2 * c] = 1.0 - frac[:, c]
        vals[:, 2 * c + 1] = frac[:, c]
    indptr = np.arange(0, 6 * n_pix + 1, 6, dtype=np.int64)
    return sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n_pix, 3 * k))


def fit_global(
    src: np.ndarray,
    dst: np.ndarray,
    w: np.ndarray,
    *,
    knots: int = 17,
    smoothness: float = 1e-3,
    robust: float = 0.0,
) -> np.ndarray:
    """Global color transform ``out_c = sum_j curve_cj(in_j)``: per-channel curves and a 3x3
    matrix in one linear model (nine piecewise-linear curves of ``knots`` knots each).

    Weighted least squares (``w``) with a curvature penalty per curve and a weak pull toward the
    identity; ``robust`` > 0 reweights by Huber (3 passes). Returns coefficients (3 * knots, 3).
    """
    w = w / max(w.sum(), 1e-300)
    phi = _curve_basis(src, knots)
    phit = phi.T.tocsr()
    d2 = np.diff(np.eye(knots), 2, axis=0)
    reg = np.kron(np.eye(3), d2.T @ d2) * smoothness * (knots - 1) ** 3 / knots
    ramp = np.linspace(0.0, 1.0, knots)
    ident = np.zeros((3 * knots, 3))
    for c in range(3):
        ident[c * knots : (c + 1) * knots, c] = ramp
    ridge = 1e-6
    coef = ident.copy()
    pix_w = w
    for _ in range(3 if robust > 0 else 1):
        m = (phit @ sp.diags(pix_w) @ phi).toarray() + reg + ridge * np.eye(3 * knots)
        rhs = phit @ (pix_w[:, None] * dst) + ridge * ident
        coef = np.linalg.solve(m, rhs)
        if robust > 0:
            res = np.linalg.norm(phi @ coef - dst, axis=1)
            pix_w = w * np.minimum(1.0, robust / np.maximum(res, 1e-12))
    return np.asarray(coef)


def apply_global(coef: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Evaluate :func:`fit_global` coefficients at colors ``rgb`` (P, 3)."""
    knots = coef.shape[0] // 3
    return _curve_basis(np.asarray(rgb, np.float64), knots) @ coef


_LAB_NODES: dict[int, np.ndarray] = {}


def _node_lab(n: int) -> np.ndarray:
    if n not in _LAB_NODES:
        _LAB_NODES[n] = srgb_to_lab(identity_table(n).reshape(-1, 3).astype(np.float64))
    return _LAB_NODES[n]


def fit_lut(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    options: DLUTOptions | dict[str, Any] | None = None,
    time_budget_s: float = 60.0,
    progress: ProgressFn = no_progress,
) -> tuple[LUT3D, dict[str, Any]]:
    """Fit a LUT mapping ``src`` colors (P, 3) in [0, 1] to ``dst`` colors (P, 3).

    Returns the LUT and fit information (iterations, seconds, pixels used). ``weights`` (P,)
    scales each pixel's data term.
    """
    opts = options if isinstance(options, DLUTOptions) else DLUTOptions.from_dict(options)
    start = time.perf_counter()
    deadline = start + max(0.5, float(time_budget_s))
    src = np.asarray(src, np.float64).reshape(-1, 3)
    dst = np.asarray(dst, np.float64).reshape(-1, 3)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst differ in shape: {src.shape} vs {dst.shape}")
    if src.shape[0] == 0:
        raise ValueError("no training pixels")
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, np.float64).ravel()
    # dense colors (sky, skin) must not drown the rare ones at the edge of the seen gamut, from
    # which the prior extrapolates into the colors no example shows: pixel weight ~ count in its
    # color cell ** -balance
    nb = max(2, int(opts.balance_size))
    idx = np.minimum((np.clip(src, 0.0, 1.0) * (nb - 1) + 0.5).astype(np.int64), nb - 1)
    cell = (idx[:, 0] * nb + idx[:, 1]) * nb + idx[:, 2]
    counts = np.bincount(cell, minlength=nb**3).astype(np.float64)
    cell_w = counts[cell] ** -float(opts.balance) if opts.balance > 0 else np.ones(cell.size)
    limit = opts.max_pixels
    if limit and opts.budget_pixels and time_budget_s < SHORT_BUDGET_S:
        # building the normal matrices is linear in pixels and is not stopped by the deadline:
        # a short budget (auto's fold fits) works on proportionally fewer of them. Opt-in: a
        # final fit squeezed by a loaded machine must not lose pixels (measured: classic_film
        # 0.22 -> 0.92 dE00 when the final fit of ml_quality ran at 40k pixels)
        limit = max(MIN_PIXELS, int(limit * time_budget_s / SHORT_BUDGET_S))
    if limit and src.shape[0] > limit:
        # per-cell balanced subsample: every color cell keeps up to ``cap`` random pixels (all of
        # a rare color's), each reweighted so the cell keeps its total weight; a uniform random
        # subset lost the rare colors (ml_quality 0.57 -> 0.59 / 0.81 -> 0.90 at 250k pixels)
        keep = _balanced_subset(cell, counts, limit, opts.seed)
        kept = np.bincount(cell[keep], minlength=nb**3).astype(np.float64)
        src, dst = src[keep], dst[keep]
        w = w[keep] * cell_w[keep] * counts[cell[keep]] / kept[cell[keep]]
    else:
        w = w * cell_w
    w = w / max(w.sum(), 1e-12)
    low = dst <= _CLIP_LOW
    high = dst >= _CLIP_HIGH
    clipped = low | high
    coef = (
        fit_global(
            src,
            dst,
            w,
            knots=opts.prior_knots,
            smoothness=opts.prior_smoothness,
            robust=opts.robust,
        )
        if opts.prior == "curves"
        else None
    )
    sizes = (
        [opts.coarse_size, opts.lut_size]
        if 2 <= opts.coarse_size < opts.lut_size
        else [opts.lut_size]
    )
    info: dict[str, Any] = {"pixels": int(src.shape[0]), "clipped_fraction": float(clipped.mean())}
    x: np.ndarray | None = None
    prev = 0
    iters_total = 0
    for level, n in enumerate(sizes):
        final = level == len(sizes) - 1
        a = trilinear_matrix(src, n)
        at = a.T.tocsr()
        reg = smoothness_matrix(n, opts.mixed_smoothness) * opts.smoothness
        x0 = identity_table(n).reshape(-1, 3).astype(np.float64)
        prior = np.clip(apply_global(coef, x0), 0.0, 1.0) if coef is not None else x0
        ridge_w = opts.smoothness * 1e-6 + opts.identity_weight
        mass = at @ w
        pull = np.zeros(n**3)
        if coef is not None and opts.prior_weight > 0:
            m0 = opts.prior_mass / n**3
            pull = opts.prior_weight / n**3 * m0 / (m0 + mass)
        diag_extra = pull + ridge_w
        rhs_fixed = pull[:, None] * prior + ridge_w * x0
        if coef is not None:
            rhs_fixed = rhs_fixed + reg @ prior  # smoothness acts on the residual over the prior
        if x is None:
            x = prior.copy()
        else:
            x = (
                LUT3D(x.reshape(prev, prev, prev, 3))
                .resample(n)
                .table.reshape(-1, 3)
                .astype(np.float64)
            )
        diffs = _neighbour_ops(n)
        lab_in = _node_lab(n)
        d_lab_in = np.maximum(np.linalg.norm(diffs @ lab_in, axis=1), 1e-6)
        # per-pixel, per-channel data weights: clip hinge x Huber
        cw = np.where(clipped, opts.clip_weight, 1.0)
        hub = np.ones(dst.shape[0])
        bound_active = np.zeros_like(x, dtype=bool)
        bound_target = np.zeros_like(x)
        gain_rows = np.zeros(0, np.int64)
        gain_target = np.zeros((0, 3))
        passes = 1 + (opts.refine_passes if final else 0)
        level_budget = (deadline - time.perf_counter()) * (1.0 if final else 0.3)
        for k in range(passes):
            if k > 0 and time.perf_counter() > deadline:
                break  # refinement passes rebuild the normal matrices: not past the budget
            mats = []
            rhs = np.empty_like(x)
            pw = w * hub
            common = (at @ sp.diags(pw) @ a) + reg + sp.diags(diag_extra)
            gw = opts.gain_weight * (n - 1) ** 2 / n**3
            if gain_rows.size:
                dg = diffs[gain_rows]
                common = common + (dg.T @ dg) * gw
            for c in range(3):
                m = common
                r = at @ (pw * cw[:, c] * dst[:, c]) + rhs_fixed[:, c]
                rows = np.flatnonzero(clipped[:, c])
                if rows.size:
                    ac = a[rows]
                    m = m + ac.T @ sp.diags(pw[rows] * (cw[rows, c] - 1.0)) @ ac
                if gain_rows.size:
                    r = r + gw * (dg.T @ gain_target[:, c])
                if bound_active[:, c].any():
                    bw = opts.bound_weight / n**3 * bound_active[:, c]
                    m = m + sp.diags(bw)
                    r = r + bw * bound_target[:, c]
                mats.append(m.tocsr())
                rhs[:, c] = r
            diag = np.stack([m.diagonal() for m in mats], axis=1)

            def matvec(v: np.ndarray, mats: list[sp.csr_matrix] = mats) -> np.ndarray:
                return np.stack([mats[c] @ v[:, c] for c in range(3)], axis=1)

            pass_deadline = time.perf_counter() + level_budget / passes
            x, it = _pcg(
                matvec,
                rhs,
                x,
                diag,
                max_iters=opts.max_iters,
                tol=opts.tol,
                deadline=min(deadline, pass_deadline),
            )
            iters_total += it
            if opts.monotonic > 0 and final and k == passes - 1:
                x, it = _monotonic_refine(x, mats, rhs, diag, n, opts, deadline)
                iters_total += it
            if k < passes - 1:
                pred = a @ x
                if k < opts.clip_passes:
                    satisfied = (low & (pred <= dst)) | (high & (pred >= dst))
                    cw = np.where(clipped, np.where(satisfied, 0.0, 1.0), 1.0)
                if opts.robust > 0:
                    res = np.linalg.norm(pred - dst, axis=1)
                    hub = np.minimum(1.0, opts.robust / np.maximum(res, 1e-12))
                if opts.bound_weight > 0:
                    bound_active = (x < 0.0) | (x > 1.0) | bound_active
                    bound_target = np.clip(x, 0.0, 1.0)
                if opts.max_gain > 0:
                    d_out = diffs @ srgb_to_lab(np.clip(x, -0.5, 1.5))
                    gain = np.linalg.norm(d_out, axis=1) / d_lab_in
                    rows = np.flatnonzero(gain > opts.max_gain)
                    if rows.size:
                        dx = diffs[rows] @ x
                        scale = opts.max_gain / gain[rows]
                        gain_rows = np.union1d(gain_rows, rows)
                        tgt = dict(zip(gain_rows.tolist(), range(gain_rows.size), strict=True))
                        new_target = diffs[gain_rows] @ x
                        new_target[[tgt[r] for r in rows.tolist()]] = dx * scale[:, None]
                        gain_target = new_target
            progress(
                (level + (k + 1) / passes) / len(sizes), f"{n}^3 lattice, pass {k + 1}/{passes}"
            )
        prev = n
    assert x is not None
    n = sizes[-1]
    info.update(
        iterations=iters_total,
        seconds=time.perf_counter() - start,
        lut_size=opts.lut_size,
        outside_fraction=float(np.mean((x < 0.0) | (x > 1.0))),
    )
    table = x.reshape(n, n, n, 3)
    if opts.safe:
        table, info["safety"] = make_safe(
            table, max_gain=opts.safe_gain, max_gap=opts.safe_gap / 255.0
        )
    elif opts.bound_weight > 0:
        table = np.clip(table, 0.0, 1.0)
    info["seconds"] = time.perf_counter() - start
    return LUT3D(table.astype(np.float32)), info


# ---------------------------------------------------------------------------------------------
# safety: a cheap post-step on any fitted table (issue 10)
# ---------------------------------------------------------------------------------------------


def _forward_steps() -> list[tuple[int, int, int]]:
    return [
        s
        for s in ((dr, dg, db) for dr in (-1, 0, 1) for dg in (-1, 0, 1) for db in (-1, 0, 1))
        if s > (0, 0, 0)
    ]


def lattice_gain(table: np.ndarray, *, per_direction: bool = False) -> Any:
    """CIELAB gain (output over input ΔE76) along the 13 forward neighbour directions (axes, face
    and body diagonals) of every lattice point of an (N, N, N, 3) table on [0, 1]: the directions
    a photo's neighbouring pixels may take through the lattice (the axes alone miss tearing along
    diagonals). Flat array of all edge ratios (``per_direction``: a list, one array per
    direction)."""
    t = np.asarray(table, np.float64)
    n = t.shape[0]
    lab_out = srgb_to_lab(np.clip(t, 0.0, 1.0).reshape(-1, 3)).reshape(n, n, n, 3)
    lab_in = _node_lab(n).reshape(n, n, n, 3)
    ratios = []
    for step in _forward_steps():
        a = tuple(slice(max(0, -d), n - max(0, d)) for d in step)
        b = tuple(slice(max(0, d), n - max(0, -d)) for d in step)
        d_in = np.linalg.norm(lab_in[b] - lab_in[a], axis=-1)
        d_out = np.linalg.norm(lab_out[b] - lab_out[a], axis=-1)
        ratios.append((d_out / np.maximum(d_in, 1e-6)).ravel())
    return ratios if per_direction else np.concatenate(ratios)


def interpolation_gap(table: np.ndarray) -> np.ndarray:
    """Per cell, the largest channel difference between trilinear and tetrahedral interpolation
    at the cell centre: ``mean(8 corners) - (c000 + c111) / 2`` (tetrahedral is exact on the main
    diagonal, so at the centre it is the mean of those two corners). Zero for a table that is
    multilinear-free within cells (affine); what makes exports differ between tools."""
    t = np.asarray(table, np.float64)
    corners = [
        t[i : t.shape[0] - 1 + i, j : t.shape[1] - 1 + j, k : t.shape[2] - 1 + k]
        for i in (0, 1)
        for j in (0, 1)
        for k in (0, 1)
    ]
    tri = sum(corners) / 8.0
    tet = 0.5 * (corners[0] + corners[7])
    return np.abs(tri - tet).max(axis=-1).ravel()


def make_safe(
    table: np.ndarray,
    *,
    max_gain: float = SAFE_GAIN,
    max_gap: float = SAFE_GAP,
    gain_quantile: float = SAFE_QUANTILE,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Bound a fitted (N, N, N, 3) table: clip it into [0, 1]; then, while its lattice gain
    (:func:`lattice_gain`, ``gain_quantile`` over all 13 directions) exceeds ``max_gain`` or the
    mean :func:`interpolation_gap` (scaled to a 33^3 lattice: x ((N - 1) / 32)^2, the gap of the
    33^3 table baked from it) exceeds ``max_gap``, replace the residual over the identity by
    a Gaussian-smoothed copy (``scipy.ndimage.gaussian_filter`` on the lattice, sigma growing
    through :data:`SAFE_SIGMAS`, in lattice steps of a 33^3 table) and clip again; past the last
    sigma, blend toward the best affine map of the table. Milliseconds on 33^3. Model-agnostic:
    any baked table may go through it. Returns the table and what was done (``sigma`` 0 = only
    clipped)."""
    from scipy.ndimage import gaussian_filter

    t = np.asarray(table, np.float64)
    n = t.shape[0]
    ident = identity_table(n).astype(np.float64)
    residual = t - ident
    clipped = np.clip(t, 0.0, 1.0)

    def measure(x: np.ndarray) -> tuple[float, float]:
        # pooled over the 13 directions (the worst single direction's quantile would smooth
        # film looks too: measured 4-8 on LUT-made fits)
        gain = float(np.quantile(lattice_gain(x), gain_quantile))
        # the gap grows with the cell size squared: measured as the 33^3 table baked from it
        return gain, float(interpolation_gap(x).mean()) * ((n - 1) / 32.0) ** 2

    gain0, gap0 = measure(clipped)
    info: dict[str, Any] = {
        "outside_before": float(np.mean((t < 0.0) | (t > 1.0))),
        "gain_before": round(gain0, 3),
        "gap_before": round(gap0 * 255.0, 3),
        "sigma": 0.0,
    }
    out, gain, gap = clipped, gain0, gap0
    scale = (n - 1) / 32.0  # sigmas are in 33^3 lattice steps
    for sigma in SAFE_SIGMAS:
        if gain <= max_gain and gap <= max_gap:
            break
        smooth = np.stack(
            [gaussian_filter(residual[..., c], sigma * scale, mode="nearest") for c in range(3)],
            axis=-1,
        )
        out = np.clip(ident + smooth, 0.0, 1.0)
        gain, gap = measure(out)
        info["sigma"] = sigma
    if gain > max_gain or gap > max_gap:
        flat = np.c_[ident.reshape(-1, 3), np.ones(n**3)]
        coef, *_ = np.linalg.lstsq(flat, out.reshape(-1, 3), rcond=None)
        affine = np.clip(flat @ coef, 0.0, 1.0).reshape(out.shape)
        base = out
        for blend in (0.25, 0.5, 0.75, 1.0):
            out = (1.0 - blend) * base + blend * affine
            gain, gap = measure(out)
            info["affine_blend"] = blend
            if gain <= max_gain and gap <= max_gap:
                break
    info.update(gain_after=round(gain, 3), gap_after=round(gap * 255.0, 3))
    return out, info


def bound_photo_gain(
    lut: LUT3D,
    photos: list[np.ndarray],
    *,
    max_gain: float = PHOTO_GAIN,
    max_side: int | None = PHOTO_SIDE,
    max_pixels: int | None = None,
) -> tuple[LUT3D, dict[str, Any]]:
    """Bound the local gain a table gives on real photos, not only on its lattice.

    :func:`make_safe` bounds the lattice's 99th percentile; a photo's 99.9th percentile can
    still exceed it where the photo's colors sit in the steepest cells (measured: a
    ``transfer`` style at lattice p99 3.4 gave p99.9 4.11 on one of its own photos). Here the
    p99.9 :func:`app.ml.metrics.local_gain` of ``lut`` on each of ``photos`` (HxWx3 float in
    [0, 1], measured at ``max_side`` px (None: as given), on at most ``max_pixels`` neighbour
    pairs of each) must be at most ``max_gain``: while it is not, the residual over the identity
    is smoothed (the :data:`SAFE_SIGMAS` ladder), then blended toward the identity
    (:func:`strongest_within`). Returns the table and ``{"gain_before", "gain_after",
    "sigma", "blend"}``."""
    from scipy.ndimage import gaussian_filter

    from app.ml.metrics import local_gain

    small = []
    for img in photos:
        h, w = img.shape[:2]
        step = 1 if max_side is None else max(1, int(np.ceil(max(h, w) / max_side)))
        small.append(np.ascontiguousarray(np.asarray(img, np.float32)[::step, ::step]))

    def worst(table: np.ndarray) -> float:
        cand = LUT3D(table.astype(np.float32), domain_min=lut.domain_min, domain_max=lut.domain_max)
        return max(
            (
                float(
                    local_gain(p, np.clip(cand.apply(p), 0.0, 1.0), max_pixels=max_pixels)["p999"]
                )
                for p in small
            ),
            default=0.0,
        )

    base = np.asarray(lut.table, np.float64)
    n = base.shape[0]
    ident = identity_table(n).astype(np.float64)
    gain = worst(base)
    info: dict[str, Any] = {"gain_before": round(gain, 3), "sigma": 0.0, "blend": 1.0}
    out = base
    scale = (n - 1) / 32.0
    for sigma in SAFE_SIGMAS[:5]:
        if gain <= max_gain:
            break
        smooth = np.stack(
            [
                gaussian_filter(base[..., c] - ident[..., c], sigma * scale, mode="nearest")
                for c in range(3)
            ],
            axis=-1,
        )
        out = np.clip(ident + smooth, 0.0, 1.0)
        gain = worst(out)
        info["sigma"] = sigma
    if gain > max_gain:
        smoothed = out
        blend, gain = strongest_within(lambda b: worst(ident + b * (smoothed - ident)), max_gain)
        out = ident + blend * (smoothed - ident)
        info["blend"] = blend
    info["gain_after"] = round(gain, 3)
    if out is base:
        return lut, info
    table = out.astype(np.float32)
    return LUT3D(table, domain_min=lut.domain_min, domain_max=lut.domain_max, title=lut.title), info


def strongest_within(measure: Callable[[float], float], max_gain: float) -> tuple[float, float]:
    """The first of :data:`BLEND_STEPS` (the largest share of a look, blended with the identity)
    whose ``measure`` (a local gain) is at most ``max_gain``, and that gain; the last step (0:
    none of the look) when no step is within. For a look whose full strength is over the bound:
    :func:`bound_photo_gain`, the learner's guard and the image-adaptive model's per-photo
    check all scale back this way."""
    blend, gain = 0.0, math.inf
    for blend in BLEND_STEPS:
        gain = measure(blend)
        if gain <= max_gain:
            break
    return blend, gain


def _balanced_subset(cell: np.ndarray, counts: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``limit`` pixels: about ``cap`` random ones per color cell (all of a
    cell with fewer), ``cap`` the largest that keeps the expected total within ``limit``."""
    c = np.sort(counts[counts > 0])
    cum = np.concatenate([[0.0], np.cumsum(c)])
    # total kept at cap k: sum(min(c, k)) = cum[j] + k * (len - j), j = cells with c < k
    lo, hi = 1, int(c[-1])
    while lo < hi:
        mid = (lo + hi + 1) // 2
        j = int(np.searchsorted(c, mid))
        if cum[j] + mid * (c.size - j) <= limit:
            lo = mid
        else:
            hi = mid - 1
    # each pixel kept with probability min(1, cap / count of its cell): the expected count per
    # cell is min(count, cap) without sorting millions of pixels by cell (a stable argsort took
    # ~1 s of a 3 s budget on 3 x 1200 px)
    rng = np.random.default_rng(seed)
    return np.flatnonzero(rng.random(cell.size) * counts[cell] < lo)


def _monotonic_refine(
    x: np.ndarray,
    mats: list[sp.csr_matrix],
    rhs: np.ndarray,
    diag: np.ndarray,
    n: int,
    opts: DLUTOptions,
    deadline: float,
) -> tuple[np.ndarray, int]:
    """Add ``monotonic * sum(relu(-dY)^2)`` over lattice edges (Y = output luma) by active sets."""
    d = _difference_ops(n)
    weight = opts.monotonic * (n - 1)
    total = 0
    for _ in range(3):
        active = (d @ (x @ _LUMA)) < 0
        if not active.any():
            break
        da = d[np.flatnonzero(active)]
        coupling = (da.T @ da).tocsr()

        def matvec(v: np.ndarray, coupling: sp.csr_matrix = coupling) -> np.ndarray:
            base = np.stack([mats[c] @ v[:, c] for c in range(3)], axis=1)
            return base + weight * np.outer(coupling @ (v @ _LUMA), _LUMA)

        diag_c = diag + weight * np.outer(coupling.diagonal(), _LUMA**2)
        x, it = _pcg(
            matvec,
            rhs,
            x,
            diag_c,
            max_iters=opts.max_iters,
            tol=opts.tol,
            deadline=deadline,
            coupled=True,
        )
        total += it
    return x, total


# ---------------------------------------------------------------------------------------------
# StyleModel
# ---------------------------------------------------------------------------------------------
class DLUTModel(LUTStyle):
    """A fitted ``dlut`` style: its LUT (applied with the numba path) and the fit's options."""

    def __init__(self, lut: LUT3D, info: dict[str, Any] | None = None) -> None:
        super().__init__(lut, kind="dlut", info=info)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], kind: str | None = None) -> DLUTModel:
        base = LUTStyle.from_state_dict(state, kind="dlut")
        return cls(base.lut, info=base.info)


def _training_pixels(pairs: list[TrainingPair]) -> tuple[np.ndarray, np.ndarray]:
    srcs, dsts = [], []
    for i, pair in enumerate(pairs):
        if pair.before.shape != pair.after.shape:
            raise ValueError(
                f"pair {i}: before {pair.before.shape} and after {pair.after.shape} differ"
            )
        keep = ~np.asarray(pair.holdout, bool).reshape(-1)
        srcs.append(np.asarray(pair.before, np.float32).reshape(-1, 3)[keep])
        dsts.append(np.asarray(pair.after, np.float32).reshape(-1, 3)[keep])
    return np.concatenate(srcs), np.concatenate(dsts)


def fit(
    pairs: list[TrainingPair],
    *,
    options: dict[str, Any] | None = None,
    time_budget_s: float = 60.0,
    progress: ProgressFn = no_progress,
    device: torch.device | str | None = None,
) -> DLUTModel:
    """Fit a ``dlut`` style to the non-held-out pixels of ``pairs`` (see :class:`DLUTOptions`).

    With one pair and no ``mixed_smoothness`` in ``options``, it is :data:`ONE_PAIR_MIXED`."""
    opts = DLUTOptions.from_dict(options)
    if not pairs:
        raise ValueError("dlut needs at least one before/after pair")
    if len(pairs) == 1 and "mixed_smoothness" not in (options or {}):
        # one photo's colors leave the multilinear (rg, rb, gb, rgb) modes of the axis-only
        # prior unconstrained; the mixed differences extrapolate them as affine instead
        # (module docstring, "One pair")
        opts.mixed_smoothness = ONE_PAIR_MIXED
    src, dst = _training_pixels(pairs)
    lut, info = fit_lut(src, dst, options=opts, time_budget_s=time_budget_s, progress=progress)
    info["options"] = asdict(opts)
    return DLUTModel(lut, info=info)
