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

Deviations (and why)
--------------------
* Upstream trains 400 epochs over 4,500 FiveK images at Adam lr 1e-4, batch 1, updating the whole
  classifier. Here a style has 1-16 pairs and a CPU budget of minutes, where one full classifier
  forward + backward at 256x256 costs 75-300 ms (2 CPU cores). So, when the caller passes
  ``options["init_weights"]`` (the published weights; recommended), the default is
  ``train_classifier="head"``: the published convolution/InstanceNorm layers (``model.1-12``)
  stay frozen, their features are computed once for a pool of ``pool_views`` augmented views per
  image, and only ``model.13`` and ``model.16`` (plus all basis LUTs) train -- about 10x more
  steps per second. ``"all"`` (the default without ``init_weights``, as upstream) trains every
  layer on fresh augmentations each step; ``"none"`` freezes the classifier and fits the LUTs only.
  Adam with lr 5e-3 for the LUTs and 5e-4 for the head (1e-4 when training all layers), cosine
  decay to zero over ``steps`` or the time budget, whichever ends first.
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
  (``app.bench.adaptive_quality``) jitter lowered the held-out PSNR, so it stays opt-in.
* The monotonicity weight is an option (``monotonicity``, default 10 as upstream); DESIGN.md notes
  that strict monotonicity is wrong for some looks (e.g. black-and-white with a negative blue
  weight), so set it low (e.g. 0.1) or 0 for such styles.
* :meth:`Adaptive3DLUTModel.predict_weights` on a large image: upstream resizes the full image to
  256x256 by plain bilinear interpolation (which aliases on a 12 MP photo). The published model
  keeps that exact behaviour (``view_size=None``). Fitted models set ``view_size`` to their
  ``work_size`` and first box-downsample larger images by an integer factor to at most that size,
  so the classifier sees at inference what it saw in training.
* ``apply`` of float images clips the output to [0, 1]; ``bake`` clips the fused table to [0, 1]
  (the paired LUTs individually span about [-0.28, 0.83]). Integer images are clipped by
  :meth:`LUT3D.apply` anyway.
* ``bake`` of the published model: there are no training images, so ``mean_weights`` is the mean
  over the images passed to :func:`load_published` (``mean_images``), or ``(1, 0, 0)`` (basis
  LUT 0 alone) when none are given.

Options of :func:`fit` (unknown keys are ignored)
-------------------------------------------------
``init_weights`` (None; a directory with ``LUTs.pth`` + ``classifier.pth`` to start from; None
starts upstream's way: LUT 0 = identity, others zero, Xavier conv init, last bias 1),
``train_classifier`` ("head" with ``init_weights``, else "all"; or "none"), ``lr`` (5e-3, LUTs),
``lr_classifier`` (5e-4 head / 1e-4 all), ``steps`` (100000, an upper bound; the time budget
usually ends first), ``work_size`` (384), ``pixels_per_image`` (8192), ``max_pixels``
(250000 per image), ``batch_images`` (4), ``pool_views`` (32 per image), ``smooth`` (1e-4),
``monotonicity`` (10.0), ``weight_reg`` (1e-4), ``jitter`` (0.0), ``wb_jitter`` (0.0),
``min_crop`` (0.6), ``flip`` (True), ``num_threads`` (None: unchanged), ``seed`` (0).
Building the view pool stops after a quarter of the time budget (at least one view per image).

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

from app.ml.base import ProgressFn, TrainingPair, no_progress
from app.ml.lut import LUT3D, identity_table
from app.ml.paths import require_path
from app.ml.torch_utils import (
    pick_device,
    published_to_table,
    table_to_published,
    to_float01,
    torch_threads,
    trilinear_lookup_published,
)

KIND = "adaptive_3dlut"
STATE_VERSION = 1
LUT_SIZE = 33
NUM_LUTS = 3
VIEW = 256  # the classifier's input side

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
    """A fitted (or published) image-adaptive 3D LUT model (kind ``"adaptive_3dlut"``)."""

    kind = KIND

    def __init__(
        self,
        net: Adaptive3DLUTNet,
        *,
        mean_weights: Sequence[float] | np.ndarray | None = None,
        view_size: int | None = None,
        device: str | torch.device | None = None,
        info: dict[str, Any] | None = None,
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
        self.mean_weights = mean
        self.view_size = None if view_size is None else int(view_size)
        self.info: dict[str, Any] = dict(info or {})

    def __repr__(self) -> str:
        return (
            f"Adaptive3DLUTModel(luts={self.net.num_luts}x{self.net.lut_size}^3, "
            f"mean_weights={np.round(self.mean_weights, 4).tolist()})"
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

    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Grade ``image`` with the LUT fused for it (same dtype out; floats clipped to [0, 1])."""
        lut = self.fused_lut(self.predict_weights(image))
        out = lut.apply(image, strength)
        if np.issubdtype(out.dtype, np.floating):
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def bake(self, size: int = 33) -> LUT3D:
        """The LUT fused with :attr:`mean_weights` (clipped to [0, 1]), resampled to ``size``."""
        lut = self.fused_lut(self.mean_weights, clip=True)
        return lut if size == lut.size else lut.resample(size)

    def state_dict(self) -> dict[str, Any]:
        """Weights (``param.<name>``), mean weights, sizes; loads with ``weights_only=True``."""
        state: dict[str, Any] = {
            "kind": KIND,
            "version": STATE_VERSION,
            "num_luts": self.net.num_luts,
            "lut_size": self.net.lut_size,
            "lut_layout": "k,c,b,g,r",
            "mean_weights": torch.from_numpy(self.mean_weights.copy()),
            "view_size": -1 if self.view_size is None else self.view_size,
            "info": {str(k): v for k, v in self.info.items() if isinstance(v, int | float | str)},
        }
        for name, tensor in self.net.state_dict().items():
            state[f"param.{name}"] = tensor.detach().cpu().clone()
        return state

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], device: str | torch.device | None = None
    ) -> Adaptive3DLUTModel:
        """Rebuild a model saved by :meth:`state_dict`."""
        if state.get("kind", KIND) != KIND:
            raise ValueError(f"not an adaptive 3D LUT state (kind={state.get('kind')!r})")
        net = Adaptive3DLUTNet(int(state["num_luts"]), int(state["lut_size"]))
        weights = {k[len("param.") :]: v for k, v in state.items() if k.startswith("param.")}
        net.load_state_dict(weights)
        view_size = int(state.get("view_size", -1))
        return cls(
            net,
            mean_weights=np.asarray(state["mean_weights"], dtype=np.float32),
            view_size=None if view_size < 0 else view_size,
            device=device,
            info=dict(state.get("info", {})),
        )


def _load_published_net(directory: Path) -> Adaptive3DLUTNet:
    folder = require_path(directory, "published weights directory")
    luts_file = torch.load(folder / "LUTs.pth", map_location="cpu", weights_only=True)
    classifier = torch.load(folder / "classifier.pth", map_location="cpu", weights_only=True)
    keys = sorted(luts_file, key=int)
    luts = torch.stack([luts_file[k]["LUT"].float() for k in keys])
    if luts.ndim != 5 or luts.shape[1] != 3:
        raise ValueError(f"{folder / 'LUTs.pth'}: expected K x (3, N, N, N) LUTs, got {luts.shape}")
    net = Adaptive3DLUTNet(int(luts.shape[0]), int(luts.shape[-1]))
    with torch.no_grad():
        net.luts.copy_(luts)
    net.classifier.load_state_dict(classifier)
    return net


def load_published(
    directory: Path,
    *,
    mean_images: Sequence[np.ndarray] = (),
    device: str | torch.device | None = None,
) -> Adaptive3DLUTModel:
    """Load the published sRGB paired model (``LUTs.pth`` + ``classifier.pth`` in ``directory``,
    a ``Path``; a ``str`` is a TypeError).

    ``mean_weights`` (used by :meth:`~Adaptive3DLUTModel.bake`) is the mean of the weights
    predicted for ``mean_images``, or ``(1, 0, 0)`` when none are given.
    """
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
@dataclass
class _Prepared:
    view: torch.Tensor  # (3, h, w): the box-downsampled "before", for the classifier
    before: torch.Tensor  # (P, 3): non-held-out full-resolution pixels
    after: torch.Tensor  # (P, 3): their targets


@dataclass
class _Aug:
    """One augmented view: which image, its classifier input or features, its colour jitter."""

    index: int
    data: torch.Tensor  # (3, 256, 256) view, (128, 16, 16) features or (K,) weights
    brightness: float = 1.0
    saturation: float = 1.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)


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
    keep = np.flatnonzero(~pair.holdout.reshape(-1))
    if keep.size > max_pixels:
        keep = np.sort(rng.choice(keep, size=max_pixels, replace=False))
    px_before = np.clip(before.reshape(-1, 3)[keep], 0.0, 1.0)
    px_after = np.clip(after.reshape(-1, 3)[keep], 0.0, 1.0)

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

    return _Prepared(dev(view), dev(px_before), dev(px_after))


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


def fit(
    pairs: list[TrainingPair],
    *,
    options: dict[str, Any],
    time_budget_s: float,
    progress: ProgressFn = no_progress,
    device: torch.device | str | None = None,
) -> Adaptive3DLUTModel:
    """Learn an image-adaptive 3D LUT style from ``pairs`` (see the module docstring for options).

    Follows :data:`app.ml.base.FitFn`: the colour loss uses only pixels outside each pair's
    ``holdout`` mask (the classifier sees the whole "before" image, which is known at inference).
    """
    start = time.monotonic()
    if not pairs:
        raise ValueError("need at least one training pair")
    dev = pick_device(device)
    seed = int(options.get("seed", 0))
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    init = options.get("init_weights")
    work_size = int(options.get("work_size", 384))
    pixels = int(options.get("pixels_per_image", 8192))
    batch_images = max(1, int(options.get("batch_images", 4)))
    steps = int(options.get("steps", 100_000))
    lam_smooth = float(options.get("smooth", 1e-4))
    lam_mono = float(options.get("monotonicity", 10.0))
    lam_weight = float(options.get("weight_reg", 1e-4))
    mode = str(options.get("train_classifier", "head" if init else "all")).lower()
    if mode not in ("all", "head", "none"):
        raise ValueError(f"train_classifier must be 'all', 'head' or 'none', got {mode!r}")
    pool_views = max(1, int(options.get("pool_views", 32)))
    aug_opts = {
        "min_crop": min(1.0, max(0.05, float(options.get("min_crop", 0.6)))),
        "flip": bool(options.get("flip", True)),
        "jitter": float(options.get("jitter", 0.0)),
        "wb_jitter": float(options.get("wb_jitter", 0.0)),
    }
    lr_luts = float(options.get("lr", 5e-3))
    lr_cls = float(options.get("lr_classifier", 1e-4 if mode == "all" else 5e-4))

    with torch_threads(options.get("num_threads")):
        net = (_load_published_net(Path(init)) if init else Adaptive3DLUTNet()).to(dev)
        cls = net.classifier
        data = [
            _prepare(p, work_size, int(options.get("max_pixels", 250_000)), rng, dev) for p in pairs
        ]
        if all(d.before.shape[0] == 0 for d in data):
            raise ValueError("every pixel of every pair is held out; nothing to fit")
        usable = [i for i, d in enumerate(data) if d.before.shape[0] > 0]
        progress(0.0, f"fitting image-adaptive 3D LUTs on {len(pairs)} pairs ({mode} classifier)")

        # which classifier parameters train, and a pool of pre-computed views for the cheap modes
        trainable = list(cls.parameters()) if mode == "all" else []
        if mode == "head":
            trainable = list(cls.model[13:].parameters())
        pool: list[_Aug] = []
        if mode != "all":
            cls.eval()
            pool_deadline = start + 0.25 * time_budget_s  # at least one view per image regardless
            with torch.no_grad():
                for round_ in range(pool_views):
                    if round_ > 0 and time.monotonic() > pool_deadline:
                        break
                    for i in usable:
                        aug = _augmented_view(data[i], i, rnd, aug_opts)
                        feats = cls.model[:13](aug.data[None])
                        aug.data = feats[0] if mode == "head" else cls.model[13:](feats).flatten()
                        pool.append(aug)
        groups: list[dict[str, Any]] = [{"params": [net.luts], "lr": lr_luts, "base_lr": lr_luts}]
        if trainable:
            groups.append({"params": trainable, "lr": lr_cls, "base_lr": lr_cls})
        opt = torch.optim.Adam(groups, betas=(0.9, 0.999))

        deadline = start + max(0.0, 0.95 * time_budget_s - 1.0)
        net.train()
        step, next_report = 0, start + 1.0
        while step < steps:
            now = time.monotonic()
            if now >= deadline and step > 0:
                break
            frac = min(1.0, max(step / steps, (now - start) / max(deadline - start, 1e-9)))
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * 0.5 * (1.0 + math.cos(math.pi * frac))
            if mode == "all":
                chosen = rnd.sample(usable, min(batch_images, len(usable)))
                augs = [_augmented_view(data[i], i, rnd, aug_opts) for i in chosen]
                weights = cls(torch.stack([a.data for a in augs]))
            else:
                augs = [pool[rnd.randrange(len(pool))] for _ in range(batch_images)]
                batch = torch.stack([a.data for a in augs])
                if mode == "head":
                    weights = cls.model[13:](batch).reshape(len(augs), net.num_luts)
                else:
                    weights = batch
            inputs, targets = [], []
            for aug in augs:
                d = data[aug.index]
                idx = torch.randint(0, d.before.shape[0], (pixels,), device=dev)
                px = d.before[idx]
                if aug.brightness != 1.0 or aug.saturation != 1.0 or aug.gains != (1.0, 1.0, 1.0):
                    px = _jitter(px, aug, channel_dim=1)
                inputs.append(px)
                targets.append(d.after[idx])
            out = trilinear_lookup_published(net.fuse(weights), torch.stack(inputs))
            mse = (out - torch.stack(targets)).square().mean()
            tv, mono = lut_regularizers(net.luts)
            loss = mse + lam_smooth * tv + lam_mono * mono + lam_weight * weights.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if now >= next_report:
                progress(min(0.99, frac), f"step {step}, mse {float(mse.detach()):.6f}")
                next_report = now + 1.0
        net.eval()
        model = Adaptive3DLUTModel(
            net,
            view_size=work_size,
            device=dev,
            info={
                "steps": step,
                "train_seconds": round(time.monotonic() - start, 2),
                "train_classifier": mode,
            },
        )
        with torch.no_grad():
            views = torch.stack(
                [
                    F.interpolate(
                        d.view[None], size=(VIEW, VIEW), mode="bilinear", align_corners=False
                    )[0]
                    for d in data
                ]
            )
            model.mean_weights = net(views).mean(dim=0).float().cpu().numpy()
    progress(1.0, f"adaptive 3D LUT fitted: {step} steps in {model.info['train_seconds']} s")
    return model
