"""PyTorch helpers shared by the learned models (:mod:`app.ml.nilut`, :mod:`app.ml.adaptive_3dlut`).

* :func:`pick_device`: the ``device`` asked for, else CUDA when present, else CPU.
* :func:`torch_threads`: a context manager that sets ``torch.set_num_threads`` and restores it.
* :func:`published_to_table` / :func:`table_to_published`: the one place where the channel-first
  layout of the published Image-Adaptive-3DLUT weights, ``T[c, b, g, r]`` (axis 1 = input blue,
  axis 3 = input red, i.e. ``.cube`` order with red fastest), is converted to the project layout
  ``table[r, g, b, c]`` of :class:`app.ml.lut.LUT3D`, and back. Both are a pure transpose
  ``(3, 2, 1, 0)``.
* :func:`trilinear_lookup_published`: a differentiable, batched trilinear lookup in
  published-layout LUTs. It views them (no copy) as ``table[r, g, b, c]`` and calls
  :func:`app.ml.lut.apply_torch` (``grid_sample``, ``align_corners=True``, border padding), so the
  project has a single differentiable lookup whose axis mapping is tested in one place.
* :func:`lattice`: the lattice colours of a LUT of any size, in ``table[r, g, b]`` order, for
  baking a per-colour model (NILUT) into a :class:`~app.ml.lut.LUT3D`.
* :func:`to_float01`: uint8/uint16/float HxWx3 image -> float32 in [0, 1].
* :class:`Adam`: a plain Adam optimizer (no ``torch._dynamo`` import; see its docstring).

Example:
    >>> import torch
    >>> from app.ml.lut import identity_table
    >>> luts = torch.from_numpy(table_to_published(identity_table(5)))[None]  # (1, 3, 5, 5, 5)
    >>> rgb = torch.tensor([[[0.1, 0.5, 0.9]]])
    >>> bool(torch.allclose(trilinear_lookup_published(luts, rgb), rgb, atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from app.ml.lut import apply_torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: ``device`` when given, else CUDA when available, else CPU.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, then restore (None: no-op)."""
    if not num_threads or num_threads < 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def published_to_table(lut: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert a published ``T[c, b, g, r]`` LUT (shape ``(3, N, N, N)``) to ``table[r, g, b, c]``.

    Returns a contiguous float32 numpy array of shape ``(N, N, N, 3)``.
    """
    array = lut.detach().cpu().numpy() if isinstance(lut, torch.Tensor) else np.asarray(lut)
    if array.ndim != 4 or array.shape[0] != 3:
        raise ValueError(f"expected a (3, N, N, N) LUT in T[c, b, g, r] layout, got {array.shape}")
    return np.ascontiguousarray(array.transpose(3, 2, 1, 0), dtype=np.float32)


def table_to_published(table: torch.Tensor | np.ndarray) -> np.ndarray:
    """Inverse of :func:`published_to_table`: ``table[r, g, b, c]`` -> ``T[c, b, g, r]``."""
    array = table.detach().cpu().numpy() if isinstance(table, torch.Tensor) else np.asarray(table)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected an (N, N, N, 3) table[r, g, b, c], got {array.shape}")
    return np.ascontiguousarray(array.transpose(3, 2, 1, 0), dtype=np.float32)


def trilinear_lookup_published(luts: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Batched differentiable lookup in channel-first published-layout LUTs.

    Args:
        luts: ``(B, 3, N, N, N)``, indexed ``[batch, c, b, g, r]`` (Zeng et al.'s layout).
        rgb: ``(B, P, 3)`` colours in [0, 1] (P pixels per batch item), or ``(B, 3, H, W)`` images.

    Returns:
        The looked-up colours in the shape of ``rgb``. Gradients flow to ``luts`` and ``rgb``.

    The LUTs are viewed (no copy) as ``table[r, g, b, c]`` and handed to
    :func:`app.ml.lut.apply_torch`, the project's one differentiable trilinear lookup.
    """
    if luts.ndim != 5 or luts.shape[1] != 3:
        raise ValueError(f"luts must be (B, 3, N, N, N), got {tuple(luts.shape)}")
    tables = luts.permute(0, 4, 3, 2, 1)  # [B, r, g, b, c]
    if rgb.ndim == 4 and rgb.shape[1] == 3:  # images
        b, _, h, w = rgb.shape
        out = apply_torch(tables, rgb.permute(0, 2, 3, 1).reshape(b, h * w, 3))
        return out.reshape(b, h, w, 3).permute(0, 3, 1, 2)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be (B, P, 3) or (B, 3, H, W), got {tuple(rgb.shape)}")
    return apply_torch(tables, rgb)


def lattice(size: int, *, device: torch.device | None = None) -> torch.Tensor:
    """The ``size**3`` lattice colours as a ``(size**3, 3)`` float32 tensor in table order.

    Row ``(r * size + g) * size + b`` holds ``(r, g, b) / (size - 1)``, so reshaping a per-row
    result to ``(size, size, size, 3)`` gives a ``table[r, g, b, c]``.
    """
    if size < 2:
        raise ValueError(f"LUT size must be >= 2, got {size}")
    ramp = torch.linspace(0.0, 1.0, size, device=device)
    grid = torch.meshgrid(ramp, ramp, ramp, indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, 3)


def to_float01(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8/uint16/float image as float32 in [0, 1] (floats are clipped, not scaled)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
    raise ValueError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float32")


class Adam:
    """Adam (Kingma & Ba, 2015) over parameter groups ``{"params": [...], "lr": float, ...}``.

    Hand-written on purpose: constructing the first ``torch.optim`` optimizer in a process imports
    ``torch._dynamo`` (measured 3-11 s on the shared 2-core machine), which a fit with a 10 s
    budget cannot afford; the update itself is the textbook one (bias-corrected moments, no
    weight decay, no amsgrad). Groups keep any extra keys (e.g. ``base_lr`` for a schedule).
    """

    def __init__(
        self,
        groups: list[dict[str, Any]],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.param_groups = groups
        self.betas = betas
        self.eps = eps
        self.t = 0
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for group in self.param_groups:
            lr = float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                m, v = self.state.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
                m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)
