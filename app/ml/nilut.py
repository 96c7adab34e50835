"""NILUT: a neural implicit 3D LUT (a per-colour MLP), optionally conditioned on a style vector.

Re-implementation of Conde, Vazquez-Corral, Brown, Timofte, "NILUT: Conditional Neural Implicit
3D Lookup Tables for Image Enhancement", AAAI 2024 (github.com/mv-lab/nilut, MIT), from the
paraphrase in ``docs/models/nilut.md``; no upstream code was copied.

What is re-implemented
----------------------
* :class:`NILUTNet`: ``Linear(in -> H) + ReLU``, ``L x (Linear(H -> H) + Tanh)``, ``Linear(H -> 3)``
  held in ``self.net`` (an ``nn.Sequential``), so its state_dict keys are ``net.0 .. net.{2L+2}``
  exactly as in the published checkpoint. Input = RGB in [0, 1] followed by an optional K-dim style
  vector (conditioning by concatenation, the paper's CNILUT). Residual mode (the default):
  ``clamp(rgb + mlp(x), 0, 1)`` where only the RGB part is added (as the upstream notebook does);
  non-residual mode appends a Sigmoid.
* :func:`load_published_nilut` loads ``nilutx3style.pt`` (in=6, H=256, L=2; styles [1,0,0] = LUT01,
  [0,1,0] = LUT03, [0,0,1] = LUT04; fractional vectors blend them).
* :class:`NILUTModel`: the :class:`app.ml.base.StyleModel` (kind ``"nilut"``). ``bake(size)``
  evaluates the MLP on the ``size**3`` lattice in batches and returns a :class:`~app.ml.lut.LUT3D`
  of any size; ``apply`` bakes once at ``apply_size`` (65 by default), caches the LUT and uses the
  fast trilinear :meth:`LUT3D.apply`; ``predict`` evaluates the MLP per pixel (exact, slower).
* :func:`fit` (the :data:`app.ml.base.FitFn`) learns one look from before/after pairs;
  :func:`fit_styles` learns several looks in one conditional network (one-hot conditions).

Deviations from the upstream ``fit.py`` (measured on 2 shared CPU cores)
-----------------------------------------------------------------------
* Upstream trains on *all* pixels in one batch for 1000 steps with Adam lr 1e-3 and fp16 autocast on
  CUDA. On a CPU a full 2 M-pixel batch costs seconds per step, so we draw random minibatches
  (1,024 pixels on CPU, 65,536 on CUDA) with Adam at lr 1e-2 and a cosine decay to zero over the
  budget (whichever of ``steps`` and the time comes first). Training is fp32, on one torch thread
  by default (``num_threads``: ~6x faster than two threads on the shared machine for these small
  ops), with :class:`app.ml.torch_utils.Adam` (``torch.optim`` imports ``torch._dynamo`` on first
  use, 3-11 s here).
* The network starts as "no change": residual mode with the last layer zeroed (``zero_init``),
  hidden width 64 by default (few-shot looks do not need 128-256).
* Colours no example shows: each step also draws ``batch_size / 4`` uniformly random colours and
  pulls the MLP (weight ``prior_weight``, L1) toward a smooth global transform, a ridge-regularized
  second-order polynomial of the training pixels' change (``prior_ridge``), instead of letting the
  MLP extrapolate freely (issue 10: artifacts where the examples are thin).
* Few-shot safety (``select="auto"``, the default): the fitted network is compared with "no
  change" (``identity``) on held-out photos -- leave-one-photo-out over up to ``folds`` photos,
  as many as ``select_fraction`` of the time allows -- or, with one pair, on 20 % of its
  non-held-out pixels in 16x16 tiles; the better one is kept (ties go to ``identity``) and refitted
  on everything with the rest of the time. ``model.info`` holds ``choice``, ``holdout_psnr`` (dB
  per candidate), ``selection`` and ``folds``. The published 3-style checkpoint is not used as a
  start: its styles are three fixed film looks, unrelated to a user's edits, and its 256-wide
  layers would cost 4x more per step.
* Pixels are sampled from the non-held-out pixels of every pair (at most ``max_samples`` in all);
  upstream has no hold-out. A fit ends by itself after ``max_seconds`` (45).
* The multi-style training script was never released; :func:`fit_styles` draws the same number of
  pixels from every style per step and does not add upstream's extra "average of all styles" basis.

Options of :func:`fit` (unknown keys are ignored)
-------------------------------------------------
``hidden`` (64), ``layers`` (2), ``lr`` (1e-2), ``schedule`` ("cosine" | "constant"),
``steps`` (20000, an upper bound; the time budget usually stops first), ``batch_size``
(1024 CPU / 65536 CUDA), ``loss`` ("l1" | "mse"; upstream uses L1), ``max_samples`` (400,000
for :func:`fit`, 2,000,000 for :func:`fit_styles`), ``prior_weight`` (0.3), ``prior_ridge``
(1e-3), ``zero_init`` (True), ``select`` ("auto" | "identity" | "fine_tuned"), ``folds`` (4),
``select_fraction`` (0.75), ``max_seconds`` (45), ``num_threads`` (1), ``seed`` (0),
``apply_size`` (65, the LUT size used by :meth:`NILUTModel.apply`).

Example:
    >>> import numpy as np
    >>> model = NILUTModel(NILUTNet(hidden=16, layers=1))
    >>> model.bake(9).size
    9
    >>> model.apply(np.zeros((2, 2, 3), np.uint8)).shape
    (2, 2, 3)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.ml import weights as shipped_weights
from app.ml.base import ProgressFn, TrainingPair, no_progress
from app.ml.lut import LUT3D, plain_value
from app.ml.paths import require_path
from app.ml.torch_utils import Adam, lattice, pick_device, to_float01, torch_threads

KIND = "nilut"
STATE_VERSION = 1
PUBLISHED_STYLE_NAMES = ("LUT01", "LUT03", "LUT04")

__all__ = [
    "KIND",
    "PUBLISHED_STYLE_NAMES",
    "NILUTModel",
    "NILUTNet",
    "fit",
    "fit_styles",
    "load_published_nilut",
]


class NILUTNet(nn.Module):
    """The NILUT MLP: RGB (+ K-dim condition) -> RGB.

    Args:
        in_features: 3 + number of style-condition channels.
        hidden: hidden width H.
        layers: number of hidden ``Linear(H -> H) + Tanh`` blocks L.
        residual: ``clamp(rgb + mlp(x), 0, 1)`` when True, ``sigmoid(mlp(x))`` when False.
    """

    def __init__(
        self, in_features: int = 3, hidden: int = 128, layers: int = 2, residual: bool = True
    ) -> None:
        super().__init__()
        if in_features < 3:
            raise ValueError(f"in_features must be >= 3 (RGB first), got {in_features}")
        if hidden < 1 or layers < 0:
            raise ValueError(f"hidden must be >= 1 and layers >= 0, got {hidden} and {layers}")
        self.in_features = int(in_features)
        self.hidden = int(hidden)
        self.layers = int(layers)
        self.residual = bool(residual)
        stack: list[nn.Module] = [nn.Linear(in_features, hidden), nn.ReLU()]
        for _ in range(layers):
            stack += [nn.Linear(hidden, hidden), nn.Tanh()]
        stack.append(nn.Linear(hidden, 3))
        if not residual:
            stack.append(nn.Sigmoid())
        self.net = nn.Sequential(*stack)

    @property
    def num_styles(self) -> int:
        return self.in_features - 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (P, in_features), RGB first. Returns (P, 3) in [0, 1]."""
        out = self.net(x)
        if self.residual:
            out = torch.clamp(x[:, :3] + out, 0.0, 1.0)
        return out


class NILUTModel:
    """A fitted (or published) NILUT as a :class:`app.ml.base.StyleModel` (kind ``"nilut"``).

    ``condition`` is the style vector used by :meth:`apply`, :meth:`bake` and :meth:`predict` when
    none is passed (length = ``net.num_styles``; empty for a single-style network). Fractional
    vectors blend the learned styles, e.g. ``[0.5, 0.5, 0]``.
    """

    kind = KIND

    def __init__(
        self,
        net: NILUTNet,
        *,
        condition: Sequence[float] | np.ndarray | None = None,
        style_names: Sequence[str] = (),
        apply_size: int = 65,
        device: str | torch.device | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.net = net.to(self.device).eval()
        self.style_names = [str(n) for n in style_names]
        self.apply_size = int(apply_size)
        self.info: dict[str, Any] = dict(info or {})
        self._condition = self._check_condition(condition)
        self._lut_cache: dict[tuple[int, tuple[float, ...]], LUT3D] = {}

    def __repr__(self) -> str:
        net = self.net
        return (
            f"NILUTModel(in={net.in_features}, hidden={net.hidden}, layers={net.layers}, "
            f"condition={self.condition.tolist()})"
        )

    # -- condition ---------------------------------------------------------------------------
    @property
    def num_styles(self) -> int:
        return self.net.num_styles

    @property
    def condition(self) -> np.ndarray:
        return self._condition.copy()

    @condition.setter
    def condition(self, value: Sequence[float] | np.ndarray | None) -> None:
        self._condition = self._check_condition(value)

    def _check_condition(self, value: Sequence[float] | np.ndarray | None) -> np.ndarray:
        k = self.net.num_styles
        if value is None:
            cond = np.zeros(k, np.float32)
            if k:
                cond[0] = 1.0
            return cond
        cond = np.asarray(value, dtype=np.float32).reshape(-1)
        if cond.shape != (k,) or not np.all(np.isfinite(cond)):
            raise ValueError(
                f"condition must be {k} finite numbers, got {np.asarray(value).tolist()}"
            )
        return cond

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def _eval_rgb(self, rgb: torch.Tensor, cond: np.ndarray, batch_size: int) -> torch.Tensor:
        out = torch.empty_like(rgb)
        cond_t = torch.from_numpy(cond).to(self.device)
        for start in range(0, rgb.shape[0], batch_size):
            chunk = rgb[start : start + batch_size].to(self.device)
            if cond_t.numel():
                chunk = torch.cat([chunk, cond_t.expand(chunk.shape[0], -1)], dim=1)
            out[start : start + batch_size] = self.net(chunk).to(out.device)
        return out

    def predict(
        self,
        rgb: np.ndarray,
        condition: Sequence[float] | np.ndarray | None = None,
        *,
        batch_size: int = 262_144,
    ) -> np.ndarray:
        """Evaluate the MLP per colour (exact, no LUT): ``rgb`` (..., 3) -> float32 (..., 3).

        uint8/uint16 input is scaled to [0, 1]; float input is clipped to [0, 1].
        """
        arr = np.asarray(rgb)
        if arr.shape[-1:] != (3,):
            raise ValueError(f"rgb must have shape (..., 3), got {arr.shape}")
        flat = to_float01(arr.reshape(-1, 1, 3)).reshape(-1, 3)
        cond = self._condition if condition is None else self._check_condition(condition)
        out = self._eval_rgb(torch.from_numpy(np.ascontiguousarray(flat)), cond, batch_size)
        return out.numpy().reshape(arr.shape)

    def bake(self, size: int = 33, condition: Sequence[float] | np.ndarray | None = None) -> LUT3D:
        """The network (for ``condition``, default :attr:`condition`) on a ``size**3`` lattice."""
        if size < 2:
            raise ValueError(f"LUT size must be >= 2, got {size}")
        cond = self._condition if condition is None else self._check_condition(condition)
        key = (int(size), tuple(float(c) for c in cond))
        cached = self._lut_cache.get(key)
        if cached is not None:
            return cached
        points = lattice(size, device=self.device)
        table = self._eval_rgb(points, cond, 262_144).reshape(size, size, size, 3)
        lut = LUT3D(table.cpu().numpy())
        if len(self._lut_cache) > 8:
            self._lut_cache.clear()
        self._lut_cache[key] = lut
        return lut

    def apply(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Grade an HxWx3 uint8/uint16/float32 image through the baked ``apply_size`` LUT."""
        return self.bake(self.apply_size).apply(image, strength)

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, weights (``param.<name>``) and condition; loads with weights_only."""
        net = self.net
        state: dict[str, Any] = {
            "kind": KIND,
            "version": STATE_VERSION,
            "in_features": net.in_features,
            "hidden": net.hidden,
            "layers": net.layers,
            "residual": net.residual,
            "condition": torch.from_numpy(self._condition.copy()),
            "style_names": list(self.style_names),
            "apply_size": self.apply_size,
            "info": plain_value(self.info),
        }
        for name, tensor in net.state_dict().items():
            state[f"param.{name}"] = tensor.detach().cpu().clone()
        return state

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], device: str | torch.device | None = None
    ) -> NILUTModel:
        """Rebuild a model saved by :meth:`state_dict`."""
        if state.get("kind", KIND) != KIND:
            raise ValueError(f"not a NILUT state (kind={state.get('kind')!r})")
        net = NILUTNet(
            int(state["in_features"]),
            int(state["hidden"]),
            int(state["layers"]),
            bool(state.get("residual", True)),
        )
        weights = {k[len("param.") :]: v for k, v in state.items() if k.startswith("param.")}
        net.load_state_dict(weights)
        cond = state.get("condition")
        return cls(
            net,
            condition=None if cond is None else np.asarray(cond, dtype=np.float32),
            style_names=list(state.get("style_names", [])),
            apply_size=int(state.get("apply_size", 65)),
            device=device,
            info=dict(state.get("info", {})),
        )


def load_published_nilut(
    path: Path | None = None,
    *,
    condition: Sequence[float] | None = (1.0, 0.0, 0.0),
    device: str | torch.device | None = None,
) -> NILUTModel:
    """Load the published conditional checkpoint (``nilutx3style.pt``, mv-lab/nilut).

    The file is a dict whose ``"model"`` entry is the network's state_dict; the shapes give
    ``in_features``, ``H`` and ``L``. Styles: [1,0,0] = LUT01, [0,1,0] = LUT03, [0,0,1] = LUT04.
    ``path`` is a ``Path`` (a ``str`` is a TypeError); default: the copy shipped in
    :mod:`app.ml.weights`.
    """
    if path is None:
        path = shipped_weights.nilut_checkpoint()
    ckpt = torch.load(require_path(path, "NILUT checkpoint"), map_location="cpu", weights_only=True)
    weights = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    linear_ids = sorted(
        int(k.split(".")[1]) for k in weights if k.startswith("net.") and k.endswith(".weight")
    )
    if len(linear_ids) < 2:
        raise ValueError(f"{path}: no NILUT layers (net.N.weight) found")
    first = weights[f"net.{linear_ids[0]}.weight"]
    hidden, in_features = int(first.shape[0]), int(first.shape[1])
    net = NILUTNet(in_features, hidden, layers=len(linear_ids) - 2, residual=True)
    net.load_state_dict(weights)
    k = in_features - 3
    names = PUBLISHED_STYLE_NAMES if k == len(PUBLISHED_STYLE_NAMES) else ()
    cond = condition if condition is not None and len(condition) == k else None
    return NILUTModel(net, condition=cond, style_names=names, device=device)


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------
def _pair_pixels(
    pairs: Sequence[TrainingPair], max_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Non-held-out (before, after) pixels of ``pairs``, at most ``max_samples`` in all."""
    if not pairs:
        raise ValueError("need at least one training pair")
    counts = []
    for i, pair in enumerate(pairs):
        if pair.before.shape != pair.after.shape or pair.before.shape[-1:] != (3,):
            raise ValueError(
                f"pair {i}: before {pair.before.shape} and after {pair.after.shape} must be "
                "the same HxWx3 shape"
            )
        if pair.holdout.shape != pair.before.shape[:2]:
            raise ValueError(f"pair {i}: holdout mask {pair.holdout.shape} must be HxW")
        counts.append(int((~pair.holdout).sum()))
    total = sum(counts)
    if total == 0:
        raise ValueError("every pixel of every pair is held out; nothing to fit")
    keep = min(1.0, max_samples / total)
    xs, ys = [], []
    for pair, count in zip(pairs, counts, strict=True):
        if count == 0:
            continue
        mask = ~pair.holdout
        x = np.asarray(pair.before, dtype=np.float32)[mask]
        y = np.asarray(pair.after, dtype=np.float32)[mask]
        if keep < 1.0:
            idx = rng.choice(count, size=max(1, round(count * keep)), replace=False)
            x, y = x[idx], y[idx]
        xs.append(x)
        ys.append(y)
    return (
        np.clip(np.concatenate(xs), 0.0, 1.0).astype(np.float32),
        np.clip(np.concatenate(ys), 0.0, 1.0).astype(np.float32),
    )


def _poly_features(rgb: torch.Tensor) -> torch.Tensor:
    """(P, 3) -> (P, 10): 1, r, g, b and the six second-order terms."""
    r, g, b = rgb.unbind(-1)
    return torch.stack([torch.ones_like(r), r, g, b, r * r, g * g, b * b, r * g, r * b, g * b], -1)


def _fit_prior(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Coefficients (10, 3) of a ridge second-order polynomial for the change ``y - x``."""
    feats = _poly_features(x).double()
    gram = feats.T @ feats
    gram += ridge * feats.shape[0] * torch.eye(10, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram, feats.T @ (y - x).double()).float()


def _prior(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x + _poly_features(x) @ coef).clamp(0.0, 1.0)


def _zero_last(net: NILUTNet) -> NILUTNet:
    """Zero the last Linear: a residual net then starts as exactly "no change"."""
    last = [m for m in net.net if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return net


def _train(
    net: NILUTNet,
    styles: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    options: dict[str, Any],
    deadline: float,
    progress: ProgressFn,
    device: torch.device,
    priors: Sequence[torch.Tensor] = (),
) -> dict[str, Any]:
    """Adam on random minibatches (equal share per style) until steps or ``deadline``.

    ``priors`` (one (10, 3) polynomial per style, optional): each step also draws
    ``batch_size / 4`` uniformly random colours and pulls the network toward that smooth global
    transform there (weight ``prior_weight``), so colours no example shows follow a gentle
    global change instead of whatever the MLP extrapolates.
    """
    start = time.monotonic()
    lr = float(options.get("lr", 1e-2))
    steps = int(options.get("steps", 20_000))
    default_batch = 65_536 if device.type == "cuda" else 1_024
    batch = max(len(styles), int(options.get("batch_size", default_batch)))
    loss_name = str(options.get("loss", "l1")).lower()
    if loss_name not in ("l1", "mse"):
        raise ValueError(f"loss must be 'l1' or 'mse', got {loss_name!r}")
    cosine = str(options.get("schedule", "cosine")).lower() == "cosine"
    prior_weight = float(options.get("prior_weight", 0.3)) if priors else 0.0
    k = net.num_styles
    per_style = batch // len(styles)
    n_prior = max(1, per_style // 4)
    eye = torch.eye(k, device=device) if k else None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(options.get("seed", 0)))
    opt = Adam([{"params": list(net.parameters()), "lr": lr}])
    net.train()
    step, last_loss, next_report = 0, float("nan"), start + 1.0

    def with_cond(xi: torch.Tensor, s: int) -> torch.Tensor:
        if eye is None:
            return xi
        return torch.cat([xi, eye[s].expand(xi.shape[0], -1)], dim=1)

    while step < steps:
        now = time.monotonic()
        if now >= deadline and step > 0:
            break
        frac = max(step / steps, (now - start) / max(deadline - start, 1e-9))
        if cosine:
            opt.param_groups[0]["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))
        xb, yb = [], []
        for s, (x, y) in enumerate(styles):
            idx = torch.randint(0, x.shape[0], (per_style,), device=device, generator=gen)
            xb.append(with_cond(x[idx], s))
            yb.append(y[idx])
        pred = net(torch.cat(xb) if len(xb) > 1 else xb[0])
        target = torch.cat(yb) if len(yb) > 1 else yb[0]
        diff = pred - target
        loss = diff.abs().mean() if loss_name == "l1" else (diff * diff).mean()
        if prior_weight > 0:
            for s, coef in enumerate(priors):
                anchor = torch.rand(n_prior, 3, device=device, generator=gen)
                pdiff = net(with_cond(anchor, s)) - _prior(coef, anchor)
                ploss = pdiff.abs().mean() if loss_name == "l1" else (pdiff * pdiff).mean()
                loss = loss + prior_weight / len(priors) * ploss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if now >= next_report:
            last_loss = float(loss.detach())
            progress(min(0.99, frac), f"step {step}, {loss_name} {last_loss:.5f}")
            next_report = now + 1.0
    net.eval()
    return {"steps": step, "train_seconds": round(time.monotonic() - start, 2)}


def _new_net(options: dict[str, Any], k: int, dev: torch.device) -> NILUTNet:
    net = NILUTNet(
        3 + k,
        int(options.get("hidden", 64)),
        int(options.get("layers", 2)),
        bool(options.get("residual", True)),
    ).to(dev)
    if net.residual and options.get("zero_init", True):
        _zero_last(net)
    return net


def _budget(options: dict[str, Any], time_budget_s: float) -> float:
    """The wall-clock the fit may use: ``time_budget_s``, capped by ``max_seconds`` (45)."""
    return max(0.0, min(float(time_budget_s), float(options.get("max_seconds", 45.0))))


def _fit_impl(
    style_pairs: Sequence[Sequence[TrainingPair]],
    names: Sequence[str],
    *,
    options: dict[str, Any],
    time_budget_s: float,
    progress: ProgressFn,
    device: torch.device | str | None,
) -> NILUTModel:
    start = time.monotonic()
    dev = pick_device(device)
    rng = np.random.default_rng(int(options.get("seed", 0)))
    torch.manual_seed(int(options.get("seed", 0)))
    max_samples = int(options.get("max_samples", 2_000_000))
    per_style_max = max(1, max_samples // max(1, len(style_pairs)))
    deadline = start + max(0.05, 0.97 * _budget(options, time_budget_s) - 0.5)
    with torch_threads(options.get("num_threads", 1)):
        data = []
        for pairs in style_pairs:
            x, y = _pair_pixels(pairs, per_style_max, rng)
            data.append((torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)))
        k = len(style_pairs) if len(style_pairs) > 1 else 0
        net = _new_net(options, k, dev)
        ridge = float(options.get("prior_ridge", 1e-3))
        priors = [_fit_prior(x, y, ridge) for x, y in data]
        progress(0.0, f"fitting NILUT on {sum(int(x.shape[0]) for x, _ in data)} pixels")
        info = _train(
            net,
            data,
            options=options,
            deadline=deadline,
            progress=progress,
            device=dev,
            priors=priors,
        )
        info["train_seconds"] = round(time.monotonic() - start, 2)
        model = NILUTModel(
            net,
            style_names=names if k else (),
            apply_size=int(options.get("apply_size", 65)),
            device=dev,
            info=info,
        )
    progress(1.0, f"NILUT fitted: {info['steps']} steps in {info['train_seconds']} s")
    return model


CANDIDATES = ("identity", "fine_tuned")
_TILE = 16


def _inner_split(pair: TrainingPair, fraction: float = 0.2) -> tuple[TrainingPair, np.ndarray]:
    """Hold out ~``fraction`` of a pair's 16x16 tiles on top of its own hold-out mask: the pair
    to train on, and the mask of pixels to score on (never the pair's own held-out pixels)."""
    h, w = pair.holdout.shape
    ty, tx = -(-h // _TILE), -(-w // _TILE)
    rng = np.random.default_rng([h, w, 17])
    tiles = rng.random(ty * tx) < fraction
    if not tiles.any():
        tiles[rng.integers(ty * tx)] = True
    mask = np.repeat(np.repeat(tiles.reshape(ty, tx), _TILE, 0), _TILE, 1)[:h, :w]
    test = mask & ~pair.holdout
    if not test.any() or (pair.holdout | mask).all():
        mask = np.zeros((h, w), bool)
        mask.reshape(-1)[::5] = True
        test = mask & ~pair.holdout
    return TrainingPair(pair.before, pair.after, pair.holdout | mask), test


def _score_pixels(
    model: NILUTModel | None, before: torch.Tensor, after: torch.Tensor, limit: int = 20_000
) -> float:
    """PSNR (dB) of the MLP (``None``: no change) on at most ``limit`` of the (P, 3) pairs."""
    if before.shape[0] > limit:
        idx = torch.linspace(0, before.shape[0] - 1, limit, device=before.device).long()
        before, after = before[idx], after[idx]
    x = before.cpu().numpy()
    out = x if model is None else np.clip(model.predict(x), 0.0, 1.0)
    mse = float(np.mean((out - after.cpu().numpy()) ** 2))
    return float(10.0 * math.log10(1.0 / max(mse, 1e-10)))


def _identity_model(options: dict[str, Any], dev: torch.device) -> NILUTModel:
    net = _zero_last(_new_net({**options, "residual": True}, 0, dev))
    return NILUTModel(net, apply_size=int(options.get("apply_size", 65)), device=dev)


def _fit_samples(
    samples: Sequence[tuple[torch.Tensor, torch.Tensor]],
    options: dict[str, Any],
    deadline: float,
    progress: ProgressFn,
    dev: torch.device,
) -> NILUTModel:
    """A single-style NILUT trained on the pooled (before, after) colour samples until
    ``deadline``, with the polynomial prior of those samples."""
    x = torch.cat([a for a, _ in samples])
    y = torch.cat([b for _, b in samples])
    net = _new_net(options, 0, dev)
    prior = _fit_prior(x, y, float(options.get("prior_ridge", 1e-3)))
    info = _train(
        net, [(x, y)], options=options, deadline=deadline, progress=progress, device=dev,
        priors=[prior],
    )  # fmt: skip
    return NILUTModel(net, apply_size=int(options.get("apply_size", 65)), device=dev, info=info)


def fit(
    pairs: list[TrainingPair],
    *,
    options: dict[str, Any],
    time_budget_s: float,
    progress: ProgressFn = no_progress,
    device: torch.device | str | None = None,
) -> NILUTModel:
    """Fit a single-style NILUT (input = RGB only) to the non-held-out pixels of ``pairs``.

    Follows :data:`app.ml.base.FitFn`; see the module docstring for ``options``. With
    ``select="auto"`` (the default) the fitted network is compared on held-out photos (or, with
    one pair, held-out tiles of it) with "no change" and the better one is kept; ``model.info``
    says which (``choice``) and every candidate's held-out PSNR (``holdout_psnr``).
    """
    start = time.monotonic()
    if not pairs:
        raise ValueError("need at least one training pair")
    select = str(options.get("select", "auto")).lower()
    if select not in ("auto", *CANDIDATES):
        raise ValueError(f"select must be 'auto' or one of {CANDIDATES}, got {select!r}")
    dev = pick_device(device)
    budget = _budget(options, time_budget_s)
    end = start + max(0.05, 0.97 * budget - 0.3)
    seed = int(options.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    per_pair = max(1, int(options.get("max_samples", 400_000)) // len(pairs))
    info: dict[str, Any] = {}
    choice = select
    with torch_threads(options.get("num_threads", 1)):
        # the inner split of a single pair (scored tiles) is taken out before sampling
        test_mask = None
        fit_pairs = list(pairs)
        usable = [i for i, p in enumerate(pairs) if (~p.holdout).any()]
        if not usable:
            raise ValueError("every pixel of every pair is held out; nothing to fit")
        if select == "auto" and len(usable) == 1:
            fit_pairs[usable[0]], test_mask = _inner_split(pairs[usable[0]])

        def sample(pair: TrainingPair) -> tuple[torch.Tensor, torch.Tensor]:
            if not (~pair.holdout).any():
                return torch.zeros(0, 3, device=dev), torch.zeros(0, 3, device=dev)
            x, y = _pair_pixels([pair], per_pair, rng)
            return torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)

        samples = [sample(p) for p in fit_pairs]
        if select == "auto":
            sel_end = start + float(options.get("select_fraction", 0.75)) * (end - start)
            scores: dict[str, list[float]] = {c: [] for c in CANDIDATES}
            if test_mask is None:
                fold_ids = usable[: max(1, int(options.get("folds", 4)))]
                for j, f in enumerate(fold_ids):
                    now = time.monotonic()
                    slot = (sel_end - now) / (len(fold_ids) - j)
                    if j > 0 and slot < 1.0:
                        break
                    train = [samples[i] for i in usable if i != f]
                    m = _fit_samples(train, options, now + slot, no_progress, dev)
                    scores["fine_tuned"].append(_score_pixels(m, *samples[f]))
                    scores["identity"].append(_score_pixels(None, *samples[f]))
                folds = len(scores["identity"])
                info["selection"] = f"leave-one-photo-out ({folds} of {len(usable)} photos)"
            else:
                p = pairs[usable[0]]
                x = torch.from_numpy(np.asarray(p.before, np.float32)[test_mask]).to(dev)
                y = torch.from_numpy(np.asarray(p.after, np.float32)[test_mask]).to(dev)
                x, y = x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)
                m = _fit_samples([samples[usable[0]]], options, sel_end, no_progress, dev)
                scores["fine_tuned"].append(_score_pixels(m, x, y))
                scores["identity"].append(_score_pixels(None, x, y))
                info["selection"] = "held-out 16x16 tiles of the one pair (20 % of its pixels)"
                # the final fit uses the whole pair again (its own held-out mask only)
                samples = [sample(pairs[usable[0]])]
            means = {c: round(float(np.mean(v)), 3) for c, v in scores.items() if v}
            choice = max(means, key=lambda c: (means[c], -CANDIDATES.index(c)))
            info.update(holdout_psnr=means, folds=len(scores["identity"]))
            progress(min(0.99, (time.monotonic() - start) / max(budget, 1e-9)), f"chose {choice}")
        if choice == "identity":
            model = _identity_model(options, dev)
            model.info["steps"] = 0
        else:

            def sub(fraction: float, message: str) -> None:
                progress(min(0.99, (time.monotonic() - start) / max(budget, 1e-9)), message)

            model = _fit_samples([s for s in samples if s[0].shape[0]], options, end, sub, dev)
    model.info.update(info, choice=choice, train_seconds=round(time.monotonic() - start, 2))
    progress(1.0, f"NILUT fitted ({choice}) in {model.info['train_seconds']} s")
    return model


def fit_styles(
    styles: Sequence[Sequence[TrainingPair]],
    *,
    names: Sequence[str] = (),
    options: dict[str, Any] | None = None,
    time_budget_s: float = 60.0,
    progress: ProgressFn = no_progress,
    device: torch.device | str | None = None,
) -> NILUTModel:
    """Fit K looks into one conditional NILUT (style k = one-hot condition ``e_k``).

    With a single style this is :func:`fit`. The returned model's condition is ``e_0``; blend
    looks with fractional conditions, e.g. ``model.bake(33, condition=[0.5, 0.5])``.
    """
    if not styles:
        raise ValueError("need at least one style")
    if names and len(names) != len(styles):
        raise ValueError(f"{len(names)} names for {len(styles)} styles")
    return _fit_impl(
        styles,
        names,
        options=dict(options or {}),
        time_budget_s=time_budget_s,
        progress=progress,
        device=device,
    )
