"""Image-adaptive 3D LUTs: a few basis LUTs mixed by weights that a small CNN predicts per image.

Re-implementation of Zeng, Cai, Li, Cao, Zhang, "Learning Image-adaptive 3D Lookup Tables for High
Performance Photo Enhancement in Real-time", IEEE TPAMI 44(4), 2022 (arXiv 2009.14468;
github.com/HuiZeng/Image-Adaptive-3DLUT, Apache-2.0), from the paraphrase in
``docs/models/adaptive_3dlut.md``; no upstream code was copied.

What is re-implemented
----------------------
* :class:`Classifier`: the paired-model CNN, layer for layer with the published state_dict indices
  (``model.0`` bilinear resize to 256x256, four ``Conv 3x3 s2 + LeakyReLU(0.2) + InstanceNorm``
  blocks, ``Conv 128->128 s2 + LeakyReLU``, ``Dropout(0.5)``, ``Conv 128->K 8x8``). Its input is
  the plain [0, 1] image (no mean/std normalisation); its K outputs are the unnormalised weights.
* :class:`Adaptive3DLUTNet`: K = 3 basis LUTs + the classifier (593,516 parameters for the
  published shape). Fused LUT = ``sum_i w_i * LUT_i``.
* **Layout.** The basis LUTs are stored, trained and saved in the *published* layout
  ``T[c, b, g, r]`` (``luts[k, c, b, g, r]``: output channel, then input blue, green, red; red is
  fastest in memory, like ``.cube``). They are converted to the project's ``table[r, g, b, c]``
  (:class:`app.ml.lut.LUT3D`) only at the boundary, in :meth:`Adaptive3DLUTModel.fused_lut`,
  through :func:`app.ml.torch_utils.published_to_table` (a transpose). The differentiable
  training lookup views them the same way (:func:`~app.ml.torch_utils.trilinear_lookup_published`).
* :func:`load_published` loads ``LUTs.pth`` + ``classifier.pth`` (the published sRGB paired model).
* :class:`Adaptive3DLUTModel` (kind ``"adaptive_3dlut"``, a :class:`app.ml.base.StyleModel`):
  ``apply`` predicts the weights from the image, fuses the LUTs and applies the fused LUT with the
  fast :meth:`LUT3D.apply` (numba, no torch autograd). ``bake(size)`` fuses with
  ``mean_weights``, the weights averaged over the training images.
* :func:`fit`: MSE on non-held-out pixels + ``1e-4 * (TV smoothness + weight regulariser)`` +
  ``monotonicity * soft monotonicity`` (upstream: 10), with the paper's augmentation (random crops
  of 60-100 % per side, horizontal flips, optional brightness/saturation jitter of the input only).

Few-shot learning that never ends worse than it started (issue 10)
-----------------------------------------------------------------
Fine-tuning the published model freely on 4 pairs lost ground on other photos (24.4 -> 22.2 dB
on a retoucher's photos). So :func:`fit` (with ``select="auto"``, the default) builds candidates
and keeps the one that scores best on photos it did not learn from:

* ``initial``: the starting weights unchanged (the published model with ``init_weights``);
* ``fine_tuned``: the published classifier trunk and basis LUTs frozen, only the last layer
  (``model.16``, ``train_classifier="last"``) trained with L2-SP (``l2sp`` times the squared
  distance to its starting values), followed by a small global **post LUT** (``post_lut_size``
  17^3, identity + residual) that carries the personal look: per image the served LUT is
  ``post_lut(clip(sum_k w_k LUT_k))``. The post LUT starts from a ridge-regularized second-order
  polynomial colour transform fitted on top of the published output (smooth, bends gently
  outside the colours seen), then Adam refines it with a smoothness (``post_smooth``) and an
  L2-to-identity (``post_l2``) penalty. Because the basis LUTs are frozen their lookups of the
  training pixels are computed once and mixed per step (lookup is linear in the LUT);
* ``global``: one global LUT, the ``dlut`` least-squares fit (:func:`app.ml.dlut.fit`), clipped
  to [0, 1] (a 17^3 lattice from at most 30,000 pixels inside the folds, 33^3 for the final fit);
* ``identity``: no change at all (a style may fail to help; it must not harm).

With two or more usable pairs the candidates are scored by leave-one-photo-out over up to
``folds`` photos (as many folds as ``select_fraction`` of the time allows, at least one; the
``global`` candidate is dropped from the comparison when its fits do not fit in the folds'
time); with one pair, by 20 % of that pair's non-held-out pixels in 16x16 tiles, and ``global``
does not compete (a LUT fitted to one photo always wins on that photo's own pixels). The pair's
``holdout`` pixels are never used. The winner (ties go to ``initial``) is refitted on all pairs
with the rest of the time. ``model.info`` holds ``choice``, ``holdout_psnr`` (every candidate's
mean held-out PSNR in dB), ``selection`` (how it was held out) and ``folds``. ``select`` may
also force one candidate. ``global`` and ``identity`` are stored as ``adaptive=False`` models
(the post LUT alone). A fit ends by itself after ``max_seconds`` (45) even with a larger budget.
:func:`app.ml.learn.learn_style` with 2+ pairs does not use this nested choice: it fits each
candidate (``select``) on its own outer folds and keeps the best on those held-out photos
(``metrics["selection"]``), so its holdout judges the candidate the user gets.

Deviations (and why)
--------------------
* Upstream trains 400 epochs over 4,500 FiveK images at Adam lr 1e-4, batch 1, updating the whole
  classifier. Here a style has 1-16 pairs and a CPU budget of seconds. With ``init_weights`` the
  default is ``train_classifier="last"`` (above); ``"head"`` also trains ``model.13``;
  frozen-trunk features are computed once for a pool of ``pool_views`` augmented views per image.
  ``"all"`` (the default without ``init_weights``, as upstream, with ``train_luts``) trains every
  layer on fresh augmentations each step; ``"none"`` freezes the classifier. Adam with lr 5e-3
  for LUTs and the post LUT and 5e-4 for the classifier layers (1e-4 when training all layers),
  cosine decay to zero over ``steps`` or the time budget, whichever ends first. Adam is
  :class:`app.ml.torch_utils.Adam` (``torch.optim`` imports ``torch._dynamo`` on first use,
  3-11 s here). Torch runs on one thread by default (``num_threads``): these small ops ran ~6x
  faster on one thread than on two on the shared 2-core machine.
* Training works at reduced resolution for the classifier (``work_size``, longest side 384 px):
  the view is a box-downsampled copy of the input. The colour loss uses random full-resolution,
  non-held-out pixels of the whole image (``pixels_per_image`` per image and step, from at most
  ``max_pixels`` kept per image), not only those inside the crop: the edit is a global colour
  transform, so the crop only augments what the classifier sees.
* Augmentation: crops of 60-100 % per side and horizontal flips as upstream. Upstream also jitters
  the input's brightness and saturation (U(0.8, 1.2)) while keeping the target; that teaches the
  model to undo such changes, which is right only if the editor normalises exposure. It is off by
  default here (``jitter=0``; set 0.2 for upstream's behaviour); ``wb_jitter`` adds per-photo
  red/blue gains 2^U(-w, w) in the same spirit. On the 4-pair benchmark
  (``bench.adaptive_quality``) jitter lowered the held-out PSNR, so it stays opt-in.
* The monotonicity weight is an option (``monotonicity``, default 10 as upstream); DESIGN.md notes
  that strict monotonicity is wrong for some looks (e.g. black-and-white with a negative blue
  weight), so set it low (e.g. 0.1) or 0 for such styles.
* :meth:`Adaptive3DLUTModel.predict_weights` on a large image: upstream resizes the full image to
  256x256 by plain bilinear interpolation (which aliases on a 12 MP photo). The published model
  keeps that exact behaviour (``view_size=None``). Fitted models set ``view_size`` to their
  ``work_size`` and first box-downsample larger images by an integer factor to at most that size,
  so the classifier sees at inference what it saw in training.
* ``apply`` and ``bake`` clip the fused table to [0, 1] before using it (the paired LUTs
  individually span about [-0.28, 0.83]; upstream clips only the output), so the LUT applied to
  any image, and the exported one, stay within [0, 1].
* ``bake`` of the published model: there are no training images, so ``mean_weights`` is the mean
  over the images passed to :func:`load_published` (``mean_images``), or ``(1, 0, 0)`` (basis
  LUT 0 alone) when none are given.

Options of :func:`fit` (unknown keys are ignored)
-------------------------------------------------
``init_weights`` (None; a directory with ``LUTs.pth`` + ``classifier.pth`` to start from; None
starts upstream's way: LUT 0 = identity, others zero, Xavier conv init, last bias 1),
``select`` ("auto" | "initial" | "identity" | "global" | "fine_tuned"), ``folds`` (4),
``select_fraction`` (0.75 of the time for choosing), ``max_seconds`` (45),
``train_classifier`` ("last" with ``init_weights``, else "all"; or "head", "none"),
``train_luts`` (False with ``init_weights``, else True), ``post_lut_size`` (17 with
``init_weights``, else 0 = none), ``l2sp`` (1e-2 with ``init_weights``, else 0),
``post_smooth`` (0.1), ``post_l2`` (1e-3), ``post_ridge`` (1e-3), ``lr_post`` (5e-3),
``global_options`` (dict passed to :func:`app.ml.dlut.fit`), ``lr`` (5e-3, basis LUTs),
``lr_classifier`` (5e-4 / 1e-4 all), ``steps`` (60 Adam steps per fine-tune with
``init_weights``: the same in every fold and in the final fit, and longer refinement fitted the
training photos' own quirks -- held-out 17.46 -> 16.99 dB on the real-like benchmark; without
``init_weights`` 100000, an upper bound the time budget usually ends first), ``work_size``
(384), ``pixels_per_image`` (4096), ``max_pixels`` (50000 sampled per image),
``batch_images`` (4), ``pool_views`` (4 per image), ``smooth`` (1e-4), ``monotonicity`` (10.0),
``weight_reg`` (1e-4), ``jitter`` (0.0), ``wb_jitter`` (0.0),
``min_crop`` (0.6), ``flip`` (True), ``num_threads`` (1), ``seed`` (0).
Building the view pool stops after 15 % of the time budget (at least one view per image).

Example:
    >>> import numpy as np
    >>> model = Adaptive3DLUTModel(Adaptive3DLUTNet())  # upstream's fresh init: identity LUT 0
    >>> img = np.full((8, 8, 3), 0.5, np.float32)
    >>> model.predict_weights(img).shape
    (3,)
    >>> model.bake(17).size
    17
"""

from __future__ import annotations

import copy
import functools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.ml import weights as shipped_weights
from app.ml.base import ProgressFn, TrainingPair, no_progress
from app.ml.dlut import PHOTO_GAIN, strongest_within
from app.ml.lut import LUT3D, identity_table, plain_value
from app.ml.paths import require_path
from app.ml.torch_utils import (
    Adam,
    pick_device,
    published_to_table,
    table_to_published,
    to_float01,
    torch_threads,
    trilinear_lookup_published,
)

KIND = "adaptive_3dlut"
STATE_VERSION = 2
LUT_SIZE = 33
NUM_LUTS = 3
VIEW = 256  # the classifier's input side
GAIN_VIEW = 512  # long side at which a fitted model checks its per-image LUT's local gain

__all__ = [
    "KIND",
    "Adaptive3DLUTModel",
    "Adaptive3DLUTNet",
    "Classifier",
    "classifier_view",
    "fit",
    "load_published",
    "lut_regularizers",
]


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
def _block(cin: int, cout: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    return layers


class Classifier(nn.Module):
    """The weight predictor of the paired model; ``model.N`` indices match ``classifier.pth``."""

    def __init__(self, num_luts: int = NUM_LUTS) -> None:
        super().__init__()
        self.num_luts = int(num_luts)
        self.model = nn.Sequential(
            nn.Upsample(size=(VIEW, VIEW), mode="bilinear", align_corners=False),  # 0
            *_block(3, 16, True),  # 1-3
            *_block(16, 32, True),  # 4-6
            *_block(32, 64, True),  # 7-9
            *_block(64, 128, True),  # 10-12
            *_block(128, 128, False),  # 13-14
            nn.Dropout(p=0.5),  # 15
            nn.Conv2d(128, num_luts, 8, padding=0),  # 16
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 3, H, W) in [0, 1] -> (B, num_luts) unnormalised weights."""
        return self.model(x).reshape(x.shape[0], self.num_luts)

    def reset_parameters_upstream(self) -> None:
        """Upstream's training init: Xavier-normal convs, norm weights N(1, 0.02), last bias 1."""
        for module in self.model:
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.InstanceNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
        last = self.model[16]
        assert isinstance(last, nn.Conv2d)
        assert last.bias is not None
        nn.init.constant_(last.bias, 1.0)


class Adaptive3DLUTNet(nn.Module):
    """``luts`` ``(K, 3, N, N, N)`` in the published ``[k, c, b, g, r]`` layout + the classifier.

    A fresh net starts as upstream's training does: LUT 0 = identity, the others zero.
    """

    def __init__(self, num_luts: int = NUM_LUTS, lut_size: int = LUT_SIZE) -> None:
        super().__init__()
        luts = torch.zeros(num_luts, 3, lut_size, lut_size, lut_size)
        luts[0] = torch.from_numpy(table_to_published(identity_table(lut_size)))
        self.luts = nn.Parameter(luts)
        self.classifier = Classifier(num_luts)
        self.classifier.reset_parameters_upstream()

    @property
    def num_luts(self) -> int:
        return int(self.luts.shape[0])

    @property
    def lut_size(self) -> int:
        return int(self.luts.shape[-1])

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        """The predicted weights (B, K) for images ``view`` (B, 3, H, W) in [0, 1]."""
        return self.classifier(view)

    def fuse(self, weights: torch.Tensor) -> torch.Tensor:
        """``sum_k w[b, k] * luts[k]``: (B, K) -> (B, 3, N, N, N) in the published layout."""
        return torch.einsum("bk,kcdhw->bcdhw", weights, self.luts)


# ---------------------------------------------------------------------------------------------
# image helpers
# ---------------------------------------------------------------------------------------------
def _bilinear_indices(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear resize (``align_corners=False``)."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _box_reduce(image: np.ndarray, max_side: int) -> np.ndarray:
    """Average ``k x k`` blocks, ``k = ceil(max(H, W) / max_side)``; float32 out."""
    h, w = image.shape[:2]
    k = max(1, math.ceil(max(h, w) / max_side))
    if k == 1:
        return to_float01(image)
    hh, ww = h // k, w // k
    block = image[: hh * k, : ww * k].reshape(hh, k, ww, k, 3)
    scale = {np.dtype(np.uint8): 1 / 255.0, np.dtype(np.uint16): 1 / 65535.0}.get(image.dtype, 1.0)
    out = block.mean(axis=(1, 3), dtype=np.float64) * scale
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def classifier_view(image: np.ndarray, view_size: int | None = None) -> np.ndarray:
    """The classifier's 3x256x256 float32 input for an HxWx3 image (uint8/uint16/float).

    With ``view_size=None`` this equals torch's bilinear resize of the whole [0, 1] image
    (upstream behaviour) but reads only the 512 rows and columns it needs. With ``view_size``
    set, a larger image is first box-downsampled by an integer factor to at most that side.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    if view_size is not None and max(image.shape[:2]) > view_size:
        image = _box_reduce(image, view_size)
    h, w = image.shape[:2]
    y0, y1, fy = _bilinear_indices(h, VIEW)
    x0, x1, fx = _bilinear_indices(w, VIEW)
    top, bottom = to_float01(image[y0]), to_float01(image[y1])
    rows = top + fy[:, None, None] * (bottom - top)  # (256, W, 3)
    left, right = rows[:, x0], rows[:, x1]
    view = left + fx[None, :, None] * (right - left)
    return np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# the StyleModel
# ---------------------------------------------------------------------------------------------
class Adaptive3DLUTModel:
    """A fitted (or published) image-adaptive 3D LUT model (kind ``"adaptive_3dlut"``).

    The LUT used for an image is ``post_lut(clip(sum_k w_k(image) * LUT_k))``: the basis LUTs
    fused with the classifier's weights and clipped to [0, 1], then (when ``post_lut`` is set) a
    global look composed after it. With ``adaptive=False`` the classifier and basis LUTs are not
    used at all: the model is its ``post_lut`` alone (the "global" candidate of :func:`fit`).

    ``max_gain`` (set by :func:`fit`, None for the published model): the LUT is different for
    every image, so no check at learning time covers a photo it has not seen. Each image's LUT
    is therefore checked on that image (box-reduced to :data:`GAIN_VIEW` px): while its p99.9
    local gain (:func:`app.ml.metrics.local_gain`) exceeds ``max_gain``, the LUT is blended
    toward the identity (:func:`app.ml.dlut.strongest_within`, as ``apply(image, strength)``
    blends). Measured on the
    real-like benchmark (``bench.real_edits``), one run's fine-tuned LUT reached 5.57 on one
    of its photos where the look itself stays under 5.
    Cost, measured on the 12.5 MP ``ultrahdr_sky.jpg`` (published weights): ``image_lut``
    0.24-0.32 s without the check, 0.39-0.40 s with it when the LUT passes, 0.88-0.96 s when it
    has to blend down to a bound of 1.5 (the box reduction and each step's 512 px application).
    """

    kind = KIND

    def __init__(
        self,
        net: Adaptive3DLUTNet,
        *,
        mean_weights: Sequence[float] | np.ndarray | None = None,
        view_size: int | None = None,
        device: str | torch.device | None = None,
        info: dict[str, Any] | None = None,
        post_lut: LUT3D | None = None,
        adaptive: bool = True,
        max_gain: float | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.net = net.to(self.device).eval()
        k = net.num_luts
        if mean_weights is None:
            mean = np.zeros(k, np.float32)
            mean[0] = 1.0
        else:
            mean = np.asarray(mean_weights, dtype=np.float32).reshape(-1)
            if mean.shape != (k,) or not np.all(np.isfinite(mean)):
                raise ValueError(f"mean_weights must be {k} finite numbers, got {mean.tolist()}")
        if not adaptive and post_lut is None:
            raise ValueError("a non-adaptive model needs a post_lut")
        self.mean_weights = mean
        self.view_size = None if view_size is None else int(view_size)
        self.info: dict[str, Any] = dict(info or {})
        self.post_lut = post_lut
        self.adaptive = bool(adaptive)
        self.max_gain = None if max_gain is None else float(max_gain)

    def __repr__(self) -> str:
        post = "" if self.post_lut is None else f", post_lut={self.post_lut.size}^3"
        return (
            f"Adaptive3DLUTModel(luts={self.net.num_luts}x{self.net.lut_size}^3, "
            f"mean_weights={np.round(self.mean_weights, 4).tolist()}{post}, "
            f"adaptive={self.adaptive})"
        )

    @torch.no_grad()
    def predict_weights(self, image: np.ndarray) -> np.ndarray:
        """The K basis weights (float32, unnormalised) the classifier predicts for ``image``."""
        view = torch.from_numpy(classifier_view(image, self.view_size))[None].to(self.device)
        self.net.eval()
        return self.net(view)[0].float().cpu().numpy()

    @torch.no_grad()
    def fused_lut(self, weights: Sequence[float] | np.ndarray, *, clip: bool = False) -> LUT3D:
        """``sum_k w_k * LUT_k`` converted to the project layout (``table[r, g, b, c]``)."""
        w = torch.as_tensor(np.asarray(weights, np.float32).reshape(1, -1), device=self.device)
        if w.shape[1] != self.net.num_luts:
            raise ValueError(f"need {self.net.num_luts} weights, got {w.shape[1]}")
        table = published_to_table(self.net.fuse(w)[0])
        if clip:
            np.clip(table, 0.0, 1.0, out=table)
        return LUT3D(table)

    def lut_for_weights(self, weights: Sequence[float] | np.ndarray) -> LUT3D:
        """The LUT this model applies for ``weights``: fused, clipped, then ``post_lut``.

        Always within [0, 1]. For a non-adaptive model this is ``post_lut`` (weights unused).
        """
        if not self.adaptive:
            assert self.post_lut is not None
            return self.post_lut
        fused = self.fused_lut(weights, clip=True)
        if self.post_lut is None:
            return fused
        table = self.post_lut.apply(fused.table)
        np.clip(table, 0.0, 1.0, out=table)
        return LUT3D(table)

    def image_lut(self, image: np.ndarray) -> LUT3D:
        """The LUT applied to ``image`` (fused with the weights predicted for it, then bounded
        on it by ``max_gain``)."""
        if not self.adaptive:
            return self.lut_for_weights(self.mean_weights)
        lut = self.lut_for_weights(self.predict_weights(image))
        return lut if self.max_gain is None else self._bound_gain(lut, image)

    def _bound_gain(self, lut: LUT3D, image: np.ndarray) -> LUT3D:
        from app.ml.metrics import local_gain

        assert self.max_gain is not None
        view = _box_reduce(image, GAIN_VIEW)

        def gain(table: np.ndarray) -> float:
            out = np.clip(LUT3D(table).apply(view), 0.0, 1.0)
            return float(local_gain(view, out)["p999"])

        if gain(lut.table) <= self.max_gain:
            return lut
        ident = identity_table(lut.size)
        blend, _ = strongest_within(
            lambda b: gain(ident + np.float32(b) * (lut.table - ident)), self.max_gain
        )
        return LUT3D(ident + np.float32(blend) * (lut.table - ident))

    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Grade ``image`` with the LUT fused for it (same dtype out; floats clipped to [0, 1])."""
        out = self.image_lut(image).apply(image, strength)
        if np.issubdtype(out.dtype, np.floating):
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def bake(self, size: int = 33) -> LUT3D:
        """The LUT for :attr:`mean_weights` (within [0, 1]), resampled to ``size``."""
        lut = self.lut_for_weights(self.mean_weights)
        return lut if size == lut.size else lut.resample(size)

    def state_dict(self) -> dict[str, Any]:
        """Weights (``param.<name>``), mean weights, sizes; loads with ``weights_only=True``.

        Version 2 adds ``adaptive`` and, when set, ``post_lut`` (a ``table[r, g, b, c]``);
        version-1 states (without them) load as adaptive models without a post LUT.
        """
        state: dict[str, Any] = {
            "kind": KIND,
            "version": STATE_VERSION,
            "num_luts": self.net.num_luts,
            "lut_size": self.net.lut_size,
            "lut_layout": "k,c,b,g,r",
            "mean_weights": torch.from_numpy(self.mean_weights.copy()),
            "view_size": -1 if self.view_size is None else self.view_size,
            "adaptive": self.adaptive,
            "max_gain": -1.0 if self.max_gain is None else self.max_gain,
            "info": plain_value(self.info),
        }
        if self.post_lut is not None:
            state["post_lut"] = torch.from_numpy(self.post_lut.table.copy())
        for name, tensor in self.net.state_dict().items():
            state[f"param.{name}"] = tensor.detach().cpu().clone()
        return state

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], device: str | torch.device | None = None
    ) -> Adaptive3DLUTModel:
        """Rebuild a model saved by :meth:`state_dict` (version 1 or 2)."""
        if state.get("kind", KIND) != KIND:
            raise ValueError(f"not an adaptive 3D LUT state (kind={state.get('kind')!r})")
        net = Adaptive3DLUTNet(int(state["num_luts"]), int(state["lut_size"]))
        weights = {k[len("param.") :]: v for k, v in state.items() if k.startswith("param.")}
        net.load_state_dict(weights)
        view_size = int(state.get("view_size", -1))
        max_gain = float(state.get("max_gain", -1.0))
        post = state.get("post_lut")
        post_lut = None if post is None else LUT3D(np.asarray(post, dtype=np.float32))
        return cls(
            net,
            mean_weights=np.asarray(state["mean_weights"], dtype=np.float32),
            view_size=None if view_size < 0 else view_size,
            device=device,
            info=dict(state.get("info", {})),
            post_lut=post_lut,
            adaptive=bool(state.get("adaptive", True)),
            max_gain=None if max_gain < 0 else max_gain,
        )


@functools.lru_cache(maxsize=4)
def _published_tensors(directory: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``LUTs.pth`` stacked to (K, 3, N, N, N) and the classifier state_dict, read once per
    process (a style's fit runs k + 1 times for its k-fold hold-out)."""
    folder = Path(directory)
    luts_file = torch.load(folder / "LUTs.pth", map_location="cpu", weights_only=True)
    classifier = torch.load(folder / "classifier.pth", map_location="cpu", weights_only=True)
    keys = sorted(luts_file, key=int)
    luts = torch.stack([luts_file[k]["LUT"].float() for k in keys])
    if luts.ndim != 5 or luts.shape[1] != 3:
        raise ValueError(f"{folder / 'LUTs.pth'}: expected K x (3, N, N, N) LUTs, got {luts.shape}")
    return luts, dict(classifier)


def _load_published_net(directory: Path) -> Adaptive3DLUTNet:
    folder = require_path(directory, "published weights directory")
    luts, classifier = _published_tensors(str(folder.resolve()))
    net = Adaptive3DLUTNet(int(luts.shape[0]), int(luts.shape[-1]))
    with torch.no_grad():
        net.luts.copy_(luts)
    net.classifier.load_state_dict(classifier)
    return net


def load_published(
    directory: Path | None = None,
    *,
    mean_images: Sequence[np.ndarray] = (),
    device: str | torch.device | None = None,
) -> Adaptive3DLUTModel:
    """Load the published sRGB paired model (``LUTs.pth`` + ``classifier.pth`` in ``directory``;
    default: the copy shipped in :mod:`app.ml.weights`).

    ``mean_weights`` (used by :meth:`~Adaptive3DLUTModel.bake`) is the mean of the weights
    predicted for ``mean_images``, or ``(1, 0, 0)`` when none are given.
    """
    if directory is None:
        directory = shipped_weights.adaptive_3dlut_dir()
    model = Adaptive3DLUTModel(_load_published_net(directory), device=device)
    if mean_images:
        model.mean_weights = np.mean([model.predict_weights(im) for im in mean_images], axis=0)
    model.info["source"] = "published"
    return model


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def lut_regularizers(luts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's (smoothness, monotonicity) terms, summed over the basis LUTs.

    ``luts``: (K, 3, N, N, N). Smoothness: squared differences between neighbours along each
    input axis, the first and last difference weighted x2, mean per axis, summed over axes.
    Monotonicity: mean of ReLU(T[n] - T[n+1]) along each input axis (any output channel that
    decreases as an input rises), summed over axes.
    """
    n = luts.shape[-1]
    edge = torch.ones(n - 1, device=luts.device, dtype=luts.dtype)
    edge[0] = edge[-1] = 2.0
    tv = luts.new_zeros(())
    mono = luts.new_zeros(())
    for axis in (2, 3, 4):
        diff = luts.narrow(axis, 0, n - 1) - luts.narrow(axis, 1, n - 1)
        shape = [1] * 5
        shape[axis] = n - 1
        sq = diff.square() * edge.reshape(shape)
        tv = tv + sq.mean(dim=(1, 2, 3, 4)).sum()
        mono = mono + F.relu(diff).mean(dim=(1, 2, 3, 4)).sum()
    return tv, mono


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------
CANDIDATES = ("initial", "identity", "global", "fine_tuned")
GLOBAL_MIN_SLOT_S = 1.0  # a fold shorter than this leaves the global candidate out of the choice
_SPLIT = {"all": 0, "head": 13, "last": 15, "none": 17}  # classifier layers the trainer runs
_TILE = 16  # side of the inner hold-out tiles (one pair)


@dataclass
class _Prepared:
    view: torch.Tensor  # (3, h, w): the box-downsampled "before", for the classifier
    full: torch.Tensor  # (3, 256, 256): the classifier input of the whole view
    before: torch.Tensor  # (P, 3): sampled non-held-out full-resolution pixels
    after: torch.Tensor  # (P, 3): their targets
    tile: np.ndarray  # (P,): the 16x16 tile each sampled pixel lies in
    basis: torch.Tensor | None = None  # (K, P, 3): ``before`` through each frozen basis LUT

    def subset(self, keep: np.ndarray) -> _Prepared:
        idx = torch.from_numpy(np.flatnonzero(keep)).to(self.before.device)
        basis = None if self.basis is None else self.basis[:, idx]
        return _Prepared(
            self.view, self.full, self.before[idx], self.after[idx], self.tile[keep], basis
        )


@dataclass
class _Aug:
    """One augmented view: which image, its classifier input or features, its colour jitter."""

    index: int
    data: torch.Tensor  # (3, 256, 256) view, or the frozen trunk's output for it
    brightness: float = 1.0
    saturation: float = 1.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class _Opts:
    """The parsed :func:`fit` options (see the module docstring)."""

    init: str | None
    mode: str
    train_luts: bool
    post_size: int
    select: str
    folds: int
    select_fraction: float
    work_size: int
    pixels: int
    max_pixels: int
    batch_images: int
    steps: int
    pool_views: int
    lr_luts: float
    lr_cls: float
    lr_post: float
    smooth: float
    mono: float
    weight_reg: float
    l2sp: float
    post_smooth: float
    post_l2: float
    post_ridge: float
    global_options: dict[str, Any]
    aug: dict[str, Any]

    @classmethod
    def parse(cls, options: dict[str, Any]) -> _Opts:
        init = options.get("init_weights")
        init = str(init) if init else None
        mode = str(options.get("train_classifier", "last" if init else "all")).lower()
        if mode not in _SPLIT:
            raise ValueError(
                f"train_classifier must be 'all', 'head', 'last' or 'none', got {mode!r}"
            )
        select = str(options.get("select", "auto")).lower()
        if select not in ("auto", *CANDIDATES):
            raise ValueError(f"select must be 'auto' or one of {CANDIDATES}, got {select!r}")
        post_size = int(options.get("post_lut_size", 17 if init else 0))
        if post_size != 0 and not 2 <= post_size <= 65:
            raise ValueError(f"post_lut_size must be 0 or 2..65, got {post_size}")
        return cls(
            init=init,
            mode=mode,
            train_luts=bool(options.get("train_luts", not init)),
            post_size=post_size,
            select=select,
            folds=max(1, int(options.get("folds", 4))),
            select_fraction=min(0.9, max(0.1, float(options.get("select_fraction", 0.75)))),
            work_size=int(options.get("work_size", 384)),
            pixels=max(16, int(options.get("pixels_per_image", 4096))),
            max_pixels=max(64, int(options.get("max_pixels", 50_000))),
            batch_images=max(1, int(options.get("batch_images", 4))),
            steps=int(options.get("steps", 60 if init else 100_000)),
            pool_views=max(1, int(options.get("pool_views", 4))),
            lr_luts=float(options.get("lr", 5e-3)),
            lr_cls=float(options.get("lr_classifier", 1e-4 if mode == "all" else 5e-4)),
            lr_post=float(options.get("lr_post", 5e-3)),
            smooth=float(options.get("smooth", 1e-4)),
            mono=float(options.get("monotonicity", 10.0)),
            weight_reg=float(options.get("weight_reg", 1e-4)),
            l2sp=float(options.get("l2sp", 1e-2 if init else 0.0)),
            post_smooth=float(options.get("post_smooth", 0.1)),
            post_l2=float(options.get("post_l2", 1e-3)),
            post_ridge=float(options.get("post_ridge", 1e-3)),
            global_options=dict(options.get("global_options") or {}),
            aug={
                "min_crop": min(1.0, max(0.05, float(options.get("min_crop", 0.6)))),
                "flip": bool(options.get("flip", True)),
                "jitter": float(options.get("jitter", 0.0)),
                "wb_jitter": float(options.get("wb_jitter", 0.0)),
            },
        )


def _prepare(
    pair: TrainingPair,
    work_size: int,
    max_pixels: int,
    rng: np.random.Generator,
    device: torch.device,
) -> _Prepared:
    before = np.asarray(pair.before, dtype=np.float32)
    after = np.asarray(pair.after, dtype=np.float32)
    if before.shape != after.shape or before.ndim != 3 or before.shape[-1] != 3:
        raise ValueError(f"before {before.shape} and after {after.shape} must be the same HxWx3")
    if pair.holdout.shape != before.shape[:2]:
        raise ValueError(f"holdout mask {pair.holdout.shape} must be {before.shape[:2]}")
    view = _box_reduce(before, work_size).transpose(2, 0, 1)
    keep = np.flatnonzero(~np.asarray(pair.holdout, bool).reshape(-1))
    if keep.size > max_pixels:
        keep = np.sort(rng.choice(keep, size=max_pixels, replace=False))
    width = before.shape[1]
    tile = (keep // width // _TILE) * (width // _TILE + 1) + (keep % width) // _TILE
    px_before = np.clip(before.reshape(-1, 3)[keep], 0.0, 1.0)
    px_after = np.clip(after.reshape(-1, 3)[keep], 0.0, 1.0)

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

    view_t = dev(view)
    full = F.interpolate(view_t[None], size=(VIEW, VIEW), mode="bilinear", align_corners=False)[0]
    return _Prepared(view_t, full, dev(px_before), dev(px_after), tile)


def _jitter(x: torch.Tensor, aug: _Aug, channel_dim: int) -> torch.Tensor:
    """Colour jitter of an input (never of a target): per-channel gains (white balance), then
    torchvision-style brightness and saturation; clipped to [0, 1]."""
    shape = [1] * x.ndim
    shape[channel_dim] = 3
    gains = torch.tensor(aug.gains, dtype=x.dtype, device=x.device).reshape(shape) * aug.brightness
    x = (x * gains).clamp(0.0, 1.0)
    luma = torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype, device=x.device).reshape(shape)
    gray = (x * luma).sum(dim=channel_dim, keepdim=True)
    return (gray + aug.saturation * (x - gray)).clamp(0.0, 1.0)


def _augmented_view(d: _Prepared, index: int, rnd: random.Random, opts: dict[str, Any]) -> _Aug:
    """A random crop (each side 60-100 %), flip and jitter of one training image's view."""
    _, h, w = d.view.shape
    ch = max(1, round(h * rnd.uniform(opts["min_crop"], 1.0)))
    cw = max(1, round(w * rnd.uniform(opts["min_crop"], 1.0)))
    y0, x0 = rnd.randint(0, h - ch), rnd.randint(0, w - cw)
    view = d.view[:, y0 : y0 + ch, x0 : x0 + cw]
    if opts["flip"] and rnd.random() < 0.5:
        view = view.flip(-1)
    aug = _Aug(index, view)
    j, wb = opts["jitter"], opts["wb_jitter"]
    if j > 0:
        aug.brightness = rnd.uniform(1 - j, 1 + j)
        aug.saturation = rnd.uniform(1 - j, 1 + j)
    if wb > 0:
        aug.gains = (2.0 ** rnd.uniform(-wb, wb), 1.0, 2.0 ** rnd.uniform(-wb, wb))
    if j > 0 or wb > 0:
        view = _jitter(view, aug, channel_dim=0)
    aug.data = F.interpolate(view[None], size=(VIEW, VIEW), mode="bilinear", align_corners=False)[0]
    return aug


def _identity_published(size: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(table_to_published(identity_table(size))).to(device)


@dataclass
class _Tuned:
    """A fine-tuned net and its post-LUT residual (published layout, or None)."""

    net: Adaptive3DLUTNet
    post: torch.Tensor | None
    steps: int

    def post_table(self) -> torch.Tensor | None:
        if self.post is None:
            return None
        ident = _identity_published(self.post.shape[-1], self.post.device)
        return (ident + self.post).clamp(0.0, 1.0)


def _forward(
    net: Adaptive3DLUTNet,
    weights: torch.Tensor,
    post_table: torch.Tensor | None,
    px: torch.Tensor,
    clip_fused: bool,
) -> torch.Tensor:
    """Colours ``px`` (B, P, 3) through the fused LUTs of ``weights`` (B, K), then the post LUT."""
    fused = net.fuse(weights)
    if clip_fused:
        fused = fused.clamp(0.0, 1.0)
    out = trilinear_lookup_published(fused, px)
    if post_table is not None:
        out = trilinear_lookup_published(post_table[None].expand(px.shape[0], -1, -1, -1, -1), out)
    return out


def _finetune(
    base: Adaptive3DLUTNet,
    data: list[_Prepared],
    pool: list[_Aug],
    ids: list[int],
    o: _Opts,
    deadline: float,
    rnd: random.Random,
    dev: torch.device,
    report: ProgressFn,
    post_init: torch.Tensor | None = None,
) -> _Tuned:
    """Train a copy of ``base`` on images ``ids`` until ``deadline`` or ``o.steps``.

    Trains the classifier layers from ``_SPLIT[o.mode]`` on, the basis LUTs when
    ``o.train_luts``, and a post LUT (identity + residual) when ``o.post_size``; L2-SP pulls the
    trained classifier layers and basis LUTs toward their values in ``base``.
    """
    net = copy.deepcopy(base).to(dev)
    cls = net.classifier
    split = _SPLIT[o.mode]
    head = cls.model[split:]
    cls_params = list(head.parameters())
    for p in cls.parameters():
        p.requires_grad_(False)
    for p in cls_params:
        p.requires_grad_(True)
    net.luts.requires_grad_(o.train_luts)
    anchored = cls_params + ([net.luts] if o.train_luts else [])
    anchors = [p.detach().clone() for p in anchored]
    post = None
    if o.post_size:
        zeros = torch.zeros(3, o.post_size, o.post_size, o.post_size, device=dev)
        post = nn.Parameter(zeros if post_init is None else post_init.clone())
    groups: list[dict[str, Any]] = []
    if o.train_luts:
        groups.append({"params": [net.luts], "lr": o.lr_luts, "base_lr": o.lr_luts})
    if cls_params:
        groups.append({"params": cls_params, "lr": o.lr_cls, "base_lr": o.lr_cls})
    if post is not None:
        groups.append({"params": [post], "lr": o.lr_post, "base_lr": o.lr_post})
    ids_pool = [a for a in pool if a.index in ids] if split else []
    usable = [i for i in ids if data[i].before.shape[0] > 0]
    if not groups or not usable or (split and not ids_pool):
        return _Tuned(net.eval(), None if post is None else post.detach(), 0)
    opt = Adam(groups, betas=(0.9, 0.999))
    # dropout (layer 15) only while the whole classifier trains, as upstream; a frozen trunk
    # with a few trained layers is fine-tuned deterministically
    net.train(o.mode == "all")
    clip_fused = post is not None
    start = time.monotonic()
    step, next_report = 0, start + 1.0
    while step < o.steps:
        now = time.monotonic()
        if now >= deadline and step > 0:
            break
        frac = min(1.0, max(step / o.steps, (now - start) / max(deadline - start, 1e-9)))
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * 0.5 * (1.0 + math.cos(math.pi * frac))
        if split == 0:
            chosen = rnd.sample(usable, min(o.batch_images, len(usable)))
            augs = [_augmented_view(data[i], i, rnd, o.aug) for i in chosen]
        else:
            augs = [ids_pool[rnd.randrange(len(ids_pool))] for _ in range(o.batch_images)]
        weights = head(torch.stack([a.data for a in augs])).reshape(len(augs), net.num_luts)
        inputs, targets, bases = [], [], []
        for aug in augs:
            d = data[aug.index]
            idx = torch.randint(0, d.before.shape[0], (o.pixels,), device=dev)
            if d.basis is not None and not o.train_luts:
                bases.append(d.basis[:, idx])
            else:
                px = d.before[idx]
                if aug.brightness != 1.0 or aug.saturation != 1.0 or aug.gains != (1.0, 1.0, 1.0):
                    px = _jitter(px, aug, channel_dim=1)
                inputs.append(px)
            targets.append(d.after[idx])
        post_table = None
        if post is not None:
            ident = _identity_published(o.post_size, dev)
            post_table = (ident + post).clamp(0.0, 1.0)
        if bases:
            # frozen basis LUTs: lookup is linear in the LUT, so mix the precomputed lookups
            # (the serving path clips the fused table instead of the mixed colours; the two
            # differ only where the fused table leaves [0, 1])
            out = torch.einsum("bk,bkpc->bpc", weights, torch.stack(bases))
            if post_table is not None:
                flat = out.clamp(0.0, 1.0).reshape(1, -1, 3)
                out = trilinear_lookup_published(post_table[None], flat).reshape(out.shape)
        else:
            out = _forward(net, weights, post_table, torch.stack(inputs), clip_fused)
        mse = (out - torch.stack(targets)).square().mean()
        loss = mse + o.weight_reg * weights.square().mean()
        if o.train_luts:
            tv, mono = lut_regularizers(net.luts)
            loss = loss + o.smooth * tv + o.mono * mono
        if o.l2sp > 0:
            loss = loss + o.l2sp * sum(
                (p - a).square().sum() for p, a in zip(anchored, anchors, strict=True)
            )
        if post is not None:
            tv_post, _ = lut_regularizers(post[None])
            loss = loss + o.post_smooth * tv_post + o.post_l2 * post.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if now >= next_report:
            report(frac, f"step {step}, mse {float(mse.detach()):.6f}")
            next_report = now + 1.0
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return _Tuned(net, None if post is None else post.detach(), step)


@torch.no_grad()
def _weights(net: Adaptive3DLUTNet, feats: torch.Tensor, split: int) -> torch.Tensor:
    return net.classifier.model[split:](feats).reshape(feats.shape[0], net.num_luts)


@torch.no_grad()
def _mse_adaptive(
    net: Adaptive3DLUTNet, post_table: torch.Tensor | None, d: _Prepared, feats: torch.Tensor
) -> float:
    """Mean squared error on ``d``'s pixels of the LUT this model would serve for the image."""
    net.eval()
    weights = _weights(net, feats, _SPLIT_SCORE)
    out = _forward(net, weights, post_table, d.before[None], clip_fused=True).clamp(0.0, 1.0)
    return float((out[0] - d.after).square().mean())


_SPLIT_SCORE = 0  # scoring runs the whole classifier on the full view (features = the view)


def _mse_lut(lut: LUT3D, d: _Prepared) -> float:
    out = np.clip(lut.apply(d.before.cpu().numpy()), 0.0, 1.0)
    return float(np.mean((out - d.after.cpu().numpy()) ** 2))


def _psnr(mse: float) -> float:
    return float(10.0 * math.log10(1.0 / max(mse, 1e-10)))


def _dlut_lut(
    sources: list[torch.Tensor],
    targets: list[torch.Tensor],
    size: int,
    options: dict[str, Any],
    budget_s: float,
    dev: torch.device,
) -> LUT3D:
    """A ``dlut`` least-squares LUT of ``size`` from (P, 3) colour pairs, clipped to [0, 1]."""
    from app.ml.dlut import fit as dlut_fit

    pairs = []
    for src, dst in zip(sources, targets, strict=True):
        b = src.detach().cpu().numpy()[:, None, :]
        pairs.append(TrainingPair(b, dst.cpu().numpy()[:, None, :], np.zeros(b.shape[:2], bool)))
    model = dlut_fit(
        pairs,
        options={"lut_size": size, **options},
        time_budget_s=max(0.2, budget_s),
        progress=no_progress,
        device=dev,
    )
    lut = model.bake(size)
    return LUT3D(np.clip(lut.table, 0.0, 1.0))


def _fit_global(
    data: list[_Prepared],
    ids: list[int],
    o: _Opts,
    budget_s: float,
    dev: torch.device,
    fold: bool = False,
) -> LUT3D:
    """The global candidate: a ``dlut`` LUT fitted to the sampled pixels of images ``ids``
    (inside a fold: a 17^3 lattice from at most 60,000 pixels, to score it quickly)."""
    sources, targets = [data[i].before for i in ids], [data[i].after for i in ids]
    if fold:
        options = {"lut_size": 17, "max_pixels": 30_000, "max_iters": 200, **o.global_options}
        return _dlut_lut(sources, targets, 17, options, budget_s, dev)
    return _dlut_lut(sources, targets, LUT_SIZE, o.global_options, budget_s, dev)


def _poly_features(rgb: torch.Tensor) -> torch.Tensor:
    """(P, 3) -> (P, 10): 1, r, g, b and the six second-order terms."""
    r, g, b = rgb.unbind(-1)
    one = torch.ones_like(r)
    return torch.stack([one, r, g, b, r * r, g * g, b * b, r * g, r * b, g * b], dim=-1)


@torch.no_grad()
def _fit_post(
    net: Adaptive3DLUTNet,
    data: list[_Prepared],
    ids: list[int],
    o: _Opts,
    ridge: float,
    dev: torch.device,
) -> torch.Tensor:
    """The post LUT's starting residual (published layout): a ridge-regularized second-order
    polynomial colour transform from what ``net`` makes of images ``ids`` to their targets,
    shrunk toward "no change" and evaluated on the post lattice (clipped to [0, 1]).

    A polynomial of degree 2 is smooth and bends gently outside the colours it saw, so it is an
    artifact-free start that the gradient steps then refine; a least-squares LUT (``dlut``)
    would cost seconds per fold here."""
    xs, ys = [], []
    for i in ids:
        d = data[i]
        weights = _weights(net, d.full[None], 0)
        if d.basis is not None:
            out = torch.einsum("k,kpc->pc", weights[0], d.basis)
        else:
            out = _forward(net, weights, None, d.before[None], clip_fused=True)[0]
        out = out.clamp(0.0, 1.0)
        xs.append(out)
        ys.append(d.after - out)
    x = _poly_features(torch.cat(xs)).double()
    y = torch.cat(ys).double()
    gram = x.T @ x
    gram += ridge * x.shape[0] * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    coef = torch.linalg.solve(gram, x.T @ y)
    ident = _identity_published(o.post_size, dev)
    nodes = ident.reshape(3, -1).T  # (M, 3) lattice colours in the published order
    table = (nodes + (_poly_features(nodes).double() @ coef).float()).clamp(0.0, 1.0)
    return table.T.reshape(ident.shape) - ident


def _build_pool(
    net: Adaptive3DLUTNet,
    data: list[_Prepared],
    usable: list[int],
    o: _Opts,
    rnd: random.Random,
    deadline: float,
) -> list[_Aug]:
    """Frozen-trunk outputs of ``pool_views`` views per image (the first one uncropped)."""
    split = _SPLIT[o.mode]
    if split == 0:
        return []
    pool: list[_Aug] = []
    trunk = net.classifier.model[:split]
    net.eval()
    with torch.no_grad():
        for round_ in range(o.pool_views):
            if round_ > 0 and time.monotonic() > deadline:
                break
            for i in usable:
                aug = (
                    _Aug(i, data[i].full)
                    if round_ == 0
                    else _augmented_view(data[i], i, rnd, o.aug)
                )
                aug.data = trunk(aug.data[None])[0]
                pool.append(aug)
    return pool


def _model_from(
    kind: str,
    base: Adaptive3DLUTNet,
    tuned: _Tuned | None,
    global_lut: LUT3D | None,
    data: list[_Prepared],
    o: _Opts,
    dev: torch.device,
    info: dict[str, Any],
) -> Adaptive3DLUTModel:
    if kind in ("global", "identity"):
        assert global_lut is not None
        return Adaptive3DLUTModel(
            base, view_size=o.work_size, device=dev, info=info, post_lut=global_lut, adaptive=False
        )
    net = base if kind == "initial" or tuned is None else tuned.net
    post_lut = None
    if kind == "fine_tuned" and tuned is not None:
        table = tuned.post_table()
        post_lut = None if table is None else LUT3D(published_to_table(table))
    model = Adaptive3DLUTModel(
        net, view_size=o.work_size, device=dev, info=info, post_lut=post_lut, max_gain=PHOTO_GAIN
    )
    with torch.no_grad():
        views = torch.stack([d.full for d in data])
        model.mean_weights = net(views).mean(dim=0).float().cpu().numpy()
    return model


def fit(
    pairs: list[TrainingPair],
    *,
    options: dict[str, Any],
    time_budget_s: float,
    progress: ProgressFn = no_progress,
    device: torch.device | str | None = None,
) -> Adaptive3DLUTModel:
    """Learn an image-adaptive 3D LUT style from ``pairs`` (see the module docstring for options).

    Follows :data:`app.ml.base.FitFn`: the colour loss and the choice between candidates use only
    pixels outside each pair's ``holdout`` mask (the classifier sees the whole "before" image,
    which is known at inference). ``model.info`` records the choice (``choice``), every
    candidate's held-out PSNR (``holdout_psnr``) and how it was held out (``selection``).
    """
    start = time.monotonic()
    if not pairs:
        raise ValueError("need at least one training pair")
    # the fit ends by itself after ``max_seconds`` (default 45) even when given more time
    budget = max(0.0, min(float(time_budget_s), float(options.get("max_seconds", 45.0))))
    end = start + max(0.05, 0.95 * budget - 0.3)  # leave a little for building the model
    dev = pick_device(device)
    o = _Opts.parse(options)
    seed = int(options.get("seed", 0))
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    with torch_threads(options.get("num_threads", 1)):
        base = (_load_published_net(Path(o.init)) if o.init else Adaptive3DLUTNet()).to(dev).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        data = [_prepare(p, o.work_size, o.max_pixels, rng, dev) for p in pairs]
        if not o.train_luts:
            with torch.no_grad():
                k = base.num_luts
                for d in data:
                    d.basis = trilinear_lookup_published(
                        base.luts, d.before[None].expand(k, -1, -1)
                    )
        usable = [i for i, d in enumerate(data) if d.before.shape[0] > 0]
        if not usable:
            raise ValueError("every pixel of every pair is held out; nothing to fit")
        progress(0.0, f"fitting image-adaptive 3D LUTs on {len(pairs)} pairs ({o.mode} classifier)")
        # the augmented views only feed fine-tuning (the published weights, a global LUT and
        # the identity train no classifier)
        tunes = o.select in ("auto", "fine_tuned")
        pool = _build_pool(base, data, usable, o, rnd, start + 0.15 * budget) if tunes else []
        info: dict[str, Any] = {"train_classifier": o.mode, "post_lut_size": o.post_size}

        def elapsed_frac() -> float:
            return min(0.99, (time.monotonic() - start) / max(budget, 1e-9))

        choice = o.select
        if o.select == "auto":
            scores, selection, folds_done = _select(
                base, data, pool, usable, o, start + o.select_fraction * (end - start), rnd, dev
            )
            # ties go to the earlier candidate: the initial weights first, never worse than them
            ranked = [c for c in CANDIDATES if c in scores]
            choice = max(ranked, key=lambda c: (scores[c], -CANDIDATES.index(c)))
            info.update(selection=selection, folds=folds_done, holdout_psnr=scores)
            progress(elapsed_frac(), f"chose {choice}: held-out PSNR {scores}")
        info["choice"] = choice

        tuned: _Tuned | None = None
        global_lut: LUT3D | None = None
        info["steps"] = 0
        if choice == "fine_tuned":
            sub = lambda f, m: progress(elapsed_frac(), m)  # noqa: E731
            tuned = _tune(base, data, pool, usable, o, end, rnd, dev, sub)
            info["steps"] = tuned.steps
        elif choice == "global":
            global_lut = _fit_global(data, usable, o, end - time.monotonic(), dev)
        elif choice == "identity":
            global_lut = LUT3D.identity(LUT_SIZE)
        info["train_seconds"] = round(time.monotonic() - start, 2)
        model = _model_from(choice, base, tuned, global_lut, data, o, dev, info)
    progress(1.0, f"adaptive 3D LUT fitted ({choice}) in {model.info['train_seconds']} s")
    return model


def _tune(
    base: Adaptive3DLUTNet,
    data: list[_Prepared],
    pool: list[_Aug],
    ids: list[int],
    o: _Opts,
    deadline: float,
    rnd: random.Random,
    dev: torch.device,
    report: ProgressFn,
) -> _Tuned:
    """The fine-tuned candidate on images ``ids``: the post LUT started from a polynomial fit on
    top of ``base``, then Adam on it and on the trained classifier layers."""
    post_init = _fit_post(base, data, ids, o, o.post_ridge, dev) if o.post_size else None
    return _finetune(base, data, pool, ids, o, deadline, rnd, dev, report, post_init)


def _select(
    base: Adaptive3DLUTNet,
    data: list[_Prepared],
    pool: list[_Aug],
    usable: list[int],
    o: _Opts,
    deadline: float,
    rnd: random.Random,
    dev: torch.device,
) -> tuple[dict[str, float], str, int]:
    """Held-out PSNR of every candidate: leave-one-photo-out over up to ``o.folds`` photos (as
    many folds as the time allows, at least one) with two or more usable pairs; with one, 20 %
    of its (non-held-out) pixels in 16x16 tiles, and only ``initial`` against ``fine_tuned``
    (and ``identity``): a global LUT fitted to one photo always wins on that photo's pixels."""
    scores: dict[str, list[float]] = {c: [] for c in CANDIDATES}

    def score_all(tuned: _Tuned, global_lut: LUT3D | None, test: _Prepared) -> None:
        feats = test.full[None]
        scores["initial"].append(_psnr(_mse_adaptive(base, None, test, feats)))
        scores["identity"].append(_psnr(float((test.before - test.after).square().mean())))
        scores["fine_tuned"].append(
            _psnr(_mse_adaptive(tuned.net, tuned.post_table(), test, feats))
        )
        if global_lut is not None:
            scores["global"].append(_psnr(_mse_lut(global_lut, test)))

    if len(usable) == 1:
        d = data[usable[0]]
        tiles = np.unique(d.tile)
        rng = np.random.default_rng(len(tiles))
        held_tiles = rng.choice(tiles, size=max(1, round(0.2 * len(tiles))), replace=False)
        held = np.isin(d.tile, held_tiles)
        if held.all() or not held.any():
            held = np.arange(d.tile.size) % 5 == 0
        inner = list(data)
        inner[usable[0]] = d.subset(~held)
        tuned = _tune(base, inner, pool, usable, o, deadline, rnd, dev, no_progress)
        score_all(tuned, None, d.subset(held))
        return _means(scores), "held-out 16x16 tiles of the one pair (20 % of its pixels)", 1
    fold_ids = usable[: min(o.folds, len(usable))]
    done, global_cost = 0, 0.0
    for j, f in enumerate(fold_ids):
        now = time.monotonic()
        slot = (deadline - now) / (len(fold_ids) - j)
        if j > 0 and slot < 1.0:
            break
        train = [i for i in usable if i != f]
        global_lut = None
        # the global LUT in every fold, or in none (its mean must be over the same photos); not
        # at all when the folds are very short. The fold fit (17^3, 30k pixels) takes well under
        # a second; at the former 3 s threshold the folds of a 60 s learn_style (~2 s inner
        # slots) left it out in some outer folds, which then chose identity (real_edits golden:
        # two of four), so the holdout judged a different model than the final fit
        if (j == 0 and slot >= GLOBAL_MIN_SLOT_S) or scores["global"]:
            if j == 0 or global_cost < 0.6 * slot:
                t0 = time.monotonic()
                global_lut = _fit_global(data, train, o, 0.4 * slot, dev, fold=True)
                global_cost = time.monotonic() - t0
            else:
                scores["global"] = []
        tuned = _tune(base, data, pool, train, o, now + slot, rnd, dev, no_progress)
        score_all(tuned, global_lut, data[f])
        done += 1
    return _means(scores), f"leave-one-photo-out ({done} of {len(usable)} photos)", done


def _means(scores: dict[str, list[float]]) -> dict[str, float]:
    return {c: round(float(np.mean(v)), 3) for c, v in scores.items() if v}
