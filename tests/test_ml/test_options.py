"""The typed learn options (app.ml.options): one model per learnable model, shared by the API and
learn_style."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from app.ml.base import LearnInputError
from app.ml.options import (
    OPTION_MODELS,
    AdaptiveOptions,
    DLUTLearnOptions,
    NILUTOptions,
    OptionsError,
    TransferLearnOptions,
    options_model,
    validate_options,
)

ML = Path(__file__).resolve().parents[2] / "app" / "ml"


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("dlut", {"lut_size": 17, "smoothness": 1, "working_size": 512, "seed": 3}),
        ("dlut", {"time_budget_s": 20}),
        ("nilut", {"hidden": 32, "loss": "mse", "num_threads": None}),
        ("adaptive_3dlut", {"train_classifier": "head", "flip": False, "min_crop": 0.5}),
        ("transfer", {"amount": 0.5, "stretch": False}),
        ("auto", {"candidates": ["dlut", "nilut"], "working_size": 800}),
        ("auto", {}),
    ],
)
def test_good_options_come_back_as_given(model: str, options: dict[str, Any]) -> None:
    out = validate_options(model, options)
    assert out == options  # only the given keys: the fit functions keep their own defaults
    assert all(type(out[k]) is type(v) or isinstance(v, int) for k, v in options.items())


def test_an_int_given_for_a_float_becomes_a_float() -> None:
    assert validate_options("dlut", {"smoothness": 1}) == {"smoothness": 1.0}
    assert isinstance(validate_options("dlut", {"smoothness": 1})["smoothness"], float)


@pytest.mark.parametrize(
    ("model", "options", "field", "words"),
    [
        ("dlut", {"lut_size": 2.5}, "lut_size", "integer"),
        ("dlut", {"lut_size": 33.0}, "lut_size", "integer"),  # ints as ints
        ("dlut", {"lut_size": "33"}, "lut_size", "integer"),
        ("dlut", {"lut_size": True}, "lut_size", "integer"),
        ("dlut", {"lut_size": 1000}, "lut_size", "less than or equal"),
        ("dlut", {"lut_size": 1}, "lut_size", "greater than or equal"),
        ("dlut", {"smoothness": float("nan")}, "smoothness", "finite"),
        ("dlut", {"smoothness": float("inf")}, "smoothness", "finite"),
        ("dlut", {"smoothness": -1.0}, "smoothness", "greater than"),
        ("dlut", {"working_size": float("-inf")}, "working_size", "integer"),
        ("dlut", {"working_size": 100_000}, "working_size", "less than"),
        ("dlut", {"max_pixels": 1e9}, "max_pixels", "integer"),
        ("dlut", {"time_budget_s": -1}, "time_budget_s", "greater than"),
        ("dlut", {"time_budget_s": float("inf")}, "time_budget_s", "finite"),
        ("dlut", {"no_such_option": 1}, "no_such_option", "not an option"),
        ("dlut", {"hidden": 16}, "hidden", "not an option"),  # a nilut option
        ("nilut", {"loss": "huber"}, "loss", "'l1' or 'mse'"),
        ("nilut", {"num_threads": 0}, "num_threads", "greater than"),
        ("adaptive_3dlut", {"flip": "yes"}, "flip", "boolean"),
        ("adaptive_3dlut", {"min_crop": 0.0}, "min_crop", "greater than"),
        (
            "adaptive_3dlut",
            {"global_options": {"lut_size": 1.5}},
            "global_options.lut_size",
            "integer",
        ),
        ("adaptive_3dlut", {"post_lut_size": 1}, "post_lut_size", "0 (off) or 2..65"),
        ("transfer", {"amount": 3.0}, "amount", "less than"),
        ("auto", {"candidates": []}, "candidates", "at least 1"),
        ("auto", {"candidates": ["magic"]}, "candidates.0", "'dlut'"),
        ("auto", {"lut_size": 17}, "lut_size", "not an option"),
    ],
)
def test_bad_options_name_the_field(
    model: str, options: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(OptionsError) as info:
        validate_options(model, options)
    err = info.value
    assert err.field == field
    assert words in err.message, err.message
    assert field in str(err)
    assert err.errors[0]["field"] == field
    assert isinstance(err, LearnInputError)
    assert isinstance(err, ValueError)


def test_not_a_dict_and_unknown_model() -> None:
    with pytest.raises(OptionsError, match="options must be an object"):
        validate_options("dlut", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match="unknown model"):
        validate_options("magic", {})


def test_references_only_use_the_transfer_options() -> None:
    assert options_model("dlut", paired=False) is TransferLearnOptions
    assert options_model("nilut", paired=False) is TransferLearnOptions
    assert validate_options("dlut", {"amount": 0.5}, paired=False) == {"amount": 0.5}
    with pytest.raises(OptionsError, match="transfer") as info:
        validate_options("dlut", {"coarse_size": 9}, paired=False)
    assert info.value.field == "coarse_size"


# -- the options models follow the models' own option lists -----------------------------------
@pytest.mark.parametrize(
    ("dataclass_path", "model"),
    [
        ("app.ml.dlut:DLUTOptions", DLUTLearnOptions),
        ("app.ml.transfer:TransferOptions", TransferLearnOptions),
    ],
)
def test_dataclass_options_all_have_a_typed_field_with_the_same_default(
    dataclass_path: str, model: type
) -> None:
    import importlib

    module, name = dataclass_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    for f in dataclasses.fields(cls):
        assert f.name in model.model_fields, f"{name}.{f.name} has no field in {model.__name__}"
        assert model.model_fields[f.name].default == f.default, f.name
        validate_options(
            "transfer" if model is TransferLearnOptions else "dlut", {f.name: f.default}
        )


def _read_keys(source: str) -> set[str]:
    pattern = r"""options(?:\.get\(\s*|\[)["']([a-z_0-9]+)["']"""
    return set(re.findall(pattern, source))


@pytest.mark.parametrize(
    ("filename", "model"), [("nilut.py", NILUTOptions), ("adaptive_3dlut.py", AdaptiveOptions)]
)
def test_every_option_a_fit_reads_is_in_its_options_model(filename: str, model: type) -> None:
    """The fit functions of nilut and adaptive_3dlut read ``options.get("name", default)``: a
    new option added there must be added to app/ml/options.py too, or the API would refuse it."""
    keys = _read_keys((ML / filename).read_text())
    assert keys, filename
    missing = sorted(keys - set(model.model_fields))
    assert not missing, f"{filename} reads options missing from {model.__name__}: {missing}"


def test_every_model_forbids_extras_and_non_finite_numbers() -> None:
    for cls in OPTION_MODELS.values():
        assert cls.model_config.get("extra") == "forbid"
        assert cls.model_config.get("allow_inf_nan") is False
        assert cls.model_config.get("strict") is True


@pytest.mark.parametrize(
    ("module", "model"),
    [("app.ml.nilut", NILUTOptions), ("app.ml.adaptive_3dlut", AdaptiveOptions)],
)
def test_select_choices_follow_the_models_candidates(module: str, model: type) -> None:
    import importlib
    import typing

    candidates = importlib.import_module(module).CANDIDATES
    allowed = typing.get_args(model.model_fields["select"].annotation)
    assert set(allowed) == {"auto", *candidates}
