"""One typed options model per learnable model, shared by the API (validation at submission) and
:func:`app.ml.learn_style` (validation before any fit runs).

Every model is a pydantic v2 model with ``extra="forbid"`` (an unknown option is an error, not
silently ignored), ``strict=True`` (an int option takes a JSON integer: ``2.5``, ``"33"`` and
``true`` are refused; a float option takes an integer or a float), ``allow_inf_nan=False`` (NaN
and +-Infinity are refused) and ranges that bound the work (memory, time) of one learn.

:func:`validate_options` returns only the keys the caller gave (``exclude_unset``), so the fit
functions keep their own defaults; the defaults written here document them (a test checks that
they agree with :class:`app.ml.dlut.DLUTOptions` and :class:`app.ml.transfer.TransferOptions`).

Which model checks a request: ``dlut`` / ``nilut`` / ``adaptive_3dlut`` with pairs use their own
model; ``dlut`` / ``nilut`` with references only learn a color transfer and use
:class:`TransferLearnOptions`; ``auto`` uses :class:`AutoLearnOptions` (the learn-level options
and the list of candidates; the candidates run with their defaults).

>>> validate_options("dlut", {"lut_size": 17})
{'lut_size': 17}
>>> try:
...     validate_options("dlut", {"lut_size": 2.5})
... except OptionsError as exc:
...     print(exc.field, "-", exc.message)
lut_size - Input should be a valid integer
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.ml.base import LearnInputError

__all__ = [
    "AUTO_CANDIDATES",
    "OPTION_MODELS",
    "AdaptiveOptions",
    "AutoLearnOptions",
    "DLUTFitOptions",
    "DLUTLearnOptions",
    "LearnOptions",
    "NILUTOptions",
    "OptionsError",
    "PhotoGainsOption",
    "TransferLearnOptions",
    "options_model",
    "validate_options",
]

Candidate = Literal["dlut", "adaptive_3dlut", "nilut"]
#: the models ``auto`` may try, in the order it tries them.
AUTO_CANDIDATES: tuple[Candidate, ...] = ("dlut", "adaptive_3dlut", "nilut")

_Threads = Field(None, ge=1, le=256)
_Weight = Field(ge=0, le=1e6)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class LearnOptions(_Strict):
    """Options every model takes; :func:`app.ml.learn_style` reads them itself."""

    working_size: int = Field(
        1200, ge=64, le=4096, description="long side (pixels) the images are learned at"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    time_budget_s: float = Field(
        300.0, gt=0, le=3600, description="learning time cap (never above the server's)"
    )


class DLUTFitOptions(_Strict):
    """:class:`app.ml.dlut.DLUTOptions` (documented there)."""

    lut_size: int = Field(33, ge=2, le=65)
    coarse_size: int = Field(17, ge=0, le=65, description="0 disables the coarse pass")
    smoothness: float = Field(3e-9, gt=0, le=1e3)
    mixed_smoothness: float = Field(0.0, ge=0, le=1e3)
    max_pixels: int = Field(200_000, ge=1000, le=4_000_000)
    clip_weight: float = Field(0.3, ge=0, le=100)
    clip_passes: int = Field(1, ge=0, le=10)
    monotonic: float = Field(0.0, ge=0, le=1e6)
    identity_weight: float = Field(0.0, ge=0, le=1e6)
    balance: float = Field(0.5, ge=0, le=2)
    balance_size: int = Field(17, ge=2, le=65)
    prior: Literal["curves", "none"] = "none"
    prior_knots: int = Field(17, ge=2, le=65)
    prior_smoothness: float = Field(1e-3, ge=0, le=1e6)
    prior_weight: float = Field(0.0, ge=0, le=1e6)
    prior_mass: float = Field(1.0, ge=0, le=1e6)
    robust: float = Field(0.0, ge=0, le=1)
    max_gain: float = Field(0.0, ge=0, le=1e3)
    gain_weight: float = Field(100.0, ge=0, le=1e6)
    bound_weight: float = Field(0.0, ge=0, le=1e6)
    refine_passes: int = Field(1, ge=0, le=50)
    max_iters: int = Field(1500, ge=1, le=10_000_000)
    tol: float = Field(1e-6, ge=0, lt=1)  # 0: run to max_iters (or the time budget)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    safe: bool = True
    safe_gain: float = Field(5.0, ge=1, le=1e3)
    safe_gap: float = Field(0.5, ge=0, le=255)
    budget_pixels: bool = False


class PhotoGainsOption(_Strict):
    """For models that learn from 2+ pairs the look they share (:mod:`app.ml.photo_gains`)."""

    photo_gains: bool = Field(
        True,
        description="factor out each photo's own exposure and white balance before the look is "
        "fitted (2+ pairs; kept only where it explains the edits)",
    )


class DLUTLearnOptions(LearnOptions, DLUTFitOptions, PhotoGainsOption):
    """Learning from pairs with ``dlut``: the learn-level options and :class:`DLUTFitOptions`."""


class NILUTOptions(LearnOptions, PhotoGainsOption):
    """The options of :func:`app.ml.nilut.fit` (its module docstring)."""

    hidden: int = Field(128, ge=4, le=1024)
    layers: int = Field(2, ge=1, le=16)
    residual: bool = True
    lr: float = Field(3e-3, gt=0, le=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    steps: int = Field(20_000, ge=1, le=10_000_000)
    batch_size: int = Field(8192, ge=1, le=1_048_576)
    loss: Literal["l1", "mse"] = "l1"
    max_samples: int = Field(2_000_000, ge=1000, le=10_000_000)
    num_threads: int | None = _Threads
    apply_size: int = Field(65, ge=2, le=129)
    zero_init: bool = True
    prior_weight: float = Field(0.1, ge=0, le=1e6)
    prior_ridge: float = Field(1e-3, ge=0, le=1e6)
    select: Literal["auto", "identity", "fine_tuned"] = "auto"  # app.ml.nilut.CANDIDATES
    folds: int = Field(4, ge=1, le=16)
    select_fraction: float = Field(0.75, ge=0.05, le=1)
    max_seconds: float = Field(45.0, gt=0, le=3600, description="the fit's own time cap")


class AdaptiveOptions(LearnOptions, PhotoGainsOption):
    """The options of :func:`app.ml.adaptive_3dlut.fit` (its module docstring). ``init_weights``
    is a directory on the server: the API refuses it (the server sets it). Defaults marked
    "init" depend on whether ``init_weights`` is given (None here = the model decides)."""

    init_weights: str | None = None
    train_classifier: Literal["all", "head", "last", "none"] | None = None  # init: last, else all
    train_luts: bool | None = None  # init: False, else True
    select: Literal["auto", "initial", "identity", "global", "fine_tuned"] = "auto"  # CANDIDATES
    folds: int = Field(4, ge=1, le=16)
    select_fraction: float = Field(0.6, ge=0.1, le=0.9)
    post_lut_size: int | None = Field(None, ge=0, le=65)  # init: 17, else 0 (off)
    lr: float = Field(5e-3, gt=0, le=1)
    lr_classifier: float | None = Field(None, gt=0, le=1)
    lr_post: float = Field(5e-3, gt=0, le=1)
    steps: int = Field(100_000, ge=1, le=10_000_000)
    work_size: int = Field(384, ge=32, le=2048)
    pixels_per_image: int = Field(4096, ge=16, le=1_000_000)
    max_pixels: int = Field(50_000, ge=1000, le=4_000_000)
    batch_images: int = Field(4, ge=1, le=64)
    pool_views: int = Field(4, ge=1, le=1024)
    smooth: float = Field(1e-4, ge=0, le=1e3)
    monotonicity: float = Field(10.0, ge=0, le=1e6)
    weight_reg: float = Field(1e-4, ge=0, le=1e3)
    l2sp: float | None = Field(None, ge=0, le=1e6)  # init: 1e-2, else 0
    post_smooth: float = Field(1e-2, ge=0, le=1e6)
    post_l2: float = Field(1e-3, ge=0, le=1e6)
    post_ridge: float = Field(1e-3, ge=0, le=1e6)
    global_options: DLUTFitOptions | None = None
    jitter: float = Field(0.0, ge=0, le=1)
    wb_jitter: float = Field(0.0, ge=0, le=1)
    min_crop: float = Field(0.6, ge=0.05, le=1)
    flip: bool = True
    num_threads: int | None = _Threads
    max_seconds: float = Field(45.0, gt=0, le=3600, description="the fit's own time cap")

    @field_validator("post_lut_size")
    @classmethod
    def _post_size(cls, v: int | None) -> int | None:
        if v == 1:
            raise ValueError("post_lut_size must be 0 (off) or 2..65")
        return v


class TransferLearnOptions(LearnOptions):
    """:class:`app.ml.transfer.TransferOptions` (``dlut`` / ``nilut`` from references only)."""

    working_size: int = Field(512, ge=64, le=4096)
    lut_size: int = Field(33, ge=2, le=65)
    solve_size: int = Field(17, ge=2, le=65)
    smoothness: float = Field(1e-5, gt=0, le=1e3)
    amount: float = Field(1.0, ge=0, le=2)
    max_pixels: int = Field(200_000, ge=1000, le=4_000_000)
    ot_pixels: int = Field(60_000, ge=100, le=4_000_000)
    iterations: int = Field(20, ge=1, le=1000)
    bands: int = Field(8, ge=1, le=64)
    stretch: bool = True


class AutoLearnOptions(LearnOptions, PhotoGainsOption):
    """``auto``: the learn-level options and which candidates to try (each with its defaults)."""

    candidates: list[Candidate] = Field(
        default_factory=lambda: list(AUTO_CANDIDATES), min_length=1, max_length=3
    )


#: model name -> its options model (references-only learning: see :func:`options_model`).
OPTION_MODELS: dict[str, type[LearnOptions]] = {
    "dlut": DLUTLearnOptions,
    "nilut": NILUTOptions,
    "adaptive_3dlut": AdaptiveOptions,
    "transfer": TransferLearnOptions,
    "auto": AutoLearnOptions,
}


class OptionsError(LearnInputError):
    """Options that do not fit their model: ``field`` names the first bad option (a
    :class:`~app.ml.base.LearnInputError`, so a ``ValueError``)."""

    def __init__(self, model: str, field: str, message: str, errors: list[dict[str, Any]]) -> None:
        self.model, self.field, self.message, self.errors = model, field, message, errors
        where = f"option {field!r}" if field else "options"
        super().__init__(f"{where} of {model}: {message}")


def options_model(model: str, *, paired: bool = True) -> type[LearnOptions]:
    """The options model of ``model``; ``paired=False`` (references only) means the transfer
    that ``dlut`` and ``nilut`` learn from references."""
    if not paired and model in ("dlut", "nilut"):
        return TransferLearnOptions
    try:
        return OPTION_MODELS[model]
    except KeyError:
        raise OptionsError(model, "", f"unknown model {model!r}", []) from None


def validate_options(
    model: str, options: dict[str, Any] | None, *, paired: bool = True
) -> dict[str, Any]:
    """Check ``options`` against the model's options model and return the given keys (typed);
    raise :class:`OptionsError` naming the first bad field."""
    cls = options_model(model, paired=paired)
    kind = "transfer (references only)" if cls is TransferLearnOptions else model
    if options is not None and not isinstance(options, dict):
        raise OptionsError(kind, "", "options must be an object", [])
    try:
        parsed = cls.model_validate(dict(options or {}))
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "message": _message(err, kind),
                "type": err.get("type", ""),
            }
            for err in exc.errors(include_url=False)
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid options"}
        raise OptionsError(kind, first["field"], first["message"], errors) from None
    return parsed.model_dump(exclude_unset=True)


def _message(err: Any, kind: str) -> str:
    if err.get("type") == "extra_forbidden":
        return f"not an option of {kind}"
    return str(err.get("msg", "invalid"))
