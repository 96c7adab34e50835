"""The common learning entry point, model persistence and style loading.

:func:`learn_style` is what the Celery task and the CLI call: it checks the inputs and options
(:mod:`app.ml.options`), brings every image to float32 at a working size, holds out ~10 % of the
pixels of a single pair (16x16-pixel tiles chosen by a seeded RNG; with 2+ pairs whole photos
are held out instead and every fit uses every pixel of its photos), picks the device, runs the
model's fit function (retrying at half the working size when a fit runs out of memory) and
measures it.

Honest metrics: with 2 or more pairs, ``metrics["holdout"]`` is k-fold by photo (k = min(4,
pairs); photo i is in fold i mod k): each fold is fitted on the other photos and scored on its
whole held-out photos, which is what a user sees on new photos. ``metrics["identity_holdout"]``
scores doing nothing on the same photos. With one pair ``holdout`` is null and
``holdout_reason`` says why. ``metrics["fit"]`` is the training error of the final fit (on all
photos); with one pair, ``metrics["heldout_pixels"]`` is its error on the held-out tiles of
that photo (optimistic: same photo). The folds and the final fit share the caller's
``time_budget_s``.

Never worse than doing nothing: on the out-of-fold predictions (one pair: the held-out pixels)
:func:`best_strength` picks the largest share ``alpha`` in [0, 1] of the style (blended with
the identity, as ``apply(image, strength)`` does) that leaves the held-out photos (pooled) no
further from their after images than doing nothing, in mean ΔE00; the final style
keeps it (:func:`with_strength`: baked into a LUT style's table, else a :class:`StrengthStyle`),
``metrics["strength"]`` records it, and every holdout figure is measured at it.

No tearing, any model: after the final fit and its strength, :func:`bound_style_gain` checks
the p99.9 local gain of the style on the training photos against :data:`STYLE_GAIN`
(3.9; the goal is 4): a table style is smoothed, anything else scaled back toward the identity;
``metrics["local_gain_guard"]`` says what was done, and ``fit`` (and ``heldout_pixels``) are
measured on the style as returned. (A fitted ``adaptive_3dlut`` also bounds each photo's own
LUT when it grades it.)

Time: the whole learn (every fold, every candidate, the final fit) stays within one budget,
:data:`DEFAULT_TIME_BUDGET_S` (60 s) unless the caller gives ``time_budget_s``; each fit is
passed its share.

``auto`` fits the :data:`AUTO_CANDIDATES` within the budget, keeps the best by holdout ΔE00
(one pair: by held-out pixels) and records the choice and every candidate's score and time in
``metrics["auto"]``. ``adaptive_3dlut`` with 2+ pairs chooses between its own
:data:`ADAPTIVE_CANDIDATES` (published weights, fine-tuned, global LUT) the same way, on the same
held-out photos as its holdout, and records it in ``metrics["selection"]`` (see
:func:`_adaptive_candidates`).

Model names: ``dlut`` (:mod:`app.ml.dlut`), ``nilut`` (:mod:`app.ml.nilut`), ``adaptive_3dlut``
(:mod:`app.ml.adaptive_3dlut`), imported lazily through the :data:`fitters` registry (tests
replace entries, e.g. with a fitter that raises an out-of-memory error once). References only
(no pairs) with ``dlut`` or ``nilut`` learn an unpaired color transfer
(:func:`app.ml.transfer.fit_references`, kind ``transfer``); with pairs given, references are
not used (``metrics["references_ignored"]`` says how many).

Persistence: ``model.pt`` is ``torch.save`` of ``{"kind", "format_version", "state", "metrics",
"meta"}`` where ``state`` is the model's ``state_dict()`` (tensors, numbers, strings), loadable
with ``weights_only=True``. :func:`load_style` also accepts ``.cube`` (and other LUT formats), a
style directory, or a directory of published Image-Adaptive-3DLUT weights.
"""

from __future__ import annotations

import copy
import importlib
import io
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.ml.base import (
    FitFn,
    LearnInputError,
    ProgressFn,
    StyleModel,
    TrainingPair,
    no_progress,
)
from app.ml.coverage import ColorCoverage
from app.ml.lut import LUT3D, LUTStyle, identity_table, plain_value
from app.ml.options import AUTO_CANDIDATES, validate_options

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUTO_CANDIDATES",
    "DEFAULT_TIME_BUDGET_S",
    "FORMAT_VERSION",
    "HOLDOUT_FOLDS",
    "MAX_ITEMS",
    "MODELS",
    "LearnInputError",
    "LearnResult",
    "StrengthStyle",
    "best_strength",
    "bound_style_gain",
    "fitters",
    "is_out_of_memory",
    "learn_style",
    "load_style",
    "load_style_bytes",
    "make_holdout",
    "register_kind",
    "save_style",
    "save_style_bytes",
    "select_device",
    "style_loaders",
    "with_strength",
]

FORMAT_VERSION = 1
MODELS = ("dlut", "nilut", "adaptive_3dlut")
MAX_ITEMS = 16
BAKE_SIZE = 33
DEFAULT_WORKING_SIZE = {"dlut": 1200, "nilut": 1200, "adaptive_3dlut": 1200, "transfer": 512}
MIN_WORKING_SIZE = 64
OOM_RETRIES = 3
# models whose pairs photo_gains normalizes (2+ pairs). adaptive_3dlut too: its classifier
# cannot learn each photo's own exposure from 4 photos, and its global candidate is a dlut fit
# (real_edits, golden_years_film: -0.51 / +1.57 -> +0.60 / +3.23 dB worst / mean over doing
# nothing; teal_and_orange_cinema -3.11 / +2.11 -> -4.21 / +4.32, like dlut's -4.09 / +4.23)
PHOTO_GAIN_MODELS = ("dlut", "nilut", "adaptive_3dlut")
HOLDOUT_FRACTION = 0.1
# adaptive_3dlut's candidates with 2+ pairs, chosen by the outer holdout (ties: the earlier one,
# so the published weights win a tie and a fine-tune never ends below them on held-out photos)
ADAPTIVE_CANDIDATES = ("initial", "fine_tuned", "global")
HOLDOUT_FOLDS = 4  # k of the k-fold-by-photo holdout (k = min(4, pairs))
GAINS_SHARE = 0.3  # of a learn's budget for all its photo_gains estimates (_estimate_gains_first)
DEFAULT_TIME_BUDGET_S = 60.0  # a whole learn (folds, candidates, final fit), any model
HOLDOUT_TILE = 16
METRIC_PIXELS = 200_000


class _LazyFit:
    """``module.fit``, imported on first use (the model modules pull in torch)."""

    def __init__(self, module: str, attr: str = "fit") -> None:
        self.module = module
        self.attr = attr

    def __call__(self, pairs: list[TrainingPair], **kwargs: Any) -> StyleModel:
        fn = getattr(importlib.import_module(self.module), self.attr)
        return fn(pairs, **kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<lazy {self.module}.{self.attr}>"


#: model name -> fit function (:data:`app.ml.base.FitFn`); tests may replace entries.
fitters: dict[str, FitFn | Callable[..., StyleModel]] = {
    "dlut": _LazyFit("app.ml.dlut"),
    "nilut": _LazyFit("app.ml.nilut"),
    "adaptive_3dlut": _LazyFit("app.ml.adaptive_3dlut"),
}


def _fit_references(references: list[np.ndarray], **kwargs: Any) -> StyleModel:
    from app.ml.transfer import fit_references

    return fit_references(references, **kwargs)


#: the unpaired (references only) fitter; replaceable like :data:`fitters`.
reference_fitter: Callable[..., StyleModel] = _fit_references


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass
class LearnResult:
    """What :func:`learn_style` returns: the model, its metrics and its baked 33^3 LUT."""

    model: StyleModel
    metrics: dict[str, Any]
    lut: LUT3D
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The ``model.pt`` bytes (see :func:`save_style_bytes`)."""
        return save_style_bytes(self.model, self.metrics, self.meta)

    def save(self, directory: str | Path, *, title: str | None = None) -> Path:
        """Write ``model.pt``, ``metadata.json`` and ``lut.cube`` into ``directory``."""
        return save_style(
            self.model, directory, metrics=self.metrics, meta=self.meta, lut=self.lut, title=title
        )


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError``, ``MemoryError`` and "out of memory" errors."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given (``"auto"`` means not given), else CUDA when available, else CPU."""
    import torch

    if device is not None and str(device) not in ("", "auto"):
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to_float_image(image: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise LearnInputError(
            f"{what}: expected an HxWx3 RGB image, got an array of shape {arr.shape}"
        )
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise LearnInputError(f"{what}: image is too small ({arr.shape[1]}x{arr.shape[0]})")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1 / 255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(1 / 65535)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise LearnInputError(f"{what}: image contains NaN or infinite values")
        return np.clip(out, 0.0, 1.0)
    raise LearnInputError(
        f"{what}: unsupported pixel type {arr.dtype} (use uint8, uint16 or float)"
    )


def _resize(image: np.ndarray, size: tuple[int, int], *, exact: bool) -> np.ndarray:
    """Resize float32 HxWx3 to (width, height). ``exact`` keeps pixel values (nearest samples):
    used when both images of a pair have the same size, so each sample stays a true pair of
    corresponding colors; otherwise an antialiased box filter."""
    from PIL import Image

    w, h = size
    if (image.shape[1], image.shape[0]) == (w, h):
        return image
    if exact:
        ys = ((np.arange(h) + 0.5) * image.shape[0] / h).astype(np.int64)
        xs = ((np.arange(w) + 0.5) * image.shape[1] / w).astype(np.int64)
        return np.ascontiguousarray(image[ys][:, xs])
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (w, h), Image.Resampling.BOX
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def _working_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = min(1.0, long_side / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def make_holdout(
    height: int, width: int, *, seed: int, fraction: float = HOLDOUT_FRACTION
) -> np.ndarray:
    """A deterministic bool HxW mask holding out ~``fraction`` of 16x16 tiles (True = held out)."""
    ty, tx = math.ceil(height / HOLDOUT_TILE), math.ceil(width / HOLDOUT_TILE)
    rng = np.random.default_rng([seed, height, width])
    n_tiles = ty * tx
    n_out = max(1, round(n_tiles * fraction)) if n_tiles > 1 else 0
    tiles = np.zeros(n_tiles, bool)
    tiles[rng.choice(n_tiles, n_out, replace=False)] = True
    mask = np.repeat(np.repeat(tiles.reshape(ty, tx), HOLDOUT_TILE, 0), HOLDOUT_TILE, 1)
    return np.ascontiguousarray(mask[:height, :width])


def _check_pair(i: int, before: np.ndarray, after: np.ndarray) -> None:
    bh, bw = before.shape[:2]
    ah, aw = after.shape[:2]
    if (bh, bw) == (ah, aw):
        return
    ratio_b, ratio_a = bw / bh, aw / ah
    if abs(math.log(ratio_b / ratio_a)) > 0.01:
        raise LearnInputError(
            f"pair {i}: before is {bw}x{bh} but after is {aw}x{ah}; their aspect ratios differ "
            f"({ratio_b:.3f} vs {ratio_a:.3f}), so the after image cannot be aligned to the before "
            "image (crop or rotate it the same way)"
        )


def _prepare_pairs(
    raw_pairs: list[tuple[np.ndarray, np.ndarray]], long_side: int, seed: int
) -> list[TrainingPair]:
    """Every pair at the working size. Held-out tiles (:func:`make_holdout`) only for ONE pair,
    whose held-out pixels set its strength and are all it can be checked on; with 2+ pairs whole
    photos are held out (k-fold), so every fit uses every pixel of its photos: the rare colors at
    the edge of the seen gamut, from which a fit extrapolates, are the ones a 10 % tile mask cost
    (``ml_quality``, 3 pairs: 0.368 / 1.587 -> 0.347 / 1.521 ΔE00 mean / p95)."""
    out = []
    for i, (before, after) in enumerate(raw_pairs):
        bh, bw = before.shape[:2]
        size = _working_size(bw, bh, long_side)
        same = before.shape == after.shape
        b = _resize(before, size, exact=same)
        a = _resize(after, size, exact=same)
        held = (
            make_holdout(size[1], size[0], seed=seed + i)
            if len(raw_pairs) == 1
            else np.zeros((size[1], size[0]), bool)
        )
        out.append(TrainingPair(b, a, held))
    return out


def _subsample(mask_idx: np.ndarray, limit: int) -> np.ndarray:
    if mask_idx.size <= limit:
        return mask_idx
    return mask_idx[np.linspace(0, mask_idx.size - 1, limit).astype(np.int64)]


# ---------------------------------------------------------------------------------------------
# scoring and strength
# ---------------------------------------------------------------------------------------------
@dataclass
class _Samples:
    """Corresponding pixel samples (N x 3 float32): the input, the style's output at full
    strength, and the wanted result; one entry per photo in ``photos``."""

    before: list[np.ndarray] = field(default_factory=list)
    pred: list[np.ndarray] = field(default_factory=list)
    after: list[np.ndarray] = field(default_factory=list)

    def add(self, model: StyleModel, pair: TrainingPair, idx: np.ndarray | None) -> None:
        before = pair.before.reshape(-1, 3)
        after = pair.after.reshape(-1, 3)
        sel = np.arange(before.shape[0]) if idx is None else idx
        pred = np.clip(model.apply(pair.before, 1.0), 0.0, 1.0).reshape(-1, 3)
        self.before.append(before[sel])
        self.pred.append(pred[sel])
        self.after.append(after[sel])

    def joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(  # type: ignore[return-value]
            np.concatenate(x).astype(np.float64) if x else np.empty((0, 3))
            for x in (self.before, self.pred, self.after)
        )


def _scores(pred: np.ndarray, want: np.ndarray) -> dict[str, float]:
    from app.ml.metrics import delta_e2000, psnr

    de = delta_e2000(pred, want)
    value = psnr(pred, want)
    return {
        "psnr": round(value, 3) if math.isfinite(value) else 100.0,
        "delta_e2000_mean": round(de["mean"], 4),
        "delta_e2000_p95": round(de["p95"], 4),
    }


STRENGTH_STEPS = 20  # strengths tried: 0, 0.05, ..., 1
STRENGTH_PIXELS = 60_000  # pixel samples the strength search scores at most (all photos)


def best_strength(
    before: np.ndarray,
    pred: np.ndarray,
    after: np.ndarray,
    sizes: Sequence[int] | None = None,
) -> float:
    """The largest strength ``alpha`` in [0, 1] (steps of 0.05) at which the blend ``before +
    alpha * (pred - before)`` leaves no photo further from ``after`` than doing nothing (alpha 0),
    in mean CIEDE2000 per photo; ``sizes`` splits the rows into photos (None: one photo).

    Why "largest harmless" rather than "best": the evidence comes from fits that saw fewer photos
    than the final one (k-fold), so it is pessimistic; shrinking a style that helps every
    held-out photo would throw away what the final fit learned. A style that harms one is cut
    back until it no longer does, down to nothing.

    >>> b = np.zeros((4, 3)); a = np.full((4, 3), 0.5)
    >>> best_strength(b, np.full((4, 3), 1.0), a), best_strength(b + 0.5, b + 1.0, b + 0.2)
    (1.0, 0.0)
    >>> after = np.r_[b[:2] + 0.75, b[:2] + 0.55]  # two photos: one wants more than the other
    >>> best_strength(b + 0.5, b + 1.0, after, sizes=[2, 2]), best_strength(b + 0.5, b + 1.0, after)
    (0.2, 0.6)
    """
    from app.ml.metrics import delta_e2000

    rows = [np.asarray(x, np.float64).reshape(-1, 3) for x in (before, pred, after)]
    bounds = np.cumsum([0, *(sizes or [rows[0].shape[0]])])
    alphas = np.linspace(0.0, 1.0, STRENGTH_STEPS + 1)
    ok = np.ones(len(alphas), bool)
    per_photo = max(1000, STRENGTH_PIXELS // max(1, len(bounds) - 1))
    for lo, hi in itertools.pairwise(bounds):
        if hi <= lo:
            continue
        idx = lo + _subsample(np.arange(hi - lo), per_photo)
        b, p, a = (x[idx] for x in rows)
        scores = np.array([delta_e2000(_blend(b, p, float(al)), a)["mean"] for al in alphas])
        ok &= scores <= scores[0] + 1e-9
    harmless = int(np.argmin(ok)) if not ok.all() else len(alphas)  # first harmful step
    return round(float(alphas[max(0, harmless - 1)]), 3)


def _blend(before: np.ndarray, pred: np.ndarray, alpha: float) -> np.ndarray:
    return np.clip(before + alpha * (pred - before), 0.0, 1.0)


def _score_samples(samples: _Samples, alpha: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the style at ``alpha``, doing nothing) scored on ``samples``, with per-photo PSNR."""
    from app.ml.metrics import psnr

    before, pred, after = samples.joined()
    styled: dict[str, Any] = dict(_scores(_blend(before, pred, alpha), after))
    ident: dict[str, Any] = dict(_scores(before, after))
    styled["per_photo_psnr"] = [
        round(min(100.0, psnr(_blend(b, p, alpha), a)), 3)
        for b, p, a in zip(samples.before, samples.pred, samples.after, strict=True)
    ]
    ident["per_photo_psnr"] = [
        round(min(100.0, psnr(b, a)), 3) for b, a in zip(samples.before, samples.after, strict=True)
    ]
    return styled, ident


class StrengthStyle:
    """A style whose full strength is ``strength`` (< 1) of its inner model's: what
    :func:`learn_style` keeps when held-out photos show the full style overshoots. ``apply(img,
    s)`` is ``inner.apply(img, s * strength)``; ``bake`` blends the inner LUT with the identity.
    Saved as the inner model's checkpoint plus a top-level ``"strength"`` (see
    :func:`save_style_bytes`). LUT-backed styles get the blend baked into their table instead."""

    def __init__(self, inner: StyleModel, strength: float) -> None:
        self.inner = inner
        self.strength = float(strength)
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"StrengthStyle({self.inner!r}, strength={self.strength})"

    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        return self.inner.apply(image, float(strength) * self.strength)

    def bake(self, size: int = 33) -> LUT3D:
        return _blend_lut(self.inner.bake(size), self.strength)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()


def _blend_lut(lut: LUT3D, alpha: float) -> LUT3D:
    ident = identity_table(lut.size)
    span = (lut.domain_max - lut.domain_min).astype(np.float32)
    ident = lut.domain_min.astype(np.float32) + ident * span
    table = ident + np.float32(alpha) * (lut.table - ident)
    return LUT3D(table, domain_min=lut.domain_min, domain_max=lut.domain_max, title=lut.title)


def with_strength(style: StyleModel, alpha: float) -> StyleModel:
    """``style`` at ``alpha`` of its strength: the same object at 1, a LUT-backed style with the
    blend baked into a copy of its table, else a :class:`StrengthStyle` (one level: a
    :class:`StrengthStyle` gets its own strength scaled)."""
    if alpha >= 1.0:
        return style
    if isinstance(style, LUTStyle):
        out = copy.copy(style)
        out.lut = _blend_lut(style.lut, alpha)
        kept = float(style.info.get("strength", 1.0)) * alpha
        out.info = {**style.info, "strength": round(kept, 4)}
        return out
    if isinstance(style, StrengthStyle):
        return StrengthStyle(style.inner, style.strength * alpha)
    return StrengthStyle(style, alpha)


STYLE_GAIN = 3.9  # p99.9 local gain bound of a learned style on its training photos (goal: 4)
GAIN_PAIRS = 300_000  # neighbour pairs per photo the bound is measured on (full resolution)
EDIT_GAIN_CAP = 5.0  # the most a consistent set of edits may lift the bound to (see _gain_bound)


def bound_style_gain(
    style: StyleModel, photos: Sequence[np.ndarray], *, max_gain: float = STYLE_GAIN
) -> tuple[StyleModel, dict[str, Any]]:
    """Bound the p99.9 local gain (:func:`app.ml.metrics.local_gain`) ``style`` gives on
    ``photos`` (the training photos at the working size, HxWx3 float in [0, 1]) by
    ``max_gain``, for every model, after the fit.

    Why here: the table-level bounds (:func:`app.ml.dlut.make_safe`) exist only for table fits,
    and even those bound the lattice's 99th percentile, not a photo's 99.9th (measured: a
    ``nilut`` style reached 4.12 on one of its own training photos, an ``adaptive_3dlut``
    fine-tune 5.57). A LUT-backed style (``dlut``, ``transfer``) is smoothed toward its own
    smooth version first (:func:`app.ml.dlut.bound_photo_gain`); any other model, or a table
    still over the bound, is scaled back toward the identity (the strengths of
    :func:`app.ml.dlut.strongest_within`, as ``apply(image, strength)`` blends) until every photo
    is within it. Measured at full resolution on :data:`GAIN_PAIRS` evenly spaced neighbour
    pairs per photo (what a user sees: on 12 look x photo cases a 512 px subsample read from
    0.34 lower to 0.28 higher than all pairs at 1200 px; 300,000 pairs read within 0.03 of all).
    The bound itself is chosen by :func:`_gain_bound`. Returns the style and ``{"max_gain",
    "gain_before", "gain_after", "action"}``."""
    from app.ml.dlut import bound_photo_gain, strongest_within
    from app.ml.metrics import local_gain

    bound = float(max_gain)
    full = [np.ascontiguousarray(np.asarray(img, np.float32)) for img in photos]

    def worst(candidate: StyleModel, strength: float = 1.0) -> float:
        return max(
            (
                float(
                    local_gain(
                        p,
                        np.clip(candidate.apply(p, strength), 0.0, 1.0),
                        max_pixels=GAIN_PAIRS,
                    )["p999"]
                )
                for p in full
            ),
            default=0.0,
        )

    before = worst(style)
    info: dict[str, Any] = {
        "max_gain": bound,
        "gain_before": round(before, 3),
        "action": "none",
        "what": "p99.9 local gain on the training photos",
    }
    gain = before
    if gain > bound and isinstance(style, LUTStyle):
        lut, photo_info = bound_photo_gain(
            style.lut, full, max_gain=bound, max_side=None, max_pixels=GAIN_PAIRS
        )
        if lut is not style.lut:
            smoothed = copy.copy(style)
            smoothed.lut = lut
            smoothed.info = {**style.info, "photo_gain": photo_info}
            style, gain = smoothed, float(photo_info["gain_after"])
            info["action"] = "smoothed"
    if gain > bound:
        alpha, gain = strongest_within(lambda a: worst(style, a), bound)
        style = with_strength(style, alpha)
        info.update(action="scaled", strength=alpha)
    info["gain_after"] = round(gain, 3)
    return style, info


# ---------------------------------------------------------------------------------------------
# fitting with out-of-memory retries, and k-fold by photo
# ---------------------------------------------------------------------------------------------
class _Fitter:
    """Runs one model's fit on a subset of the photos, preparing them at the working size and
    retrying at half the size when the fit runs out of memory (the smaller size then sticks).

    With ``photo_gains`` (models in :data:`PHOTO_GAIN_MODELS`, 2+ photos in the subset) each
    photo's own exposure and white balance are estimated on that subset alone
    (:func:`app.ml.photo_gains.estimate_photo_gains`, so a fold's gains never see its held-out
    photo) and taken out of its "before" image; the estimate is cached per subset (``auto``'s
    candidates share it) and its time comes out of the fit's budget. Whether to estimate per
    subset at all is decided once, on all photos (one bit of the held-out photo reaches a fold)."""

    def __init__(
        self,
        model: str,
        floats: list[tuple[np.ndarray, np.ndarray]],
        opts: dict[str, Any],
        long_side: int,
        seed: int,
        dev: torch.device,
        report: ProgressFn,
        cache: dict[Any, Any],
        photo_gains: bool = True,
    ) -> None:
        self.model, self.floats, self.opts = model, floats, opts
        self.long_side, self.seed, self.dev, self.report = long_side, seed, dev, report
        self.cache = cache
        self.photo_gains = photo_gains and model in PHOTO_GAIN_MODELS
        self.retries = 0

    def gains(
        self, indices: Sequence[int], max_seconds: float | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Per-photo log2 gains of ``indices`` (estimated on those photos only) and their info;
        ``max_seconds`` bounds an estimate not cached yet (default: photo_gains' own bound)."""
        from app.ml.photo_gains import MAX_SECONDS, estimate_photo_gains

        everything = tuple(range(len(self.floats)))
        key = ("photo_gains", self.long_side, tuple(indices))
        if key not in self.cache:
            if (
                tuple(indices) != everything
                and not self.gains(everything, max_seconds)[1]["applied"]
            ):
                # edits that one look explains as a whole are consistent in every subset too:
                # one estimate instead of one per fold (LUT-made pairs lost fold time to them)
                info = {"applied": False, "reason": "not needed on all photos"}
                self.cache[key] = (np.zeros((len(indices), 3)), info)
            else:
                pairs = [self.prepared[i] for i in indices]
                bound = MAX_SECONDS if max_seconds is None else max_seconds
                self.cache[key] = estimate_photo_gains(pairs, seed=self.seed, max_seconds=bound)
        return self.cache[key]  # type: ignore[no-any-return]

    @property
    def prepared(self) -> list[TrainingPair]:
        if self.long_side not in self.cache:
            self.cache[self.long_side] = _prepare_pairs(self.floats, self.long_side, self.seed)
        return self.cache[self.long_side]

    def fit(
        self, indices: list[int], budget_s: float, lo: float, hi: float, *, fold: bool = False
    ) -> StyleModel:
        fitter = fitters[self.model]
        opts = dict(self.opts)
        if fold and self.model == "dlut":
            opts.setdefault("budget_pixels", True)  # a fold fit may trade pixels for time
        while True:
            pairs = [self.prepared[i] for i in indices]
            if self.photo_gains and len(indices) >= 2:
                from app.ml.photo_gains import normalize_pairs

                t0 = time.perf_counter()
                pairs = normalize_pairs(pairs, self.gains(indices)[0])
                budget_s -= time.perf_counter() - t0
            try:
                return fitter(
                    pairs,
                    options=opts,
                    time_budget_s=max(0.5, budget_s),
                    progress=lambda f, m: self.report(lo + (hi - lo) * min(max(f, 0.0), 1.0), m),
                    device=self.dev,
                )
            except Exception as exc:
                if (
                    not is_out_of_memory(exc)
                    or self.retries >= OOM_RETRIES
                    or self.long_side // 2 < MIN_WORKING_SIZE
                ):
                    raise
                self.retries += 1
                self.long_side //= 2
                if "max_pixels" in self.opts:
                    self.opts["max_pixels"] = max(1000, int(self.opts["max_pixels"]) // 2)
                    opts["max_pixels"] = self.opts["max_pixels"]
                _free_cuda(self.dev)
                self.report(lo, f"out of memory; retrying at working size {self.long_side} px")


def _outer_selection(model: str, opts: dict[str, Any], n_pairs: int) -> dict[str, Any]:
    """``opts`` for one model's fits inside a k-fold learn. ``nilut``'s and ``adaptive_3dlut``'s
    own leave-one-photo-out selection (``select="auto"``) repeats, nested in every fold, what
    the outer holdout and :func:`best_strength` (strength 0 = identity) already decide, on a
    fraction of the fold's time: with auto's shares (~4 s a fold) every nilut fold came out as the
    identity, and on real_edits (golden_years_film) the adaptive folds chose the identity or the
    published weights (holdout 12.49 ΔE00) while the final fit, with more time, chose its global
    LUT (actual 6.79): the holdout judged another model. With 2+ pairs both fit their network
    directly unless the caller chose ``select``; ``adaptive_3dlut`` on its own then compares
    its candidates on the outer folds (:func:`_adaptive_candidates`)."""
    if model in ("nilut", "adaptive_3dlut") and n_pairs >= 2 and "select" not in opts:
        return {**opts, "select": "fine_tuned"}
    return opts


def _folds(n_pairs: int) -> list[list[int]]:
    """Photo indices held out by each fold: k = min(HOLDOUT_FOLDS, n) folds, photo i in fold
    i mod k (no folds for one pair)."""
    if n_pairs < 2:
        return []
    k = min(HOLDOUT_FOLDS, n_pairs)
    return [[i for i in range(n_pairs) if i % k == f] for f in range(k)]


def _train_of(n_pairs: int, test: list[int]) -> list[int]:
    """The photos a fold fits on: all but its held-out ``test`` photos."""
    return [i for i in range(n_pairs) if i not in test]


def _estimate_gains_first(fitter: _Fitter, n_pairs: int, budget_s: float) -> None:
    """Estimate the per-photo gains of every fold's photos and of all photos before any fit
    (cached in the fitter's cache, which ``auto``'s candidates share), so that no fold or
    candidate pays for them out of its own share: estimated inside the folds, the first fold
    paid two estimates and, in ``auto``, the first candidate paid all five (~12 s of its ~14 s
    on real_edits), which left dlut's fold fits ~0.5 s each, stopped before their second pass.
    Together they get about :data:`GAINS_SHARE` of ``budget_s`` (no round of an estimate
    starts past its share; the first always runs): a 12 s learn on four small photos spent 11 s
    on them. At the default 60 s each share is 3.3 s, above the 2.3-3.1 s they take."""
    if not fitter.photo_gains or n_pairs < 2:
        return
    from app.ml.photo_gains import MAX_SECONDS

    folds = _folds(n_pairs)
    bound = min(MAX_SECONDS, GAINS_SHARE * max(budget_s, 0.0) / (len(folds) + 1))
    fitter.report(0.03, "estimating each photo's own exposure and white balance")
    fitter.gains(range(n_pairs), bound)
    for test in folds:
        fitter.gains(_train_of(n_pairs, test), bound)


def _out_of_fold(
    fitter: _Fitter, n_pairs: int, deadline: float, reserve_s: float, lo: float, hi: float
) -> _Samples:
    """Fit once per fold on the other photos and sample its output on the whole held-out photos.
    Each fold gets an equal share of the time left before ``deadline`` less ``reserve_s``."""
    folds = _folds(n_pairs)
    samples = _Samples()
    per_photo = max(1000, METRIC_PIXELS // max(1, n_pairs))
    for f, test in enumerate(folds):
        train = _train_of(n_pairs, test)
        left = deadline - time.perf_counter() - reserve_s
        step = (hi - lo) / len(folds)
        fitter.report(lo + step * f, f"holding out photo(s) {', '.join(str(i) for i in test)}")
        model = fitter.fit(
            train, left / (len(folds) - f), lo + step * f, lo + step * (f + 1), fold=True
        )
        for i in test:
            pair = fitter.prepared[i]
            idx = _subsample(np.arange(pair.before.shape[0] * pair.before.shape[1]), per_photo)
            samples.add(model, pair, idx)
    return samples


def _pixel_samples(model: StyleModel, pairs: list[TrainingPair]) -> tuple[_Samples, _Samples]:
    """(held-out pixels, training pixels) of ``pairs`` under ``model`` at full strength."""
    per_pair = max(1000, METRIC_PIXELS // max(1, len(pairs)))
    held, train = _Samples(), _Samples()
    for pair in pairs:
        mask = pair.holdout.reshape(-1)
        pred = np.clip(model.apply(pair.before, 1.0), 0.0, 1.0).reshape(-1, 3)
        before, after = pair.before.reshape(-1, 3), pair.after.reshape(-1, 3)
        for group, sel in ((held, np.flatnonzero(mask)), (train, np.flatnonzero(~mask))):
            idx = _subsample(sel, per_pair)
            if idx.size:
                group.before.append(before[idx])
                group.pred.append(pred[idx])
                group.after.append(after[idx])
    return held, train


@dataclass
class _Outcome:
    """One model's evidence and (after :func:`_final_fit`) its style fitted on all photos."""

    model: str
    fitter: _Fitter
    metrics: dict[str, Any] = field(default_factory=dict)
    strength: float = 1.0
    score: float = math.inf  # lower is better: the ΔE00 mean that compares candidates
    seconds: float = 0.0
    style: StyleModel | None = None


def _holdout(
    name: str,
    fitter: _Fitter,
    n_pairs: int,
    deadline: float,
    reserve_s: float,
    lo: float,
    hi: float,
) -> _Outcome:
    """The k-fold-by-photo holdout (2+ pairs) and the strength chosen on its out-of-fold
    predictions; ``reserve_s`` of the time before ``deadline`` is left for the final fit."""
    start = time.perf_counter()
    out = _Outcome(name, fitter)
    folds = _folds(n_pairs)
    if not folds:
        return out
    oof = _out_of_fold(fitter, n_pairs, deadline, reserve_s, lo, hi)
    before, pred, after = oof.joined()
    # pooled over the held-out photos: per photo, with 2 pairs each fold fit has seen one photo,
    # and one photo it misjudges would cut a style that helps new photos (measured: a 2-pair
    # cold_shadows style, 0.12 ΔE00 on an unseen photo at full strength, went to nothing)
    out.strength = best_strength(before, pred, after)
    holdout, identity = _score_samples(oof, out.strength)
    full = _scores(pred, after)
    method = "leave-one-photo-out" if len(folds) == n_pairs else f"k-fold by photo (k={len(folds)})"
    holdout.update(
        n_photos=n_pairs,
        n_folds=len(folds),
        method=method + ": each fold fits on the other photos and scores its whole held-out photos",
        strength=out.strength,
        psnr_full_strength=full["psnr"],
        delta_e2000_mean_full_strength=full["delta_e2000_mean"],
    )
    out.metrics.update(holdout=holdout, identity_holdout=identity)
    out.score = holdout["delta_e2000_mean"]
    out.seconds = time.perf_counter() - start
    return out


def _gain_bound(prepared: list[TrainingPair], gains: dict[str, Any] | None) -> tuple[float, str]:
    """The local gain bound of the final style: :data:`STYLE_GAIN`, or, for edits that one look
    explains as a whole (2+ pairs, :mod:`app.ml.photo_gains` found nothing per photo to take
    out: a preset, a film LUT), as steep as those edits are themselves on the same photos (at
    most :data:`EDIT_GAIN_CAP`). Why: some real looks are steeper than 3.9 (on ``ml_quality``'s
    training photos, at full resolution, teal_and_orange_cinema reaches 4.2, protect_highlights
    4.8, color_pop 4.0), and bounding their faithful fits at 3.6 took ml_quality's unseen-photo
    error from 0.59 / 0.42 / 0.44 to 0.99 / 0.72 / 0.78 mean ΔE00 (color_pop, protect_highlights,
    teal). Inconsistent edits (per-photo exposure, brushes, JPEG noise: 6-11 on the real-like
    benchmark's pairs) say nothing about the look's own steepness, so they keep the default."""
    from app.ml.metrics import local_gain

    if gains is None or gains["applied"]:
        return STYLE_GAIN, "default"
    edits = max(
        float(local_gain(p.before, p.after, max_pixels=GAIN_PAIRS)["p999"]) for p in prepared
    )
    bound = min(max(STYLE_GAIN, edits), EDIT_GAIN_CAP)
    return round(bound, 3), f"consistent edits: as steep as the edits themselves ({edits:.2f})"


def _final_fit(out: _Outcome, n_pairs: int, deadline: float, lo: float, hi: float) -> _Outcome:
    """Fit on all photos, set the strength (one pair: chosen on the held-out pixels of its photo),
    bound its local gain on the training photos (:func:`bound_style_gain`) and measure the
    training error (and, one pair, the held-out pixels) of the style the user gets."""
    start = time.perf_counter()
    fitter = out.fitter
    fitter.report(lo, f"fitting {out.model} on all photos")
    style = fitter.fit(list(range(n_pairs)), deadline - time.perf_counter(), lo, hi)
    has_holdout = "holdout" in out.metrics
    held, train = _pixel_samples(style, fitter.prepared)  # the fitted style at full strength
    if not has_holdout:
        # one pair: the held-out tiles of its photo are all there is; keep the full style unless
        # they show it harms them (the same rule as with held-out photos, on ~10 % of one photo).
        out.strength = best_strength(*held.joined())
    # what photo_gains found on all photos (None: one pair, or a model or caller without it)
    gains = fitter.gains(range(n_pairs))[1] if fitter.photo_gains and n_pairs >= 2 else None
    bound, basis = _gain_bound(fitter.prepared, gains)
    style, guard = bound_style_gain(
        with_strength(style, out.strength), [p.before for p in fitter.prepared], max_gain=bound
    )
    guard["bound_basis"] = basis
    out.metrics["local_gain_guard"] = guard
    if gains is not None:
        out.metrics["photo_gains"] = gains
    shown = out.strength  # the samples above, blended at it, are what the user gets ...
    if guard["action"] != "none":  # ... unless the guard smoothed or scaled the style
        held, train = _pixel_samples(style, fitter.prepared)
        shown = 1.0
    if not has_holdout:  # one pair: its held-out tiles (2+ pairs hold out whole photos)
        scored, identity = _score_samples(held, shown)
        out.metrics.update(
            holdout=None,
            holdout_reason=(
                "one pair: no other photo to hold out, so the error on new photos is unknown; "
                "add a second pair (heldout_pixels is measured on unseen tiles of the same photo)"
            ),
            heldout_pixels={
                **{k: v for k, v in scored.items() if k != "per_photo_psnr"},
                "n_pixels": int(sum(int(x.holdout.sum()) for x in fitter.prepared)),
                "what": "unseen 16x16 tiles of the one training photo (optimistic: same photo)",
            },
            identity_heldout_pixels={k: v for k, v in identity.items() if k != "per_photo_psnr"},
        )
        out.score = scored["delta_e2000_mean"]
    b, p, a = train.joined()
    out.metrics["fit"] = {
        **_scores(_blend(b, p, shown), a),
        "n_pixels": int(sum(int((~x.holdout).sum()) for x in fitter.prepared)),
        "what": "training error: the final fit on its own training pixels",
    }
    alpha = out.strength
    if guard.get("strength") is not None:
        alpha = round(alpha * float(guard["strength"]), 4)
    out.metrics["strength"] = alpha
    out.metrics["strength_basis"] = (
        "held-out photos (out-of-fold predictions)"
        if has_holdout
        else "held-out pixels of the one pair"
    ) + ("; then lowered to bound the local gain" if guard["action"] == "scaled" else "")
    out.style = style
    out.seconds += time.perf_counter() - start
    return out


# ---------------------------------------------------------------------------------------------
# learn_style
# ---------------------------------------------------------------------------------------------
def learn_style(
    model: str,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    references: Sequence[np.ndarray] = (),
    *,
    options: dict[str, Any] | None = None,
    time_budget_s: float | None = None,
    progress: ProgressFn | None = None,
    device: str | None = None,
    init_weights: str | Path | None = None,
) -> LearnResult:
    """Learn a style from before/after ``pairs`` and/or ``references`` (HxWx3 uint8/uint16/float).

    ``model`` is one of :data:`MODELS` or ``"auto"`` (tries :data:`AUTO_CANDIDATES`, keeps the
    best on held-out photos). ``time_budget_s`` (default :data:`DEFAULT_TIME_BUDGET_S`) is the
    time of the whole learn (folds, candidates, final fit); ``options["time_budget_s"]`` may
    lower it. ``options`` are checked by :func:`app.ml.options.validate_options` (an
    :class:`~app.ml.options.OptionsError`, a :class:`LearnInputError`, names a bad one); the
    entry point itself reads ``working_size``, ``seed``, ``time_budget_s`` and, for ``auto``,
    ``candidates``. Raises :class:`LearnInputError` for unusable inputs.

    Metrics: ``holdout`` (2+ pairs: k-fold by photo, the error on photos the fit did not see,
    else null with ``holdout_reason``), ``identity_holdout`` (doing nothing on the same photos),
    ``fit`` (training error), ``heldout_pixels`` (one pair: unseen tiles of its photo),
    ``strength`` (the share of the style kept, chosen on held-out data), ``coverage`` (the
    colors its "before" images show, :class:`app.ml.coverage.ColorCoverage`), for ``auto``,
    ``auto`` (the choice and every candidate's score), and for ``adaptive_3dlut`` with 2+
    pairs, ``selection`` (the same for its published / fine-tuned / global-LUT candidates).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> photos = [rng.random((32, 48, 3)).astype(np.float32) for _ in range(2)]
    >>> result = learn_style("dlut", [(p, p ** 0.8) for p in photos], time_budget_s=20)
    >>> result.model.kind, result.lut.size, result.metrics["holdout"]["delta_e2000_mean"] < 2
    ('dlut', 33, True)
    >>> result.metrics["holdout"]["n_folds"], result.metrics["fit"]["delta_e2000_mean"] < 2
    (2, True)
    """
    report = progress or no_progress
    start = time.perf_counter()
    if model not in (*MODELS, "auto"):
        raise LearnInputError(
            f"unknown model {model!r}; expected one of {', '.join((*MODELS, 'auto'))}"
        )
    pairs = list(pairs)
    references = list(references)
    if not pairs and not references:
        raise LearnInputError("at least one before/after pair or reference image is needed")
    if len(pairs) + len(references) > MAX_ITEMS:
        raise LearnInputError(
            f"at most {MAX_ITEMS} pairs and references together, got {len(pairs) + len(references)}"
        )
    if not pairs and model == "adaptive_3dlut":
        raise LearnInputError(
            "adaptive_3dlut learns from before/after pairs; reference images alone are learned "
            "as a color transfer with model dlut, nilut or auto"
        )
    opts = validate_options(
        model if pairs or model == "auto" else "transfer", options, paired=bool(pairs)
    )
    if time_budget_s is None:
        time_budget_s = DEFAULT_TIME_BUDGET_S
    if "time_budget_s" in opts:
        time_budget_s = min(time_budget_s, float(opts.pop("time_budget_s")))
    if init_weights is not None:
        opts["init_weights"] = str(init_weights)
    seed = int(opts.get("seed", 0))
    if not pairs:
        if model == "auto":
            opts.pop("candidates", None)
            opts.pop("init_weights", None)
            opts = validate_options("transfer", opts, paired=False)
        result = _learn_transfer(model, references, opts, time_budget_s, report, start)
        if model == "auto":
            result.metrics["auto"] = {
                "chosen": "transfer",
                "criterion": "references only: the color transfer is the only candidate",
                "candidates": {"transfer": {"seconds": result.metrics["seconds"]}},
            }
            result.meta["model"] = "auto"
        return result

    floats: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (before, after) in enumerate(pairs):
        b = _to_float_image(before, f"pair {i} before")
        a = _to_float_image(after, f"pair {i} after")
        _check_pair(i, b, a)
        floats.append((b, a))
    report(0.02, "preparing images")
    dev = select_device(device)
    deadline = start + 0.92 * time_budget_s
    # auto's choice of a model, or adaptive_3dlut's of its variants (2+ pairs, no select given)
    choice_key = "auto" if model == "auto" else None
    if model == "adaptive_3dlut" and len(floats) >= 2 and "select" not in opts:
        choice_key = "selection"
    choice: dict[str, Any] | None = None
    if choice_key is not None:
        outcome, choice = _learn_choice(model, floats, opts, seed, dev, report, deadline)
    else:
        long_side = int(opts.pop("working_size", DEFAULT_WORKING_SIZE[model]))
        photo_gains = bool(opts.pop("photo_gains", True))
        opts = _outer_selection(model, opts, len(floats))
        fitter = _Fitter(model, floats, opts, long_side, seed, dev, report, {}, photo_gains)
        _estimate_gains_first(fitter, len(floats), deadline - time.perf_counter())
        n_folds = len(_folds(len(floats)))
        mid = 0.05 + 0.85 * n_folds / (n_folds + 1)
        reserve = (deadline - time.perf_counter()) / (n_folds + 1)
        outcome = _holdout(model, fitter, len(floats), deadline, reserve, 0.05, mid)
        outcome = _final_fit(outcome, len(floats), deadline, mid, 0.9)
    style = outcome.style
    assert style is not None
    report(0.92, "measuring")
    metrics = dict(outcome.metrics)
    if choice_key is not None:
        metrics[choice_key] = choice
    # the colors it was taught (apply reports the share of a photo's pixels outside them)
    metrics["coverage"] = ColorCoverage.from_images(
        p.before for p in outcome.fitter.prepared
    ).to_dict()
    metrics.update(
        model=style.kind,
        n_pairs=len(pairs),
        working_size=outcome.fitter.long_side,
        oom_retries=outcome.fitter.retries,
        device=str(dev),
        seconds=round(time.perf_counter() - start, 3),
    )
    if references:
        metrics["references_ignored"] = len(references)
    lut = style.bake(BAKE_SIZE)
    meta = {
        "model": model,
        "kind": style.kind,
        "n_pairs": len(pairs),
        "n_references": len(references),
    }
    report(1.0, "done")
    return LearnResult(style, metrics, lut, meta)


@dataclass(frozen=True)
class _Candidate:
    """One contender of a choice on held-out photos: its name in ``metrics``, the fitter it
    runs and that fitter's options."""

    label: str
    model: str
    opts: dict[str, Any]


def _choose(
    floats: list[tuple[np.ndarray, np.ndarray]],
    candidates: list[_Candidate],
    long_side: int,
    photo_gains: bool,
    seed: int,
    dev: torch.device,
    report: ProgressFn,
    deadline: float,
) -> tuple[_Outcome, str, dict[str, dict[str, Any]]]:
    """Every candidate's k-fold holdout (2+ pairs), then the final fit of the best one only;
    with one pair every candidate is fitted and judged on the held-out pixels of its photo.
    Candidates run in order, each with an equal share of the time left (a fast one leaves its
    unused share to the next); the final fit keeps one candidate's share (1 / (candidates + 1) of
    the budget) plus whatever the candidates left unused. The images, working size and
    ``photo_gains`` estimates are shared. Ties go to the earlier candidate. Returns the final
    outcome, the chosen label and every candidate's scores and times."""
    n = len(floats)
    folds = _folds(n)
    cache: dict[Any, Any] = {}  # prepared images and photo_gains estimates, shared
    fitters = [
        _Fitter(c.model, floats, dict(c.opts), long_side, seed, dev, report, cache, photo_gains)
        for c in candidates
    ]
    with_gains = next((f for f in fitters if f.photo_gains), None)
    if with_gains is not None:
        _estimate_gains_first(with_gains, n, deadline - time.perf_counter())
    # the final fit is what the user gets: it keeps one candidate's share of the budget (it had
    # one fold's share, ~4 s of 60, and a nilut final fit in 3 s stayed at its identity start)
    reserve = (deadline - time.perf_counter()) / (len(candidates) + 1) if folds else 0.0
    outcomes: dict[str, _Outcome] = {}
    scores: dict[str, dict[str, Any]] = {}
    order = [c.label for c in candidates]
    for j, (cand, fitter) in enumerate(zip(candidates, fitters, strict=True)):
        share = (deadline - time.perf_counter() - reserve) / (len(candidates) - j)
        lo, hi = 0.05 + 0.8 * j / len(candidates), 0.05 + 0.8 * (j + 1) / len(candidates)
        report(lo, f"trying {cand.label}")
        t0 = time.perf_counter()
        try:
            out = _holdout(cand.model, fitter, n, time.perf_counter() + share, 0.0, lo, hi)
            if not folds:
                out = _final_fit(out, n, time.perf_counter() + share, lo, hi)
        except LearnInputError:
            raise
        except Exception as exc:  # one candidate failing leaves the others
            scores[cand.label] = {
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            if j == len(candidates) - 1 and not outcomes:
                raise
            continue
        outcomes[cand.label] = out
        score = out.metrics["holdout"] if folds else out.metrics["heldout_pixels"]
        scores[cand.label] = {
            **{k: score[k] for k in ("psnr", "delta_e2000_mean", "delta_e2000_p95")},
            "strength": out.strength,
            "seconds": round(out.seconds, 3),
        }
        if folds:
            scores[cand.label]["per_photo_psnr"] = out.metrics["holdout"]["per_photo_psnr"]
    chosen = min(outcomes, key=lambda k: (outcomes[k].score, order.index(k)))
    best = outcomes[chosen]
    if folds:
        t0 = time.perf_counter()
        best = _final_fit(best, n, deadline, 0.85, 0.9)
        scores[chosen]["seconds_final_fit"] = round(time.perf_counter() - t0, 3)
    return best, chosen, scores


def _auto_candidates(opts: dict[str, Any], seed: int, n_pairs: int) -> list[_Candidate]:
    """``auto``'s contenders: the candidate models with their default options (with 2+ pairs
    ``nilut`` and ``adaptive_3dlut`` fit their network directly, :func:`_outer_selection`:
    ``dlut`` covers adaptive's global LUT and strength 0 the identity)."""
    init = opts.pop("init_weights", None)
    out = []
    for name in dict.fromkeys(opts.pop("candidates", AUTO_CANDIDATES)):
        cand_opts: dict[str, Any] = {"seed": seed}
        if name == "adaptive_3dlut" and init is not None:
            cand_opts["init_weights"] = init
        out.append(_Candidate(name, name, _outer_selection(name, cand_opts, n_pairs)))
    return out


def _adaptive_candidates(opts: dict[str, Any]) -> list[_Candidate]:
    """``adaptive_3dlut`` with 2+ pairs (and no ``select`` from the caller): its
    :data:`ADAPTIVE_CANDIDATES`, compared by :func:`_choose` on the outer folds, the same
    held-out photos that give its ``holdout``, so the holdout always judges the kind of model
    the user gets and a fine-tune is kept only when it beats the published weights there.
    Strength 0 (the identity) is :func:`best_strength`'s to choose. (Its own nested selection
    ran inside each outer fold on ~2 s inner slots and judged a different candidate than the
    final fit chose; see :func:`_outer_selection`.)"""
    return [_Candidate(c, "adaptive_3dlut", {**opts, "select": c}) for c in ADAPTIVE_CANDIDATES]


def _learn_choice(
    model: str,
    floats: list[tuple[np.ndarray, np.ndarray]],
    opts: dict[str, Any],
    seed: int,
    dev: torch.device,
    report: ProgressFn,
    deadline: float,
) -> tuple[_Outcome, dict[str, Any]]:
    """``auto`` (:func:`_auto_candidates`) or ``adaptive_3dlut``'s variants
    (:func:`_adaptive_candidates`) through :func:`_choose`; returns the final outcome and what
    goes in ``metrics["auto"]`` / ``metrics["selection"]``: the choice, its criterion and every
    candidate's scores."""
    n = len(floats)
    default_size = DEFAULT_WORKING_SIZE["dlut" if model == "auto" else model]
    long_side = int(opts.pop("working_size", default_size))
    photo_gains = bool(opts.pop("photo_gains", True))
    if model == "auto":
        candidates = _auto_candidates(opts, seed, n)
    else:
        candidates = _adaptive_candidates(opts)
    best, chosen, scores = _choose(
        floats, candidates, long_side, photo_gains, seed, dev, report, deadline
    )
    ties = ", ".join(c.label for c in candidates)
    criterion = (
        f"lowest holdout delta_e2000_mean (held-out photos; ties: the earlier of {ties})"
        if _folds(n)
        else "lowest delta_e2000_mean on the held-out pixels of the one pair (there is no "
        "other photo to hold out, so this is optimistic)"
    )
    return best, {"chosen": chosen, "criterion": criterion, "candidates": scores}


def _learn_transfer(
    model: str,
    references: list[np.ndarray],
    opts: dict[str, Any],
    time_budget_s: float,
    report: ProgressFn,
    start: float,
) -> LearnResult:
    long_side = int(opts.pop("working_size", DEFAULT_WORKING_SIZE["transfer"]))
    refs = []
    for i, ref in enumerate(references):
        img = _to_float_image(ref, f"reference {i}")
        refs.append(_resize(img, _working_size(img.shape[1], img.shape[0], long_side), exact=False))
    retries = 0
    while True:
        try:
            style = reference_fitter(
                refs,
                sources=None,
                options=dict(opts),
                time_budget_s=max(1.0, time_budget_s - (time.perf_counter() - start)) * 0.9,
                progress=lambda f, m: report(0.05 + 0.9 * min(max(f, 0.0), 1.0), m),
            )
            break
        except Exception as exc:
            if not is_out_of_memory(exc) or retries >= OOM_RETRIES:
                raise
            retries += 1
            opts["max_pixels"] = max(1000, int(opts.get("max_pixels", 200_000)) // 2)
    info = getattr(style, "info", {}) or {}
    metrics: dict[str, Any] = {
        "holdout": None,
        "holdout_reason": (
            "references only: there is no before/after photo to hold out (learn from pairs to "
            "measure the error on new photos)"
        ),
        "model": style.kind,
        "n_references": len(references),
        "working_size": long_side,
        "oom_retries": retries,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if "fit_delta_e2000_mean" in info:
        metrics["fit"] = {
            "delta_e2000_mean": info["fit_delta_e2000_mean"],
            "what": "the baked LUT against the transported reference colors it was fitted to",
        }
    meta = {"model": model, "kind": style.kind, "n_pairs": 0, "n_references": len(references)}
    report(1.0, "done")
    return LearnResult(style, metrics, style.bake(BAKE_SIZE), meta)


def _free_cuda(dev: torch.device) -> None:
    if dev.type == "cuda":
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------------
def save_style_bytes(
    model: StyleModel, metrics: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> bytes:
    """``model.pt`` as bytes: ``torch.save`` of ``{"kind", "format_version", "state", "metrics",
    "meta"}``, plus ``"strength"`` for a :class:`StrengthStyle` (its inner model is saved)."""
    import torch

    payload: dict[str, Any] = {
        "kind": model.kind,
        "format_version": FORMAT_VERSION,
        "state": model.state_dict(),
        "metrics": plain_value(metrics or {}),
        "meta": plain_value(meta or {}),
    }
    if isinstance(model, StrengthStyle):
        payload["strength"] = float(model.strength)
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _class_loader(module: str, kind: str) -> Callable[[dict[str, Any]], StyleModel]:
    def load(state: dict[str, Any]) -> StyleModel:
        mod = importlib.import_module(module)
        direct = getattr(mod, "from_state_dict", None)
        if callable(direct):
            return direct(state)  # type: ignore[no-any-return]
        for value in vars(mod).values():
            if (
                isinstance(value, type)
                and getattr(value, "kind", None) == kind
                and hasattr(value, "from_state_dict")
            ):
                return value.from_state_dict(state)  # type: ignore[no-any-return]
        raise ValueError(f"{module} has no model class of kind {kind!r} with from_state_dict")

    return load


def _dlut_loader(state: dict[str, Any]) -> StyleModel:
    from app.ml.dlut import DLUTModel

    return DLUTModel.from_state_dict(state)


#: kind -> ``state -> StyleModel``; :func:`register_kind` adds more.
style_loaders: dict[str, Callable[[dict[str, Any]], StyleModel]] = {
    "dlut": _dlut_loader,
    "transfer": lambda state: LUTStyle.from_state_dict(state, kind="transfer"),
    "imported": lambda state: LUTStyle.from_state_dict(state, kind="imported"),
    "nilut": _class_loader("app.ml.nilut", "nilut"),
    "adaptive_3dlut": _class_loader("app.ml.adaptive_3dlut", "adaptive_3dlut"),
}


def register_kind(kind: str, loader: Callable[[dict[str, Any]], StyleModel]) -> None:
    """Teach :func:`load_style` a new model kind."""
    style_loaders[kind] = loader


def _from_checkpoint(ckpt: Any, source: str) -> StyleModel:
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "state" not in ckpt:
        raise ValueError(
            f"{source}: not a PicFilter model.pt (expected a dict with 'kind' and 'state')"
        )
    version = int(ckpt.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source}: format_version {version} is newer than this code ({FORMAT_VERSION})"
        )
    kind = str(ckpt["kind"])
    loader = style_loaders.get(kind)
    if loader is None:
        raise ValueError(f"{source}: unknown model kind {kind!r}")
    style = loader(ckpt["state"])
    strength = ckpt.get("strength")
    if isinstance(strength, int | float) and 0.0 <= float(strength) < 1.0:
        return with_strength(style, float(strength))
    return style


def load_style_bytes(data: bytes) -> StyleModel:
    """The model from ``model.pt`` bytes (``torch.load(weights_only=True)``); only bytes (a
    file name is a TypeError here: use :func:`load_style` with a ``Path``)."""
    import torch

    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected the model.pt content as bytes, got {type(data).__name__}")
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return _from_checkpoint(ckpt, "model.pt bytes")


def read_style_checkpoint(path: Path) -> dict[str, Any]:
    """The raw ``model.pt`` dict (kind, format_version, state, metrics, meta) of the file at
    ``path`` (a ``Path``; a ``str`` is a TypeError)."""
    import torch

    from app.ml.paths import require_path

    p = require_path(path, "model.pt")
    return torch.load(p, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


_LUT_SUFFIXES = {
    ".cube",
    ".3dl",
    ".csp",
    ".spi3d",
    ".spi1d",
    ".clf",
    ".ctf",
    ".cub",
    ".vf",
    ".look",
}


def load_style(path: Path) -> StyleModel:
    """Load a style from a ``model.pt``, a style directory (``model.pt``), a ``.cube`` (or other
    LUT file: kind ``imported``), or a directory of published adaptive-3D-LUT weights
    (``LUTs.pth`` + ``classifier.pth``). ``path`` is a ``Path``: a ``str`` is a TypeError (content
    goes to :func:`load_style_bytes` or ``app.ml.cube_export.read_cube_text``)."""
    return load_style_with_metrics(path)[0]


def load_style_with_metrics(path: Path) -> tuple[StyleModel, dict[str, Any]]:
    """:func:`load_style` and the metrics learning saved with the style (from the same read of
    its ``model.pt``; ``{}`` for LUT files and published weights)."""
    from app.ml.paths import require_path

    p = require_path(path, "style")
    if p.is_dir():
        if (p / "model.pt").is_file():
            return _checkpoint_and_metrics(p / "model.pt")
        if (p / "LUTs.pth").is_file() and (p / "classifier.pth").is_file():
            from app.ml.adaptive_3dlut import load_published

            return load_published(p), {}
        if (p / "lut.cube").is_file():
            return load_style_with_metrics(p / "lut.cube")
        raise FileNotFoundError(
            f"{p}: no model.pt, lut.cube or LUTs.pth + classifier.pth in this directory"
        )
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such style file or directory")
    suffix = p.suffix.lower()
    if suffix in _LUT_SUFFIXES:
        from app.ml.lut_formats import read_lut

        lut = read_lut(p)
        info = {"filename": p.name, "title": lut.title or ""}
        return LUTStyle(lut, kind="imported", info=info), {}
    return _checkpoint_and_metrics(p)


def _checkpoint_and_metrics(path: Path) -> tuple[StyleModel, dict[str, Any]]:
    ckpt = read_style_checkpoint(path)
    return _from_checkpoint(ckpt, str(path)), dict(ckpt.get("metrics") or {})


def save_style(
    model: StyleModel,
    directory: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    lut: LUT3D | None = None,
    title: str | None = None,
) -> Path:
    """Write a style directory: ``model.pt``, ``metadata.json`` and ``lut.cube`` (baked 33^3)."""
    from app.ml.cube_export import write_cube

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(save_style_bytes(model, metrics, meta))
    baked = lut if lut is not None else model.bake(BAKE_SIZE)
    info = {
        "kind": model.kind,
        "format_version": FORMAT_VERSION,
        "lut_size": baked.size,
        "metrics": plain_value(metrics or {}),
        "meta": plain_value(meta or {}),
    }
    (out / "metadata.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    write_cube(baked, out / "lut.cube", title=title or f"PicFilter {model.kind} style")
    return out
