"""The common learning entry point, model persistence and style loading.

:func:`learn_style` is what the Celery task and the CLI call: it checks the inputs, brings every
image to float32 at a working size, holds out ~10 % of each pair's pixels (16x16-pixel tiles
chosen by a seeded RNG, so held-out pixels are not just neighbours of training pixels), picks the
device, runs the model's fit function, retries at half the working size when the fit runs out of
memory, and measures PSNR / CIEDE2000 on the held-out pixels.

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

import importlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.ml.base import FitFn, ProgressFn, StyleModel, TrainingPair, no_progress
from app.ml.lut import LUT3D, LUTStyle, plain_value

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMAT_VERSION",
    "MAX_ITEMS",
    "MODELS",
    "LearnInputError",
    "LearnResult",
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
]

FORMAT_VERSION = 1
MODELS = ("dlut", "nilut", "adaptive_3dlut")
MAX_ITEMS = 16
BAKE_SIZE = 33
DEFAULT_WORKING_SIZE = {"dlut": 1200, "nilut": 1200, "adaptive_3dlut": 1200, "transfer": 512}
MIN_WORKING_SIZE = 64
OOM_RETRIES = 3
HOLDOUT_FRACTION = 0.1
HOLDOUT_TILE = 16
METRIC_PIXELS = 200_000


class LearnInputError(ValueError):
    """The images or arguments given to :func:`learn_style` cannot be learned from."""


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
    out = []
    for i, (before, after) in enumerate(raw_pairs):
        bh, bw = before.shape[:2]
        size = _working_size(bw, bh, long_side)
        same = before.shape == after.shape
        b = _resize(before, size, exact=same)
        a = _resize(after, size, exact=same)
        out.append(TrainingPair(b, a, make_holdout(size[1], size[0], seed=seed + i)))
    return out


def _subsample(mask_idx: np.ndarray, limit: int) -> np.ndarray:
    if mask_idx.size <= limit:
        return mask_idx
    return mask_idx[np.linspace(0, mask_idx.size - 1, limit).astype(np.int64)]


def _pair_metrics(model: StyleModel, pairs: list[TrainingPair]) -> dict[str, Any]:
    from app.ml.metrics import delta_e2000, psnr

    groups: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "holdout": ([], []),
        "train": ([], []),
    }
    per_pair_limit = max(1000, METRIC_PIXELS // max(1, len(pairs)))
    for pair in pairs:
        pred = np.clip(model.apply(pair.before, 1.0), 0.0, 1.0).reshape(-1, 3)
        after = pair.after.reshape(-1, 3)
        mask = pair.holdout.reshape(-1)
        for name, sel in (("holdout", np.flatnonzero(mask)), ("train", np.flatnonzero(~mask))):
            idx = _subsample(sel, per_pair_limit)
            groups[name][0].append(pred[idx])
            groups[name][1].append(after[idx])
    metrics: dict[str, Any] = {
        "n_holdout_pixels": int(sum(int(p.holdout.sum()) for p in pairs)),
        "n_train_pixels": int(sum(int((~p.holdout).sum()) for p in pairs)),
    }
    for name, prefix in (("holdout", ""), ("train", "train_")):
        pred_all, after_all = (np.concatenate(x) if x else np.empty((0, 3)) for x in groups[name])
        if pred_all.shape[0] == 0:
            continue
        de = delta_e2000(pred_all, after_all)
        value = psnr(pred_all, after_all)
        metrics[f"{prefix}psnr"] = value if math.isfinite(value) else 100.0
        metrics[f"{prefix}delta_e2000_mean"] = de["mean"]
        metrics[f"{prefix}delta_e2000_p95"] = de["p95"]
    return metrics


# ---------------------------------------------------------------------------------------------
# learn_style
# ---------------------------------------------------------------------------------------------
def learn_style(
    model: str,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    references: Sequence[np.ndarray] = (),
    *,
    options: dict[str, Any] | None = None,
    time_budget_s: float = 300,
    progress: ProgressFn | None = None,
    device: str | None = None,
    init_weights: str | Path | None = None,
) -> LearnResult:
    """Learn a style from before/after ``pairs`` and/or ``references`` (HxWx3 uint8/uint16/float).

    ``options`` go to the model's fit function; the entry point itself reads ``working_size``
    (long side in pixels; default 1200, 512 for a transfer) and ``seed`` (hold-out tiles).
    Raises :class:`LearnInputError` for unusable inputs.

    >>> import numpy as np
    >>> before = np.random.default_rng(0).random((32, 48, 3)).astype(np.float32)
    >>> result = learn_style("dlut", [(before, before ** 0.8)], time_budget_s=20)
    >>> result.model.kind, result.lut.size, result.metrics["delta_e2000_mean"] < 2
    ('dlut', 33, True)
    """
    report = progress or no_progress
    start = time.perf_counter()
    if model not in MODELS:
        raise LearnInputError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    pairs = list(pairs)
    references = list(references)
    if not pairs and not references:
        raise LearnInputError("at least one before/after pair or reference image is needed")
    if len(pairs) + len(references) > MAX_ITEMS:
        raise LearnInputError(
            f"at most {MAX_ITEMS} pairs and references together, got {len(pairs) + len(references)}"
        )
    opts = dict(options or {})
    if init_weights is not None:
        opts["init_weights"] = str(init_weights)
    seed = int(opts.get("seed", 0))
    if not pairs:
        if model == "adaptive_3dlut":
            raise LearnInputError(
                "adaptive_3dlut learns from before/after pairs; reference images alone are learned "
                "as a color transfer with model dlut or nilut"
            )
        return _learn_transfer(model, references, opts, time_budget_s, report, start)

    floats: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (before, after) in enumerate(pairs):
        b = _to_float_image(before, f"pair {i} before")
        a = _to_float_image(after, f"pair {i} after")
        _check_pair(i, b, a)
        floats.append((b, a))
    report(0.02, "preparing images")
    dev = select_device(device)
    long_side = int(opts.pop("working_size", DEFAULT_WORKING_SIZE[model]))
    fitter = fitters[model]
    retries = 0
    while True:
        prepared = _prepare_pairs(floats, long_side, seed)
        remaining = max(1.0, time_budget_s - (time.perf_counter() - start))
        try:
            style = fitter(
                prepared,
                options=dict(opts),
                time_budget_s=remaining * 0.9,
                progress=lambda f, m: report(0.05 + 0.85 * min(max(f, 0.0), 1.0), m),
                device=dev,
            )
            break
        except Exception as exc:
            if (
                not is_out_of_memory(exc)
                or retries >= OOM_RETRIES
                or long_side // 2 < MIN_WORKING_SIZE
            ):
                raise
            retries += 1
            long_side //= 2
            if "max_pixels" in opts:
                opts["max_pixels"] = max(1000, int(opts["max_pixels"]) // 2)
            _free_cuda(dev)
            report(0.05, f"out of memory; retrying at working size {long_side} px")
    report(0.92, "measuring held-out pixels")
    metrics = _pair_metrics(style, prepared)
    metrics.update(
        model=style.kind,
        n_pairs=len(pairs),
        working_size=long_side,
        oom_retries=retries,
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
        "model": style.kind,
        "n_references": len(references),
        "n_holdout_pixels": 0,
        "working_size": long_side,
        "oom_retries": retries,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if "fit_delta_e2000_mean" in info:
        metrics["fit_delta_e2000_mean"] = info["fit_delta_e2000_mean"]
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
    "meta"}``."""
    import torch

    payload = {
        "kind": model.kind,
        "format_version": FORMAT_VERSION,
        "state": model.state_dict(),
        "metrics": plain_value(metrics or {}),
        "meta": plain_value(meta or {}),
    }
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
    return loader(ckpt["state"])


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
    from app.ml.paths import require_path

    p = require_path(path, "style")
    if p.is_dir():
        if (p / "model.pt").is_file():
            return _from_checkpoint(read_style_checkpoint(p / "model.pt"), str(p / "model.pt"))
        if (p / "LUTs.pth").is_file() and (p / "classifier.pth").is_file():
            from app.ml.adaptive_3dlut import load_published

            return load_published(p)  # type: ignore[no-any-return]
        if (p / "lut.cube").is_file():
            return load_style(p / "lut.cube")
        raise FileNotFoundError(
            f"{p}: no model.pt, lut.cube or LUTs.pth + classifier.pth in this directory"
        )
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such style file or directory")
    suffix = p.suffix.lower()
    if suffix in _LUT_SUFFIXES:
        from app.ml.cube_export import read_lut

        lut = read_lut(p)
        return LUTStyle(lut, kind="imported", info={"filename": p.name, "title": lut.title or ""})
    return _from_checkpoint(read_style_checkpoint(p), str(p))


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
